//! [`Client`]: connecting, controller requests, and making views.

use crate::core::Timing;
use crate::error::Error;
use crate::executor::Executor;
use crate::io::{Follow, Io};
use crate::shared::{Expect, Shared};
use crate::view::{DirectView, LoadBalancedView};
use protocol::{EngineId, FromClient, MessageType, StatusReport, ToClient, PROTOCOL_VERSION};
use security::{ConnectionFileError, ConnectionInfo};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{Context, Kind, Socket, Waitable};

/// How to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long to wait for the controller's welcome (default 10 s). It also bounds waits for
    /// answers to requests (status, purge, shutdown), and three times it of silence from the
    /// controller while tasks are outstanding ends them with [`Error::ConnectionLost`].
    pub connect_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// One libzmq context per process: each context runs its own I/O thread, and clients gain
/// nothing from having several.
pub(crate) fn context() -> &'static Context {
    static CONTEXT: OnceLock<Context> = OnceLock::new();
    CONTEXT.get_or_init(Context::new)
}

/// Reads a client connection file and connects a dealer socket to its client address;
/// returns the socket and the address (for error messages).
pub(crate) fn dial(path: &Path) -> Result<(Socket, String), Error> {
    let (info, key) = ConnectionInfo::load(path, PROTOCOL_VERSION, &["client"])?;
    let address = info
        .addresses
        .client
        .clone()
        .ok_or_else(|| ConnectionFileError::Corrupt {
            path: path.to_owned(),
            reason: "the client address is missing".into(),
        })?;
    // A routing id of its own, kept across reconnections: after a network blip or a
    // controller restart, results still reach this connection (the controller's router hands
    // the id over to the new connection).
    let routing_id = format!("client-{:032x}", rand::random::<u128>());
    let mut sock = Socket::new(context(), Kind::Dealer, &key, Some(routing_id.as_bytes()))?;
    sock.set_replay_window(std::time::Duration::from_secs(info.replay_window_s));
    sock.set_encryption(transport::Encryption::endpoint(info.encrypted()));
    sock.connect(&address)?;
    Ok((sock, address))
}

/// What a client connection file names: the client address and the key (in hex), to notice
/// that a new controller wrote another address or key there.
pub(crate) fn file_identity(path: &Path) -> Option<(String, String)> {
    let (info, key) = ConnectionInfo::load(path, PROTOCOL_VERSION, &["client"]).ok()?;
    Some((info.addresses.client?, key.to_hex()))
}

/// A connection to a cluster's controller.
///
/// It owns a background I/O thread (the only user of its socket); every method may be called
/// from any thread. Dropping the client stops that thread, and results still pending end with
/// [`Error::ConnectionLost`].
pub struct Client {
    shared: Arc<Shared>,
    io: Option<JoinHandle<()>>,
    file: PathBuf,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.shared.address)
            .field("client_id", &self.shared.client_id)
            .field("file", &self.file)
            .finish()
    }
}

fn lost_setup(address: &str, what: &str, e: std::io::Error) -> Error {
    Error::ConnectionLost {
        address: address.to_owned(),
        reason: format!("{what}: {e}"),
    }
}

/// Environment variable naming a client connection file; [`Client::connect_env`] and the
/// `cluster` command's `--file` read it.
pub const CLIENT_FILE_ENV: &str = "CLUSTER_CLIENT_FILE";

impl Client {
    /// Connects the way the `cluster` command does without flags: with the file named by
    /// `$CLUSTER_CLIENT_FILE` if set, else with profile `$CLUSTER_PROFILE` (default
    /// `default`) under `$CLUSTER_DIR` (default `~/.cluster`). Handy for programs started by
    /// scripts or tests that point them at a cluster through the environment.
    pub fn connect_env() -> Result<Client, Error> {
        match std::env::var_os(CLIENT_FILE_ENV) {
            Some(file) if !file.is_empty() => Client::connect_file(file),
            _ => {
                let profile = std::env::var("CLUSTER_PROFILE")
                    .ok()
                    .filter(|p| !p.is_empty())
                    .unwrap_or_else(|| "default".into());
                Client::connect_profile(&profile)
            }
        }
    }

