//! Which peer of a router closed its connection, within milliseconds.
//!
//! libzmq's socket monitor reports `DISCONNECTED` with the file descriptor of the TCP
//! connection, not the peer's routing id, and a ROUTER does not say which routing id a
//! connection carries. Every received frame, though, carries its connection's descriptor as
//! metadata (the `__fd` property behind the deprecated `ZMQ_SRCFD`). So the watch learns
//! `fd → routing id` from each peer's verified messages and turns a disconnect of a known
//! descriptor into that peer's routing id.
//!
//! Descriptors are reused: once a peer's connection closes, the next accepted connection may
//! get the same number. libzmq emits `DISCONNECTED` *before* it closes the descriptor, so the
//! event of the old connection is always queued on the monitor before any message of a new
//! connection on the same number can be received. Hence the rule: before a received message
//! changes the map, every event already queued is applied to the old map. The one case this
//! cannot tell apart — a new peer that dies between its first message and our next look at
//! the monitor — costs a missed disconnect, which the heartbeat still catches.

use std::collections::HashMap;
use std::os::unix::io::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

/// A peer whose connection closed, as reported by [`crate::Socket::disconnected`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisconnectEvent {
    /// The peer's routing id.
    pub route: Vec<u8>,
    /// The connection's file descriptor in this process (for logs).
    pub fd: RawFd,
}

/// The monitor of one router and what it has learned.
pub(crate) struct PeerWatch {
    events: zmq::Socket,
    by_fd: HashMap<RawFd, Vec<u8>>,
    fd_of: HashMap<Vec<u8>, RawFd>,
    gone: Vec<DisconnectEvent>,
}

static NEXT_WATCH: AtomicU64 = AtomicU64::new(0);

/// Starts libzmq's monitor of `sock` for `events`, and returns the PAIR socket (in `ctx`)
/// that receives them.
fn monitor(
    ctx: &zmq::Context,
    sock: &zmq::Socket,
    name: &str,
    events: i32,
) -> zmq::Result<zmq::Socket> {
    let endpoint = format!(
        "inproc://cluster-{name}-{}-{}",
        std::process::id(),
        NEXT_WATCH.fetch_add(1, Ordering::Relaxed)
    );
    sock.monitor(&endpoint, events)?;
    let pair = ctx.socket(zmq::PAIR)?;
    pair.set_linger(0)?;
    pair.connect(&endpoint)?;
    Ok(pair)
}

/// A monitor event's kind and value, from its first frame (u16 event, u32 value, native
/// endian; the second frame, the endpoint, is not needed).
fn parse_event(frames: &[Vec<u8>]) -> Option<(u16, u32)> {
    let first = frames.first().filter(|f| f.len() >= 6)?;
    Some((
        u16::from_ne_bytes([first[0], first[1]]),
        u32::from_ne_bytes([first[2], first[3], first[4], first[5]]),
    ))
}

impl PeerWatch {
    /// Starts monitoring `sock`'s disconnects through an inproc PAIR in `ctx`.
    pub(crate) fn start(ctx: &zmq::Context, sock: &zmq::Socket) -> zmq::Result<PeerWatch> {
        let events = monitor(
            ctx,
            sock,
            "peer-watch",
            zmq::SocketEvent::DISCONNECTED as i32,
        )?;
        Ok(PeerWatch {
            events,
            by_fd: HashMap::new(),
            fd_of: HashMap::new(),
            gone: Vec::new(),
        })
    }

    /// The monitor's socket, for polling.
    pub(crate) fn poll_item(&self) -> zmq::PollItem<'_> {
        self.events.as_poll_item(zmq::POLLIN)
    }

    /// A verified message from `route` came over connection `fd`.
    pub(crate) fn learn(&mut self, fd: RawFd, route: &[u8]) {
        if self.fd_of.get(route) == Some(&fd) {
            return;
        }
        // Events queued so far belong to the map as it was (see the module docs).
        self.drain();
        if let Some(old) = self.fd_of.insert(route.to_vec(), fd) {
            if self.by_fd.get(&old).is_some_and(|r| r == route) {
                self.by_fd.remove(&old);
            }
        }
        if let Some(previous) = self.by_fd.insert(fd, route.to_vec()) {
            if previous != route && self.fd_of.get(&previous) == Some(&fd) {
                // Its connection must have closed for the number to be reused; its event
                // was lost or filtered, so report it now.
                self.fd_of.remove(&previous);
                self.gone.push(DisconnectEvent {
                    route: previous,
                    fd,
                });
            }
        }
    }

    /// Applies every queued monitor event.
    fn drain(&mut self) {
        loop {
            let frames = match self.events.recv_multipart(zmq::DONTWAIT) {
                Ok(frames) => frames,
                Err(zmq::Error::EAGAIN) => return,
                Err(e) => {
                    tracing::warn!("peer monitor failed ({e}); disconnects are no longer noticed at once, heartbeats still are");
                    return;
                }
            };
            let Some((event, value)) = parse_event(&frames) else {
                continue;
            };
            if event != zmq::SocketEvent::DISCONNECTED.to_raw() {
                continue;
            }
            let fd = value as RawFd;
            if let Some(route) = self.by_fd.remove(&fd) {
                if self.fd_of.get(&route) == Some(&fd) {
                    self.fd_of.remove(&route);
                }
                self.gone.push(DisconnectEvent { route, fd });
            }
        }
    }

    /// Peers whose connection closed since the last call.
    pub(crate) fn take(&mut self) -> Vec<DisconnectEvent> {
        self.drain();
        std::mem::take(&mut self.gone)
    }

    /// Forgets `route` (it said goodbye, or was declared gone for another reason), so that
    /// its later disconnect is not reported.
    pub(crate) fn forget(&mut self, route: &[u8]) {
        if let Some(fd) = self.fd_of.remove(route) {
            if self.by_fd.get(&fd).is_some_and(|r| r == route) {
                self.by_fd.remove(&fd);
            }
        }
    }

    /// Peers currently known by descriptor.
    pub(crate) fn known(&self) -> usize {
        self.fd_of.len()
    }
}

/// A dealer's own connection going down and coming back: the peer restarted (a controller
/// started again with `--reuse`) or the network healed. libzmq reconnects by itself and says
/// nothing; its monitor reports both events at once.
pub(crate) struct LinkWatch {
    events: zmq::Socket,
    down: bool,
}

impl LinkWatch {
    /// Starts monitoring `sock`'s connects and disconnects through an inproc PAIR in `ctx`.
    pub(crate) fn start(ctx: &zmq::Context, sock: &zmq::Socket) -> zmq::Result<LinkWatch> {
        let wanted = zmq::SocketEvent::CONNECTED as i32 | zmq::SocketEvent::DISCONNECTED as i32;
        let events = monitor(ctx, sock, "link-watch", wanted)?;
        Ok(LinkWatch {
            events,
            down: false,
        })
    }

    /// True when the connection came back after going down, since the last call.
    pub(crate) fn came_back(&mut self) -> bool {
        let mut back = false;
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            let Some((event, _)) = parse_event(&frames) else {
                continue;
            };
            if event == zmq::SocketEvent::DISCONNECTED.to_raw() {
                self.down = true;
            } else if event == zmq::SocketEvent::CONNECTED.to_raw() && self.down {
                self.down = false;
                back = true;
            }
        }
        back
    }
}
