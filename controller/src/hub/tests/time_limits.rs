//! Time limits: the wait to start, the run on an engine, and what the engine is told.

use super::*;

#[test]
fn a_task_not_started_in_time_fails_with_a_timeout() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    // 1 occupies the engine; 2 and 3 wait in the queue, 4 waits for 2.
    let actions = h.submit(vec![
        call(1, "f"),
        timed(call(2, "f"), 500),
        timed(call(3, "f"), 5_000),
        timed(after(call(4, "f"), &[2]), 300),
    ]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    assert_eq!(h.core.next_tick(), Duration::from_millis(300));
    let actions = h.tick(Duration::from_millis(300));
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].1[0].id, tid(4));
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::Timeout);
    assert!(err.message.contains("dependencies"), "{}", err.message);
    let actions = h.tick(Duration::from_millis(500));
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].1[0].id, tid(2));
    assert!(error_of(&msgs[0].1[0]).message.contains("500 ms"));
    // The engine frees: the timed-out entry is skipped, 3 runs (its limit now counts on the
    // engine), and nothing fires at its old start deadline.
    let actions = h.finish("a", &[tid(1)], 5);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(3))]);
    let status = h.status();
    assert_eq!((status.tasks.queued, status.tasks.failed), (0, 2));
    assert!(delivered(&h.tick(Duration::from_millis(5_000))).is_empty());
}

/// Regression: `cluster map --timeout 0.5 -- …` failed commands that merely waited behind a
/// long one; a run-time limit must not bound the wait to start.
#[test]
fn a_run_time_limit_does_not_fail_a_task_waiting_to_start() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    let mut waiting = call(2, "f");
    waiting.options.run_timeout_ms = Some(500);
    let actions = h.submit(vec![call(1, "f"), waiting]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    assert!(delivered(&h.tick(Duration::from_millis(10_000))).is_empty());
    let actions = h.finish("a", &[tid(1)], 5);
    let assignment = first_assignment(&actions).expect("task 2 is assigned");
    assert_eq!(assignment.id, tid(2));
    assert_eq!(
        assignment.timeout_ms,
        Some(500),
        "the engine enforces the run limit"
    );
    assert_eq!(
        assignment.start_within_ms, None,
        "it may wait in the engine's queue"
    );
}

/// What is left of a start limit travels with the task, for the engine's own queue.
#[test]
fn an_assigned_task_carries_what_is_left_of_its_start_limit() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.submit(vec![call(1, "f"), timed(call(2, "f"), 1_000)]);
    h.tick(Duration::from_millis(300));
    let actions = h.finish("a", &[tid(1)], 5);
    let assignment = first_assignment(&actions).expect("task 2 is assigned");
    assert_eq!(
        (assignment.timeout_ms, assignment.start_within_ms),
        (Some(1_000), Some(700))
    );
}

#[test]
fn a_task_running_past_its_limit_without_word_from_the_engine_fails_or_retries() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    let t0 = Duration::from_secs(10);
    h.at(t0);
    let actions = h.submit(vec![
        timed(with(call(1, "f"), &[0], 0), 1_000),
        timed(with(call(2, "f"), &[], 1), 1_000),
    ]);
    assert_eq!(
        sent_to(&actions),
        [(EngineId(0), tid(1)), (EngineId(1), tid(2))]
    );
    // Waiting in an engine's queue does not count: without word of a start, nothing fires.
    assert!(delivered(&h.tick(t0 + secs(60))).is_empty());
    let t1 = t0 + secs(61);
    let started = |h: &mut Harness, uuid: &str, id, at| {
        h.at(at);
        h.engine(uuid, FromEngine::Started { ids: vec![id] })
    };
    started(&mut h, "a", tid(1), t1);
    // A start reported by an engine the task is not on is ignored.
    started(&mut h, "a", tid(2), t1);
    started(&mut h, "b", tid(2), t1 + secs(1) / 2);
    // The engine's own limit comes first; the controller waits a grace period more.
    assert!(delivered(&h.tick(t1 + secs(1))).is_empty());
    let actions = h.tick(t1 + secs(1) + RUN_TIMEOUT_GRACE);
    let msgs = delivered(&actions);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].1[0].id, tid(1));
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(
        (err.kind, err.engine),
        (ErrorKind::Timeout, Some(EngineId(0)))
    );
    assert!(sent_to(&actions).is_empty());
    // Task 2 had a retry: it goes to engine 0, now free, never back to engine 1.
    let actions = h.tick(t1 + secs(1) * 3 / 2 + RUN_TIMEOUT_GRACE);
    assert!(delivered(&actions).is_empty());
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(2))]);
    // A late result for task 1 is ignored.
    assert!(delivered(&h.finish("a", &[tid(1)], 5)).is_empty());
}
