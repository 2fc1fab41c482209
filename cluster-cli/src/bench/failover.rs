//! `cluster bench --failover` and `cluster bench --scale N`: how fast the controller notices
//! engines that die, and how it holds many engines.
//!
//! * Failover: on a throw-away cluster of real engine processes, `kill -9` an engine and time
//!   the controller's `EngineLeft` notification (the connection closed); `SIGSTOP` one and time
//!   its unregistration by heartbeat, then `SIGCONT` and time its return under its old id.
//!   Times are taken by a subscriber of the controller's notification socket.
//! * Scale: a real controller process and N simulated engines in this process, each with its
//!   own two connections (tasks and heartbeats) over loopback, answering pings and running
//!   `noop` at once: registration time for all of them, the controller's CPU while idle with
//!   heartbeats flowing, task rates across them, and a disconnect noticed among them.

use crate::demo::TempCluster;
use crate::launch::{self, EngineLaunch};
use anyhow::{anyhow, bail, Context as _, Result};
use protocol::{
    EngineId, FromEngine, Heartbeat, Notification, Registration, Status, TaskOutcome, ToEngine,
    Work, PROTOCOL_VERSION,
};
use security::ConnectionInfo;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, Waitable};

/// A subscriber of a controller's notifications.
struct Notices {
    sock: Socket,
    _ctx: Context,
}

impl Notices {
    fn connect(client_file: &std::path::Path) -> Result<Notices> {
        let (info, key) = ConnectionInfo::load(client_file, PROTOCOL_VERSION, &["notify"])?;
        let address = info.addresses.notify.clone().unwrap_or_default();
        let ctx = Context::new();
        let mut sock = Socket::new(&ctx, Kind::Sub, &key, None)?;
        sock.set_encryption(Encryption::endpoint(info.encrypted()));
        sock.connect(&address)?;
        // A subscriber hears only what is published after it has joined.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Notices { sock, _ctx: ctx })
    }

    /// Waits for a notification matching `want`; returns when it arrived and the match.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Notification) -> Option<T>,
    ) -> Result<(Instant, T)> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(got) = self.sock.recv::<Notification>()? {
                if let Some(found) = want(&got.msg) {
                    return Ok((Instant::now(), found));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("no such notification within {timeout:?}");
            }
            let ms = (deadline - now).as_millis().max(1) as i64;
            poll(&[Waitable::Socket(&self.sock)], ms)?;
        }
    }

    fn left(&mut self, id: EngineId, timeout: Duration) -> Result<(Instant, String)> {
        self.wait_for(timeout, |n| match n {
            Notification::EngineLeft { id: i, reason } if *i == id => Some(reason.clone()),
            _ => None,
        })
    }

    fn joined(&mut self, id: EngineId, timeout: Duration) -> Result<Instant> {
        self.wait_for(timeout, |n| match n {
            Notification::EngineJoined(info) if info.id == id => Some(()),
            _ => None,
        })
        .map(|(t, ())| t)
    }
}

fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on an engine process this benchmark started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, minimum and maximum of some samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        Spread {
            n: v.len(),
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.1} ms (min {:.1}, max {:.1}, {} runs)",
            self.median, self.min, self.max, self.n
        )
    }
}

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

// ----- scale -----

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

/// A simulated engine: its two connections and what it did.
struct SimEngine {
    uuid: String,
    tasks: Socket,
    beats: Socket,
    id: Option<EngineId>,
    ran: u64,
}

/// State shared by the simulator threads and the benchmark.
#[derive(Default)]
struct SimShared {
    stop: AtomicBool,
    registered: AtomicUsize,
    tasks: AtomicU64,
    /// Engine id whose connections to close (u32::MAX: none).
    close: AtomicU32,
    closed_at: Mutex<Option<Instant>>,
}

