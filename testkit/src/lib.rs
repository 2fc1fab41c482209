//! Fakes shared by the tests of the engine and the client (a dev-dependency only: no
//! production target may depend on this crate).
//!
//! What there is:
//!
//! * [`connection_file`] writes a connection file for a cluster key and addresses, as the
//!   controller does (current protocol version, bodies in the clear).
//! * [`Endpoint`]: one controller socket (ROUTER) bound on `127.0.0.1` at a port the system
//!   picks, with its connection file in a temporary folder. The socket comes apart from the
//!   endpoint, so a test can move it into a thread of its own to play the controller (the
//!   client's fake does) while the endpoint keeps the file.
//! * [`FakeController`]: the engine side of a controller, driven from the test's thread:
//!   the engine and heartbeat sockets and `engine.json`, waiting for registrations, sending
//!   task batches, pinging.
//! * [`RegisteredEngine`]: an engine that registered with a [`FakeController`] and was
//!   given its id, with what it sent.
//! * [`recv`], [`send_retrying`] and [`encode`]: waiting for a message with a deadline,
//!   sending while a peer's connection is still being made, msgpack without ceremony.
//! * [`netns`]: fake hosts in network namespaces on a bridge of their own (root only), for
//!   the ssh, Slurm and MPI tests.
//!
//! Every wait here has a deadline and panics with a message when it passes, so a broken
//! peer fails its test instead of hanging it.

pub mod netns;

use protocol::{
    EngineId, FromEngine, Heartbeat, MessageType, Registration, ToEngine, PROTOCOL_VERSION,
};
use security::{Addresses, ConnectionInfo, Key};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use transport::{poll, Context, Kind, Received, Socket, TransportError, Waitable};

/// How long the helpers wait for a peer before failing the test.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Writes the connection file `dir/name` for `key` and `addresses` (current protocol version,
/// no encryption, this process as the controller) and returns its path.
pub fn connection_file(dir: &Path, name: &str, key: &Key, addresses: Addresses) -> PathBuf {
    let path = dir.join(name);
    ConnectionInfo::new(PROTOCOL_VERSION, key, addresses)
        .with_encryption(false)
        .save(&path)
        .unwrap_or_else(|e| panic!("cannot write the test connection file: {e}"));
    path
}

/// Binds a ROUTER socket on `127.0.0.1` at a port the system picks; returns it and its address.
pub fn bind_router(ctx: &Context, key: &Key) -> (Socket, String) {
    let sock = Socket::new(ctx, Kind::Router, key, None).expect("a router socket");
    let address = sock.bind("tcp://127.0.0.1:0").expect("a loopback port");
    (sock, address)
}

/// Which controller socket an [`Endpoint`] stands for, and so which address its file names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The client socket (`client.json`).
    Client,
    /// The engine task socket (`engine.json`, without a heartbeat address).
    Engine,
}

/// A bound controller socket's address and connection file (kept while this lives).
pub struct Endpoint {
    /// The socket's `tcp://127.0.0.1:port` address.
    pub address: String,
    /// The connection file naming it.
    pub file: PathBuf,
    /// The key the socket signs with.
    pub key: Key,
    _ctx: Context,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("address", &self.address)
            .field("file", &self.file)
            .finish()
    }
}

impl Endpoint {
    /// A ROUTER socket for `role` under a fresh key, bound, and the endpoint with its
    /// connection file.
    pub fn bind(role: Role) -> (Endpoint, Socket) {
        Endpoint::bind_with_file_key(role, None)
    }

    /// As [`Endpoint::bind`], but the file holds `file_key` when given: a peer reading it
    /// signs with a key the socket does not accept.
    pub fn bind_with_file_key(role: Role, file_key: Option<&Key>) -> (Endpoint, Socket) {
        let key = Key::generate();
        let ctx = Context::new();
        let (sock, address) = bind_router(&ctx, &key);
        let dir = tempfile::tempdir().expect("a temporary folder");
        let (name, addresses) = match role {
            Role::Client => (
                "client.json",
                Addresses {
                    client: Some(address.clone()),
                    ..Addresses::default()
                },
            ),
            Role::Engine => (
                "engine.json",
                Addresses {
                    engine: Some(address.clone()),
                    ..Addresses::default()
                },
            ),
        };
        let file = connection_file(dir.path(), name, file_key.unwrap_or(&key), addresses);
        let endpoint = Endpoint {
            address,
            file,
            key,
            _ctx: ctx,
            _dir: dir,
        };
        (endpoint, sock)
    }
}

/// The engine side of a controller: engine and heartbeat sockets on `127.0.0.1` and an
/// `engine.json` naming them, for a real engine to connect to.
pub struct FakeController {
    /// The engine task socket (ROUTER).
    pub engines: Socket,
    /// The heartbeat socket (ROUTER).
    pub heartbeats: Socket,
    /// The engine socket's address.
    pub engine_addr: String,
    /// The heartbeat socket's address.
    pub heartbeat_addr: String,
    /// `engine.json`.
    pub file: PathBuf,
    _ctx: Context,
    _dir: tempfile::TempDir,
}

impl std::fmt::Debug for FakeController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeController")
            .field("engine_addr", &self.engine_addr)
            .field("file", &self.file)
            .finish()
    }
}

impl Default for FakeController {
    fn default() -> Self {
        FakeController::new()
    }
}

/// An engine that registered with a [`FakeController`] and was given an id.
#[derive(Debug, Clone)]
pub struct RegisteredEngine {
    /// Its routing id on the engine socket (its uuid).
    pub route: Vec<u8>,
    /// What it registered with.
    pub registration: Registration,
    /// The id it was given.
    pub id: EngineId,
}

