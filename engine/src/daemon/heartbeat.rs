//! The thread answering pings on its own socket. It never runs user code, so a busy engine
//! still answers, and it notes when the last ping came for the loop's silence rule.

use security::Key;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, TransportError, Waitable};

use super::TICK_MS;
use crate::EngineError;
use protocol::Heartbeat;

/// The running heartbeat thread.
pub(crate) struct HeartbeatThread {
    stop: Arc<AtomicBool>,
    /// Milliseconds since `base` (plus one, so 0 means never) at the last ping.
    last_ping: Arc<AtomicU64>,
    base: Instant,
    handle: JoinHandle<()>,
}

impl HeartbeatThread {
    /// Connects a socket with routing id `uuid` to `address` and starts answering pings.
    pub(crate) fn start(
        ctx: &Context,
        key: &Key,
        (replay_window, encryption): (Duration, Encryption),
        uuid: &str,
        address: &str,
    ) -> Result<HeartbeatThread, EngineError> {
        let on_err = |error| EngineError::Transport {
            address: address.to_owned(),
            error,
        };
        let mut sock =
            Socket::new(ctx, Kind::Dealer, key, Some(uuid.as_bytes())).map_err(on_err)?;
        sock.set_replay_window(replay_window);
        sock.set_encryption(encryption);
        sock.connect(address).map_err(on_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let last_ping = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let handle = {
            let stop = Arc::clone(&stop);
            let last_ping = Arc::clone(&last_ping);
            let uuid = uuid.to_owned();
            let address = address.to_owned();
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || {
                    if let Err(e) = answer_pings(&mut sock, &uuid, &stop, &last_ping, base) {
                        tracing::error!(
                            "heartbeat socket to {address} failed, no longer answering pings: {e}"
                        );
                    }
                })
                .map_err(EngineError::Thread)?
        };
        Ok(HeartbeatThread {
            stop,
            last_ping,
            base,
            handle,
        })
    }

    /// When the last ping came (to the millisecond), if one ever did.
    pub(crate) fn last_ping(&self) -> Option<Instant> {
        match self.last_ping.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

fn answer_pings(
    sock: &mut Socket,
    uuid: &str,
    stop: &AtomicBool,
    last_ping: &AtomicU64,
    base: Instant,
) -> Result<(), TransportError> {
    while !stop.load(Ordering::Relaxed) {
        poll(&[Waitable::Socket(sock)], TICK_MS)?;
        loop {
            let got = match sock.recv::<Heartbeat>()? {
                Some(got) => got,
                None if sock.readable() => continue,
                None => break,
            };
            if let Heartbeat::Ping { seq } = got.msg {
                last_ping.store(base.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                sock.send(
                    None,
                    &Heartbeat::Pong {
                        seq,
                        uuid: uuid.to_owned(),
                    },
                    &[],
                )?;
            }
        }
    }
    Ok(())
}
