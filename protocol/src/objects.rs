//! Shared objects: named queues, namespaces, locks, semaphores and events that live in the
//! controller ([`FromClient::Object`](crate::FromClient::Object) and
//! [`ToClient::Object`](crate::ToClient::Object)).
//!
//! A request names its object and says what to do ([`ObjectOp`]); the controller creates the
//! object on first use, with the kind the operation implies, and answers with the request's
//! `id` ([`ObjectReply`]). Blocking operations (a `get` on an empty queue, a `put` on a full
//! one, an `acquire`, an event's `wait`) are answered when they are served or when their
//! timeout ends, so a client may have many requests out at once; answers come back in any
//! order and are matched by `id`.
//!
//! **Payloads.** An item (a queue's element, a namespace's value) travels as one payload frame,
//! opaque to the controller (sealed end to end when the cluster encrypts), with its
//! [`ItemFormat`] in the content: `msgpack` (Rust, the CLI), `pickle` (Python) or raw `bytes`.
//! A namespace value also carries a `digest` of its plain bytes (SHA-256 of the format's name,
//! a zero byte and the data, computed by the client), which compare-and-set compares, since the
//! controller cannot compare sealed bytes. Which payload frame belongs to what is said by each
//! operation.
//!
//! **Leases.** A lock or semaphore permit is held under a lease ([`LeaseId`]) that its
//! holder's client renews ([`ObjectOp::Renew`]); the controller frees it when the lease runs
//! out, when the holder's client says goodbye, or when its connection closes.

use serde::{Deserialize, Serialize};

/// Longest object name, in bytes (namespace keys have the same limit).
pub const MAX_OBJECT_NAME: usize = 256;

/// The namespace that [`Namespace`](ObjectKind::Namespace) users share unless they name
/// another.
pub const DEFAULT_NAMESPACE: &str = "default";

/// How an item's bytes are encoded. The controller never decodes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemFormat {
    /// A msgpack value with named fields (Rust's typed API, the CLI).
    Msgpack,
    /// A Python pickle (the Python API); other languages cannot read it.
    Pickle,
    /// Plain bytes, for callers that encode their own way.
    Bytes,
}

impl ItemFormat {
    /// `msgpack`, `pickle` or `bytes`.
    pub fn name(self) -> &'static str {
        match self {
            ItemFormat::Msgpack => "msgpack",
            ItemFormat::Pickle => "pickle",
            ItemFormat::Bytes => "bytes",
        }
    }
}

impl std::fmt::Display for ItemFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an object is. Fixed when it is created: an operation of another kind on its name is
/// refused with [`ObjectErrorKind::WrongKind`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectKind {
    /// A FIFO queue of items, optionally bounded.
    Queue,
    /// Keys to items.
    Namespace,
    /// A lock (one holder at a time).
    Lock,
    /// A semaphore of n permits.
    Semaphore,
    /// A flag that waiters wait to see set.
    Event,
}

impl ObjectKind {
    /// `queue`, `namespace`, `lock`, `semaphore` or `event`.
    pub fn name(self) -> &'static str {
        match self {
            ObjectKind::Queue => "queue",
            ObjectKind::Namespace => "namespace",
            ObjectKind::Lock => "lock",
            ObjectKind::Semaphore => "semaphore",
            ObjectKind::Event => "event",
        }
    }
}

impl std::fmt::Display for ObjectKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The id of a held lease (a lock, or one permit of a semaphore). Made by the controller,
/// random, so that a restarted controller's leases do not collide with its predecessor's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct LeaseId(pub u64);

impl std::fmt::Display for LeaseId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// A request about one object: [`FromClient::Object`](crate::FromClient::Object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRequest {
    /// Chosen by the client, unique among its requests; the answer carries it back.
    pub id: u64,
    /// The object's name (empty for [`ObjectOp::List`] and [`ObjectOp::Renew`]): 1 to
    /// [`MAX_OBJECT_NAME`] bytes, no control characters.
    #[serde(default)]
    pub name: String,
    /// What to do.
    pub op: ObjectOp,
}

