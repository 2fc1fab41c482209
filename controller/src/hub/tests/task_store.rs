//! With a task store: every task's life leaves the core as records, one batch an event; a
//! result delivered to its client is acknowledged; memory holds a bounded cache of results;
//! what memory no longer holds is looked up; a restart queues the unfinished tasks again.

use super::*;
use ::store::{Answer, Lookup, Query, Record, RecoveredTask, TaskState as StoredState};

fn persisting(cache_bytes: usize) -> Harness {
    Harness::with_config(
        CoreConfig {
            hwm: Hwm::Limit(0),
            persist: true,
            result_cache_bytes: cache_bytes,
            epoch_us: 1_000_000,
            ..Default::default()
        },
        Duration::ZERO,
    )
}

fn records(actions: &[Action]) -> Vec<Record> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Record(r) => Some(r.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn lookups(actions: &[Action]) -> Vec<(u64, Vec<TaskId>)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Lookup {
                tag,
                query: Query::Lookup(ids),
            } => Some((*tag, ids.clone())),
            _ => None,
        })
        .collect()
}

/// The store's answer for task `seq`, finished on engine 0 with `payload` kept.
fn finished_on_disk(seq: u64, payload: &[u8]) -> (TaskId, Lookup) {
    let outcome = TaskOutcome {
        id: tid(seq),
        engine: Some(EngineId(0)),
        status: Status::Ok,
        started_us: 1,
        elapsed_us: 5,
    };
    let lookup = Lookup::Finished {
        outcome,
        payload: Some(Arc::new(payload.to_vec())),
        payload_state: ::store::PayloadState::Kept,
    };
    (tid(seq), lookup)
}

fn kinds(records: &[Record]) -> Vec<&'static str> {
    records
        .iter()
        .map(|r| match r {
            Record::Submitted(_) => "submitted",
            Record::Started { .. } => "started",
            Record::Requeued { .. } => "requeued",
            Record::Finished(_) => "finished",
            Record::Acknowledged { .. } => "acknowledged",
            Record::Purged(_) => "purged",
        })
        .collect()
}

#[test]
fn a_task_life_is_recorded_in_one_batch_an_event_and_its_delivery_acknowledged() {
    let mut h = persisting(1 << 20);
    h.hello(CLIENT);
    h.register("a", &["f"]);
    h.at(secs(1));
    let actions = h.submit(vec![call(1, "f")]);
    let batches = actions
        .iter()
        .filter(|a| matches!(a, Action::Record(_)))
        .count();
    assert_eq!(batches, 1);
    let recs = records(&actions);
    assert_eq!(kinds(&recs), ["submitted", "started"]);
    let Record::Submitted(s) = &recs[0] else {
        unreachable!()
    };
    // Wall-clock times: the epoch plus the core's clock.
    assert_eq!(s.submitted_us, 2_000_000);
    assert_eq!(s.argument.as_deref(), Some(&payload_of(tid(1))));
    h.at(secs(2));
    let recs = records(&h.finish("a", &[tid(1)], 5));
    assert_eq!(kinds(&recs), ["finished", "acknowledged"]);
    assert!(matches!(recs[1], Record::Acknowledged { id, time_us: 3_000_000 } if id == tid(1)));
}

#[test]
fn a_result_whose_client_is_gone_is_recorded_but_not_acknowledged() {
    let mut h = persisting(1 << 20);
    h.hello(CLIENT);
    h.register("a", &["f"]);
    h.submit(vec![call(1, "f")]);
    h.core.on_client_unreachable(CLIENT);
    let recs = records(&h.finish("a", &[tid(1)], 5));
    assert_eq!(kinds(&recs), ["finished"]);
}

