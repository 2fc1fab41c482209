//! In-process tests: a real engine against a fake controller on 127.0.0.1.

use cluster_engine::{Engine, EngineError, EngineOptions, Whoami};
use protocol::{
    Assignment, ClientId, CommandOutput, CommandSpec, EngineId, ErrorKind, FromEngine, Heartbeat,
    Status, TaskId, ToEngine, Work,
};
use std::collections::HashMap;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use testkit::{encode, FakeController};

fn start(engine: Engine, options: EngineOptions) -> JoinHandle<Result<(), EngineError>> {
    std::thread::spawn(move || engine.run(options))
}

fn stock() -> Engine {
    Engine::builder()
        .stock_functions()
        .function("fail", |x: u32| Err::<u32, _>(format!("refusing {x}")))
        .build()
}

fn task(seq: u64, work: Work) -> Assignment {
    Assignment {
        id: TaskId::new(ClientId(3), seq),
        work,
        timeout_ms: None,
        start_within_ms: None,
    }
}

fn call(function: &str) -> Work {
    Work::Call {
        function: function.into(),
    }
}

/// Outcomes by task id: status, payload and the engine that ran it.
type ById = HashMap<TaskId, (Status, Vec<u8>, Option<EngineId>)>;

/// Collects results until `n` outcomes arrived; returns them by id and the number of
/// messages they came in.
fn collect(fake: &mut FakeController, n: usize) -> (ById, usize) {
    let mut out = HashMap::new();
    let mut messages = 0;
    while out.len() < n {
        let got = fake.recv_engine();
        match got.msg {
            FromEngine::Results { results } => {
                messages += 1;
                assert_eq!(results.len(), got.payloads.len(), "one payload per outcome");
                for (o, p) in results.into_iter().zip(got.payloads) {
                    assert!(o.started_us > 0);
                    out.insert(o.id, (o.status, p, o.engine));
                }
            }
            other => panic!("expected results, got {other:?}"),
        }
    }
    (out, messages)
}

