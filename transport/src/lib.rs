//! The only crate that touches ZeroMQ.
//!
//! A [`Socket`] wraps one libzmq socket with the cluster key: [`Socket::send`] writes
//! `[routing id] "" MAC header content payload…` with an HMAC-SHA256 over everything after the
//! MAC, and [`Socket::recv`] checks size, frame layout, signature, protocol version and replay
//! before decoding the content. A message that fails any check is dropped and counted in
//! [`Socket::drops`]; nothing a peer sends can make `recv` panic or block.
//!
//! Routers are created with `ROUTER_MANDATORY` (a send to a vanished peer is an error, not a
//! silent drop) and `ROUTER_HANDOVER` (an engine that reconnects with the same routing id takes
//! over its old slot). [`poll`] waits on several sockets and plain file descriptors at once, so
//! a loop can be woken by another thread through a pipe.
//!
//! A router can also watch its peers' connections ([`Socket::watch_peers`]): a peer whose TCP
//! connection closes (a killed process, local or remote) is reported by routing id within
//! milliseconds through [`Socket::disconnected`], from libzmq's socket monitor (see
//! [`DisconnectEvent`] and the `watch` module for how descriptors map to routing ids).

use protocol::{decode, encode, DropCounts, Header, MessageType, PROTOCOL_VERSION};
use security::{Key, Refusal, ReplayGuard, Sealer, Signer, MAC_LEN};
use serde::{de::DeserializeOwned, Serialize};
use std::os::unix::io::RawFd;
use std::time::{SystemTime, UNIX_EPOCH};

mod watch;

pub use watch::DisconnectEvent;
use watch::{LinkWatch, PeerWatch};

/// Transport failures. Dropped bad messages are not errors (they are counted instead).
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Binding failed, usually because the port is in use or the address is not local.
    #[error("cannot listen on {address}: {error} (is the port in use, or the address not one of this machine's?)")]
    Bind {
        /// The address.
        address: String,
        /// libzmq's error (in the message, so not also a `source()`: a printed chain says it
        /// once).
        error: zmq::Error,
    },
    /// The address cannot be connected to (malformed URL).
    #[error("cannot connect to {address}: {error}")]
    Connect {
        /// The address.
        address: String,
        /// libzmq's error (in the message, not also a `source()`).
        error: zmq::Error,
    },
    /// A router was asked to send to a peer it does not know (the peer disconnected).
    #[error("peer is not connected")]
    Unreachable,
    /// The send queue is full or the send timed out; retrying later can help.
    #[error("send queue is full")]
    Full,
    /// The message could not be encoded (a bug, not retryable).
    #[error(transparent)]
    Encode(#[from] protocol::CodecError),
    /// Any other libzmq error (in the message, not also a `source()`).
    #[error("zmq: {0}")]
    Zmq(zmq::Error),
}

impl From<zmq::Error> for TransportError {
    fn from(e: zmq::Error) -> TransportError {
        TransportError::Zmq(e)
    }
}

/// Which kind of socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Bound by the controller; many peers, addressed by routing id.
    Router,
    /// One peer (or several, round-robin); used by engines and clients.
    Dealer,
    /// Publishes notifications.
    Pub,
    /// Receives notifications.
    Sub,
}

/// A shared libzmq context (one per process is plenty).
#[derive(Clone)]
pub struct Context(zmq::Context);

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Context")
    }
}

impl Default for Context {
    fn default() -> Self {
        Context::new()
    }
}

impl Context {
    /// A new context.
    pub fn new() -> Context {
        Context(zmq::Context::new())
    }
}

/// Most bad messages [`Socket::recv`] drops in one call before returning `Ok(None)`.
pub const MAX_DROPS_PER_RECV: usize = 64;

/// Sender sessions a socket remembers for replay protection.
const REPLAY_SESSIONS: usize = 65_536;

enum RecvOne<M> {
    Got(Received<M>),
    Dropped,
    Empty,
}

/// A message that passed every check.
#[derive(Debug)]
pub struct Received<M> {
    /// Routing id of the sender (routers only).
    pub route: Option<Vec<u8>>,
    /// The header.
    pub header: Header,
    /// The decoded content.
    pub msg: M,
    /// Payload frames.
    pub payloads: Vec<Vec<u8>>,
}

