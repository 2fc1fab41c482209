//! The controller's settings ([`ControllerConfig`], including taking over the connection
//! files of a controller that died) and why it can fail ([`ControllerError`]).

use crate::scheduler::{Hwm, SchedulerKind};
use protocol::PROTOCOL_VERSION;
use security::{ConnectionFileError, ConnectionInfo, Key};
use std::path::PathBuf;
use std::time::Duration;
use transport::TransportError;

/// Everything [`run`](super::run) needs.
#[derive(Debug, Clone)]
pub struct ControllerConfig {
    /// IP address to bind (`127.0.0.1` by default; `0.0.0.0` for every interface).
    pub ip: String,
    /// Engine task socket port (0 = a free port).
    pub engine_port: u16,
    /// Heartbeat socket port (0 = a free port).
    pub heartbeat_port: u16,
    /// Client socket port (0 = a free port).
    pub client_port: u16,
    /// Notification socket port (0 = a free port).
    pub notify_port: u16,
    /// How engines are chosen.
    pub scheduler: SchedulerKind,
    /// Limit on outstanding tasks per engine.
    pub hwm: Hwm,
    /// Time between heartbeat pings.
    pub heartbeat_period: Duration,
    /// Pings an engine may miss before it is declared dead.
    pub heartbeat_misses: u32,
    /// The cluster key, written into the connection files.
    pub key: Key,
    /// Where `client.json` and `engine.json` are written once the sockets are bound.
    pub security_dir: PathBuf,
    /// Whether message bodies are encrypted (written into the connection files, so that
    /// engines and clients follow).
    pub encrypt: bool,
    /// Time window for replay protection, shared with engines and clients through the
    /// connection files (zero: sequence numbers only).
    pub replay_window: Duration,
    /// True when this controller takes over from an earlier one (same ports and key, see
    /// [`ControllerConfig::reusing`]): its engines and clients reconnect by themselves.
    pub restarted: bool,
    /// The task store: where task records and results go (`StoreConfig::none()` by default
    /// here: results in memory until purged; the `cluster` program defaults to SQLite in the
    /// profile).
    pub store: store::StoreConfig,
    /// Move the store's database aside before opening it (`--db-reset`).
    pub db_reset: bool,
    /// Memory for recent results when a store is on (the rest is read back from the store).
    pub result_cache_bytes: usize,
    /// Limits of the shared objects (bytes per object and in total, number of objects).
    pub objects: crate::hub::ObjectLimits,
}

impl ControllerConfig {
    /// Defaults: 127.0.0.1, free ports, `leastload`, `hwm` auto, a ping every second and
    /// death after 3 missed.
    pub fn new(key: Key, security_dir: PathBuf) -> Self {
        ControllerConfig {
            ip: "127.0.0.1".to_owned(),
            engine_port: 0,
            heartbeat_port: 0,
            client_port: 0,
            notify_port: 0,
            scheduler: SchedulerKind::LeastLoad,
            hwm: Hwm::Auto,
            heartbeat_period: Duration::from_secs(1),
            heartbeat_misses: 3,
            key,
            security_dir,
            replay_window: Duration::from_secs(security::DEFAULT_REPLAY_WINDOW_S),
            encrypt: true,
            restarted: false,
            store: store::StoreConfig::none(),
            db_reset: false,
            result_cache_bytes: crate::hub::DEFAULT_RESULT_CACHE_BYTES,
            objects: crate::hub::ObjectLimits::default(),
        }
    }

