//! Engines on other machines over ssh, against real sshd on fake hosts (network namespaces
//! with their own address and host name; see `cluster_tests::netns`). Skipped with a message
//! where namespaces cannot be made (not root); required under CI.

use cluster_tests::netns::{fake_hosts_or_skip, FakeHosts};
use cluster_tests::{cluster_bin, eventually, TestCluster};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

/// A test cluster whose `[ssh]` settings reach `hosts` with `identity` and `cluster_path`.
fn cluster_for(hosts: &FakeHosts, identity: &Path, cluster_path: &Path) -> TestCluster {
    let c = TestCluster::new();
    c.cluster(&["profile", "create"]).ok();
    let remote = c.dir.path().join("remote");
    let config = c.profile_dir().join("cluster.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&hosts.ssh_section(identity, cluster_path, &remote));
    std::fs::write(&config, text).unwrap();
    c
}

fn hostnames_of_map(c: &TestCluster, tasks: usize) -> BTreeSet<String> {
    let args: Vec<String> = (0..tasks).map(|i| i.to_string()).collect();
    let mut cmd = vec![
        "map",
        "--json",
        "--",
        "sh",
        "-c",
        "uname -n; sleep 0.1",
        ":::",
    ];
    cmd.extend(args.iter().map(String::as_str));
    let run = c.cluster(&cmd).ok();
    run.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["ok"], true, "{l}");
            // What the command printed and the host the controller knows must agree.
            let printed = v["stdout"].as_str().unwrap().trim().to_owned();
            assert_eq!(Some(printed.as_str()), v["host"].as_str(), "{l}");
            printed
        })
        .collect()
}

/// Waits until nothing but sshd runs in each fake host.
fn assert_hosts_clean(hosts: &FakeHosts) {
    for i in 0..hosts.hosts.len() {
        let clean = eventually(Duration::from_secs(5), || {
            hosts
                .processes(i)
                .iter()
                .all(|(_, cmd)| cmd.starts_with("sshd"))
        });
        assert!(
            clean,
            "processes left on {}: {:?}",
            hosts.hosts[i].hostname,
            hosts.processes(i)
        );
    }
}

#[test]
fn engines_on_two_hosts_run_a_map_and_stop_leaves_nothing() {
    let Some(hosts) = fake_hosts_or_skip(2) else {
        return;
    };
    let c = cluster_for(&hosts, &hosts.identity(), &cluster_bin());
    let (h1, h2) = (&hosts.hosts[0], &hosts.hosts[1]);
    let list = format!("{}:2,{}:1", h1.address, h2.address);
    let run = c
        .cluster(&[
            "start",
            "--ip",
            &hosts.gateway,
            "--launcher",
            "ssh",
            "--hosts",
            &list,
            "--json",
        ])
        .ok();
    let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(report["engines_ready"], 3, "{report}");
    c.remember_pids();

    // One more engine on the second host, added to the running cluster.
    let run = c
        .cluster(&[
            "engines",
            "--launcher",
            "ssh",
            "--hosts",
            &format!("{}:1", h2.address),
        ])
        .ok();
    assert!(run.stdout.contains("4 registered"), "{}", run.stdout);

    // The connection file went to each host once, readable by its owner only.
    let remote = c.dir.path().join("remote/engine.json");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&remote).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);

    let status = c.cluster(&["status"]).ok().stdout;
    assert!(
        status.contains(&h1.hostname) && status.contains(&h2.hostname),
        "{status}"
    );
    assert!(
        status.contains(&format!("ssh host {}", h1.address)),
        "{status}"
    );

    let names = hostnames_of_map(&c, 16);
    let expected: BTreeSet<String> = [h1.hostname.clone(), h2.hostname.clone()].into();
    assert_eq!(names, expected);

    let stop = c.cluster(&["stop"]).ok();
    assert!(
        stop.stdout.contains("4 engine(s) on 2 ssh host(s)"),
        "{}",
        stop.stdout
    );
    assert_hosts_clean(&hosts);
    assert!(
        !remote.exists(),
        "stop removes the engine file on the hosts"
    );
    assert!(
        c.alive().is_empty(),
        "local processes left: {:?}",
        c.alive()
    );
}