/// What a socket encrypts (see [`Socket::set_encryption`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encryption {
    /// Nothing: bodies travel in the clear (a cluster whose connection files say `"none"`).
    Off,
    /// The content frame, hop by hop; payload frames pass as they came, sealed by the
    /// endpoints (the controller, which routes payloads it never reads).
    Relay,
    /// The content frame and every payload frame (clients and engines).
    Endpoint,
}

impl Encryption {
    /// `Endpoint` when the cluster encrypts, else `Off`.
    pub fn endpoint(encrypted: bool) -> Encryption {
        if encrypted {
            Encryption::Endpoint
        } else {
            Encryption::Off
        }
    }
}

/// A signed, checked ZeroMQ socket.
pub struct Socket {
    sock: zmq::Socket,
    kind: Kind,
    signer: Signer,
    sealer: Sealer,
    encryption: Encryption,
    session: u64,
    seq: u64,
    guard: ReplayGuard,
    drops: DropCounts,
    max_bytes: usize,
    watch: Option<PeerWatch>,
    link: Option<LinkWatch>,
}

impl std::fmt::Debug for Socket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socket")
            .field("kind", &self.kind)
            .field("session", &self.session)
            .finish()
    }
}

/// Current wall clock in microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

impl Socket {
    /// Makes a socket of `kind` signing with `key`. `routing_id` names a dealer to its router
    /// (engines use their uuid so that a reconnect keeps their slot).
    pub fn new(
        ctx: &Context,
        kind: Kind,
        key: &Key,
        routing_id: Option<&[u8]>,
    ) -> Result<Socket, TransportError> {
        let zkind = match kind {
            Kind::Router => zmq::ROUTER,
            Kind::Dealer => zmq::DEALER,
            Kind::Pub => zmq::PUB,
            Kind::Sub => zmq::SUB,
        };
        let sock = ctx.0.socket(zkind)?;
        sock.set_linger(0)?;
        // Explicit, generous high-water marks: messages are batches, so a million queued
        // messages is far beyond any healthy backlog; past it a send reports Full.
        sock.set_sndhwm(1_000_000)?;
        sock.set_rcvhwm(1_000_000)?;
        sock.set_maxmsgsize(protocol::DEFAULT_MAX_MESSAGE_BYTES as i64)?;
        if let Some(id) = routing_id {
            sock.set_identity(id)?;
        }
        match kind {
            Kind::Router => {
                sock.set_router_mandatory(true)?;
                sock.set_router_handover(true)?;
            }
            Kind::Sub => sock.set_subscribe(b"")?,
            Kind::Dealer => {
                // Reconnect fast after a controller restart, backing off to 1 s.
                sock.set_reconnect_ivl(50)?;
                sock.set_reconnect_ivl_max(1000)?;
            }
            Kind::Pub => {}
        }
        sock.set_tcp_keepalive(1)?;
        Ok(Socket {
            sock,
            kind,
            signer: Signer::new(key),
            sealer: Sealer::new(key),
            encryption: Encryption::Off,
            session: rand::random::<u64>(),
            seq: 0,
            guard: ReplayGuard::new(
                REPLAY_SESSIONS,
                std::time::Duration::from_secs(security::DEFAULT_REPLAY_WINDOW_S),
            ),
            drops: DropCounts::default(),
            max_bytes: protocol::DEFAULT_MAX_MESSAGE_BYTES,
            watch: None,
            link: None,
        })
    }

    /// Starts watching this router's peers: from now on, a peer that sent a verified message
    /// and whose connection then closes is reported by [`Socket::disconnected`]. Poll
    /// [`Waitable::Disconnects`] to be woken by it.
    pub fn watch_peers(&mut self, ctx: &Context) -> Result<(), TransportError> {
        if self.kind != Kind::Router {
            return Err(TransportError::Zmq(zmq::Error::ENOTSUP));
        }
        if self.watch.is_none() {
            self.watch = Some(PeerWatch::start(&ctx.0, &self.sock)?);
        }
        Ok(())
    }

    /// Starts watching this dealer's own connection, for [`Socket::reconnected`]. Call it
    /// after `connect`, on a socket that lives as long as its process and whose events are
    /// read often: watches on client sockets, made and dropped many times in one process, left
    /// other clients of that process without answers now and then (a libzmq monitor hazard
    /// that was avoided rather than understood).
    pub fn watch_link(&mut self, ctx: &Context) -> Result<(), TransportError> {
        if self.kind != Kind::Dealer {
            return Err(TransportError::Zmq(zmq::Error::ENOTSUP));
        }
        if self.link.is_none() {
            self.link = Some(LinkWatch::start(&ctx.0, &self.sock)?);
        }
        Ok(())
    }