#[test]
fn memory_holds_a_bounded_cache_of_results_and_the_rest_is_looked_up() {
    // Room for about ten results of ~170 bytes.
    let mut h = persisting(3600);
    h.hello(CLIENT);
    h.register("a", &["f"]);
    for round in 0..100u64 {
        let ids: Vec<u64> = (round * 100 + 1..=round * 100 + 100).collect();
        h.submit(ids.iter().map(|&i| call(i, "f")).collect());
        let tids: Vec<TaskId> = ids.iter().map(|&i| tid(i)).collect();
        h.finish("a", &tids, 5);
        assert!(h.core.result_bytes() <= 3600, "round {round}");
    }
    assert!(h.core.results.len() <= 10);
    assert!(h.core.results.evicted() >= 9_990);
    assert_eq!(h.tables().tasks, 0);
    // A recent result is answered from memory; an old one is looked up.
    let actions = h.client(
        CLIENT,
        FromClient::Fetch {
            ids: vec![tid(10_000)],
        },
    );
    assert_eq!(delivered(&actions).len(), 1);
    let actions = h.client(
        CLIENT,
        FromClient::Fetch {
            ids: vec![tid(3), tid(10_000)],
        },
    );
    assert!(delivered(&actions).is_empty());
    let asked = lookups(&actions);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].1, vec![tid(3)]);
    assert_eq!(h.core.lookups_pending(), 1);
    let answer = Answer::Lookup(Ok(vec![finished_on_disk(3, b"res-3")]));
    let actions = h.core.on_lookup_answer(asked[0].0, answer, h.now);
    let got = delivered(&actions);
    assert_eq!(got.len(), 1);
    let ids: Vec<TaskId> = got[0].1.iter().map(|o| o.id).collect();
    assert_eq!(ids, [tid(3), tid(10_000)]);
    assert_eq!(got[0].2[0], b"res-3");
    assert_eq!(h.core.lookups_pending(), 0);
}

#[test]
fn without_a_store_results_stay_until_purged_and_nothing_is_recorded() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.hello(CLIENT);
    h.register("a", &["f"]);
    let actions = h.submit((1..=500).map(|i| call(i, "f")).collect());
    assert!(records(&actions).is_empty());
    let tids: Vec<TaskId> = (1..=500).map(tid).collect();
    h.finish("a", &tids, 5);
    assert_eq!(h.core.results.len(), 500);
    let actions = h.client(CLIENT, FromClient::Fetch { ids: vec![tid(1)] });
    assert!(lookups(&actions).is_empty());
}

#[test]
fn a_restart_queues_the_unfinished_again_and_answers_resubmitted_finished_tasks_from_the_store() {
    let mut h = Harness::with_config(
        CoreConfig {
            hwm: Hwm::Limit(0),
            persist: true,
            stored_clients_upto: 1,
            first_client_id: 2,
            ..Default::default()
        },
        Duration::ZERO,
    );
    let recovered = RecoveredTask {
        request: call(2, "f"),
        client: ClientId(1),
        state: StoredState::Running,
        engine: Some(EngineId(0)),
        submitted_us: 1,
        argument_size: 3,
        argument: Some(Arc::new(b"arg".to_vec())),
    };
    assert_eq!(h.core.recover(vec![recovered]), 1);
    assert_eq!(h.hello(b"new"), ClientId(2));
    let (_, actions) = h.register("a", &["f"]);
    let sent = sent(&actions);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1, [tid(2)]);
    assert_eq!(sent[0].2[0], b"arg");
    // Task 1 finished before the crash; its client submits 1 and 2 again.
    let actions = h.submit(vec![call(1, "f"), call(2, "f")]);
    let asked = lookups(&actions);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].1, [tid(1)]);
    let answer = Answer::Lookup(Ok(vec![finished_on_disk(1, b"one")]));
    let actions = h.core.on_lookup_answer(asked[0].0, answer, h.now);
    // Task 1 is answered, not run again; task 2 keeps running where it is.
    assert!(sent_to(&actions).is_empty());
    let got = delivered(&actions);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].1[0].id, tid(1));
    let actions = h.finish("a", &[tid(2)], 5);
    assert_eq!(delivered(&actions)[0].1[0].id, tid(2));
}

fn replies(actions: &[Action]) -> Vec<ToClient> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::ToClient { msg, .. } => Some(msg.clone()),
            _ => None,
        })
        .collect()
}

