//! Clients: the ids handed out at hello, and the client connections tasks were submitted
//! from, so that results reach the connection that asked for them; and when a client is
//! forgotten.
//!
//! A task refers to its client connection by [`ClientSlot`]; slots are never reused, so a
//! task whose client left refers to nobody and its result is only stored. A connection whose
//! send failed gets nothing more until it speaks again (its results stay in the store).
//! Clients of the controller's previous life keep their ids across a restart, so ids seen in
//! resubmitted tasks and in results are avoided for new clients; ids are never handed out
//! twice.
//!
//! **Leaving.** A client is forgotten (its entry here freed; what it submitted keeps running
//! and its results stay stored, fetchable by any client) when it says goodbye, or once none
//! of its tasks is unfinished and either its connection has closed or it has been silent for
//! [`CLIENT_SILENCE`]. A forgotten client that speaks again is known anew from its next hello
//! or submission (its task ids tell its id).

use super::{reply, Action, Core, Route};
use protocol::{ClientId, ToClient};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

/// How long a client with no unfinished task may stay silent before it is forgotten (the
/// rule for clients that vanish without a goodbye or a closed connection the controller saw).
pub(super) const CLIENT_SILENCE: Duration = Duration::from_secs(600);

/// Which client connection a task came from. Never reused within a controller's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ClientSlot(u64);

/// A map keyed by [`ClientSlot`], hashed cheaply: the count of a client's unfinished tasks
/// changes twice for every task, and slots are the controller's own counter (no peer can
/// choose them to collide).
pub(super) type SlotMap<V> = HashMap<ClientSlot, V, BuildHasherDefault<SlotHasher>>;

/// Fibonacci hashing of the slot number.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct SlotHasher(u64);

impl Hasher for SlotHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// One client connection.
#[derive(Debug)]
struct Client {
    route: Route,
    id: ClientId,
    /// False once a send to it failed, until it speaks again.
    reachable: bool,
    /// Its connection closed (it may reconnect: the same route then speaks again).
    disconnected: bool,
    /// When it last sent anything, on the core's clock.
    last_heard: Duration,
}

/// Client ids and connections.
#[derive(Debug)]
pub(super) struct Clients {
    by_route: HashMap<Route, ClientSlot>,
    by_slot: SlotMap<Client>,
    next_id: u32,
    next_slot: u64,
}

impl Clients {
    /// No clients yet; the first to say hello gets `first_id`.
    pub(super) fn new(first_id: u32) -> Clients {
        Clients {
            by_route: HashMap::new(),
            by_slot: SlotMap::default(),
            next_id: first_id,
            next_slot: 0,
        }
    }

    /// Clients known now.
    pub(super) fn count(&self) -> usize {
        self.by_slot.len()
    }

    /// `(clients, routes)`: the sizes of the tables, for tests that check nothing leaks.
    #[cfg(test)]
    pub(super) fn table_sizes(&self) -> (usize, usize) {
        (self.by_slot.len(), self.by_route.len())
    }

    /// The slot of the connection `route`, made with `id` if new.
    fn entry(
        &mut self,
        route: &[u8],
        id: impl FnOnce(&mut Self) -> ClientId,
        now: Duration,
    ) -> ClientSlot {
        if let Some(&slot) = self.by_route.get(route) {
            return slot;
        }
        let id = id(self);
        let slot = ClientSlot(self.next_slot);
        self.next_slot += 1;
        let client = Client {
            route: route.to_vec(),
            id,
            reachable: true,
            disconnected: false,
            last_heard: now,
        };
        self.by_slot.insert(slot, client);
        self.by_route.insert(route.to_vec(), slot);
        slot
    }

    /// The id of the connection `route`, a new one if it is new.
    fn hello(&mut self, route: &[u8], now: Duration) -> ClientId {
        let new_id = |clients: &mut Self| {
            let id = ClientId(clients.next_id);
            clients.next_id += 1;
            tracing::debug!("client {} said hello", id.0);
            id
        };
        let slot = self.entry(route, new_id, now);
        self.by_slot[&slot].id
    }

    /// The slot of the connection `route` that submits tasks made by client `id`. A
    /// connection that submits without having said hello is a client of this controller's
    /// previous life (it keeps its id across a restart on the same ports), or one forgotten
    /// since: its id is learned from its tasks, so that new clients get other ones.
    pub(super) fn submitter(&mut self, route: &[u8], id: ClientId, now: Duration) -> ClientSlot {
        let learn = |clients: &mut Self| {
            clients.avoid(id);
            id
        };
        self.entry(route, learn, now)
    }

