//! An engine busy in user code for a long time still answers heartbeats (its heartbeat
//! thread never runs user code), so it is not declared dead. It keeps one core busy for 30 s
//! while the other areas' tests run beside it, which is what a loaded engine host looks like.

use cluster_tests::TestCluster;
use std::time::{Duration, Instant};

#[test]
fn an_engine_busy_for_thirty_seconds_is_not_declared_dead() {
    let c = TestCluster::new();
    // Dead after 300 ms of silence: 100 times less than the task's run time.
    c.start_env(
        1,
        &[],
        &[
            ("CLUSTER_HEARTBEAT_PERIOD_MS", "100"),
            ("CLUSTER_HEARTBEAT_MISSES", "3"),
        ],
    );
    let client = c.client();
    let engine = client.status().unwrap().engines[0].clone();
    let t = Instant::now();
    let ar = client
        .load_balanced_view()
        .apply::<f64, ()>("busy_wait", &30.0)
        .unwrap();
    let mut checks = 0;
    while !ar.ready() {
        let status = client.status().unwrap();
        assert_eq!(
            status.engines.len(),
            1,
            "declared dead after {:?}",
            t.elapsed()
        );
        assert_eq!(status.engines[0].id, engine.id);
        assert_eq!(status.engines[0].outstanding, 1);
        checks += 1;
        std::thread::sleep(Duration::from_millis(250));
    }
    ar.get(Some(Duration::from_secs(5)))
        .expect("the task finished");
    assert!(t.elapsed() >= Duration::from_secs(30));
    assert!(checks > 100, "{checks}");
    assert_eq!(client.status().unwrap().tasks.done, 1);
}
