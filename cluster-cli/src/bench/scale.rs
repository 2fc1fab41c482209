//! `cluster bench scale N`: a real controller process and N simulated engines
//! ([`engine::sim`]) in this process, each with its own two connections (tasks and
//! heartbeats) over loopback, answering pings and running `noop` at once: registration time
//! for all of them, the controller's CPU while idle with heartbeats flowing, task rates
//! across them, and disconnects noticed among them.

use super::{ms, Notices, Spread, TempCluster};
use anyhow::{bail, Context as _, Result};
use engine::sim::SimEngines;
use protocol::EngineId;
use serde::Serialize;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// What `cluster bench --scale N` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ScaleReport {
    /// Simulated engines.
    pub engines: usize,
    /// Seconds from the first connection to every engine holding its `Registered`.
    pub register_s: f64,
    /// Seconds until the controller's status listed all of them.
    pub status_lists_all_s: f64,
    /// Heartbeat period of the controller, milliseconds.
    pub heartbeat_period_ms: u64,
    /// Seconds of the idle measurement.
    pub idle_s: f64,
    /// Controller CPU while idle (heartbeats only), percent of one core.
    pub idle_cpu_percent: f64,
    /// Engines still registered after the idle period (none may die of missed pings).
    pub engines_after_idle: usize,
    /// One-item tasks of the task-rate figure.
    pub tasks: usize,
    /// Their rate, tasks per second (client submit to last result).
    pub tasks_per_s: f64,
    /// Engines that ran at least one of them.
    pub engines_used: usize,
    /// Fewest and most tasks one engine ran.
    pub tasks_per_engine: (u64, u64),
    /// Items of the chunked map figure.
    pub items: usize,
    /// Their rate, items per second.
    pub items_per_s: f64,
    /// Controller CPU during the task figures, percent of one core.
    pub busy_cpu_percent: f64,
    /// An engine's connections closed → its `EngineLeft`, milliseconds (several engines,
    /// one at a time).
    pub disconnect_notice_ms: Spread,
}

/// Engines whose connections the scale run closes, one at a time.
const DISCONNECT_RUNS: usize = 7;

/// Clock ticks (user + system) the process `pid` has used.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit(')').next().context("malformed stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    let utime: u64 = fields.get(11).context("no utime")?.parse()?;
    let stime: u64 = fields.get(12).context("no stime")?.parse()?;
    Ok(utime + stime)
}

fn cpu_percent(pid: u32, ticks_before: u64, elapsed: Duration) -> Result<f64> {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let used = (cpu_ticks(pid)? - ticks_before) as f64 / hz;
    Ok(100.0 * used / elapsed.as_secs_f64())
}

/// Registers `n` simulated engines with a fresh controller and measures it: `tasks` one-item
/// tasks, a chunked map of `items` items, and the controller's CPU over `idle`.
pub fn bench_scale(
    n: usize,
    tasks: usize,
    items: usize,
    idle: Duration,
    progress: bool,
) -> Result<ScaleReport> {
    let say = |s: String| {
        if progress {
            eprintln!("{s}");
        }
    };
    let cluster = TempCluster::start(0, &[])?;
    let ctl_pid = cluster.report.controller_pid;
    let settings = cluster.profile.settings(&[])?;
    let mut notices = Notices::connect(&cluster.profile.client_file())?;
    say(format!("scale: connecting {n} simulated engines…"));
    let t0 = Instant::now();
    let sims = SimEngines::start(&cluster.profile.engine_file(), n)?;
    let registered = sims.wait_registered(Duration::from_secs(120));
    if registered < n {
        bail!("only {registered} of {n} simulated engines registered within 120 s");
    }
    let register_s = t0.elapsed().as_secs_f64();
    let client = cluster.client()?;
    client.wait_for_engines(n, Duration::from_secs(60))?;
    let status_lists_all_s = t0.elapsed().as_secs_f64();
    say(format!(
        "scale: {n} engines registered in {register_s:.3} s; idle for {:.0} s with heartbeats…",
        idle.as_secs_f64()
    ));

    let ticks = cpu_ticks(ctl_pid)?;
    let t = Instant::now();
    std::thread::sleep(idle);
    let idle_cpu_percent = cpu_percent(ctl_pid, ticks, t.elapsed())?;
    let engines_after_idle = client.status()?.engines.len();

    say(format!(
        "scale: {tasks} one-item tasks, then a map of {items} items…"
    ));
    let rates = task_rates(&client, ctl_pid, tasks, items)?;
    let disconnect_notice_ms = disconnects(&client, &sims, &mut notices)?;
    let counts: Vec<u64> = sims.stop()?.into_values().collect();
    Ok(ScaleReport {
        engines: n,
        register_s,
        status_lists_all_s,
        heartbeat_period_ms: settings.heartbeat_period_ms,
        idle_s: idle.as_secs_f64(),
        idle_cpu_percent,
        engines_after_idle,
        tasks,
        tasks_per_s: rates.0,
        engines_used: counts.iter().filter(|&&c| c > 0).count(),
        tasks_per_engine: (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        ),
        items,
        items_per_s: rates.1,
        busy_cpu_percent: rates.2,
        disconnect_notice_ms,
    })
}

