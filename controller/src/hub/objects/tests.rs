//! The shared objects' rules on the fake clock: every operation, blocking and timeouts, FIFO
//! fairness, leases (expiry, release on goodbye and disconnect, taking back), limits, bad
//! names and wrong kinds, and the store records.

use super::super::{Action, Core, CoreConfig};
use super::ObjectLimits;
use protocol::{
    FromClient, ItemFormat, LeaseId, NewValue, ObjectErrorKind, ObjectKind, ObjectOp, ObjectReply,
    ObjectRequest, Renewal, ToClient, Wait,
};
use std::time::Duration;

const A: &[u8] = b"client-a";
const B: &[u8] = b"client-b";
const C: &[u8] = b"client-c";

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// An answer as the harness reads it: to whom, for which request, what, with which payloads.
type Got = (Vec<u8>, u64, ObjectReply, Vec<Vec<u8>>);

struct H {
    core: Core,
    now: Duration,
    next_id: u64,
}

impl H {
    fn new() -> H {
        H::with(CoreConfig::default())
    }

    fn with(config: CoreConfig) -> H {
        H {
            core: Core::new(config, Duration::ZERO),
            now: Duration::ZERO,
            next_id: 0,
        }
    }

    fn limited(limits: ObjectLimits) -> H {
        H::with(CoreConfig {
            objects: limits,
            ..CoreConfig::default()
        })
    }

    /// Sends a request; returns its id and the object answers it caused.
    fn send(
        &mut self,
        route: &[u8],
        name: &str,
        op: ObjectOp,
        payloads: Vec<Vec<u8>>,
    ) -> (u64, Vec<Got>) {
        self.next_id += 1;
        let id = self.next_id;
        let msg = FromClient::Object(ObjectRequest {
            id,
            name: name.into(),
            op,
        });
        let actions = self.core.on_client(route, msg, payloads, self.now);
        (id, answers(&actions))
    }

    /// Sends a request that must be answered at once; its reply and payloads.
    fn ask(
        &mut self,
        route: &[u8],
        name: &str,
        op: ObjectOp,
        payloads: Vec<Vec<u8>>,
    ) -> (ObjectReply, Vec<Vec<u8>>) {
        let (id, got) = self.send(route, name, op, payloads);
        let mine: Vec<_> = got
            .into_iter()
            .filter(|g| g.1 == id && g.0 == route)
            .collect();
        assert_eq!(mine.len(), 1, "one answer to request {id}: {mine:?}");
        let (_, _, reply, payloads) = mine.into_iter().next().unwrap();
        (reply, payloads)
    }

    fn put(&mut self, route: &[u8], q: &str, item: &str, wait: Wait) -> (u64, Vec<Got>) {
        let op = ObjectOp::QueuePut {
            format: ItemFormat::Msgpack,
            wait,
        };
        self.send(route, q, op, vec![item.as_bytes().to_vec()])
    }

    fn get(&mut self, route: &[u8], q: &str, wait: Wait) -> (u64, Vec<Got>) {
        self.send(route, q, ObjectOp::QueueGet { wait }, vec![])
    }

    fn acquire(
        &mut self,
        route: &[u8],
        name: &str,
        permits: Option<u32>,
        wait: Wait,
    ) -> (u64, Vec<Got>) {
        let op = ObjectOp::Acquire {
            permits,
            wait,
            lease_ms: 1000,
        };
        self.send(route, name, op, vec![])
    }

    fn tick(&mut self, t: Duration) -> Vec<Got> {
        self.now = t;
        answers(&self.core.on_tick(t))
    }
}

fn answers(actions: &[Action]) -> Vec<Got> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient {
                route,
                msg: ToClient::Object { id, reply },
                payloads,
            } => Some((
                route.clone(),
                *id,
                reply.clone(),
                payloads.iter().map(|p| p.to_vec()).collect(),
            )),
            _ => None,
        })
        .collect()
}

fn forever() -> Wait {
    Wait::default()
}

fn within(t: u64) -> Wait {
    Wait {
        timeout_ms: Some(t),
        nowait: false,
    }
}

