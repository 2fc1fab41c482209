//! Shared objects end to end: the CLI's `queue` and `ns` commands, a lock holder killed with
//! `kill -9` (and one frozen past its lease), objects surviving a controller restart, limits
//! from the settings, blocking calls from many threads beside a map, and the seed's
//! producer/consumer example over a queue.

use cluster_tests::{binary, TestCluster};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

#[test]
fn cli_puts_gets_and_lists_queue_items_and_namespace_keys() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let put = c
        .cluster(&["queue", "put", "jobs", "0..1000", "--json"])
        .ok();
    assert_eq!(json(&put.stdout)["size"], 1000);
    c.cluster(&["queue", "put", "jobs", "hello", r#"{"a":1}"#])
        .ok();
    let ls = json(&c.cluster(&["queue", "ls", "--json"]).ok().stdout);
    assert_eq!(ls["objects"][0]["name"], "jobs");
    assert_eq!(ls["objects"][0]["len"], 1002);
    let got = c.cluster(&["queue", "get", "jobs", "-n", "3"]).ok();
    assert_eq!(got.stdout, "0\n1\n2\n");
    // A Rust client reads what the CLI wrote, in order.
    let client = c.client();
    let jobs = client.queue::<u64>("jobs");
    assert_eq!(jobs.get(Some(Duration::from_secs(5))).unwrap(), 3);
    for _ in 4..1000 {
        jobs.get_nowait().unwrap();
    }
    let rest = json(
        &c.cluster(&["queue", "get", "jobs", "-n", "5", "--nowait", "--json"])
            .ok()
            .stdout,
    );
    assert_eq!(rest["items"], serde_json::json!(["hello", {"a": 1}]));
    // Empty: a timed-out get exits with 5.
    let started = Instant::now();
    let empty = c.cluster(&["queue", "get", "jobs", "--timeout", "0.3"]);
    assert_eq!(empty.code, 5, "{}", empty.stderr);
    assert!(
        empty.stderr.contains("no item came in queue \"jobs\""),
        "{}",
        empty.stderr
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    // A pickle (Python's items) is shown as a notice naming its format.
    client
        .raw_queue("py")
        .put(
            client::Item::new(client::ItemFormat::Pickle, vec![0x80, 4, 0x4b, 7, 0x2e]),
            None,
        )
        .unwrap();
    let py = c.cluster(&["queue", "get", "py"]).ok();
    assert!(
        py.stdout.contains("(pickle item of 5 bytes, not shown)"),
        "{}",
        py.stdout
    );
    assert!(py.stderr.contains("holds a pickle item"), "{}", py.stderr);

    c.cluster(&["ns", "set", "best", "42"]).ok();
    c.cluster(&["ns", "set", "who", "ada"]).ok();
    assert_eq!(c.cluster(&["ns", "get", "best"]).ok().stdout, "42\n");
    assert_eq!(
        client
            .namespace("default")
            .get_value::<u64>("best")
            .unwrap(),
        Some(42)
    );
    assert_eq!(c.cluster(&["ns", "ls"]).ok().stdout, "best\nwho\n");
    c.cluster(&["ns", "del", "who"]).ok();
    let missing = c.cluster(&["ns", "get", "who"]);
    assert_eq!(missing.code, 1);
    assert!(
        missing.stderr.contains("no key \"who\""),
        "{}",
        missing.stderr
    );
    // Wrong kinds and bad names are clear errors.
    let wrong = c.cluster(&["queue", "get", "default", "--nowait"]);
    assert!(
        wrong
            .stderr
            .contains("\"default\" is a namespace, not a queue"),
        "{}",
        wrong.stderr
    );
    let bad = c.cluster(&["queue", "put", "", "1"]);
    assert_eq!(bad.code, 2, "{}", bad.stderr);
    assert!(
        bad.stderr.contains("object name is empty"),
        "{}",
        bad.stderr
    );

    // `cluster status` lists them, in text and JSON.
    let status = c.cluster(&["status"]).ok().stdout;
    assert!(status.contains("shared objects: 3"), "{status}");
    assert!(status.contains("namespace  default"), "{status}");
    let status = json(&c.cluster(&["status", "--json"]).ok().stdout);
    let names: Vec<&str> = status["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "jobs", "py"]);
}

/// Starts `lock_holder NAME LEASE_MS` and waits until it holds the lock.
fn hold(c: &TestCluster, name: &str, lease_ms: u64) -> std::process::Child {
    let mut child = Command::new(binary("examples/lock_holder"))
        .args([name, &lease_ms.to_string()])
        .env("CLUSTER_CLIENT_FILE", c.client_file())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start lock_holder");
    c.pids.borrow_mut().push(child.id());
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("held "), "{line:?}");
    child
}

#[test]
fn a_lock_holder_killed_with_kill_9_frees_the_lock_at_once() {
    let c = TestCluster::new();
    c.start(1, &[]);
    // A 30 s lease: only the closed connection can free it quickly.
    let mut holder = hold(&c, "gpu", 30_000);
    let client = c.client();
    let lock = client.lock("gpu");
    assert!(
        lock.try_acquire().unwrap().is_none(),
        "held by the other process"
    );
    let waiter = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            let asked = Instant::now();
            let guard = lock.acquire(Some(Duration::from_secs(20)));
            (guard.map(|g| g.lease()), asked.elapsed())
        })
    };
    std::thread::sleep(Duration::from_millis(200));
    let killed = Instant::now();
    cluster_tests::signal(holder.id(), libc::SIGKILL);
    let _ = holder.wait();
    let (lease, _) = waiter.join().unwrap();
    let freed = killed.elapsed();
    lease.expect("the waiter got the lock");
    eprintln!(
        "MEASURE objects: kill -9 of a lock holder -> the waiting client holds it {:.1} ms later (lease 30 s)",
        freed.as_secs_f64() * 1e3
    );
    assert!(freed < Duration::from_secs(5), "freed in {freed:?}");
}

