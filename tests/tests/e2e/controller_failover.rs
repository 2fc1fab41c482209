//! Engine death and controller restarts, with real processes on loopback: killed engines are
//! noticed at once and their tasks retried or failed, stopped ones by heartbeat, and engines
//! and clients outlive a controller that is killed and started again with `--reuse`.

use cluster_tests::{eventually, signal, TestCluster};
use protocol::{EngineId, ErrorKind};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

const T: Option<Duration> = Some(Duration::from_secs(60));

/// The engine holding the most outstanding tasks now, and its pid.
fn busiest(client: &client::Client) -> (EngineId, u32) {
    let status = client.status().unwrap();
    let e = status
        .engines
        .iter()
        .max_by_key(|e| e.outstanding)
        .expect("an engine");
    (e.id, e.pid)
}

/// Starts a 300-task map of `sleep(0.05)` on 3 engines, kills one engine mid-way with
/// SIGKILL, and returns every task's result and the engine killed.
fn map_while_an_engine_dies(retries: u32) -> (Vec<Result<(), client::Error>>, EngineId, Duration) {
    let c = TestCluster::new();
    c.start(3, &[]);
    let client = c.client();
    let view = client.load_balanced_view().chunksize(1).retries(retries);
    let t = Instant::now();
    let ar = view.map::<f64, ()>("sleep", vec![0.05; 300]).unwrap();
    // Let every engine get going, then kill one while it runs a task.
    std::thread::sleep(Duration::from_millis(800));
    let (victim, pid) = busiest(&client);
    signal(pid, libc::SIGKILL);
    let killed = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || client
            .status()
            .unwrap()
            .engines
            .len()
            == 2),
        "the killed engine is unregistered"
    );
    let noticed = killed.elapsed();
    let results = ar.get_return_exceptions(T).expect("nothing hangs");
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
    (results, victim, noticed)
}

#[test]
fn a_killed_engines_tasks_are_retried_elsewhere() {
    let (results, victim, noticed) = map_while_an_engine_dies(1);
    assert_eq!(results.len(), 300);
    let failed: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| e.to_string()))
        .collect();
    assert!(
        failed.is_empty(),
        "engine {victim} died; failures: {failed:?}"
    );
    // Noticed from the closed connection, not after heartbeats (3 s by default).
    assert!(noticed < Duration::from_secs(2), "{noticed:?}");
}

#[test]
fn a_killed_engines_tasks_fail_with_engine_lost_without_retries() {
    let (results, victim, _) = map_while_an_engine_dies(0);
    assert_eq!(results.len(), 300);
    let mut lost = 0;
    for r in &results {
        match r {
            Ok(()) => {}
            Err(client::Error::EngineLost { engine, message }) => {
                assert_eq!(*engine, Some(victim), "{message}");
                assert!(message.contains(&format!("engine {victim}")), "{message}");
                lost += 1;
            }
            Err(other) => panic!("unexpected failure: {other}"),
        }
    }
    // The victim held one task or a few (the auto limit stays low for 50 ms tasks).
    assert!((1..=4).contains(&lost), "{lost} tasks lost");
}

#[test]
fn a_stopped_engine_is_dropped_by_heartbeat_and_comes_back_with_its_id() {
    let c = TestCluster::new();
    c.start_env(
        2,
        &[],
        &[
            ("CLUSTER_HEARTBEAT_PERIOD_MS", "200"),
            ("CLUSTER_HEARTBEAT_MISSES", "3"),
        ],
    );
    let client = c.client();
    let status = client.status().unwrap();
    let stopped = &status.engines[1];
    signal(stopped.pid, libc::SIGSTOP);
    let t = Instant::now();
    assert!(
        eventually(Duration::from_secs(5), || client
            .status()
            .unwrap()
            .engines
            .len()
            == 1),
        "a silent engine is unregistered"
    );
    let took = t.elapsed();
    // period × (misses + 1) = 800 ms, plus slack for a loaded machine; the figure itself is
    // measured by `cluster bench --failover`.
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(took >= Duration::from_millis(400), "{took:?}");
    signal(stopped.pid, libc::SIGCONT);
    assert!(
        eventually(Duration::from_secs(10), || client
            .status()
            .unwrap()
            .engines
            .len()
            == 2),
        "the engine registers again"
    );
    let back = client.status().unwrap();
    assert_eq!(back.engines[1].id, stopped.id);
    assert_eq!(back.engines[1].pid, stopped.pid);
    // And it works.
    let who: Vec<serde_json::Value> = client
        .load_balanced_view()
        .targets(&[stopped.id])
        .map("whoami", vec![(); 3])
        .unwrap()
        .get(T)
        .unwrap();
    assert!(who.iter().all(|w| w["pid"] == stopped.pid), "{who:?}");
}

/// Engine ids and pids that ran a 40-item `whoami` map.
fn who_ran(client: &client::Client) -> BTreeSet<(u64, u64)> {
    let who: Vec<serde_json::Value> = client
        .load_balanced_view()
        .chunksize(1)
        .map("whoami", vec![(); 40])
        .unwrap()
        .get(T)
        .unwrap();
    who.iter()
        .map(|w| (w["engine_id"].as_u64().unwrap(), w["pid"].as_u64().unwrap()))
        .collect()
}