fn nowait() -> Wait {
    Wait {
        timeout_ms: None,
        nowait: true,
    }
}

fn error_kind(reply: &ObjectReply) -> Option<ObjectErrorKind> {
    match reply {
        ObjectReply::Error { kind, .. } => Some(*kind),
        _ => None,
    }
}

fn item(got: &Got) -> &str {
    assert!(matches!(got.2, ObjectReply::Item { .. }), "{got:?}");
    std::str::from_utf8(&got.3[0]).unwrap()
}

fn lease_of(reply: &ObjectReply) -> LeaseId {
    match reply {
        ObjectReply::Lease { lease, .. } => *lease,
        other => panic!("no lease: {other:?}"),
    }
}

#[test]
fn a_queue_is_fifo_and_counts_its_items() {
    let mut h = H::new();
    for i in 0..5 {
        let (id, got) = h.put(A, "jobs", &format!("item {i}"), forever());
        assert_eq!(got, vec![(A.to_vec(), id, ObjectReply::Done, vec![])]);
    }
    let (size, _) = h.ask(B, "jobs", ObjectOp::QueueSize, vec![]);
    assert_eq!(size, ObjectReply::Size { len: 5 });
    for i in 0..5 {
        let (_, got) = h.get(B, "jobs", nowait());
        assert_eq!(item(&got[0]), format!("item {i}"));
        assert_eq!(
            got[0].2,
            ObjectReply::Item {
                format: ItemFormat::Msgpack
            }
        );
    }
    let (_, got) = h.get(B, "jobs", nowait());
    assert_eq!(error_kind(&got[0].2), Some(ObjectErrorKind::Empty));
    let (_, got) = h.get(B, "jobs", within(0));
    assert_eq!(error_kind(&got[0].2), Some(ObjectErrorKind::Timeout));
    assert_eq!(h.core.objects.bytes(), 0);
}

#[test]
fn blocked_getters_are_served_first_come_first_served() {
    let mut h = H::new();
    let mut waiting = Vec::new();
    for (i, route) in [A, B, C, A, B].iter().enumerate() {
        let (id, got) = h.get(
            route,
            "jobs",
            if i % 2 == 0 {
                forever()
            } else {
                within(60_000)
            },
        );
        assert!(got.is_empty(), "waits");
        waiting.push((route.to_vec(), id));
    }
    for (i, (route, id)) in waiting.iter().enumerate() {
        let (put_id, got) = h.put(C, "jobs", &format!("n{i}"), nowait());
        assert_eq!(got.len(), 2, "{got:?}");
        let served = got
            .iter()
            .find(|g| g.1 == *id && &g.0 == route)
            .expect("the oldest getter");
        assert_eq!(item(served), format!("n{i}"));
        assert!(got
            .iter()
            .any(|g| g.1 == put_id && g.2 == ObjectReply::Done));
    }
    // Nothing stayed in the queue: each item went straight to its getter.
    let (size, _) = h.ask(A, "jobs", ObjectOp::QueueSize, vec![]);
    assert_eq!(size, ObjectReply::Size { len: 0 });
    let (objects, leases, routes, _) = h.core.objects.sizes();
    assert_eq!((objects, leases, routes), (1, 0, 0));
}

#[test]
fn a_wait_ends_with_timeout_at_its_deadline_on_the_fake_clock() {
    let mut h = H::new();
    let (id, got) = h.get(A, "jobs", within(500));
    assert!(got.is_empty());
    assert_eq!(h.core.next_tick().min(ms(500)), ms(500));
    assert!(h.tick(ms(499)).is_empty());
    let got = h.tick(ms(500));
    assert_eq!(got.len(), 1);
    assert_eq!((got[0].0.as_slice(), got[0].1), (A, id));
    assert_eq!(error_kind(&got[0].2), Some(ObjectErrorKind::Timeout));
    // A later item is not given to the getter that timed out.
    let (_, got) = h.put(B, "jobs", "late", forever());
    assert_eq!(got.len(), 1);
    let (_, got) = h.get(B, "jobs", nowait());
    assert_eq!(item(&got[0]), "late");
}

