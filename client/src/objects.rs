//! Shared objects that live in the controller: queues ([`RawQueue`], [`Queue`]), namespaces
//! ([`Namespace`]), locks ([`Lock`]), semaphores ([`Semaphore`]) and events ([`Event`]).
//!
//! ```no_run
//! use cluster_client::Client;
//! use std::time::Duration;
//!
//! let client = Client::connect_env()?;
//! let jobs = client.queue::<u64>("jobs");                 // created on first use
//! for n in 0..1000 { jobs.put(&n)?; }
//! let n = jobs.get(Some(Duration::from_secs(5)))?;        // Err(ObjectError::Timeout) if none came
//! client.namespace("default").set_value("best", &n)?;
//! {
//!     let _held = client.lock("gpu").acquire(None)?;      // released when dropped
//!     // ... only one holder in the whole cluster here ...
//! }
//! client.event("ready").set()?;
//! # Ok::<(), cluster_client::ObjectError>(())
//! ```
//!
//! Every handle is cheap (a name and the client's shared state), `Send + Sync + Clone`, and
//! may be used from many threads at once. A blocking call (`get`, `put` on a full queue,
//! `acquire`, `wait`) is one request whose answer the controller sends when it is served or
//! when its timeout ends: the waiting happens in the controller, and this client's other
//! traffic (results of maps, other threads' requests) goes on meanwhile. Blocked getters,
//! putters and acquirers are served first come first served.
//!
//! **Items** are bytes with a format tag ([`Item`]): the typed [`Queue<T>`] and
//! [`Namespace::set_value`] use msgpack, Python uses pickle; reading a pickle item with a
//! typed call is an [`ObjectError::Format`] naming the format (read it with [`RawQueue`]).
//!
//! **Leases.** A held lock or semaphore permit is a lease that this client's I/O thread renews
//! every third of its length ([`Lock::with_lease`], default [`DEFAULT_LEASE`]). The controller
//! frees it when the client says goodbye (it is dropped), when its connection closes (the
//! process died: within milliseconds), or when the lease runs out (a partition, a hung host).
//! After a controller restart the renewals take the leases back when nobody else took them.
//!
//! **Across a controller restart** a request still waiting is sent again to the new
//! controller (as unfinished tasks are), so a `get` that waits forever keeps waiting. A
//! request answered by the old controller whose answer was lost in its crash may so be done
//! twice (a `put`) or its item lost (a `get`).

use crate::cell::Lost;
use crate::client::Client;
use crate::error::Error;
use crate::shared::Shared;
use protocol::{
    FromClient, ItemFormat, LeaseId, NewValue, ObjectErrorKind, ObjectInfo, ObjectKind, ObjectOp,
    ObjectReply, ObjectRequest, Renewal, Wait,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lease of a lock or semaphore permit unless [`Lock::with_lease`] says otherwise: the
/// longest a holder that vanished without its connection closing (a network partition, a
/// hung machine) keeps others waiting.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Shortest lease the controller grants (shorter ones are raised to it).
pub const MIN_LEASE: Duration = Duration::from_millis(100);

/// An item of a queue or a namespace value: bytes and how they are encoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// How `data` is encoded.
    pub format: ItemFormat,
    /// The bytes, never looked at by the controller.
    pub data: Vec<u8>,
}

impl Item {
    /// An item of `format`.
    pub fn new(format: ItemFormat, data: Vec<u8>) -> Item {
        Item { format, data }
    }

    /// Raw bytes ([`ItemFormat::Bytes`]).
    pub fn bytes(data: Vec<u8>) -> Item {
        Item::new(ItemFormat::Bytes, data)
    }

    /// `value` encoded as msgpack with field names (what the typed API and the CLI write).
    pub fn msgpack<T: Serialize + ?Sized>(value: &T) -> Result<Item, ObjectError> {
        let data = rmp_serde::to_vec_named(value).map_err(|e| ObjectError::Encode {
            message: e.to_string(),
        })?;
        Ok(Item::new(ItemFormat::Msgpack, data))
    }

    /// Decodes a msgpack item as `T`; `what` names it in errors (`queue "jobs"`). An item of
    /// another format is an [`ObjectError::Format`].
    pub fn decode<T: DeserializeOwned>(&self, what: &str) -> Result<T, ObjectError> {
        if self.format != ItemFormat::Msgpack {
            return Err(ObjectError::Format {
                what: what.to_owned(),
                found: self.format,
            });
        }
        rmp_serde::from_slice(&self.data).map_err(|e| ObjectError::Decode {
            what: what.to_owned(),
            message: e.to_string(),
        })
    }

    /// The digest compare-and-set compares: SHA-256 of the format's name, a zero byte and
    /// the data.
    pub fn digest(&self) -> Vec<u8> {
        let mut h = Sha256::new();
        h.update(self.format.name().as_bytes());
        h.update([0]);
        h.update(&self.data);
        h.finalize().to_vec()
    }
}

