//! Results as futures, done callbacks, metadata, streaming maps, `wait`/`as_completed`,
//! `imap` and the executor.

use super::*;

/// A minimal executor for the `Future` tests: polls on this thread, parks between wakes.
fn block_on<F: std::future::Future>(f: F) -> F::Output {
    use std::task::{Context as TaskContext, Poll, Wake, Waker};
    struct Parker {
        thread: std::thread::Thread,
        woken: AtomicBool,
    }
    impl Wake for Parker {
        fn wake(self: Arc<Self>) {
            self.woken.store(true, Ordering::SeqCst);
            self.thread.unpark();
        }
    }
    let parker = Arc::new(Parker {
        thread: std::thread::current(),
        woken: AtomicBool::new(false),
    });
    let waker = Waker::from(parker.clone());
    let mut cx = TaskContext::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        while !parker.woken.swap(false, Ordering::SeqCst) {
            assert!(Instant::now() < deadline, "never woken");
            std::thread::park_timeout(Duration::from_millis(100));
        }
    }
}

/// Polls all futures together in one task; outputs in the order given.
async fn join_all<F: std::future::Future + Unpin>(futures: Vec<F>) -> Vec<F::Output> {
    let mut futures: Vec<Option<F>> = futures.into_iter().map(Some).collect();
    let mut outputs: Vec<Option<F::Output>> = futures.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        for (f, out) in futures.iter_mut().zip(outputs.iter_mut()) {
            if let Some(fut) = f {
                if let std::task::Poll::Ready(v) = std::pin::Pin::new(fut).poll(cx) {
                    *out = Some(v);
                    *f = None;
                }
            }
        }
        if futures.iter().all(Option::is_none) {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await;
    outputs.into_iter().map(Option::unwrap).collect()
}

const LATER: Function<u64, u64> = Function::new("later");

#[test]
fn results_are_futures() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    // Awaited before the result arrives: the I/O thread's wake-up resumes the task.
    assert_eq!(block_on(view.apply(LATER, 50).unwrap()).unwrap(), 50);
    let slow = view.apply(LATER, 80).unwrap();
    let fast = view.apply(LATER, 10).unwrap();
    let start = Instant::now();
    let both = block_on(join_all(vec![slow, fast]));
    assert!(start.elapsed() < Duration::from_millis(1500));
    assert_eq!(
        both.into_iter().map(Result::unwrap).collect::<Vec<_>>(),
        vec![80, 10]
    );
    let m = view.clone().chunksize(3).map(DOUBLE, 0..10).unwrap();
    let out = block_on(m);
    assert_eq!(out.unwrap(), (0..10).map(|x| x * 2).collect::<Vec<_>>());
    // A failure comes out of `.await` as the error.
    let err = block_on(view.apply::<(), ()>("fail", ()).unwrap()).unwrap_err();
    assert!(matches!(err, Error::Remote { .. }), "{err:?}");
}

#[test]
fn done_callbacks_run_once_when_done_and_may_look_but_not_wait() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let (tx, rx) = std::sync::mpsc::channel();
    let ar = view.apply(LATER, 30).unwrap();
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let tx1 = tx.clone();
    ar.add_done_callback(move |r| {
        // It may read its own result; waiting for another task fails at once.
        let own = r.get(None);
        let other = held.get(None);
        tx1.send((own.unwrap(), other.unwrap_err().to_string()))
            .unwrap();
    });
    let (own, other) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(own, 30);
    assert!(other.contains("done callback"), "{other}");
    // Already done: runs at once, on this thread.
    let here = std::thread::current().id();
    ar.add_done_callback(move |_| {
        tx.send((0, format!("{:?}", std::thread::current().id() == here)))
            .unwrap()
    });
    assert_eq!(rx.try_recv().unwrap().1, "true");
    // Maps call back when every chunk is in.
    let (tx, rx) = std::sync::mpsc::channel();
    let m = view.chunksize(2).map(DOUBLE, 0..10).unwrap();
    m.add_done_callback(move |m| tx.send(m.progress()).unwrap());
    assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), (10, 10));
}