#[test]
fn a_bounded_queue_blocks_puts_while_full_and_admits_them_in_order() {
    let mut h = H::new();
    let (reply, _) = h.ask(
        A,
        "q",
        ObjectOp::QueueSetMaxsize { maxsize: Some(2) },
        vec![],
    );
    assert_eq!(reply, ObjectReply::Done);
    h.put(A, "q", "1", forever());
    h.put(A, "q", "2", forever());
    let (_, got) = h.put(A, "q", "x", nowait());
    assert_eq!(error_kind(&got[0].2), Some(ObjectErrorKind::Full));
    let (p3, got) = h.put(B, "q", "3", forever());
    assert!(got.is_empty(), "waits while full");
    let (p4, got) = h.put(C, "q", "4", within(1000));
    assert!(got.is_empty());
    let (p5, _) = h.put(A, "q", "5", within(100));
    // Its bytes count while it waits.
    assert_eq!(h.core.objects.bytes(), 5);
    let got = h.tick(ms(100));
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].1, error_kind(&got[0].2)),
        (p5, Some(ObjectErrorKind::Timeout))
    );
    assert_eq!(h.core.objects.bytes(), 4);
    // A get makes room: the oldest waiting put goes in, and is answered.
    let (_, got) = h.get(A, "q", nowait());
    assert_eq!(item(got.iter().find(|g| g.0 == A).unwrap()), "1");
    assert!(got
        .iter()
        .any(|g| g.0 == B && g.1 == p3 && g.2 == ObjectReply::Done));
    // Raising the bound lets the next one in.
    let (_, got) = h.send(A, "q", ObjectOp::QueueSetMaxsize { maxsize: None }, vec![]);
    assert!(got
        .iter()
        .any(|g| g.0 == C && g.1 == p4 && g.2 == ObjectReply::Done));
    let order: Vec<String> = (0..3)
        .map(|_| item(&h.get(A, "q", nowait()).1[0]).to_owned())
        .collect();
    assert_eq!(order, ["2", "3", "4"]);
    let info = &h.core.objects()[0];
    assert_eq!(
        (info.kind, info.maxsize, info.len),
        (ObjectKind::Queue, None, 0)
    );
}

#[test]
fn a_namespace_sets_gets_deletes_lists_and_compares_and_sets() {
    let mut h = H::new();
    let set = |key: &str, digest: u8| ObjectOp::NsSet {
        key: key.into(),
        format: ItemFormat::Pickle,
        digest: vec![digest],
    };
    assert_eq!(
        h.ask(A, "default", set("b", 1), vec![b"B".to_vec()]).0,
        ObjectReply::Done
    );
    assert_eq!(
        h.ask(A, "default", set("a", 2), vec![b"A".to_vec()]).0,
        ObjectReply::Done
    );
    let (reply, payloads) = h.ask(B, "default", ObjectOp::NsGet { key: "a".into() }, vec![]);
    assert_eq!(
        reply,
        ObjectReply::Value {
            format: Some(ItemFormat::Pickle)
        }
    );
    assert_eq!(payloads, vec![b"A".to_vec()]);
    let (reply, payloads) = h.ask(B, "default", ObjectOp::NsGet { key: "zz".into() }, vec![]);
    assert_eq!(
        (reply, payloads.len()),
        (ObjectReply::Value { format: None }, 0)
    );
    let (keys, _) = h.ask(B, "default", ObjectOp::NsKeys, vec![]);
    assert_eq!(
        keys,
        ObjectReply::Keys {
            keys: vec!["a".into(), "b".into()]
        }
    );
    let del = |key: &str| ObjectOp::NsDelete { key: key.into() };
    assert_eq!(
        h.ask(B, "default", del("b"), vec![]).0,
        ObjectReply::Flag { value: true }
    );
    assert_eq!(
        h.ask(B, "default", del("b"), vec![]).0,
        ObjectReply::Flag { value: false }
    );
    // Compare and set, by digest.
    let cas = |expected: Option<u8>, new: Option<u8>| ObjectOp::NsCompareAndSet {
        key: "a".into(),
        expected: expected.map(|d| vec![d]),
        new: new.map(|d| NewValue {
            format: ItemFormat::Msgpack,
            digest: vec![d],
        }),
    };
    let flag = |value| ObjectReply::Flag { value };
    assert_eq!(
        h.ask(A, "default", cas(Some(9), Some(3)), vec![b"C".to_vec()])
            .0,
        flag(false)
    );
    assert_eq!(
        h.ask(A, "default", cas(None, Some(3)), vec![b"C".to_vec()])
            .0,
        flag(false)
    );
    assert_eq!(
        h.ask(A, "default", cas(Some(2), Some(3)), vec![b"C".to_vec()])
            .0,
        flag(true)
    );
    let (_, payloads) = h.ask(B, "default", ObjectOp::NsGet { key: "a".into() }, vec![]);
    assert_eq!(payloads, vec![b"C".to_vec()]);
    assert_eq!(
        h.ask(A, "default", cas(Some(3), None), vec![]).0,
        flag(true)
    );
    assert_eq!(
        h.ask(A, "default", cas(None, Some(4)), vec![b"D".to_vec()])
            .0,
        flag(true)
    );
    let info = &h.core.objects()[0];
    assert_eq!((info.len, info.bytes), (1, 1 + 1 + 1));
}

