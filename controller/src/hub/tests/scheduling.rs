//! Scheduling: which engine gets a task under each scheduler, limits per engine, one message an
//! engine a pass, targets, functions nobody offers, and the order classes are served in.

use super::*;
use protocol::CommandSpec;

#[test]
fn leastload_picks_fewest_outstanding_then_least_recently_assigned() {
    let mut h = Harness::new(Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        h.register(uuid, &["f"]);
    }
    let mut next = 0;
    let mut one = |h: &mut Harness| {
        next += 1;
        let actions = h.submit(vec![call(next, "f")]);
        let to = sent_to(&actions);
        assert_eq!(to.len(), 1);
        to[0].0 .0
    };
    // All idle: ties go to the never-assigned, lowest id first.
    assert_eq!(one(&mut h), 0);
    assert_eq!(one(&mut h), 1);
    assert_eq!(one(&mut h), 2);
    // All hold one: least recently assigned is engine 0.
    assert_eq!(one(&mut h), 0);
    // Engine 1 finishes its task: it is now the least loaded.
    h.finish("b", &[tid(2)], 10);
    assert_eq!(one(&mut h), 1);
    // 0 holds 2, 1 and 2 hold 1: 2 was assigned before 1.
    assert_eq!(one(&mut h), 2);
    assert_eq!(one(&mut h), 1);
}

#[test]
fn tasks_of_one_pass_go_to_each_engine_as_one_message() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    let actions = h.submit((1..=10).map(|i| call(i, "f")).collect());
    let batches = sent(&actions);
    assert_eq!(batches.len(), 2, "one Tasks message per engine");
    for (engine, ids, payloads) in &batches {
        assert_eq!(ids.len(), 5, "engine {engine} gets half");
        // Positional payloads, moved untouched.
        for (id, p) in ids.iter().zip(payloads) {
            assert_eq!(p, &payload_of(*id));
        }
    }
    // Results of one message go back to the client as one message, each stored.
    let (_, ids, _) = &batches[0];
    let uuid = if batches[0].0 == EngineId(0) {
        "a"
    } else {
        "b"
    };
    let back = h.finish(uuid, ids, 5);
    let msgs = delivered(&back);
    assert_eq!(msgs.len(), 1);
    let (route, outcomes, payloads) = &msgs[0];
    assert_eq!(route, CLIENT);
    assert_eq!(outcomes.len(), 5);
    assert!(outcomes.iter().all(|o| o.engine == Some(batches[0].0)));
    assert_eq!(payloads[0], format!("res-{}", outcomes[0].id).into_bytes());
    assert_eq!(h.status().tasks.stored, 5);
}

#[test]
fn hwm_limit_one_keeps_one_outstanding_and_drains_as_results_return() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    let actions = h.submit((1..=5).map(|i| call(i, "f")).collect());
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let status = h.status();
    assert_eq!((status.tasks.queued, status.tasks.running), (4, 1));
    assert_eq!(status.engines[0].hwm, 1);
    for i in 1..=4 {
        let actions = h.finish("a", &[tid(i)], 1);
        assert_eq!(sent_to(&actions), [(EngineId(0), tid(i + 1))], "in order");
        assert_eq!(h.engine_status(0).outstanding, 1);
    }
    let actions = h.finish("a", &[tid(5)], 1);
    assert!(sent(&actions).is_empty());
    let status = h.status();
    assert_eq!((status.tasks.queued, status.tasks.running), (0, 0));
    assert_eq!(status.tasks.done, 5);
    assert_eq!(status.engines[0].completed, 5);
}

