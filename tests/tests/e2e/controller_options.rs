//! Task options and controller requests end to end: schedulers, `after`, `follow`, time
//! limits, abort, queue status, and how `cluster status` shows them.

use cluster_tests::TestCluster;
use protocol::{CommandSpec, EngineId, ErrorKind};
use std::time::{Duration, Instant};

const T: Option<Duration> = Some(Duration::from_secs(60));

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        ..Default::default()
    }
}

#[test]
fn every_scheduler_runs_a_map_and_is_reported() {
    let c = TestCluster::new();
    for (i, scheduler) in ["lru", "plainrandom", "twobin", "leastload", "weighted"]
        .into_iter()
        .enumerate()
    {
        c.start(2, &["--scheduler", scheduler]);
        let client = c.client();
        let expected: Vec<u64> = (0..200).map(engine::stock::nth_prime).collect();
        let got: Vec<u64> = client
            .load_balanced_view()
            .chunksize(1)
            .map("nth_prime", 0..200u64)
            .unwrap()
            .get(T)
            .unwrap();
        assert_eq!(got, expected, "{scheduler}");
        let status = client.status().unwrap();
        assert_eq!(status.controller.scheduler, scheduler);
        assert!(
            status.engines.iter().all(|e| e.completed > 0),
            "{scheduler}: {:?}",
            status.engines
        );
        drop(client);
        c.cluster(&["stop"]).ok();
        let _ = i;
    }
    let run = c.cluster(&["start", "-n", "1", "--scheduler", "fastest"]);
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("fastest") && run.stderr.contains("twobin"),
        "{}",
        run.stderr
    );
}