#[test]
fn a_lock_has_one_holder_and_waiters_get_it_in_order() {
    let mut h = H::new();
    let (_, got) = h.acquire(A, "gpu", None, forever());
    let first = lease_of(&got[0].2);
    let (_, got) = h.acquire(B, "gpu", None, nowait());
    assert_eq!(error_kind(&got[0].2), Some(ObjectErrorKind::Timeout));
    let (b, got) = h.acquire(B, "gpu", None, forever());
    assert!(got.is_empty());
    let (c, _) = h.acquire(C, "gpu", None, within(5000));
    // Only the holder may release its lease.
    let (reply, _) = h.ask(B, "gpu", ObjectOp::Release { lease: first }, vec![]);
    assert_eq!(error_kind(&reply), Some(ObjectErrorKind::UnknownLease));
    let (_, got) = h.send(A, "gpu", ObjectOp::Release { lease: first }, vec![]);
    let to_b = got
        .iter()
        .find(|g| g.0 == B && g.1 == b)
        .expect("B is next");
    let second = lease_of(&to_b.2);
    assert_ne!(first, second);
    // Released twice: refused.
    let (reply, _) = h.ask(A, "gpu", ObjectOp::Release { lease: first }, vec![]);
    assert_eq!(error_kind(&reply), Some(ObjectErrorKind::UnknownLease));
    let (_, got) = h.send(B, "gpu", ObjectOp::Release { lease: second }, vec![]);
    assert!(got
        .iter()
        .any(|g| g.0 == C && g.1 == c && matches!(g.2, ObjectReply::Lease { .. })));
    let info = &h.core.objects()[0];
    assert_eq!(
        (info.kind, info.len, info.waiters),
        (ObjectKind::Lock, 1, 0)
    );
}

#[test]
fn a_semaphore_has_n_holders_and_its_permit_count_is_fixed() {
    let mut h = H::new();
    let leases: Vec<LeaseId> = [A, B, C]
        .iter()
        .map(|r| lease_of(&h.acquire(r, "slots", Some(3), nowait()).1[0].2))
        .collect();
    let (d, got) = h.acquire(A, "slots", Some(3), forever());
    assert!(got.is_empty(), "all 3 held");
    let (_, got) = h.acquire(A, "slots", Some(2), nowait());
    assert_eq!(error_kind(&got[0].2), Some(ObjectErrorKind::Invalid));
    let (_, got) = h.acquire(A, "other", Some(0), nowait());
    assert_eq!(error_kind(&got[0].2), Some(ObjectErrorKind::Invalid));
    let (_, got) = h.send(B, "slots", ObjectOp::Release { lease: leases[1] }, vec![]);
    assert!(got
        .iter()
        .any(|g| g.1 == d && matches!(g.2, ObjectReply::Lease { .. })));
    assert_eq!(h.core.objects()[0].permits, Some(3));
}

