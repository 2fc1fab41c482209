//! Connection files (`security/client.json`, `security/engine.json`): what a peer needs to
//! reach the controller, written atomically with mode 0600.

use crate::{Key, DEFAULT_REPLAY_WINDOW_S, ENCRYPTION_SCHEME, SIGNATURE_SCHEME};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

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

/// The `encryption` field of a cluster whose bodies travel in the clear.
const NO_ENCRYPTION: &str = "none";

fn no_encryption() -> String {
    NO_ENCRYPTION.to_owned()
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
    #[error("cannot read connection file {path}: {error}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, so not also a `source()`: a printed chain says it
        /// once).
        error: std::io::Error,
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
    #[error("cannot write connection file {path}: {error}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error (in the message, not also a `source()`).
        error: std::io::Error,
    },
}

impl ConnectionInfo {
    /// The connection info of a controller speaking `protocol_version` at `addresses`, with
    /// cluster key `key`: signed with [`SIGNATURE_SCHEME`], bodies encrypted with
    /// [`ENCRYPTION_SCHEME`] (the controller's default), the default replay window, and this
    /// process on `localhost` as the controller. Change those with the `with_*` methods.
    pub fn new(protocol_version: u32, key: &Key, addresses: Addresses) -> ConnectionInfo {
        ConnectionInfo {
            protocol_version,
            signature_scheme: SIGNATURE_SCHEME.to_owned(),
            key: key.to_hex(),
            addresses,
            location: "localhost".to_owned(),
            controller_pid: std::process::id(),
            replay_window_s: DEFAULT_REPLAY_WINDOW_S,
            encryption: ENCRYPTION_SCHEME.to_owned(),
        }
    }

    /// The controller runs as process `pid` on host `location`.
    pub fn with_location(mut self, location: impl Into<String>, pid: u32) -> ConnectionInfo {
        self.location = location.into();
        self.controller_pid = pid;
        self
    }

    /// Messages stamped further than `window` (whole seconds) from a receiver's clock are
    /// refused as replays (zero: no time limit).
    pub fn with_replay_window(mut self, window: Duration) -> ConnectionInfo {
        self.replay_window_s = window.as_secs();
        self
    }

    /// Whether message bodies are encrypted ([`ENCRYPTION_SCHEME`]) or travel in the clear.
    pub fn with_encryption(mut self, encrypted: bool) -> ConnectionInfo {
        self.encryption = if encrypted {
            ENCRYPTION_SCHEME
        } else {
            NO_ENCRYPTION
        }
        .to_owned();
        self
    }

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
                    error: source,
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
        if info.encryption != ENCRYPTION_SCHEME && info.encryption != NO_ENCRYPTION {
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
        let write_err = |error| ConnectionFileError::Write {
            path: path.to_owned(),
            error,
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
    fn connection_file_round_trip_mode_and_errors() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("client.json");
        let key = Key::generate();
        let info = ConnectionInfo::new(
            1,
            &key,
            Addresses {
                client: Some("tcp://127.0.0.1:5000".into()),
                ..Default::default()
            },
        )
        .with_location("here", 1)
        .with_encryption(false);
        assert_eq!(info.signature_scheme, SIGNATURE_SCHEME);
        assert_eq!(info.replay_window_s, DEFAULT_REPLAY_WINDOW_S);
        assert!(!info.encrypted());
        assert!(info.clone().with_encryption(true).encrypted());
        assert_eq!(
            info.clone()
                .with_replay_window(Duration::from_secs(60))
                .replay_window_s,
            60
        );
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

    /// Regression: "cannot read connection file F: E" also returned E as its `source()`, so a
    /// printed chain said E twice.
    #[test]
    fn an_unreadable_file_says_why_once() {
        let dir = tempfile::tempdir().unwrap();
        let err = ConnectionInfo::load(dir.path(), 1, &[]).unwrap_err();
        assert!(
            matches!(err, ConnectionFileError::Unreadable { .. }),
            "{err}"
        );
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read connection file {}: Is a directory (os error 21)",
                dir.path().display()
            )
        );
    }
}
