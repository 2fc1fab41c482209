//! The objects themselves and their rules: [`Objects`] takes requests, connections that
//! leave and the time, and gives answers ([`Answer`]) and store records.

use super::super::{Payload, Route};
use protocol::{
    check_name, ItemFormat, LeaseId, ObjectErrorKind, ObjectInfo, ObjectKind, ObjectOp,
    ObjectReply, Renewal, Wait,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::time::Duration;
use store::ObjectRecord;

/// Shortest and longest lease granted.
pub(crate) const MIN_LEASE: Duration = Duration::from_millis(100);
pub(crate) const MAX_LEASE: Duration = Duration::from_secs(3600);

/// The objects' limits (`cluster.toml`: `object_max_bytes`, `objects_max_bytes`,
/// `objects_max`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectLimits {
    /// Bytes one object may hold (a queue's items with the puts waiting, a namespace's keys
    /// and values).
    pub object_max_bytes: u64,
    /// Bytes all objects together may hold.
    pub objects_max_bytes: u64,
    /// Objects that may exist at once.
    pub max_objects: usize,
}

impl Default for ObjectLimits {
    fn default() -> Self {
        ObjectLimits {
            object_max_bytes: 64 << 20,
            objects_max_bytes: 256 << 20,
            max_objects: 100_000,
        }
    }
}

/// An answer to send: to `route`, for its request `id`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Answer {
    pub(crate) route: Route,
    pub(crate) id: u64,
    pub(crate) reply: ObjectReply,
    pub(crate) payloads: Vec<Payload>,
}

/// A request waiting: whose, and the token its deadline names.
#[derive(Debug, Clone)]
struct Waiter {
    route: Route,
    id: u64,
    token: u64,
    /// When it began to wait.
    since: Duration,
}

#[derive(Debug, Clone)]
struct Stored {
    seq: u64,
    format: ItemFormat,
    data: Payload,
}

#[derive(Debug, Default)]
struct QueueObj {
    items: VecDeque<Stored>,
    maxsize: Option<u64>,
    next_seq: u64,
    /// Waiting for an item (only while `items` is empty).
    getters: VecDeque<Waiter>,
    /// Waiting for room (only while the queue is full), with their items.
    putters: VecDeque<(Waiter, ItemFormat, Payload)>,
}

impl QueueObj {
    fn full(&self) -> bool {
        self.maxsize.is_some_and(|m| self.items.len() as u64 >= m)
    }
}

#[derive(Debug, Clone)]
struct Value {
    format: ItemFormat,
    digest: Vec<u8>,
    data: Payload,
}

impl Value {
    fn bytes(&self, key: &str) -> u64 {
        (key.len() + self.digest.len() + self.data.len()) as u64
    }
}

#[derive(Debug, Default)]
struct SemObj {
    permits: u32,
    holders: HashSet<LeaseId>,
    /// Waiting for a permit, with the lease length asked for.
    waiters: VecDeque<(Waiter, Duration)>,
}

#[derive(Debug, Default)]
struct EventObj {
    set: bool,
    waiters: VecDeque<Waiter>,
}

#[derive(Debug)]
enum Body {
    Queue(QueueObj),
    Namespace(BTreeMap<String, Value>),
    Sem(SemObj),
    Event(EventObj),
}

#[derive(Debug)]
struct Object {
    kind: ObjectKind,
    /// Bytes it holds, waiting puts included.
    bytes: u64,
    body: Body,
}

impl Object {
    fn new(kind: ObjectKind, permits: u32) -> Object {
        let body = match kind {
            ObjectKind::Queue => Body::Queue(QueueObj {
                next_seq: 1,
                ..QueueObj::default()
            }),
            ObjectKind::Namespace => Body::Namespace(BTreeMap::new()),
            ObjectKind::Lock | ObjectKind::Semaphore => Body::Sem(SemObj {
                permits,
                ..SemObj::default()
            }),
            ObjectKind::Event => Body::Event(EventObj::default()),
        };
        Object {
            kind,
            bytes: 0,
            body,
        }
    }

    fn waiters(&self) -> u64 {
        (match &self.body {
            Body::Queue(q) => q.getters.len() + q.putters.len(),
            Body::Namespace(_) => 0,
            Body::Sem(s) => s.waiters.len(),
            Body::Event(e) => e.waiters.len(),
        }) as u64
    }

    fn info(&self, name: &str) -> ObjectInfo {
        let (len, maxsize, permits) = match &self.body {
            Body::Queue(q) => (q.items.len() as u64, q.maxsize, None),
            Body::Namespace(n) => (n.len() as u64, None, None),
            Body::Sem(s) => (
                s.holders.len() as u64,
                None,
                (self.kind == ObjectKind::Semaphore).then_some(s.permits),
            ),
            Body::Event(e) => (u64::from(e.set), None, None),
        };
        ObjectInfo {
            name: name.to_owned(),
            kind: self.kind,
            len,
            bytes: self.bytes,
            waiters: self.waiters(),
            maxsize,
            permits,
        }
    }
}