#[test]
fn one_host_down_the_other_still_serves() {
    let Some(mut hosts) = fake_hosts_or_skip(2) else {
        return;
    };
    hosts.stop_sshd(1);
    let c = cluster_for(&hosts, &hosts.identity(), &cluster_bin());
    let (h1, h2) = (hosts.hosts[0].clone(), hosts.hosts[1].clone());
    let list = format!("{}:2,{}:2", h1.address, h2.address);
    // 0.0.0.0: the hosts get the address they reach this machine by, not 0.0.0.0.
    let run = c.cluster(&[
        "start",
        "--ip",
        "0.0.0.0",
        "--launcher",
        "ssh",
        "--hosts",
        &list,
    ]);
    c.remember_pids();
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&h2.address) && run.stderr.contains("refuses ssh connections"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("1 of 2 host(s)"), "{}", run.stderr);
    let names = hostnames_of_map(&c, 6);
    assert_eq!(names, BTreeSet::from([h1.hostname.clone()]));
    c.cluster(&["stop"]).ok();
    assert_hosts_clean(&hosts);
}

#[test]
fn bad_key_missing_binary_and_crashing_engines_are_explained() {
    let Some(hosts) = fake_hosts_or_skip(1) else {
        return;
    };
    let h = hosts.hosts[0].clone();
    let list = format!("{}:2", h.address);
    let start = [
        "start",
        "--ip",
        &hosts.gateway,
        "--launcher",
        "ssh",
        "--hosts",
        &list,
    ];

    // A key the host does not accept.
    let c = cluster_for(&hosts, &hosts.wrong_identity(), &cluster_bin());
    let run = c.cluster(&start);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("key was not accepted"),
        "{}",
        run.stderr
    );
    assert!(
        c.cluster(&["status"]).code != 0,
        "a failed start leaves nothing running"
    );
    drop(c);

    // No cluster program where the settings say: say so, and offer --copy-binary.
    let c = cluster_for(&hosts, &hosts.identity(), Path::new("/nonexistent/cluster"));
    let run = c.cluster(&start);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("\"/nonexistent/cluster\" is not on")
            && run.stderr.contains("--copy-binary"),
        "{}",
        run.stderr
    );
    let mut with_copy = start.to_vec();
    with_copy.push("--copy-binary");
    c.cluster(&with_copy).ok();
    c.remember_pids();
    assert!(c.dir.path().join("remote/cluster").exists());
    let names = hostnames_of_map(&c, 2);
    assert_eq!(names, BTreeSet::from([h.hostname.clone()]));
    c.cluster(&["stop"]).ok();
    drop(c);

    // Engines that die at start: the remote log's last lines are shown.
    let script = hosts.dir.path().join("broken-cluster");
    std::fs::write(
        &script,
        "#!/bin/sh\necho 'broken engine: cannot start here' >&2\nexit 7\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = cluster_for(&hosts, &hosts.identity(), &script);
    let t = Instant::now();
    let run = c.cluster(&start);
    assert_eq!(run.code, 1);
    assert!(
        run.stderr.contains("exited right after starting")
            && run.stderr.contains("broken engine: cannot start here"),
        "{}",
        run.stderr
    );
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    drop(c);
    assert_hosts_clean(&hosts);
}