/// How long a blocking operation may wait: `timeout_ms: None` waits until served (or the
/// client leaves), `nowait` does not wait at all (and fails with `Empty`/`Full`/`Timeout`
/// at once), else the wait ends with [`ObjectErrorKind::Timeout`] after `timeout_ms`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Wait {
    /// Longest wait in milliseconds (`None`: no limit).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Do not wait at all.
    #[serde(default)]
    pub nowait: bool,
}

/// One renewal in [`ObjectOp::Renew`]: enough for a restarted controller to take the lease
/// back when nobody else holds its object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Renewal {
    /// The lease.
    pub lease: LeaseId,
    /// Its object.
    pub name: String,
    /// `lock` or `semaphore`.
    pub kind: ObjectKind,
    /// The semaphore's permits (1 for a lock).
    #[serde(default = "one")]
    pub permits: u32,
    /// The lease's length.
    pub lease_ms: u64,
}

fn one() -> u32 {
    1
}

/// What to do with an object. Unit variants encode as their name (`"queue_size"`), the
/// others as a map of one key (`{"queue_put": {...}}`), like every message of the protocol.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectOp {
    /// Appends the item in payload frame 0 to the queue; waits while the queue is full.
    /// Answer: [`ObjectReply::Done`], or `Full` (nowait) / `Timeout`.
    QueuePut {
        /// The item's format.
        format: ItemFormat,
        /// How long to wait while the queue is full.
        #[serde(default)]
        wait: Wait,
    },
    /// Takes the queue's oldest item; waits while it is empty. Answer: [`ObjectReply::Item`],
    /// or `Empty` (nowait) / `Timeout`.
    QueueGet {
        /// How long to wait while the queue is empty.
        #[serde(default)]
        wait: Wait,
    },
    /// Answer: [`ObjectReply::Size`] (items in the queue).
    QueueSize,
    /// Sets (or with `None` lifts) the queue's bound on items; creates the queue if needed.
    /// Puts beyond it wait. Answer: [`ObjectReply::Done`].
    QueueSetMaxsize {
        /// Most items the queue holds.
        #[serde(default)]
        maxsize: Option<u64>,
    },
    /// Sets `key` to the item in payload frame 0. Answer: [`ObjectReply::Done`].
    NsSet {
        /// The key (same rules as object names).
        key: String,
        /// The item's format.
        format: ItemFormat,
        /// Digest of the item (see the module's documentation).
        #[serde(default, with = "serde_bytes")]
        digest: Vec<u8>,
    },
    /// Answer: [`ObjectReply::Value`], with the item in payload frame 0 when found.
    NsGet {
        /// The key.
        key: String,
    },
    /// Removes `key`. Answer: [`ObjectReply::Flag`] (true if it was there).
    NsDelete {
        /// The key.
        key: String,
    },
    /// Answer: [`ObjectReply::Keys`], sorted.
    NsKeys,
    /// Sets `key` to `new` (or removes it when `new` is `None`) if its value now is
    /// `expected` (compared by digest; `None`: the key is absent). Payload frame 0 is the new
    /// item when `new` is given. Answer: [`ObjectReply::Flag`] (true if it was set).
    NsCompareAndSet {
        /// The key.
        key: String,
        /// Digest of the value expected now (`None`: expected absent).
        #[serde(default, with = "serde_bytes")]
        expected: Option<Vec<u8>>,
        /// Format and digest of the new value (`None`: remove the key).
        #[serde(default)]
        new: Option<NewValue>,
    },
    /// Takes the lock `name`, or one permit of the semaphore `name` when `permits` is given
    /// (created with that many permits on first use; a later use with another number is
    /// refused). Served first come first served. Answer: [`ObjectReply::Lease`], or `Timeout`
    /// (also for nowait).
    Acquire {
        /// `None`: a lock; `Some(n)`: a semaphore of `n` permits.
        #[serde(default)]
        permits: Option<u32>,
        /// How long to wait.
        #[serde(default)]
        wait: Wait,
        /// The lease's length: the holder's client renews it well before.
        lease_ms: u64,
    },
    /// Gives a lease back. Answer: [`ObjectReply::Done`], or `UnknownLease`.
    Release {
        /// The lease.
        lease: LeaseId,
    },
    /// Extends leases by their length from now. Answer: [`ObjectReply::Renewed`] listing
    /// those the controller no longer holds for this client (and could not take back).
    Renew {
        /// The leases.
        leases: Vec<Renewal>,
    },
    /// Sets the event, waking every waiter. Answer: [`ObjectReply::Done`].
    EventSet,
    /// Clears the event. Answer: [`ObjectReply::Done`].
    EventClear,
    /// Answer: [`ObjectReply::Flag`].
    EventIsSet,
    /// Waits until the event is set. Answer: [`ObjectReply::Flag`]: true once set, false when
    /// the wait timed out (not an error, as in Python's `Event.wait`).
    EventWait {
        /// How long to wait.
        #[serde(default)]
        wait: Wait,
    },
    /// Every object. Answer: [`ObjectReply::Objects`].
    List,
    /// Deletes the object `name` (its items, its waiters get `Removed`). Answer:
    /// [`ObjectReply::Flag`] (true if it existed).
    Remove,
}

