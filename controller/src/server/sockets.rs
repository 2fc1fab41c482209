//! The controller's four sockets: opening and binding them, receiving what waits on the
//! three routers into the core, and performing the core's actions (with send failures fed
//! back to it).

use super::{ControllerConfig, ControllerError};
use crate::hub::{Action, Core};
use protocol::{DropCounts, FromClient, FromEngine, Heartbeat, MessageType};
use security::Addresses;
use std::collections::VecDeque;
use std::time::Duration;
use store::{Answer, Query, QueryService, StoreError, Writer};
use transport::{poll, Context, Encryption, Kind, Socket, TransportError, Waitable};

/// Most messages taken from one socket before looking at the others, so that a flood of
/// submissions cannot starve results or heartbeats.
const MAX_BURST: usize = 1024;

/// How long closing waits for the last messages (shutdown orders, the final Ack) to leave.
const FLUSH_MS: i32 = 1000;

/// The four sockets, with the send side of every action.
pub(super) struct Sockets {
    engine: Socket,
    heartbeat: Socket,
    client: Socket,
    notify: Socket,
    store: Option<StoreIo>,
}

/// The task store's two ends: where records go, and the thread that answers lookups.
struct StoreIo {
    writer: Writer,
    queries: QueryService,
}

impl Sockets {
    /// Makes the four sockets with `config`'s key, replay window and encryption, watches the
    /// engine and client sockets' connections, and binds each on `config.ip`; the addresses
    /// bound.
    pub(super) fn open(
        ctx: &Context,
        config: &ControllerConfig,
    ) -> Result<(Sockets, Addresses), ControllerError> {
        let make = |role: &'static str, kind| {
            let mut sock = Socket::new(ctx, kind, &config.key, None)
                .map_err(|error| ControllerError::Socket { role, error })?;
            sock.set_replay_window(config.replay_window);
            if config.encrypt {
                sock.set_encryption(Encryption::Relay);
            }
            Ok::<_, ControllerError>(sock)
        };
        let bind = |sock: &Socket, role: &'static str, port: u16| {
            let address = format!("tcp://{}:{port}", config.ip);
            sock.bind(&address).map_err(|error| ControllerError::Bind {
                role,
                address,
                error,
            })
        };
        let mut socks = Sockets {
            engine: make("engine", Kind::Router)?,
            heartbeat: make("heartbeat", Kind::Router)?,
            client: make("client", Kind::Router)?,
            notify: make("notify", Kind::Pub)?,
            store: None,
        };
        for (sock, role) in [
            (&mut socks.engine, "engine monitor"),
            (&mut socks.client, "client monitor"),
        ] {
            sock.watch_peers(ctx)
                .map_err(|error| ControllerError::Socket { role, error })?;
        }
        let addresses = Addresses {
            engine: Some(bind(&socks.engine, "engine", config.engine_port)?),
            heartbeat: Some(bind(&socks.heartbeat, "heartbeat", config.heartbeat_port)?),
            client: Some(bind(&socks.client, "client", config.client_port)?),
            notify: Some(bind(&socks.notify, "notify", config.notify_port)?),
        };
        Ok((socks, addresses))
    }

    /// Records and lookups go to this store from now on.
    pub(super) fn attach_store(&mut self, writer: Writer, queries: QueryService) {
        self.store = Some(StoreIo { writer, queries });
    }

    /// `ok`, or `degraded (why)`.
    pub(super) fn store_health(&self) -> String {
        match self.store.as_ref().map(|s| s.writer.health()) {
            Some(store::Health::Degraded(why)) => format!("degraded ({why})"),
            Some(store::Health::Ok) => "ok".to_owned(),
            None => "none".to_owned(),
        }
    }

    /// Commits what the store was sent and stops its threads.
    pub(super) fn close_store(&mut self) {
        if let Some(io) = self.store.take() {
            drop(io.queries);
            if let Err(e) = io.writer.close() {
                tracing::warn!("task store: the last records could not be written: {e}");
            }
        }
    }

    /// Feeds the core the task store's answers ready now; true when the core asked to stop.
    pub(super) fn answers(&mut self, core: &mut Core, now: Duration) -> bool {
        let mut stop = false;
        while let Some((tag, answer)) = self.store.as_ref().and_then(|s| s.queries.try_answer()) {
            let actions = core.on_lookup_answer(tag, answer, now);
            stop |= self.perform(core, actions, now);
        }
        stop
    }

    /// Waits up to `wait` for messages (or disconnects): the flags [`Sockets::drain`] takes.
    pub(super) fn poll(&self, wait: Duration) -> Result<Vec<bool>, ControllerError> {
        poll(
            &[
                Waitable::Socket(&self.heartbeat),
                Waitable::Socket(&self.engine),
                Waitable::Socket(&self.client),
                Waitable::Disconnects(&self.engine),
                Waitable::Disconnects(&self.client),
            ],
            // Round up so that a sub-millisecond wait does not spin.
            wait.as_micros().div_ceil(1000) as i64,
        )
        .map_err(|error| ControllerError::Socket {
            role: "poll",
            error,
        })
    }

    /// The messages dropped so far (bad signature, replayed, malformed...), all sockets.
    pub(super) fn dropped(&self) -> DropCounts {
        let mut total = DropCounts::default();
        for s in [&self.engine, &self.heartbeat, &self.client, &self.notify] {
            total.add(s.drops());
        }
        total
    }

    /// Performs `actions` (and whatever the core answers to send failures); true when the
    /// core asked the controller to stop.
    pub(super) fn perform(&mut self, core: &mut Core, actions: Vec<Action>, now: Duration) -> bool {
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
                Action::Record(records) => {
                    if let Some(io) = &self.store {
                        io.writer.send(records);
                    }
                }
                Action::Objects(records) => {
                    if let Some(io) = &self.store {
                        io.writer.send_objects(records);
                    }
                }
                Action::Lookup { tag, query } => {
                    let asked = match &self.store {
                        Some(io) => io.queries.ask(tag, query.clone()),
                        None => Err(StoreError::Closed),
                    };
                    if let Err(e) = asked {
                        tracing::warn!("task store: cannot ask it ({e}); answering from memory");
                        queue.extend(core.on_lookup_answer(tag, failed_answer(&query, e), now));
                    }
                }
            }
        }
        stop
    }

    /// Takes what is waiting on the three routers (up to [`MAX_BURST`] each) into the core;
    /// true when the core asked to stop.
    ///
    /// `ready` holds [`poll`]'s flags (heartbeat, engine, client, engine disconnects, client
    /// disconnects): a socket it
    /// did not flag is skipped, since asking an empty socket costs a system call and the next
    /// poll reports whatever arrived meanwhile.
    pub(super) fn drain(
        &mut self,
        core: &mut Core,
        ready: &[bool],
        now: Duration,
    ) -> Result<bool, ControllerError> {
        let mut stop = false;
        let fail = |role| move |error| ControllerError::Socket { role, error };
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
        // Likewise after the client socket: a client that closed is forgotten once its
        // tasks are finished.
        let gone = if flagged(2) || flagged(4) {
            self.client.disconnected()
        } else {
            Vec::new()
        };
        for gone in gone {
            let actions = core.on_client_disconnected(&gone.route, now);
            stop |= self.perform(core, actions, now);
        }
        Ok(stop)
    }

    /// Lets queued messages leave when the sockets close.
    pub(super) fn flush_on_close(&self) {
        for s in [&self.engine, &self.heartbeat, &self.client, &self.notify] {
            let _ = s.set_linger(FLUSH_MS);
        }
    }
}

/// The answer to `query` when the store could not be asked.
fn failed_answer(query: &Query, e: StoreError) -> Answer {
    match query {
        Query::Lookup(_) => Answer::Lookup(Err(e)),
        Query::History(_) => Answer::History(Err(e)),
        Query::Result(_) => Answer::Result(Err(e)),
        Query::Stats => Answer::Stats(Err(e)),
        Query::Recover => Answer::Recover(Err(e)),
    }
}