#[test]
fn after_and_follow_order_and_place_tasks() {
    let c = TestCluster::new();
    c.start(3, &[]);
    let client = c.client();
    let view = client.load_balanced_view();
    let marker = c.dir.path().join("marker");
    let m = marker.display().to_string();
    // B checks that A's file exists: it must run after A, which takes a while.
    let a = view.command(sh(&format!("sleep 0.4; touch {m}"))).unwrap();
    let b = view
        .clone()
        .after(&[a.id()])
        .command(sh(&format!("test -f {m}")))
        .unwrap();
    assert_eq!(b.get(T).unwrap().status, Some(0), "B ran after A");
    // follow: each task runs where the one it follows ran.
    for _ in 0..5 {
        let first = view.apply::<(), serde_json::Value>("whoami", &()).unwrap();
        let second = view
            .clone()
            .follow(&[first.id()])
            .apply::<(), serde_json::Value>("whoami", &())
            .unwrap();
        let (w1, w2) = (first.get(T).unwrap(), second.get(T).unwrap());
        assert_eq!(w1["engine_id"], w2["engine_id"]);
    }
    // A dependency nobody submitted fails at once, through the CLI too.
    let t = Instant::now();
    let err = view
        .clone()
        .after(&[protocol::TaskId::new(protocol::ClientId(999), 1)])
        .apply::<(), ()>("noop", &())
        .unwrap()
        .get(T)
        .unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2));
    match &err {
        client::Error::Remote { kind, message, .. } => {
            assert_eq!(*kind, ErrorKind::Dependency);
            assert!(message.contains("999:1"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    let run = c.cluster(&["call", "noop", "--after", "999:1"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("999:1"), "{}", run.stderr);
    // A dependency that failed fails its dependents.
    let bad = view.apply::<&str, u64>("nth_prime", &"x").unwrap();
    let dependent = view
        .clone()
        .after(&[bad.id()])
        .apply::<(), ()>("noop", &())
        .unwrap();
    let err = dependent.get(T).unwrap_err();
    assert!(
        matches!(
            &err,
            client::Error::Remote {
                kind: ErrorKind::Dependency,
                ..
            }
        ),
        "{err:?}"
    );
}

#[test]
fn time_limits_fail_queued_tasks_and_abandon_running_functions() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let client = c.client();
    let view = client.load_balanced_view();
    // A function past its limit is abandoned: the error comes at the limit, not at the end.
    let t = Instant::now();
    let err = view
        .clone()
        .timeout(Duration::from_millis(300))
        .apply::<f64, ()>("sleep", &5.0)
        .unwrap()
        .get(T)
        .unwrap_err();
    // Well before the 5 s the function would take (a generous bound for loaded machines).
    let took = t.elapsed();
    assert!(took < Duration::from_secs(4), "{took:?}");
    match &err {
        client::Error::Remote { kind, engine, .. } => {
            assert_eq!(*kind, ErrorKind::Timeout);
            assert_eq!(*engine, Some(EngineId(0)));
        }
        other => panic!("{other:?}"),
    }
    // The engine goes on at once.
    let t = Instant::now();
    let n: u64 = view
        .apply::<u64, u64>("nth_prime", &10u64)
        .unwrap()
        .get(T)
        .unwrap();
    assert_eq!(n, 31);
    // Not behind the abandoned 5 s sleep.
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // A task that cannot start within its limit (the only engine is busy) times out queued.
    let busy = view.apply::<f64, ()>("sleep", &1.5).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let t = Instant::now();
    let err = view
        .clone()
        .timeout(Duration::from_millis(300))
        .apply::<(), ()>("noop", &())
        .unwrap()
        .get(T)
        .unwrap_err();
    // Failed while queued (the message says so), not after the busy task.
    assert!(
        t.elapsed() < Duration::from_millis(1400),
        "{:?}",
        t.elapsed()
    );
    match &err {
        client::Error::Remote { kind, message, .. } => {
            assert_eq!(*kind, ErrorKind::Timeout);
            assert!(message.contains("did not start"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    busy.get(T).unwrap();
    // Commands are killed at the limit.
    let out = view
        .clone()
        .timeout(Duration::from_millis(300))
        .command(sh("sleep 5"))
        .unwrap()
        .get(T);
    assert!(
        matches!(
            &out,
            Err(client::Error::Remote {
                kind: ErrorKind::Timeout,
                ..
            })
        ),
        "{out:?}"
    );
}

#[test]
fn abort_and_queue_status_see_the_queue() {
    let c = TestCluster::new();
    c.start(1, &["--hwm", "1"]);
    let client = c.client();
    let view = client.load_balanced_view();
    let running = view.apply::<f64, ()>("sleep", &1.0).unwrap();
    let queued: Vec<_> = (0..3)
        .map(|_| view.apply::<(), ()>("noop", &()).unwrap())
        .collect();
    let waiting = view
        .clone()
        .after(&[queued[0].id()])
        .apply::<(), ()>("noop", &())
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let q = client.queue_status().unwrap();
    assert_eq!((q.unassigned, q.waiting), (3, 1), "{q:?}");
    assert_eq!(q.engines.len(), 1);
    assert_eq!(q.engines[0].outstanding, 1);
    // `cluster status` shows it.
    let run = c.cluster(&["status"]).ok();
    assert!(
        run.stdout.contains("3 unassigned, 1 waiting"),
        "{}",
        run.stdout
    );
    let run = c.cluster(&["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["queue"]["unassigned"], 3);
    assert_eq!(v["tasks"]["waiting"], 1);

    // Another client aborts the queued ones (and asks about the running one).
    let other = c.client();
    let ids = [running.id(), queued[1].id(), queued[2].id()];
    let report = other.abort(&ids).unwrap();
    assert_eq!(report.aborted, [queued[1].id(), queued[2].id()]);
    assert_eq!(report.running, [running.id()]);
    for ar in &queued[1..] {
        let err = ar.get(T).unwrap_err();
        assert!(
            matches!(
                &err,
                client::Error::Aborted { .. }
                    | client::Error::Remote {
                        kind: ErrorKind::Aborted,
                        ..
                    }
            ),
            "{err:?}"
        );
    }
    running.get(T).unwrap();
    queued[0].get(T).unwrap();
    waiting.get(T).unwrap();
    let q = client.queue_status().unwrap();
    assert_eq!((q.unassigned, q.waiting), (0, 0));
    assert_eq!(q.engines[0].completed, 3);

    // Any client can look results up by id, and purge some of them.
    let mut store = client::ResultStore::open(c.client_file(), Duration::from_secs(10)).unwrap();
    let ids = [running.id(), queued[1].id()];
    assert_eq!(store.fetch(&ids).unwrap().done.len(), 2);
    other.purge_tasks(&[queued[1].id()]).unwrap();
    let lookup = store.fetch(&ids).unwrap();
    assert_eq!(lookup.done.len(), 1);
    assert_eq!(lookup.unknown, [queued[1].id()]);
}