/// Why an object operation failed. [`ObjectError::is_retryable`] says whether trying again
/// can help.
#[derive(Debug, thiserror::Error)]
pub enum ObjectError {
    /// A `get_nowait` found the queue empty. Retry later.
    #[error("queue {name:?} is empty")]
    Empty {
        /// The queue.
        name: String,
    },
    /// A `put_nowait` found the queue full (it has a maxsize). Retry later.
    #[error("queue {name:?} is full")]
    Full {
        /// The queue.
        name: String,
    },
    /// The wait ran out before it was served. Retrying (waiting again) can help.
    #[error("timed out: {message}")]
    Timeout {
        /// What was waited for, naming the object.
        message: String,
    },
    /// The name belongs to an object of another kind (a `get` on a lock). Not retryable: use
    /// another name.
    #[error("{message}")]
    WrongKind {
        /// The controller's words, naming both kinds.
        message: String,
    },
    /// The name or key is empty, too long or has control characters. Not retryable.
    #[error("{message}")]
    BadName {
        /// What is wrong with it.
        message: String,
    },
    /// The object, or all objects together, would pass their byte limit (`object_max_bytes`,
    /// `objects_max_bytes` in `cluster.toml`). Retrying helps once items are taken out.
    #[error("{message}")]
    Limit {
        /// Which limit, and the sizes.
        message: String,
    },
    /// The lease is not held any more (it ran out, or the controller freed it while this
    /// client was unreachable): someone else may hold the lock now. Not retryable as such:
    /// acquire again.
    #[error("{message}")]
    LeaseLost {
        /// Which lease of which object.
        message: String,
    },
    /// The request is not valid (a semaphore of 0 permits, another permit count than the
    /// semaphore was made with). Not retryable.
    #[error("{message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
    /// The object was removed while the request waited.
    #[error("{message}")]
    Removed {
        /// Which object.
        message: String,
    },
    /// An item is not in the format the typed call reads (a pickle from Python read by
    /// `Queue<T>`): read it with [`RawQueue`] or [`Namespace::get`]. Not retryable.
    #[error("{what} holds a {found} item, which the typed Rust API cannot read (it reads msgpack); read it as raw bytes (RawQueue, Namespace::get)")]
    Format {
        /// The object (`queue "jobs"`).
        what: String,
        /// The item's format.
        found: ItemFormat,
    },
    /// A msgpack item does not decode as the type asked for.
    #[error("cannot decode the item of {what}: {message}")]
    Decode {
        /// The object.
        what: String,
        /// The decoder's message.
        message: String,
    },
    /// A value could not be encoded as msgpack.
    #[error("cannot encode the item: {message}")]
    Encode {
        /// The encoder's message.
        message: String,
    },
    /// The connection failed (the controller is gone, or the client was dropped), or the
    /// controller refused the request.
    #[error(transparent)]
    Client(#[from] Error),
}

impl ObjectError {
    /// Whether trying again (later) can help.
    pub fn is_retryable(&self) -> bool {
        match self {
            ObjectError::Empty { .. }
            | ObjectError::Full { .. }
            | ObjectError::Timeout { .. }
            | ObjectError::Limit { .. } => true,
            ObjectError::Client(e) => e.is_retryable(),
            _ => false,
        }
    }