#[test]
fn metadata_tells_where_and_when() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let before = std::time::SystemTime::now();
    let ar = view.apply(DOUBLE, 1).unwrap();
    let pending = ar.metadata();
    assert!(pending.submitted >= before);
    assert_eq!(pending.function, "double");
    ar.wait(SECOND);
    let m = ar.metadata();
    assert_eq!(m.task, ar.id());
    assert_eq!(m.state, TaskState::Succeeded);
    assert!(m.engine.is_some());
    assert_eq!(m.elapsed, Some(Duration::from_micros(1500)));
    assert_eq!(
        m.completed
            .unwrap()
            .duration_since(m.started.unwrap())
            .unwrap(),
        Duration::from_micros(1500)
    );
    assert!(m.received.unwrap() >= m.submitted);
    assert_eq!(m.stdout, None);
    let cmd = view
        .command(
            Command::new("echo")
                .arg("out")
                .timeout(Duration::from_secs(1)),
        )
        .unwrap();
    cmd.wait(SECOND);
    assert_eq!(cmd.metadata().stdout.as_deref(), Some(&b"echo out"[..]));
    let many = view
        .commands(["true", "false"])
        .unwrap()
        .get(SECOND)
        .unwrap();
    assert_eq!(many[1].stdout, b"false ");
}

#[test]
fn maps_stream_in_item_order_or_completion_order() {
    let f = fake(Config {
        reverse: true,
        batch: 1,
        pause: Duration::from_millis(1),
        ..Config::default()
    });
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view().chunksize(10);
    let ordered: Vec<u64> = view
        .map(DOUBLE, 0..100)
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ordered, (0..100).map(|x| x * 2).collect::<Vec<_>>());
    // The fake answers each submission last chunk first.
    let unordered: Vec<(usize, u64)> = view
        .map(DOUBLE, 0..100)
        .unwrap()
        .unordered()
        .map(|(i, r)| (i, r.unwrap()))
        .collect();
    assert_eq!(unordered[0], (90, 180));
    let mut sorted = unordered.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        (0..100).map(|x| (x, 2 * x as u64)).collect::<Vec<_>>()
    );
    // A failed chunk yields its error for each of its items; the rest are values.
    let items: Vec<Result<u64, Error>> = view
        .map::<u64, u64>("fail_on_13", 0..30u64)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(items.len(), 30);
    assert!(items[..10].iter().all(Result::is_ok) && items[20..].iter().all(Result::is_ok));
    assert!(items[10..20].iter().all(Result::is_err));
    // return_exceptions: the same, in one call.
    let each = view
        .map::<u64, u64>("fail_on_13", 0..30u64)
        .unwrap()
        .get_return_exceptions(SECOND)
        .unwrap();
    assert_eq!(each.iter().filter(|r| r.is_err()).count(), 10);
    assert_eq!(*each[29].as_ref().unwrap(), 29);
    // A timeout while iterating names the item and the iterator can go on.
    let mut it = client
        .load_balanced_view()
        .chunksize(1)
        .map::<u64, u64>("later", [300u64, 1])
        .unwrap()
        .into_iter()
        .timeout(Duration::from_millis(20));
    let err = it.next().unwrap().unwrap_err();
    assert!(err.to_string().contains("item 0 of later"), "{err}");
    assert!(err.is_retryable());
}

