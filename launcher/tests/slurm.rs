//! The Slurm launcher against a real Slurm 22.05 on fake hosts (see `common`): engines in
//! jobs register with a real controller and run maps; jobs that cannot start say why; a job
//! cancelled mid-map or drained before its wall-time limit loses no result.

mod common;

use client::stock::{NTH_PRIME, SLEEP, SUM_RANGE};
use cluster_launcher::slurm::{
    self, describe, plan_jobs, JobRecord, JobSpec, JobState, Phase, SlurmSettings, StartOutcome,
};
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Slurm and a controller on its bridge; the controller stops first.
struct Rig {
    ctl: common::Controller,
    slurm: common::Slurm,
}

fn rig(nodes: usize, cpus: u32) -> Option<Rig> {
    let slurm = common::or_skip("Slurm on fake hosts", common::Slurm::start(nodes, cpus))?;
    let ctl = common::Controller::start(&slurm.net.gateway, &[]);
    Some(Rig { ctl, slurm })
}

impl Rig {
    fn spec(&self, engines: usize, jobs: usize) -> JobSpec {
        let p = self.ctl.profile();
        JobSpec {
            profile: p.name().to_owned(),
            engines,
            program_and_args: self.ctl.engine_command(),
            run_dir: p.run_dir(),
            log_dir: p.log_dir(),
            jobs: Some(jobs),
        }
    }

    fn submit(&self, settings: &SlurmSettings, engines: usize, jobs: usize) -> Vec<JobRecord> {
        let plans = plan_jobs(settings, &self.spec(engines, jobs)).expect("plan");
        slurm::Slurm::system(settings.clone())
            .submit_all(&plans, &self.ctl.profile().run_dir())
            .expect("sbatch")
    }
}

fn nth_prime(n: u64) -> u64 {
    let mut primes: Vec<u64> = Vec::new();
    let mut c = 2;
    loop {
        if primes.iter().all(|p| c % p != 0) {
            if primes.len() as u64 == n {
                return c;
            }
            primes.push(c);
        }
        c += 1;
    }
}

