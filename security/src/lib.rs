//! Cluster keys, message signing, the replay window and connection files.
//!
//! A cluster has one secret [`Key`], made fresh when its controller starts and written into the
//! profile's connection files (mode 0600). Every frame after the MAC frame is signed with
//! HMAC-SHA256 under that key by a [`Signer`]; a [`ReplayGuard`] remembers the highest
//! sequence number seen per sender session so that a captured message cannot be played again.
//! This crate only sees bytes; it knows nothing of message types.

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the only signature scheme, as written in connection files.
pub const SIGNATURE_SCHEME: &str = "hmac-sha256";

/// Length of a MAC frame in bytes.
pub const MAC_LEN: usize = 32;

/// A cluster's secret key: 32 random bytes, written as hex in connection files.
#[derive(Clone, PartialEq, Eq)]
pub struct Key([u8; 32]);

impl Key {
    /// A fresh random key from the operating system's generator.
    pub fn generate() -> Key {
        let mut bytes = [0u8; 32];
        rand::fill(&mut bytes);
        Key(bytes)
    }

    /// Parses the hex form used in connection files.
    pub fn from_hex(text: &str) -> Result<Key, String> {
        let bytes = hex::decode(text.trim()).map_err(|e| format!("key is not hex: {e}"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("key has {} bytes, expected 32", b.len()))?;
        Ok(Key(bytes))
    }

    /// The hex form.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for Key {
    // Never print the secret itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Key(…)")
    }
}

/// Signs and checks frames with HMAC-SHA256 under a cluster key.
#[derive(Clone)]
pub struct Signer {
    // Keyed once; cloning the prepared state per message avoids re-hashing the key.
    prepared: Hmac<Sha256>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer(hmac-sha256)")
    }
}

impl Signer {
    /// A signer for this key.
    pub fn new(key: &Key) -> Signer {
        let prepared =
            Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes any key length");
        Signer { prepared }
    }

    /// MAC over the frames, in order. Each frame's length is mixed in first so that moving
    /// bytes from one frame to the next changes the MAC.
    pub fn sign<'a>(&self, frames: impl IntoIterator<Item = &'a [u8]>) -> [u8; MAC_LEN] {
        let mut mac = self.prepared.clone();
        for frame in frames {
            mac.update(&(frame.len() as u64).to_le_bytes());
            mac.update(frame);
        }
        mac.finalize().into_bytes().into()
    }

    /// True when `tag` is the MAC of the frames; compared in constant time.
    pub fn verify<'a>(&self, frames: impl IntoIterator<Item = &'a [u8]>, tag: &[u8]) -> bool {
        let mut mac = self.prepared.clone();
        for frame in frames {
            mac.update(&(frame.len() as u64).to_le_bytes());
            mac.update(frame);
        }
        mac.verify_slice(tag).is_ok()
    }
}

/// Remembers, per sender session, the highest sequence number accepted.
///
/// Each socket has its own random session and numbers its messages 1, 2, 3…; one peer socket
/// delivers them in order, so anything not above the last accepted number is a replay. The
/// table is bounded: when full, the sessions not heard from longest are forgotten.
#[derive(Debug)]
pub struct ReplayGuard {
    last: HashMap<u64, (u64, u64)>,
    capacity: usize,
    clock: u64,
}

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(65_536)
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` sessions.
    pub fn new(capacity: usize) -> ReplayGuard {
        ReplayGuard {
            last: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    /// Accepts `(session, seq)` if `seq` is above the last one accepted for that session.
    pub fn check(&mut self, session: u64, seq: u64) -> bool {
        self.clock += 1;
        if let Some((last, used)) = self.last.get_mut(&session) {
            if seq <= *last {
                return false;
            }
            *last = seq;
            *used = self.clock;
            return true;
        }
        if self.last.len() >= self.capacity {
            self.evict();
        }
        self.last.insert(session, (seq, self.clock));
        true
    }

    fn evict(&mut self) {
        // Drop the older half; amortised O(1) per new session.
        let mut stamps: Vec<u64> = self.last.values().map(|(_, used)| *used).collect();
        stamps.sort_unstable();
        let cut = stamps[stamps.len() / 2];
        self.last.retain(|_, (_, used)| *used > cut);
    }
}

/// Addresses of the controller's sockets, as `tcp://host:port` URLs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Addresses {
    /// Engine task socket (ROUTER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub engine: Option<String>,
    /// Heartbeat socket (ROUTER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<String>,
    /// Client socket (ROUTER).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Notification socket (PUB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<String>,
}

/// The contents of `security/client.json` or `security/engine.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionInfo {
    /// Wire protocol version of the controller that wrote it.
    pub protocol_version: u32,
    /// Always [`SIGNATURE_SCHEME`].
    pub signature_scheme: String,
    /// The cluster key, hex.
    pub key: String,
    /// Where to connect.
    pub addresses: Addresses,
    /// Host name of the controller.
    pub location: String,
    /// Process id of the controller on `location`.
    pub controller_pid: u32,
}