    /// True when this dealer's connection went down and came back since the last call (the
    /// peer restarted, or the network healed); always false unless [`Socket::watch_link`]
    /// was called. Never blocks.
    pub fn reconnected(&mut self) -> bool {
        self.link.as_mut().is_some_and(LinkWatch::came_back)
    }

    /// Peers whose connection closed since the last call (empty unless
    /// [`Socket::watch_peers`] was called). Never blocks. Call it after draining
    /// [`Socket::recv`], so that messages a peer sent before closing are handled first.
    pub fn disconnected(&mut self) -> Vec<DisconnectEvent> {
        self.watch.as_mut().map(PeerWatch::take).unwrap_or_default()
    }

    /// Stops reporting `route`'s disconnect (it said goodbye, or is known gone already).
    pub fn forget_peer(&mut self, route: &[u8]) {
        if let Some(w) = self.watch.as_mut() {
            w.forget(route);
        }
    }

    /// Peers the watch currently knows by connection (0 when not watching).
    pub fn watched_peers(&self) -> usize {
        self.watch.as_ref().map_or(0, PeerWatch::known)
    }

    /// Binds to `address` (`tcp://IP:PORT`, port 0 or `*` for a free one) and returns the
    /// address actually bound, with the port filled in.
    pub fn bind(&self, address: &str) -> Result<String, TransportError> {
        let address = match address.strip_suffix(":0") {
            Some(stem) => format!("{stem}:*"),
            None => address.to_owned(),
        };
        self.sock
            .bind(&address)
            .map_err(|error| TransportError::Bind {
                address: address.clone(),
                error,
            })?;
        let bound = self
            .sock
            .get_last_endpoint()?
            .map_err(|_| TransportError::Bind {
                address: address.clone(),
                error: zmq::Error::EINVAL,
            })?;
        Ok(bound)
    }

    /// Connects to `address`; libzmq retries in the background until the peer is up.
    pub fn connect(&self, address: &str) -> Result<(), TransportError> {
        self.sock
            .connect(address)
            .map_err(|error| TransportError::Connect {
                address: address.to_owned(),
                error,
            })
    }

    /// Blocking sends give up after this long (dealers only; routers never block).
    pub fn set_send_timeout(&self, ms: i32) -> Result<(), TransportError> {
        Ok(self.sock.set_sndtimeo(ms)?)
    }

    /// How long closing the socket waits to deliver messages still queued, in milliseconds
    /// (sockets start at 0: closing drops them). A peer that says goodbye sets this before its
    /// last send so the goodbye is not lost.
    pub fn set_linger(&self, ms: i32) -> Result<(), TransportError> {
        Ok(self.sock.set_linger(ms)?)
    }

    /// Refuses messages stamped further than `window` from this machine's clock (zero: no
    /// limit), besides replays by sequence number. Peers of a cluster share the window through
    /// the connection files (`ConnectionInfo::replay_window_s`).
    pub fn set_replay_window(&mut self, window: std::time::Duration) {
        self.guard = ReplayGuard::new(REPLAY_SESSIONS, window);
    }

    /// Encrypts message bodies from now on (and expects them encrypted), as the cluster's
    /// connection files say (`ConnectionInfo::encrypted`). Headers stay readable; the MAC
    /// covers the encrypted frames.
    pub fn set_encryption(&mut self, encryption: Encryption) {
        self.encryption = encryption;
    }

    /// Messages dropped on receipt so far.
    pub fn drops(&self) -> &DropCounts {
        &self.drops
    }

    /// Sends `msg` with `payloads`, to `route` on a router.
    ///
    /// Routers never block: a vanished peer gives [`TransportError::Unreachable`], a full queue
    /// [`TransportError::Full`]. Dealers block up to their send timeout.
    pub fn send<M: Serialize + MessageType>(
        &mut self,
        route: Option<&[u8]>,
        msg: &M,
        payloads: &[&[u8]],
    ) -> Result<(), TransportError> {
        let content = encode(msg)?;
        self.send_encoded(route, msg.msg_type(), &content, payloads)
    }

