//! The task store end to end (issue 11): with the default `db = "sqlite"`, results and
//! unfinished tasks outlive a `kill -9` of the controller and every engine together, and a
//! `cluster start` on the same profile answers or runs them.

use cluster_tests::{eventually, signal, TestCluster};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Option<Duration> = Some(Duration::from_secs(60));

/// `kill -9` of the controller and every engine the profile's run folder names, waiting
/// until they are gone. The controller goes first: one that outlived its engines by a moment
/// would see them disconnect and fail their running tasks (`engine_lost`, no retries),
/// which is not the crash of everything together this is about.
fn kill_everything(c: &TestCluster) {
    let gone = |pids: &[u32]| {
        eventually(Duration::from_secs(10), || {
            pids.iter().all(|&p| !profiles::process_alive(p))
        })
    };
    let controller: Vec<u32> = c.controller_pid().into_iter().collect();
    let engines = c.engine_pids();
    for &pid in &controller {
        signal(pid, libc::SIGKILL);
    }
    assert!(gone(&controller), "{controller:?} survived SIGKILL");
    for &pid in &engines {
        signal(pid, libc::SIGKILL);
    }
    assert!(gone(&engines), "{engines:?} survived SIGKILL");
}

/// Engines started by hand on the profile's engine file (`cluster engines` wants the run
/// record's controller, which a hand-started one does not replace); killed when dropped.
struct Engines(Vec<Child>);

impl Engines {
    fn spawn(c: &TestCluster, n: usize) -> Engines {
        let file = c.engine_file();
        let file = file.to_str().unwrap();
        Engines(
            (0..n)
                .map(|_| {
                    c.command(&["engine", "--file", file])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .spawn()
                        .expect("spawn an engine")
                })
                .collect(),
        )
    }
}

impl Drop for Engines {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `commands` four at a time; the stdout of each, in order.
fn run_all(commands: Vec<Command>) -> Vec<String> {
    let mut slots: Vec<Vec<(usize, Command)>> = (0..4).map(|_| Vec::new()).collect();
    let n = commands.len();
    for (i, cmd) in commands.into_iter().enumerate() {
        slots[i % 4].push((i, cmd));
    }
    let mut out = vec![String::new(); n];
    let done: Vec<Vec<(usize, String)>> = std::thread::scope(|s| {
        let handles: Vec<_> = slots
            .into_iter()
            .map(|slot| {
                s.spawn(move || {
                    slot.into_iter()
                        .map(|(i, mut cmd)| {
                            let o = cmd.output().expect("run cluster");
                            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                            (i, String::from_utf8_lossy(&o.stdout).trim().to_owned())
                        })
                        .collect()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, text) in done.into_iter().flatten() {
        out[i] = text;
    }
    out
}

/// The lines of `file`, sorted, and how many there were before removing duplicates.
fn distinct_lines(file: &Path) -> (usize, usize) {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut lines: Vec<&str> = text.lines().collect();
    let all = lines.len();
    lines.sort_unstable();
    lines.dedup();
    (all, lines.len())
}

/// How many outcomes of `cluster result --json` succeeded.
fn succeeded(json_lines: &str) -> usize {
    json_lines
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["ok"] == true)
        .count()
}

/// As the issue writes it: 1,000 `cluster submit` commands that each append a line to a
/// file, all finished; `kill -9` of the controller and every engine; `cluster start` on the
/// same profile: every result comes back from the database, and the file shows that no task
/// ran twice (the restarted controller answers them from disk instead of running them again).
#[test]
fn a_thousand_submitted_results_survive_kill_9_of_everything_and_none_runs_twice() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let file = c.profile_dir().join("ran.txt");
    let n = 1000;
    let submits = (0..n)
        .map(|i| {
            let line = format!("echo {i} >> {}", file.display());
            c.command(&["submit", "--", "sh", "-c", &line])
        })
        .collect();
    let ids = run_all(submits);
    assert!(ids.iter().all(|id| id.contains(':')), "{ids:?}");
    let mut wait = vec!["result", "--wait", "--timeout", "120", "--json"];
    wait.extend(ids.iter().map(String::as_str));
    let run = c.cluster(&wait).ok();
    assert_eq!(succeeded(&run.stdout), n, "{}", run.stdout);
    assert_eq!(distinct_lines(&file), (n, n));
    // One commit interval (100 ms) and then some.
    std::thread::sleep(Duration::from_millis(400));
    kill_everything(&c);
    c.start(2, &[]);
    let mut ask = vec!["result", "--json"];
    ask.extend(ids.iter().map(String::as_str));
    let run = c.cluster(&ask).ok();
    assert_eq!(succeeded(&run.stdout), n, "{}", run.stdout);
    // Anything queued again would have run by now.
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        distinct_lines(&file),
        (n, n),
        "a task ran twice (or not at all)"
    );
    let status = c.client().status().unwrap();
    assert_eq!(status.tasks.queued + status.tasks.running, 0, "{status:?}");
}

/// `kill -9` of the controller and every engine in the middle of a map; the controller
/// started again on the same profile (`--reuse`: same ports and key, so the client that
/// lived on reconnects) and new engines: the controller queues again what its database holds
/// unfinished, the client submits what it does not know, and every task of the map is
/// answered.
#[test]
fn everything_killed_mid_map_then_started_again_answers_every_task() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let client = c.client();
    let ar = client
        .load_balanced_view()
        .chunksize(1)
        .map::<f64, ()>("sleep", vec![0.05; 80])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill_everything(&c);
    let done_before = ar.progress().0;
    assert!(done_before < 80, "the map ended before the kill");
    c.spawn_controller(&["--reuse"]);
    let _engines = Engines::spawn(&c, 2);
    let results = ar.get_return_exceptions(T).unwrap();
    assert_eq!(results.len(), 80);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
}

/// The same crash, then a plain `cluster start` on the profile: with nothing left running it
/// starts afresh on new ports (the key stays: the task store keeps it), so the client that
/// lived on must follow the connection file to the new controller, and every task of the map
/// is answered well within its 30 s of patience.
#[test]
fn everything_killed_mid_map_then_cluster_start_the_client_follows_the_new_file() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let before = std::fs::read_to_string(c.client_file()).unwrap();
    let client = c.client();
    let ar = client
        .load_balanced_view()
        .chunksize(1)
        .map::<f64, ()>("sleep", vec![0.05; 80])
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    kill_everything(&c);
    assert!(ar.progress().0 < 80, "the map ended before the kill");
    c.start(2, &[]);
    let after = std::fs::read_to_string(c.client_file()).unwrap();
    assert_ne!(before, after, "cluster start kept the connection file");
    let t0 = std::time::Instant::now();
    let results = ar.get_return_exceptions(T).unwrap();
    assert_eq!(results.len(), 80);
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        t0.elapsed() < Duration::from_secs(20),
        "answered only after {:?}",
        t0.elapsed()
    );
    c.cluster(&["stop"]).ok();
}
