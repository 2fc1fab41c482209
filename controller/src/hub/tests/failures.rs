//! Failures: engines lost with tasks (retried elsewhere or failed with `EngineLost`), tasks
//! that fail on an engine and are retried, and late or duplicate results.

use super::*;

#[test]
fn queued_targeted_task_fails_when_its_target_leaves() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    h.submit(vec![with(call(1, "f"), &[1], 0)]);
    let actions = h.submit(vec![with(call(2, "f"), &[1], 0)]);
    assert!(sent(&actions).is_empty(), "engine 1 is full");
    let actions = h.unregister("b");
    let kinds: Vec<_> = delivered(&actions)
        .into_iter()
        .flat_map(|(_, o, _)| o)
        .map(|o| (o.id, error_of(&o).kind))
        .collect();
    assert!(kinds.contains(&(tid(1), ErrorKind::EngineLost)));
    assert!(kinds.contains(&(tid(2), ErrorKind::Unschedulable)));
    assert_eq!(h.status().tasks.queued, 0);
}

#[test]
fn engine_leaving_retries_elsewhere_or_fails_with_engine_lost() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    let actions = h.submit(vec![with(call(1, "f"), &[], 1), call(2, "f")]);
    assert_eq!(
        sent_to(&actions),
        [(EngineId(0), tid(1)), (EngineId(1), tid(2))]
    );
    // Engine 1 finishes, engine 0 leaves: task 1 is re-sent to 1 with its payload.
    h.finish("b", &[tid(2)], 10);
    let actions = h.unregister("a");
    let batches = sent(&actions);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].0, EngineId(1));
    assert_eq!(batches[0].1, [tid(1)]);
    assert_eq!(batches[0].2, [payload_of(tid(1))]);
    assert!(delivered(&actions).is_empty());

    // Without retries: EngineLost naming the engine and its host.
    let actions = h.submit(vec![call(3, "f")]);
    assert!(sent(&actions).is_empty(), "engine 1 is busy");
    h.finish("b", &[tid(1)], 10);
    let actions = h.unregister("b");
    let msgs = delivered(&actions);
    let outcome = &msgs[0].1[0];
    assert_eq!(outcome.id, tid(3));
    let err = error_of(outcome);
    assert_eq!(err.kind, ErrorKind::EngineLost);
    assert_eq!(err.engine, Some(EngineId(1)));
    assert!(
        err.message.contains("engine 1") && err.message.contains("host-b"),
        "{}",
        err.message
    );
}

#[test]
fn retries_never_reuse_an_engine_and_fail_when_none_is_left() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    let actions = h.submit(vec![with(call(1, "f"), &[], 5)]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let actions = h.unregister("a");
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(1))]);
    // Engine 0 comes back while the task runs on 1; then 1 dies. Engine 0 is blacklisted.
    h.register("a", &["f"]);
    let actions = h.unregister("b");
    assert!(sent(&actions).is_empty());
    let msgs = delivered(&actions);
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::EngineLost);
    assert!(err.message.contains("0, 1"), "{}", err.message);
}

/// Regression: a task that had used up its retries and then lost its engine was told to
/// "submit it with retries > 0".
#[test]
fn a_task_lost_after_its_last_retry_says_its_retries_were_used_up() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    h.register("c", &["f"]);
    let actions = h.submit(vec![with(call(1, "f"), &[], 1)]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let actions = h.unregister("a");
    let (retried_on, _) = sent_to(&actions)[0];
    let actions = h.unregister(if retried_on == EngineId(1) { "b" } else { "c" });
    let msgs = delivered(&actions);
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::EngineLost);
    assert_eq!(
        err.message,
        format!(
            "engine {retried_on} on host-{} was lost (unregistered) while running task {}, after its 1 retry had been used up (it had failed or been lost on engine(s) 0); submit it with more retries to have it re-run elsewhere",
            if retried_on == EngineId(1) { "b" } else { "c" },
            tid(1)
        )
    );
}

#[test]
fn retried_task_waits_while_no_engine_is_registered() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.submit(vec![with(call(1, "f"), &[], 1)]);
    let actions = h.unregister("a");
    assert!(delivered(&actions).is_empty());
    assert_eq!(h.status().tasks.queued, 1);
    let (_, actions) = h.register("b", &["f"]);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(1))]);
}

#[test]
fn late_and_duplicate_results_are_ignored() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    h.submit(vec![with(call(1, "f"), &[0], 0)]);
    h.submit(vec![with(call(2, "f"), &[], 1)]);
    // Task 2 went to engine 1 (engine 0 was busier). Engine 1 leaves, comes back.
    h.unregister("b");
    // Its result while gone is ignored…
    assert!(h.finish("b", &[tid(2)], 1).is_empty());
    h.register("b", &["f"]);
    // …task 2 was retried on engine 0; a late result from engine 1 is still ignored.
    let actions = h.finish("b", &[tid(2)], 1);
    assert!(delivered(&actions).is_empty());
    let actions = h.finish("a", &[tid(1), tid(2)], 1);
    assert_eq!(delivered(&actions)[0].1.len(), 2);
    // A duplicate from the right engine is ignored too.
    assert!(delivered(&h.finish("a", &[tid(2)], 1)).is_empty());
    assert_eq!(h.status().tasks.done, 2);
    // Results from a stranger are dropped.
    assert!(h.finish("zz", &[tid(1)], 1).is_empty());
}

#[test]
fn a_failed_task_with_retries_runs_again_elsewhere_then_reports_its_last_error() {
    let mut h = Harness::new(Hwm::Limit(1));
    for uuid in ["a", "b", "c"] {
        h.register(uuid, &["f"]);
    }
    let actions = h.submit(vec![with(call(1, "f"), &[], 1)]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let actions = h.fail("a", &[tid(1)], ErrorKind::Remote);
    assert!(delivered(&actions).is_empty(), "retried, not reported");
    let batches = sent(&actions);
    assert_eq!(batches.len(), 1);
    assert_ne!(batches[0].0, EngineId(0), "never the engine it failed on");
    assert_eq!(batches[0].2, [payload_of(tid(1))], "same argument");
    let second = ["a", "b", "c"][batches[0].0 .0 as usize];
    // Out of retries: the real error is delivered.
    let actions = h.fail(second, &[tid(1)], ErrorKind::Remote);
    let msgs = delivered(&actions);
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::Remote);
    assert_eq!(err.message, format!("remote error on {second}"));
    let q = h.core.queue_status();
    assert_eq!(q.engines.iter().map(|e| e.failed).sum::<u64>(), 2);

    // Bad arguments fail the same way on any engine: no retry.
    let actions = h.submit(vec![with(call(2, "f"), &[], 3)]);
    let (e, _) = sent_to(&actions)[0];
    let actions = h.fail(
        ["a", "b", "c"][e.0 as usize],
        &[tid(2)],
        ErrorKind::BadArguments,
    );
    assert_eq!(
        error_of(&delivered(&actions)[0].1[0]).kind,
        ErrorKind::BadArguments
    );
}

#[test]
fn a_failed_task_with_no_other_engine_reports_its_error() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.submit(vec![with(call(1, "f"), &[], 2)]);
    let actions = h.fail("a", &[tid(1)], ErrorKind::Timeout);
    assert_eq!(
        error_of(&delivered(&actions)[0].1[0]).kind,
        ErrorKind::Timeout
    );
}