#[test]
fn a_lease_not_renewed_runs_out_and_goes_to_the_next_waiter() {
    let mut h = H::new();
    let (_, got) = h.acquire(A, "gpu", None, forever());
    let lease = lease_of(&got[0].2);
    let (b, _) = h.acquire(B, "gpu", None, forever());
    // Renewed at 600 ms: held until 1.6 s.
    h.now = ms(600);
    let renewal = Renewal {
        lease,
        name: "gpu".into(),
        kind: ObjectKind::Lock,
        permits: 1,
        lease_ms: 1000,
    };
    let (reply, _) = h.ask(
        A,
        "",
        ObjectOp::Renew {
            leases: vec![renewal.clone()],
        },
        vec![],
    );
    assert_eq!(reply, ObjectReply::Renewed { lost: vec![] });
    assert!(h.tick(ms(1000)).is_empty(), "renewed");
    let got = h.tick(ms(1600));
    assert_eq!(got.len(), 1);
    assert!(got[0].0 == B && got[0].1 == b && matches!(got[0].2, ObjectReply::Lease { .. }));
    // A's late renewal finds its lease lost (and the lock taken).
    let (reply, _) = h.ask(
        A,
        "",
        ObjectOp::Renew {
            leases: vec![renewal],
        },
        vec![],
    );
    assert_eq!(reply, ObjectReply::Renewed { lost: vec![lease] });
}

#[test]
fn leases_and_waits_end_when_their_client_leaves() {
    let mut h = H::new();
    let (_, got) = h.acquire(A, "gpu", None, forever());
    lease_of(&got[0].2);
    h.acquire(A, "slots", Some(1), forever());
    h.get(A, "jobs", forever());
    h.send(
        A,
        "ev",
        ObjectOp::EventWait {
            wait: within(100_000),
        },
        vec![],
    );
    let (b, _) = h.acquire(B, "gpu", None, forever());
    let (c, _) = h.acquire(C, "slots", Some(1), forever());
    // A's connection closes (kill -9): B and C get the lock and the permit at once.
    let got = answers(&h.core.on_client_disconnected(A, h.now));
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().any(|g| g.0 == B && g.1 == b));
    assert!(got.iter().any(|g| g.0 == C && g.1 == c));
    // A's getter is gone: an item goes to nobody's wait, it stays in the queue.
    h.put(B, "jobs", "kept", forever());
    assert_eq!(
        h.ask(B, "jobs", ObjectOp::QueueSize, vec![]).0,
        ObjectReply::Size { len: 1 }
    );
    // Goodbye does the same.
    let actions = h.core.on_client(B, FromClient::Goodbye, vec![], h.now);
    assert!(answers(&actions).is_empty());
    let info: Vec<(String, u64)> = h
        .core
        .objects()
        .into_iter()
        .map(|o| (o.name, o.len))
        .collect();
    assert!(info.contains(&("gpu".into(), 0)));
    h.core.on_client_disconnected(C, h.now);
    let (_, leases, routes, _) = h.core.objects.sizes();
    assert_eq!((leases, routes), (0, 0), "nothing left behind");
}

