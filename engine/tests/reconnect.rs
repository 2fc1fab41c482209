//! In-process tests of an engine that loses its controller, and of time limits (to start and
//! to run): a real engine against a fake controller on 127.0.0.1.

use cluster_engine::{Engine, EngineError, EngineOptions, Whoami};
use protocol::{
    Assignment, ClientId, EngineId, ErrorKind, FromEngine, Status, TaskId, TaskOutcome, ToEngine,
    Work,
};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::{encode, registered, FakeController};

fn start(options: EngineOptions) -> JoinHandle<Result<(), EngineError>> {
    std::thread::spawn(move || Engine::builder().stock_functions().build().run(options))
}

/// A call with a run-time limit (`timeout_ms`) and a limit on its wait to start.
fn call(
    seq: u64,
    function: &str,
    timeout_ms: Option<u64>,
    start_within_ms: Option<u64>,
) -> Assignment {
    Assignment {
        id: TaskId::new(ClientId(3), seq),
        work: Work::Call {
            function: function.into(),
        },
        timeout_ms,
        start_within_ms,
    }
}

/// The next `Results` message's outcomes and payloads (registrations in between are
/// returned as `None`).
fn next_results(fake: &mut FakeController) -> Option<Vec<(TaskOutcome, Vec<u8>)>> {
    let got = fake.recv_engine();
    match got.msg {
        FromEngine::Results { results } => Some(results.into_iter().zip(got.payloads).collect()),
        _ => None,
    }
}