    /// Keeps `id` (in use by a client of the previous life) from being handed out.
    pub(super) fn avoid(&mut self, id: ClientId) {
        self.next_id = self.next_id.max(id.0.saturating_add(1));
    }

    /// Where results for `slot` go, if its client is known and reachable.
    pub(super) fn route(&self, slot: ClientSlot) -> Option<&Route> {
        self.by_slot
            .get(&slot)
            .filter(|c| c.reachable)
            .map(|c| &c.route)
    }

    /// The connection `route` spoke at `now`: reachable and connected again.
    pub(super) fn heard(&mut self, route: &[u8], now: Duration) {
        if let Some(c) = self.client_mut(route) {
            c.reachable = true;
            c.disconnected = false;
            c.last_heard = now;
        }
    }

    /// A send to `route` failed: nothing more goes there until it speaks again. True if it
    /// was reachable until now.
    pub(super) fn unreachable(&mut self, route: &[u8]) -> bool {
        self.client_mut(route)
            .is_some_and(|c| std::mem::replace(&mut c.reachable, false))
    }

    /// The connection of `route` closed: its slot, if it is known.
    fn disconnected(&mut self, route: &[u8]) -> Option<ClientSlot> {
        let slot = *self.by_route.get(route)?;
        if let Some(c) = self.by_slot.get_mut(&slot) {
            c.disconnected = true;
        }
        Some(slot)
    }

    fn client_mut(&mut self, route: &[u8]) -> Option<&mut Client> {
        let slot = self.by_route.get(route)?;
        self.by_slot.get_mut(slot)
    }

    /// Forgets the client at `route`; its id, if it was known.
    fn forget(&mut self, route: &[u8]) -> Option<ClientId> {
        let slot = self.by_route.remove(route)?;
        self.by_slot.remove(&slot).map(|c| c.id)
    }

    /// Forgets the clients that `idle` says may go (given their slot, whether their connection
    /// closed, and how long they have been silent); how many.
    fn forget_where(
        &mut self,
        now: Duration,
        mut idle: impl FnMut(ClientSlot, bool, Duration) -> bool,
    ) -> usize {
        let by_route = &mut self.by_route;
        let before = self.by_slot.len();
        self.by_slot.retain(|&slot, c| {
            let go = idle(slot, c.disconnected, now.saturating_sub(c.last_heard));
            if go {
                by_route.remove(&c.route);
            }
            !go
        });
        before - self.by_slot.len()
    }
}

impl Core {
    /// `FromClient::Hello`: the client's id (the same for the same connection) and the
    /// engines registered now.
    pub(super) fn hello(&mut self, route: &[u8], out: &mut Vec<Action>) {
        let client_id = self.clients.hello(route, self.now);
        let engines = self.engines.alive().map(|e| e.info()).collect();
        let welcome = ToClient::Welcome {
            client_id,
            engines,
            instance: self.config.instance,
        };
        reply(out, route, welcome, Vec::new());
    }

    /// `FromClient::Goodbye`: the client at `route` leaves. Its unfinished tasks run on, and
    /// all its results stay stored for any client to fetch.
    pub(super) fn goodbye(&mut self, route: &[u8]) {
        if let Some(id) = self.clients.forget(route) {
            tracing::debug!("client {} said goodbye", id.0);
        }
    }

    /// The connection of the client at `route` closed: it is forgotten if none of its tasks
    /// is unfinished, else once they are (see [`Core::forget_idle_clients`]).
    pub(super) fn client_disconnected(&mut self, route: &[u8]) {
        let Some(slot) = self.clients.disconnected(route) else {
            return;
        };
        if self.tasks.unfinished_of(slot) == 0 {
            if let Some(id) = self.clients.forget(route) {
                tracing::debug!("client {} disconnected", id.0);
            }
        }
    }

    /// Forgets the clients with no unfinished task whose connection closed or that have been
    /// silent for [`CLIENT_SILENCE`].
    pub(super) fn forget_idle_clients(&mut self, now: Duration) {
        let tasks = &self.tasks;
        let forgotten = self
            .clients
            .forget_where(now, |slot, disconnected, silent| {
                (disconnected || silent >= CLIENT_SILENCE) && tasks.unfinished_of(slot) == 0
            });
        if forgotten > 0 {
            tracing::debug!("forgot {forgotten} client(s) gone or silent");
        }
    }
}
