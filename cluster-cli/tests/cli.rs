//! The command line itself: help, usage errors, argument checks. (Its presence also makes
//! `cargo test --workspace` build the `cluster` binary that the end-to-end tests run.)

use std::process::Command;

fn cluster(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_cluster"))
        .env("CLUSTER_DIR", dir.path())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_every_command() {
    let out = cluster(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "profile",
        "start",
        "stop",
        "status",
        "engines",
        "call",
        "map",
        "submit",
        "result",
        "wait",
        "controller",
        "engine",
        "demo",
        "bench",
        "dashboard",
        "top",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = cluster(&["map"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cluster(&["start", "-n", "many"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_settings_are_reported_with_their_source() {
    let out = cluster(&["--profile", "x", "controller", "--hwm", "lots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hwm") && err.contains("lots"), "{err}");
}

/// A throw-away cluster folder; whatever was started in it is stopped on drop, and every
/// process its run records name is killed by pid if it survived.
struct Folder {
    dir: tempfile::TempDir,
}

impl Folder {
    fn new() -> Folder {
        Folder {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_cluster"));
        cmd.env("CLUSTER_DIR", self.dir.path())
            .env_remove("CLUSTER_PROGRAM")
            .env_remove("CLUSTER_PROFILE")
            .env_remove("CLUSTER_ENGINE_PROGRAM")
            .args(args);
        cmd
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.command(args).output().unwrap()
    }

    fn profile(&self) -> profiles::Profile {
        profiles::Profile::in_root(self.dir.path(), "default").unwrap()
    }
}

impl Drop for Folder {
    fn drop(&mut self) {
        let profile = self.profile();
        let mut pids: Vec<u32> = profile
            .engine_records()
            .unwrap_or_default()
            .into_iter()
            .map(|(_, r)| r.pid)
            .collect();
        pids.extend(profile.controller_record().ok().flatten().map(|r| r.pid));
        let _ = self.run(&["stop", "--grace", "1"]);
        for pid in pids.into_iter().filter(|p| profiles::process_alive(*p)) {
            // SAFETY: kill(2) on a pid this test's cluster recorded.
            unsafe {
                libc::kill(pid as i32, libc::SIGKILL);
            }
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn cluster_program_is_what_start_launches() {
    let folder = Folder::new();
    let exe = env!("CARGO_BIN_EXE_cluster");
    // A wrapper that announces itself in the log, then runs the real binary.
    let program = serde_json::json!(["/bin/sh", "-c", "echo via-wrapper; exec \"$0\" \"$@\"", exe]);
    let out = folder
        .command(&["start", "-n", "1", "--timeout", "20"])
        .env("CLUSTER_PROGRAM", program.to_string())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let log = std::fs::read_to_string(folder.profile().log_dir().join("controller.log")).unwrap();
    assert!(log.starts_with("via-wrapper"), "{log}");
    let engine_log = &folder.profile().engine_records().unwrap()[0].1.log;
    let log = std::fs::read_to_string(engine_log).unwrap();
    assert!(log.starts_with("via-wrapper"), "{log}");
}

#[test]
fn a_bad_cluster_program_is_named() {
    let folder = Folder::new();
    let out = folder
        .command(&["start", "-n", "1"])
        .env("CLUSTER_PROGRAM", "[\"\"]")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("CLUSTER_PROGRAM"),
        "{}",
        text(&out.stderr)
    );
}

/// Runs `cluster ARGS` with its stdout a pipe nobody reads (the read end closed before it
/// starts, as after `| head -1` has exited).
fn run_with_closed_stdout(folder: &Folder, args: &[&str]) -> std::process::Output {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) fills the two descriptors; the read end is closed at once and the write
    // end handed to the child (and closed here when the Stdio drops).
    let stdout = unsafe {
        assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
        libc::close(fds[0]);
        <std::process::Stdio as std::os::fd::FromRawFd>::from_raw_fd(fds[1])
    };
    folder
        .command(args)
        .stdout(stdout)
        .stderr(std::process::Stdio::piped())
        .output()
        .unwrap()
}

/// Issue 9 item 5: `cluster status | head -1` sometimes panicked with "failed printing to
/// stdout: Broken pipe". A closed stdout ends every command quietly with success.
#[test]
fn a_closed_stdout_ends_every_command_quietly() {
    let folder = Folder::new();
    let start = run_with_closed_stdout(&folder, &["start", "-n", "1"]);
    assert_eq!(start.status.code(), Some(0), "{}", text(&start.stderr));
    let submitted = folder.run(&["submit", "--", "echo", "hi"]);
    let id = text(&submitted.stdout).trim().to_owned();
    for args in [
        &["--help"][..],
        &["status"],
        &["status", "--json"],
        &["profile", "list"],
        &["profile", "list", "--json"],
        &["profile", "locate"],
        &["call", "nth_prime", "5"],
        &["call", "--json", "nth_prime", "5"],
        &["map", "--function", "nth_prime", "0..50"],
        &["map", "--json", "--function", "nth_prime", "0..50"],
        &["map", "--", "echo", "{}", ":::", "a", "b", "c"],
        &["map", "--json", "--", "echo", "{}", ":::", "a", "b"],
        &["result", "--wait", &id],
        &["wait"],
        &["wait", "--json"],
        &["submit", "--", "true"],
        &["engines", "-n", "1"],
        &["stop"],
    ] {
        let out = run_with_closed_stdout(&folder, args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
}

fn run_with_stdin(folder: &Folder, args: &[&str], stdin: &str) -> std::process::Output {
    use std::io::Write as _;
    let mut child = folder
        .command(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let _ = child.stdin.take().unwrap().write_all(stdin.as_bytes());
    child.wait_with_output().unwrap()
}

/// Issue 9 item 7: `cluster map 0..5 </dev/null` (forgetting `--function` outside a
/// terminal) printed nothing and exited 0. A command map without a command is a usage error
/// that says what was probably meant; nothing is read, sent or started.
#[test]
fn a_command_map_without_a_command_is_a_usage_error() {
    let folder = Folder::new();
    for args in [
        &["map", "0..5"][..],
        &["map", "42", "7"],
        &["map", "[1,2]"],
        &["map", ":::", "a", "b"],
    ] {
        let out = run_with_stdin(&folder, args, "");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(
            err.contains("--function") || err.contains("no command"),
            "{args:?}: {err}"
        );
        assert!(out.stdout.is_empty(), "{args:?}");
    }
    let err = text(&run_with_stdin(&folder, &["map", "0..5"], "").stderr);
    assert!(
        err.contains("cluster map --function nth_prime 0..5"),
        "{err}"
    );
    // A real command with empty input runs nothing, says so, and succeeds.
    let out = run_with_stdin(&folder, &["map", "--", "echo", "{}"], "");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to run"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 9 item 11: `engine --file /tmp/nope.json` exited 1 and `status --file` 4; `{}` was
/// "not valid JSON"; engine.json given to `status` was "corrupt … restart the controller";
/// an explicit `--file` still asked "is this the right profile?". Every command uses one
/// table of exit statuses, and messages match what was given.
#[test]
fn connection_file_problems_exit_4_with_messages_that_fit() {
    let folder = Folder::new();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, "{}").unwrap();
    let engine_file = dir.path().join("engine.json");
    let key = "00".repeat(32);
    std::fs::write(
        &engine_file,
        format!(
            r#"{{"protocol_version": {}, "key": "{key}", "signature_scheme": "hmac-sha256",
                "addresses": {{"engine": "tcp://127.0.0.1:1", "heartbeat": "tcp://127.0.0.1:2"}}}}"#,
            protocol::PROTOCOL_VERSION
        ),
    )
    .unwrap();
    let path = |p: &std::path::Path| p.to_str().unwrap().to_owned();
    for (args, wanted, unwanted) in [
        (
            vec!["engine", "--file", &path(&missing)],
            "does not exist",
            "profile",
        ),
        (
            vec!["status", "--file", &path(&missing)],
            "does not exist",
            "profile",
        ),
        (
            vec!["call", "--file", &path(&missing), "noop"],
            "does not exist",
            "profile",
        ),
        (
            vec!["status", "--file", &path(&empty)],
            "not a cluster connection file",
            "not valid JSON",
        ),
        (
            vec!["engine", "--file", &path(&empty)],
            "not a cluster connection file",
            "not valid JSON",
        ),
        (
            vec!["status", "--file", &path(&engine_file)],
            "needs the client.json one",
            "corrupt",
        ),
        (
            vec!["status"],
            "no controller is running for profile",
            "right profile",
        ),
    ] {
        let out = folder.run(&args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{args:?}: {err}");
        assert!(err.contains(wanted), "{args:?}: {err}");
        assert!(!err.contains(unwanted), "{args:?}: {err}");
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn engine_pids(folder: &Folder) -> Vec<u32> {
    folder
        .profile()
        .engine_records()
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.pid)
        .collect()
}

/// Issue 9 item 8, flags: `start --engine-port` was refused with a tip pointing at
/// `--engine-program`; a port in use was explained three times over.
#[test]
fn start_takes_the_controller_ports_and_a_busy_port_is_said_once() {
    let folder = Folder::new();
    let port = free_port();
    let out = folder.run(&["start", "-n", "1", "--engine-port", &port.to_string()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("1 engine ready"),
        "{}",
        text(&out.stdout)
    );
    let status = folder.run(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    let address = v["controller"]["engine_address"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(address.ends_with(&format!(":{port}")), "{address}");
    let _ = folder.run(&["stop"]);

    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    let out = folder.run(&["start", "-n", "1", "--engine-port", &port]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("Address already in use").count(), 1, "{err}");
}

/// Issue 9 item 8, messages: the lost-engine error said everything twice, "they offer"
/// listed internal `__push`-style functions, `wait --json` gave `"pending": ""`, every
/// `cluster wait` reported the same old failures again, and with `CLUSTER_DIR` set usage
/// lines showed `--cluster-dir <DIR>` as if it were required.
#[test]
fn messages_say_each_thing_once_and_wait_reports_each_task_once() {
    let folder = Folder::new();
    let usage = text(&folder.run(&["map"]).stderr);
    assert!(!usage.contains("--cluster-dir"), "{usage}");

    let out = folder.run(&["start", "-n", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let err = text(&folder.run(&["call", "no_such_function"]).stderr);
    assert!(!err.contains("__"), "{err}");
    assert_eq!(err.matches("no_such_function").count(), 1, "{err}");

    let _ = folder.run(&["submit", "--", "false"]);
    let first = folder.run(&["wait", "--json"]);
    assert_eq!(first.status.code(), Some(3));
    let last = text(&first.stdout).lines().last().unwrap().to_owned();
    let summary: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(summary["pending"], serde_json::json!([]), "{last}");
    assert_eq!(summary["unknown"], serde_json::json!([]), "{last}");
    let again = folder.run(&["wait"]);
    assert_eq!(again.status.code(), Some(0), "{}", text(&again.stderr));
    assert!(
        text(&again.stdout).starts_with("0 submitted task(s)"),
        "{}",
        text(&again.stdout)
    );

    // An engine killed in the middle of a task: said once.
    let call = folder
        .command(&["call", "sleep", "20"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(700));
    for pid in engine_pids(&folder) {
        // SAFETY: kill(2) on the engine this test's cluster started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    let out = call.wait_with_output().unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert_eq!(err.matches("lost").count(), 1, "{err}");
}

/// Issue 9 item 10: after `kill -9` of the controller, `profile list` said "stopped" while
/// its engines ran, and `cluster status` waited out the whole connect timeout although the
/// recorded pid was dead. Both say at once what is going on and how to restart.
#[test]
fn a_dead_controller_is_reported_at_once_with_its_surviving_engines() {
    let folder = Folder::new();
    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let controller = folder.profile().controller_record().unwrap().unwrap().pid;
    // SAFETY: kill(2) on the controller this test started.
    unsafe {
        libc::kill(controller as i32, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while profiles::process_alive(controller) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let list = text(&folder.run(&["profile", "list"]).stdout);
    assert!(
        list.contains("controller dead, 2 engines running"),
        "{list}"
    );
    let t = std::time::Instant::now();
    let out = folder.run(&["status"]);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        t.elapsed()
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("is not running")
            && err.contains("2 of its engines")
            && err.contains("cluster start"),
        "{err}"
    );
    // `cluster start` brings it back; the engines reattach.
    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value =
        serde_json::from_slice(&folder.run(&["status", "--json"]).stdout).unwrap();
    assert_eq!(v["engines"].as_array().map(Vec::len), Some(2), "{v}");
}

/// Issue 9 item 2: function maps printed nothing until the whole map was done
/// (`map --function sleep 0.1 0.2 3` printed all three at +3 s; `… | head -2` printed nothing
/// for minutes). Results stream in input order, or as they finish with `--unordered`, and a
/// reader that goes away stops the map.
#[test]
fn function_maps_stream_their_results() {
    use std::io::BufRead as _;
    use std::time::{Duration, Instant};
    let folder = Folder::new();
    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let lines_with_times = |args: &[&str]| {
        let t0 = Instant::now();
        let mut child = folder
            .command(args)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let lines: Vec<(Duration, String)> = std::io::BufReader::new(child.stdout.take().unwrap())
            .lines()
            .map(|l| (t0.elapsed(), l.unwrap()))
            .collect();
        assert!(child.wait().unwrap().success());
        lines
    };
    let lines = lines_with_times(&[
        "map",
        "--chunksize",
        "1",
        "--function",
        "sleep",
        "0.1",
        "0.2",
        "2",
    ]);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[0].0 < Duration::from_millis(1500), "{lines:?}");
    assert!(lines[2].0 >= Duration::from_secs(2), "{lines:?}");

    let lines = lines_with_times(&[
        "map",
        "--json",
        "--unordered",
        "--chunksize",
        "1",
        "--function",
        "sleep",
        "1.0",
        "0.1",
    ]);
    let first: serde_json::Value = serde_json::from_str(&lines[0].1).unwrap();
    assert_eq!(first["item"], 0.1, "{lines:?}");

    // `| head -1`: the reader leaves after one line; the map ends soon, not after 30 × 0.5 s.
    let t0 = Instant::now();
    let mut child = folder
        .command(&[
            "map",
            "--chunksize",
            "1",
            "--function",
            "sleep",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
            "0.5",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(t0.elapsed() < Duration::from_secs(5), "{:?}", t0.elapsed());
}

/// Issue 9 item 3: bad input went to the engines and came back as a serialization error
/// (`0..abc`, `0...5`, `call nth_prime` with no argument), and one bad item failed the whole
/// map with none of the good results printed. Malformed ranges are usage errors before
/// anything is sent; a wrong argument is named with its value and what was expected; the
/// other items still print, then a summary and exit status 3.
#[test]
fn input_is_checked_before_it_is_sent() {
    let folder = Folder::new();
    // No cluster is needed to refuse these: nothing is sent.
    for args in [
        &["map", "--function", "nth_prime", "0..abc"][..],
        &["map", "--function", "nth_prime", "0...5"],
    ] {
        let out = folder.run(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is not a range"), "{err}");
    }
    let out = folder.run(&["call", "nth_prime"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("nth_prime takes a whole number"),
        "{}",
        text(&out.stderr)
    );

    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = folder.run(&["map", "--function", "nth_prime", "0..=3", "5", "\"x\""]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(text(&out.stdout), "2\n3\n5\n7\n13\n");
    let err = text(&out.stderr);
    assert!(
        err.contains("item 6 (\"x\")") && err.contains("whole number"),
        "{err}"
    );
    assert!(err.contains("1 of 6 items failed"), "{err}");
    assert!(!err.contains("msgpack"), "{err}");
}

/// Issue 9 item 6: `cluster start -n 0` then `cluster call nth_prime 3` hung without a word.
/// After a second without engines, calls and maps say so on stderr and go on waiting (an
/// engine that joins runs the task); with a timeout, the error says there were no engines.
#[test]
fn waiting_without_engines_is_said() {
    let folder = Folder::new();
    let out = folder.run(&["start", "-n", "0"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for args in [
        &["call", "--timeout", "2", "nth_prime", "3"][..],
        &["map", "--timeout", "2", "--function", "nth_prime", "0..3"],
    ] {
        let out = folder.run(args);
        let err = text(&out.stderr);
        assert!(err.contains("no engine is registered"), "{args:?}: {err}");
        assert_eq!(out.status.code(), Some(5), "{args:?}: {err}");
        assert!(err.contains("no engine was registered"), "{args:?}: {err}");
    }
    // Without a timeout it goes on waiting, and an engine that joins runs the task.
    let call = folder
        .command(&["call", "nth_prime", "3"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let added = folder.run(&["engines", "-n", "1"]);
    assert!(added.status.success(), "{}", text(&added.stderr));
    let out = call.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "7\n", "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no engine is registered"),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 9 item 9 (part): log files carried raw colour codes. The controller's and the stock
/// engines' logs are plain text (colours only on a terminal).
#[test]
fn logs_have_no_colour_codes() {
    let folder = Folder::new();
    let out = folder
        .command(&["start", "-n", "1"])
        .env("CLUSTER_LOG", "debug")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = folder.run(&["call", "noop"]);
    let _ = folder.run(&["stop"]);
    let logs: Vec<_> = std::fs::read_dir(folder.profile().log_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(logs.len() >= 2, "{logs:?}");
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(!text.is_empty(), "{}", log.display());
        assert!(!text.contains('\x1b'), "{}:\n{text}", log.display());
    }
}

/// The log of each engine this test's cluster recorded, by pid.
fn engine_logs(folder: &Folder) -> Vec<std::path::PathBuf> {
    folder
        .profile()
        .engine_records()
        .unwrap()
        .into_iter()
        .map(|(_, r)| r.log)
        .collect()
}

/// Issue 9 item 9: `cluster engines -n 1` on a cluster started with `--engine-program` added
/// a stock engine. It adds one of the program the cluster was started with (given as a
/// relative path, from another folder), unless told otherwise.
#[test]
fn engines_are_added_with_the_program_the_cluster_started_with() {
    use std::os::unix::fs::PermissionsExt;
    let folder = Folder::new();
    let script = folder.dir.path().join("my-engine.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho my-engine-program\nexec '{}' engine \"$@\"\n",
            env!("CARGO_BIN_EXE_cluster")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = folder
        .command(&["start", "-n", "1", "--engine-program", "./my-engine.sh"])
        .current_dir(folder.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = folder.run(&["engines", "-n", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let logs = engine_logs(&folder);
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap();
        assert!(
            text.starts_with("my-engine-program"),
            "{}: {text}",
            log.display()
        );
    }
    // Told otherwise: a stock engine.
    let out = folder.run(&["engines", "-n", "1", "--stock-engine"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stock: Vec<String> = engine_logs(&folder)
        .iter()
        .map(|log| std::fs::read_to_string(log).unwrap())
        .filter(|text| !text.starts_with("my-engine-program"))
        .collect();
    assert_eq!(stock.len(), 1, "{stock:?}");
}

/// `cluster start --engine-program P --restart on-failure`: an engine that dies is started
/// again with P (the program the cluster was started with), not the stock engine.
#[test]
fn a_restarted_engine_runs_the_program_the_cluster_started_with() {
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;
    let folder = Folder::new();
    let script = folder.dir.path().join("my-engine.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho my-engine-program\nexec '{}' engine \"$@\"\n",
            env!("CARGO_BIN_EXE_cluster")
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = folder
        .command(&[
            "start",
            "-n",
            "1",
            "--engine-program",
            "./my-engine.sh",
            "--restart",
            "on-failure",
        ])
        .current_dir(folder.dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let client = client::Client::connect_file(folder.profile().client_file()).unwrap();
    let first = client.status().unwrap().engines[0].pid;
    // SAFETY: kill(2) on the engine this test's cluster started.
    unsafe {
        libc::kill(first as i32, libc::SIGKILL);
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !client
        .status()
        .unwrap()
        .engines
        .iter()
        .any(|e| e.pid != first)
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no new engine in 30 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let logs = engine_logs(&folder);
    assert_eq!(logs.len(), 2, "{logs:?}");
    for log in &logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        assert!(
            text.starts_with("my-engine-program"),
            "{}: {text}",
            log.display()
        );
    }
    let out = folder.run(&["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// Issue 9 item 9: every start left a new `engine-<timestamp>-N.log` per engine, piling up,
/// and N was not the engine id. Logs are named by engine id, the previous start's kept as
/// `.1`: starting again and again leaves the same files.
#[test]
fn engine_logs_are_named_by_engine_id_and_do_not_pile_up() {
    let folder = Folder::new();
    let names = |folder: &Folder| {
        let mut names: Vec<String> = std::fs::read_dir(folder.profile().log_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    for round in 0..3 {
        let out = folder.run(&["start", "-n", "2"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let status = folder.run(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
        let records = folder.profile().engine_records().unwrap();
        for engine in v["engines"].as_array().unwrap() {
            let pid = engine["pid"].as_u64().unwrap() as u32;
            let (_, record) = records.iter().find(|(_, r)| r.pid == pid).unwrap();
            let wanted = format!("engine-{}.log", engine["id"]);
            assert!(record.log.ends_with(&wanted), "{}", record.log.display());
        }
        let out = folder.run(&["stop"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let wanted: &[&str] = if round == 0 {
            &["controller.log", "engine-0.log", "engine-1.log"]
        } else {
            &[
                "controller.log",
                "controller.log.1",
                "engine-0.log",
                "engine-0.log.1",
                "engine-1.log",
                "engine-1.log.1",
            ]
        };
        assert_eq!(names(&folder), wanted, "round {round}");
    }
}

/// Kills (SIGKILL) the controller and every engine the run records of `folder` name, and
/// waits until they are gone.
fn kill_everything(folder: &Folder) {
    let profile = folder.profile();
    let mut pids = engine_pids(folder);
    pids.extend(profile.controller_record().unwrap().map(|r| r.pid));
    for &pid in &pids {
        // SAFETY: kill(2) on processes this test's cluster started.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while pids.iter().any(|&p| profiles::process_alive(p)) {
        assert!(std::time::Instant::now() < deadline, "{pids:?} survived");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}

/// Submits `n` commands that each append their number to `file` (after `sleep` seconds); their ids.
fn submit_appenders(folder: &Folder, n: usize, file: &std::path::Path, sleep: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let line = format!("sleep {sleep}; echo {i} >> {}", file.display());
            let out = folder.run(&["submit", "--", "sh", "-c", &line]);
            assert!(out.status.success(), "{}", text(&out.stderr));
            text(&out.stdout).trim().to_owned()
        })
        .collect()
}

/// Issue 11: the task store keeps results across a `kill -9` of the controller and every
/// engine together; `cluster start` on the same profile answers them from disk, and none of
/// the tasks ran twice.
#[test]
fn results_survive_killing_the_controller_and_every_engine() {
    let folder = Folder::new();
    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = folder.dir.path().join("ran.txt");
    let n = 200;
    let ids = submit_appenders(&folder, n, &file, "0");
    let mut wait = vec!["result", "--wait", "--json"];
    wait.extend(ids.iter().map(String::as_str));
    let out = folder.run(&wait);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // One commit interval (100 ms) and then some.
    std::thread::sleep(std::time::Duration::from_millis(400));
    kill_everything(&folder);
    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut ask = vec!["result", "--json"];
    ask.extend(ids.iter().map(String::as_str));
    let out = folder.run(&ask);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answered = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"ok\":true"))
        .count();
    assert_eq!(answered, n, "{}", text(&out.stdout));
    std::thread::sleep(std::time::Duration::from_millis(300));
    let ran = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = ran.lines().collect();
    assert_eq!(lines.len(), n, "a task ran twice or not at all");
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), n);
}

/// Issue 11: `kill -9` of everything while tasks are queued and running; after `cluster
/// start`, every task is answered (those unfinished ran again: at least once).
#[test]
fn tasks_unfinished_when_everything_is_killed_run_after_the_restart() {
    let folder = Folder::new();
    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let file = folder.dir.path().join("ran.txt");
    let n = 60;
    let ids = submit_appenders(&folder, n, &file, "0.05");
    std::thread::sleep(std::time::Duration::from_millis(300));
    kill_everything(&folder);
    let before = std::fs::read_to_string(&file)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(
        before < n,
        "all {before} finished before the kill; make the tasks longer"
    );
    let out = folder.run(&["start", "-n", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut wait = vec!["result", "--wait", "--timeout", "60", "--json"];
    wait.extend(ids.iter().map(String::as_str));
    let out = folder.run(&wait);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answered = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("\"ok\":true"))
        .count();
    assert_eq!(answered, n, "{}", text(&out.stdout));
    let ran = std::fs::read_to_string(&file).unwrap();
    let mut lines: Vec<&str> = ran.lines().collect();
    lines.sort_unstable();
    lines.dedup();
    assert_eq!(lines.len(), n, "some task never ran");
}

/// Issue 11: a second controller on a profile whose database is in use refuses, and a
/// corrupt database stops the controller with the store's message until `--db-reset`.
#[test]
fn a_corrupt_or_busy_task_database_is_refused_with_its_name() {
    let folder = Folder::new();
    let db = folder.dir.path().join("other.db");
    let dbs = db.display().to_string();
    let out = folder.run(&["start", "-n", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let _ = folder.run(&["stop"]);
    std::fs::write(
        &db,
        b"this is not a database, just some text that is long enough",
    )
    .unwrap();
    let out = folder
        .command(&["start", "-n", "1"])
        .env("CLUSTER_DB_PATH", &dbs)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&dbs), "{err}");
    let out = folder
        .command(&["start", "-n", "1", "--db-reset"])
        .env("CLUSTER_DB_PATH", &dbs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("aside"), "{}", text(&out.stderr));
    // A second controller on the same database (another profile pointing at it).
    let out = folder
        .command(&["--profile", "second", "controller"])
        .env("CLUSTER_DB_PATH", &dbs)
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&dbs), "{err}");
}

/// `cluster scale` with the local launcher: from no engines to `--max` under a backlog of
/// tasks (never above it), every result back, and down to none once they have been idle for
/// `--idle-timeout`; `cluster status` says what it does and `cluster stop` ends it. Prints
/// the two figures: from a task queued with no engine to an engine running it, and from idle
/// to released.
#[test]
fn scale_starts_engines_for_a_backlog_and_releases_them_when_idle() {
    use std::time::{Duration, Instant};
    let folder = Folder::new();
    // One task per engine at a time, so that the backlog stays in the controller's queue.
    let out = folder.run(&["start", "-n", "0", "--hwm", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = folder.run(&[
        "scale",
        "--min",
        "0",
        "--max",
        "3",
        "--idle-timeout",
        "2s",
        "--interval-ms",
        "100",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("autoscaler started"),
        "{}",
        text(&out.stdout)
    );
    let scale_pid = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(folder.profile().run_dir().join("scale.json")).unwrap(),
    )
    .unwrap()["pid"]
        .as_u64()
        .unwrap() as u32;
    let client = client::Client::connect_file(folder.profile().client_file()).unwrap();
    assert_eq!(client.status().unwrap().engines.len(), 0);

    // Six 1-second tasks: more than three engines can take at once.
    let queued = Instant::now();
    let ids = submit_appenders(&folder, 6, &folder.dir.path().join("out.txt"), "1");
    let mut first_running = None;
    let mut most = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = client.status().unwrap();
        most = most.max(status.engines.len());
        if first_running.is_none() && status.engines.iter().any(|e| e.outstanding > 0) {
            first_running = Some(queued.elapsed());
        }
        if status.tasks.done == 6 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks not done in 60 s: {status:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let idle_from = Instant::now();
    assert_eq!(most, 3, "scaled to --max and not above");
    let out = folder.run(&["wait", "--timeout", "10"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(ids.len(), 6);
    let lines = std::fs::read_to_string(folder.dir.path().join("out.txt")).unwrap();
    assert_eq!(lines.lines().count(), 6, "{lines}");
    let status = folder.run(&["status"]);
    assert!(
        text(&status.stdout).contains("scale (pid"),
        "{}",
        text(&status.stdout)
    );

    // Idle for 2 s: all released (drained, gone).
    let deadline = Instant::now() + Duration::from_secs(30);
    while !client.status().unwrap().engines.is_empty() {
        assert!(Instant::now() < deadline, "engines not released in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    let released = idle_from.elapsed();
    eprintln!(
        "MEASURE scale (local): task queued with no engine -> an engine running it {:.2} s; idle -> all released {:.2} s (idle timeout 2 s, interval 0.1 s)",
        first_running.unwrap_or_default().as_secs_f64(),
        released.as_secs_f64()
    );
    let out = folder.run(&["stop"]);
    assert!(
        text(&out.stdout).contains("stopped the autoscaler"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !profiles::process_alive(scale_pid),
        "the autoscaler is gone"
    );
}

/// `cluster start --restart on-failure`: `kill -9` of an engine brings a new one, counted in
/// `cluster status`; an engine that keeps dying at once is restarted only `[restart] limit`
/// times, and the status says it gave up.
#[test]
fn engines_killed_with_restart_on_failure_come_back_until_the_limit() {
    use std::time::{Duration, Instant};
    let folder = Folder::new();
    let out = folder.run(&["profile", "create"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let config = folder.profile().config_file();
    let original = std::fs::read_to_string(&config).unwrap_or_default();
    std::fs::write(
        &config,
        format!("{original}\n[restart]\nlimit = 2\nwindow_s = 600\nbackoff_initial_ms = 100\nbackoff_max_ms = 200\n"),
    )
    .unwrap();
    let out = folder.run(&["start", "-n", "1", "--restart", "on-failure"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let client = client::Client::connect_file(folder.profile().client_file()).unwrap();
    let first = client.status().unwrap().engines[0].clone();
    let killed = Instant::now();
    // SAFETY: kill(2) on the engine this test's cluster started.
    unsafe {
        libc::kill(first.pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        let status = client.status().unwrap();
        if let Some(e) = status.engines.iter().find(|e| e.pid != first.pid) {
            break e.clone();
        }
        assert!(Instant::now() < deadline, "no new engine in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    eprintln!(
        "MEASURE restart: kill -9 -> a new engine registered in {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    let out = folder.run(&["status"]);
    assert!(
        text(&out.stdout).contains("1 restart(s)"),
        "{}",
        text(&out.stdout)
    );

    // From now on every start dies at once: a crash loop, stopped by the limit.
    let crash = folder.dir.path().join("crash.sh");
    std::fs::write(&crash, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&crash, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let now = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        format!("engine_program = {:?}\n{now}", crash.display().to_string()),
    )
    .unwrap();
    // SAFETY: as above.
    unsafe {
        libc::kill(second.pid as i32, libc::SIGKILL);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = folder.run(&["status"]);
        let shown = text(&out.stdout);
        if shown.contains("gave up") {
            assert!(shown.contains("2 restart(s)"), "{shown}");
            assert!(shown.contains("crash loop"), "{shown}");
            break;
        }
        assert!(Instant::now() < deadline, "no giving up in 30 s:\n{shown}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = folder.run(&["stop"]);
    assert!(
        text(&out.stdout).contains("stopped the supervisor"),
        "{}",
        text(&out.stdout)
    );
}

/// Issue 11: `cluster history` lists the task store's records with its filters, `cluster
/// status --json` has per-function figures, `cluster purge --all` removes the records, and a
/// controller without a store says that history needs one.
#[test]
fn history_status_figures_and_purge_read_the_task_store() {
    let folder = Folder::new();
    let out = folder.run(&["start", "-n", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for i in 0..3 {
        let out = folder.run(&["call", "echo", &i.to_string()]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = folder.run(&["call", "no_such_function"]);
    assert!(!out.status.success());
    // One commit interval (100 ms) and then some.
    std::thread::sleep(std::time::Duration::from_millis(400));
    let out = folder.run(&["history", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout).lines().count(),
        4,
        "{}",
        text(&out.stdout)
    );
    let out = folder.run(&["history", "--json", "--status", "failed", "--since", "1h"]);
    let failed = text(&out.stdout);
    assert_eq!(failed.lines().count(), 1, "{failed}");
    assert!(failed.contains("no_such_function"), "{failed}");
    let out = folder.run(&["history", "--function", "echo", "--limit", "2"]);
    assert_eq!(
        text(&out.stdout).lines().count(),
        3,
        "{}",
        text(&out.stdout)
    );
    let out = folder.run(&["status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let echo = status["functions"]
        .as_array()
        .and_then(|f| f.iter().find(|f| f["function"] == "echo"))
        .cloned()
        .unwrap_or_default();
    assert_eq!(echo["ok"], 3, "{status}");
    assert!(echo["p50_us"].is_u64(), "{status}");
    let out = folder.run(&["purge", "--all"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::thread::sleep(std::time::Duration::from_millis(400));
    let out = folder.run(&["history", "--json"]);
    assert_eq!(text(&out.stdout), "", "purged records are still listed");
    let out = folder.run(&["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = folder
        .command(&["start", "-n", "0"])
        .env("CLUSTER_DB", "none")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = folder.run(&["history"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("db = \"none\""),
        "{}",
        text(&out.stderr)
    );
}

/// Issue 11: a full disk does not stop the controller: it keeps serving, `cluster status`
/// says `store: degraded (…)`, and once space is freed it writes again. Needs root (a 2 MB
/// tmpfs holds the database).
#[test]
fn a_full_disk_degrades_the_store_and_it_resumes() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a small tmpfs needs root");
        return;
    }
    let mnt = tempfile::tempdir().unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(mnt.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.path().to_path_buf());
    let db = mnt.path().join("tasks.db");
    let folder = Folder::new();
    let start = |folder: &Folder| {
        folder
            .command(&["start", "-n", "1"])
            .env("CLUSTER_DB_PATH", &db)
            .output()
            .unwrap()
    };
    let out = start(&folder);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Fill what is left of the file system.
    let filler = mnt.path().join("filler");
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=64k"])
        .arg(format!("of={}", filler.display()))
        .stderr(std::process::Stdio::null())
        .status();
    let big = format!("\"{}\"", "x".repeat(60_000));
    let status_line = |folder: &Folder| {
        let out = folder.run(&["status"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .find(|l| l.starts_with("store: "))
            .unwrap_or_default()
            .to_owned()
    };
    let mut degraded = String::new();
    for _ in 0..20 {
        let out = folder.run(&["call", "echo", &big]);
        assert!(out.status.success(), "served: {}", text(&out.stderr));
        std::thread::sleep(std::time::Duration::from_millis(150));
        degraded = status_line(&folder);
        if degraded.starts_with("store: degraded (") {
            break;
        }
    }
    assert!(degraded.starts_with("store: degraded ("), "{degraded}");
    std::fs::remove_file(&filler).unwrap();
    let mut line = String::new();
    for _ in 0..100 {
        line = status_line(&folder);
        if line == "store: ok" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(line, "store: ok", "the store did not resume");
    let out = folder.run(&["history", "--json", "--function", "echo"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).lines().count() >= 1);
    let out = folder.run(&["stop"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}