#[test]
fn a_function_past_its_time_limit_is_abandoned_and_the_engine_goes_on() {
    let mut fake = FakeController::new();
    let engine = start(EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(&route, &registered(4, 1000), &[]);
    let t = Instant::now();
    fake.send_engine(
        &route,
        &ToEngine::Tasks {
            tasks: vec![
                call(1, "busy_wait", Some(300), None),
                call(2, "echo", None, None),
                call(3, "echo", Some(5_000), None),
            ],
        },
        &[&encode(&3.0f64), &encode(&"after"), &encode(&"timed")],
    );
    let mut outcomes = Vec::new();
    while outcomes.len() < 3 {
        outcomes.extend(next_results(&mut fake).unwrap_or_default());
    }
    let elapsed = t.elapsed();
    let (first, _) = &outcomes[0];
    match &first.status {
        Status::Err(e) => {
            assert_eq!(e.kind, ErrorKind::Timeout);
            assert_eq!(e.engine, Some(EngineId(4)));
            assert!(
                e.message.contains("busy_wait") && e.message.contains("300 ms"),
                "{}",
                e.message
            );
        }
        Status::Ok => panic!("busy_wait should have timed out"),
    }
    assert!(first.elapsed_us >= 300_000, "{}", first.elapsed_us);
    // The others ran without waiting for the abandoned call (3 s).
    assert!(elapsed < Duration::from_millis(2_500), "{elapsed:?}");
    assert_eq!(outcomes[1].1, encode(&"after"));
    assert_eq!(outcomes[2].1, encode(&"timed"));
    fake.shut_down(&route);
    engine.join().unwrap().unwrap();
}

#[test]
fn a_timed_task_that_waited_past_its_limit_in_the_engine_queue_is_not_run() {
    let mut fake = FakeController::new();
    let engine = start(EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(&route, &registered(0, 1000), &[]);
    fake.send_engine(
        &route,
        &ToEngine::Tasks {
            tasks: vec![
                call(1, "sleep", None, None),
                call(2, "echo", Some(5_000), Some(200)),
                call(3, "echo", None, Some(5_000)),
                // Only a run-time limit, shorter than its wait: the wait does not count.
                call(4, "echo", Some(200), None),
            ],
        },
        &[
            &encode(&0.6f64),
            &encode(&"late"),
            &encode(&"in time"),
            &encode(&"run limit"),
        ],
    );
    let mut outcomes = Vec::new();
    let mut started = Vec::new();
    while outcomes.len() < 4 {
        let got = fake.recv_engine();
        match got.msg {
            FromEngine::Results { results } => {
                outcomes.extend(results.into_iter().zip(got.payloads))
            }
            FromEngine::Started { ids } => started.extend(ids),
            _ => {}
        }
    }
    // Only the task with a run-time limit that did run is reported as started.
    assert_eq!(started, [TaskId::new(ClientId(3), 4)]);
    match &outcomes[1].0.status {
        Status::Err(e) => {
            assert_eq!(e.kind, ErrorKind::Timeout);
            assert!(e.message.contains("did not start"), "{}", e.message);
        }
        Status::Ok => panic!("task 2 should not have run"),
    }
    assert_eq!(outcomes[1].0.started_us, 0);
    assert_eq!(outcomes[2].1, encode(&"in time"));
    assert_eq!(outcomes[3].0.status, Status::Ok);
    assert_eq!(outcomes[3].1, encode(&"run limit"));
    fake.shut_down(&route);
    engine.join().unwrap().unwrap();
}

#[test]
fn a_silent_controller_gets_a_new_registration_with_the_old_id() {
    let mut fake = FakeController::new();
    let engine = start(EngineOptions::new(fake.file.clone()));
    let (route, first) = fake.expect_register();
    assert_eq!(first.engine_id, None);
    fake.send_engine(&route, &registered(7, 100), &[]);
    fake.ping(&route, 1);
    fake.recv_heartbeat();
    // No more pings: after a few seconds the engine registers again, asking for id 7.
    let t = Instant::now();
    let again = match fake.recv_engine().msg {
        FromEngine::Register(r) => r,
        other => panic!("expected a registration, got {other:?}"),
    };
    let waited = t.elapsed();
    assert!(waited >= Duration::from_millis(1_500), "{waited:?}");
    assert!(waited < Duration::from_secs(6), "{waited:?}");
    assert_eq!(again.uuid, first.uuid);
    assert_eq!(again.engine_id, Some(EngineId(7)));
    // A controller that gives another id: the engine is that engine from now on.
    fake.send_engine(&route, &registered(9, 100), &[]);
    fake.send_engine(
        &route,
        &ToEngine::Tasks {
            tasks: vec![call(1, "whoami", None, None)],
        },
        &[&encode(&())],
    );
    let results = loop {
        if let Some(r) = next_results(&mut fake) {
            break r;
        }
    };
    let me: Whoami = protocol::decode(&results[0].1).unwrap();
    assert_eq!(me.engine_id, EngineId(9));
    assert_eq!(results[0].0.engine, Some(EngineId(9)));
    fake.shut_down(&route);
    engine.join().unwrap().unwrap();
}

/// An engine that registers again (the controller may have restarted and forgotten) names
/// the tasks waiting in its own queue, so they are not handed to another engine as well.
#[test]
fn a_registration_after_silence_names_the_tasks_the_engine_holds() {
    let mut fake = FakeController::new();
    let engine = start(EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(&route, &registered(3, 100), &[]);
    // A long task, then two that wait behind it; no pings meanwhile.
    fake.send_engine(
        &route,
        &ToEngine::Tasks {
            tasks: vec![
                call(1, "sleep", None, None),
                call(2, "echo", None, None),
                call(3, "echo", None, None),
            ],
        },
        &[&encode(&2.5f64), &encode(&"a"), &encode(&"b")],
    );
    // The finished result comes first, then the registration.
    let mut outcomes = Vec::new();
    let again = loop {
        let got = fake.recv_engine();
        match got.msg {
            FromEngine::Register(r) => break r,
            FromEngine::Results { results } => {
                outcomes.extend(results.into_iter().zip(got.payloads));
            }
            _ => {}
        }
    };
    assert_eq!(
        outcomes.len(),
        1,
        "the sleep's result precedes the registration"
    );
    assert_eq!(again.engine_id, Some(EngineId(3)));
    assert_eq!(
        again.held,
        [TaskId::new(ClientId(3), 2), TaskId::new(ClientId(3), 3)]
    );
    fake.send_engine(&route, &registered(3, 100), &[]);
    while outcomes.len() < 3 {
        outcomes.extend(next_results(&mut fake).unwrap_or_default());
    }
    assert_eq!(outcomes[2].1, encode(&"b"));
    fake.shut_down(&route);
    engine.join().unwrap().unwrap();
}
