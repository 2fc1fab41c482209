//! The client's and the engine's examples, each run for real against a local cluster.

use cluster_tests::{binary, custom_engine_bin, TestCluster};
use std::process::Command;

/// Runs `target/<profile>/examples/NAME ARGS…` pointed at `c` through `CLUSTER_CLIENT_FILE`;
/// returns its stdout, failing with both outputs unless it succeeds.
fn run_example(c: &TestCluster, name: &str, args: &[&str]) -> String {
    let out = Command::new(binary(&format!("examples/{name}")))
        .args(args)
        .env("CLUSTER_CLIENT_FILE", c.client_file())
        .env_remove("CLUSTER_PROFILE")
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn json(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

#[test]
fn primes_finds_the_first_thousand_primes_over_a_task_queue() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let out = run_example(&c, "primes", &["1000"]);
    assert!(out.contains("first 1000 primes: 2 3 5 7 11"), "{out}");
    assert!(out.contains("… 7919"), "{out}");
    assert!(out.contains("engines {0, 1}"), "both engines worked: {out}");
    assert!(out.contains("local computation: ok"), "{out}");
}

#[test]
fn sum_range_prints_the_speed_up() {
    let c = TestCluster::new();
    c.start(2, &[]);
    // Smaller than the seed's 10,000,000 × 100: debug builds loop slowly.
    let out = run_example(&c, "sum_range", &["1000000", "8"]);
    assert!(
        out.contains("sum(range(1000000)) = 499999500000 ×8"),
        "{out}"
    );
    assert!(out.contains("cluster, 2 engines"), "{out}");
    assert!(out.contains("speed-up:"), "{out}");
}

#[test]
fn custom_client_calls_the_custom_engine_through_shared_typed_handles() {
    let c = TestCluster::new();
    let program = custom_engine_bin();
    c.start(2, &["--engine-program", program.to_str().unwrap()]);
    let out = run_example(&c, "custom_client", &[]);
    assert!(
        out.contains("squares: [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]"),
        "{out}"
    );
    assert!(out.contains("words: 4"), "{out}");
    assert!(out.contains("norm of (3, 4): 5"), "{out}");
    assert!(out.contains("overflows an i64"), "{out}");
    assert!(
        out.contains("scaled by the pushed factor: [2.5, 5.0, 10.0]"),
        "{out}"
    );
    assert!(out.contains("total over 2 engines: 500500"), "{out}");
}

/// Peak memory stays flat as the stream grows: four times the items, about the same peak.
#[test]
fn imap_stream_keeps_memory_flat() {
    let c = TestCluster::new();
    c.start(2, &[]);
    let small = json(&run_example(&c, "imap_stream", &["100000", "--json"]));
    let large = json(&run_example(&c, "imap_stream", &["400000", "--json"]));
    assert_eq!(large["items"], 400_000);
    let (small_kib, large_kib) = (
        small["peak_rss_kib"].as_u64().unwrap(),
        large["peak_rss_kib"].as_u64().unwrap(),
    );
    eprintln!("imap peak RSS: 100k items {small_kib} KiB, 400k items {large_kib} KiB");
    assert!(
        large_kib < small_kib + small_kib / 2 + 8 * 1024,
        "peak memory grew with the stream: {small_kib} KiB for 100k items, {large_kib} KiB for 400k"
    );
}

#[test]
fn client_bench_reports_costs_per_task() {
    let c = TestCluster::new();
    c.start(1, &[]);
    let out = run_example(
        &c,
        "client_bench",
        &["--calls", "300", "--items", "20000", "--json"],
    );
    let v = json(&out);
    for key in [
        "apply_rtt_median_us",
        "apply_pipelined_tasks_per_s",
        "map_items_per_s",
        "imap_items_per_s",
        "map_client_cpu_ns_per_item",
    ] {
        assert!(v[key].as_f64().is_some_and(|x| x > 0.0), "{key}: {out}");
    }
}