#[test]
fn a_renewal_takes_back_a_free_lease_after_a_controller_restart() {
    let mut h = H::new();
    let renewal = |lease| Renewal {
        lease: LeaseId(lease),
        name: "gpu".into(),
        kind: ObjectKind::Lock,
        permits: 1,
        lease_ms: 1000,
    };
    let (reply, _) = h.ask(
        A,
        "",
        ObjectOp::Renew {
            leases: vec![renewal(77)],
        },
        vec![],
    );
    assert_eq!(reply, ObjectReply::Renewed { lost: vec![] });
    let (_, got) = h.acquire(B, "gpu", None, nowait());
    assert_eq!(
        error_kind(&got[0].2),
        Some(ObjectErrorKind::Timeout),
        "A holds it"
    );
    // Another client's renewal of another lease cannot take it too.
    let (reply, _) = h.ask(
        C,
        "",
        ObjectOp::Renew {
            leases: vec![renewal(78)],
        },
        vec![],
    );
    assert_eq!(
        reply,
        ObjectReply::Renewed {
            lost: vec![LeaseId(78)]
        }
    );
    let (reply, _) = h.ask(A, "gpu", ObjectOp::Release { lease: LeaseId(77) }, vec![]);
    assert_eq!(reply, ObjectReply::Done);
}

#[test]
fn an_event_wakes_every_waiter_and_a_timed_out_wait_says_false() {
    let mut h = H::new();
    assert_eq!(
        h.ask(A, "go", ObjectOp::EventIsSet, vec![]).0,
        ObjectReply::Flag { value: false }
    );
    assert_eq!(
        h.ask(A, "go", ObjectOp::EventWait { wait: within(0) }, vec![])
            .0,
        ObjectReply::Flag { value: false }
    );
    let (a, got) = h.send(A, "go", ObjectOp::EventWait { wait: forever() }, vec![]);
    assert!(got.is_empty());
    let (b, _) = h.send(B, "go", ObjectOp::EventWait { wait: within(50) }, vec![]);
    let (c, _) = h.send(C, "go", ObjectOp::EventWait { wait: within(5000) }, vec![]);
    let got = h.tick(ms(50));
    assert_eq!(
        got,
        vec![(B.to_vec(), b, ObjectReply::Flag { value: false }, vec![])]
    );
    let (_, got) = h.send(B, "go", ObjectOp::EventSet, vec![]);
    let woken: Vec<u64> = got
        .iter()
        .filter(|g| g.2 == ObjectReply::Flag { value: true })
        .map(|g| g.1)
        .collect();
    assert_eq!(woken, [a, c]);
    assert_eq!(
        h.ask(A, "go", ObjectOp::EventWait { wait: forever() }, vec![])
            .0,
        ObjectReply::Flag { value: true }
    );
    h.ask(A, "go", ObjectOp::EventClear, vec![]);
    assert_eq!(
        h.ask(A, "go", ObjectOp::EventIsSet, vec![]).0,
        ObjectReply::Flag { value: false }
    );
    // The stale deadline of the served wait is harmless.
    assert!(h.tick(ms(6000)).is_empty());
}

#[test]
fn bad_names_and_wrong_kinds_are_clear_errors() {
    let mut h = H::new();
    for name in ["", "a\u{7}b", &"x".repeat(300)] {
        let (reply, _) = h.ask(A, name, ObjectOp::QueueSize, vec![]);
        assert_eq!(
            error_kind(&reply),
            Some(ObjectErrorKind::BadName),
            "{name:?}"
        );
    }
    let (reply, _) = h.ask(A, "ns", ObjectOp::NsGet { key: String::new() }, vec![]);
    assert_eq!(error_kind(&reply), Some(ObjectErrorKind::BadName));
    h.acquire(A, "gpu", None, nowait());
    let (_, got) = h.get(A, "gpu", nowait());
    let ObjectReply::Error { kind, message } = &got[0].2 else {
        panic!("{got:?}")
    };
    assert_eq!(*kind, ObjectErrorKind::WrongKind);
    assert_eq!(
        message,
        "\"gpu\" is a lock, not a queue; use another name for the queue"
    );
    let (reply, _) = h.ask(A, "gpu", ObjectOp::EventSet, vec![]);
    assert_eq!(error_kind(&reply), Some(ObjectErrorKind::WrongKind));
    assert_eq!(
        h.core.objects().len(),
        1,
        "nothing made by refused requests"
    );
}

