//! `cluster bench failover`: on a throw-away cluster of real engine processes, `kill -9` an
//! engine and time the controller's `EngineLeft` notification (the connection closed);
//! `SIGSTOP` one and time its unregistration by heartbeat, then `SIGCONT` and time its return
//! under its old id; and kill the controller in the middle of a map and start it again.
//! Times are taken by a subscriber of the controller's notification socket.

use super::{ms, signal, Notices, Spread, TempCluster};
use crate::launch::{self, EngineLaunch};
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What `cluster bench --failover` measured.
#[derive(Debug, Clone, Serialize)]
pub struct FailoverReport {
    /// `kill -9` of an engine to its `EngineLeft` notification, milliseconds.
    pub kill_notice_ms: Spread,
    /// Reasons the controller gave for those.
    pub kill_reasons: Vec<String>,
    /// `SIGSTOP` of an engine to its unregistration, with the default heartbeat settings.
    pub stop_notice_ms: Spread,
    /// Heartbeat period and misses of that figure.
    pub stop_settings: (u64, u32),
    /// The same with a fast heartbeat.
    pub stop_notice_fast_ms: Spread,
    /// Heartbeat period and misses of that figure.
    pub stop_fast_settings: (u64, u32),
    /// `SIGCONT` of a stopped (and unregistered) engine to its `EngineJoined`, same id.
    pub rejoin_ms: Spread,
    /// The controller killed in the middle of a map and started again.
    pub controller_restart: RestartReport,
}

/// A controller killed with `kill -9` in the middle of a map, then started again in place
/// (`cluster start` on the profile, which reuses its ports and key) while the client waits.
#[derive(Debug, Clone, Serialize)]
pub struct RestartReport {
    /// Tasks in the map (`sleep`, one per task).
    pub tasks: usize,
    /// Tasks answered before the kill.
    pub answered_before_kill: usize,
    /// Tasks answered successfully in the end.
    pub answered_ok: usize,
    /// Tasks that failed or never came back.
    pub lost: usize,
    /// From the kill until `cluster start` had the controller back with its engines.
    pub restart_s: f64,
    /// From the kill until the last task was answered.
    pub all_answered_s: f64,
}

/// Kills `runs` engines with SIGKILL (replacing each), then stops engines with SIGSTOP
/// under two heartbeat settings.
pub fn bench_failover(runs: usize, progress: bool) -> Result<FailoverReport> {
    let runs = runs.max(1);
    let say = |s: &str| {
        if progress {
            eprintln!("{s}");
        }
    };
    say("failover: kill -9 of an engine → EngineLeft notification");
    let cluster = TempCluster::start(3, &[])?;
    let client = cluster.client()?;
    let mut notices = Notices::connect(&cluster.profile.client_file())?;
    let settings = cluster.profile.settings(&[])?;
    let mut kill = Vec::new();
    let mut reasons = Vec::new();
    for _ in 0..runs {
        let status = client.status()?;
        let victim = status.engines.last().context("no engine")?.clone();
        signal(victim.pid, libc::SIGKILL);
        let t0 = Instant::now();
        let (t, reason) = notices.left(victim.id, Duration::from_secs(30))?;
        kill.push(ms(t - t0));
        reasons.push(reason);
        let launch = EngineLaunch {
            count: 1,
            program: None,
            timeout: Duration::from_secs(30),
        };
        launch::launch_engines(
            &cluster.profile,
            &settings,
            &launch,
            status.engines.len() - 1,
        )?;
    }
    drop(client);
    drop(cluster);

    let mut stop_figures = Vec::new();
    for (period, misses, n) in [(1000u64, 3u32, runs.clamp(1, 3)), (100, 3, runs)] {
        say(&format!(
            "failover: SIGSTOP of an engine → unregistration (heartbeat {period} ms × {misses} misses)"
        ));
        let overrides = [
            ("heartbeat_period_ms", period.to_string()),
            ("heartbeat_misses", misses.to_string()),
        ];
        let cluster = TempCluster::start(2, &overrides)?;
        let client = cluster.client()?;
        let mut notices = Notices::connect(&cluster.profile.client_file())?;
        let mut stops = Vec::new();
        let mut rejoins = Vec::new();
        for _ in 0..n {
            let status = client.status()?;
            let victim = status.engines.last().context("no engine")?.clone();
            signal(victim.pid, libc::SIGSTOP);
            let t0 = Instant::now();
            let left = notices.left(victim.id, Duration::from_secs(60));
            signal(victim.pid, libc::SIGCONT);
            let t1 = Instant::now();
            let (t, _) = left?;
            stops.push(ms(t - t0));
            let back = notices.joined(victim.id, Duration::from_secs(60))?;
            rejoins.push(ms(back - t1));
            client.wait_for_engines(2, Duration::from_secs(30))?;
        }
        stop_figures.push((Spread::of(stops), (period, misses), rejoins));
    }
    say("failover: kill -9 of the controller in the middle of a map → started again");
    let controller_restart = bench_controller_restart()?;
    let (fast, fast_settings, fast_rejoins) = stop_figures.pop().context("figures")?;
    let (slow, slow_settings, mut rejoins) = stop_figures.pop().context("figures")?;
    rejoins.extend(fast_rejoins);
    Ok(FailoverReport {
        kill_notice_ms: Spread::of(kill),
        kill_reasons: reasons,
        stop_notice_ms: slow,
        stop_settings: slow_settings,
        stop_notice_fast_ms: fast,
        stop_fast_settings: fast_settings,
        rejoin_ms: Spread::of(rejoins),
        controller_restart,
    })
}

