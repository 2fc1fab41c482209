//! [`Subscriber`]: the controller's notifications (engines joining and leaving, and once a
//! second its activity feed: task counts, samples of finished tasks, failures), received on
//! a SUB socket connected to the notification address of a client connection file.
//!
//! Messages are checked like every other (signature, replay, decryption) by the transport
//! crate. A subscriber follows its controller across restarts: libzmq reconnects by itself
//! when the controller comes back on the same address, and every few seconds the
//! subscriber reads the connection file again and connects afresh when a new controller
//! wrote another address or key there. A subscriber hears only what is published after it
//! has connected; nothing is replayed.

use crate::client::context;
use crate::error::Error;
use protocol::{Notification, PROTOCOL_VERSION};
use security::{ConnectionFileError, ConnectionInfo};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use transport::{poll, Kind, Socket, Waitable};

/// How often the connection file is read again for a new address or key.
const RECHECK: Duration = Duration::from_secs(2);

/// A subscription to a controller's notifications. Not `Sync`: one thread reads it.
pub struct Subscriber {
    file: PathBuf,
    sock: Socket,
    /// What the socket was made from (address, key in hex), to notice a new controller.
    made_from: (String, String),
    checked: Instant,
    reconnects: u64,
}

impl std::fmt::Debug for Subscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscriber")
            .field("file", &self.file)
            .field("address", &self.made_from.0)
            .field("reconnects", &self.reconnects)
            .finish()
    }
}

/// A SUB socket for the notification address in `path`, and what it was made from.
fn subscribe(path: &Path) -> Result<(Socket, (String, String)), Error> {
    let (info, key) = ConnectionInfo::load(path, PROTOCOL_VERSION, &["notify"])?;
    let address = info
        .addresses
        .notify
        .clone()
        .ok_or_else(|| ConnectionFileError::Corrupt {
            path: path.to_owned(),
            reason: "the notification address is missing".into(),
        })?;
    let mut sock = Socket::new(context(), Kind::Sub, &key, None)?;
    sock.set_replay_window(Duration::from_secs(info.replay_window_s));
    sock.set_encryption(transport::Encryption::endpoint(info.encrypted()));
    sock.connect(&address)?;
    Ok((sock, (address, key.to_hex())))
}

impl Subscriber {
    /// Subscribes to the controller of a client connection file (`security/client.json`).
    ///
    /// Fails when the file cannot be read; a controller that is not running is not an
    /// error (nothing arrives until it is).
    pub fn connect_file(path: impl AsRef<Path>) -> Result<Subscriber, Error> {
        let file = path.as_ref().to_owned();
        let (sock, made_from) = subscribe(&file)?;
        Ok(Subscriber {
            file,
            sock,
            made_from,
            checked: Instant::now(),
            reconnects: 0,
        })
    }

    /// The next notification, waiting up to `timeout` (`None` when none came).
    ///
    /// Fails only when the socket itself fails; an unreadable connection file (a controller
    /// being restarted) keeps the current connection.
    pub fn next(&mut self, timeout: Duration) -> Result<Option<Notification>, Error> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(got) = self.sock.recv::<Notification>()? {
                return Ok(Some(got.msg));
            }
            let now = Instant::now();
            if now.duration_since(self.checked) >= RECHECK {
                self.recheck();
            }
            if now >= deadline {
                return Ok(None);
            }
            let wait = (deadline - now).min(RECHECK);
            poll(
                &[Waitable::Socket(&self.sock)],
                wait.as_millis().max(1) as i64,
            )?;
        }
    }

    /// Times the subscriber connected afresh because the connection file changed.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// The connection file this subscriber follows.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Reads the connection file again; a new address or key means a new controller.
    fn recheck(&mut self) {
        self.checked = Instant::now();
        let Ok((info, key)) = ConnectionInfo::load(&self.file, PROTOCOL_VERSION, &["notify"])
        else {
            return;
        };
        let now = (info.addresses.notify.unwrap_or_default(), key.to_hex());
        if now == self.made_from {
            return;
        }
        match subscribe(&self.file) {
            Ok((sock, made_from)) => {
                tracing::info!(
                    "notifications: the controller in {} moved to {}; subscribed there",
                    self.file.display(),
                    made_from.0
                );
                self.sock = sock;
                self.made_from = made_from;
                self.reconnects += 1;
            }
            Err(e) => tracing::debug!("notifications: cannot subscribe again yet: {e}"),
        }
    }
}

impl crate::Client {
    /// A subscription to this client's controller's notifications (see [`Subscriber`]),
    /// on a socket of its own.
    pub fn notifications(&self) -> Result<Subscriber, Error> {
        Subscriber::connect_file(self.connection_file())
    }
}
