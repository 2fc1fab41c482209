//! The codec: the [`Header`] frame, msgpack [`encode`]/[`decode`] of every frame, msgpack
//! array headers (map payloads are arrays joined without re-encoding), the [`MessageType`]
//! names carried in headers, and the protocol's version and size limits.

use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Version of the wire protocol. Peers with another version are refused with a clear message,
/// and connection files carry it so that a stale file is recognised before any message is sent.
///
/// 2: bodies may be encrypted (the connection files say so), engines report starts of timed
/// tasks and name the tasks they hold when they register again, and the controller tells its
/// instance; a version-1 peer would not understand these.
pub const PROTOCOL_VERSION: u32 = 2;

/// Largest message (all frames together) a peer accepts by default, in bytes.
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Most frames one message may have (routing ids + fixed frames + payloads).
pub const MAX_FRAMES: usize = 1 << 20;

/// The header frame of every message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`PROTOCOL_VERSION`] of the sender.
    pub version: u32,
    /// Random id of the sending socket, fresh each time a socket is made.
    pub session: u64,
    /// Strictly increasing per session; with `session` it is the replay-protection key.
    pub seq: u64,
    /// Name of the content's variant (`"submit"`, `"results"`…), for logs and other languages.
    pub msg_type: String,
    /// Sender's wall clock, microseconds since the Unix epoch.
    pub time_us: u64,
}

/// Why encoding or decoding a message failed.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a valid msgpack encoding of the expected type. (The decoder's error
    /// is in the message, so not also a `source()`: a printed chain says it once.)
    #[error("malformed message: {0}")]
    Decode(rmp_serde::decode::Error),
    /// A value could not be encoded (a bug in the sender, not retryable).
    #[error("cannot encode message: {0}")]
    Encode(rmp_serde::encode::Error),
}

impl From<rmp_serde::decode::Error> for CodecError {
    fn from(e: rmp_serde::decode::Error) -> CodecError {
        CodecError::Decode(e)
    }
}

impl From<rmp_serde::encode::Error> for CodecError {
    fn from(e: rmp_serde::encode::Error) -> CodecError {
        CodecError::Encode(e)
    }
}

/// Encodes a value as msgpack with field names, the encoding used for every frame.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, CodecError> {
    Ok(rmp_serde::to_vec_named(value)?)
}

/// Decodes a msgpack frame. Never panics, whatever the bytes.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, CodecError> {
    Ok(rmp_serde::from_slice(bytes)?)
}

/// Writes the header of a msgpack array of `len` items, in the shortest form (payloads of
/// maps are arrays of already-encoded items, joined without re-encoding them).
pub fn write_array_header(out: &mut Vec<u8>, len: usize) {
    if len < 16 {
        out.push(0x90 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0xdc);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0xdd);
        out.extend_from_slice(&(len as u32).to_be_bytes());
    }
}

/// Why [`read_array_header`] found no array header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ArrayHeaderError {
    /// There are no bytes at all.
    #[error("expected a msgpack array, found no bytes")]
    Empty,
    /// The first byte starts another msgpack type.
    #[error("expected a msgpack array, found type byte {0:#04x}")]
    NotAnArray(u8),
    /// The header's length bytes are cut off.
    #[error("truncated msgpack")]
    Truncated,
}

/// Reads the header of the msgpack array that `bytes` starts with, as
/// [`write_array_header`] writes it (or any of the three forms): returns the number of items
/// and the header's length in bytes. Never panics; the items themselves are not checked.
pub fn read_array_header(bytes: &[u8]) -> Result<(usize, usize), ArrayHeaderError> {
    let be = |len: usize| {
        let field = bytes.get(1..1 + len).ok_or(ArrayHeaderError::Truncated)?;
        Ok(field.iter().fold(0usize, |n, &b| (n << 8) | usize::from(b)))
    };
    match bytes.first() {
        None => Err(ArrayHeaderError::Empty),
        Some(&b) if b & 0xf0 == 0x90 => Ok((usize::from(b & 0x0f), 1)),
        Some(0xdc) => Ok((be(2)?, 3)),
        Some(0xdd) => Ok((be(4)?, 5)),
        Some(&b) => Err(ArrayHeaderError::NotAnArray(b)),
    }
}

