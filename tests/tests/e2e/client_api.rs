//! The client library against real controller and engine processes: typed handles, futures,
//! helpers, cancel, streaming, per-engine stores, commands.

#[path = "../../../engine/examples/shared/functions.rs"]
mod functions;

use client::{
    as_completed, stock, wait, AsyncResult, Command, Error, ErrorKind, ReturnWhen, TaskState,
};
use cluster_tests::{custom_engine_bin, TestCluster};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const T: Option<Duration> = Some(Duration::from_secs(60));

/// A one-thread executor: enough to show that results are plain `Future`s.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context, Poll, Wake, Waker};
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park_timeout(Duration::from_millis(200));
    }
}

#[test]
fn typed_stock_handles_futures_and_helpers() {
    let c = TestCluster::new();
    // One engine per sleep below, so that they run side by side.
    c.start(3, &[]);
    let client = c.client();
    let view = client.load_balanced_view();
    let expected: Vec<u64> = (0..300).map(engine::stock::nth_prime).collect();
    assert_eq!(
        view.map(stock::NTH_PRIME, 0..300).unwrap().get(T).unwrap(),
        expected
    );
    // The engine crate re-exports the very same handles.
    assert_eq!(engine::stock::SUM_RANGE, stock::SUM_RANGE);
    let sum = block_on(view.apply(stock::SUM_RANGE, 1000).unwrap()).unwrap();
    assert_eq!(sum, 499_500);

    let sleeps: Vec<AsyncResult<()>> = [0.3, 0.0, 0.15]
        .into_iter()
        .map(|s| view.apply(stock::SLEEP, s).unwrap())
        .collect();
    let first = wait(&sleeps, T, ReturnWhen::FirstCompleted);
    assert!(first.done.iter().any(|d| d.id() == sleeps[1].id()));
    let order: Vec<usize> = as_completed(sleeps.iter().enumerate(), T)
        .map(|r| r.unwrap().0)
        .collect();
    assert_eq!(order.len(), 3);
    assert_eq!(order[2], 0, "the longest sleep ends last: {order:?}");
    let m = sleeps[0].metadata();
    assert_eq!(m.state, TaskState::Succeeded);
    let (started, completed) = (m.started.unwrap(), m.completed.unwrap());
    assert!(completed.duration_since(started).unwrap() >= Duration::from_millis(290));
    assert!(m.received.unwrap() >= m.submitted);

    let who = client
        .direct_view(&client.ids().unwrap())
        .apply(stock::WHOAMI, ())
        .unwrap()
        .get(T)
        .unwrap();
    assert_eq!(
        who.iter().map(|w| w.engine_id.0).collect::<Vec<_>>(),
        [0, 1, 2]
    );
}

#[test]
fn cancel_aborts_queued_tasks_and_leaves_running_ones() {
    let c = TestCluster::new();
    // One engine holding one task at a time: the second task waits in the controller.
    c.start(1, &["--hwm", "1"]);
    let client = c.client();
    let view = client.load_balanced_view();
    let running = view.apply(stock::SLEEP, 0.6).unwrap();
    let queued = view.apply(stock::SLEEP, 0.6).unwrap();
    let last = view.apply(stock::NTH_PRIME, 10).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    assert!(queued.cancel(), "a queued task is cancelled");
    assert!(!running.cancel(), "a running task is not");
    let err = queued.get(T).unwrap_err();
    assert!(matches!(err, Error::Aborted { .. }), "{err:?}");
    assert_eq!(
        queued.metadata().state,
        TaskState::Failed(ErrorKind::Aborted)
    );
    running.get(T).unwrap();
    assert_eq!(last.get(T).unwrap(), 31);
    // The cancelled task never ran: the engine finished two.
    let status = client.status().unwrap();
    assert_eq!(status.engines[0].completed, 2, "{:?}", status.engines);
    // abort() says the same without ending anything on this side first.
    let running = view.apply(stock::SLEEP, 0.3).unwrap();
    let queued = view.apply(stock::SLEEP, 0.3).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    assert!(queued.abort().unwrap());
    assert!(!running.abort().unwrap());
    running.get(T).unwrap();
}

