//! A controller restarted under running engines and waiting clients: engines get their ids
//! back, held and finished tasks are kept, and client ids of the earlier life are avoided.

use super::*;

fn registration_with_id(uuid: &str, id: u32) -> FromEngine {
    let FromEngine::Register(mut reg) = registration(uuid, &["f"]) else {
        unreachable!()
    };
    reg.engine_id = Some(EngineId(id));
    FromEngine::Register(reg)
}

#[test]
fn engines_of_an_earlier_controller_get_their_ids_back() {
    let mut h = Harness::new(Hwm::Auto);
    let back = |h: &mut Harness, uuid: &str, id: u32| {
        registered_id(&h.engine(uuid, registration_with_id(uuid, id)))
    };
    assert_eq!(back(&mut h, "x", 3), Some(EngineId(3)));
    assert_eq!(back(&mut h, "y", 1), Some(EngineId(1)));
    // A fresh engine takes a new id, never one kept for a returning engine.
    assert_eq!(h.register("z", &["f"]).0, EngineId(4));
    // A returning engine whose id is taken gets a new one; absurd ids are not honoured.
    assert_eq!(back(&mut h, "w", 3), Some(EngineId(5)));
    assert_eq!(back(&mut h, "v", u32::MAX), Some(EngineId(6)));
    let ids: Vec<u32> = h.status().engines.iter().map(|e| e.id.0).collect();
    assert_eq!(ids, [1, 3, 4, 5, 6]);
    // Work goes only to real engines.
    let actions = h.submit((1..=5).map(|i| call(i, "f")).collect());
    assert_eq!(sent_to(&actions).len(), 5);
}

#[test]
fn clients_of_an_earlier_controller_keep_their_ids_and_new_ones_avoid_them() {
    let mut h = Harness::with_config(
        CoreConfig {
            first_client_id: 500,
            ..Default::default()
        },
        Duration::ZERO,
    );
    h.register("a", &["f"]);
    // A client of the previous life submits without saying hello.
    h.submit_from(
        b"old",
        vec![TaskRequest {
            id: TaskId::new(ClientId(700), 1),
            ..call(1, "f")
        }],
    );
    assert_eq!(h.hello(b"new"), ClientId(701));
    assert_eq!(h.status().controller.clients, 2);
}

/// After a restart (a fresh core), engines bring what they finished and what they hold, and
/// clients submit their unfinished tasks again: nothing is lost, and nothing held runs twice.
#[test]
fn a_restarted_controller_keeps_what_engines_finished_and_hold_for_clients_that_resubmit() {
    let mut h = Harness::new(Hwm::Limit(0));
    // Engine "a" delivers a result it finished while the controller was down, before it
    // registers again: kept, delivered to nobody yet.
    let actions = h.finish("a", &[tid(1)], 5);
    assert!(delivered(&actions).is_empty());
    // It registers again, holding tasks 2 and 3 in its own queue.
    let actions = h.engine(
        "a",
        held_registration("a", Some(EngineId(0)), &[tid(2), tid(3)]),
    );
    assert!(sent_to(&actions).is_empty());
    assert_eq!(h.engine_status(0).outstanding, 2);
    h.register("b", &["f"]);
    // A new client must not get the id of the old one, whose task ids are in use.
    assert_eq!(h.hello(OTHER_CLIENT), ClientId(2));
    // Task 3 finishes before its client is back.
    assert!(delivered(&h.finish("a", &[tid(3)], 5)).is_empty());
    // The client submits its unfinished tasks again.
    let actions = h.submit(vec![call(1, "f"), call(2, "f"), call(3, "f"), call(4, "f")]);
    // Only the task nobody had runs; 1 and 3 are answered from the store at once.
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(4))]);
    let msgs = delivered(&actions);
    let answered: Vec<TaskId> = msgs[0].1.iter().map(|o| o.id).collect();
    assert_eq!(answered, [tid(1), tid(3)]);
    assert!(!actions.iter().any(|a| matches!(
        a,
        Action::ToClient {
            msg: ToClient::Error { .. },
            ..
        }
    )));
    // Task 2, still held by engine 0, reaches the client when it finishes there.
    let msgs = delivered(&h.finish("a", &[tid(2)], 5));
    assert_eq!(msgs[0].0, CLIENT);
    assert_eq!(msgs[0].1[0].id, tid(2));
    assert_eq!(h.engine_status(0).outstanding, 0);
}

/// A task submitted again before its engine re-registered waits in the queue; when the
/// engine says it holds it, it is not handed out a second time.
#[test]
fn a_held_task_already_queued_again_is_not_handed_to_a_second_engine() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("b", &["f"]);
    // Engine b is busy; the resubmitted task 2 waits.
    h.submit(vec![call(1, "f"), call(2, "f")]);
    assert_eq!(h.status().tasks.queued, 1);
    h.engine("a", held_registration("a", None, &[tid(2)]));
    assert_eq!(h.status().tasks.queued, 0);
    // Engine b frees: task 2 is not sent to it.
    let actions = h.finish("b", &[tid(1)], 5);
    assert!(sent_to(&actions).is_empty());
    let msgs = delivered(&h.finish("a", &[tid(2)], 5));
    assert_eq!(msgs[0].1[0].id, tid(2));
}

/// Regression: a task an engine held across a controller restart kept none of the options
/// its client submitted it again with, so the death of that engine failed it with
/// `EngineLost` ("submit it with retries > 0") although it had been given retries.
#[test]
fn a_held_task_submitted_again_is_retried_when_its_engine_dies() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.engine("a", held_registration("a", Some(EngineId(0)), &[tid(1)]));
    h.register("b", &["f"]);
    let actions = h.submit(vec![with(call(1, "f"), &[], 1)]);
    assert!(sent(&actions).is_empty(), "it runs on engine 0 already");
    let actions = h.core.on_engine_disconnected(b"a", h.now);
    assert!(delivered(&actions).is_empty(), "retried, not failed");
    assert_eq!(
        sent(&actions),
        [(EngineId(1), vec![tid(1)], vec![payload_of(tid(1))])]
    );
    // Retried once, as submitted: the next loss fails it.
    let actions = h.core.on_engine_disconnected(b"b", h.now);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert_eq!(
        (err.kind, err.engine),
        (ErrorKind::EngineLost, Some(EngineId(1)))
    );
}

/// Regression: results from an engine not registered (yet) were paired with their payloads
/// by `zip`, so a message short of payloads lost the outcomes past the last one; they read
/// as empty values, as from a registered engine.
#[test]
fn results_short_of_payloads_from_an_unregistered_engine_are_all_kept() {
    let mut h = Harness::new(Hwm::Limit(0));
    let results = [tid(1), tid(2)]
        .map(|id| TaskOutcome {
            id,
            engine: None,
            status: Status::Ok,
            started_us: 1,
            elapsed_us: 1,
        })
        .to_vec();
    h.core.on_engine(
        b"a",
        FromEngine::Results { results },
        vec![b"one".to_vec()],
        h.now,
    );
    assert_eq!(h.status().tasks.stored, 2);
    let msgs = delivered(&h.submit(vec![call(1, "f"), call(2, "f")]));
    assert_eq!(msgs[0].2, [b"one".to_vec(), Vec::new()]);
}