/// The result payload of `noop` for a task: nil, or an array of nils for a map chunk.
fn noop_result(work: &Work, payload: &[u8]) -> Vec<u8> {
    match work {
        Work::Map { .. } => {
            let n = match payload.first() {
                Some(&b) if b & 0xf0 == 0x90 => usize::from(b & 0x0f),
                Some(0xdc) if payload.len() >= 3 => {
                    usize::from(u16::from_be_bytes([payload[1], payload[2]]))
                }
                Some(0xdd) if payload.len() >= 5 => {
                    u32::from_be_bytes([payload[1], payload[2], payload[3], payload[4]]) as usize
                }
                _ => 0,
            };
            let mut out = Vec::with_capacity(n + 5);
            if n < 16 {
                out.push(0x90 | n as u8);
            } else if n <= usize::from(u16::MAX) {
                out.push(0xdc);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            } else {
                out.push(0xdd);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            out.resize(out.len() + n, 0xc0);
            out
        }
        _ => vec![0xc0],
    }
}

/// One simulator thread: `engines` engines over their own libzmq context.
fn simulate(
    mut engines: Vec<SimEngine>,
    shared: Arc<SimShared>,
    _ctx: Context,
) -> Result<Vec<(Option<EngineId>, u64)>> {
    let mut ready = vec![false; engines.len()];
    while !shared.stop.load(Ordering::Relaxed) {
        let close = shared.close.load(Ordering::Relaxed);
        if close != u32::MAX {
            if let Some(i) = engines.iter().position(|e| e.id == Some(EngineId(close))) {
                let gone = engines.swap_remove(i);
                drop(gone);
                *shared.closed_at.lock().map_err(|_| anyhow!("poisoned"))? = Some(Instant::now());
                shared.close.store(u32::MAX, Ordering::Relaxed);
                ready.truncate(engines.len());
            }
        }
        let items: Vec<Waitable<'_>> = engines
            .iter()
            .flat_map(|e| [Waitable::Socket(&e.tasks), Waitable::Socket(&e.beats)])
            .collect();
        let flags = poll(&items, 20)?;
        drop(items);
        for (i, flag) in flags.chunks(2).enumerate() {
            ready[i] = flag[0] || flag[1];
        }
        for (i, e) in engines.iter_mut().enumerate() {
            if !ready[i] {
                continue;
            }
            while let Some(got) = e.beats.recv::<Heartbeat>()? {
                if let Heartbeat::Ping { seq } = got.msg {
                    e.beats.send(
                        None,
                        &Heartbeat::Pong {
                            seq,
                            uuid: e.uuid.clone(),
                        },
                        &[],
                    )?;
                }
            }
            while let Some(got) = e.tasks.recv::<ToEngine>()? {
                match got.msg {
                    ToEngine::Registered { engine_id, .. } => {
                        if e.id.is_none() {
                            shared.registered.fetch_add(1, Ordering::Relaxed);
                        }
                        e.id = Some(engine_id);
                    }
                    ToEngine::Tasks { tasks } => {
                        let mut outcomes = Vec::with_capacity(tasks.len());
                        let mut payloads = Vec::with_capacity(tasks.len());
                        let mut args = got.payloads.iter();
                        for t in tasks {
                            let arg = args.next().map(Vec::as_slice).unwrap_or(&[]);
                            payloads.push(noop_result(&t.work, arg));
                            outcomes.push(TaskOutcome {
                                id: t.id,
                                engine: e.id,
                                status: Status::Ok,
                                started_us: 1,
                                elapsed_us: 1,
                            });
                        }
                        e.ran += outcomes.len() as u64;
                        shared
                            .tasks
                            .fetch_add(outcomes.len() as u64, Ordering::Relaxed);
                        let refs: Vec<&[u8]> = payloads.iter().map(Vec::as_slice).collect();
                        e.tasks
                            .send(None, &FromEngine::Results { results: outcomes }, &refs)?;
                    }
                    ToEngine::Shutdown | ToEngine::Refused { .. } => {}
                }
            }
        }
    }
    Ok(engines.iter().map(|e| (e.id, e.ran)).collect())
}

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

/// Registers `n` simulated engines with a fresh controller and measures it.
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
    let (info, key) = ConnectionInfo::load(
        &cluster.profile.engine_file(),
        PROTOCOL_VERSION,
        &["engine", "heartbeat"],
    )?;
    let engine_addr = info.addresses.engine.clone().unwrap_or_default();
    let hb_addr = info.addresses.heartbeat.clone().unwrap_or_default();
    let mut notices = Notices::connect(&cluster.profile.client_file())?;

    // Up to 400 engines (800 sockets) per libzmq context, one simulator thread each.
    let per_thread = 400;
    let shared = Arc::new(SimShared {
        close: AtomicU32::new(u32::MAX),
        ..Default::default()
    });
    say(format!("scale: connecting {n} simulated engines…"));
    let t0 = Instant::now();
    let mut threads = Vec::new();
    let run_tag = format!("{:08x}", rand_tag());
    for start in (0..n).step_by(per_thread) {
        let count = per_thread.min(n - start);
        let ctx = Context::new();
        let mut engines = Vec::with_capacity(count);
        for i in start..start + count {
            let uuid = format!("sim-{run_tag}-{i:06}");
            let encryption = Encryption::endpoint(info.encrypted());
            let mut tasks = Socket::new(&ctx, Kind::Dealer, &key, Some(uuid.as_bytes()))?;
            tasks.set_encryption(encryption);
            tasks.connect(&engine_addr)?;
            let mut beats = Socket::new(&ctx, Kind::Dealer, &key, Some(uuid.as_bytes()))?;
            beats.set_encryption(encryption);
            beats.connect(&hb_addr)?;
            let mut e = SimEngine {
                uuid: uuid.clone(),
                tasks,
                beats,
                id: None,
                ran: 0,
            };
            e.tasks.send(
                None,
                &FromEngine::Register(Registration {
                    uuid,
                    host: "simulated".into(),
                    pid: i as u32,
                    functions: vec!["noop".into()],
                    slots: 1,
                    engine_id: None,
                    held: Vec::new(),
                }),
                &[],
            )?;
            engines.push(e);
        }
        let shared = Arc::clone(&shared);
        threads.push(
            std::thread::Builder::new()
                .name("sim-engines".into())
                .spawn(move || simulate(engines, shared, ctx))?,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    while shared.registered.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} simulated engines registered within 120 s",
                shared.registered.load(Ordering::Relaxed)
            );
        }
        std::thread::sleep(Duration::from_millis(1));
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

    // Engines' connections close, one at a time: noticed among all the others?
    let mut notices_ms = Vec::new();
    let ids: Vec<EngineId> = client.status()?.engines.iter().map(|e| e.id).collect();
    for k in 0..DISCONNECT_RUNS.min(ids.len()) {
        let victim = ids
            [(k * ids.len()) / DISCONNECT_RUNS.min(ids.len()) + ids.len() / (2 * DISCONNECT_RUNS)];
        *shared.closed_at.lock().map_err(|_| anyhow!("poisoned"))? = None;
        shared.close.store(victim.0, Ordering::Relaxed);
        let (seen, _) = notices.left(victim, Duration::from_secs(30))?;
        let closed_at = shared
            .closed_at
            .lock()
            .map_err(|_| anyhow!("poisoned"))?
            .context("the engine was not closed")?;
        notices_ms.push(ms(seen.saturating_duration_since(closed_at)));
        std::thread::sleep(Duration::from_millis(150));
    }
    let disconnect_notice_ms = Spread::of(notices_ms);

    shared.stop.store(true, Ordering::Relaxed);
    let mut per_engine: HashMap<EngineId, u64> = HashMap::new();
    for t in threads {
        let ran = t
            .join()
            .map_err(|_| anyhow!("a simulator thread panicked"))??;
        for (id, count) in ran {
            if let Some(id) = id {
                per_engine.insert(id, count);
            }
        }
    }
    let counts: Vec<u64> = per_engine.values().copied().collect();
    let engines_used = counts.iter().filter(|&&c| c > 0).count();
    Ok(ScaleReport {
        engines: n,
        register_s,
        status_lists_all_s,
        heartbeat_period_ms: settings.heartbeat_period_ms,
        idle_s: idle.as_secs_f64(),
        idle_cpu_percent,
        engines_after_idle,
        tasks,
        tasks_per_s,
        engines_used,
        tasks_per_engine: (
            counts.iter().copied().min().unwrap_or(0),
            counts.iter().copied().max().unwrap_or(0),
        ),
        items,
        items_per_s,
        busy_cpu_percent,
        disconnect_notice_ms,
    })
}

fn rand_tag() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
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
