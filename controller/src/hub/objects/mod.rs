//! Shared objects: named queues, namespaces, locks, semaphores and events that live in the
//! controller, for clients (and tasks on engines, through a client of their own).
//!
//! Objects are made on first use with the kind the operation implies; an operation of
//! another kind on the name is refused. Requests are answered by id
//! ([`protocol::ToClient::Object`]): a blocking one (a `get` on an empty queue, a `put` on a
//! full one, an `acquire`, an event's `wait`) is answered when it is served or when its
//! deadline passes, so nothing in the hub ever waits. The rules, in `state.rs`:
//!
//! * **Queues** are FIFO; a put goes straight to the first waiting getter if there is one;
//!   with a maxsize, puts wait (their items held and counted) while the queue is full.
//!   Getters, putters and acquirers are served first come first served.
//! * **Leases.** A lock (or one semaphore permit) is held under a lease its client renews;
//!   the hub frees it when the lease runs out, when its client says goodbye, or when its
//!   connection closes, and grants it to the next waiter. A renewal of a lease the hub does
//!   not know takes it back if its object is free (a restarted controller, a connection that
//!   came back before anybody else wanted it).
//! * **Waits** end with `Timeout` at their deadline (on the hub's clock: [`Core::on_tick`]
//!   runs them), or silently when their client leaves.
//! * **Limits**: bytes per object and in total ([`ObjectLimits`]) and a number of objects:
//!   past them a request is refused with `Limit`, never dropped.
//! * **Persistence**: with a task store the changes to queues, namespaces and events become
//!   [`Action::Objects`] records (locks and semaphores are not stored: their leases belong to
//!   connections), and [`Core::restore_objects`] loads them back at start.

mod state;
#[cfg(test)]
mod tests;

pub use state::ObjectLimits;
pub(super) use state::Objects;

use super::{Action, Core};
use protocol::{ObjectRequest, ToClient};
use std::time::Duration;

impl Core {
    /// `FromClient::Object`: one request about a shared object.
    pub(super) fn object_request(
        &mut self,
        route: &[u8],
        request: ObjectRequest,
        payloads: Vec<Vec<u8>>,
        out: &mut Vec<Action>,
    ) {
        let mut answers = Vec::new();
        self.objects.request(
            route,
            request.id,
            &request.name,
            request.op,
            payloads,
            self.now,
            &mut answers,
        );
        self.object_answers(answers, out);
    }

    /// The client at `route` left (goodbye, or its connection closed): its waits end, its
    /// leases are freed.
    pub(super) fn objects_client_gone(&mut self, route: &[u8], out: &mut Vec<Action>) {
        let mut answers = Vec::new();
        self.objects.client_gone(route, self.now, &mut answers);
        self.object_answers(answers, out);
    }

    /// Ends the object waits and leases due at `now`.
    pub(super) fn expire_objects(&mut self, now: Duration, out: &mut Vec<Action>) {
        if self.objects.next_due().is_some_and(|t| t <= now) {
            let mut answers = Vec::new();
            self.objects.expire(now, &mut answers);
            self.object_answers(answers, out);
        }
    }

    /// Loads the objects a previous controller stored (before any client speaks); how many.
    pub fn restore_objects(&mut self, stored: Vec<store::StoredObject>) -> usize {
        self.objects.restore(stored)
    }

    /// Every object now, as `cluster status` lists them.
    pub fn objects(&self) -> Vec<protocol::ObjectInfo> {
        self.objects.list()
    }

    fn object_answers(&mut self, answers: Vec<state::Answer>, out: &mut Vec<Action>) {
        for a in answers {
            out.push(Action::ToClient {
                route: a.route,
                msg: ToClient::Object {
                    id: a.id,
                    reply: a.reply,
                },
                payloads: a.payloads,
            });
        }
        let records = self.objects.take_records();
        if !records.is_empty() {
            out.push(Action::Objects(records));
        }
    }
}