/// Kills the controller while a 400-task map runs on 2 engines, starts it again, and counts
/// what the client gets back.
fn bench_controller_restart() -> Result<RestartReport> {
    const TASKS: usize = 400;
    let cluster = TempCluster::start(2, &[])?;
    let client = cluster.client()?;
    let map = client
        .load_balanced_view()
        .chunksize(1)
        .map::<f64, ()>("sleep", vec![0.005; TASKS])?;
    std::thread::sleep(Duration::from_millis(300));
    let pid = cluster.report.controller_pid;
    signal(pid, libc::SIGKILL);
    let t0 = Instant::now();
    let answered_before_kill = map.progress().0;
    while profiles::process_alive(pid) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let launch = EngineLaunch {
        count: 2,
        program: None,
        timeout: Duration::from_secs(30),
    };
    launch::start(&cluster.profile, &[], &launch)?;
    let restart_s = t0.elapsed().as_secs_f64();
    let results = map.get_return_exceptions(Some(Duration::from_secs(120)))?;
    let all_answered_s = t0.elapsed().as_secs_f64();
    let answered_ok = results.iter().filter(|r| r.is_ok()).count();
    Ok(RestartReport {
        tasks: TASKS,
        answered_before_kill,
        answered_ok,
        lost: TASKS - answered_ok,
        restart_s,
        all_answered_s,
    })
}

/// The failover figures for a person.
pub fn render_failover(r: &FailoverReport) -> String {
    let mut out = String::new();
    let mut reasons = r.kill_reasons.clone();
    reasons.sort();
    reasons.dedup();
    let _ = writeln!(
        out,
        "kill -9 of an engine → EngineLeft:           {} (reason: {})",
        r.kill_notice_ms,
        reasons.join(", ")
    );
    let (p, m) = r.stop_settings;
    let _ = writeln!(
        out,
        "SIGSTOP → unregistered, heartbeat {p} ms × {m}: {} (bound: period × (misses + 1) = {} ms)",
        r.stop_notice_ms,
        p * u64::from(m + 1)
    );
    let (p, m) = r.stop_fast_settings;
    let _ = writeln!(
        out,
        "SIGSTOP → unregistered, heartbeat {p} ms × {m}:  {} (bound: {} ms)",
        r.stop_notice_fast_ms,
        p * u64::from(m + 1)
    );
    let _ = writeln!(
        out,
        "SIGCONT → registered again (same id):         {}",
        r.rejoin_ms
    );
    let c = &r.controller_restart;
    let _ = writeln!(
        out,
        "kill -9 of the controller mid-map ({} tasks, {} answered before): back in {:.2} s, all answered {:.2} s after the kill, {} ok, {} lost",
        c.tasks, c.answered_before_kill, c.restart_s, c.all_answered_s, c.answered_ok, c.lost
    );
    out
}