    /// Sends an already encoded content frame (to reuse one encoding for many peers).
    pub fn send_encoded(
        &mut self,
        route: Option<&[u8]>,
        msg_type: &str,
        content: &[u8],
        payloads: &[&[u8]],
    ) -> Result<(), TransportError> {
        self.seq += 1;
        let header = Header {
            version: PROTOCOL_VERSION,
            session: self.session,
            seq: self.seq,
            msg_type: msg_type.to_owned(),
            time_us: now_us(),
        };
        let header = encode(&header)?;
        let sealed_content;
        let content = if self.encryption == Encryption::Off {
            content
        } else {
            sealed_content = self.sealer.seal(content);
            sealed_content.as_slice()
        };
        let sealed_payloads: Vec<Vec<u8>>;
        let sealed_refs: Vec<&[u8]>;
        let payloads = if self.encryption == Encryption::Endpoint {
            sealed_payloads = payloads.iter().map(|p| self.sealer.seal(p)).collect();
            sealed_refs = sealed_payloads.iter().map(Vec::as_slice).collect();
            sealed_refs.as_slice()
        } else {
            payloads
        };
        let mac = self.signer.sign(
            [header.as_slice(), content]
                .into_iter()
                .chain(payloads.iter().copied()),
        );
        let flags = if self.kind == Kind::Router {
            zmq::DONTWAIT
        } else {
            0
        };
        let more = flags | zmq::SNDMORE;
        let result = (|| {
            if let Some(route) = route {
                self.sock.send(route, more)?;
            }
            self.sock.send(&b""[..], more)?;
            self.sock.send(&mac[..], more)?;
            self.sock.send(header.as_slice(), more)?;
            if payloads.is_empty() {
                self.sock.send(content, flags)?;
            } else {
                self.sock.send(content, more)?;
                let (last, rest) = payloads.split_last().expect("not empty");
                for p in rest {
                    self.sock.send(*p, more)?;
                }
                self.sock.send(*last, flags)?;
            }
            Ok(())
        })();
        result.map_err(|e| match e {
            zmq::Error::EHOSTUNREACH => TransportError::Unreachable,
            zmq::Error::EAGAIN => TransportError::Full,
            e => TransportError::Zmq(e),
        })
    }

    /// Receives one message without blocking. `Ok(None)` means nothing was waiting, or that
    /// [`MAX_DROPS_PER_RECV`] messages in a row failed a check and were dropped (and
    /// counted), so a flood of bad messages cannot hold the caller; [`poll`] still reports the
    /// socket ready while messages wait, so a loop can stop at the first `Ok(None)` without
    /// asking [`Socket::readable`] (which costs a system call).
    pub fn recv<M: DeserializeOwned>(&mut self) -> Result<Option<Received<M>>, TransportError> {
        for _ in 0..MAX_DROPS_PER_RECV {
            match self.recv_one()? {
                RecvOne::Got(m) => return Ok(Some(m)),
                RecvOne::Empty => return Ok(None),
                RecvOne::Dropped => {}
            }
        }
        Ok(None)
    }