impl FakeController {
    /// Binds both sockets under a fresh key and writes `engine.json`.
    pub fn new() -> FakeController {
        let key = Key::generate();
        let ctx = Context::new();
        let (engines, engine_addr) = bind_router(&ctx, &key);
        let (heartbeats, heartbeat_addr) = bind_router(&ctx, &key);
        let dir = tempfile::tempdir().expect("a temporary folder");
        let addresses = Addresses {
            engine: Some(engine_addr.clone()),
            heartbeat: Some(heartbeat_addr.clone()),
            ..Addresses::default()
        };
        let file = connection_file(dir.path(), "engine.json", &key, addresses);
        FakeController {
            engines,
            heartbeats,
            engine_addr,
            heartbeat_addr,
            file,
            _ctx: ctx,
            _dir: dir,
        }
    }

    /// The next engine-socket message, within [`PATIENCE`].
    pub fn recv_engine(&mut self) -> Received<FromEngine> {
        recv(&mut self.engines, PATIENCE).expect("a message from the engine")
    }

    /// The next engine-socket message within `within`, if any.
    pub fn try_recv_engine(&mut self, within: Duration) -> Option<Received<FromEngine>> {
        recv(&mut self.engines, within)
    }

    /// The next heartbeat-socket message, within [`PATIENCE`].
    pub fn recv_heartbeat(&mut self) -> Received<Heartbeat> {
        recv(&mut self.heartbeats, PATIENCE).expect("a heartbeat message")
    }

    /// Waits for an engine's registration; returns its route (uuid) and what it sent.
    pub fn expect_register(&mut self) -> (Vec<u8>, Registration) {
        let got = self.recv_engine();
        match got.msg {
            FromEngine::Register(r) => (got.route.expect("a routed message"), r),
            other => panic!("expected a registration, got {other:?}"),
        }
    }

    /// Waits for an engine's registration and accepts it as engine `id`, asking for a
    /// heartbeat every `period_ms`.
    pub fn register_engine(&mut self, id: u32, period_ms: u64) -> RegisteredEngine {
        let (route, registration) = self.expect_register();
        self.send_engine(&route, &registered(id, period_ms), &[]);
        RegisteredEngine {
            route,
            registration,
            id: EngineId(id),
        }
    }

    /// Sends `msg` with `payloads` to the engine at `route`.
    pub fn send_engine(&mut self, route: &[u8], msg: &ToEngine, payloads: &[&[u8]]) {
        self.engines
            .send(Some(route), msg, payloads)
            .unwrap_or_else(|e| panic!("cannot send to the engine: {e}"));
    }

    /// Sends a ping, retrying while the engine's heartbeat socket is not yet connected.
    pub fn ping(&mut self, route: &[u8], seq: u64) {
        send_retrying(&mut self.heartbeats, route, &Heartbeat::Ping { seq });
    }

    /// Tells the engine at `route` to shut down and waits for its `Unregister` (results it
    /// sends meanwhile are skipped).
    pub fn shut_down(&mut self, route: &[u8]) {
        self.send_engine(route, &ToEngine::Shutdown, &[]);
        while self.recv_engine().msg != FromEngine::Unregister {}
    }
}

/// The controller's answer to a registration: engine `id`, heartbeat every `period_ms`.
pub fn registered(id: u32, period_ms: u64) -> ToEngine {
    ToEngine::Registered {
        engine_id: EngineId(id),
        heartbeat_period_ms: period_ms,
    }
}

/// Sends `msg` to `route`, retrying for up to [`PATIENCE`] while the peer is unreachable
/// (its connection is still being made).
pub fn send_retrying<M: Serialize + MessageType>(sock: &mut Socket, route: &[u8], msg: &M) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        match sock.send(Some(route), msg, &[]) {
            Ok(()) => return,
            Err(TransportError::Unreachable) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("cannot send: {e}"),
        }
    }
}

/// The next message on `sock` within `within`; `None` when none came.
pub fn recv<M: DeserializeOwned>(sock: &mut Socket, within: Duration) -> Option<Received<M>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(got) = sock.recv::<M>().expect("a working socket") {
            return Some(got);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        poll(&[Waitable::Socket(sock)], left.as_millis().max(1) as i64).expect("poll");
    }
}

/// `v` as msgpack with field names (the wire's encoding).
pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    protocol::encode(v).expect("a value that encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_files_read_back_with_the_key_and_addresses() {
        let (endpoint, _sock) = Endpoint::bind(Role::Client);
        let (info, key) =
            ConnectionInfo::load(&endpoint.file, PROTOCOL_VERSION, &["client"]).unwrap();
        assert_eq!(key, endpoint.key);
        assert_eq!(info.addresses.client.as_deref(), Some(&*endpoint.address));
        assert!(!info.encrypted());

        let other = Key::generate();
        let (endpoint, _sock) = Endpoint::bind_with_file_key(Role::Engine, Some(&other));
        let (_, key) = ConnectionInfo::load(&endpoint.file, PROTOCOL_VERSION, &["engine"]).unwrap();
        assert_eq!(key, other);

        let fake = FakeController::new();
        let (info, _) =
            ConnectionInfo::load(&fake.file, PROTOCOL_VERSION, &["engine", "heartbeat"]).unwrap();
        assert_eq!(
            info.addresses.heartbeat.as_deref(),
            Some(&*fake.heartbeat_addr)
        );
    }
}