    fn from_reply(name: &str, kind: ObjectErrorKind, message: String) -> ObjectError {
        let name = name.to_owned();
        match kind {
            ObjectErrorKind::Empty => ObjectError::Empty { name },
            ObjectErrorKind::Full => ObjectError::Full { name },
            ObjectErrorKind::Timeout => ObjectError::Timeout { message },
            ObjectErrorKind::WrongKind => ObjectError::WrongKind { message },
            ObjectErrorKind::BadName => ObjectError::BadName { message },
            ObjectErrorKind::Limit => ObjectError::Limit { message },
            ObjectErrorKind::UnknownLease => ObjectError::LeaseLost { message },
            ObjectErrorKind::Invalid => ObjectError::Invalid { message },
            ObjectErrorKind::Removed => ObjectError::Removed { message },
        }
    }
}

fn unexpected(what: &str, reply: &ObjectReply) -> ObjectError {
    ObjectError::Client(Error::Decode {
        what: format!("the controller's answer to {what}"),
        message: format!("unexpected answer {reply:?}"),
    })
}

// ---- What the callers share with the I/O thread ----

/// An answer with its payload frames.
type Reply = (ObjectReply, Vec<Vec<u8>>);

/// An answer with its payload frames, or the end of the connection.
type Answer = Result<Reply, Lost>;

/// Where the answer to one object request goes.
#[derive(Debug, Default)]
pub(crate) struct ObjectSlot {
    slot: Mutex<Option<Answer>>,
    cond: Condvar,
}

impl ObjectSlot {
    pub(crate) fn put(&self, answer: Answer) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(answer);
            self.cond.notify_all();
        }
    }

    /// Waits for the answer, up to `limit` (`None`: until it comes or the connection ends).
    fn wait(&self, limit: Option<Duration>) -> Option<Answer> {
        let deadline = limit.map(|l| Instant::now() + l);
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(answer) = slot.take() {
                return Some(answer);
            }
            slot = match deadline {
                None => self.cond.wait(slot).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    self.cond
                        .wait_timeout(slot, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
    }
}

/// An object request encoded by its caller, for the I/O thread.
#[derive(Debug)]
pub(crate) struct ObjectOutgoing {
    pub(crate) id: u64,
    pub(crate) content: Vec<u8>,
    pub(crate) payloads: Vec<Vec<u8>>,
    /// Who waits for the answer (`None`: nobody, for releases from `Drop`).
    pub(crate) slot: Option<Arc<ObjectSlot>>,
    /// For an acquire: what a renewal of the lease it gets must say.
    pub(crate) lease: Option<LeaseTemplate>,
}

/// What renewing a lease of an object needs besides its id.
#[derive(Debug, Clone)]
pub(crate) struct LeaseTemplate {
    name: String,
    kind: ObjectKind,
    permits: u32,
}

/// The objects' part of the client's shared state: request ids and held leases.
#[derive(Debug, Default)]
pub(crate) struct ObjectsShared {
    next_id: AtomicU64,
    /// Leases held now, renewed by the I/O thread.
    leases: Mutex<HashMap<LeaseId, Renewal>>,
}

impl ObjectsShared {
    fn leases(&self) -> MutexGuard<'_, HashMap<LeaseId, Renewal>> {
        self.leases.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Shared {
    /// Sends an object request and waits for its answer: up to `wait` plus the request
    /// timeout when the request itself waits at most `wait`, forever (until the connection
    /// ends) when `wait` is `None`.
    fn object(
        &self,
        name: &str,
        op: ObjectOp,
        payloads: Vec<Vec<u8>>,
        wait: Option<Option<Duration>>,
    ) -> Result<(ObjectReply, Vec<Vec<u8>>), ObjectError> {
        let lease = match &op {
            ObjectOp::Acquire { permits, .. } => Some(LeaseTemplate {
                name: name.to_owned(),
                kind: if permits.is_some() {
                    ObjectKind::Semaphore
                } else {
                    ObjectKind::Lock
                },
                permits: permits.unwrap_or(1),
            }),
            _ => None,
        };
        let slot = Arc::new(ObjectSlot::default());
        self.send_object(name, op, payloads, Some(slot.clone()), lease)?;
        let limit = match wait {
            None => Some(self.request_timeout),
            Some(None) => None,
            Some(Some(t)) => Some(t.saturating_add(self.request_timeout)),
        };
        match slot.wait(limit) {
            None => Err(ObjectError::Client(Error::Timeout {
                what: format!(
                    "the controller at {} to answer a request about {name:?}",
                    self.address
                ),
            })),
            Some(Err(lost)) => Err(ObjectError::Client(lost.error())),
            Some(Ok((ObjectReply::Error { kind, message }, _))) => {
                Err(ObjectError::from_reply(name, kind, message))
            }
            Some(Ok(answer)) => Ok(answer),
        }
    }

    /// Sends many requests about `name` at once (pipelined: the controller handles them in
    /// this order) and waits for every answer; the first error, if any.
    fn objects_pipelined(
        &self,
        name: &str,
        requests: Vec<(ObjectOp, Vec<Vec<u8>>)>,
        wait: Option<Option<Duration>>,
    ) -> Result<Vec<Reply>, ObjectError> {
        let mut slots = Vec::with_capacity(requests.len());
        for (op, payloads) in requests {
            let slot = Arc::new(ObjectSlot::default());
            self.send_object(name, op, payloads, Some(slot.clone()), None)?;
            slots.push(slot);
        }
        let limit = match wait {
            None => Some(self.request_timeout),
            Some(None) => None,
            Some(Some(t)) => Some(t.saturating_add(self.request_timeout)),
        };
        let mut answers = Vec::with_capacity(slots.len());
        let mut first_error = None;
        for slot in slots {
            match slot.wait(limit) {
                None => {
                    first_error.get_or_insert(ObjectError::Client(Error::Timeout {
                        what: format!(
                            "the controller at {} to answer requests about {name:?}",
                            self.address
                        ),
                    }));
                }
                Some(Err(lost)) => {
                    first_error.get_or_insert(ObjectError::Client(lost.error()));
                }
                Some(Ok((ObjectReply::Error { kind, message }, _))) => {
                    first_error.get_or_insert(ObjectError::from_reply(name, kind, message));
                }
                Some(Ok(answer)) => answers.push(answer),
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(answers),
        }
    }

    /// Queues an object request for the I/O thread.
    fn send_object(
        &self,
        name: &str,
        op: ObjectOp,
        payloads: Vec<Vec<u8>>,
        slot: Option<Arc<ObjectSlot>>,
        lease: Option<LeaseTemplate>,
    ) -> Result<(), ObjectError> {
        let id = self.objects.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let msg = FromClient::Object(ObjectRequest {
            id,
            name: name.to_owned(),
            op,
        });
        let content = protocol::encode(&msg).map_err(|e| ObjectError::Encode {
            message: e.to_string(),
        })?;
        self.send_objects(ObjectOutgoing {
            id,
            content,
            payloads,
            slot,
            lease,
        })
        .map_err(|lost| ObjectError::Client(lost.error()))
    }
}

// ---- The I/O thread's side ----

/// An object request sent and not answered yet.
#[derive(Debug)]
struct Sent {
    content: Vec<u8>,
    payloads: Vec<Vec<u8>>,
    slot: Option<Arc<ObjectSlot>>,
    lease: Option<LeaseTemplate>,
    /// A renewal: its answer lists leases lost.
    renewal: bool,
}

/// The I/O thread's object requests in flight and lease renewals.
#[derive(Debug, Default)]
pub(crate) struct IoObjects {
    pending: HashMap<u64, Sent>,
    /// When the held leases are renewed next (`None`: none held).
    next_renewal: Option<Instant>,
}

impl IoObjects {
    /// Requests waiting for answers.
    pub(crate) fn outstanding(&self) -> usize {
        self.pending.len()
    }

    /// `msg` was sent.
    pub(crate) fn sent(&mut self, msg: ObjectOutgoing) {
        self.pending.insert(
            msg.id,
            Sent {
                content: msg.content,
                payloads: msg.payloads,
                slot: msg.slot,
                lease: msg.lease,
                renewal: false,
            },
        );
    }

    /// The answer to request `id` arrived.
    pub(crate) fn on_reply(
        &mut self,
        shared: &Shared,
        id: u64,
        reply: ObjectReply,
        payloads: Vec<Vec<u8>>,
        now: Instant,
    ) {
        let Some(sent) = self.pending.remove(&id) else {
            tracing::debug!("answer to an unknown object request {id}; ignored");
            return;
        };
        if let (ObjectReply::Lease { lease, lease_ms }, Some(t)) = (&reply, &sent.lease) {
            // Held from now on: renewed by this thread until released.
            shared.objects.leases().insert(
                *lease,
                Renewal {
                    lease: *lease,
                    name: t.name.clone(),
                    kind: t.kind,
                    permits: t.permits,
                    lease_ms: *lease_ms,
                },
            );
            let every = Duration::from_millis(*lease_ms / 3).max(MIN_LEASE / 3);
            let next = now + every;
            self.next_renewal = Some(self.next_renewal.map_or(next, |n| n.min(next)));
            if sent.slot.is_none() {
                // Nobody waits for it any more (cannot happen: acquires always wait).
                tracing::debug!("lease {lease} granted to nobody");
            }
        }
        if sent.renewal {
            if let ObjectReply::Renewed { lost } = &reply {
                let mut leases = shared.objects.leases();
                for lease in lost {
                    if let Some(r) = leases.remove(lease) {
                        tracing::warn!(
                            "the lease {lease} on {} {:?} was lost (it ran out or the controller freed it); someone else may hold it now",
                            r.kind,
                            r.name
                        );
                    }
                }
            }
            return;
        }
        if let Some(slot) = sent.slot {
            slot.put(Ok((reply, payloads)));
        }
    }

    /// When the I/O thread must wake up to renew leases.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        self.next_renewal
    }

    /// The renewal to send now, if due: one request for every lease held.
    pub(crate) fn renewal(&mut self, shared: &Shared, now: Instant) -> Option<(u64, Vec<u8>)> {
        if self.next_renewal.is_none_or(|t| now < t) {
            return None;
        }
        let leases: Vec<Renewal> = shared.objects.leases().values().cloned().collect();
        let Some(shortest) = leases.iter().map(|r| r.lease_ms).min() else {
            self.next_renewal = None;
            return None;
        };
        self.next_renewal = Some(now + Duration::from_millis(shortest / 3).max(MIN_LEASE / 3));
        let id = shared.objects.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let msg = FromClient::Object(ObjectRequest {
            id,
            name: String::new(),
            op: ObjectOp::Renew { leases },
        });
        let content = protocol::encode(&msg).ok()?;
        self.pending.insert(
            id,
            Sent {
                content: content.clone(),
                payloads: Vec::new(),
                slot: None,
                lease: None,
                renewal: true,
            },
        );
        Some((id, content))
    }

    /// The controller restarted: every request still waiting, to send again in the order
    /// of their ids; and the leases are renewed at once (taken back if free).
    pub(crate) fn again(&mut self, now: Instant) -> Vec<(&[u8], Vec<&[u8]>)> {
        if self.next_renewal.is_some() {
            self.next_renewal = Some(now);
        }
        let mut ids: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, s)| !s.renewal)
            .map(|(&id, _)| id)
            .collect();
        ids.sort_unstable();
        self.pending.retain(|_, s| !s.renewal);
        ids.iter()
            .filter_map(|id| self.pending.get(id))
            .map(|s| {
                (
                    s.content.as_slice(),
                    s.payloads.iter().map(Vec::as_slice).collect(),
                )
            })
            .collect()
    }

    /// Ends every request: their waiters, to be told the connection is lost.
    pub(crate) fn drain(&mut self) -> Vec<Arc<ObjectSlot>> {
        self.next_renewal = None;
        self.pending.drain().filter_map(|(_, s)| s.slot).collect()
    }
}