fn queries(actions: &[Action]) -> Vec<(u64, Query)> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Lookup { tag, query } => Some((*tag, query.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn history_and_status_wait_for_the_store_and_purge_before_reaches_it() {
    let mut h = persisting(1 << 20);
    h.hello(CLIENT);
    let filter = protocol::HistoryFilter {
        state: Some(protocol::RecordState::Failed),
        function: Some("f".into()),
        limit: Some(5),
        ..Default::default()
    };
    let actions = h.client(CLIENT, FromClient::History { filter });
    assert!(replies(&actions).is_empty(), "answered before the store");
    let asked = queries(&actions);
    let [(tag, Query::History(f))] = &asked[..] else {
        panic!("{asked:?}")
    };
    assert_eq!(f.state, Some(StoredState::Failed));
    assert_eq!((f.function.as_deref(), f.limit), (Some("f"), Some(5)));
    let record = ::store::TaskRecord {
        id: tid(1),
        client: protocol::ClientId(1),
        work: None,
        options: Default::default(),
        function: "f".into(),
        state: StoredState::Failed,
        submitted_us: 7,
        started_us: None,
        completed_us: Some(9),
        elapsed_us: Some(0),
        engine: None,
        error: None,
        argument_size: 3,
        result_size: Some(0),
        result: ::store::PayloadState::Kept,
        acknowledged_us: None,
    };
    let actions = h
        .core
        .on_lookup_answer(*tag, Answer::History(Ok(vec![record])), h.now);
    let [ToClient::History { records: listed }] = &replies(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(listed[0].id, tid(1));
    assert_eq!(listed[0].state, protocol::RecordState::Failed);
    assert_eq!(listed[0].result, "kept");

    // Status waits for the per-function figures; a store that fails still gets a report.
    let actions = h.client(CLIENT, FromClient::Status);
    let asked = queries(&actions);
    let [(tag, Query::Stats)] = &asked[..] else {
        panic!("{asked:?}")
    };
    let stats = ::store::FunctionStats {
        function: "f".into(),
        queued: 0,
        running: 1,
        ok: 2,
        failed: 3,
        p50_us: Some(10),
        p99_us: Some(20),
        mean_us: Some(12),
    };
    let actions = h
        .core
        .on_lookup_answer(*tag, Answer::Stats(Ok(vec![stats])), h.now);
    let [ToClient::Status(report)] = &replies(&actions)[..] else {
        panic!("{actions:?}")
    };
    let f = &report.functions.as_ref().unwrap()[0];
    assert_eq!((f.ok, f.failed, f.p99_us), (2, 3, Some(20)));
    let actions = h.client(CLIENT, FromClient::Status);
    let (tag, _) = queries(&actions)[0].clone();
    let actions =
        h.core
            .on_lookup_answer(tag, Answer::Stats(Err(::store::StoreError::Closed)), h.now);
    let [ToClient::Status(report)] = &replies(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert_eq!(report.functions, None);

    let actions = h.client(CLIENT, FromClient::PurgeBefore { before_us: 123 });
    assert!(matches!(
        &records(&actions)[..],
        [Record::Purged(::store::Purge::Before(123))]
    ));
    assert_eq!(replies(&actions), [ToClient::Ack]);
}

#[test]
fn without_a_store_history_is_refused_saying_why_and_status_is_at_once() {
    let mut h = Harness::new(Hwm::Limit(0));
    h.hello(CLIENT);
    let actions = h.client(
        CLIENT,
        FromClient::History {
            filter: Default::default(),
        },
    );
    let [ToClient::Error { message }] = &replies(&actions)[..] else {
        panic!("{actions:?}")
    };
    assert!(message.contains("db = \"none\""), "{message}");
    let actions = h.client(CLIENT, FromClient::Status);
    assert!(matches!(&replies(&actions)[..], [ToClient::Status(_)]));
    assert!(queries(&actions).is_empty());
}

/// Regression (seen in the Python suite): a finished task whose result had left memory was
/// reported `unknown` by an abort; the store is asked before calling an id unknown.
#[test]
fn an_abort_asks_the_store_about_ids_memory_does_not_know() {
    // No room for results in memory: every delivered one is gone at once.
    let mut h = persisting(0);
    h.hello(CLIENT);
    h.register("a", &["f"]);
    h.submit(vec![call(1, "f")]);
    h.finish("a", &[tid(1)], 5);
    let actions = h.client(
        CLIENT,
        FromClient::Abort {
            ids: vec![tid(1), tid(99)],
        },
    );
    assert!(
        replies(&actions).is_empty(),
        "the answer waits for the store"
    );
    let asked = lookups(&actions);
    assert_eq!(asked.len(), 1);
    assert_eq!(asked[0].1, vec![tid(1), tid(99)]);
    let answer = Answer::Lookup(Ok(vec![
        finished_on_disk(1, b"res-1"),
        (tid(99), Lookup::Unknown),
    ]));
    let actions = h.core.on_lookup_answer(asked[0].0, answer, h.now);
    match &replies(&actions)[..] {
        [ToClient::Aborted {
            aborted,
            running,
            finished,
            unknown,
        }] => {
            assert!(aborted.is_empty() && running.is_empty());
            assert_eq!(finished, &[tid(1)]);
            assert_eq!(unknown, &[tid(99)]);
        }
        other => panic!("expected one Aborted reply, got {other:?}"),
    }
}

/// Regression (seen in the Python suite): a submit that waited for the store was overtaken by
/// the same client's abort, which then called the task unknown. A client's messages are now
/// handled in the order it sent them.
#[test]
fn a_clients_messages_wait_behind_its_submit_that_asks_the_store() {
    let mut h = Harness::with_config(
        CoreConfig {
            hwm: Hwm::Limit(0),
            persist: true,
            stored_clients_upto: 1,
            first_client_id: 2,
            ..Default::default()
        },
        Duration::ZERO,
    );
    h.hello(CLIENT);
    h.register("a", &["f"]);
    // Client 1's ids may be on disk from before a restart: the submit asks the store first.
    let actions = h.submit(vec![call(5, "f")]);
    let asked = lookups(&actions);
    assert_eq!(asked.len(), 1);
    let actions = h.client(CLIENT, FromClient::Abort { ids: vec![tid(5)] });
    assert!(
        actions.is_empty(),
        "the abort waits behind the submit: {actions:?}"
    );
    let answer = Answer::Lookup(Ok(vec![(tid(5), Lookup::Unknown)]));
    let actions = h.core.on_lookup_answer(asked[0].0, answer, h.now);
    match &replies(&actions)[..] {
        [ToClient::Aborted {
            aborted,
            running,
            unknown,
            ..
        }] => {
            assert!(unknown.is_empty(), "{unknown:?}");
            assert_eq!(aborted.len() + running.len(), 1);
        }
        other => panic!("expected one Aborted reply, got {other:?}"),
    }
    assert_eq!(h.core.lookups_pending(), 0);
}

/// Memory flat at any task count: the task table a burst of submissions grew gives its room
/// back once the burst has run, so that a controller that saw one 100k-task map does not keep
/// room for 100k tasks.
#[test]
fn the_task_table_shrinks_once_a_burst_has_run() {
    let mut h = persisting(1 << 20);
    h.hello(CLIENT);
    h.register("a", &["f"]);
    let n = 20_000;
    h.submit((0..n).map(|i| call(i, "f")).collect());
    let grown = h.core.tasks.capacity();
    assert!(grown >= n as usize, "{grown}");
    let ids: Vec<TaskId> = (0..n).map(tid).collect();
    for chunk in ids.chunks(500) {
        h.finish("a", chunk, 5);
    }
    assert_eq!(h.core.tasks.len(), 0);
    let left = h.core.tasks.capacity();
    assert!(
        left <= 4096 * 2,
        "room for {left} tasks left after the burst"
    );
    // And it still works afterwards.
    let out = h.submit(vec![call(n, "f")]);
    assert_eq!(sent_to(&out).len(), 1);
}