#[test]
fn six_engines_over_two_jobs_run_maps_and_a_cancelled_job_loses_no_result() {
    let Some(rig) = rig(3, 2) else { return };
    let settings = rig.slurm.settings();
    let slurm = slurm::Slurm::system(settings.clone());
    let client = rig.ctl.client();

    let t0 = Instant::now();
    let jobs = rig.submit(&settings, 6, 2);
    assert_eq!(jobs.len(), 2);
    assert_eq!(jobs.iter().map(|j| j.engines).sum::<usize>(), 6);
    let outcome = slurm
        .wait_for_engines(&jobs, 6, Duration::from_secs(60), &mut || {
            rig.ctl.engines(&client)
        })
        .expect("poll");
    let took = t0.elapsed();
    let StartOutcome::Ready { jobs: states } = &outcome else {
        panic!(
            "engines did not all register: {outcome:?}\njob output:\n{}",
            jobs.iter()
                .map(|j| j.output_tail(20))
                .collect::<Vec<_>>()
                .join("\n")
        );
    };
    eprintln!(
        "MEASURE slurm start: -n 6 over 2 jobs on 3 fake nodes, sbatch to all registered in {:.2} s",
        took.as_secs_f64()
    );
    assert!(
        states.iter().all(|s| s.state.phase() == Phase::Running),
        "{states:?}"
    );
    // The run folder keeps the scripts and records.
    let run = rig.ctl.profile().run_dir();
    assert_eq!(slurm::records(&run), jobs);
    for j in &jobs {
        let script = std::fs::read_to_string(&j.script).unwrap();
        assert!(
            script.contains("--ntasks=3") && script.contains("srun"),
            "{script}"
        );
    }
    // The engines run on the fake nodes.
    let status = client.status().unwrap();
    let hosts: BTreeSet<String> = status.engines.iter().map(|e| e.host.clone()).collect();
    assert_eq!(hosts.len(), 3, "engines on every node: {hosts:?}");
    assert!(hosts.iter().all(|h| h.starts_with('n')), "{hosts:?}");

    let view = client.load_balanced_view();
    let primes: Vec<u64> = view
        .map(NTH_PRIME, 0..300u64)
        .unwrap()
        .get(Some(Duration::from_secs(60)))
        .unwrap();
    let expected: Vec<u64> = (0..300).map(nth_prime).collect();
    assert_eq!(primes, expected);

    // Cancel one job in the middle of a map with retries: every result still arrives. Its 3
    // engines stop at once, so a task may be lost with each of them: retries(3).
    let items: Vec<u64> = (0..60).map(|i| 20_000_000 + i).collect();
    let done_before = client.status().unwrap().tasks.done;
    let map = view
        .clone()
        .retries(3)
        .chunksize(1)
        .map(SUM_RANGE, items.clone())
        .unwrap();
    assert!(common::eventually(Duration::from_secs(60), || {
        client.status().unwrap().tasks.done >= done_before + 8
    }));
    let left_before = 60 - (client.status().unwrap().tasks.done - done_before);
    slurm.cancel(&[jobs[0].job_id.clone()]).unwrap();
    let sums: Vec<u64> = map.get(Some(Duration::from_secs(120))).unwrap();
    let expected: Vec<u64> = items
        .iter()
        .map(|&n| ((n as u128 * (n as u128 - 1)) / 2) as u64)
        .collect();
    assert_eq!(sums, expected);
    eprintln!(
        "cancelled job {} with {left_before} task(s) of 60 left",
        jobs[0].job_id
    );
    assert!(common::eventually(Duration::from_secs(30), || {
        rig.ctl.engines(&client) == 3
    }));
    let states = slurm
        .poll(&[jobs[0].job_id.clone(), jobs[1].job_id.clone()])
        .unwrap();
    let cancelled = &states[&jobs[0].job_id];
    assert!(
        matches!(cancelled.state, JobState::Cancelled | JobState::Completing),
        "{}",
        describe(cancelled)
    );
    assert_eq!(states[&jobs[1].job_id].state, JobState::Running);
}

#[test]
fn jobs_that_cannot_start_say_why() {
    let Some(rig) = rig(1, 2) else { return };
    let settings = rig.slurm.settings();
    let slurm = slurm::Slurm::system(settings.clone());
    let client = rig.ctl.client();

    // More CPUs than the partition has: Slurm keeps the job pending, and says why.
    let jobs = rig.submit(&settings, 4, 1);
    let outcome = slurm
        .wait_for_engines(&jobs, 4, Duration::from_secs(3), &mut || {
            rig.ctl.engines(&client)
        })
        .unwrap();
    let StartOutcome::Pending { queued, registered } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(*registered, 0);
    assert_eq!(queued[0].state, JobState::Pending);
    let reason = queued[0].reason.clone().unwrap_or_default();
    assert!(!reason.is_empty(), "{queued:?}");
    eprintln!("pending as expected: {}", describe(&queued[0]));
    slurm.cancel(&[jobs[0].job_id.clone()]).unwrap();

    // An engine program that does not exist: the job fails at once, reported with its output.
    let mut spec = rig.spec(1, 1);
    spec.program_and_args = vec!["/nonexistent/cluster-engine".into()];
    let plans = plan_jobs(&settings, &spec).unwrap();
    let jobs = slurm.submit_all(&plans, &spec.run_dir).unwrap();
    let outcome = slurm
        .wait_for_engines(&jobs, 1, Duration::from_secs(30), &mut || {
            rig.ctl.engines(&client)
        })
        .unwrap();
    let StartOutcome::Failed { failed, .. } = &outcome else {
        panic!("{outcome:?}");
    };
    assert_eq!(
        failed[0].0.state,
        JobState::Failed,
        "{}",
        describe(&failed[0].0)
    );
    assert!(
        failed[0].1.contains("/nonexistent/cluster-engine"),
        "{:?}",
        failed[0].1
    );

    // slurmctld unreachable: the error names the command, this host and the controller.
    let bad = rig.slurm.dir.path().join("unreachable.conf");
    let text = std::fs::read_to_string(&rig.slurm.conf).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("SlurmctldHost=") {
                "SlurmctldHost=lsctl(127.0.0.1)\nSlurmctldPort=9".to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&bad, text).unwrap();
    let down = slurm::Slurm::system(SlurmSettings {
        conf: Some(bad.display().to_string()),
        ..settings.clone()
    });
    let err = down.submit(&plans[0], &spec.run_dir).unwrap_err();
    assert!(err.is_retryable(), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("`sbatch` on host")
            && text.contains("lsctl(127.0.0.1)")
            && text.contains("Unable to contact slurm controller"),
        "{text}"
    );
}