/// Object requests queued by callers and not yet taken by the I/O thread.
pub(crate) type ObjectOutbox = VecDeque<ObjectOutgoing>;

// ---- The handles ----

fn wait_of(timeout: Option<Duration>) -> Wait {
    Wait {
        timeout_ms: timeout.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        nowait: false,
    }
}

const NOWAIT: Wait = Wait {
    timeout_ms: Some(0),
    nowait: true,
};

fn item_of(what: &str, reply: ObjectReply, payloads: Vec<Vec<u8>>) -> Result<Item, ObjectError> {
    match reply {
        ObjectReply::Item { format } => Ok(Item {
            format,
            data: payloads.into_iter().next().unwrap_or_default(),
        }),
        other => Err(unexpected(what, &other)),
    }
}

fn flag_of(what: &str, reply: ObjectReply) -> Result<bool, ObjectError> {
    match reply {
        ObjectReply::Flag { value } => Ok(value),
        other => Err(unexpected(what, &other)),
    }
}

fn done_of(what: &str, reply: ObjectReply) -> Result<(), ObjectError> {
    match reply {
        ObjectReply::Done => Ok(()),
        other => Err(unexpected(what, &other)),
    }
}

impl Client {
    /// The queue `name` with raw items (bytes and a format tag), created on first use.
    pub fn raw_queue(&self, name: &str) -> RawQueue {
        RawQueue {
            shared: self.shared().clone(),
            name: name.to_owned(),
        }
    }