#[test]
fn limits_refuse_with_a_clear_error_and_free_room_counts_again() {
    let mut h = H::limited(ObjectLimits {
        object_max_bytes: 10,
        objects_max_bytes: 15,
        max_objects: 3,
    });
    let (_, got) = h.put(A, "q", "0123456789", forever());
    assert_eq!(got[0].2, ObjectReply::Done);
    let (_, got) = h.put(A, "q", "x", forever());
    let ObjectReply::Error { kind, message } = &got[0].2 else {
        panic!("{got:?}")
    };
    assert_eq!(*kind, ObjectErrorKind::Limit);
    assert!(message.contains("object_max_bytes"), "{message}");
    let (_, got) = h.put(A, "r", "012345", forever());
    let ObjectReply::Error { message, .. } = &got[0].2 else {
        panic!("{got:?}")
    };
    assert!(message.contains("objects_max_bytes"), "{message}");
    // A namespace value counts its key and digest too.
    let set = ObjectOp::NsSet {
        key: "k".into(),
        format: ItemFormat::Bytes,
        digest: vec![1],
    };
    assert_eq!(
        h.ask(A, "ns", set.clone(), vec![b"abc".to_vec()]).0,
        ObjectReply::Done
    );
    assert_eq!(h.core.objects.bytes(), 15);
    assert_eq!(
        error_kind(&h.ask(A, "third", ObjectOp::EventSet, vec![]).0),
        None
    );
    assert_eq!(
        error_kind(&h.ask(A, "fourth", ObjectOp::EventSet, vec![]).0),
        Some(ObjectErrorKind::Limit)
    );
    // Taking the item out makes room again.
    h.get(A, "q", nowait());
    assert_eq!(h.put(A, "q", "012345", forever()).1[0].2, ObjectReply::Done);
    assert_eq!(
        h.ask(A, "q", ObjectOp::Remove, vec![]).0,
        ObjectReply::Flag { value: true }
    );
    assert_eq!(
        h.ask(A, "fourth", ObjectOp::EventSet, vec![]).0,
        ObjectReply::Done
    );
}

#[test]
fn removing_an_object_tells_its_waiters() {
    let mut h = H::new();
    let (g, _) = h.get(A, "jobs", forever());
    let (_, got) = h.send(B, "jobs", ObjectOp::Remove, vec![]);
    assert!(got
        .iter()
        .any(|x| x.1 == g && error_kind(&x.2) == Some(ObjectErrorKind::Removed)));
    assert!(got
        .iter()
        .any(|x| x.0 == B && x.2 == ObjectReply::Flag { value: true }));
    assert!(h.core.objects().is_empty());
    let (_, _, routes, _) = h.core.objects.sizes();
    assert_eq!(routes, 0);
}

