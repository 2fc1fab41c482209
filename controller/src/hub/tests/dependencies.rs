//! Dependencies: `after` and `follow`, met, unmeetable, and failing in cascade.

use super::*;

#[test]
fn after_waits_for_its_dependencies_to_succeed() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    let actions = h.submit(vec![
        call(1, "f"),
        call(2, "f"),
        after(call(3, "f"), &[1, 2]),
    ]);
    let to = sent_to(&actions);
    assert_eq!(to.len(), 2, "3 waits: {to:?}");
    let status = h.status();
    assert_eq!((status.tasks.waiting, status.tasks.queued), (1, 0));
    assert_eq!(h.core.queue_status().waiting, 1);
    let actions = h.finish("a", &[tid(1)], 5);
    assert!(sent(&actions).is_empty(), "still waits for 2");
    let actions = h.finish("b", &[tid(2)], 5);
    assert_eq!(sent_to(&actions).len(), 1);
    assert_eq!(sent_to(&actions)[0].1, tid(3));
    assert_eq!(h.status().tasks.waiting, 0);

    // A dependency that finished long ago is met at once.
    let actions = h.submit(vec![after(call(4, "f"), &[1])]);
    assert_eq!(sent_to(&actions).len(), 1);
}

#[test]
fn dependencies_that_cannot_be_met_fail_at_once_and_in_cascade() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    let kind_and_message = |actions: &[Action], id: TaskId| {
        delivered(actions)
            .into_iter()
            .flat_map(|(_, o, _)| o)
            .find(|o| o.id == id)
            .map(|o| {
                let e = error_of(&o);
                (e.kind, e.message.clone())
            })
            .expect("an outcome")
    };
    // On itself.
    let actions = h.submit(vec![after(call(1, "f"), &[1])]);
    let (kind, message) = kind_and_message(&actions, tid(1));
    assert_eq!(kind, ErrorKind::Dependency);
    assert!(message.contains("itself"), "{message}");
    // On a task nobody submitted.
    let actions = h.submit(vec![after(call(2, "f"), &[77])]);
    let (kind, message) = kind_and_message(&actions, tid(2));
    assert_eq!(kind, ErrorKind::Dependency);
    assert!(
        message.contains("1:77") && message.contains("does not know"),
        "{message}"
    );
    // On a task that fails: the dependent fails, and its own dependent too.
    h.submit(vec![
        call(3, "f"),
        after(call(4, "f"), &[3]),
        follow(call(5, "f"), &[4]),
    ]);
    let actions = h.fail("a", &[tid(3)], ErrorKind::Remote);
    let (kind, message) = kind_and_message(&actions, tid(4));
    assert_eq!(kind, ErrorKind::Dependency);
    assert!(
        message.contains("1:3") && message.contains("remote error"),
        "{message}"
    );
    assert_eq!(kind_and_message(&actions, tid(5)).0, ErrorKind::Dependency);
    // On a task that failed long ago.
    let actions = h.submit(vec![after(call(6, "f"), &[3])]);
    assert_eq!(kind_and_message(&actions, tid(6)).0, ErrorKind::Dependency);
    let status = h.status();
    assert_eq!((status.tasks.waiting, status.tasks.failed), (0, 6));
}

#[test]
fn follow_runs_where_the_followed_tasks_ran() {
    let mut h = Harness::new(Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        h.register(uuid, &["f"]);
    }
    // 1 and 2 go to engines 0 and 1.
    let actions = h.submit(vec![call(1, "f"), call(2, "f")]);
    assert_eq!(
        sent_to(&actions),
        [(EngineId(0), tid(1)), (EngineId(1), tid(2))]
    );
    // 3 follows 2 (on engine 1, though 2 is the least loaded); it waits until 2 is done.
    let actions = h.submit(vec![follow(call(3, "f"), &[2])]);
    assert!(sent(&actions).is_empty());
    let actions = h.finish("b", &[tid(2)], 5);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(3))]);
    // Following tasks that ran on two engines can never be met.
    h.finish("a", &[tid(1)], 5);
    let actions = h.submit(vec![follow(call(4, "f"), &[1, 2])]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert_eq!(err.kind, ErrorKind::Dependency);
    assert!(err.message.contains("different engines"), "{}", err.message);
    // Nor can a follow whose engine is not among the targets…
    let actions = h.submit(vec![with(follow(call(5, "f"), &[1]), &[2], 0)]);
    assert_eq!(
        error_of(&delivered(&actions)[0].1[0]).kind,
        ErrorKind::Dependency
    );
    // …nor one whose engine is gone.
    h.unregister("a");
    let actions = h.submit(vec![follow(call(6, "f"), &[1])]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert!(
        err.message.contains("no longer registered"),
        "{}",
        err.message
    );
}