#[test]
fn a_frozen_lock_holder_loses_the_lock_when_its_lease_runs_out() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let mut holder = hold(&c, "gpu", 1000);
    let client = c.client();
    let lock = client.lock("gpu");
    // Renewed while it runs: still held after several leases.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        lock.try_acquire().unwrap().is_none(),
        "renewals keep it held"
    );
    // Frozen: its connection stays open but renewals stop; the lease runs out.
    cluster_tests::signal(holder.id(), libc::SIGSTOP);
    let frozen = Instant::now();
    let guard = lock.acquire(Some(Duration::from_secs(10))).unwrap();
    let took = frozen.elapsed();
    eprintln!(
        "MEASURE objects: a frozen holder's 1 s lease ran out {:.2} s after it froze",
        took.as_secs_f64()
    );
    assert!(took < Duration::from_secs(3), "{took:?}");
    assert!(guard.is_held());
    cluster_tests::signal(holder.id(), libc::SIGKILL);
    cluster_tests::signal(holder.id(), libc::SIGCONT);
    let _ = holder.wait();
    guard.release().unwrap();
}

#[test]
fn queues_namespaces_and_events_survive_a_controller_restart() {
    let c = TestCluster::new();
    c.start(1, &[]);
    {
        let client = c.client();
        let jobs = client.queue::<String>("jobs");
        jobs.set_maxsize(Some(100)).unwrap();
        for i in 0..10 {
            jobs.put(&format!("job {i}")).unwrap();
        }
        jobs.get_nowait().unwrap();
        let ns = client.namespace("config");
        ns.set_value("rate", &0.5).unwrap();
        ns.set_value("gone", &1).unwrap();
        ns.delete("gone").unwrap();
        client.event("ready").set().unwrap();
        client.lock("gpu").acquire(None).unwrap().release().unwrap();
    }
    c.cluster(&["stop"]).ok();
    c.start(1, &[]);
    let client = c.client();
    let jobs = client.queue::<String>("jobs");
    assert_eq!(jobs.qsize().unwrap(), 9);
    assert_eq!(jobs.get_nowait().unwrap(), "job 1");
    let info = client.objects().unwrap();
    let q = info.iter().find(|o| o.name == "jobs").unwrap();
    assert_eq!(q.maxsize, Some(100));
    let ns = client.namespace("config");
    assert_eq!(ns.get_value::<f64>("rate").unwrap(), Some(0.5));
    assert_eq!(ns.keys().unwrap(), ["rate"]);
    assert!(client.event("ready").is_set().unwrap());
    assert!(info.iter().all(|o| o.name != "gpu"), "locks are not kept");
}

#[test]
fn a_full_limit_is_a_clear_error_from_the_settings() {
    let c = TestCluster::new();
    c.start_env(1, &[], &[("CLUSTER_OBJECT_MAX_BYTES", "1kb")]);
    let client = c.client();
    let q = client.raw_queue("big");
    q.put(client::Item::bytes(vec![0; 600]), None).unwrap();
    let err = q.put(client::Item::bytes(vec![0; 600]), None).unwrap_err();
    assert!(matches!(err, client::ObjectError::Limit { .. }), "{err}");
    assert!(err.to_string().contains("object_max_bytes"), "{err}");
    let cli = c.cluster(&["ns", "set", "k", &"x".repeat(2000)]);
    assert_eq!(cli.code, 1);
    assert!(cli.stderr.contains("object_max_bytes"), "{}", cli.stderr);
    // The controller is fine: the queue still answers.
    assert_eq!(q.qsize().unwrap(), 1);
}

#[test]
fn blocking_calls_from_many_threads_do_not_hold_up_a_map() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let client = std::sync::Arc::new(c.client());
    let getters: Vec<_> = (0..8)
        .map(|_| {
            let client = client.clone();
            std::thread::spawn(move || client.queue::<u64>("later").get(None))
        })
        .collect();
    let waiter = {
        let client = client.clone();
        std::thread::spawn(move || client.event("go").wait(Some(Duration::from_secs(30))))
    };
    std::thread::sleep(Duration::from_millis(200));
    // Results of a map come through while 9 requests wait in the controller.
    let primes = client
        .load_balanced_view()
        .map(client::stock::NTH_PRIME, 0..200u64)
        .unwrap()
        .get(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(primes[199], 1223);
    let info = client.objects().unwrap();
    assert_eq!(info.iter().map(|o| o.waiters).sum::<u64>(), 9);
    let later = client.queue::<u64>("later");
    for i in 0..8 {
        later.put(&i).unwrap();
    }
    let mut got: Vec<u64> = getters
        .into_iter()
        .map(|g| g.join().unwrap().unwrap())
        .collect();
    got.sort_unstable();
    assert_eq!(got, (0..8).collect::<Vec<_>>());
    client.event("go").set().unwrap();
    assert!(waiter.join().unwrap().unwrap());
}

#[test]
fn the_seeds_producer_and_consumers_share_a_queue() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let out = Command::new(binary("examples/queue_primes"))
        .arg("1000")
        .env("CLUSTER_CLIENT_FILE", c.client_file())
        .env_remove("CLUSTER_PROFILE")
        .output()
        .expect("run queue_primes");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("first 1000 primes: 2 3 5 7 11"), "{stdout}");
    assert!(stdout.contains("… 7919"), "{stdout}");
    assert!(
        stdout.contains("engine 0: ") && stdout.contains("engine 1: "),
        "{stdout}"
    );
    assert!(stdout.contains("queues left: 0 and 0 items"), "{stdout}");
}
