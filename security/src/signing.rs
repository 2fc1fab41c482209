//! Message signing: HMAC-SHA256 over the frames after the MAC frame.

use crate::Key;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// Name of the only signature scheme, as written in connection files.
pub const SIGNATURE_SCHEME: &str = "hmac-sha256";

/// Length of a MAC frame in bytes.
pub const MAC_LEN: usize = 32;

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
}
