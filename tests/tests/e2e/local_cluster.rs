//! A local cluster doing real work: real controller and engine processes on loopback.

use cluster_tests::{custom_engine_bin, eventually, TestCluster};
use protocol::{CommandSpec, EngineId, ErrorKind};
use std::time::Duration;

const T: Option<Duration> = Some(Duration::from_secs(60));

#[test]
fn four_engines_map_nth_prime_like_a_local_computation() {
    let c = TestCluster::new();
    let report = c.start(4, &[]);
    assert_eq!(report["engines_ready"], 4);
    let client = c.client();
    assert_eq!(client.ids().unwrap().len(), 4);

    let expected: Vec<u64> = (0..1000).map(engine::stock::nth_prime).collect();
    assert_eq!(expected[..5], [2, 3, 5, 7, 11]);
    let view = client.load_balanced_view();
    let got: Vec<u64> = view.map("nth_prime", 0..1000u64).unwrap().get(T).unwrap();
    assert_eq!(got, expected);
    // One item per task too, so that every engine takes part.
    let got: Vec<u64> = view
        .clone()
        .chunksize(1)
        .map("nth_prime", 0..1000u64)
        .unwrap()
        .get(T)
        .unwrap();
    assert_eq!(got, expected);
    let status = client.status().unwrap();
    assert!(
        status.engines.iter().all(|e| e.completed > 0),
        "every engine worked: {:?}",
        status.engines
    );

    // The same through the command line, one result per line in input order.
    let run = c
        .cluster(&["map", "--function", "nth_prime", "0..1000"])
        .ok();
    let lines: Vec<u64> = run.stdout.lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(lines, expected);
    let run = c.cluster(&["call", "nth_prime", "999"]).ok();
    assert_eq!(run.stdout.trim(), "7919");
}

#[test]
fn direct_tasks_run_on_the_named_engine() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let client = c.client();
    let status = client.status().unwrap();
    let ids: Vec<EngineId> = status.engines.iter().map(|e| e.id).collect();
    let results = client
        .direct_view(&ids)
        .apply::<(), serde_json::Value>("whoami", &())
        .unwrap();
    assert_eq!(results.len(), 2);
    for (who, engine) in results.get(T).unwrap().into_iter().zip(&status.engines) {
        assert_eq!(who["engine_id"], engine.id.0, "{who}");
        assert_eq!(who["pid"], engine.pid, "{who}");
    }
}

#[test]
fn remote_errors_name_the_engine_and_unknown_functions_fail_fast() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let client = c.client();
    let view = client.load_balanced_view();
    let err = view
        .apply::<&str, u64>("nth_prime", &"not a number")
        .unwrap()
        .get(T)
        .unwrap_err();
    match &err {
        client::Error::Remote {
            engine,
            kind,
            message,
        } => {
            assert_eq!(*engine, Some(EngineId(0)), "{err}");
            assert_eq!(*kind, ErrorKind::BadArguments);
            assert!(!message.is_empty());
        }
        other => panic!("expected a remote error, got {other:?}"),
    }
    let err = view
        .apply::<(), ()>("no_such_function", &())
        .unwrap()
        .get(T)
        .unwrap_err();
    assert!(
        matches!(err, client::Error::UnknownFunction { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("no_such_function"), "{err}");

    let run = c.cluster(&["call", "no_such_function"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("no_such_function"), "{}", run.stderr);
}

#[test]
fn command_tasks_return_output_and_exit_status() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let client = c.client();
    let view = client.load_balanced_view();
    let spec = CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), "echo out-$X; echo err >&2; exit 3".into()],
        env: vec![("X".into(), "42".into())],
        ..Default::default()
    };
    let out = view.command(spec).unwrap().get(T).unwrap();
    assert_eq!(out.status, Some(3));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "out-42\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

