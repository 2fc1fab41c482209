//! Command tasks from the command line: `cluster map -- …`, `submit`, `result`, `wait`, on a
//! real local cluster.

use cluster_tests::TestCluster;
use std::io::Write;
use std::process::Stdio;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn command_map_prints_blocks_in_input_order_with_placeholders() {
    let c = TestCluster::new();
    c.start(2, &[]);
    // Later arguments finish first; the output still follows the input.
    let run = c
        .cluster(&[
            "map",
            "--",
            "sh",
            "-c",
            "sleep $1; echo \"$2 $3\"",
            "sh",
            "{1}",
            "{2/}",
            "{2.}",
            ":::",
            "0.3",
            "0",
            ":::",
            "dir/a.jpg",
            "b.png",
        ])
        .ok();
    assert_eq!(
        run.stdout, "a.jpg dir/a\nb.png b\na.jpg dir/a\nb.png b\n",
        "{}",
        run.stderr
    );
    // No placeholder: the argument is appended. Arguments from a file, columns split.
    let file = c.dir.path().join("args");
    std::fs::write(&file, "x,1\ny,2\n").unwrap();
    let run = c
        .cluster(&[
            "map",
            "--colsep",
            ",",
            "-a",
            file.to_str().unwrap(),
            "--",
            "echo",
            "{2}-{1}",
            "{#}",
        ])
        .ok();
    assert_eq!(run.stdout, "1-x 1\n2-y 2\n");
    let run = c.cluster(&["map", "--", "echo", "hi", ":::", "a b"]).ok();
    assert_eq!(run.stdout, "hi a b\n");
    // A one-word command line with spaces runs in a shell; values stay quoted.
    let run = c
        .cluster(&["map", "echo {} | tr a-z A-Z", ":::", "it's"])
        .ok();
    assert_eq!(run.stdout, "IT'S\n");
    // Arguments on stdin.
    let mut child = c
        .command(&["map", "--unordered", "--", "echo"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"p\nq\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let mut lines: Vec<_> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    lines.sort();
    assert_eq!(lines, ["p", "q"]);
    // The function map form still works.
    let run = c.cluster(&["map", "--function", "nth_prime", "0..4"]).ok();
    assert_eq!(run.stdout, "2\n3\n5\n7\n");
}

#[test]
fn json_failures_exit_status_and_summary() {
    let c = TestCluster::new();
    // One engine taking two tasks at once, so the second command waits behind `sleep 5` in
    // the engine's own queue for longer than `--timeout`.
    c.start(1, &["--hwm", "2"]);
    let run = c.cluster(&[
        "map",
        "--json",
        "--timeout",
        "0.5",
        "--env",
        "GREETING=hello",
        "--cwd",
        "/tmp",
        "--",
        "sh",
        "-c",
        "{}",
        ":::",
        "sleep 5",
        // Waits behind `sleep 5`: `--timeout` limits the run, not the wait to start.
        "kill -9 $$",
        "echo $GREETING; pwd",
        "echo oops >&2; exit 3",
    ]);
    assert_eq!(run.code, 3, "{run:?}");
    let lines = json_lines(&run.stdout);
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0]["error"]["kind"], "timeout");
    assert_eq!(lines[1]["signal"], 9, "{}", lines[1]);
    let ok = &lines[2];
    assert_eq!(ok["ok"], true);
    assert_eq!(ok["stdout"], "hello\n/tmp\n");
    assert_eq!(ok["exit_status"], 0);
    assert_eq!(ok["argument"], "echo $GREETING; pwd");
    assert!(ok["engine"].is_u64() && ok["host"].is_string());
    assert!(ok["start"].as_f64().unwrap() <= ok["end"].as_f64().unwrap());
    assert_eq!(lines[3]["exit_status"], 3);
    assert_eq!(lines[3]["stderr"], "oops\n");
    assert!(
        run.stderr.contains("cluster map: 3 of 4 tasks failed"),
        "{}",
        run.stderr
    );
    assert_eq!(
        run.stderr.lines().count(),
        1,
        "one summary line: {}",
        run.stderr
    );

    // A missing program fails its task, naming the engine; the others go on.
    let run = c.cluster(&[
        "map",
        "--",
        "{}",
        ":::",
        "true",
        "no-such-program-here",
        "true",
    ]);
    assert_eq!(run.code, 3);
    assert!(
        run.stderr.contains("no-such-program-here") && run.stderr.contains("on engine "),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1 of 3 tasks failed"), "{}", run.stderr);
    // Template errors submit nothing (a usage error: exit status 2).
    let run = c.cluster(&["map", "--", "echo", "{3}", ":::", "a"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("--colsep"), "{}", run.stderr);
}

#[test]
fn submit_result_and_wait() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let slow = c
        .cluster(&["submit", "--", "sh", "-c", "sleep 0.5; echo slow"])
        .ok();
    let slow = slow.stdout.trim().to_owned();
    let bad = c.cluster(&["submit", "--", "sh", "-c", "exit 4"]).ok();
    let bad = bad.stdout.trim().to_owned();
    assert!(slow.contains(':') && bad.contains(':'));
    // Not finished and not waiting: exit status 5.
    let run = c.cluster(&["result", &slow]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("--wait"), "{}", run.stderr);
    let run = c.cluster(&["result", "--wait", &slow]).ok();
    assert_eq!(run.stdout, "slow\n");
    let run = c.cluster(&["result", "--json", &bad]);
    assert_eq!(run.code, 3);
    let v = &json_lines(&run.stdout)[0];
    assert_eq!(v["exit_status"], 4);
    assert_eq!(v["command"], "sh -c 'exit 4'");
    let run = c.cluster(&["wait"]);
    assert_eq!(run.code, 3);
    assert!(
        run.stdout
            .contains("2 submitted task(s): 1 succeeded, 1 failed"),
        "{}",
        run.stdout
    );
    assert!(
        run.stderr.contains("cluster wait: 1 of 2 tasks failed"),
        "{}",
        run.stderr
    );
    let run = c.cluster(&["result", "999:1"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("no record"), "{}", run.stderr);
}

#[test]
fn ssh_launch_is_refused_while_the_controller_listens_on_loopback() {
    let c = TestCluster::new();
    let run = c.cluster(&["start", "--launcher", "ssh", "--hosts", "node1:2"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("--ip"), "{}", run.stderr);
    assert!(c.cluster(&["status", "--connect-timeout", "0.2"]).code != 0);
}

/// Ctrl-C on `cluster map` aborts the queued tasks instead of leaving them to run for nobody.
#[test]
fn an_interrupted_map_aborts_its_queued_tasks() {
    let c = TestCluster::new();
    c.start(1, &["--hwm", "1"]);
    let child = c
        .command(&["map", "--", "sleep", "{}", ":::", "3", "3", "3", "3", "3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cluster map");
    let queued = |c: &TestCluster| {
        let run = c.cluster(&["status", "--json"]).ok();
        let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
        v["queue"]["unassigned"].as_u64()
    };
    assert!(
        cluster_tests::eventually(std::time::Duration::from_secs(10), || queued(&c) == Some(4)),
        "the map's tasks were never queued"
    );
    cluster_tests::signal(child.id(), libc::SIGINT);
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains(
            "cluster map: interrupted; 4 queued task(s) aborted, 1 already running will finish on their engines"
        ),
        "{stderr}"
    );
    assert_eq!(queued(&c), Some(0));
    let run = c.cluster(&["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        v["tasks"]["failed"], 4,
        "the aborted ones count as failed: {v}"
    );
}

/// Tasks sent with `cluster submit` outlive a controller that dies: the one running on the
/// engine delivers its result to the controller that comes back, and the one that was only
/// queued is submitted again by `cluster wait` from the record `submit` kept.
#[test]
fn submitted_tasks_survive_a_controller_restart() {
    let c = TestCluster::new();
    c.start(1, &["--hwm", "1"]);
    let first = c
        .cluster(&["submit", "--", "sh", "-c", "sleep 1; echo first"])
        .ok();
    let second = c.cluster(&["submit", "--", "echo", "second"]).ok();
    let (first, second) = (first.stdout.trim(), second.stdout.trim());
    let controller = c.controller_pid().unwrap();
    cluster_tests::signal(controller, libc::SIGKILL);
    assert!(cluster_tests::eventually(
        std::time::Duration::from_secs(5),
        || !profiles::process_alive(controller)
    ));
    // `cluster start` on the profile brings the controller back for the running engine.
    c.start(1, &["--hwm", "1"]);
    let run = c.cluster(&["wait"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("submitted them again"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains(second), "{}", run.stderr);
    assert!(run.stdout.contains("2 succeeded"), "{}", run.stdout);
    let run = c.cluster(&["result", first]).ok();
    assert_eq!(run.stdout, "first\n");
    let run = c.cluster(&["result", second]).ok();
    assert_eq!(run.stdout, "second\n");
}