#[test]
fn registers_runs_a_batch_answers_pings_and_shuts_down() {
    let mut fake = FakeController::new();
    let engine = start(stock(), EngineOptions::new(fake.file.clone()));

    let (route, reg) = fake.expect_register();
    assert_eq!(route, reg.uuid.as_bytes(), "the routing id is the uuid");
    assert_eq!(reg.pid, std::process::id());
    assert_eq!(reg.slots, 1);
    for f in [
        "noop",
        "echo",
        "nth_prime",
        "sum_range",
        "sleep",
        "busy_wait",
        "whoami",
        "fail",
    ] {
        assert!(reg.functions.iter().any(|g| g == f), "{f} offered");
    }
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(5),
            heartbeat_period_ms: 100,
        },
        &[],
    );

    let tasks = vec![
        task(1, call("nth_prime")),
        task(2, call("sum_range")),
        task(3, call("echo")),
        task(4, call("nope")),
        task(5, call("whoami")),
        task(
            6,
            Work::Map {
                function: "nth_prime".into(),
            },
        ),
        task(7, call("fail")),
        task(8, call("nth_prime")),
        task(
            9,
            Work::Command(CommandSpec {
                program: "echo".into(),
                args: vec!["hello".into()],
                ..Default::default()
            }),
        ),
        task(10, call("noop")),
    ];
    let payloads = [
        encode(&999u64),
        encode(&10u64),
        encode(&"hi"),
        encode(&()),
        encode(&()),
        encode(&[0u64, 1, 2]),
        encode(&3u32),
        encode(&"not a number"),
        vec![],
        vec![],
    ];
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    fake.send_engine(&route, &ToEngine::Tasks { tasks }, &refs);

    let (results, _) = collect(&mut fake, 10);
    let id = |seq| TaskId::new(ClientId(3), seq);
    let ok = |seq: u64| -> Vec<u8> {
        let (status, payload, engine) = &results[&id(seq)];
        assert_eq!(*status, Status::Ok, "task {seq}");
        assert_eq!(*engine, Some(EngineId(5)));
        payload.clone()
    };
    let err = |seq: u64| -> (ErrorKind, String) {
        let (status, payload, _) = &results[&id(seq)];
        assert!(payload.is_empty(), "failed outcomes have empty payloads");
        match status {
            Status::Err(e) => {
                assert_eq!(e.engine, Some(EngineId(5)));
                (e.kind, e.message.clone())
            }
            Status::Ok => panic!("task {seq} should have failed"),
        }
    };
    assert_eq!(protocol::decode::<u64>(&ok(1)).unwrap(), 7919);
    assert_eq!(protocol::decode::<u64>(&ok(2)).unwrap(), 45);
    assert_eq!(ok(3), encode(&"hi"));
    assert_eq!(err(4).0, ErrorKind::UnknownFunction);
    let me: Whoami = protocol::decode(&ok(5)).unwrap();
    assert_eq!((me.engine_id, me.pid), (EngineId(5), std::process::id()));
    assert_eq!(protocol::decode::<Vec<u64>>(&ok(6)).unwrap(), vec![2, 3, 5]);
    assert_eq!(err(7), (ErrorKind::Remote, "refusing 3".into()));
    let (kind, message) = err(8);
    assert_eq!(kind, ErrorKind::BadArguments);
    assert!(message.contains("u64"), "{message}");
    let out: CommandOutput = protocol::decode(&ok(9)).unwrap();
    assert_eq!(out.stdout, b"hello\n");
    assert_eq!(ok(10), vec![0xc0], "noop returns nil whatever it gets");

    fake.ping(&route, 42);
    let pong = fake.recv_heartbeat();
    assert_eq!(pong.route.as_deref(), Some(route.as_slice()));
    match pong.msg {
        Heartbeat::Pong { seq, uuid, usage } => {
            assert_eq!((seq, uuid), (42, reg.uuid.clone()));
            // The engine reports its resident memory with its answers.
            assert!(usage.is_some_and(|u| u.rss_bytes > 0), "{usage:?}");
        }
        other => panic!("expected a pong, got {other:?}"),
    }

    fake.send_engine(&route, &ToEngine::Shutdown, &[]);
    let got = fake.recv_engine();
    assert_eq!(got.msg, FromEngine::Unregister);
    engine.join().unwrap().expect("a clean shutdown");
}

#[test]
fn many_tiny_tasks_come_back_in_few_messages() {
    let mut fake = FakeController::new();
    let engine = start(stock(), EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(0),
            heartbeat_period_ms: 1000,
        },
        &[],
    );
    let n = 2000u64;
    let tasks = (0..n).map(|i| task(i, call("noop"))).collect();
    let payloads = vec![encode(&()); n as usize];
    let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
    fake.send_engine(&route, &ToEngine::Tasks { tasks }, &refs);
    let (results, messages) = collect(&mut fake, n as usize);
    assert_eq!(results.len(), n as usize);
    assert!(
        messages <= (n as usize) / 10,
        "{n} results took {messages} messages"
    );
    fake.send_engine(&route, &ToEngine::Shutdown, &[]);
    assert_eq!(fake.recv_engine().msg, FromEngine::Unregister);
    engine.join().unwrap().unwrap();
}

#[test]
fn a_lone_result_is_sent_at_once() {
    let mut fake = FakeController::new();
    let engine = start(stock(), EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(0),
            heartbeat_period_ms: 1000,
        },
        &[],
    );
    // Warm up (connection, first-run estimates), then time round trips.
    let mut best = Duration::MAX;
    for seq in 0..20 {
        let t = Instant::now();
        fake.send_engine(
            &route,
            &ToEngine::Tasks {
                tasks: vec![task(seq, call("noop"))],
            },
            &[&encode(&())],
        );
        let (results, _) = collect(&mut fake, 1);
        assert_eq!(results.len(), 1);
        best = best.min(t.elapsed());
    }
    // Generous: a debug build on a busy machine; the point is no batching delay of ~100 ms.
    assert!(best < Duration::from_millis(50), "best round trip {best:?}");
    fake.send_engine(&route, &ToEngine::Shutdown, &[]);
    assert_eq!(fake.recv_engine().msg, FromEngine::Unregister);
    engine.join().unwrap().unwrap();
}