/// Why a connection file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionFileError {
    /// The file does not exist (the controller is not running, or another profile is meant).
    #[error("connection file {path} does not exist; is the controller running (`cluster start`), and is this the right profile?")]
    Missing {
        /// The file.
        path: PathBuf,
    },
    /// The file exists but cannot be read (permissions).
    #[error("cannot read connection file {path}: {source}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not a valid connection file.
    #[error("connection file {path} is corrupt: {reason}; restart the controller to rewrite it")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The file was written by a controller speaking another protocol version.
    #[error("connection file {path} is for protocol version {found}, this program speaks {expected}; use matching versions of `cluster`")]
    WrongVersion {
        /// The file.
        path: PathBuf,
        /// Version in the file.
        found: u32,
        /// Version of this program.
        expected: u32,
    },
    /// The file could not be written.
    #[error("cannot write connection file {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl ConnectionInfo {
    /// Reads and checks a connection file: JSON, the expected protocol version, a 32-byte key
    /// and the signature scheme. `required` names the addresses the reader needs.
    pub fn load(
        path: &Path,
        protocol_version: u32,
        required: &[&str],
    ) -> Result<(ConnectionInfo, Key), ConnectionFileError> {
        let text = fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ConnectionFileError::Missing {
                    path: path.to_owned(),
                }
            } else {
                ConnectionFileError::Unreadable {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let corrupt = |reason: String| ConnectionFileError::Corrupt {
            path: path.to_owned(),
            reason,
        };
        let info: ConnectionInfo =
            serde_json::from_str(&text).map_err(|e| corrupt(format!("not valid JSON ({e})")))?;
        if info.protocol_version != protocol_version {
            return Err(ConnectionFileError::WrongVersion {
                path: path.to_owned(),
                found: info.protocol_version,
                expected: protocol_version,
            });
        }
        if info.signature_scheme != SIGNATURE_SCHEME {
            return Err(corrupt(format!(
                "signature scheme {:?} is not supported (only {SIGNATURE_SCHEME})",
                info.signature_scheme
            )));
        }
        let key = Key::from_hex(&info.key).map_err(corrupt)?;
        for name in required {
            let present = match *name {
                "engine" => info.addresses.engine.is_some(),
                "heartbeat" => info.addresses.heartbeat.is_some(),
                "client" => info.addresses.client.is_some(),
                "notify" => info.addresses.notify.is_some(),
                _ => true,
            };
            if !present {
                return Err(corrupt(format!("the {name} address is missing")));
            }
        }
        Ok((info, key))
    }

    /// Writes the file with mode 0600, atomically (temporary file, then rename), so that a
    /// reader never sees half a file.
    pub fn save(&self, path: &Path) -> Result<(), ConnectionFileError> {
        let write_err = |source| ConnectionFileError::Write {
            path: path.to_owned(),
            source,
        };
        let text = serde_json::to_string_pretty(self).expect("connection info serialises");
        let tmp = path.with_extension("json.tmp");
        {
            use std::os::unix::fs::OpenOptionsExt;
            let _ = fs::remove_file(&tmp);
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(write_err)?;
            file.write_all(text.as_bytes()).map_err(write_err)?;
            file.write_all(b"\n").map_err(write_err)?;
            file.sync_all().map_err(write_err)?;
        }
        fs::rename(&tmp, path).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_and_verify() {
        let key = Key::generate();
        let signer = Signer::new(&key);
        let frames: [&[u8]; 2] = [b"header", b"content"];
        let tag = signer.sign(frames);
        assert!(signer.verify(frames, &tag));
        let moved: [&[u8]; 2] = [b"headerc", b"ontent"];
        assert!(
            !signer.verify(moved, &tag),
            "moving bytes between frames changes the MAC"
        );
        let other = Signer::new(&Key::generate());
        assert!(!other.verify(frames, &tag), "another key does not verify");
        assert!(!signer.verify(frames, &tag[..31]), "short tags are refused");
    }

    #[test]
    fn key_hex_round_trip_and_errors() {
        let key = Key::generate();
        assert_eq!(Key::from_hex(&key.to_hex()).unwrap(), key);
        assert!(Key::from_hex("zz").unwrap_err().contains("not hex"));
        assert!(Key::from_hex("abcd").unwrap_err().contains("2 bytes"));
        assert_eq!(format!("{key:?}"), "Key(…)");
    }

    #[test]
    fn replay_guard_refuses_old_sequence_numbers() {
        let mut guard = ReplayGuard::new(4);
        assert!(guard.check(1, 1));
        assert!(guard.check(1, 2));
        assert!(!guard.check(1, 2));
        assert!(!guard.check(1, 1));
        assert!(guard.check(2, 1));
        assert!(guard.check(1, 10));
        for session in 10..100 {
            assert!(guard.check(session, 1));
        }
        assert!(guard.last.len() <= 4);
    }

    #[test]
    fn connection_file_round_trip_mode_and_errors() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        let key = Key::generate();
        let info = ConnectionInfo {
            protocol_version: 1,
            signature_scheme: SIGNATURE_SCHEME.into(),
            key: key.to_hex(),
            addresses: Addresses {
                client: Some("tcp://127.0.0.1:5000".into()),
                ..Default::default()
            },
            location: "here".into(),
            controller_pid: 1,
        };
        info.save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let (back, back_key) = ConnectionInfo::load(&path, 1, &["client"]).unwrap();
        assert_eq!(back, info);
        assert_eq!(back_key, key);

        let err = ConnectionInfo::load(&path, 2, &["client"]).unwrap_err();
        assert!(matches!(
            err,
            ConnectionFileError::WrongVersion {
                found: 1,
                expected: 2,
                ..
            }
        ));
        let err = ConnectionInfo::load(&path, 1, &["engine"]).unwrap_err();
        assert!(
            err.to_string().contains("engine address is missing"),
            "{err}"
        );
        assert!(err.to_string().contains("client.json"), "{err}");

        fs::write(&path, "{ not json").unwrap();
        let err = ConnectionInfo::load(&path, 1, &[]).unwrap_err();
        assert!(matches!(err, ConnectionFileError::Corrupt { .. }), "{err}");
        let err = ConnectionInfo::load(&dir.path().join("nope.json"), 1, &[]).unwrap_err();
        assert!(matches!(err, ConnectionFileError::Missing { .. }), "{err}");
    }
}
