//! Clients: the ids handed out at hello, and the client connections tasks were submitted
//! from, so that results reach the connection that asked for them.
//!
//! A task refers to its client connection by [`ClientSlot`]. A connection whose send failed
//! gets nothing more until it speaks again (its results stay in the store). Clients of the
//! controller's previous life keep their ids across a restart, so ids seen in resubmitted
//! tasks and in results are avoided for new clients.

use super::{reply, Action, Core, Route};
use protocol::{ClientId, ToClient};
use std::collections::HashMap;

/// Which client connection a task came from (an index into the connection table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct ClientSlot(u32);

/// Client ids and connections.
#[derive(Debug)]
pub(super) struct Clients {
    /// The id of each connection that said hello (or submitted without, from an earlier life).
    ids: HashMap<Route, ClientId>,
    next_id: u32,
    /// Client connections by slot; `None` once a send to it failed.
    routes: Vec<Option<Route>>,
    slots: HashMap<Route, ClientSlot>,
}

impl Clients {
    /// No clients yet; the first to say hello gets `first_id`.
    pub(super) fn new(first_id: u32) -> Clients {
        Clients {
            ids: HashMap::new(),
            next_id: first_id,
            routes: Vec::new(),
            slots: HashMap::new(),
        }
    }

    /// Clients known.
    pub(super) fn count(&self) -> usize {
        self.ids.len()
    }

    /// The id of the connection `route`, a new one if it is new.
    fn id_for(&mut self, route: &[u8]) -> ClientId {
        if let Some(id) = self.ids.get(route) {
            return *id;
        }
        let id = ClientId(self.next_id);
        self.next_id += 1;
        self.ids.insert(route.to_vec(), id);
        tracing::debug!("client {} said hello", id.0);
        id
    }

    /// A connection that submits without having said hello is a client of this controller's
    /// previous life (it keeps its id across a restart on the same ports): learns its id from
    /// a task id it made, so that new clients get other ones.
    pub(super) fn learn(&mut self, route: &[u8], id: ClientId) {
        if !self.ids.contains_key(route) {
            self.ids.insert(route.to_vec(), id);
            self.avoid(id);
        }
    }

    /// Keeps `id` (in use by a client of the previous life) from being handed out.
    pub(super) fn avoid(&mut self, id: ClientId) {
        self.next_id = self.next_id.max(id.0.saturating_add(1));
    }

    /// The slot of the connection `route`, made if new.
    pub(super) fn slot_for(&mut self, route: &[u8]) -> ClientSlot {
        if let Some(&slot) = self.slots.get(route) {
            return slot;
        }
        let slot = ClientSlot(u32::try_from(self.routes.len()).unwrap_or(u32::MAX));
        self.routes.push(Some(route.to_vec()));
        self.slots.insert(route.to_vec(), slot);
        slot
    }

    /// Where results for `slot` go, if it is reachable.
    pub(super) fn route(&self, slot: ClientSlot) -> Option<&Route> {
        self.routes.get(slot.0 as usize)?.as_ref()
    }

    /// The connection `route` spoke: reachable again if a send to it had failed.
    pub(super) fn revive(&mut self, route: &[u8]) {
        if let Some(&slot) = self.slots.get(route) {
            if let Some(entry @ None) = self.routes.get_mut(slot.0 as usize) {
                *entry = Some(route.to_vec());
            }
        }
    }

    /// A send to `route` failed: nothing more goes there until it speaks again. True if it
    /// was reachable until now.
    pub(super) fn unreachable(&mut self, route: &[u8]) -> bool {
        let Some(&slot) = self.slots.get(route) else {
            return false;
        };
        self.routes
            .get_mut(slot.0 as usize)
            .is_some_and(|entry| entry.take().is_some())
    }
}

impl Core {
    /// `FromClient::Hello`: the client's id (the same for the same connection) and the
    /// engines registered now.
    pub(super) fn hello(&mut self, route: &[u8], out: &mut Vec<Action>) {
        let client_id = self.clients.id_for(route);
        let engines = self.engines.alive().map(|e| e.info()).collect();
        let welcome = ToClient::Welcome {
            client_id,
            engines,
            instance: self.config.instance,
        };
        reply(out, route, welcome, Vec::new());
    }
}