/// The new value of a compare-and-set (its bytes are payload frame 0).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewValue {
    /// Its format.
    pub format: ItemFormat,
    /// Its digest.
    #[serde(with = "serde_bytes")]
    pub digest: Vec<u8>,
}

/// The answer to an [`ObjectRequest`]: [`ToClient::Object`](crate::ToClient::Object).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectReply {
    /// Done.
    Done,
    /// An item, in payload frame 0.
    Item {
        /// Its format.
        format: ItemFormat,
    },
    /// A namespace value: in payload frame 0 when `format` is given.
    Value {
        /// Its format (`None`: no such key).
        #[serde(default)]
        format: Option<ItemFormat>,
    },
    /// A count.
    Size {
        /// Items.
        len: u64,
    },
    /// A yes or no.
    Flag {
        /// The answer.
        value: bool,
    },
    /// Namespace keys.
    Keys {
        /// Sorted.
        keys: Vec<String>,
    },
    /// A lease now held.
    Lease {
        /// Its id (for release and renewal).
        lease: LeaseId,
        /// Its length as granted.
        lease_ms: u64,
    },
    /// Answer to [`ObjectOp::Renew`].
    Renewed {
        /// Leases not held (expired, released, or freed while the client was gone).
        lost: Vec<LeaseId>,
    },
    /// Answer to [`ObjectOp::List`].
    Objects {
        /// By name.
        objects: Vec<ObjectInfo>,
    },
    /// The request failed.
    Error {
        /// Which way.
        kind: ObjectErrorKind,
        /// In words, naming the object.
        message: String,
    },
}

/// Why an object request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ObjectErrorKind {
    /// A nowait get found the queue empty.
    Empty,
    /// A nowait put found the queue full.
    Full,
    /// The wait ran out.
    Timeout,
    /// The name is an object of another kind.
    WrongKind,
    /// The name (or key) is empty, too long or has control characters.
    BadName,
    /// The object or all objects together would pass their byte limit
    /// (`object_max_bytes`, `objects_max_bytes`), or there are too many objects.
    Limit,
    /// The lease is not held (expired, released, or never granted).
    UnknownLease,
    /// The request is not valid (a semaphore of 0 permits, another permit count...).
    Invalid,
    /// The object was removed while the request waited.
    Removed,
}

impl ObjectErrorKind {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            ObjectErrorKind::Empty => "empty",
            ObjectErrorKind::Full => "full",
            ObjectErrorKind::Timeout => "timeout",
            ObjectErrorKind::WrongKind => "wrong_kind",
            ObjectErrorKind::BadName => "bad_name",
            ObjectErrorKind::Limit => "limit",
            ObjectErrorKind::UnknownLease => "unknown_lease",
            ObjectErrorKind::Invalid => "invalid",
            ObjectErrorKind::Removed => "removed",
        }
    }
}

/// One object as [`ObjectOp::List`] and `cluster status` report it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectInfo {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: ObjectKind,
    /// Items (queue), keys (namespace), leases held (lock, semaphore), 1 or 0 (event: set
    /// or not).
    pub len: u64,
    /// Bytes of its items and keys.
    pub bytes: u64,
    /// Requests waiting on it (getters and putters, acquirers, event waiters).
    #[serde(default)]
    pub waiters: u64,
    /// A queue's bound on items.
    #[serde(default)]
    pub maxsize: Option<u64>,
    /// A semaphore's permits.
    #[serde(default)]
    pub permits: Option<u32>,
}