    fn recv_one<M: DeserializeOwned>(&mut self) -> Result<RecvOne<M>, TransportError> {
        let got = if self.watch.is_some() {
            self.recv_watched()?
        } else {
            match self.sock.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => Some(self.check(frames)),
                Err(zmq::Error::EAGAIN) => None,
                Err(e) => return Err(e.into()),
            }
        };
        Ok(match got {
            None => RecvOne::Empty,
            Some(None) => RecvOne::Dropped,
            Some(Some(m)) => RecvOne::Got(m),
        })
    }

    /// One multipart message off a watched socket, noting which connection it came over:
    /// `None` when nothing was waiting, `Some(None)` when it was dropped.
    #[allow(clippy::option_option)]
    fn recv_watched<M: DeserializeOwned>(
        &mut self,
    ) -> Result<Option<Option<Received<M>>>, TransportError> {
        let mut first = zmq::Message::new();
        match self.sock.recv(&mut first, zmq::DONTWAIT) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        // The routing-id frame lacks the metadata when libzmq prefetched it for a poll, so
        // read the descriptor from the next frame, which comes straight off the connection.
        let mut fd = first.gets("__fd").and_then(|s| s.parse::<RawFd>().ok());
        let mut frames = vec![first.to_vec()];
        let mut more = first.get_more();
        drop(first);
        let mut frame = zmq::Message::new();
        while more {
            self.sock.recv(&mut frame, 0)?;
            if fd.is_none() {
                fd = frame.gets("__fd").and_then(|s| s.parse::<RawFd>().ok());
            }
            frames.push(frame.to_vec());
            more = frame.get_more();
        }
        let received = self.check(frames);
        if let (Some(got), Some(fd), Some(watch)) = (&received, fd, self.watch.as_mut()) {
            if let Some(route) = &got.route {
                watch.learn(fd, route);
            }
        }
        Ok(Some(received))
    }

    /// True when a message is waiting.
    pub fn readable(&self) -> bool {
        self.sock
            .get_events()
            .map(|e| e.contains(zmq::POLLIN))
            .unwrap_or(false)
    }

    fn check<M: DeserializeOwned>(&mut self, mut frames: Vec<Vec<u8>>) -> Option<Received<M>> {
        let total: usize = frames.iter().map(Vec::len).sum();
        if total > self.max_bytes || frames.len() > protocol::MAX_FRAMES {
            self.drops.oversized += 1;
            return None;
        }
        let route = if self.kind == Kind::Router {
            if frames.is_empty() {
                self.drops.malformed += 1;
                return None;
            }
            Some(frames.remove(0))
        } else {
            None
        };
        // "" MAC header content payload…
        if frames.len() < 4 || !frames[0].is_empty() || frames[1].len() != MAC_LEN {
            self.drops.malformed += 1;
            return None;
        }
        let signed = frames[2..].iter().map(Vec::as_slice);
        if !self.signer.verify(signed, &frames[1]) {
            self.drops.bad_signature += 1;
            return None;
        }
        let header: Header = match decode(&frames[2]) {
            Ok(h) => h,
            Err(_) => {
                self.drops.malformed += 1;
                return None;
            }
        };
        if header.version != PROTOCOL_VERSION {
            self.drops.wrong_version += 1;
            return None;
        }
        match self
            .guard
            .check(header.session, header.seq, header.time_us, now_us())
        {
            Ok(()) => {}
            Err(Refusal::Replayed) => {
                self.drops.replayed += 1;
                return None;
            }
            Err(Refusal::Stale { behind_us }) => {
                self.drops.stale += 1;
                // Usually clocks that disagree, not an attack: say so, without flooding the log.
                if self.drops.stale.is_power_of_two() {
                    tracing::warn!(
                        "dropped a {} message stamped {:.1} s {} this machine's clock ({} such so far): a replay, or the sender's clock is off; synchronise the clocks (NTP) or raise replay_window_s in cluster.toml",
                        header.msg_type,
                        behind_us.unsigned_abs() as f64 / 1e6,
                        if behind_us >= 0 { "behind" } else { "ahead of" },
                        self.drops.stale
                    );
                }
                return None;
            }
        }
        if self.encryption != Encryption::Off {
            match self.sealer.open(&frames[3]) {
                Some(plain) => frames[3] = plain,
                None => return self.undecryptable(&header),
            }
        }
        let msg: M = match decode(&frames[3]) {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!("dropping malformed {} message: {e}", header.msg_type);
                self.drops.malformed += 1;
                return None;
            }
        };
        let mut payloads = frames.split_off(4);
        if self.encryption == Encryption::Endpoint {
            for p in &mut payloads {
                match self.sealer.open(p) {
                    Some(plain) => *p = plain,
                    None => return self.undecryptable(&header),
                }
            }
        }
        Some(Received {
            route,
            header,
            msg,
            payloads,
        })
    }

    /// Counts a correctly signed message whose body does not decrypt: the peer encrypts
    /// differently (or not at all), which is a configuration mismatch, not an attack.
    fn undecryptable<T>(&mut self, header: &Header) -> Option<T> {
        self.drops.malformed += 1;
        if self.drops.malformed.is_power_of_two() {
            tracing::warn!(
                "dropped a {} message whose body does not decrypt: does the peer use the same connection file (its \"encryption\" setting)?",
                header.msg_type
            );
        }
        None
    }

    /// Sends raw, unsigned frames (for tests of the checks).
    #[doc(hidden)]
    pub fn send_raw_frames(&self, frames: &[&[u8]]) -> Result<(), TransportError> {
        self.sock.send_multipart(frames.iter().copied(), 0)?;
        Ok(())
    }
}

