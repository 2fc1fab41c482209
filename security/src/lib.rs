//! Cluster keys, message signing, the replay window and connection files.
//!
//! A cluster has one secret [`Key`], made fresh when its controller starts and written into the
//! profile's connection files (mode 0600). Every frame after the MAC frame is signed with
//! HMAC-SHA256 under that key by a [`Signer`]; a [`ReplayGuard`] remembers the highest
//! sequence number seen per sender session so that a captured message cannot be played again.
//! A [`Sealer`] encrypts frames (AES-256-GCM under a key derived from the cluster key)
//! so that arguments, results and commands do not cross the network in the clear.
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

/// Name of the frame encryption, as written in connection files (`"none"`: plaintext).
pub const ENCRYPTION_SCHEME: &str = "aes-256-gcm";

/// Bytes a sealed frame has beyond its plaintext: a 12-byte nonce first, a 16-byte tag last.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Encrypts and authenticates single frames (AES-256-GCM).
///
/// The key is derived from the cluster key (HMAC-SHA256 of a fixed label), so that signing
/// and encryption never use the same key. Each frame carries its nonce in front, so sealed
/// frames can be forwarded as they are (payloads cross the controller untouched) and opened
/// by anyone holding the key. Nonces must never repeat under one key, across every process of
/// the cluster: each sealer draws a random 64-bit prefix and counts frames in the other 32
/// bits, drawing a new prefix when the count wraps. (AES-GCM rather than ChaCha20-Poly1305:
/// with AES instructions it seals a small frame in a tenth of the time, and frames are
/// mostly small.) An empty frame stays empty: it says no more than its length.
#[derive(Clone)]
pub struct Sealer {
    cipher: aes_gcm::Aes256Gcm,
    prefix: [u8; 8],
    count: u32,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(…)")
    }
}

impl Sealer {
    /// A sealer for this cluster key.
    pub fn new(key: &Key) -> Sealer {
        use aes_gcm::KeyInit;
        let derived = Signer::new(key).sign([b"cluster frame encryption v1".as_slice()]);
        Sealer {
            cipher: aes_gcm::Aes256Gcm::new(&derived.into()),
            prefix: rand::random(),
            count: 0,
        }
    }