#[test]
fn auto_hwm_grows_for_short_tasks_and_stays_one_for_long_ones() {
    let mut h = Harness::new(Hwm::Auto);
    h.register("short", &["f"]);
    let actions = h.submit((1..=1000).map(|i| call(i, "f")).collect());
    assert_eq!(sent_to(&actions).len(), 1, "no samples yet: one at a time");
    assert_eq!(h.engine_status(0).hwm, 1);
    // 10 µs tasks: the limit doubles with each result (slow start) up to
    // budget 2 ms / 10 µs = 200 in flight.
    let actions = h.finish("short", &[tid(1)], 10);
    let batches = sent(&actions);
    assert_eq!(batches.len(), 1);
    assert_eq!(batches[0].1.len(), 2);
    assert_eq!(h.engine_status(0).hwm, 2);
    let actions = h.finish("short", &[tid(2), tid(3)], 10);
    assert_eq!(sent(&actions)[0].1.len(), 8, "two results: 2 → 4 → 8");
    for i in 4..=11 {
        h.finish("short", &[tid(i)], 10);
    }
    assert_eq!(h.engine_status(0).hwm, 200);
    assert_eq!(h.engine_status(0).outstanding, 200);

    let mut h = Harness::new(Hwm::Auto);
    h.register("long", &["f"]);
    h.submit((1..=5).map(|i| call(i, "f")).collect());
    for i in 1..=4 {
        let actions = h.finish("long", &[tid(i)], 500_000);
        assert_eq!(sent_to(&actions), [(EngineId(0), tid(i + 1))]);
        assert_eq!(h.engine_status(0).hwm, 1);
    }
}

#[test]
fn unknown_function_fails_fast_naming_what_is_offered() {
    let mut h = Harness::new(Hwm::Auto);
    h.register("a", &["noop", "echo", "__push", "__pull"]);
    h.register("b", &["sleep", "__clear"]);
    let actions = h.submit(vec![call(1, "nth_prime")]);
    assert!(sent(&actions).is_empty());
    let msgs = delivered(&actions);
    let err = error_of(&msgs[0].1[0]);
    assert_eq!(err.kind, ErrorKind::UnknownFunction);
    // The engines' built-in `__*` functions are not listed (regression: they were).
    assert_eq!(
        err.message,
        "no registered engine offers function \"nth_prime\"; offered: echo, noop, sleep"
    );
    assert_eq!(
        msgs[1 - 1].2,
        [Vec::<u8>::new()],
        "empty payload for a failure"
    );
    // The failure is stored like any result.
    let fetched = h.client(CLIENT, FromClient::Fetch { ids: vec![tid(1)] });
    assert_eq!(delivered(&fetched).len(), 1);

    // Commands run on any engine.
    let cmd = TaskRequest {
        id: tid(2),
        work: Work::Command(CommandSpec {
            program: "true".into(),
            ..Default::default()
        }),
        options: TaskOptions::default(),
    };
    assert_eq!(sent_to(&h.submit(vec![cmd])).len(), 1);
}

#[test]
fn with_no_engine_tasks_wait_and_run_when_one_registers() {
    let mut h = Harness::new(Hwm::Auto);
    let actions = h.submit(vec![call(1, "f"), call(2, "g")]);
    assert!(actions.is_empty(), "{actions:?}");
    assert_eq!(h.status().tasks.queued, 2);
    // An engine offering only f: the f task runs, the g task can never run and fails.
    let (_, actions) = h.register("a", &["f"]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(1))]);
    let msgs = delivered(&actions);
    assert_eq!(msgs[0].1[0].id, tid(2));
    assert_eq!(error_of(&msgs[0].1[0]).kind, ErrorKind::UnknownFunction);
}

#[test]
fn targets_are_honoured_and_missing_targets_fail() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    h.register("c", &["g"]);
    // Engine 1 is busier than 0 but it is the only target.
    h.submit(vec![with(call(1, "f"), &[1], 0)]);
    let actions = h.submit(vec![with(call(2, "f"), &[1], 0)]);
    assert_eq!(sent_to(&actions), [(EngineId(1), tid(2))]);
    // Targets that do not exist are dropped if another target exists…
    let actions = h.submit(vec![with(call(3, "f"), &[0, 7], 0)]);
    assert_eq!(sent_to(&actions), [(EngineId(0), tid(3))]);
    // …and fail the task if none does.
    let actions = h.submit(vec![with(call(4, "f"), &[7, 9], 0)]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert_eq!(err.kind, ErrorKind::Unschedulable);
    assert!(err.message.contains("7, 9"), "{}", err.message);
    // A target that exists but lacks the function.
    let actions = h.submit(vec![with(call(5, "f"), &[2], 0)]);
    let err = error_of(&delivered(&actions)[0].1[0]).clone();
    assert_eq!(err.kind, ErrorKind::UnknownFunction);
    assert!(err.message.contains("they offer: g"), "{}", err.message);
}