    /// The queue `name` with items of type `T`, encoded as msgpack (what the CLI reads and
    /// writes), created on first use.
    pub fn queue<T: Serialize + DeserializeOwned>(&self, name: &str) -> Queue<T> {
        Queue {
            raw: self.raw_queue(name),
            _items: PhantomData,
        }
    }

    /// The namespace `name` ([`crate::DEFAULT_NAMESPACE`], `"default"`, is the one everybody shares
    /// unless they name another), created on first use.
    pub fn namespace(&self, name: &str) -> Namespace {
        Namespace {
            shared: self.shared().clone(),
            name: name.to_owned(),
        }
    }

    /// The lock `name`, created on first use.
    pub fn lock(&self, name: &str) -> Lock {
        Lock {
            inner: Leased {
                shared: self.shared().clone(),
                name: name.to_owned(),
                permits: None,
                lease: DEFAULT_LEASE,
            },
        }
    }

    /// The semaphore `name` of `permits` permits, created on first use (a later use with
    /// another number is refused with [`ObjectError::Invalid`]).
    pub fn semaphore(&self, name: &str, permits: u32) -> Semaphore {
        Semaphore {
            inner: Leased {
                shared: self.shared().clone(),
                name: name.to_owned(),
                permits: Some(permits),
                lease: DEFAULT_LEASE,
            },
        }
    }

    /// The event `name`, created (cleared) on first use.
    pub fn event(&self, name: &str) -> Event {
        Event {
            shared: self.shared().clone(),
            name: name.to_owned(),
        }
    }

    /// Every object the controller holds: name, kind, length (items, keys, leases held, set
    /// or not), bytes, waiters.
    pub fn objects(&self) -> Result<Vec<ObjectInfo>, ObjectError> {
        match self
            .shared()
            .object("", ObjectOp::List, Vec::new(), None)?
            .0
        {
            ObjectReply::Objects { objects } => Ok(objects),
            other => Err(unexpected("the object list", &other)),
        }
    }

    /// Deletes the object `name` (a queue's items, a namespace's keys); requests waiting on
    /// it end with [`ObjectError::Removed`]. True if it existed.
    pub fn remove_object(&self, name: &str) -> Result<bool, ObjectError> {
        let reply = self
            .shared()
            .object(name, ObjectOp::Remove, Vec::new(), None)?
            .0;
        flag_of("remove", reply)
    }
}

/// A queue of raw items ([`Client::raw_queue`]).
#[derive(Debug, Clone)]
pub struct RawQueue {
    shared: Arc<Shared>,
    name: String,
}

impl RawQueue {
    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bounds the queue to `maxsize` items (`None`: unbounded, the default); creates it if
    /// needed. Puts wait while it is full. Lowering it below the current length keeps the
    /// items; puts wait until it drains below the bound.
    pub fn set_maxsize(&self, maxsize: Option<u64>) -> Result<(), ObjectError> {
        let op = ObjectOp::QueueSetMaxsize { maxsize };
        let reply = self.shared.object(&self.name, op, Vec::new(), None)?.0;
        done_of("set_maxsize", reply)
    }

    /// Appends `item`, waiting while the queue is full up to `timeout` (`None`: until
    /// there is room), then [`ObjectError::Timeout`].
    pub fn put(&self, item: Item, timeout: Option<Duration>) -> Result<(), ObjectError> {
        self.put_with(item, wait_of(timeout), Some(timeout))
    }

    /// Appends `item` if there is room now, else [`ObjectError::Full`].
    pub fn put_nowait(&self, item: Item) -> Result<(), ObjectError> {
        self.put_with(item, NOWAIT, None)
    }

    /// Appends `items` in order, sent all at once rather than one round trip each (each may
    /// wait up to `timeout` while the queue is full); returns when all are in, or with the
    /// first error (the others are then in or refused on their own).
    pub fn put_many(
        &self,
        items: impl IntoIterator<Item = Item>,
        timeout: Option<Duration>,
    ) -> Result<(), ObjectError> {
        let requests = items
            .into_iter()
            .map(|item| {
                let op = ObjectOp::QueuePut {
                    format: item.format,
                    wait: wait_of(timeout),
                };
                (op, vec![item.data])
            })
            .collect();
        self.shared
            .objects_pipelined(&self.name, requests, Some(timeout))?;
        Ok(())
    }