#[test]
fn with_a_store_changes_become_records_and_come_back_after_a_restart() {
    let config = CoreConfig {
        persist: true,
        ..CoreConfig::default()
    };
    let mut h = H::with(config.clone());
    let mut records = Vec::new();
    let mut keep = |actions: Vec<Action>| {
        for a in actions {
            if let Action::Objects(r) = a {
                records.extend(r);
            }
        }
    };
    let req = |h: &mut H, route: &[u8], name: &str, op, payloads| {
        h.next_id += 1;
        let msg = FromClient::Object(ObjectRequest {
            id: h.next_id,
            name: String::from(name),
            op,
        });
        h.core.on_client(route, msg, payloads, h.now)
    };
    let put = || ObjectOp::QueuePut {
        format: ItemFormat::Msgpack,
        wait: Wait::default(),
    };
    for i in 0..3u8 {
        keep(req(&mut h, A, "jobs", put(), vec![vec![i]]));
    }
    keep(req(
        &mut h,
        A,
        "jobs",
        ObjectOp::QueueGet {
            wait: Wait::default(),
        },
        vec![],
    ));
    let set = ObjectOp::NsSet {
        key: "k".into(),
        format: ItemFormat::Pickle,
        digest: vec![5],
    };
    keep(req(&mut h, A, "default", set, vec![b"v".to_vec()]));
    keep(req(&mut h, A, "go", ObjectOp::EventSet, vec![]));
    keep(req(
        &mut h,
        A,
        "gpu",
        ObjectOp::Acquire {
            permits: None,
            wait: Wait::default(),
            lease_ms: 1000,
        },
        vec![],
    ));
    // What the store would give back: apply the records by hand.
    let mut stored: std::collections::BTreeMap<String, store::StoredObject> = Default::default();
    for r in records {
        match r {
            store::ObjectRecord::Put {
                name,
                kind,
                maxsize,
                set,
            } => {
                let o = stored.entry(name.clone()).or_insert(store::StoredObject {
                    name,
                    kind,
                    maxsize,
                    set,
                    items: vec![],
                    entries: vec![],
                });
                o.set = set;
                o.maxsize = maxsize;
            }
            store::ObjectRecord::Pushed {
                name,
                seq,
                format,
                data,
            } => stored
                .get_mut(&name)
                .unwrap()
                .items
                .push(store::StoredItem { seq, format, data }),
            store::ObjectRecord::Popped { name, seq } => stored
                .get_mut(&name)
                .unwrap()
                .items
                .retain(|i| i.seq != seq),
            store::ObjectRecord::Set {
                name,
                key,
                format,
                digest,
                data,
            } => stored
                .get_mut(&name)
                .unwrap()
                .entries
                .push(store::StoredEntry {
                    key,
                    format,
                    digest,
                    data,
                }),
            other => panic!("unexpected {other:?}"),
        }
    }
    let names: Vec<&String> = stored.keys().collect();
    assert_eq!(names, ["default", "go", "jobs"], "locks are not stored");
    let mut again = H::with(config);
    assert_eq!(
        again.core.restore_objects(stored.into_values().collect()),
        3
    );
    let (_, got) = again.get(B, "jobs", nowait());
    assert_eq!(got[0].3, vec![vec![1u8]]);
    // New items go after the restored ones.
    again.put(B, "jobs", "new", forever());
    let (_, got) = again.get(B, "jobs", nowait());
    assert_eq!(got[0].3, vec![vec![2u8]]);
    assert_eq!(
        again.ask(B, "go", ObjectOp::EventIsSet, vec![]).0,
        ObjectReply::Flag { value: true }
    );
    let (_, payloads) = again.ask(B, "default", ObjectOp::NsGet { key: "k".into() }, vec![]);
    assert_eq!(payloads, vec![b"v".to_vec()]);
}

#[test]
fn without_a_store_nothing_is_recorded() {
    let mut h = H::new();
    let actions = h.core.on_client(
        A,
        FromClient::Object(ObjectRequest {
            id: 1,
            name: "jobs".into(),
            op: ObjectOp::QueuePut {
                format: ItemFormat::Bytes,
                wait: Wait::default(),
            },
        }),
        vec![b"x".to_vec()],
        Duration::ZERO,
    );
    assert!(!actions.iter().any(|a| matches!(a, Action::Objects(_))));
}

#[test]
fn many_waiters_on_many_objects_stay_fair_and_leave_nothing_behind() {
    let mut h = H::new();
    // 300 getters from 3 clients on one queue, some with deadlines; then 300 items.
    let routes = [A, B, C];
    let mut order = Vec::new();
    for i in 0..300u64 {
        let route = routes[(i % 3) as usize];
        let wait = if i % 7 == 0 { within(10) } else { forever() };
        let (id, _) = h.get(route, "jobs", wait);
        if i % 7 != 0 {
            order.push((route.to_vec(), id));
        }
    }
    let got = h.tick(ms(10));
    assert_eq!(got.len(), 300_usize.div_ceil(7));
    let mut served = Vec::new();
    for i in 0..order.len() {
        let (_, got) = h.put(A, "jobs", &i.to_string(), forever());
        for g in got {
            if matches!(g.2, ObjectReply::Item { .. }) {
                assert_eq!(item(&g), i.to_string());
                served.push((g.0, g.1));
            }
        }
    }
    assert_eq!(served, order, "first come first served");
    let (_, leases, routes_left, _) = h.core.objects.sizes();
    assert_eq!((leases, routes_left), (0, 0));
}