#[test]
fn classes_are_served_in_submission_order() {
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f", "g"]);
    // Interleaved functions make separate queues; a free slot takes the oldest head.
    h.submit(vec![call(1, "f"), call(2, "g"), call(3, "f"), call(4, "g")]);
    let mut order = vec![tid(1)];
    for _ in 0..3 {
        let last = *order.last().unwrap();
        let actions = h.finish("a", &[last], 1);
        order.push(sent_to(&actions)[0].1);
    }
    assert_eq!(order, [tid(1), tid(2), tid(3), tid(4)]);
}

#[test]
fn ten_thousand_queued_tasks_drain_one_by_one() {
    // Would take minutes if a result scanned the queue.
    let mut h = Harness::new(Hwm::Limit(1));
    h.register("a", &["f"]);
    h.register("b", &["f"]);
    let n = 10_000;
    let actions = h.submit((1..=n).map(|i| call(i, "f")).collect());
    let mut running: Vec<(EngineId, TaskId)> = sent_to(&actions);
    let mut done = 0;
    while let Some((engine, task)) = running.pop() {
        let uuid = if engine == EngineId(0) { "a" } else { "b" };
        let actions = h.finish(uuid, &[task], 1);
        done += delivered(&actions).len();
        running.extend(sent_to(&actions));
    }
    assert_eq!(done as u64, n);
    assert_eq!(h.status().tasks.done, n);
}

#[test]
fn lru_takes_the_least_recently_assigned_even_if_busier() {
    let mut h = Harness::with_scheduler(SchedulerKind::Lru, Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        h.register(uuid, &["f"]);
    }
    assert_eq!(h.status().controller.scheduler, "lru");
    let picks: Vec<u32> = (1..=6).map(|i| h.one_to(i).unwrap()).collect();
    assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
    // Engine 2 finishes everything: leastload would pick it, lru still takes 0.
    h.finish("c", &[tid(3), tid(6)], 5);
    assert_eq!(h.one_to(7), Some(0));
}

#[test]
fn random_schedulers_spread_over_every_engine_and_respect_limits() {
    for kind in [
        SchedulerKind::PlainRandom,
        SchedulerKind::TwoBin,
        SchedulerKind::Weighted,
    ] {
        let mut h = Harness::with_scheduler(kind, Hwm::Limit(0));
        for uuid in ["a", "b", "c", "d"] {
            h.register(uuid, &["f"]);
        }
        let mut counts = [0u32; 4];
        for seq in 1..=400 {
            let e = h.one_to(seq).unwrap();
            counts[e as usize] += 1;
            // Finish at once so that loads stay level (weighted favours idle engines).
            h.finish(["a", "b", "c", "d"][e as usize], &[tid(seq)], 5);
        }
        assert!(counts.iter().all(|&c| c > 40), "{kind}: {counts:?}");

        // With a limit of one, nobody ever gets a second task.
        let mut h = Harness::with_scheduler(kind, Hwm::Limit(1));
        for uuid in ["a", "b", "c"] {
            h.register(uuid, &["f"]);
        }
        let actions = h.submit((1..=5).map(|i| call(i, "f")).collect());
        let mut to: Vec<u32> = sent_to(&actions).iter().map(|(e, _)| e.0).collect();
        to.sort();
        assert_eq!(to, [0, 1, 2], "{kind}");
        assert_eq!(h.status().tasks.queued, 2);
    }
}

#[test]
fn weighted_prefers_idle_engines() {
    let mut h = Harness::with_scheduler(SchedulerKind::Weighted, Hwm::Limit(0));
    for uuid in ["a", "b", "c"] {
        h.register(uuid, &["f"]);
    }
    // Load 0 and 1 with three tasks each (targeted), leave 2 idle.
    let mut reqs = Vec::new();
    for i in 0..6 {
        reqs.push(with(call(100 + i, "f"), &[(i % 2) as u32], 0));
    }
    h.submit(reqs);
    for seq in 1..=50 {
        assert_eq!(h.one_to(seq), Some(2));
        h.finish("c", &[tid(seq)], 5);
    }
}