/// Checks an object name or namespace key: 1 to [`MAX_OBJECT_NAME`] bytes, no control
/// characters. The error says what is wrong, naming `what` (`"object name"`, `"key"`).
pub fn check_name(name: &str, what: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("the {what} is empty"));
    }
    if name.len() > MAX_OBJECT_NAME {
        return Err(format!(
            "the {what} {:?}... is {} bytes long; at most {MAX_OBJECT_NAME} are allowed",
            name.chars().take(32).collect::<String>(),
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(format!(
            "the {what} {name:?} has control characters; use printable ones"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{decode, encode, FromClient, MessageType, ToClient};

    #[test]
    fn names_are_checked() {
        assert!(check_name("jobs", "object name").is_ok());
        assert!(check_name("a/b c-ü", "key").is_ok());
        assert!(check_name("", "object name").unwrap_err().contains("empty"));
        let long = "x".repeat(MAX_OBJECT_NAME + 1);
        assert!(check_name(&long, "key").unwrap_err().contains("257 bytes"));
        assert!(check_name(&"x".repeat(MAX_OBJECT_NAME), "key").is_ok());
        assert!(check_name("a\nb", "object name")
            .unwrap_err()
            .contains("control"));
    }

    #[test]
    fn requests_and_replies_round_trip() {
        let ops = [
            ObjectOp::QueuePut {
                format: ItemFormat::Pickle,
                wait: Wait {
                    timeout_ms: Some(5),
                    nowait: false,
                },
            },
            ObjectOp::QueueGet {
                wait: Wait::default(),
            },
            ObjectOp::QueueSize,
            ObjectOp::NsCompareAndSet {
                key: "k".into(),
                expected: Some(vec![1, 2]),
                new: Some(NewValue {
                    format: ItemFormat::Msgpack,
                    digest: vec![3],
                }),
            },
            ObjectOp::Acquire {
                permits: Some(3),
                wait: Wait::default(),
                lease_ms: 10_000,
            },
            ObjectOp::Renew {
                leases: vec![Renewal {
                    lease: LeaseId(9),
                    name: "l".into(),
                    kind: ObjectKind::Lock,
                    permits: 1,
                    lease_ms: 10,
                }],
            },
            ObjectOp::List,
        ];
        for op in ops {
            let msg = FromClient::Object(ObjectRequest {
                id: 7,
                name: "jobs".into(),
                op,
            });
            assert_eq!(msg.msg_type(), "object");
            assert_eq!(decode::<FromClient>(&encode(&msg).unwrap()).unwrap(), msg);
        }
        let reply = ToClient::Object {
            id: 7,
            reply: ObjectReply::Error {
                kind: ObjectErrorKind::WrongKind,
                message: "no".into(),
            },
        };
        assert_eq!(reply.msg_type(), "object");
        assert_eq!(decode::<ToClient>(&encode(&reply).unwrap()).unwrap(), reply);
    }

    /// Pins the encoding for other-language clients.
    #[test]
    fn golden_frames() {
        let get = FromClient::Object(ObjectRequest {
            id: 1,
            name: "q".into(),
            op: ObjectOp::QueueGet {
                wait: Wait {
                    timeout_ms: None,
                    nowait: true,
                },
            },
        });
        assert_eq!(
            hex::encode(encode(&get).unwrap()),
            "81a66f626a65637483a2696401a46e616d65a171a26f7081a971756575655f67657481a4776169748\
             2aa74696d656f75745f6d73c0a66e6f77616974c3"
                .replace(' ', "")
        );
        let size = ObjectOp::QueueSize;
        assert_eq!(
            hex::encode(encode(&size).unwrap()),
            "aa71756575655f73697a65"
        );
        let item = ToClient::Object {
            id: 1,
            reply: ObjectReply::Item {
                format: ItemFormat::Msgpack,
            },
        };
        assert_eq!(
            hex::encode(encode(&item).unwrap()),
            "81a66f626a65637482a2696401a57265706c7981a46974656d81a6666f726d6174a76d73677061636b"
        );
    }
}