#[test]
fn per_engine_store_scatter_gather_and_context_functions() {
    let c = TestCluster::new();
    let program = custom_engine_bin();
    c.start(2, &["--engine-program", program.to_str().unwrap()]);
    let client = c.client();
    let dv = client.direct_view(&client.ids().unwrap());
    dv.scatter("xs", 0..101u64).unwrap().get(T).unwrap();
    let sums = dv
        .apply(functions::LOCAL_SUM, "xs".to_string())
        .unwrap()
        .get(T)
        .unwrap();
    assert_eq!(sums, vec![(0, (0..51).sum()), (1, (51..101).sum())]);
    assert_eq!(
        dv.gather::<u64>("xs", T).unwrap(),
        (0..101).collect::<Vec<_>>()
    );
    let keys = dv.keys().unwrap().get(T).unwrap();
    assert_eq!(keys, vec![vec!["xs".to_string()]; 2]);
    // Reading a name nobody pushed names it and the engine.
    let err = dv
        .apply(functions::SCALED, 1.0)
        .unwrap()
        .get(T)
        .unwrap_err();
    assert!(err.to_string().contains("\"factor\""), "{err}");
    dv.push("factor", &3.0).unwrap().get(T).unwrap();
    assert_eq!(
        dv.apply(functions::SCALED, 2.0).unwrap().get(T).unwrap(),
        [6.0, 6.0]
    );
    let pulled: Vec<f64> = dv.pull("factor").unwrap().get(T).unwrap();
    assert_eq!(pulled, [3.0, 3.0]);
    dv.clear().unwrap().get(T).unwrap();
    let err = dv.gather::<u64>("xs", T).unwrap_err();
    assert!(err.to_string().contains("no value named \"xs\""), "{err}");
}

#[test]
fn imap_streams_with_few_tasks_in_flight() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let client = Arc::new(c.client());
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (client, done) = (client.clone(), done.clone());
        std::thread::spawn(move || {
            let mut most = 0;
            while !done.load(Ordering::SeqCst) {
                let t = client.status().unwrap().tasks;
                most = most.max(t.queued + t.running);
                std::thread::sleep(Duration::from_millis(2));
            }
            most
        })
    };
    let n = 300_000u64;
    let mut expected = 0u64;
    for (i, r) in client
        .load_balanced_view()
        .imap(stock::echo::<u64>(), 0..n)
        .max_outstanding(4)
        .enumerate()
    {
        assert_eq!(r.unwrap(), i as u64);
        expected += 1;
    }
    done.store(true, Ordering::SeqCst);
    assert_eq!(expected, n);
    let most = watcher.join().unwrap();
    assert!(most <= 4, "at most 4 chunks in flight, saw {most}");
}

#[test]
fn commands_executors_and_errors() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let client = c.client();
    let view = client.load_balanced_view();
    let dir = c.dir.path().to_str().unwrap().to_owned();
    let out = view
        .command(
            Command::new("sh")
                .args(["-c", "cat; echo \" $X\"; pwd"])
                .env("X", "42")
                .current_dir(&dir)
                .stdin("in"),
        )
        .unwrap();
    assert!(out.wait(T));
    let m = out.metadata();
    let text = String::from_utf8(m.stdout.unwrap()).unwrap();
    assert_eq!(text, format!("in 42\n{dir}\n"));
    let err = view
        .command(
            Command::new("sleep")
                .arg("5")
                .timeout(Duration::from_millis(200)),
        )
        .unwrap()
        .get(T)
        .unwrap_err();
    assert!(
        matches!(
            err,
            Error::Remote {
                kind: ErrorKind::Timeout,
                ..
            }
        ),
        "{err:?}"
    );
    let outs = client
        .direct_view(&client.ids().unwrap())
        .command(Command::new("true"))
        .unwrap()
        .get(T)
        .unwrap();
    assert!(outs.len() == 2 && outs.iter().all(|o| o.success()));

    let pool = client.executor();
    let start = Instant::now();
    let futures: Vec<_> = (0..4)
        .map(|_| pool.submit(stock::SLEEP, 0.2).unwrap())
        .collect();
    pool.shutdown(true);
    assert!(
        start.elapsed() >= Duration::from_millis(390),
        "two engines, four sleeps"
    );
    assert!(futures.iter().all(|f| f.successful() == Some(true)));
    assert!(matches!(
        pool.submit(stock::NOOP, ()),
        Err(Error::Shutdown { .. })
    ));

    let err = view
        .apply::<u64, u64>("no_such_function", 1)
        .unwrap()
        .get(T)
        .unwrap_err();
    assert!(matches!(err, Error::UnknownFunction { .. }), "{err:?}");
    assert!(!err.is_retryable());
}