/// `cluster start --launcher ssh --restart on-failure`: `kill -9` of an engine on a fake host
/// brings a new one on that host, started over ssh by the supervisor and counted in `cluster
/// status`; an engine that keeps dying there is restarted `[restart] limit` times only, and
/// `cluster stop` leaves nothing on the host.
#[test]
fn an_ssh_engine_killed_is_started_again_on_its_host_until_the_limit() {
    let Some(hosts) = fake_hosts_or_skip(1) else {
        return;
    };
    let c = cluster_for(&hosts, &hosts.identity(), &cluster_bin());
    let config = c.profile_dir().join("cluster.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("\n[restart]\nlimit = 2\nbackoff_initial_ms = 100\nbackoff_max_ms = 200\n");
    std::fs::write(&config, text).unwrap();
    let h = hosts.hosts[0].clone();
    c.cluster(&[
        "start",
        "--ip",
        &hosts.gateway,
        "--launcher",
        "ssh",
        "--hosts",
        &format!("{}:2", h.address),
        "--restart",
        "on-failure",
    ])
    .ok();
    c.remember_pids();
    let client = c.client();
    let before = client.status().unwrap().engines;
    assert_eq!(before.len(), 2);
    let victim = before[0].pid;
    let killed = Instant::now();
    cluster_tests::signal(victim, libc::SIGKILL);
    let back = eventually(Duration::from_secs(30), || {
        let now = client.status().unwrap().engines;
        now.len() == 2 && now.iter().all(|e| e.pid != victim && e.host == h.hostname)
    });
    assert!(
        back,
        "no new engine on {}: {:?}",
        h.hostname,
        client.status()
    );
    eprintln!(
        "MEASURE restart (ssh): kill -9 of an engine on a fake host -> a new one registered there in {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    let status = c.cluster(&["status"]).ok().stdout;
    assert!(status.contains("1 restart(s)"), "{status}");
    let pids: Vec<u32> = client
        .status()
        .unwrap()
        .engines
        .iter()
        .map(|e| e.pid)
        .collect();
    let on_host: Vec<u32> = hosts.processes(0).iter().map(|(p, _)| *p).collect();
    assert!(
        pids.iter().all(|p| on_host.contains(p)),
        "{pids:?} not in {on_host:?}"
    );

    // Kill the replacement, then its replacement: that engine's second restart is its
    // last (limit = 2), the third death is a crash loop.
    let seen: BTreeSet<u32> = before.iter().map(|e| e.pid).collect();
    let newest = |seen: &BTreeSet<u32>| {
        client
            .status()
            .unwrap()
            .engines
            .iter()
            .map(|e| e.pid)
            .find(|p| !seen.contains(p))
    };
    let mut seen = seen;
    let mut current = newest(&seen).expect("the replacement");
    seen.insert(current);
    cluster_tests::signal(current, libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(30), || newest(&seen).is_some()),
        "no second replacement: {}",
        c.cluster(&["status"]).stdout
    );
    current = newest(&seen).unwrap();
    assert!(c.cluster(&["status"]).ok().stdout.contains("2 restart(s)"));
    cluster_tests::signal(current, libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(30), || c
            .cluster(&["status"])
            .stdout
            .contains("gave up")),
        "no giving up: {}",
        c.cluster(&["status"]).stdout
    );
    let status = c.cluster(&["status"]).ok().stdout;
    assert!(
        status.contains("crash loop") && status.contains(&h.address),
        "{status}"
    );
    let stop = c.cluster(&["stop"]).ok();
    assert!(
        stop.stdout.contains("stopped the supervisor"),
        "{}",
        stop.stdout
    );
    assert_hosts_clean(&hosts);
}

/// `cargo test -p cluster-tests --release --test e2e -- ssh_engines:: --ignored --nocapture`:
/// time from `cluster start --launcher ssh` to all engines ready, 2 hosts × 4 engines.
#[test]
#[ignore = "benchmark: prints numbers"]
fn bench_ssh_start_two_hosts_four_engines() {
    let Some(hosts) = fake_hosts_or_skip(2) else {
        return;
    };
    let list = format!("{}:4,{}:4", hosts.hosts[0].address, hosts.hosts[1].address);
    let mut times = Vec::new();
    for _ in 0..5 {
        let c = cluster_for(&hosts, &hosts.identity(), &cluster_bin());
        let t = Instant::now();
        let run = c
            .cluster(&[
                "start",
                "--ip",
                &hosts.gateway,
                "--launcher",
                "ssh",
                "--hosts",
                &list,
                "--json",
            ])
            .ok();
        let wall = t.elapsed().as_secs_f64();
        c.remember_pids();
        let report: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
        assert_eq!(report["engines_ready"], 8);
        times.push(wall);
        c.cluster(&["stop"]).ok();
    }
    times.sort_by(f64::total_cmp);
    println!(
        "ssh start, 2 hosts x 4 engines, command to all engines ready: median {:.3} s (min {:.3}, max {:.3}, {} runs)",
        times[times.len() / 2],
        times[0],
        times[times.len() - 1],
        times.len()
    );
}