    fn next_nonce(&mut self) -> [u8; NONCE_LEN] {
        self.count = self.count.wrapping_add(1);
        if self.count == 0 {
            self.prefix = rand::random();
            self.count = 1;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(&self.prefix);
        nonce[8..].copy_from_slice(&self.count.to_le_bytes());
        nonce
    }

    /// `plain` encrypted: nonce, ciphertext, tag.
    pub fn seal(&mut self, plain: &[u8]) -> Vec<u8> {
        use aes_gcm::aead::AeadInPlace;
        if plain.is_empty() {
            return Vec::new();
        }
        let nonce = self.next_nonce();
        let mut out = Vec::with_capacity(plain.len() + SEAL_OVERHEAD);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = self
            .cipher
            .encrypt_in_place_detached(&nonce.into(), b"", &mut out[NONCE_LEN..])
            .expect("AES-GCM seals any length a frame can have");
        out.extend_from_slice(&tag);
        out
    }

    /// The plaintext of a sealed frame; `None` when it was not sealed under this key (or was
    /// altered).
    pub fn open(&self, sealed: &[u8]) -> Option<Vec<u8>> {
        use aes_gcm::aead::AeadInPlace;
        if sealed.is_empty() {
            return Some(Vec::new());
        }
        if sealed.len() < SEAL_OVERHEAD {
            return None;
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (body, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().ok()?;
        let tag: [u8; TAG_LEN] = tag.try_into().ok()?;
        let mut plain = body.to_vec();
        self.cipher
            .decrypt_in_place_detached(&nonce.into(), b"", &mut plain, &tag.into())
            .ok()?;
        Some(plain)
    }
}

/// Remembers, per sender session, the highest sequence number accepted, and refuses messages
/// stamped outside a time window around this machine's clock.
///
/// Each socket has its own random session and numbers its messages 1, 2, 3…; one peer socket
/// delivers them in order, so anything not above the last accepted number is a replay. The
/// sequence check alone has two holes: a receiver that restarts (a controller started again
/// with `--reuse`, same key) has an empty table, and a bounded table forgets sessions. The
/// window closes both for anything older than it: a captured message can be played again only
/// within the window, and only to a receiver that has forgotten its session, which it does not
/// do for sessions heard from within the window unless the table overflows.
#[derive(Debug)]
pub struct ReplayGuard {
    /// Session → (last sequence number, when last heard from in µs since the epoch).
    last: HashMap<u64, (u64, u64)>,
    capacity: usize,
    window_us: u64,
}

/// Why [`ReplayGuard::check`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its sequence number is not above the last one accepted from its session.
    Replayed,
    /// Its time stamp is further from this machine's clock than the window (by the given
    /// microseconds, positive when it is from the past): a replay, or clocks that disagree.
    Stale {
        /// How far in the past its stamp is by the receiver's clock (negative: in the future).
        behind_us: i64,
    },
}

/// Default time window: generous, since clocks of machines in a cluster may disagree.
pub const DEFAULT_REPLAY_WINDOW_S: u64 = 300;

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(
            65_536,
            std::time::Duration::from_secs(DEFAULT_REPLAY_WINDOW_S),
        )
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` sessions and refusing messages stamped more
    /// than `window` away from the receiver's clock (a zero window turns that check off).
    pub fn new(capacity: usize, window: std::time::Duration) -> ReplayGuard {
        ReplayGuard {
            last: HashMap::new(),
            capacity: capacity.max(1),
            window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Accepts `(session, seq)` sent at `sent_us` if `seq` is above the last one accepted for
    /// that session and `sent_us` is within the window of `now_us` (both µs since the epoch).
    pub fn check(
        &mut self,
        session: u64,
        seq: u64,
        sent_us: u64,
        now_us: u64,
    ) -> Result<(), Refusal> {
        if self.window_us > 0 && sent_us.abs_diff(now_us) > self.window_us {
            let behind_us = i64::try_from(now_us as i128 - sent_us as i128).unwrap_or(i64::MAX);
            return Err(Refusal::Stale { behind_us });
        }
        if let Some((last, heard)) = self.last.get_mut(&session) {
            if seq <= *last {
                return Err(Refusal::Replayed);
            }
            *last = seq;
            *heard = now_us;
            return Ok(());
        }
        if self.last.len() >= self.capacity {
            self.evict(now_us);
        }
        self.last.insert(session, (seq, now_us));
        Ok(())
    }

    /// Sessions remembered.
    pub fn sessions(&self) -> usize {
        self.last.len()
    }

    fn evict(&mut self, now_us: u64) {
        // Sessions silent for longer than the window are safe to forget: anything captured
        // from them is stale by now.
        if self.window_us > 0 {
            let window = self.window_us;
            self.last
                .retain(|_, (_, heard)| now_us.saturating_sub(*heard) <= window);
        }
        if self.last.len() >= self.capacity {
            // Still full of live sessions: drop the older half (amortised O(1) per session).
            let mut stamps: Vec<u64> = self.last.values().map(|(_, heard)| *heard).collect();
            stamps.sort_unstable();
            let cut = stamps[stamps.len() / 2];
            self.last.retain(|_, (_, heard)| *heard > cut);
        }
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
    /// Messages stamped further than this many seconds from the receiver's clock are refused
    /// as replays (0: no time limit); every socket of the cluster uses the same window.
    #[serde(default = "default_replay_window_s")]
    pub replay_window_s: u64,
    /// [`ENCRYPTION_SCHEME`] when message bodies are encrypted, `"none"` when they travel in
    /// the clear (files without the field predate encryption and mean `"none"`).
    #[serde(default = "no_encryption")]
    pub encryption: String,
}

fn no_encryption() -> String {
    "none".to_owned()
}

fn default_replay_window_s() -> u64 {
    DEFAULT_REPLAY_WINDOW_S
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
    /// True when message bodies are encrypted in this cluster.
    pub fn encrypted(&self) -> bool {
        self.encryption == ENCRYPTION_SCHEME
    }

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
        if info.encryption != ENCRYPTION_SCHEME && info.encryption != "none" {
            return Err(corrupt(format!(
                "encryption {:?} is not supported (only {ENCRYPTION_SCHEME:?} or \"none\")",
                info.encryption
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

    const SEC: u64 = 1_000_000;

    #[test]
    fn sealed_frames_open_only_under_the_same_key_and_unaltered() {
        let key = Key::generate();
        let mut sealer = Sealer::new(&key);
        let plain = b"nth_prime 1000".to_vec();
        let sealed = sealer.seal(&plain);
        assert_eq!(sealed.len(), plain.len() + SEAL_OVERHEAD);
        assert!(
            !sealed.windows(plain.len()).any(|w| w == plain),
            "not in the clear"
        );
        // Fresh nonce each time: the same plaintext seals differently.
        assert_ne!(sealer.seal(&plain), sealed);
        // Another sealer of the same key opens it (a frame forwarded to another process).
        assert_eq!(Sealer::new(&key).open(&sealed), Some(plain.clone()));
        assert_eq!(sealer.open(&sealed), Some(plain.clone()));
        assert_eq!(Sealer::new(&Key::generate()).open(&sealed), None);
        let mut altered = sealed.clone();
        altered[20] ^= 1;
        assert_eq!(sealer.open(&altered), None);
        assert_eq!(sealer.open(&sealed[..10]), None);
        // Empty stays empty.
        assert!(sealer.seal(b"").is_empty());
        assert_eq!(sealer.open(b""), Some(Vec::new()));
    }

    #[test]
    fn replay_guard_refuses_old_sequence_numbers() {
        let mut guard = ReplayGuard::new(4, std::time::Duration::ZERO);
        let mut check = |session, seq| guard.check(session, seq, 0, 0);
        assert_eq!(check(1, 1), Ok(()));
        assert_eq!(check(1, 2), Ok(()));
        assert_eq!(check(1, 2), Err(Refusal::Replayed));
        assert_eq!(check(1, 1), Err(Refusal::Replayed));
        assert_eq!(check(2, 1), Ok(()));
        assert_eq!(check(1, 10), Ok(()));
        for session in 10..100 {
            assert_eq!(check(session, 1), Ok(()));
        }
        assert!(guard.sessions() <= 4);
    }

    #[test]
    fn replay_guard_refuses_messages_outside_its_time_window() {
        let mut guard = ReplayGuard::new(16, std::time::Duration::from_secs(300));
        let now = 1_000_000 * SEC;
        assert_eq!(guard.check(1, 1, now - 300 * SEC, now), Ok(()));
        assert_eq!(guard.check(2, 1, now + 299 * SEC, now), Ok(()));
        assert_eq!(
            guard.check(3, 1, now - 301 * SEC, now),
            Err(Refusal::Stale {
                behind_us: 301 * SEC as i64
            })
        );
        assert_eq!(
            guard.check(4, 1, now + 400 * SEC, now),
            Err(Refusal::Stale {
                behind_us: -400 * SEC as i64
            })
        );
        // A stale message does not touch the session's sequence.
        assert_eq!(guard.check(1, 2, now, now), Ok(()));
    }

    #[test]
    fn a_full_replay_guard_forgets_sessions_silent_past_the_window_first() {
        let mut guard = ReplayGuard::new(4, std::time::Duration::from_secs(60));
        let t0 = 1_000 * SEC;
        // Two sessions heard from long ago, two recently.
        guard.check(1, 5, t0, t0).unwrap();
        guard.check(2, 5, t0, t0).unwrap();
        let t1 = t0 + 100 * SEC;
        guard.check(3, 5, t1, t1).unwrap();
        guard.check(4, 5, t1, t1).unwrap();
        // Full: a new session evicts only the silent ones; the recent ones are still guarded.
        guard.check(5, 1, t1, t1).unwrap();
        assert_eq!(guard.sessions(), 3);
        assert_eq!(guard.check(3, 5, t1, t1), Err(Refusal::Replayed));
        assert_eq!(guard.check(4, 4, t1, t1), Err(Refusal::Replayed));
        // A replay from a forgotten session is stale by now anyway.
        assert!(matches!(
            guard.check(1, 5, t0, t1),
            Err(Refusal::Stale { .. })
        ));
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
            replay_window_s: 300,
            encryption: "none".into(),
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