#[test]
fn results_of_quick_tasks_do_not_wait_behind_a_slow_one() {
    let mut fake = FakeController::new();
    let engine = start(stock(), EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(0),
            heartbeat_period_ms: 1000,
        },
        &[],
    );
    let tasks = vec![task(1, call("noop")), task(2, call("sleep"))];
    fake.send_engine(
        &route,
        &ToEngine::Tasks { tasks },
        &[&encode(&()), &encode(&1.0f64)],
    );
    let t = Instant::now();
    let (first, _) = collect(&mut fake, 1);
    assert!(first.contains_key(&TaskId::new(ClientId(3), 1)));
    assert!(
        t.elapsed() < Duration::from_millis(700),
        "{:?}",
        t.elapsed()
    );
    let (second, _) = collect(&mut fake, 1);
    assert!(second.contains_key(&TaskId::new(ClientId(3), 2)));
    fake.send_engine(&route, &ToEngine::Shutdown, &[]);
    assert_eq!(fake.recv_engine().msg, FromEngine::Unregister);
    engine.join().unwrap().unwrap();
}

#[test]
fn registration_timeout_names_the_address_and_causes() {
    let fake = FakeController::new();
    let mut options = EngineOptions::new(fake.file.clone());
    options.register_timeout = Duration::from_millis(300);
    let err = stock().run(options).unwrap_err();
    assert!(matches!(err, EngineError::RegisterTimeout { .. }), "{err}");
    let text = err.to_string();
    assert!(text.contains(&fake.engine_addr), "{text}");
    assert!(
        text.contains("engine.json") && text.contains("key"),
        "{text}"
    );
}

#[test]
fn refusal_carries_the_reason() {
    let mut fake = FakeController::new();
    let engine = start(stock(), EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Refused {
            reason: "protocol 9 required".into(),
        },
        &[],
    );
    let err = engine.join().unwrap().unwrap_err();
    assert!(err.to_string().contains("protocol 9 required"), "{err}");
}

#[test]
fn a_silent_controller_is_given_up_on() {
    let mut fake = FakeController::new();
    let mut options = EngineOptions::new(fake.file.clone());
    options.lonely_timeout = Duration::from_millis(300);
    let engine = start(stock(), options);
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(1),
            heartbeat_period_ms: 100,
        },
        &[],
    );
    // Pings keep it alive for a while…
    let t = Instant::now();
    let mut seq = 0;
    while t.elapsed() < Duration::from_millis(700) {
        seq += 1;
        fake.ping(&route, seq);
        assert!(matches!(fake.recv_heartbeat().msg, Heartbeat::Pong { .. }));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!engine.is_finished(), "pinged engines stay");
    // …then silence.
    let err = engine.join().unwrap().unwrap_err();
    assert!(matches!(err, EngineError::ControllerLost { .. }), "{err}");
    assert!(err.to_string().contains(&fake.engine_addr), "{err}");
}

#[test]
fn a_missing_connection_file_is_named() {
    let err = stock()
        .run(EngineOptions::new("/no/such/dir/engine.json".into()))
        .unwrap_err();
    assert!(
        err.to_string().contains("/no/such/dir/engine.json"),
        "{err}"
    );
}