/// A held lease.
#[derive(Debug, Clone)]
struct Lease {
    name: String,
    route: Route,
    length: Duration,
    expires: Duration,
}

/// What a deadline ends.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    /// The wait of the waiter with this token, on this object.
    Wait { token: u64, name: String },
    /// The lease, if it still expires then (renewals push later deadlines).
    Lease(LeaseId),
}

/// An error answer.
struct Refusal(ObjectErrorKind, String);

fn refuse<T>(kind: ObjectErrorKind, message: String) -> Result<T, Refusal> {
    Err(Refusal(kind, message))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// Every object, the leases, the waits' deadlines, and the records for the store.
#[derive(Debug)]
pub(crate) struct Objects {
    by_name: HashMap<String, Object>,
    bytes: u64,
    limits: ObjectLimits,
    deadlines: BinaryHeap<Reverse<(Duration, Due)>>,
    leases: HashMap<LeaseId, Lease>,
    /// Per connection: its waits (token → object) and its leases.
    waits_of: HashMap<Route, HashMap<u64, String>>,
    leases_of: HashMap<Route, HashSet<LeaseId>>,
    next_token: u64,
    rng: SmallRng,
    /// Whether changes become store records.
    persist: bool,
    records: Vec<ObjectRecord>,
}

/// The object `name` of `kind`, made on first use (or the refusal).
macro_rules! body {
    ($self:ident, $name:expr, $kind:expr, $permits:expr, $pat:ident) => {{
        let object = $self.object($name, $kind, $permits)?;
        match &mut object.body {
            Body::$pat(b) => (b, &mut object.bytes),
            _ => unreachable!("kind checked"),
        }
    }};
}

impl Objects {
    pub(crate) fn new(limits: ObjectLimits, persist: bool, seed: u64) -> Objects {
        Objects {
            by_name: HashMap::new(),
            bytes: 0,
            limits,
            deadlines: BinaryHeap::new(),
            leases: HashMap::new(),
            waits_of: HashMap::new(),
            leases_of: HashMap::new(),
            next_token: 0,
            rng: SmallRng::seed_from_u64(seed ^ 0x006f_626a_6563_7473),
            persist,
            records: Vec::new(),
        }
    }

    /// The store records of the changes made since the last call.
    pub(crate) fn take_records(&mut self) -> Vec<ObjectRecord> {
        std::mem::take(&mut self.records)
    }

    /// When the next wait or lease ends.
    pub(crate) fn next_due(&self) -> Option<Duration> {
        self.deadlines.peek().map(|Reverse((when, _))| *when)
    }

    /// Bytes held by all objects.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// (objects, leases, connections with waits or leases, deadlines): for tests that check
    /// nothing leaks.
    #[cfg(test)]
    pub(crate) fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.by_name.len(),
            self.leases.len(),
            self.waits_of.len() + self.leases_of.len(),
            self.deadlines.len(),
        )
    }

    fn record(&mut self, record: impl FnOnce() -> ObjectRecord) {
        if self.persist {
            self.records.push(record());
        }
    }

    /// Loads what a previous controller stored.
    pub(crate) fn restore(&mut self, stored: Vec<store::StoredObject>) -> usize {
        let mut n = 0;
        for s in stored {
            if check_name(&s.name, "object name").is_err() {
                continue;
            }
            let mut object = Object::new(s.kind, 1);
            match &mut object.body {
                Body::Queue(q) => {
                    q.maxsize = s.maxsize;
                    for item in s.items {
                        object.bytes += item.data.len() as u64;
                        q.next_seq = q.next_seq.max(item.seq + 1);
                        q.items.push_back(Stored {
                            seq: item.seq,
                            format: item.format,
                            data: item.data,
                        });
                    }
                }
                Body::Namespace(ns) => {
                    for e in s.entries {
                        let value = Value {
                            format: e.format,
                            digest: e.digest,
                            data: e.data,
                        };
                        object.bytes += value.bytes(&e.key);
                        ns.insert(e.key, value);
                    }
                }
                Body::Event(ev) => ev.set = s.set,
                Body::Sem(_) => continue,
            }
            self.bytes += object.bytes;
            self.by_name.insert(s.name, object);
            n += 1;
        }
        n
    }

    /// Every object, by name.
    pub(crate) fn list(&self) -> Vec<ObjectInfo> {
        let mut list: Vec<ObjectInfo> = self.by_name.iter().map(|(name, o)| o.info(name)).collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// The object `name`, made as `kind` if new; refused if it is of another kind, or if
    /// there are too many objects.
    fn object(
        &mut self,
        name: &str,
        kind: ObjectKind,
        permits: u32,
    ) -> Result<&mut Object, Refusal> {
        if !self.by_name.contains_key(name) {
            if self.by_name.len() >= self.limits.max_objects {
                return refuse(
                    ObjectErrorKind::Limit,
                    format!(
                        "cannot make the {kind} {name:?}: there are {} objects already (objects_max in cluster.toml); remove some",
                        self.by_name.len()
                    ),
                );
            }
            self.by_name
                .insert(name.to_owned(), Object::new(kind, permits));
            match kind {
                ObjectKind::Queue | ObjectKind::Namespace | ObjectKind::Event => {
                    self.record(|| ObjectRecord::Put {
                        name: name.to_owned(),
                        kind,
                        maxsize: None,
                        set: false,
                    });
                }
                ObjectKind::Lock | ObjectKind::Semaphore => {}
            }
        }
        let object = self.by_name.get_mut(name).expect("just made");
        if object.kind != kind {
            return refuse(
                ObjectErrorKind::WrongKind,
                format!(
                    "{name:?} is a {}, not a {kind}; use another name for the {kind}",
                    object.kind
                ),
            );
        }
        if let Body::Sem(s) = &object.body {
            if kind == ObjectKind::Semaphore && s.permits != permits {
                return refuse(
                    ObjectErrorKind::Invalid,
                    format!(
                        "the semaphore {name:?} has {} permits, not {permits}; use the same number everywhere (or another name)",
                        s.permits
                    ),
                );
            }
        }
        Ok(object)
    }

    /// Whether `extra` more bytes fit in object `name` (holding `held`) and in the total.
    fn fits(&self, name: &str, kind: ObjectKind, held: u64, extra: u64) -> Result<(), Refusal> {
        if held + extra > self.limits.object_max_bytes {
            return refuse(
                ObjectErrorKind::Limit,
                format!(
                    "the {kind} {name:?} would hold {}, past its limit of {} (object_max_bytes in cluster.toml, or CLUSTER_OBJECT_MAX_BYTES); take items out or raise the limit",
                    mib(held + extra),
                    mib(self.limits.object_max_bytes)
                ),
            );
        }
        if self.bytes + extra > self.limits.objects_max_bytes {
            return refuse(
                ObjectErrorKind::Limit,
                format!(
                    "the shared objects would hold {} together, past their limit of {} (objects_max_bytes in cluster.toml, or CLUSTER_OBJECTS_MAX_BYTES); take items out or raise the limit",
                    mib(self.bytes + extra),
                    mib(self.limits.objects_max_bytes)
                ),
            );
        }
        Ok(())
    }

    fn token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// A waiter for `route`'s request `id` on `name`, its deadline armed.
    fn waiter(&mut self, route: &[u8], id: u64, name: &str, wait: Wait, now: Duration) -> Waiter {
        let token = self.token();
        if let Some(ms) = wait.timeout_ms {
            let due = Due::Wait {
                token,
                name: name.to_owned(),
            };
            self.deadlines.push(Reverse((
                now.saturating_add(Duration::from_millis(ms)),
                due,
            )));
        }
        self.waits_of
            .entry(route.to_vec())
            .or_default()
            .insert(token, name.to_owned());
        Waiter {
            route: route.to_vec(),
            id,
            token,
            since: now,
        }
    }

    /// `waiter` waits no more (served, timed out, removed).
    fn unwait(&mut self, waiter: &Waiter) {
        if let Some(waits) = self.waits_of.get_mut(&waiter.route) {
            waits.remove(&waiter.token);
            if waits.is_empty() {
                self.waits_of.remove(&waiter.route);
            }
        }
    }

    /// Handles one request from `route`; its answer (if it does not wait) and any others it
    /// causes go into `out`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn request(
        &mut self,
        route: &[u8],
        id: u64,
        name: &str,
        op: ObjectOp,
        payloads: Vec<Vec<u8>>,
        now: Duration,
        out: &mut Vec<Answer>,
    ) {
        let answer = |reply, payloads| Answer {
            route: route.to_vec(),
            id,
            reply,
            payloads,
        };
        let named = !matches!(op, ObjectOp::List | ObjectOp::Renew { .. });
        if named {
            if let Err(message) = check_name(name, "object name") {
                out.push(answer(
                    ObjectReply::Error {
                        kind: ObjectErrorKind::BadName,
                        message,
                    },
                    Vec::new(),
                ));
                return;
            }
        }
        let data = payloads.into_iter().next().map(Payload::new);
        match self.handle(route, id, name, op, data, now, out) {
            Ok(Some((reply, payloads))) => out.push(answer(reply, payloads)),
            Ok(None) => {}
            Err(Refusal(kind, message)) => {
                out.push(answer(ObjectReply::Error { kind, message }, Vec::new()))
            }
        }
    }

    /// The answer now (`None`: it waits), or the refusal.
    #[allow(clippy::too_many_arguments)]
    fn handle(
        &mut self,
        route: &[u8],
        id: u64,
        name: &str,
        op: ObjectOp,
        data: Option<Payload>,
        now: Duration,
        out: &mut Vec<Answer>,
    ) -> Result<Option<(ObjectReply, Vec<Payload>)>, Refusal> {
        let done = Ok(Some((ObjectReply::Done, Vec::new())));
        let flag = |value| Ok(Some((ObjectReply::Flag { value }, Vec::new())));
        match op {
            ObjectOp::QueuePut { format, wait } => {
                let data = data.unwrap_or_default();
                self.put(route, id, name, format, data, wait, now, out)
            }
            ObjectOp::QueueGet { wait } => self.get(route, id, name, wait, now, out),
            ObjectOp::QueueSize => {
                let (q, _) = body!(self, name, ObjectKind::Queue, 1, Queue);
                let len = q.items.len() as u64;
                Ok(Some((ObjectReply::Size { len }, Vec::new())))
            }
            ObjectOp::QueueSetMaxsize { maxsize } => {
                let maxsize = maxsize.filter(|&m| m > 0);
                let (q, _) = body!(self, name, ObjectKind::Queue, 1, Queue);
                q.maxsize = maxsize;
                self.record(|| ObjectRecord::Put {
                    name: name.to_owned(),
                    kind: ObjectKind::Queue,
                    maxsize,
                    set: false,
                });
                self.admit_putters(name, out);
                done
            }
            ObjectOp::NsSet {
                key,
                format,
                digest,
            } => {
                check_key(&key)?;
                let value = Value {
                    format,
                    digest,
                    data: data.unwrap_or_default(),
                };
                self.ns_put(name, key, Some(value))?;
                done
            }
            ObjectOp::NsGet { key } => {
                check_key(&key)?;
                let (ns, _) = body!(self, name, ObjectKind::Namespace, 1, Namespace);
                Ok(Some(match ns.get(&key) {
                    Some(v) => (
                        ObjectReply::Value {
                            format: Some(v.format),
                        },
                        vec![v.data.clone()],
                    ),
                    None => (ObjectReply::Value { format: None }, Vec::new()),
                }))
            }
            ObjectOp::NsDelete { key } => {
                check_key(&key)?;
                body!(self, name, ObjectKind::Namespace, 1, Namespace);
                flag(self.ns_put(name, key, None)?)
            }
            ObjectOp::NsKeys => {
                let (ns, _) = body!(self, name, ObjectKind::Namespace, 1, Namespace);
                let keys = ns.keys().cloned().collect();
                Ok(Some((ObjectReply::Keys { keys }, Vec::new())))
            }
            ObjectOp::NsCompareAndSet { key, expected, new } => {
                check_key(&key)?;
                let (ns, _) = body!(self, name, ObjectKind::Namespace, 1, Namespace);
                let now_digest = ns.get(&key).map(|v| v.digest.as_slice());
                if now_digest != expected.as_deref() {
                    return flag(false);
                }
                let value = new.map(|n| Value {
                    format: n.format,
                    digest: n.digest,
                    data: data.unwrap_or_default(),
                });
                self.ns_put(name, key, value)?;
                flag(true)
            }
            ObjectOp::Acquire {
                permits,
                wait,
                lease_ms,
            } => {
                let (kind, n) = match permits {
                    None => (ObjectKind::Lock, 1),
                    Some(0) => {
                        return refuse(
                            ObjectErrorKind::Invalid,
                            format!("the semaphore {name:?} needs at least 1 permit"),
                        )
                    }
                    Some(n) => (ObjectKind::Semaphore, n),
                };
                let length = Duration::from_millis(lease_ms).clamp(MIN_LEASE, MAX_LEASE);
                self.acquire(route, id, name, kind, n, wait, length, now)
            }
            ObjectOp::Release { lease } => {
                match self.leases.get(&lease) {
                    Some(l) if l.route == route && l.name == name => {}
                    _ => {
                        return refuse(
                            ObjectErrorKind::UnknownLease,
                            format!(
                                "lease {lease} of {name:?} is not held by this client (it ran out, was released, or was freed while the client was unreachable)"
                            ),
                        )
                    }
                }
                self.drop_lease(lease, now, out);
                done
            }
            ObjectOp::Renew { leases } => {
                let lost = leases
                    .into_iter()
                    .filter_map(|r| (!self.renew(route, &r, now)).then_some(r.lease))
                    .collect();
                Ok(Some((ObjectReply::Renewed { lost }, Vec::new())))
            }
            ObjectOp::EventSet | ObjectOp::EventClear => {
                let set = op == ObjectOp::EventSet;
                let (ev, _) = body!(self, name, ObjectKind::Event, 1, Event);
                let changed = ev.set != set;
                ev.set = set;
                let woken: Vec<Waiter> = if set {
                    ev.waiters.drain(..).collect()
                } else {
                    Vec::new()
                };
                for w in woken {
                    self.unwait(&w);
                    out.push(Answer {
                        route: w.route,
                        id: w.id,
                        reply: ObjectReply::Flag { value: true },
                        payloads: Vec::new(),
                    });
                }
                if changed {
                    self.record(|| ObjectRecord::Put {
                        name: name.to_owned(),
                        kind: ObjectKind::Event,
                        maxsize: None,
                        set,
                    });
                }
                done
            }
            ObjectOp::EventIsSet => {
                let (ev, _) = body!(self, name, ObjectKind::Event, 1, Event);
                flag(ev.set)
            }
            ObjectOp::EventWait { wait } => {
                let (ev, _) = body!(self, name, ObjectKind::Event, 1, Event);
                if ev.set {
                    return flag(true);
                }
                if wait.nowait || wait.timeout_ms == Some(0) {
                    return flag(false);
                }
                let w = self.waiter(route, id, name, wait, now);
                let (ev, _) = body!(self, name, ObjectKind::Event, 1, Event);
                ev.waiters.push_back(w);
                Ok(None)
            }
            ObjectOp::List => Ok(Some((
                ObjectReply::Objects {
                    objects: self.list(),
                },
                Vec::new(),
            ))),
            ObjectOp::Remove => flag(self.remove(name, out)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        route: &[u8],
        id: u64,
        name: &str,
        format: ItemFormat,
        data: Payload,
        wait: Wait,
        now: Duration,
        out: &mut Vec<Answer>,
    ) -> Result<Option<(ObjectReply, Vec<Payload>)>, Refusal> {
        let size = data.len() as u64;
        // Checked before the queue is made, so that a refused put leaves nothing behind.
        let held = self.by_name.get(name).map_or(0, |o| o.bytes);
        self.fits(name, ObjectKind::Queue, held, size)?;
        let (q, _) = body!(self, name, ObjectKind::Queue, 1, Queue);
        if let Some(getter) = q.getters.pop_front() {
            // Straight to the first getter: the item never sits in the queue.
            self.unwait(&getter);
            out.push(Answer {
                route: getter.route,
                id: getter.id,
                reply: ObjectReply::Item { format },
                payloads: vec![data],
            });
            return Ok(Some((ObjectReply::Done, Vec::new())));
        }
        if q.full() || !q.putters.is_empty() {
            if wait.nowait {
                return refuse(ObjectErrorKind::Full, format!("queue {name:?} is full"));
            }
            if wait.timeout_ms == Some(0) {
                return refuse(
                    ObjectErrorKind::Timeout,
                    format!("queue {name:?} is full ({} items)", q.items.len()),
                );
            }
            let w = self.waiter(route, id, name, wait, now);
            let (q, bytes) = body!(self, name, ObjectKind::Queue, 1, Queue);
            q.putters.push_back((w, format, data));
            *bytes += size;
            self.bytes += size;
            return Ok(None);
        }
        self.push(name, format, data);
        Ok(Some((ObjectReply::Done, Vec::new())))
    }

    /// Appends an item to queue `name` (which has room).
    fn push(&mut self, name: &str, format: ItemFormat, data: Payload) {
        let Some(Object {
            bytes,
            body: Body::Queue(q),
            ..
        }) = self.by_name.get_mut(name)
        else {
            return;
        };
        let seq = q.next_seq;
        q.next_seq += 1;
        let size = data.len() as u64;
        *bytes += size;
        self.bytes += size;
        q.items.push_back(Stored {
            seq,
            format,
            data: data.clone(),
        });
        self.record(|| ObjectRecord::Pushed {
            name: name.to_owned(),
            seq,
            format,
            data,
        });
    }

    fn get(
        &mut self,
        route: &[u8],
        id: u64,
        name: &str,
        wait: Wait,
        now: Duration,
        out: &mut Vec<Answer>,
    ) -> Result<Option<(ObjectReply, Vec<Payload>)>, Refusal> {
        let (q, bytes) = body!(self, name, ObjectKind::Queue, 1, Queue);
        if let Some(item) = q.items.pop_front() {
            let size = item.data.len() as u64;
            *bytes -= size;
            self.bytes -= size;
            let seq = item.seq;
            self.record(|| ObjectRecord::Popped {
                name: name.to_owned(),
                seq,
            });
            self.admit_putters(name, out);
            return Ok(Some((
                ObjectReply::Item {
                    format: item.format,
                },
                vec![item.data],
            )));
        }
        if wait.nowait {
            return refuse(ObjectErrorKind::Empty, format!("queue {name:?} is empty"));
        }
        if wait.timeout_ms == Some(0) {
            return refuse(ObjectErrorKind::Timeout, format!("queue {name:?} is empty"));
        }
        let w = self.waiter(route, id, name, wait, now);
        let (q, _) = body!(self, name, ObjectKind::Queue, 1, Queue);
        q.getters.push_back(w);
        Ok(None)
    }

    /// Moves waiting puts into queue `name` while it has room, answering them.
    fn admit_putters(&mut self, name: &str, out: &mut Vec<Answer>) {
        loop {
            let Some(Object {
                bytes,
                body: Body::Queue(q),
                ..
            }) = self.by_name.get_mut(name)
            else {
                return;
            };
            if q.full() {
                return;
            }
            let Some((w, format, data)) = q.putters.pop_front() else {
                return;
            };
            // Its bytes were counted while it waited; `push` counts them again.
            let size = data.len() as u64;
            *bytes -= size;
            self.bytes -= size;
            self.unwait(&w);
            self.push(name, format, data);
            out.push(Answer {
                route: w.route,
                id: w.id,
                reply: ObjectReply::Done,
                payloads: Vec::new(),
            });
        }
    }

    /// Sets (`Some`) or deletes (`None`) `key` of namespace `name` (which exists); true if
    /// the key was there.
    fn ns_put(&mut self, name: &str, key: String, value: Option<Value>) -> Result<bool, Refusal> {
        let (held, old) = match self.by_name.get(name) {
            Some(Object {
                bytes,
                body: Body::Namespace(ns),
                ..
            }) => (*bytes, ns.get(&key).map_or(0, |v| v.bytes(&key))),
            _ => (0, 0),
        };
        if let Some(v) = &value {
            let new = v.bytes(&key);
            if new > old {
                self.fits(name, ObjectKind::Namespace, held, new - old)?;
            }
        }
        body!(self, name, ObjectKind::Namespace, 1, Namespace);
        let Some(Object {
            bytes,
            body: Body::Namespace(ns),
            ..
        }) = self.by_name.get_mut(name)
        else {
            return Ok(false);
        };
        let new = value.as_ref().map_or(0, |v| v.bytes(&key));
        *bytes = *bytes - old + new;
        self.bytes = self.bytes - old + new;
        let existed = match value {
            Some(v) => {
                let record = ObjectRecord::Set {
                    name: name.to_owned(),
                    key: key.clone(),
                    format: v.format,
                    digest: v.digest.clone(),
                    data: v.data.clone(),
                };
                let existed = ns.insert(key, v).is_some();
                self.record(|| record);
                existed
            }
            None => {
                let existed = ns.remove(&key).is_some();
                if existed {
                    self.record(|| ObjectRecord::Deleted {
                        name: name.to_owned(),
                        key,
                    });
                }
                existed
            }
        };
        Ok(existed)
    }

    #[allow(clippy::too_many_arguments)]
    fn acquire(
        &mut self,
        route: &[u8],
        id: u64,
        name: &str,
        kind: ObjectKind,
        permits: u32,
        wait: Wait,
        length: Duration,
        now: Duration,
    ) -> Result<Option<(ObjectReply, Vec<Payload>)>, Refusal> {
        let (s, _) = body!(self, name, kind, permits, Sem);
        if (s.holders.len() as u64) < u64::from(s.permits) && s.waiters.is_empty() {
            let lease = self.grant(route, name, length, now);
            return Ok(Some((lease, Vec::new())));
        }
        if wait.nowait || wait.timeout_ms == Some(0) {
            let what = if kind == ObjectKind::Lock {
                format!("the lock {name:?} is held")
            } else {
                format!("the {} permits of semaphore {name:?} are held", s.permits)
            };
            return refuse(ObjectErrorKind::Timeout, what);
        }
        let w = self.waiter(route, id, name, wait, now);
        let (s, _) = body!(self, name, kind, permits, Sem);
        s.waiters.push_back((w, length));
        Ok(None)
    }

    /// A new lease on `name` (a lock or semaphore with a free permit) for `route`.
    fn grant(&mut self, route: &[u8], name: &str, length: Duration, now: Duration) -> ObjectReply {
        let lease = loop {
            let l = LeaseId(self.rng.random::<u64>() | 1);
            if !self.leases.contains_key(&l) {
                break l;
            }
        };
        self.hold(route, name, lease, length, now);
        ObjectReply::Lease {
            lease,
            lease_ms: u64::try_from(length.as_millis()).unwrap_or(u64::MAX),
        }
    }

    fn hold(&mut self, route: &[u8], name: &str, lease: LeaseId, length: Duration, now: Duration) {
        if let Some(Object {
            body: Body::Sem(s), ..
        }) = self.by_name.get_mut(name)
        {
            s.holders.insert(lease);
        }
        let expires = now + length;
        self.leases.insert(
            lease,
            Lease {
                name: name.to_owned(),
                route: route.to_vec(),
                length,
                expires,
            },
        );
        self.leases_of
            .entry(route.to_vec())
            .or_default()
            .insert(lease);
        self.deadlines.push(Reverse((expires, Due::Lease(lease))));
    }

    /// Renews (or, after a controller restart, takes back) one lease; false if it is lost.
    fn renew(&mut self, route: &[u8], r: &Renewal, now: Duration) -> bool {
        let length = Duration::from_millis(r.lease_ms).clamp(MIN_LEASE, MAX_LEASE);
        if let Some(l) = self.leases.get_mut(&r.lease) {
            if l.route != route {
                return false;
            }
            l.expires = now + l.length;
            let expires = l.expires;
            self.deadlines.push(Reverse((expires, Due::Lease(r.lease))));
            return true;
        }
        // Not known: taken back if its object is free (a restarted controller, or a
        // connection that came back before anybody else wanted the lock).
        if !matches!(r.kind, ObjectKind::Lock | ObjectKind::Semaphore)
            || check_name(&r.name, "object name").is_err()
        {
            return false;
        }
        let permits = if r.kind == ObjectKind::Lock {
            1
        } else {
            r.permits.max(1)
        };
        let Ok(object) = self.object(&r.name, r.kind, permits) else {
            return false;
        };
        let Body::Sem(s) = &object.body else {
            return false;
        };
        if (s.holders.len() as u64) >= u64::from(s.permits) || !s.waiters.is_empty() {
            return false;
        }
        tracing::info!(
            "lease {} on {} {:?} taken back by its holder",
            r.lease,
            r.kind,
            r.name
        );
        self.hold(route, &r.name, r.lease, length, now);
        true
    }

    /// Ends `lease` (released, run out, or its client gone), granting the permit to the next
    /// waiter.
    fn drop_lease(&mut self, lease: LeaseId, now: Duration, out: &mut Vec<Answer>) {
        let Some(l) = self.leases.remove(&lease) else {
            return;
        };
        if let Some(held) = self.leases_of.get_mut(&l.route) {
            held.remove(&lease);
            if held.is_empty() {
                self.leases_of.remove(&l.route);
            }
        }
        let Some(Object {
            body: Body::Sem(s), ..
        }) = self.by_name.get_mut(&l.name)
        else {
            return;
        };
        s.holders.remove(&lease);
        self.serve_acquirers(&l.name, now, out);
    }

    /// Grants free permits of `name` to its waiters, in order.
    fn serve_acquirers(&mut self, name: &str, now: Duration, out: &mut Vec<Answer>) {
        loop {
            let Some(Object {
                body: Body::Sem(s), ..
            }) = self.by_name.get_mut(name)
            else {
                return;
            };
            if (s.holders.len() as u64) >= u64::from(s.permits) {
                return;
            }
            let Some((w, length)) = s.waiters.pop_front() else {
                return;
            };
            self.unwait(&w);
            let reply = self.grant(&w.route, name, length, now);
            out.push(Answer {
                route: w.route,
                id: w.id,
                reply,
                payloads: Vec::new(),
            });
        }
    }

    /// Removes object `name`: its waiters are told; true if it existed.
    fn remove(&mut self, name: &str, out: &mut Vec<Answer>) -> bool {
        let Some(object) = self.by_name.remove(name) else {
            return false;
        };
        self.bytes -= object.bytes;
        let waiters: Vec<Waiter> = match object.body {
            Body::Queue(q) => q
                .getters
                .into_iter()
                .chain(q.putters.into_iter().map(|(w, ..)| w))
                .collect(),
            Body::Namespace(_) => Vec::new(),
            Body::Sem(s) => {
                for lease in s.holders {
                    if let Some(l) = self.leases.remove(&lease) {
                        if let Some(held) = self.leases_of.get_mut(&l.route) {
                            held.remove(&lease);
                            if held.is_empty() {
                                self.leases_of.remove(&l.route);
                            }
                        }
                    }
                }
                s.waiters.into_iter().map(|(w, _)| w).collect()
            }
            Body::Event(e) => e.waiters.into_iter().collect(),
        };
        for w in waiters {
            self.unwait(&w);
            out.push(Answer {
                route: w.route,
                id: w.id,
                reply: ObjectReply::Error {
                    kind: ObjectErrorKind::Removed,
                    message: format!(
                        "the {} {name:?} was removed while this request waited",
                        object.kind
                    ),
                },
                payloads: Vec::new(),
            });
        }
        if matches!(
            object.kind,
            ObjectKind::Queue | ObjectKind::Namespace | ObjectKind::Event
        ) {
            self.record(|| ObjectRecord::Removed {
                name: name.to_owned(),
            });
        }
        true
    }

    /// The connection `route` left (goodbye, closed): its waits end unanswered, its leases
    /// are freed (and granted to the next waiters).
    pub(crate) fn client_gone(&mut self, route: &[u8], now: Duration, out: &mut Vec<Answer>) {
        if let Some(waits) = self.waits_of.remove(route) {
            for (token, name) in waits {
                self.cancel_wait(&name, token, now, out);
            }
        }
        if let Some(leases) = self.leases_of.remove(route) {
            let mut leases: Vec<LeaseId> = leases.into_iter().collect();
            leases.sort_unstable();
            for lease in leases {
                self.drop_lease(lease, now, out);
            }
        }
    }

    /// Takes the waiter `token` out of object `name`; its answer, if `timeout` (else it is
    /// dropped). Freed room or permits go to the next waiters.
    fn take_waiter(&mut self, name: &str, token: u64) -> Option<(Waiter, ObjectKind, bool)> {
        let object = self.by_name.get_mut(name)?;
        let kind = object.kind;
        match &mut object.body {
            Body::Queue(q) => {
                if let Some(i) = q.getters.iter().position(|w| w.token == token) {
                    return q.getters.remove(i).map(|w| (w, kind, false));
                }
                let i = q.putters.iter().position(|(w, ..)| w.token == token)?;
                let (w, _, data) = q.putters.remove(i)?;
                let size = data.len() as u64;
                object.bytes -= size;
                self.bytes -= size;
                Some((w, kind, true))
            }
            Body::Sem(s) => {
                let i = s.waiters.iter().position(|(w, _)| w.token == token)?;
                s.waiters.remove(i).map(|(w, _)| (w, kind, false))
            }
            Body::Event(e) => {
                let i = e.waiters.iter().position(|w| w.token == token)?;
                e.waiters.remove(i).map(|w| (w, kind, false))
            }
            Body::Namespace(_) => None,
        }
    }

    fn cancel_wait(&mut self, name: &str, token: u64, now: Duration, out: &mut Vec<Answer>) {
        if let Some((_, kind, _)) = self.take_waiter(name, token) {
            // A waiter that left the head of a line lets the next ones be served.
            if matches!(kind, ObjectKind::Lock | ObjectKind::Semaphore) {
                self.serve_acquirers(name, now, out);
            }
        }
    }

    /// Ends the waits and leases due at `now`.
    pub(crate) fn expire(&mut self, now: Duration, out: &mut Vec<Answer>) {
        while let Some(Reverse((when, _))) = self.deadlines.peek() {
            if *when > now {
                break;
            }
            let Some(Reverse((when, due))) = self.deadlines.pop() else {
                break;
            };
            match due {
                Due::Wait { token, name } => self.wait_expired(&name, token, now, out),
                Due::Lease(lease) => {
                    let Some(l) = self.leases.get(&lease) else {
                        continue;
                    };
                    if l.expires > when {
                        continue; // renewed since
                    }
                    tracing::warn!(
                        "lease {lease} on {:?} ran out (its holder did not renew it for {}); freeing it",
                        l.name,
                        secs(l.length)
                    );
                    self.drop_lease(lease, now, out);
                }
            }
        }
    }

    fn wait_expired(&mut self, name: &str, token: u64, now: Duration, out: &mut Vec<Answer>) {
        let Some((w, kind, putter)) = self.take_waiter(name, token) else {
            return; // served already
        };
        self.unwait(&w);
        let waited = secs(now.saturating_sub(w.since));
        let reply = match kind {
            ObjectKind::Event => ObjectReply::Flag { value: false },
            ObjectKind::Queue if putter => ObjectReply::Error {
                kind: ObjectErrorKind::Timeout,
                message: format!("queue {name:?} stayed full for {waited}"),
            },
            ObjectKind::Queue => ObjectReply::Error {
                kind: ObjectErrorKind::Timeout,
                message: format!("no item came in queue {name:?} within {waited}"),
            },
            _ => ObjectReply::Error {
                kind: ObjectErrorKind::Timeout,
                message: format!("the {kind} {name:?} stayed held by others for {waited}"),
            },
        };
        out.push(Answer {
            route: w.route,
            id: w.id,
            reply,
            payloads: Vec::new(),
        });
        if matches!(kind, ObjectKind::Lock | ObjectKind::Semaphore) {
            self.serve_acquirers(name, now, out);
        }
    }
}

fn check_key(key: &str) -> Result<(), Refusal> {
    check_name(key, "key").map_err(|m| Refusal(ObjectErrorKind::BadName, m))
}