#[test]
fn a_controller_killed_and_started_with_reuse_gets_its_engines_and_clients_back() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let old_client = c.client();
    let before = who_ran(&old_client);
    assert_eq!(before.len(), 2, "{before:?}");
    let engines = c.engine_pids();
    let old_controller = c.controller_pid().unwrap();
    let old_file = std::fs::read_to_string(c.client_file()).unwrap();

    signal(old_controller, libc::SIGKILL);
    assert!(eventually(Duration::from_secs(5), || {
        !profiles::process_alive(old_controller)
    }));
    let pid = c.spawn_controller(&["--reuse"]);
    assert!(eventually(Duration::from_secs(10), || {
        std::fs::read_to_string(c.client_file()).is_ok_and(|f| {
            f.contains(&format!("\"controller_pid\": {pid}"))
                || f.contains(&format!("\"controller_pid\":{pid}"))
        })
    }));
    // Same address and key.
    let new_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(c.client_file()).unwrap()).unwrap();
    let old_file: serde_json::Value = serde_json::from_str(&old_file).unwrap();
    assert_eq!(new_file["key"], old_file["key"]);
    assert_eq!(new_file["addresses"], old_file["addresses"]);

    let client = c.client();
    client
        .wait_for_engines(2, Duration::from_secs(15))
        .expect("the engines register again");
    // The same engines, same ids, not restarted.
    assert_eq!(who_ran(&client), before);
    assert_eq!(c.engine_pids(), engines);
    assert!(engines.iter().all(|p| profiles::process_alive(*p)));
    // A client of the old controller works on with the new one.
    assert_eq!(who_ran(&old_client), before);
    let status = client.status().unwrap();
    assert_eq!(status.controller.pid, pid);
}

#[test]
fn start_on_a_profile_whose_controller_died_brings_it_back_for_the_engines() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let before = who_ran(&c.client());
    let engines = c.engine_pids();
    let old_controller = c.controller_pid().unwrap();
    signal(old_controller, libc::SIGKILL);
    // Until it is reaped, the killed controller's pid still answers kill(pid, 0) and `start`
    // rightly refuses ("already running"); on a loaded machine reaping can take a while.
    assert!(eventually(Duration::from_secs(5), || {
        !profiles::process_alive(old_controller)
    }));
    let report = c.start(3, &[]);
    let mut reused: Vec<u64> = report["reused_engine_pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_u64().unwrap())
        .collect();
    reused.sort_unstable();
    assert_eq!(
        reused,
        engines.iter().map(|&p| u64::from(p)).collect::<Vec<_>>()
    );
    assert_eq!(report["engines_ready"], 3);
    let client = c.client();
    let after = who_ran(&client);
    assert!(before.is_subset(&after), "{before:?} then {after:?}");
    assert_eq!(after.len(), 3);
    // `cluster status` sees one controller and three engines.
    let run = c.cluster(&["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(v["engines"].as_array().unwrap().len(), 3);
}

#[test]
fn a_dead_engine_s_late_results_are_ignored_and_every_task_answered_once() {
    // Retries with a SIGSTOPped engine: its tasks move on after the heartbeat verdict; when
    // it resumes, its results arrive late and are ignored (no double delivery).
    let c = TestCluster::new();
    c.start_env(
        2,
        &[],
        &[
            ("CLUSTER_HEARTBEAT_PERIOD_MS", "100"),
            ("CLUSTER_HEARTBEAT_MISSES", "3"),
        ],
    );
    let client = c.client();
    let ar = client
        .load_balanced_view()
        .chunksize(1)
        .retries(2)
        .map::<f64, ()>("sleep", vec![0.1; 40])
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (_, pid) = busiest(&client);
    signal(pid, libc::SIGSTOP);
    std::thread::sleep(Duration::from_millis(1_000));
    signal(pid, libc::SIGCONT);
    let results = ar.get_return_exceptions(T).unwrap();
    assert_eq!(results.len(), 40);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    let status = client.status().unwrap();
    assert_eq!(status.tasks.done, 40, "{:?}", status.tasks);
    assert_eq!(status.tasks.failed, 0);
    let _ = ErrorKind::EngineLost;
}

/// The controller is killed in the middle of a map and started again with `--reuse`: the
/// engines bring back what they finished and hold, the client submits what the new
/// controller does not know, and every task of the map is answered.
#[test]
fn a_controller_killed_mid_map_loses_no_task() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let client = c.client();
    let ar = client
        .load_balanced_view()
        .chunksize(1)
        .map::<f64, ()>("sleep", vec![0.05; 60])
        .unwrap();
    std::thread::sleep(Duration::from_millis(400));
    let old_controller = c.controller_pid().unwrap();
    signal(old_controller, libc::SIGKILL);
    assert!(eventually(Duration::from_secs(5), || {
        !profiles::process_alive(old_controller)
    }));
    let done_before = ar.progress().0;
    assert!(done_before < 60, "the map ended before the controller died");
    std::thread::sleep(Duration::from_millis(300));
    c.spawn_controller(&["--reuse"]);
    let results = ar.get_return_exceptions(T).unwrap();
    assert_eq!(results.len(), 60);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    // The new controller ran or answered what was left.
    let status = client.status().unwrap();
    assert!(status.tasks.done > 0, "{:?}", status.tasks);
}