#[test]
fn a_wall_time_drain_hands_tasks_to_other_engines() {
    let Some(rig) = rig(2, 2) else { return };
    let client = rig.ctl.client();
    // Job 1: a one-minute limit, SIGUSR1 50 s before it (so about 10 s in). Job 2: no limit.
    let short = SlurmSettings {
        time: Some("1".into()),
        signal: "USR1@50".into(),
        ..rig.slurm.settings()
    };
    let long = SlurmSettings {
        signal: String::new(),
        ..rig.slurm.settings()
    };
    let mut jobs = rig.submit(&short, 2, 1);
    jobs.extend(rig.submit(&long, 2, 1));
    let slurm = slurm::Slurm::system(long.clone());
    let outcome = slurm
        .wait_for_engines(&jobs, 4, Duration::from_secs(60), &mut || {
            rig.ctl.engines(&client)
        })
        .unwrap();
    assert!(matches!(outcome, StartOutcome::Ready { .. }), "{outcome:?}");
    // Slurm looks at time limits every 30 s, so the signal comes 10 to 40 s in: keep maps of
    // 0.5 s tasks (about 5 s each on 4 engines) going until it has come; the map it hits
    // must still return every result. The draining engines hand their queued tasks back
    // (`HandBack`), which costs no retry, so the map needs none: `retries(0)`.
    let view = client.load_balanced_view().retries(0).chunksize(1);
    let started = Instant::now();
    let mut maps = 0;
    loop {
        let results = view
            .map(SLEEP, vec![0.5f64; 40])
            .unwrap()
            .get(Some(Duration::from_secs(60)));
        assert_eq!(results.map(|r| r.len()).unwrap(), 40, "map {maps}");
        maps += 1;
        if rig.ctl.engines(&client) < 4 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(75),
            "no drain signal within 75 s"
        );
    }
    eprintln!(
        "drained after {:.1} s, during map {maps}",
        started.elapsed().as_secs_f64()
    );
    // The drained job's engines left on their own and the job ended well.
    let mut last = None;
    let ended = common::eventually(Duration::from_secs(20), || {
        let states = slurm.poll(&[jobs[0].job_id.clone()]).unwrap();
        let s = states[&jobs[0].job_id].clone();
        let done = s.state == JobState::Completed;
        last = Some(s);
        done
    });
    assert!(
        ended,
        "{}: {}",
        last.as_ref().map(describe).unwrap_or_default(),
        jobs[0].output_tail(20)
    );
    let log = std::fs::read_to_string(&jobs[0].output).unwrap_or_default();
    assert!(log.contains("SIGUSR1 (drain)"), "{log}");
    for line in log.lines().filter(|l| l.contains("SIGUSR1 (drain)")) {
        eprintln!(
            "drained engine said: {}",
            line.rsplit("leaving: ").next().unwrap_or(line)
        );
    }
    assert_eq!(rig.ctl.engines(&client), 2);
}