    fn put_with(
        &self,
        item: Item,
        wait: Wait,
        limit: Option<Option<Duration>>,
    ) -> Result<(), ObjectError> {
        let op = ObjectOp::QueuePut {
            format: item.format,
            wait,
        };
        let reply = self
            .shared
            .object(&self.name, op, vec![item.data], limit)?
            .0;
        done_of("put", reply)
    }

    /// Takes the oldest item, waiting while the queue is empty up to `timeout` (`None`:
    /// until one comes), then [`ObjectError::Timeout`].
    pub fn get(&self, timeout: Option<Duration>) -> Result<Item, ObjectError> {
        self.get_with(wait_of(timeout), Some(timeout))
    }

    /// Takes the oldest item if there is one now, else [`ObjectError::Empty`].
    pub fn get_nowait(&self) -> Result<Item, ObjectError> {
        self.get_with(NOWAIT, None)
    }

    fn get_with(&self, wait: Wait, limit: Option<Option<Duration>>) -> Result<Item, ObjectError> {
        let op = ObjectOp::QueueGet { wait };
        let (reply, payloads) = self.shared.object(&self.name, op, Vec::new(), limit)?;
        item_of("get", reply, payloads)
    }

    /// Items in the queue now.
    pub fn qsize(&self) -> Result<u64, ObjectError> {
        match self
            .shared
            .object(&self.name, ObjectOp::QueueSize, Vec::new(), None)?
            .0
        {
            ObjectReply::Size { len } => Ok(len),
            other => Err(unexpected("qsize", &other)),
        }
    }
}

/// A queue of `T`s, encoded as msgpack ([`Client::queue`]).
#[derive(Debug)]
pub struct Queue<T> {
    raw: RawQueue,
    _items: PhantomData<fn(T) -> T>,
}

impl<T> Clone for Queue<T> {
    fn clone(&self) -> Self {
        Queue {
            raw: self.raw.clone(),
            _items: PhantomData,
        }
    }
}

impl<T: Serialize + DeserializeOwned> Queue<T> {
    /// The queue's name.
    pub fn name(&self) -> &str {
        self.raw.name()
    }

    /// The same queue, raw.
    pub fn raw(&self) -> &RawQueue {
        &self.raw
    }

    /// Bounds the queue (see [`RawQueue::set_maxsize`]).
    pub fn set_maxsize(&self, maxsize: Option<u64>) -> Result<(), ObjectError> {
        self.raw.set_maxsize(maxsize)
    }

    /// Appends `value`, waiting while the queue is full (forever: see [`Queue::put_timeout`]).
    pub fn put(&self, value: &T) -> Result<(), ObjectError> {
        self.raw.put(Item::msgpack(value)?, None)
    }

    /// Appends `value`, waiting while the queue is full up to `timeout`.
    pub fn put_timeout(&self, value: &T, timeout: Option<Duration>) -> Result<(), ObjectError> {
        self.raw.put(Item::msgpack(value)?, timeout)
    }

    /// Appends `value` if there is room now, else [`ObjectError::Full`].
    pub fn put_nowait(&self, value: &T) -> Result<(), ObjectError> {
        self.raw.put_nowait(Item::msgpack(value)?)
    }

    /// Appends `values` in order, sent all at once (see [`RawQueue::put_many`]).
    pub fn put_many<'a>(
        &self,
        values: impl IntoIterator<Item = &'a T>,
        timeout: Option<Duration>,
    ) -> Result<(), ObjectError>
    where
        T: 'a,
    {
        let items = values
            .into_iter()
            .map(Item::msgpack)
            .collect::<Result<Vec<_>, _>>()?;
        self.raw.put_many(items, timeout)
    }

    /// Takes the oldest value, waiting up to `timeout` (`None`: until one comes). An item
    /// that is not msgpack (a pickle from Python) is an [`ObjectError::Format`]; it is taken
    /// out of the queue all the same.
    pub fn get(&self, timeout: Option<Duration>) -> Result<T, ObjectError> {
        self.raw.get(timeout)?.decode(&self.what())
    }

    /// Takes the oldest value if there is one now, else [`ObjectError::Empty`].
    pub fn get_nowait(&self) -> Result<T, ObjectError> {
        self.raw.get_nowait()?.decode(&self.what())
    }

    /// Items in the queue now.
    pub fn qsize(&self) -> Result<u64, ObjectError> {
        self.raw.qsize()
    }

    fn what(&self) -> String {
        format!("queue {:?}", self.raw.name)
    }
}

/// Keys to items ([`Client::namespace`]).
#[derive(Debug, Clone)]
pub struct Namespace {
    shared: Arc<Shared>,
    name: String,
}