    /// Connects with the client connection file of profile `name` (`security/client.json`).
    pub fn connect_profile(name: &str) -> Result<Client, Error> {
        let file = profiles::Profile::open(name)?.client_file();
        Client::connect_file(file)
    }

    /// Connects with a connection file and default options.
    pub fn connect_file(path: impl AsRef<Path>) -> Result<Client, Error> {
        Client::connect_file_with(path, ClientOptions::default())
    }

    /// Connects with a connection file: says hello and waits up to
    /// `options.connect_timeout` for the welcome.
    ///
    /// A stopped controller and a file holding another cluster's key look the same from
    /// here (the controller drops wrongly signed messages without answering), so both give
    /// [`Error::ConnectTimeout`] naming the address and the file.
    pub fn connect_file_with(
        path: impl AsRef<Path>,
        options: ClientOptions,
    ) -> Result<Client, Error> {
        let path = path.as_ref();
        let identity = file_identity(path);
        let (mut sock, address) = dial(path)?;
        // A blocked send must not hang the I/O thread forever; libzmq queues up to the
        // high-water mark, so this only bites when the controller stops reading entirely.
        let send_ms = options
            .connect_timeout
            .as_millis()
            .clamp(1, i32::MAX as u128) as i32;
        sock.set_send_timeout(send_ms)?;
        sock.send(None, &FromClient::Hello, &[])?;
        let (client_id, engines, instance) = welcome(&mut sock, options.connect_timeout)
            .ok_or_else(|| Error::ConnectTimeout {
                address: address.clone(),
                file: path.to_owned(),
                timeout: options.connect_timeout,
            })??;

        let (wake_tx, wake_rx) =
            UnixStream::pair().map_err(|e| lost_setup(&address, "cannot make a pipe", e))?;
        for end in [&wake_tx, &wake_rx] {
            end.set_nonblocking(true)
                .map_err(|e| lost_setup(&address, "cannot set up a pipe", e))?;
        }
        let shared = Arc::new(Shared::new(
            address.clone(),
            client_id,
            engines,
            options.connect_timeout,
            wake_tx,
        ));
        let io = Io::new(
            sock,
            shared.clone(),
            wake_rx,
            Timing::from_connect_timeout(options.connect_timeout),
            instance,
            Follow {
                file: path.to_owned(),
                identity,
                send_ms,
            },
        );
        let handle = std::thread::Builder::new()
            .name("cluster-client-io".into())
            .spawn(move || io.run())
            .map_err(|e| lost_setup(&address, "cannot start the I/O thread", e))?;
        Ok(Client {
            shared,
            io: Some(handle),
            file: path.to_owned(),
        })
    }

    /// What this client's handles share with its I/O thread.
    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// The controller's client socket address (`tcp://host:port`).
    pub fn address(&self) -> &str {
        &self.shared.address
    }

    /// The connection file this client was made from.
    pub fn connection_file(&self) -> &Path {
        &self.file
    }

    /// The id the controller gave this client (task ids are made from it).
    pub fn client_id(&self) -> protocol::ClientId {
        self.shared.client_id
    }

    /// Sends a request on the client's own connection, after everything queued before it,
    /// and waits (up to the connect timeout) for its answer.
    pub(crate) fn request(&self, msg: FromClient, expect: Expect) -> Result<ToClient, Error> {
        self.shared.request(msg, expect)
    }