#[test]
fn a_panicking_function_does_not_stop_the_engine() {
    let mut fake = FakeController::new();
    let engine = Engine::builder()
        .function("explode", |_: ()| -> Result<(), String> {
            panic!("kaboom")
        })
        .build();
    let engine = start(engine, EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(0),
            heartbeat_period_ms: 1000,
        },
        &[],
    );
    for seq in 0..2 {
        fake.send_engine(
            &route,
            &ToEngine::Tasks {
                tasks: vec![task(seq, call("explode"))],
            },
            &[&encode(&())],
        );
        let (results, _) = collect(&mut fake, 1);
        match &results[&TaskId::new(ClientId(3), seq)].0 {
            Status::Err(e) => {
                assert_eq!(e.kind, ErrorKind::Remote);
                assert!(e.message.contains("kaboom"), "{}", e.message);
            }
            s => panic!("{s:?}"),
        }
    }
    fake.send_engine(&route, &ToEngine::Shutdown, &[]);
    assert_eq!(fake.recv_engine().msg, FromEngine::Unregister);
    engine.join().unwrap().unwrap();
}

/// Benchmark, not a check: engine-side throughput of one-item noop tasks sent in batches of
/// 64 (the fake controller keeps 4 batches in flight). Run with
/// `cargo test --release -p cluster-engine --test fake_controller -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_tiny_task_throughput() {
    let mut fake = FakeController::new();
    let engine = start(stock(), EngineOptions::new(fake.file.clone()));
    let (route, _) = fake.expect_register();
    fake.send_engine(
        &route,
        &ToEngine::Registered {
            engine_id: EngineId(0),
            heartbeat_period_ms: 1000,
        },
        &[],
    );
    let arg = encode(&());
    for (label, work) in [
        ("noop call", call("noop")),
        ("nth_prime(10) call", call("nth_prime")),
    ] {
        let arg = if label.starts_with("nth") {
            encode(&10u64)
        } else {
            arg.clone()
        };
        let total = 200_000u64;
        let batch = 64u64;
        let t = Instant::now();
        let (mut sent, mut done, mut messages) = (0u64, 0u64, 0u64);
        while done < total {
            while sent < total && sent - done < 4 * batch {
                let tasks: Vec<Assignment> = (sent..sent + batch)
                    .map(|i| task(i, work.clone()))
                    .collect();
                let refs: Vec<&[u8]> = vec![arg.as_slice(); batch as usize];
                fake.send_engine(&route, &ToEngine::Tasks { tasks }, &refs);
                sent += batch;
            }
            let got = fake.recv_engine();
            if let FromEngine::Results { results } = got.msg {
                done += results.len() as u64;
                messages += 1;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{label}: {total} tasks in {secs:.3} s = {:.0} tasks/s, {:.1} results per message",
            total as f64 / secs,
            total as f64 / messages as f64
        );
    }
    // Map chunks: 10 000 noop items per task.
    let items = encode(&vec![(); 10_000]);
    let t = Instant::now();
    let chunks = 200u64;
    for i in 0..chunks {
        fake.send_engine(
            &route,
            &ToEngine::Tasks {
                tasks: vec![task(
                    i,
                    Work::Map {
                        function: "noop".into(),
                    },
                )],
            },
            &[&items],
        );
    }
    let (results, _) = collect(&mut fake, chunks as usize);
    assert!(results.values().all(|r| r.0 == Status::Ok));
    let secs = t.elapsed().as_secs_f64();
    println!("noop map: {:.0} items/s", (chunks * 10_000) as f64 / secs);
    let t = Instant::now();
    for i in 0..2000 {
        fake.send_engine(
            &route,
            &ToEngine::Tasks {
                tasks: vec![task(i, call("noop"))],
            },
            &[&arg],
        );
        collect(&mut fake, 1);
    }
    println!(
        "lone noop round trip: {:.1} µs",
        t.elapsed().as_secs_f64() * 1e6 / 2000.0
    );
    fake.send_engine(&route, &ToEngine::Shutdown, &[]);
    engine.join().unwrap().unwrap();
}