    /// The configuration of a controller that comes back in place of one that died: the
    /// address, ports and key of the connection files it left in `security_dir`, so that
    /// running engines and clients reconnect without being restarted. Other settings are
    /// the defaults of [`ControllerConfig::new`].
    pub fn reusing(security_dir: PathBuf) -> Result<ControllerConfig, ControllerError> {
        let (engine, key) = ConnectionInfo::load(
            &security_dir.join("engine.json"),
            PROTOCOL_VERSION,
            &["engine", "heartbeat"],
        )?;
        let (client, client_key) = ConnectionInfo::load(
            &security_dir.join("client.json"),
            PROTOCOL_VERSION,
            &["client", "notify"],
        )?;
        if client_key.to_hex() != key.to_hex() {
            return Err(ControllerError::Reuse {
                dir: security_dir,
                reason: "engine.json and client.json hold different keys".into(),
            });
        }
        let mut config = ControllerConfig::new(key, security_dir.clone());
        config.replay_window = Duration::from_secs(engine.replay_window_s);
        config.encrypt = engine.encrypted();
        let parsed = [
            engine.addresses.engine.as_deref(),
            engine.addresses.heartbeat.as_deref(),
            client.addresses.client.as_deref(),
            client.addresses.notify.as_deref(),
        ]
        .map(|a| a.and_then(split_tcp));
        let [Some(e), Some(h), Some(c), Some(n)] = parsed else {
            return Err(ControllerError::Reuse {
                dir: security_dir,
                reason: "an address is not of the form tcp://IP:PORT".into(),
            });
        };
        config.ip = e.0.clone();
        config.engine_port = e.1;
        config.heartbeat_port = h.1;
        config.client_port = c.1;
        config.notify_port = n.1;
        config.restarted = true;
        Ok(config)
    }
}

/// `tcp://IP:PORT` (IPv6 in brackets) as IP and port.
fn split_tcp(address: &str) -> Option<(String, u16)> {
    let rest = address.strip_prefix("tcp://")?;
    let (ip, port) = rest.rsplit_once(':')?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    Some((ip.to_owned(), port.parse().ok()?))
}

/// Why the controller could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    /// A socket could not be bound. Retrying helps once the port is free (or with port 0).
    #[error("cannot open the controller's {role} socket: {error}")]
    Bind {
        /// Which socket (`engine`, `heartbeat`, `client`, `notify`).
        role: &'static str,
        /// The address asked for (the transport's error names it).
        address: String,
        /// The transport's error (in the message, not also a `source()`: a printed chain
        /// says it once).
        error: TransportError,
    },
    /// A socket failed outside binding (libzmq trouble, e.g. out of file descriptors);
    /// restarting the controller may help.
    #[error("the controller's {role} socket failed: {error}")]
    Socket {
        /// Which socket.
        role: &'static str,
        /// The transport's error (in the message, not also a `source()`).
        error: TransportError,
    },
    /// The security directory could not be created; fix its parent's permissions.
    #[error("cannot create the security directory {path}: {error}")]
    SecurityDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error (in the message, not also a `source()`).
        error: std::io::Error,
    },
    /// A connection file could not be written (engines and clients could not find us), or
    /// read back for `--reuse`.
    #[error(transparent)]
    ConnectionFile(#[from] ConnectionFileError),
    /// The task store refused to open (corrupt, locked, in use by another controller, newer,
    /// unreadable) or to be read back; its message names the file and what to do.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// `--reuse` found connection files it cannot take over; start without `--reuse` (engines
    /// and clients must then be started again with the new files).
    #[error("cannot reuse the connection files in {dir}: {reason}")]
    Reuse {
        /// The security directory.
        dir: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression: a port in use read "cannot open the controller's engine socket on A:
    /// cannot listen on A: E (hint)", and a printed chain then said it all again.
    #[test]
    fn a_bind_error_names_the_address_and_cause_once() {
        let key = Key::generate();
        let ctx = transport::Context::new();
        let kind = transport::Kind::Router;
        let a = transport::Socket::new(&ctx, kind, &key, None).unwrap();
        let address = a.bind("tcp://127.0.0.1:0").unwrap();
        let b = transport::Socket::new(&ctx, kind, &key, None).unwrap();
        let err = ControllerError::Bind {
            role: "engine",
            address: address.clone(),
            error: b.bind(&address).unwrap_err(),
        };
        assert!(std::error::Error::source(&err).is_none());
        let text = err.to_string();
        assert!(
            text.starts_with(&format!(
                "cannot open the controller's engine socket: cannot listen on {address}: "
            )),
            "{text}"
        );
        assert_eq!(text.matches(&address).count(), 1, "{text}");
        assert_eq!(text.matches("Address already in use").count(), 1, "{text}");
    }
}