    /// The controller's status report: engines, queues, task counters, addresses.
    pub fn status(&self) -> Result<StatusReport, Error> {
        match self.request(FromClient::Status, Expect::Status)? {
            ToClient::Status(report) => Ok(*report),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Engines registered now, by id (asks the controller).
    pub fn ids(&self) -> Result<Vec<EngineId>, Error> {
        let mut ids: Vec<EngineId> = self.status()?.engines.iter().map(|e| e.id).collect();
        ids.sort_unstable();
        Ok(ids)
    }

    /// Waits until at least `n` engines are registered and returns their ids; after
    /// `timeout`, [`Error::Timeout`] says how many there are.
    pub fn wait_for_engines(&self, n: usize, timeout: Duration) -> Result<Vec<EngineId>, Error> {
        let start = Instant::now();
        let deadline = start + timeout;
        let mut seen = 0;
        loop {
            match self.ids() {
                Ok(ids) if ids.len() >= n => return Ok(ids),
                Ok(ids) => seen = ids.len(),
                // A slow answer counts against the deadline like any other wait.
                Err(Error::Timeout { .. }) => {}
                Err(e) => return Err(e),
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    what: format!(
                        "{n} engines ({seen} registered after {:.1} s)",
                        timeout.as_secs_f64()
                    ),
                });
            }
            // `cluster start` waits here: ask often so readiness shows within milliseconds.
            std::thread::sleep((deadline - now).min(Duration::from_millis(5)));
        }
    }

    /// Stops all engines and, when `controller` is true, the controller as well.
    pub fn shutdown(&self, controller: bool) -> Result<(), Error> {
        match self.request(FromClient::Shutdown { controller }, Expect::Ack)? {
            ToClient::Ack => Ok(()),
            other => Err(unexpected("shutdown", &other)),
        }
    }

    /// Makes the controller forget every stored result.
    pub fn purge(&self) -> Result<(), Error> {
        match self.request(FromClient::Purge { ids: Vec::new() }, Expect::Ack)? {
            ToClient::Ack => Ok(()),
            other => Err(unexpected("purge", &other)),
        }
    }

    /// A view whose tasks go wherever the controller's scheduler puts them.
    pub fn load_balanced_view(&self) -> LoadBalancedView {
        LoadBalancedView::new(self.shared.clone())
    }

    /// A view that runs each task on every one of `ids` (results in the order of `ids`).
    pub fn direct_view(&self, ids: &[EngineId]) -> DirectView {
        DirectView::new(self.shared.clone(), ids.to_vec())
    }

    /// A `concurrent.futures`-style executor over a load-balanced view.
    pub fn executor(&self) -> Executor {
        Executor::new(self.load_balanced_view())
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.close("the client was dropped");
        if let Some(handle) = self.io.take() {
            let _ = handle.join();
        }
    }
}

fn unexpected(request: &str, answer: &ToClient) -> Error {
    use protocol::MessageType as _;
    Error::Decode {
        what: format!("the answer to the {request} request"),
        message: format!("unexpected {:?} message", answer.msg_type()),
    }
}

/// Waits for the welcome: the client's id, the number of engines and the controller's
/// instance; `None` on timeout.
#[allow(clippy::type_complexity)]
fn welcome(
    sock: &mut Socket,
    timeout: Duration,
) -> Option<Result<(protocol::ClientId, usize, u64), Error>> {
    let deadline = Instant::now() + timeout;
    loop {
        loop {
            match sock.recv::<ToClient>() {
                Ok(Some(received)) => match received.msg {
                    ToClient::Welcome {
                        client_id,
                        engines,
                        instance,
                    } => return Some(Ok((client_id, engines.len(), instance))),
                    other => tracing::debug!("ignoring {} before the welcome", other.msg_type()),
                },
                Ok(None) if sock.readable() => {}
                Ok(None) => break,
                Err(e) => return Some(Err(e.into())),
            }
        }
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let ms = (deadline - now).as_millis().max(1) as i64;
        if let Err(e) = transport::poll(&[Waitable::Socket(sock)], ms) {
            return Some(Err(e.into()));
        }
    }
}