/// The CLI wiring: `cluster start --launcher slurm -n 6 --jobs 2`, `cluster status` listing
/// the jobs, `cluster engines --launcher slurm` saying a job is pending and why, and `cluster
/// stop` cancelling the jobs.
#[test]
fn the_cli_starts_lists_and_stops_slurm_engines() {
    let Some(slurm) = common::or_skip("Slurm on fake hosts", common::Slurm::start(3, 2)) else {
        return;
    };
    let bin = common::cluster_bin();
    let dir = tempfile::tempdir().unwrap();
    let cluster = |args: &[&str]| {
        let out = std::process::Command::new(&bin)
            .env("CLUSTER_DIR", dir.path())
            .env_remove("CLUSTER_PROFILE")
            .args(["--profile", "s"])
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(cluster(&["profile", "create", "s"]).0, 0);
    let profile = profiles::Profile::in_root(dir.path(), "s").unwrap();
    let mut toml = std::fs::read_to_string(profile.config_file()).unwrap();
    toml.push_str(&format!(
        "\n[slurm]\nconf = \"{}\"\npoll_interval_ms = 200\n",
        slurm.conf.display()
    ));
    std::fs::write(profile.config_file(), toml).unwrap();

    let t0 = Instant::now();
    let (code, out, err) = cluster(&[
        "start",
        "--launcher",
        "slurm",
        "-n",
        "6",
        "--jobs",
        "2",
        "--ip",
        &slurm.net.gateway,
        "--json",
    ]);
    let took = t0.elapsed();
    // Stop whatever happens next.
    type Run<'a> = &'a dyn Fn(&[&str]) -> (i32, String, String);
    struct Stop<'a>(Run<'a>);
    impl Drop for Stop<'_> {
        fn drop(&mut self) {
            (self.0)(&["stop", "--grace", "1"]);
        }
    }
    let _stop = Stop(&cluster);
    assert_eq!(code, 0, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(report["engines_ready"], 6, "{report}");
    assert_eq!(report["launched"]["jobs"].as_array().unwrap().len(), 2);
    eprintln!(
        "MEASURE cli: `cluster start --launcher slurm -n 6 --jobs 2` (controller + 2 jobs on 3 fake nodes, all registered) took {:.2} s",
        took.as_secs_f64()
    );
    let (code, out, _) = cluster(&["status"]);
    assert_eq!(code, 0);
    assert_eq!(out.matches("Slurm job").count(), 2, "{out}");
    assert!(out.contains("RUNNING"), "{out}");
    let (_, json, _) = cluster(&["status", "--json"]);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(v["slurm_jobs"][0]["state"], "RUNNING", "{v}");

    // More engines than CPUs left: pending, with Slurm's reason, exit status 5.
    let (code, out, err) = cluster(&[
        "engines",
        "--launcher",
        "slurm",
        "-n",
        "2",
        "--timeout",
        "2",
    ]);
    assert_eq!(code, 5, "{out}{err}");
    assert!(
        err.contains("PENDING (Resources)") || err.contains("PENDING ("),
        "{err}"
    );
    assert!(err.contains("cluster stop"), "{err}");

    let records = slurm::records(&profile.run_dir());
    assert_eq!(records.len(), 3);
    let (code, out, err) = cluster(&["stop", "--grace", "1"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("cancelled Slurm job(s)"), "{out}");
    let ids: Vec<_> = records.iter().map(|r| r.job_id.clone()).collect();
    let cmds = slurm::Slurm::system(slurm.settings());
    assert!(common::eventually(Duration::from_secs(20), || {
        cmds.poll(&ids)
            .unwrap()
            .values()
            .all(|s| s.state.is_final())
    }));
}

/// `cluster scale --launcher slurm`: from no engines to `--max` under a backlog with one job
/// (a pending job counts as engines on their way, so no second job is submitted while the
/// first waits), every result back, and back to none once the job's engines have been idle
/// for `--idle-timeout` (released with a drain signal: the job ends COMPLETED and its record
/// goes). Prints the figures: a task queued with no engine to an engine running it, and idle
/// to released.
#[test]
fn scale_submits_slurm_jobs_for_a_backlog_and_releases_them_when_idle() {
    let Some(slurm) = common::or_skip("Slurm on fake hosts", common::Slurm::start(2, 2)) else {
        return;
    };
    let cli = common::Cli::new(&slurm, "", "");
    cli.ok(&["start", "-n", "0", "--ip", &slurm.net.gateway, "--hwm", "1"]);
    let out = cli.ok(&[
        "scale",
        "--launcher",
        "slurm",
        "--max",
        "4",
        "--idle-timeout",
        "3s",
        "--interval-ms",
        "200",
    ]);
    assert!(out.contains("autoscaler started"), "{out}");
    let client = cli.client();
    let view = client.load_balanced_view().chunksize(1);
    let queued = Instant::now();
    let map = view.map(SLEEP, vec![1.0f64; 12]).unwrap();
    let mut first_running = None;
    let mut most = 0;
    let mut jobs = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let status = client.status().unwrap();
        most = most.max(status.engines.len());
        if first_running.is_none() && status.engines.iter().any(|e| e.outstanding > 0) {
            first_running = Some(queued.elapsed());
        }
        jobs.extend(
            slurm::records(&cli.profile().run_dir())
                .into_iter()
                .map(|r| r.job_id),
        );
        if status.tasks.done == 12 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "tasks not done in 90 s: {status:?}\n{}",
            cli.ok(&["status"])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let idle_from = Instant::now();
    let results: Vec<()> = map.get(Some(Duration::from_secs(10))).unwrap();
    assert_eq!(results.len(), 12);
    assert_eq!(most, 4, "scaled to --max and not above");
    assert_eq!(jobs.len(), 1, "one job of 4 engines: {jobs:?}");
    let status = cli.ok(&["status"]);
    assert!(status.contains("slurm launcher"), "{status}");
    assert!(status.contains("Slurm job"), "{status}");

    assert!(
        common::eventually(Duration::from_secs(60), || client
            .status()
            .unwrap()
            .engines
            .is_empty()),
        "engines not released in 60 s:\n{}",
        cli.ok(&["status"])
    );
    let released = idle_from.elapsed();
    eprintln!(
        "MEASURE scale (slurm): task queued with no engine -> an engine in a new Slurm job running it {:.2} s; idle -> all released {:.2} s (idle timeout 3 s, interval 0.2 s)",
        first_running.unwrap_or_default().as_secs_f64(),
        released.as_secs_f64()
    );
    // The drained job ended well, and the autoscaler forgot it.
    let cmds = slurm::Slurm::system(slurm.settings());
    let ids: Vec<_> = jobs.into_iter().collect();
    let mut last = String::new();
    assert!(
        common::eventually(Duration::from_secs(30), || {
            let states = cmds.poll(&ids).unwrap();
            last = describe(&states[&ids[0]]);
            states[&ids[0]].state == JobState::Completed
                && slurm::records(&cli.profile().run_dir()).is_empty()
        }),
        "{last}"
    );
    let state = cli.scale_state().expect("scale.json");
    assert_eq!(state["started"], 4, "{state}");
    assert_eq!(state["released"], 4, "{state}");
    let out = cli.ok(&["stop", "--grace", "1"]);
    assert!(out.contains("stopped the autoscaler"), "{out}");
}

/// `cluster scale --launcher slurm` with a partition Slurm refuses: no job, a back-off, and
/// `cluster status` says why (sbatch's own words).
#[test]
fn scale_backs_off_after_refused_submissions_and_says_why() {
    let Some(slurm) = common::or_skip("Slurm on fake hosts", common::Slurm::start(1, 2)) else {
        return;
    };
    let cli = common::Cli::new(&slurm, "partition = \"nope\"", "");
    cli.ok(&["start", "-n", "0", "--ip", &slurm.net.gateway]);
    cli.ok(&[
        "scale",
        "--launcher",
        "slurm",
        "--max",
        "2",
        "--interval-ms",
        "200",
    ]);
    let client = cli.client();
    let _map = client
        .load_balanced_view()
        .map(SLEEP, vec![0.1f64; 2])
        .unwrap();
    let mut shown = String::new();
    let said = common::eventually(Duration::from_secs(30), || {
        shown = cli.ok(&["status"]);
        shown.contains("backing off") && shown.to_lowercase().contains("invalid partition")
    });
    assert!(said, "{shown}");
    assert!(slurm::records(&cli.profile().run_dir()).is_empty());
    let state = cli.scale_state().expect("scale.json");
    assert!(state["failures"].as_u64().unwrap() >= 1, "{state}");
    assert_eq!(state["started"], 0, "{state}");
}

/// `cluster start --launcher slurm --restart on-failure`: `kill -9` of the engine in a job
/// makes the job fail; the supervisor submits it again (its kept script), the new job's
/// engine registers, and `cluster status` counts the restart. With `limit = 1`, the second
/// failure is a crash loop: no third job, and the status says so.
#[test]
fn a_failed_slurm_job_is_submitted_again() {
    let Some(slurm) = common::or_skip("Slurm on fake hosts", common::Slurm::start(1, 2)) else {
        return;
    };
    let cli = common::Cli::new(
        &slurm,
        "",
        "[restart]\nlimit = 1\nbackoff_initial_ms = 100\nbackoff_max_ms = 200\n",
    );
    let (code, out, err) = cli.run(&[
        "start",
        "--launcher",
        "slurm",
        "-n",
        "1",
        "--ip",
        &slurm.net.gateway,
        "--restart",
        "on-failure",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("supervisor pid"), "{err}");
    let client = cli.client();
    let first = client.status().unwrap().engines[0].clone();
    let first_job = first.job.clone().expect("the engine knows its job");
    let killed = Instant::now();
    // SAFETY: kill(2) on the engine of this test's job (same pid namespace).
    unsafe {
        libc::kill(first.pid as i32, libc::SIGKILL);
    }
    let mut last = String::new();
    let back = common::eventually(Duration::from_secs(60), || {
        let engines = client.status().unwrap().engines;
        last = format!("{engines:?}");
        engines.len() == 1 && engines[0].job.as_deref() != Some(first_job.as_str())
    });
    assert!(
        back,
        "no engine from a new job: {last}\n{}",
        cli.ok(&["status"])
    );
    eprintln!(
        "MEASURE restart (slurm): kill -9 of the engine in a job -> the job resubmitted and its engine registered in {:.2} s",
        killed.elapsed().as_secs_f64()
    );
    let status = cli.ok(&["status"]);
    assert!(status.contains("1 restart(s)"), "{status}");
    let records = slurm::records(&cli.profile().run_dir());
    assert_eq!(records.len(), 1, "{records:?}");
    assert_ne!(records[0].job_id.0, first_job);
    let states = slurm::Slurm::system(slurm.settings())
        .poll(&[slurm::JobId(first_job.clone())])
        .unwrap();
    let old = &states[&slurm::JobId(first_job)];
    assert_eq!(old.state.phase(), Phase::Failed, "{}", describe(old));

    // The second job's engine dies too: the limit stops there.
    let second = client.status().unwrap().engines[0].clone();
    // SAFETY: as above.
    unsafe {
        libc::kill(second.pid as i32, libc::SIGKILL);
    }
    let mut shown = String::new();
    let gave_up = common::eventually(Duration::from_secs(60), || {
        shown = cli.ok(&["status"]);
        shown.contains("gave up")
    });
    assert!(gave_up, "{shown}");
    assert!(shown.contains("crash loop"), "{shown}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(client.status().unwrap().engines.is_empty());
    let records = slurm::records(&cli.profile().run_dir());
    assert_eq!(records.len(), 1, "no third job: {records:?}");
}

/// One autoscaling round with `launcher` (`local` or `slurm`) on a fresh cluster: seconds
/// from a task queued with no engine to an engine running it, and from the last task done
/// to every engine released (idle timeout 2 s, decisions every 0.2 s).
fn scale_round(slurm: &common::Slurm, launcher: &str) -> (f64, f64) {
    let cli = common::Cli::new(slurm, "", "");
    cli.ok(&["start", "-n", "0", "--ip", &slurm.net.gateway, "--hwm", "1"]);
    cli.ok(&[
        "scale",
        "--launcher",
        launcher,
        "--max",
        "2",
        "--idle-timeout",
        "2s",
        "--interval-ms",
        "200",
    ]);
    let client = cli.client();
    let t0 = Instant::now();
    let map = client
        .load_balanced_view()
        .chunksize(1)
        .map(SLEEP, vec![0.5f64; 4])
        .unwrap();
    let mut running = None;
    assert!(common::eventually(Duration::from_secs(60), || {
        let s = client.status().unwrap();
        if running.is_none() && s.engines.iter().any(|e| e.outstanding > 0) {
            running = Some(t0.elapsed());
        }
        s.tasks.done == 4
    }));
    let idle = Instant::now();
    let _: Vec<()> = map.get(Some(Duration::from_secs(10))).unwrap();
    assert!(common::eventually(Duration::from_secs(60), || client
        .status()
        .unwrap()
        .engines
        .is_empty()));
    let released = idle.elapsed();
    cli.ok(&["stop", "--grace", "1"]);
    (
        running.unwrap_or_default().as_secs_f64(),
        released.as_secs_f64(),
    )
}

fn summary(mut xs: Vec<f64>) -> String {
    xs.sort_by(f64::total_cmp);
    format!(
        "median {:.2} s (min {:.2}, max {:.2}, {} runs)",
        xs[xs.len() / 2],
        xs[0],
        xs[xs.len() - 1],
        xs.len()
    )
}

/// The figures, on Slurm 22.05 on 3 fake nodes (2 CPUs each):
/// `cargo test -p cluster-launcher --test slurm -- --ignored --nocapture bench_` (add
/// `--release` for a release build). Prints: `cluster start --launcher slurm -n 6 --jobs 2`
/// to all registered (a fresh cluster each run, the same Slurm: the first run pays Slurm's
/// first job); a task queued with no free engine to a new engine running it, local and
/// Slurm; idle to released, local and Slurm.
#[test]
#[ignore = "benchmark: prints numbers"]
fn bench_slurm_start_and_scale_figures() {
    let Some(slurm) = common::or_skip("Slurm on fake hosts", common::Slurm::start(3, 2)) else {
        return;
    };
    let runs = 5;
    let mut starts = Vec::new();
    for _ in 0..runs {
        let cli = common::Cli::new(&slurm, "", "");
        let t0 = Instant::now();
        let out = cli.ok(&[
            "start",
            "--launcher",
            "slurm",
            "-n",
            "6",
            "--jobs",
            "2",
            "--ip",
            &slurm.net.gateway,
            "--json",
        ]);
        starts.push(t0.elapsed().as_secs_f64());
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(v["engines_ready"], 6, "{v}");
        cli.ok(&["stop", "--grace", "1"]);
        // The next start gets the nodes free.
        let cmds = slurm::Slurm::system(slurm.settings());
        let ids: Vec<_> = slurm::records(&cli.profile().run_dir())
            .into_iter()
            .map(|r| r.job_id)
            .collect();
        common::eventually(Duration::from_secs(30), || {
            cmds.poll(&ids)
                .map_or(true, |s| s.values().all(|j| j.state.is_final()))
        });
    }
    println!(
        "FIGURE slurm start: `cluster start --launcher slurm -n 6 --jobs 2` on 3 fake nodes to all registered: {}; runs {:?}",
        summary(starts.clone()),
        starts.iter().map(|s| (s * 100.0).round() / 100.0).collect::<Vec<_>>()
    );
    for launcher in ["local", "slurm"] {
        let (mut queued, mut released) = (Vec::new(), Vec::new());
        for _ in 0..3 {
            let (q, r) = scale_round(&slurm, launcher);
            queued.push(q);
            released.push(r);
        }
        println!(
            "FIGURE scale ({launcher}): task queued with no free engine -> a new engine running it: {}",
            summary(queued)
        );
        println!(
            "FIGURE scale ({launcher}): last task done -> all engines released (idle timeout 2 s, interval 0.2 s): {}",
            summary(released)
        );
    }
}