impl Namespace {
    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets `key` to `item`.
    pub fn set(&self, key: &str, item: Item) -> Result<(), ObjectError> {
        let op = ObjectOp::NsSet {
            key: key.to_owned(),
            format: item.format,
            digest: item.digest(),
        };
        let reply = self.shared.object(&self.name, op, vec![item.data], None)?.0;
        done_of("set", reply)
    }

    /// The item at `key`, if any.
    pub fn get(&self, key: &str) -> Result<Option<Item>, ObjectError> {
        let op = ObjectOp::NsGet {
            key: key.to_owned(),
        };
        match self.shared.object(&self.name, op, Vec::new(), None)? {
            (ObjectReply::Value { format: None }, _) => Ok(None),
            (ObjectReply::Value { format: Some(f) }, payloads) => Ok(Some(Item {
                format: f,
                data: payloads.into_iter().next().unwrap_or_default(),
            })),
            (other, _) => Err(unexpected("get", &other)),
        }
    }

    /// Removes `key`; true if it was there.
    pub fn delete(&self, key: &str) -> Result<bool, ObjectError> {
        let op = ObjectOp::NsDelete {
            key: key.to_owned(),
        };
        flag_of(
            "delete",
            self.shared.object(&self.name, op, Vec::new(), None)?.0,
        )
    }

    /// The keys, sorted.
    pub fn keys(&self) -> Result<Vec<String>, ObjectError> {
        match self
            .shared
            .object(&self.name, ObjectOp::NsKeys, Vec::new(), None)?
            .0
        {
            ObjectReply::Keys { keys } => Ok(keys),
            other => Err(unexpected("keys", &other)),
        }
    }

    /// Sets `key` to `new` (removes it when `new` is `None`) only if its value now is
    /// `expected` (`None`: only if it is absent), in one step; true if it was set. Values
    /// compare by format and bytes.
    pub fn compare_and_set(
        &self,
        key: &str,
        expected: Option<Item>,
        new: Option<Item>,
    ) -> Result<bool, ObjectError> {
        let op = ObjectOp::NsCompareAndSet {
            key: key.to_owned(),
            expected: expected.as_ref().map(Item::digest),
            new: new.as_ref().map(|n| NewValue {
                format: n.format,
                digest: n.digest(),
            }),
        };
        let payloads = new.map(|n| vec![n.data]).unwrap_or_default();
        flag_of(
            "compare_and_set",
            self.shared.object(&self.name, op, payloads, None)?.0,
        )
    }

    /// Sets `key` to `value`, encoded as msgpack.
    pub fn set_value<T: Serialize + ?Sized>(
        &self,
        key: &str,
        value: &T,
    ) -> Result<(), ObjectError> {
        self.set(key, Item::msgpack(value)?)
    }

    /// The value at `key` decoded from msgpack, if any (a pickle value is an
    /// [`ObjectError::Format`]).
    pub fn get_value<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, ObjectError> {
        match self.get(key)? {
            None => Ok(None),
            Some(item) => item
                .decode(&format!("key {key:?} of namespace {:?}", self.name))
                .map(Some),
        }
    }
}

/// A lock or a semaphore: what acquiring and releasing leases takes.
#[derive(Debug, Clone)]
struct Leased {
    shared: Arc<Shared>,
    name: String,
    permits: Option<u32>,
    lease: Duration,
}

impl Leased {
    fn acquire_with(&self, wait: Wait, limit: Option<Duration>) -> Result<LeaseId, ObjectError> {
        let op = ObjectOp::Acquire {
            permits: self.permits,
            wait,
            lease_ms: u64::try_from(self.lease.as_millis()).unwrap_or(u64::MAX),
        };
        let limit = if wait.nowait { None } else { Some(limit) };
        match self.shared.object(&self.name, op, Vec::new(), limit)?.0 {
            ObjectReply::Lease { lease, .. } => Ok(lease),
            other => Err(unexpected("acquire", &other)),
        }
    }

    fn acquire_lease(&self, timeout: Option<Duration>) -> Result<LeaseId, ObjectError> {
        self.acquire_with(wait_of(timeout), timeout)
    }