/// What [`poll`] waits on: a socket, or a file descriptor becoming readable.
#[derive(Debug, Clone, Copy)]
pub enum Waitable<'a> {
    /// A socket, ready when a message is waiting.
    Socket(&'a Socket),
    /// A file descriptor (e.g. the read end of a wake-up pipe).
    Fd(RawFd),
    /// A watched router's disconnect events ([`Socket::watch_peers`]); never ready when the
    /// socket is not watched.
    Disconnects(&'a Socket),
}

/// Waits until one of `items` is readable or `timeout_ms` passes (-1 = forever); returns one
/// flag per item (a socket's flag means a message is waiting).
pub fn poll(items: &[Waitable<'_>], timeout_ms: i64) -> Result<Vec<bool>, TransportError> {
    let mut zitems: Vec<zmq::PollItem<'_>> = items
        .iter()
        .map(|w| match w {
            Waitable::Socket(s) => s.sock.as_poll_item(zmq::POLLIN),
            Waitable::Fd(fd) => zmq::PollItem::from_fd(*fd, zmq::POLLIN),
            Waitable::Disconnects(s) => match &s.watch {
                Some(w) => w.poll_item(),
                // poll(2) skips negative descriptors.
                None => zmq::PollItem::from_fd(-1, zmq::POLLIN),
            },
        })
        .collect();
    match zmq::poll(&mut zitems, timeout_ms) {
        Ok(_) => {}
        Err(zmq::Error::EINTR) => return Ok(vec![false; items.len()]),
        Err(e) => return Err(e.into()),
    }
    Ok(zitems.iter().map(|z| z.is_readable()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{FromClient, ToClient};

    fn pair(key_a: &Key, key_b: &Key) -> (Socket, Socket) {
        let ctx = Context::new();
        let router = Socket::new(&ctx, Kind::Router, key_a, None).unwrap();
        let addr = router.bind("tcp://127.0.0.1:0").unwrap();
        let dealer = Socket::new(&ctx, Kind::Dealer, key_b, None).unwrap();
        dealer.connect(&addr).unwrap();
        (router, dealer)
    }

    fn wait(sock: &Socket) {
        let _ = poll(&[Waitable::Socket(sock)], 2000).unwrap();
    }

    #[test]
    fn signed_messages_pass_and_come_back() {
        let key = Key::generate();
        let (mut router, mut dealer) = pair(&key, &key);
        dealer
            .send(None, &FromClient::Status, &[b"p1", b""])
            .unwrap();
        wait(&router);
        let got: Received<FromClient> = router.recv().unwrap().expect("a message");
        assert_eq!(got.msg, FromClient::Status);
        assert_eq!(got.payloads, vec![b"p1".to_vec(), vec![]]);
        assert_eq!(got.header.msg_type, "status");
        router
            .send(got.route.as_deref(), &ToClient::Ack, &[])
            .unwrap();
        wait(&dealer);
        let back: Received<ToClient> = dealer.recv().unwrap().unwrap();
        assert_eq!(back.msg, ToClient::Ack);
    }

    #[test]
    fn wrong_key_unsigned_and_malformed_are_dropped_and_counted() {
        let (mut router, mut dealer) = pair(&Key::generate(), &Key::generate());
        dealer.send(None, &FromClient::Hello, &[]).unwrap();
        dealer.send_raw_frames(&[b"", b"short"]).unwrap();
        dealer
            .send_raw_frames(&[b"", &[0u8; 32], b"h", b"c"])
            .unwrap();
        dealer.send_raw_frames(&[b"x"]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while router.drops().total() < 4 && std::time::Instant::now() < deadline {
            wait(&router);
            assert!(router.recv::<FromClient>().unwrap().is_none());
        }
        assert_eq!(router.drops().bad_signature, 2);
        assert_eq!(router.drops().malformed, 2);
    }

    /// Frames of a correctly signed `Hello` stamped at `time_us`, as a captured message would be.
    fn signed_hello(key: &Key, session: u64, time_us: u64) -> Vec<Vec<u8>> {
        let header = encode(&Header {
            version: PROTOCOL_VERSION,
            session,
            seq: 1,
            msg_type: "hello".into(),
            time_us,
        })
        .unwrap();
        let content = encode(&FromClient::Hello).unwrap();
        let mac = Signer::new(key).sign([header.as_slice(), content.as_slice()]);
        vec![Vec::new(), mac.to_vec(), header, content]
    }

    #[test]
    fn messages_stamped_outside_the_replay_window_are_dropped_as_stale() {
        let key = Key::generate();
        let (mut router, dealer) = pair(&key, &key);
        router.set_replay_window(std::time::Duration::from_secs(60));
        let send = |frames: Vec<Vec<u8>>| {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            dealer.send_raw_frames(&refs).unwrap();
        };
        let now = now_us();
        // Captured ten minutes ago (a receiver that restarted has no sequence to compare).
        send(signed_hello(&key, 7, now - 600_000_000));
        // From a clock ten minutes fast.
        send(signed_hello(&key, 8, now + 600_000_000));
        // Within the window: accepted.
        send(signed_hello(&key, 9, now - 30_000_000));
        let mut accepted = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while (accepted < 1 || router.drops().stale < 2) && std::time::Instant::now() < deadline {
            wait(&router);
            while let Some(got) = router.recv::<FromClient>().unwrap() {
                assert_eq!(got.header.session, 9);
                accepted += 1;
            }
        }
        assert_eq!((accepted, router.drops().stale), (1, 2));
        assert_eq!(router.drops().total(), 2);
        // The window off: only sequence numbers count.
        router.set_replay_window(std::time::Duration::ZERO);
        send(signed_hello(&key, 7, now - 600_000_000));
        wait(&router);
        let got = router.recv::<FromClient>().unwrap().expect("accepted");
        assert_eq!(got.header.session, 7);
    }

    #[test]
    fn encrypted_bodies_cross_a_relay_with_payloads_sealed_end_to_end() {
        let key = Key::generate();
        let ctx = Context::new();
        let mut relay = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        relay.set_encryption(Encryption::Relay);
        let addr = relay.bind("tcp://127.0.0.1:0").unwrap();
        let mut a = Socket::new(&ctx, Kind::Dealer, &key, Some(b"a")).unwrap();
        let mut b = Socket::new(&ctx, Kind::Dealer, &key, Some(b"b")).unwrap();
        for s in [&mut a, &mut b] {
            s.set_encryption(Encryption::Endpoint);
            s.connect(&addr).unwrap();
        }
        b.send(None, &FromClient::Hello, &[]).unwrap();
        a.send(None, &FromClient::Status, &[b"secret argument"])
            .unwrap();
        // Wait to hear from both: the relay can only route to `b` once `b` is connected
        // (ROUTER_MANDATORY), and on a loaded machine its hello may come second.
        let mut from_a = None;
        let mut heard_b = false;
        while from_a.is_none() || !heard_b {
            wait(&relay);
            while let Some(got) = relay.recv::<FromClient>().unwrap() {
                if got.route.as_deref() == Some(b"a".as_slice()) {
                    from_a = Some(got);
                } else if got.route.as_deref() == Some(b"b".as_slice()) {
                    heard_b = true;
                }
            }
        }
        let got = from_a.unwrap();
        // The relay reads the content but not the payload.
        assert_eq!(got.msg, FromClient::Status);
        let sealed = &got.payloads[0];
        assert_eq!(
            sealed.len(),
            b"secret argument".len() + security::SEAL_OVERHEAD
        );
        assert!(!sealed.windows(6).any(|w| w == b"secret"));
        // Forwarded untouched, it opens at the other end.
        relay
            .send(Some(b"b"), &ToClient::Ack, &[sealed.as_slice()])
            .unwrap();
        wait(&b);
        let back: Received<ToClient> = b.recv().unwrap().unwrap();
        assert_eq!(back.msg, ToClient::Ack);
        assert_eq!(back.payloads, [b"secret argument".to_vec()]);
        // A peer that does not encrypt cannot read it: dropped and counted.
        let mut plain = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let addr = plain.bind("tcp://127.0.0.1:0").unwrap();
        let mut c = Socket::new(&ctx, Kind::Dealer, &key, None).unwrap();
        c.set_encryption(Encryption::Endpoint);
        c.connect(&addr).unwrap();
        c.send(None, &FromClient::Hello, &[]).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while plain.drops().malformed == 0 && std::time::Instant::now() < deadline {
            wait(&plain);
            assert!(plain.recv::<FromClient>().unwrap().is_none());
        }
        assert_eq!(plain.drops().malformed, 1);
    }

    #[test]
    fn sending_to_a_vanished_peer_is_an_error() {
        let key = Key::generate();
        let (mut router, _dealer) = pair(&key, &key);
        let err = router
            .send(Some(b"nobody"), &ToClient::Ack, &[])
            .unwrap_err();
        assert!(matches!(err, TransportError::Unreachable));
    }

    #[test]
    fn a_watched_router_reports_which_peer_disconnected() {
        let key = Key::generate();
        let ctx = Context::new();
        let mut router = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let addr = router.bind("tcp://127.0.0.1:0").unwrap();
        router.watch_peers(&ctx).unwrap();
        let mut peers = Vec::new();
        for name in ["e1", "e2", "e3"] {
            let mut d = Socket::new(&ctx, Kind::Dealer, &key, Some(name.as_bytes())).unwrap();
            d.connect(&addr).unwrap();
            d.send(None, &FromClient::Hello, &[]).unwrap();
            peers.push(d);
        }
        // An unsigned message teaches nothing.
        let stranger = Socket::new(&ctx, Kind::Dealer, &key, Some(b"x")).unwrap();
        stranger.connect(&addr).unwrap();
        stranger.send_raw_frames(&[b"", b"junk"]).unwrap();
        let mut seen = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while seen < 3 && std::time::Instant::now() < deadline {
            wait(&router);
            while let Some(m) = router.recv::<FromClient>().unwrap() {
                assert!(m.route.is_some());
                seen += 1;
            }
        }
        assert_eq!(seen, 3);
        assert!(router.disconnected().is_empty());
        assert_eq!(router.watched_peers(), 3);

        drop(stranger);
        let t0 = std::time::Instant::now();
        drop(peers.remove(1));
        let mut gone = Vec::new();
        while gone.is_empty() && t0.elapsed() < std::time::Duration::from_secs(5) {
            let _ = poll(&[Waitable::Disconnects(&router)], 100).unwrap();
            gone = router.disconnected();
        }
        assert_eq!(
            gone.iter().map(|g| g.route.as_slice()).collect::<Vec<_>>(),
            [b"e2"]
        );
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t0.elapsed()
        );
        // A peer that said goodbye is not reported again.
        router.forget_peer(b"e1");
        drop(peers.remove(0));
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(router.disconnected().is_empty());
        assert_eq!(router.watched_peers(), 1);
    }

    #[test]
    fn a_reconnecting_peer_is_not_reported_for_its_old_connection() {
        let key = Key::generate();
        let ctx = Context::new();
        let mut router = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let addr = router.bind("tcp://127.0.0.1:0").unwrap();
        router.watch_peers(&ctx).unwrap();
        let recv_one = |router: &mut Socket| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while std::time::Instant::now() < deadline {
                wait(router);
                if let Some(m) = router.recv::<FromClient>().unwrap() {
                    return m;
                }
            }
            panic!("no message");
        };
        let mut old = Socket::new(&ctx, Kind::Dealer, &key, Some(b"e")).unwrap();
        old.connect(&addr).unwrap();
        old.send(None, &FromClient::Hello, &[]).unwrap();
        recv_one(&mut router);
        // The same routing id over a new connection (handover), then the old one closes.
        let mut new = Socket::new(&ctx, Kind::Dealer, &key, Some(b"e")).unwrap();
        new.connect(&addr).unwrap();
        new.send(None, &FromClient::Status, &[]).unwrap();
        assert_eq!(recv_one(&mut router).msg, FromClient::Status);
        drop(old);
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert!(router.disconnected().is_empty());
        drop(new);
        let t0 = std::time::Instant::now();
        let mut gone = Vec::new();
        while gone.is_empty() && t0.elapsed() < std::time::Duration::from_secs(5) {
            let _ = poll(&[Waitable::Disconnects(&router)], 100).unwrap();
            gone = router.disconnected();
        }
        assert_eq!(gone.len(), 1);
        assert_eq!(gone[0].route, b"e");
    }

    #[test]
    fn binding_a_used_port_names_the_address() {
        let key = Key::generate();
        let ctx = Context::new();
        let a = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let addr = a.bind("tcp://127.0.0.1:0").unwrap();
        let b = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let err = b.bind(&addr).unwrap_err().to_string();
        assert!(err.contains(&addr) && err.contains("in use"), "{err}");
    }

    /// Regression: the bind error said libzmq's error in its message and again as its
    /// `source()`, so a printed chain said "Address already in use" twice.
    #[test]
    fn a_bind_error_says_its_cause_once_in_a_chain() {
        let key = Key::generate();
        let ctx = Context::new();
        let a = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let addr = a.bind("tcp://127.0.0.1:0").unwrap();
        let b = Socket::new(&ctx, Kind::Router, &key, None).unwrap();
        let err = b.bind(&addr).unwrap_err();
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(
            err.to_string().matches("Address already in use").count(),
            1,
            "{err}"
        );
    }
}