/// Every message enum names its variants for the header's `msg_type`.
pub trait MessageType {
    /// Short snake_case name of this message's variant.
    fn msg_type(&self) -> &'static str;
}

/// Implements [`MessageType`] for a message enum from a variant → name table.
macro_rules! message_types {
    ($ty:ident { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $crate::MessageType for $ty {
            fn msg_type(&self) -> &'static str {
                match self { $($ty::$variant { .. } => $name),* }
            }
        }
    };
}

pub(crate) use message_types;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        ClientId, CommandSpec, EngineId, FromClient, TaskId, TaskOptions, TaskRequest, Work,
    };

    #[test]
    fn array_headers_read_back_what_was_written() {
        for len in [0usize, 1, 15, 16, 65_535, 65_536, u32::MAX as usize] {
            let mut header = Vec::new();
            write_array_header(&mut header, len);
            assert_eq!(read_array_header(&header), Ok((len, header.len())), "{len}");
            // What rmp-serde writes reads back too (and the header is all that is read).
            if len <= 65_536 {
                let full = rmp_serde::to_vec(&vec![0u8; len]).unwrap();
                assert_eq!(read_array_header(&full), Ok((len, header.len())));
            }
            for cut in 1..header.len() {
                assert_eq!(
                    read_array_header(&header[..cut]),
                    Err(ArrayHeaderError::Truncated)
                );
            }
        }
        assert_eq!(read_array_header(b""), Err(ArrayHeaderError::Empty));
        assert_eq!(
            read_array_header(&[0x80]),
            Err(ArrayHeaderError::NotAnArray(0x80))
        );
        assert_eq!(
            ArrayHeaderError::NotAnArray(0xa1).to_string(),
            "expected a msgpack array, found type byte 0xa1"
        );
    }

    #[test]
    fn messages_round_trip() {
        let msg = FromClient::Submit {
            tasks: vec![TaskRequest {
                id: TaskId::new(ClientId(1), 2),
                work: Work::Command(CommandSpec {
                    program: "echo".into(),
                    args: vec!["hi".into()],
                    ..Default::default()
                }),
                options: TaskOptions {
                    targets: vec![EngineId(3)],
                    retries: 1,
                    timeout_ms: None,
                    after: vec![TaskId(5)],
                    ..Default::default()
                },
            }],
        };
        let bytes = encode(&msg).unwrap();
        assert_eq!(decode::<FromClient>(&bytes).unwrap(), msg);
        assert_eq!(msg.msg_type(), "submit");
    }

    /// Pins the wire encoding so that other-language clients can rely on it.
    #[test]
    fn golden_frames() {
        let header = Header {
            version: 1,
            session: 2,
            seq: 3,
            msg_type: "hello".into(),
            time_us: 4,
        };
        assert_eq!(
            hex::encode(encode(&header).unwrap()),
            "85a776657273696f6e01a773657373696f6e02a373657103a86d73675f74797065a568656c6c6fa774696d655f757304"
        );
        assert_eq!(
            hex::encode(encode(&FromClient::Hello).unwrap()),
            "a568656c6c6f"
        );
        assert_eq!(
            hex::encode(encode(&FromClient::Goodbye).unwrap()),
            "a7676f6f64627965"
        );
        let call = Work::Call {
            function: "noop".into(),
        };
        assert_eq!(
            hex::encode(encode(&call).unwrap()),
            "81a463616c6c81a866756e6374696f6ea46e6f6f70"
        );
        let hand_back = crate::FromEngine::HandBack {
            tasks: vec![crate::Assignment {
                id: crate::TaskId(7),
                work: call,
                timeout_ms: None,
                start_within_ms: Some(5),
            }],
        };
        assert_eq!(hand_back.msg_type(), "hand_back");
        assert_eq!(
            hex::encode(encode(&hand_back).unwrap()),
            "81a968616e645f6261636b81a57461736b739184a2696407a4776f726b81a463616c6c81a866756e6374696f6ea46e6f6f70aa74696d656f75745f6d73c0af73746172745f77697468696e5f6d7305"
        );
    }

    #[test]
    fn decoding_garbage_is_an_error_not_a_panic() {
        for bytes in [&b""[..], b"\xff\xff", b"\x81\xa4call\x00", &[0x92; 64]] {
            assert!(decode::<FromClient>(bytes).is_err());
            assert!(decode::<Header>(bytes).is_err());
        }
    }
}