#[test]
fn wait_and_as_completed_like_concurrent_futures() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let tasks: Vec<AsyncResult<u64>> = [200u64, 10, 100]
        .iter()
        .map(|&ms| view.apply(LATER, ms).unwrap())
        .collect();
    let first = wait(&tasks, SECOND, ReturnWhen::FirstCompleted);
    assert_eq!(first.done.len(), 1);
    assert_eq!(first.done[0].id(), tasks[1].id());
    let order: Vec<u64> = as_completed(tasks.iter().cloned(), SECOND)
        .map(|t| t.unwrap().get(None).unwrap())
        .collect();
    assert_eq!(order, vec![10, 100, 200]);
    let all = wait(&tasks, SECOND, ReturnWhen::AllCompleted);
    assert_eq!((all.done.len(), all.not_done.len()), (3, 0));

    // Mixed handles, keys handed back, a timeout, and the first exception.
    let held = view.apply::<(), ()>("hold", ()).unwrap();
    let failing = view.apply::<(), ()>("fail", ()).unwrap();
    let map = view.map(DOUBLE, 0..10).unwrap();
    let mixed: Vec<(&str, &dyn Completion)> =
        vec![("held", &held), ("failing", &failing), ("map", &map)];
    let w = wait(mixed.clone(), SECOND, ReturnWhen::FirstException);
    assert!(w.done.iter().any(|(k, _)| *k == "failing"));
    assert!(w.not_done.iter().any(|(k, _)| *k == "held"));
    let w = wait(
        mixed.clone(),
        Some(Duration::from_millis(50)),
        ReturnWhen::AllCompleted,
    );
    assert_eq!(w.not_done.iter().map(|p| p.0).collect::<Vec<_>>(), ["held"]);
    let results: Vec<Result<&str, String>> = as_completed(mixed, Some(Duration::from_millis(50)))
        .map(|r| r.map(|(k, _)| k).map_err(|e| e.to_string()))
        .collect();
    assert_eq!(results.len(), 3);
    assert!(
        results[2].as_ref().unwrap_err().contains("1 of 3 tasks"),
        "{results:?}"
    );
}

#[test]
fn imap_streams_an_endless_iterator_with_bounded_tasks_in_flight() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let view = client.load_balanced_view();
    let mut it = view.imap(DOUBLE, 0u64..).max_outstanding(3);
    for i in 0..20_000u64 {
        assert_eq!(it.next().unwrap().unwrap(), 2 * i);
        // Never more read than handed out plus three chunks.
        assert!(it.items_read() <= i + 1 + 3 * it.current_chunksize() as u64);
    }
    // The fake reports 1.5 ms per chunk, so chunks grow from one item towards ~5 ms.
    assert!(it.current_chunksize() > 1, "{it:?}");
    drop(it);
    // Unordered: every item once.
    let mut seen: Vec<u64> = view
        .clone()
        .chunksize(7)
        .imap(DOUBLE, (0..1000u64).map(|x| x * 3))
        .unordered()
        .map(|(i, r)| {
            assert_eq!(r.unwrap(), i * 6);
            i
        })
        .collect();
    seen.sort_unstable();
    assert_eq!(seen, (0..1000).collect::<Vec<_>>());
    // Errors come at their item; nothing is read before the first `next`.
    let read = std::cell::Cell::new(0);
    let lazy = view.imap(DOUBLE, (0..10u64).inspect(|_| read.set(read.get() + 1)));
    assert_eq!(read.get(), 0);
    assert_eq!(lazy.count(), 10);
    let failing: Vec<bool> = view
        .clone()
        .chunksize(5)
        .imap::<u64, u64>("fail_on_13", 0..20u64)
        .map(|r| r.is_ok())
        .collect();
    assert_eq!(failing.iter().filter(|ok| !**ok).count(), 5);
}

#[test]
fn executor_submits_maps_and_shuts_down() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    let pool = client.executor();
    let futures: Vec<AsyncResult<u64>> = (0..50).map(|i| pool.submit(DOUBLE, i).unwrap()).collect();
    let sum: u64 = pool.map(DOUBLE, 0..100).map(Result::unwrap).sum();
    assert_eq!(sum, 9900);
    let slow = pool.submit(LATER, 100).unwrap();
    let start = Instant::now();
    pool.shutdown(true);
    assert!(
        start.elapsed() >= Duration::from_millis(50),
        "shutdown(true) waited"
    );
    assert!(slow.ready() && futures.iter().all(AsyncResult::ready));
    assert_eq!(pool.pending(), 0);
    assert!(matches!(
        pool.submit(DOUBLE, 1),
        Err(Error::Shutdown { .. })
    ));
    let refused: Vec<_> = pool.map(DOUBLE, 0..3).collect();
    assert!(
        matches!(refused[..], [Err(Error::Shutdown { .. })]),
        "{refused:?}"
    );
    // cancel_pending cancels what waits.
    let pool = client.executor();
    let held: Vec<_> = (0..3)
        .map(|_| pool.submit::<(), ()>("hold", ()).unwrap())
        .collect();
    assert_eq!(pool.pending(), 3);
    assert_eq!(pool.cancel_pending(), 3);
    pool.shutdown(true);
    assert!(held.iter().all(AsyncResult::cancelled));
}