#[test]
fn a_client_with_another_key_cannot_run_anything() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let text = std::fs::read_to_string(c.client_file()).unwrap();
    let mut info: serde_json::Value = serde_json::from_str(&text).unwrap();
    // Replay protection's time window travels with the key, so every peer uses the same.
    assert_eq!(info["replay_window_s"], 300);
    // So does encryption, on by default.
    assert_eq!(info["encryption"], "aes-256-gcm");
    let address = info["addresses"]["client"].as_str().unwrap().to_owned();
    info["key"] = serde_json::Value::String(security::Key::generate().to_hex());
    let forged = c.dir.path().join("forged.json");
    std::fs::write(&forged, info.to_string()).unwrap();

    let options = client::ClientOptions {
        connect_timeout: Duration::from_millis(500),
    };
    let err = client::Client::connect_file_with(&forged, options).unwrap_err();
    assert!(
        matches!(err, client::Error::ConnectTimeout { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains(&address), "{err}");

    let run = c.cluster(&[
        "status",
        "--file",
        forged.to_str().unwrap(),
        "--connect-timeout",
        "0.5",
    ]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains(&address), "{}", run.stderr);

    // Nothing ran, and the controller counted what it dropped.
    let status = c.client().status().unwrap();
    assert_eq!(status.tasks.done + status.tasks.failed, 0);
    assert!(status.dropped.bad_signature >= 2, "{:?}", status.dropped);
    let run = c.cluster(&["status", "--json"]).ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(v["dropped"]["bad_signature"].as_u64().unwrap() >= 2);
    assert_eq!(v["engines"][0]["state"], "alive");
    assert!(v["controller"]["pid"].as_u64().is_some());
}

#[test]
fn corrupt_or_missing_connection_files_give_clear_errors() {
    let c = TestCluster::new();
    let bad = c.dir.path().join("bad.json");
    std::fs::write(&bad, "{ this is not json").unwrap();
    let run = c.cluster(&["status", "--file", bad.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("bad.json") && run.stderr.contains("corrupt"),
        "{}",
        run.stderr
    );

    let run = c.cluster(&["engine", "--file", bad.to_str().unwrap()]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("bad.json"), "{}", run.stderr);

    let missing = c.dir.path().join("missing.json");
    let run = c.cluster(&["call", "noop", "--file", missing.to_str().unwrap()]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("missing.json") && run.stderr.contains("does not exist"),
        "{}",
        run.stderr
    );

    // A profile that was never started.
    let run = c.cluster(&["status"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("cluster"), "{}", run.stderr);
}

#[test]
fn stop_leaves_no_process_behind() {
    let c = TestCluster::new();
    c.start(3, &[]);
    let added = c.cluster(&["engines", "-n", "1"]).ok();
    assert!(added.stdout.contains("4 registered"), "{}", added.stdout);
    c.remember_pids();
    let pids = c.alive();
    assert_eq!(pids.len(), 5, "controller and 4 engines: {pids:?}");
    let run = c.cluster(&["stop", "--json"]).ok();
    let report: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(report["engine_pids"].as_array().unwrap().len(), 4);
    assert!(
        eventually(Duration::from_secs(5), || c.alive().is_empty()),
        "left running: {:?}",
        c.alive()
    );
    assert!(!c.client_file().exists(), "connection files are removed");
    let run = c.cluster(&["stop"]).ok();
    assert!(run.stdout.contains("no cluster"), "{}", run.stdout);
}

#[test]
fn a_second_start_is_refused_while_running() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let run = c.cluster(&["start", "-n", "1"]);
    assert_ne!(run.code, 0);
    assert!(run.stderr.contains("already running"), "{}", run.stderr);
    // The running cluster is untouched.
    assert_eq!(c.client().ids().unwrap().len(), 1);
}

#[test]
fn start_can_launch_a_users_own_engine_program() {
    let c = TestCluster::new();
    let program = custom_engine_bin();
    c.start(2, &["--engine-program", program.to_str().unwrap()]);
    let client = c.client();
    let squares: Vec<i64> = client
        .load_balanced_view()
        .map("square", 0..10i64)
        .unwrap()
        .get(T)
        .unwrap();
    assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());
    let run = c.cluster(&["call", "square", "12"]).ok();
    assert_eq!(run.stdout.trim(), "144");
}

#[test]
fn profiles_are_created_listed_and_located() {
    let c = TestCluster::new();
    let run = c.cluster(&["profile", "create", "other"]).ok();
    let dir = std::path::PathBuf::from(run.stdout.trim());
    assert!(dir.join("cluster.toml").exists() && dir.join("security").is_dir());
    assert!(dir.join("log").is_dir() && dir.join("run").is_dir());
    let run = c.cluster(&["profile", "list"]).ok();
    assert!(run.stdout.contains("other"), "{}", run.stdout);
    let run = c.cluster(&["profile", "locate", "other"]).ok();
    assert_eq!(std::path::PathBuf::from(run.stdout.trim()), dir);
}

/// `encrypt = false` (here from the environment) makes a cluster whose bodies travel in the
/// clear: the connection files say so, and engines and clients follow them.
#[test]
fn a_cluster_without_encryption_works_the_same() {
    let c = TestCluster::new();
    c.start_env(1, &[], &[("CLUSTER_ENCRYPT", "false")]);
    let text = std::fs::read_to_string(c.engine_file()).unwrap();
    let info: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(info["encryption"], "none");
    let run = c.cluster(&["call", "nth_prime", "10"]).ok();
    assert_eq!(run.stdout.trim(), "31");
}
