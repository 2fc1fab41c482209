//! A fake controller built from transport sockets on 127.0.0.1, for in-process engine tests.

#![allow(dead_code)]

use protocol::{FromEngine, Heartbeat, MessageType, ToEngine, PROTOCOL_VERSION};
use security::{Addresses, ConnectionInfo, Key, SIGNATURE_SCHEME};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use transport::{poll, Context, Kind, Received, Socket, TransportError, Waitable};

pub struct FakeController {
    pub engines: Socket,
    pub heartbeats: Socket,
    pub engine_addr: String,
    pub file: PathBuf,
    _dir: tempfile::TempDir,
}

impl FakeController {
    pub fn new() -> FakeController {
        let key = Key::generate();
        let ctx = Context::new();
        let engines = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let engine_addr = engines.bind("tcp://127.0.0.1:0").unwrap();
        let heartbeats = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let hb_addr = heartbeats.bind("tcp://127.0.0.1:0").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("engine.json");
        ConnectionInfo {
            protocol_version: PROTOCOL_VERSION,
            signature_scheme: SIGNATURE_SCHEME.into(),
            key: key.to_hex(),
            addresses: Addresses {
                engine: Some(engine_addr.clone()),
                heartbeat: Some(hb_addr),
                ..Default::default()
            },
            location: "localhost".into(),
            controller_pid: std::process::id(),
            replay_window_s: 300,
            encryption: "none".into(),
        }
        .save(&file)
        .unwrap();
        FakeController {
            engines,
            heartbeats,
            engine_addr,
            file,
            _dir: dir,
        }
    }

    /// The next engine-socket message, within 10 s.
    pub fn recv_engine(&mut self) -> Received<FromEngine> {
        recv(&mut self.engines, Duration::from_secs(10)).expect("a message from the engine")
    }

    /// The next heartbeat-socket message, within 10 s.
    pub fn recv_heartbeat(&mut self) -> Received<Heartbeat> {
        recv(&mut self.heartbeats, Duration::from_secs(10)).expect("a heartbeat message")
    }

    /// Waits for the engine's registration and returns its route (uuid).
    pub fn expect_register(&mut self) -> (Vec<u8>, protocol::Registration) {
        let got = self.recv_engine();
        match got.msg {
            FromEngine::Register(r) => (got.route.unwrap(), r),
            other => panic!("expected register, got {other:?}"),
        }
    }

    pub fn send_engine(&mut self, route: &[u8], msg: &ToEngine, payloads: &[&[u8]]) {
        self.engines.send(Some(route), msg, payloads).unwrap();
    }

    /// Sends a ping, retrying while the engine's heartbeat socket is not yet connected.
    pub fn ping(&mut self, route: &[u8], seq: u64) {
        send_retrying(&mut self.heartbeats, route, &Heartbeat::Ping { seq });
    }
}

pub fn send_retrying<M: Serialize + MessageType>(sock: &mut Socket, route: &[u8], msg: &M) {
    let deadline = Instant::now() + Duration::from_secs(10);
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

pub fn recv<M: DeserializeOwned>(sock: &mut Socket, within: Duration) -> Option<Received<M>> {
    let deadline = Instant::now() + within;
    loop {
        if let Some(got) = sock.recv::<M>().unwrap() {
            return Some(got);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return None;
        }
        poll(&[Waitable::Socket(sock)], left.as_millis().max(1) as i64).unwrap();
    }
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    protocol::encode(v).unwrap()
}