    fn try_acquire_lease(&self) -> Result<Option<LeaseId>, ObjectError> {
        match self.acquire_with(NOWAIT, None) {
            Ok(lease) => Ok(Some(lease)),
            Err(ObjectError::Timeout { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn release_lease(&self, lease: LeaseId) -> Result<(), ObjectError> {
        self.shared.objects.leases().remove(&lease);
        let op = ObjectOp::Release { lease };
        done_of(
            "release",
            self.shared.object(&self.name, op, Vec::new(), None)?.0,
        )
    }

    /// Releases without waiting for the answer (from `Drop`).
    fn release_quietly(&self, lease: LeaseId) {
        self.shared.objects.leases().remove(&lease);
        // A closed connection has released everything already.
        let _ = self.shared.send_object(
            &self.name,
            ObjectOp::Release { lease },
            Vec::new(),
            None,
            None,
        );
    }

    fn guard(&self, lease: LeaseId) -> LockGuard {
        LockGuard {
            owner: self.clone(),
            lease: Some(lease),
        }
    }
}

/// A lock held somewhere in the cluster; released when dropped (or by [`LockGuard::release`]).
#[derive(Debug)]
#[must_use = "the lock is released when the guard is dropped"]
pub struct LockGuard {
    owner: Leased,
    lease: Option<LeaseId>,
}

impl LockGuard {
    /// The lease this guard holds.
    pub fn lease(&self) -> LeaseId {
        self.lease.unwrap_or(LeaseId(0))
    }

    /// Whether this client still holds the lease as far as it knows (false once a renewal
    /// found it lost).
    pub fn is_held(&self) -> bool {
        self.lease
            .is_some_and(|l| self.owner.shared.objects.leases().contains_key(&l))
    }

    /// Releases now and waits for the controller's answer ([`ObjectError::LeaseLost`] if the
    /// lease had run out meanwhile).
    pub fn release(mut self) -> Result<(), ObjectError> {
        match self.lease.take() {
            Some(lease) => self.owner.release_lease(lease),
            None => Ok(()),
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(lease) = self.lease.take() {
            self.owner.release_quietly(lease);
        }
    }
}

macro_rules! leased_methods {
    ($what:literal) => {
        /// The object's name.
        pub fn name(&self) -> &str {
            &self.inner.name
        }

        /// The same handle with leases of `lease` (at least [`MIN_LEASE`]): how long a holder
        /// that vanished without its connection closing keeps the others waiting.
        pub fn with_lease(mut self, lease: Duration) -> Self {
            self.inner.lease = lease.max(MIN_LEASE);
            self
        }

        #[doc = concat!("Takes ", $what, ", waiting up to `timeout` (`None`: until it is free), then [`ObjectError::Timeout`]; released when the guard is dropped.")]
        pub fn acquire(&self, timeout: Option<Duration>) -> Result<LockGuard, ObjectError> {
            let lease = self.inner.acquire_lease(timeout)?;
            Ok(self.inner.guard(lease))
        }

        #[doc = concat!("Takes ", $what, " if it is free now (`None` if not).")]
        pub fn try_acquire(&self) -> Result<Option<LockGuard>, ObjectError> {
            Ok(self
                .inner
                .try_acquire_lease()?
                .map(|lease| self.inner.guard(lease)))
        }

        #[doc = concat!("Takes ", $what, " like [`Self::acquire`] without a guard (for bindings to other languages): give it back with [`Self::release_lease`]. The client renews the lease while it holds it.")]
        pub fn acquire_lease(&self, timeout: Option<Duration>) -> Result<LeaseId, ObjectError> {
            self.inner.acquire_lease(timeout)
        }

        /// Like [`Self::try_acquire`], without a guard.
        pub fn try_acquire_lease(&self) -> Result<Option<LeaseId>, ObjectError> {
            self.inner.try_acquire_lease()
        }

        /// Gives back a lease from [`Self::acquire_lease`] ([`ObjectError::LeaseLost`] if it
        /// ran out or was freed meanwhile).
        pub fn release_lease(&self, lease: LeaseId) -> Result<(), ObjectError> {
            self.inner.release_lease(lease)
        }
    };
}

/// A lock shared by the whole cluster ([`Client::lock`]): one holder at a time, waiters
/// served first come first served, freed when its holder's client goes away.
#[derive(Debug, Clone)]
pub struct Lock {
    inner: Leased,
}

impl Lock {
    leased_methods!("the lock");
}

/// A semaphore of n permits shared by the whole cluster ([`Client::semaphore`]); each
/// permit is held like a [`Lock`].
#[derive(Debug, Clone)]
pub struct Semaphore {
    inner: Leased,
}

impl Semaphore {
    leased_methods!("one permit");

    /// The number of permits.
    pub fn permits(&self) -> u32 {
        self.inner.permits.unwrap_or(1)
    }
}

/// A flag shared by the whole cluster ([`Client::event`]).
#[derive(Debug, Clone)]
pub struct Event {
    shared: Arc<Shared>,
    name: String,
}

impl Event {
    /// The event's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Sets it: every waiter wakes, and waits return at once until it is cleared.
    pub fn set(&self) -> Result<(), ObjectError> {
        let reply = self
            .shared
            .object(&self.name, ObjectOp::EventSet, Vec::new(), None)?
            .0;
        done_of("set", reply)
    }

    /// Clears it.
    pub fn clear(&self) -> Result<(), ObjectError> {
        let reply = self
            .shared
            .object(&self.name, ObjectOp::EventClear, Vec::new(), None)?
            .0;
        done_of("clear", reply)
    }

    /// Whether it is set.
    pub fn is_set(&self) -> Result<bool, ObjectError> {
        let reply = self
            .shared
            .object(&self.name, ObjectOp::EventIsSet, Vec::new(), None)?
            .0;
        flag_of("is_set", reply)
    }

    /// Waits until it is set, up to `timeout` (`None`: no limit): true if it is set, false
    /// if the wait timed out (as Python's `Event.wait`).
    pub fn wait(&self, timeout: Option<Duration>) -> Result<bool, ObjectError> {
        let op = ObjectOp::EventWait {
            wait: wait_of(timeout),
        };
        let reply = self
            .shared
            .object(&self.name, op, Vec::new(), Some(timeout))?
            .0;
        flag_of("wait", reply)
    }
}
