//! The cluster key: 32 random bytes, hex in connection files, never printed.

use std::fmt;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_hex_round_trip_and_errors() {
        let key = Key::generate();
        assert_eq!(Key::from_hex(&key.to_hex()).unwrap(), key);
        assert!(Key::from_hex("zz").unwrap_err().contains("not hex"));
        assert!(Key::from_hex("abcd").unwrap_err().contains("2 bytes"));
        assert_eq!(format!("{key:?}"), "Key(…)");
    }
}
