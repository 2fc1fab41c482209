//! Draining engines hand back the tasks waiting in their own queue (`FromEngine::HandBack`):
//! those run elsewhere without spending a retry or blacklisting the engine, and the draining
//! engine gets no more tasks before it leaves.

use super::*;

/// What engine `uuid` got as `Tasks`, as it would send it back.
fn assignments(actions: &[Action]) -> (Vec<Assignment>, Vec<Vec<u8>>) {
    let mut tasks = Vec::new();
    let mut payloads = Vec::new();
    for a in actions {
        if let Action::ToEngine {
            msg: ToEngine::Tasks { tasks: t },
            payloads: p,
            ..
        } = a
        {
            tasks.extend(t.iter().cloned());
            payloads.extend(p.iter().map(|p| p.to_vec()));
        }
    }
    (tasks, payloads)
}

#[test]
fn handed_back_tasks_run_elsewhere_without_spending_retries() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    // Task 1 has no retries (the controller kept no copy of its work), task 2 has one.
    let actions = h.submit(vec![call(1, "f"), with(call(2, "f"), &[], 1), call(3, "f")]);
    let (tasks, payloads) = assignments(&actions);
    assert_eq!(tasks.len(), 3, "all go to the only engine");
    h.register("b", &["f"]);

    // Engine a ran task 1, then drains and hands back 2 and 3.
    h.finish("a", &[tid(1)], 5);
    let back = FromEngine::HandBack {
        tasks: tasks[1..].to_vec(),
    };
    let actions = h.core.on_engine(b"a", back, payloads[1..].to_vec(), h.now);
    let batches = sent(&actions);
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].0, EngineId(1), "not to the draining engine");
    assert_eq!(batches[0].1, [tid(2), tid(3)]);
    assert_eq!(batches[0].2, [payload_of(tid(2)), payload_of(tid(3))]);
    assert!(delivered(&actions).is_empty());
    let two = h.core.tasks.get(tid(2)).expect("task 2");
    assert_eq!(two.retries, 1, "a hand-back is not a retry");
    assert!(two.excluded.is_empty(), "nor a failure of engine 0");
    assert_eq!(h.engine_status(0).outstanding, 0);

    // More work while engine 0 drains goes to engine 1 only.
    let actions = h.submit(vec![call(4, "f")]);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(4))]);

    // Engine 0 leaves: nothing is lost; engine 1 delivers everything.
    let actions = h.unregister("a");
    assert!(delivered(&actions).is_empty());
    let actions = h.finish("b", &[tid(2), tid(3), tid(4)], 5);
    let ids: Vec<TaskId> = delivered(&actions)
        .into_iter()
        .flat_map(|(_, o, _)| o)
        .map(|o| {
            assert_eq!(o.status, Status::Ok);
            o.id
        })
        .collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(h.status().tasks.running, 0);
    assert_eq!(h.status().tasks.queued, 0);
}

#[test]
fn tasks_handed_back_with_nowhere_else_to_go_wait_for_an_engine() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    let actions = h.submit(vec![call(1, "f"), call(2, "f")]);
    let (tasks, payloads) = assignments(&actions);
    let back = FromEngine::HandBack {
        tasks: tasks[1..].to_vec(),
    };
    let actions = h.core.on_engine(b"a", back, payloads[1..].to_vec(), h.now);
    assert!(sent(&actions).is_empty(), "not back to the draining engine");
    assert_eq!(h.status().tasks.queued, 1);
    // A new engine comes (autoscaling, another Slurm job) and gets it with its argument.
    let (_, actions) = h.register("b", &["f"]);
    let batches = sent(&actions);
    assert_eq!(batches[0].1, [tid(2)]);
    assert_eq!(batches[0].2, [payload_of(tid(2))]);
}

#[test]
fn a_hand_back_of_finished_or_unknown_tasks_changes_nothing() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    let actions = h.submit(vec![call(1, "f")]);
    let (tasks, payloads) = assignments(&actions);
    h.finish("a", &[tid(1)], 5);
    let before = h.tables();
    let back = FromEngine::HandBack {
        tasks: tasks.clone(),
    };
    let actions = h.core.on_engine(b"a", back, payloads, h.now);
    assert!(sent(&actions).is_empty() && delivered(&actions).is_empty());
    assert_eq!(h.tables(), before);
    // From a stranger, and short of payloads: ignored, no panic.
    let back = FromEngine::HandBack { tasks };
    h.core.on_engine(b"nobody", back, vec![], h.now);
    assert_eq!(h.tables(), before);
}

/// Tasks sent to an engine after it took its queue to hand back (the controller had not
/// heard of the drain yet) were never run there: when it leaves, those whose work the
/// controller kept go back to the queue without spending a retry; the others are lost with
/// the engine, as before.
#[test]
fn tasks_still_held_by_a_draining_engine_when_it_leaves_never_ran() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    let actions = h.submit(vec![
        with(call(1, "f"), &[], 1),
        call(2, "f"),
        with(call(3, "f"), &[], 1),
    ]);
    let (tasks, payloads) = assignments(&actions);
    h.register("b", &["f"]);
    // The hand-back names task 3 only: 1 and 2 reached the engine too late.
    let back = FromEngine::HandBack {
        tasks: tasks[2..].to_vec(),
    };
    let actions = h.core.on_engine(b"a", back, payloads[2..].to_vec(), h.now);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(3))]);
    let actions = h.unregister("a");
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(1))]);
    assert_eq!(h.core.tasks.get(tid(1)).map(|t| t.retries), Some(1));
    let lost: Vec<_> = delivered(&actions)
        .into_iter()
        .flat_map(|(_, o, _)| o)
        .map(|o| (o.id, error_of(&o).kind))
        .collect();
    assert_eq!(
        lost,
        [(tid(2), ErrorKind::EngineLost)],
        "no copy of task 2 was kept"
    );
}