/// One-item tasks per second, chunked-map items per second, and the controller's CPU
/// meanwhile (percent of a core).
fn task_rates(
    client: &client::Client,
    ctl_pid: u32,
    tasks: usize,
    items: usize,
) -> Result<(f64, f64, f64)> {
    let ticks = cpu_ticks(ctl_pid)?;
    let busy_start = Instant::now();
    let view = client.load_balanced_view();
    let t = Instant::now();
    let done: Vec<()> = view
        .clone()
        .chunksize(1)
        .map("noop", vec![(); tasks])?
        .get(Some(Duration::from_secs(600)))?;
    let tasks_per_s = done.len() as f64 / t.elapsed().as_secs_f64();
    let t = Instant::now();
    let done: Vec<()> = view
        .map("noop", vec![(); items])?
        .get(Some(Duration::from_secs(600)))?;
    let items_per_s = done.len() as f64 / t.elapsed().as_secs_f64();
    let busy_cpu_percent = cpu_percent(ctl_pid, ticks, busy_start.elapsed())?;
    Ok((tasks_per_s, items_per_s, busy_cpu_percent))
}

/// Engines' connections close, one at a time, spread over the ids: is each noticed among
/// all the others, and how fast?
fn disconnects(
    client: &client::Client,
    sims: &SimEngines,
    notices: &mut Notices,
) -> Result<Spread> {
    let mut notices_ms = Vec::new();
    let ids: Vec<EngineId> = client.status()?.engines.iter().map(|e| e.id).collect();
    let runs = DISCONNECT_RUNS.min(ids.len());
    for k in 0..runs {
        let victim = ids[(k * ids.len()) / runs + ids.len() / (2 * DISCONNECT_RUNS)];
        let closed_at = sims
            .close(victim, Duration::from_secs(10))
            .context("the engine was not closed")?;
        let (seen, _) = notices.left(victim, Duration::from_secs(30))?;
        notices_ms.push(ms(seen.saturating_duration_since(closed_at)));
        std::thread::sleep(Duration::from_millis(150));
    }
    Ok(Spread::of(notices_ms))
}

/// The scale figures for a person.
pub fn render_scale(r: &ScaleReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} simulated engines (2 connections each, one process) on a real controller process",
        r.engines
    );
    let _ = writeln!(
        out,
        "  registration of all:            {:.3} s (status lists all after {:.3} s)",
        r.register_s, r.status_lists_all_s
    );
    let _ = writeln!(
        out,
        "  controller CPU idle:            {:.2} % of a core over {:.0} s (heartbeat every {} ms; {} of {} engines still registered)",
        r.idle_cpu_percent, r.idle_s, r.heartbeat_period_ms, r.engines_after_idle, r.engines
    );
    let _ = writeln!(
        out,
        "  one-item noop tasks:            {:.0} tasks/s ({} tasks; {} engines used, {}–{} tasks each)",
        r.tasks_per_s, r.tasks, r.engines_used, r.tasks_per_engine.0, r.tasks_per_engine.1
    );
    let _ = writeln!(
        out,
        "  chunked noop map:               {:.0} items/s ({} items)",
        r.items_per_s, r.items
    );
    let _ = writeln!(
        out,
        "  controller CPU during tasks:    {:.0} % of a core",
        r.busy_cpu_percent
    );
    let _ = writeln!(
        out,
        "  an engine's connections closed → EngineLeft: {}",
        r.disconnect_notice_ms
    );
    out
}
