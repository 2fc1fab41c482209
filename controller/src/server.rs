//! The socket loop around the core: bind, write connection files, then receive, feed the core
//! and perform its actions until told to stop.
//!
//! The engine socket is watched ([`transport::Socket::watch_peers`]): an engine whose
//! connection closes (a killed process, local or remote) is reported to the core within
//! milliseconds, without waiting for missed heartbeats.

use crate::hub::{Action, Core, CoreConfig};
use crate::scheduler::{Hwm, SchedulerKind};
use protocol::{DropCounts, FromClient, FromEngine, Heartbeat, MessageType, PROTOCOL_VERSION};
use security::{Addresses, ConnectionFileError, ConnectionInfo, Key, SIGNATURE_SCHEME};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, TransportError, Waitable};

/// How often the loop looks at the stop flag, at the latest.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// Most messages taken from one socket before looking at the others, so that a flood of
/// submissions cannot starve results or heartbeats.
const MAX_BURST: usize = 1024;

/// How long closing waits for the last messages (shutdown orders, the final Ack) to leave.
const FLUSH_MS: i32 = 1000;

/// Everything [`run`] needs.
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
    #[error("cannot open the controller's {role} socket on {address}: {source}")]
    Bind {
        /// Which socket (`engine`, `heartbeat`, `client`, `notify`).
        role: &'static str,
        /// The address asked for.
        address: String,
        /// The transport's error.
        source: TransportError,
    },
    /// A socket failed outside binding (libzmq trouble, e.g. out of file descriptors);
    /// restarting the controller may help.
    #[error("the controller's {role} socket failed: {source}")]
    Socket {
        /// Which socket.
        role: &'static str,
        /// The transport's error.
        source: TransportError,
    },
    /// The security directory could not be created; fix its parent's permissions.
    #[error("cannot create the security directory {path}: {source}")]
    SecurityDir {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A connection file could not be written (engines and clients could not find us), or
    /// read back for `--reuse`.
    #[error(transparent)]
    ConnectionFile(#[from] ConnectionFileError),
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

/// The four sockets, with the send side of every action.
struct Sockets {
    engine: Socket,
    heartbeat: Socket,
    client: Socket,
    notify: Socket,
}

impl Sockets {
    fn dropped(&self) -> DropCounts {
        let mut total = DropCounts::default();
        for s in [&self.engine, &self.heartbeat, &self.client, &self.notify] {
            total.add(s.drops());
        }
        total
    }

    /// Performs `actions` (and whatever the core answers to send failures); true when the
    /// core asked the controller to stop.
    fn perform(&mut self, core: &mut Core, actions: Vec<Action>, now: Duration) -> bool {
        let mut stop = false;
        let mut queue = VecDeque::from(actions);
        while let Some(action) = queue.pop_front() {
            match action {
                Action::ToEngine {
                    engine,
                    route,
                    msg,
                    payloads,
                } => {
                    let frames: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                    match self.engine.send(Some(&route), &msg, &frames) {
                        Ok(()) => {}
                        Err(TransportError::Unreachable) => {
                            tracing::warn!("engine {engine} is no longer connected");
                            queue.extend(core.on_engine_unreachable(engine, now));
                        }
                        Err(e) => {
                            // Losing the tasks silently would be worse: let them be retried
                            // or fail with a clear error.
                            tracing::warn!(
                                "cannot send a {} message to engine {engine}: {e}; treating it as gone",
                                msg.msg_type()
                            );
                            queue.extend(core.on_engine_lost(engine, "send failed", now));
                        }
                    }
                }
                Action::ToClient {
                    route,
                    msg,
                    payloads,
                } => {
                    let frames: Vec<&[u8]> = payloads.iter().map(|p| p.as_slice()).collect();
                    match self.client.send(Some(&route), &msg, &frames) {
                        Ok(()) => {}
                        Err(TransportError::Unreachable) => core.on_client_unreachable(&route),
                        Err(e) => tracing::warn!(
                            "dropped a {} message to a client: {e} (results stay fetchable)",
                            msg.msg_type()
                        ),
                    }
                }
                Action::Publish(note) => {
                    if let Err(e) = self.notify.send(None, &note, &[]) {
                        tracing::debug!("cannot publish {}: {e}", note.msg_type());
                    }
                }
                Action::Ping { engine, route, seq } => {
                    // An engine whose heartbeat socket is not connected simply misses the
                    // ping; the miss count decides.
                    if let Err(e) = self
                        .heartbeat
                        .send(Some(&route), &Heartbeat::Ping { seq }, &[])
                    {
                        tracing::debug!("cannot ping engine {engine}: {e}");
                    }
                }
                Action::Stop => stop = true,
            }
        }
        stop
    }

    /// Takes what is waiting on the three routers (up to [`MAX_BURST`] each) into the core;
    /// true when the core asked to stop.
    ///
    /// `ready` holds [`poll`]'s flags (heartbeat, engine, client, disconnects): a socket it
    /// did not flag is skipped, since asking an empty socket costs a system call and the next
    /// poll reports whatever arrived meanwhile.
    fn drain(
        &mut self,
        core: &mut Core,
        ready: &[bool],
        now: Duration,
    ) -> Result<bool, ControllerError> {
        let mut stop = false;
        let fail = |role| move |source| ControllerError::Socket { role, source };
        let flagged = |i: usize| ready.get(i).copied().unwrap_or(true);
        for _ in 0..if flagged(0) { MAX_BURST } else { 0 } {
            match self
                .heartbeat
                .recv::<Heartbeat>()
                .map_err(fail("heartbeat"))?
            {
                Some(m) => {
                    let route = m.route.unwrap_or_default();
                    let actions = core.on_heartbeat(&route, m.msg, now);
                    stop |= self.perform(core, actions, now);
                }
                None => break,
            }
        }
        for _ in 0..if flagged(1) { MAX_BURST } else { 0 } {
            match self.engine.recv::<FromEngine>().map_err(fail("engine"))? {
                Some(m) => {
                    let route = m.route.unwrap_or_default();
                    let actions = core.on_engine(&route, m.msg, m.payloads, now);
                    stop |= self.perform(core, actions, now);
                }
                None => break,
            }
        }
        // After the engine socket is drained, so that what an engine sent before it died counts.
        // Receiving from the engine socket can queue disconnects too (see the transport's
        // watch module), so look whenever either was flagged.
        let gone = if flagged(1) || flagged(3) {
            self.engine.disconnected()
        } else {
            Vec::new()
        };
        for gone in gone {
            tracing::debug!(
                "connection of fd {} closed ({} engine connection(s) watched)",
                gone.fd,
                self.engine.watched_peers()
            );
            let actions = core.on_engine_disconnected(&gone.route, now);
            stop |= self.perform(core, actions, now);
        }
        for _ in 0..if flagged(2) { MAX_BURST } else { 0 } {
            match self.client.recv::<FromClient>().map_err(fail("client"))? {
                Some(m) => {
                    let route = m.route.unwrap_or_default();
                    let actions = core.on_client(&route, m.msg, m.payloads, now);
                    stop |= self.perform(core, actions, now);
                }
                None => break,
            }
        }
        Ok(stop)
    }

    /// Lets queued messages leave when the sockets close.
    fn flush_on_close(&self) {
        for s in [&self.engine, &self.heartbeat, &self.client, &self.notify] {
            let _ = s.set_linger(FLUSH_MS);
        }
    }
}

/// Runs the controller until `stop` is set (checked at least every 100 ms) or a client asks
/// for `Shutdown { controller: true }` (engines are told to shut down first).
///
/// Binds the engine, heartbeat and client ROUTERs and the notification PUB on
/// `tcp://{ip}:{port}`, then writes `engine.json` (engine and heartbeat addresses) and
/// `client.json` (client and notification addresses) into `security_dir`.
pub fn run(config: ControllerConfig, stop: Arc<AtomicBool>) -> Result<(), ControllerError> {
    // Declared first so that it is dropped last, after the sockets have flushed.
    let ctx = Context::new();
    let make = |role: &'static str, kind| {
        let mut sock = Socket::new(&ctx, kind, &config.key, None)
            .map_err(|source| ControllerError::Socket { role, source })?;
        sock.set_replay_window(config.replay_window);
        if config.encrypt {
            sock.set_encryption(Encryption::Relay);
        }
        Ok::<_, ControllerError>(sock)
    };
    let bind = |sock: &Socket, role: &'static str, port: u16| {
        let address = format!("tcp://{}:{port}", config.ip);
        sock.bind(&address).map_err(|source| ControllerError::Bind {
            role,
            address,
            source,
        })
    };
    let mut socks = Sockets {
        engine: make("engine", Kind::Router)?,
        heartbeat: make("heartbeat", Kind::Router)?,
        client: make("client", Kind::Router)?,
        notify: make("notify", Kind::Pub)?,
    };
    socks
        .engine
        .watch_peers(&ctx)
        .map_err(|source| ControllerError::Socket {
            role: "engine monitor",
            source,
        })?;
    let addresses = Addresses {
        engine: Some(bind(&socks.engine, "engine", config.engine_port)?),
        heartbeat: Some(bind(&socks.heartbeat, "heartbeat", config.heartbeat_port)?),
        client: Some(bind(&socks.client, "client", config.client_port)?),
        notify: Some(bind(&socks.notify, "notify", config.notify_port)?),
    };
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let pid = std::process::id();
    write_connection_files(&config, &addresses, &host, pid)?;
    if config.restarted {
        tracing::info!("controller restarted on the ports and key of the previous one; engines and clients reconnect by themselves");
    }
    tracing::info!(
        "controller pid {pid} listening: engines {}, heartbeats {}, clients {}, notifications {} (scheduler {}, hwm {})",
        addresses.engine.as_deref().unwrap_or(""),
        addresses.heartbeat.as_deref().unwrap_or(""),
        addresses.client.as_deref().unwrap_or(""),
        addresses.notify.as_deref().unwrap_or(""),
        config.scheduler,
        config.hwm,
    );

    let start = Instant::now();
    let mut core = Core::new(
        CoreConfig {
            scheduler: config.scheduler,
            hwm: config.hwm,
            heartbeat_period: config.heartbeat_period,
            heartbeat_misses: config.heartbeat_misses,
            pid,
            host,
            addresses,
            seed: rand::random(),
            instance: rand::random(),
            // A restarted controller's old clients keep their ids: start elsewhere.
            first_client_id: if config.restarted {
                rand::random_range(1_000..(1 << 23))
            } else {
                1
            },
        },
        Duration::ZERO,
    );
    let mut dropped_total = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            tracing::info!("controller stopping (signal)");
            return Ok(());
        }
        let wait = core
            .next_tick()
            .saturating_sub(start.elapsed())
            .min(STOP_CHECK);
        let ready = poll(
            &[
                Waitable::Socket(&socks.heartbeat),
                Waitable::Socket(&socks.engine),
                Waitable::Socket(&socks.client),
                Waitable::Disconnects(&socks.engine),
            ],
            // Round up so that a sub-millisecond wait does not spin.
            wait.as_micros().div_ceil(1000) as i64,
        )
        .map_err(|source| ControllerError::Socket {
            role: "poll",
            source,
        })?;

        let dropped = socks.dropped();
        if dropped.total() > dropped_total {
            tracing::warn!(
                "dropped {} bad message(s) so far ({dropped:?}): wrong key, replayed, malformed, oversized or another protocol version",
                dropped.total()
            );
            dropped_total = dropped.total();
        }
        core.set_dropped(dropped);

        let now = start.elapsed();
        let mut stopping = socks.drain(&mut core, &ready, now)?;
        let now = start.elapsed();
        if now >= core.next_tick() {
            let actions = core.on_tick(now);
            stopping |= socks.perform(&mut core, actions, now);
        }
        if stopping {
            tracing::info!("controller stopping (shutdown requested by a client)");
            socks.flush_on_close();
            return Ok(());
        }
    }
}

fn write_connection_files(
    config: &ControllerConfig,
    addresses: &Addresses,
    host: &str,
    pid: u32,
) -> Result<(), ControllerError> {
    let dir = &config.security_dir;
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| ControllerError::SecurityDir {
                path: dir.clone(),
                source,
            })?;
    }
    let info = |addresses: Addresses| ConnectionInfo {
        protocol_version: PROTOCOL_VERSION,
        signature_scheme: SIGNATURE_SCHEME.to_owned(),
        key: config.key.to_hex(),
        addresses,
        location: host.to_owned(),
        controller_pid: pid,
        replay_window_s: config.replay_window.as_secs(),
        encryption: if config.encrypt {
            security::ENCRYPTION_SCHEME.to_owned()
        } else {
            "none".to_owned()
        },
    };
    info(Addresses {
        engine: addresses.engine.clone(),
        heartbeat: addresses.heartbeat.clone(),
        ..Default::default()
    })
    .save(&dir.join("engine.json"))?;
    // client.json last: its appearance tells `cluster start` that the controller is ready.
    info(Addresses {
        client: addresses.client.clone(),
        notify: addresses.notify.clone(),
        ..Default::default()
    })
    .save(&dir.join("client.json"))?;
    Ok(())
}
