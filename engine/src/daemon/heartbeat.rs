//! The thread answering pings on its own socket. It never runs user code, so a busy engine
//! still answers, and it notes when the last ping came for the loop's silence rule.
//!
//! Its answers carry the engine's CPU and memory use ([`UsageMeter`]), sampled from `/proc`
//! at most once a second: the engine process and its live children (the Python worker,
//! running commands), plus what its finished children used.

use security::Key;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, TransportError, Waitable};

use super::TICK_MS;
use crate::EngineError;
use protocol::{EngineUsage, Heartbeat};
use std::collections::HashMap;

/// The running heartbeat thread.
pub(crate) struct HeartbeatThread {
    stop: Arc<AtomicBool>,
    /// Milliseconds since `base` (plus one, so 0 means never) at the last ping.
    last_ping: Arc<AtomicU64>,
    base: Instant,
    handle: JoinHandle<()>,
}

impl HeartbeatThread {
    /// Connects a socket with routing id `uuid` to `address` and starts answering pings.
    pub(crate) fn start(
        ctx: &Context,
        key: &Key,
        (replay_window, encryption): (Duration, Encryption),
        uuid: &str,
        address: &str,
    ) -> Result<HeartbeatThread, EngineError> {
        let on_err = |error| EngineError::Transport {
            address: address.to_owned(),
            error,
        };
        let mut sock =
            Socket::new(ctx, Kind::Dealer, key, Some(uuid.as_bytes())).map_err(on_err)?;
        sock.set_replay_window(replay_window);
        sock.set_encryption(encryption);
        sock.connect(address).map_err(on_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let last_ping = Arc::new(AtomicU64::new(0));
        let base = Instant::now();
        let handle = {
            let stop = Arc::clone(&stop);
            let last_ping = Arc::clone(&last_ping);
            let uuid = uuid.to_owned();
            let address = address.to_owned();
            std::thread::Builder::new()
                .name("heartbeat".into())
                .spawn(move || {
                    if let Err(e) = answer_pings(&mut sock, &uuid, &stop, &last_ping, base) {
                        tracing::error!(
                            "heartbeat socket to {address} failed, no longer answering pings: {e}"
                        );
                    }
                })
                .map_err(EngineError::Thread)?
        };
        Ok(HeartbeatThread {
            stop,
            last_ping,
            base,
            handle,
        })
    }

    /// When the last ping came (to the millisecond), if one ever did.
    pub(crate) fn last_ping(&self) -> Option<Instant> {
        match self.last_ping.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(self.base + Duration::from_millis(ms - 1)),
        }
    }

    /// Stops the thread and waits for it.
    pub(crate) fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

fn answer_pings(
    sock: &mut Socket,
    uuid: &str,
    stop: &AtomicBool,
    last_ping: &AtomicU64,
    base: Instant,
) -> Result<(), TransportError> {
    let mut meter = UsageMeter::new();
    while !stop.load(Ordering::Relaxed) {
        poll(&[Waitable::Socket(sock)], TICK_MS)?;
        loop {
            let got = match sock.recv::<Heartbeat>()? {
                Some(got) => got,
                None if sock.readable() => continue,
                None => break,
            };
            if let Heartbeat::Ping { seq } = got.msg {
                last_ping.store(base.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                sock.send(
                    None,
                    &Heartbeat::Pong {
                        seq,
                        uuid: uuid.to_owned(),
                        usage: meter.sample(Instant::now()),
                    },
                    &[],
                )?;
            }
        }
    }
    Ok(())
}

/// Samples the engine's CPU and resident memory from `/proc` (Linux; elsewhere it reports
/// nothing): the engine process, its live children (the Python worker, running commands)
/// and the CPU time of children it has reaped.
#[derive(Debug)]
pub(crate) struct UsageMeter {
    /// Clock ticks a second (`sysconf(_SC_CLK_TCK)`).
    hz: f64,
    /// At the previous sample: when, the total CPU ticks, and each live child's ticks.
    last: Option<(Instant, u64)>,
    children: HashMap<u32, u64>,
    latest: Option<EngineUsage>,
}

/// Shortest time between two readings of `/proc` (heartbeats may come faster).
const SAMPLE_EVERY: Duration = Duration::from_millis(900);

impl UsageMeter {
    pub(crate) fn new() -> UsageMeter {
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        UsageMeter {
            hz: if hz > 0 { hz as f64 } else { 100.0 },
            last: None,
            children: HashMap::new(),
            latest: None,
        }
    }

    /// The usage as of `now`: read again when the last reading is older than a second,
    /// else the last one. `None` where `/proc` cannot be read, and CPU is 0 at the first
    /// reading (a rate needs two).
    pub(crate) fn sample(&mut self, now: Instant) -> Option<EngineUsage> {
        if let Some((at, _)) = self.last {
            if now.duration_since(at) < SAMPLE_EVERY {
                return self.latest;
            }
        }
        let own = read_stat("self")?;
        let mut ticks = own.ticks + own.children_ticks;
        let mut rss = read_rss_kib("self").unwrap_or(0);
        let mut children = HashMap::new();
        for pid in child_pids() {
            // A child that exits meanwhile is simply not counted this time.
            if let Some(stat) = read_stat(&pid.to_string()) {
                ticks += stat.ticks;
                children.insert(pid, stat.ticks);
                rss += read_rss_kib(&pid.to_string()).unwrap_or(0);
            }
        }
        let cpu_percent = match self.last {
            Some((at, before)) => {
                let secs = now.duration_since(at).as_secs_f64().max(1e-3);
                // A child reaped between samples moves its ticks from `children` to our
                // `children_ticks`, so the total never really falls; clamp anyway.
                (ticks.saturating_sub(before) as f64 / self.hz / secs * 100.0) as f32
            }
            None => 0.0,
        };
        self.last = Some((now, ticks));
        self.children = children;
        self.latest = Some(EngineUsage {
            cpu_percent,
            rss_bytes: rss * 1024,
        });
        self.latest
    }
}

/// CPU ticks of a process from `/proc/<pid>/stat`: its own (user + system, all threads) and
/// those of its reaped children.
struct Stat {
    ticks: u64,
    children_ticks: u64,
}

fn read_stat(pid: &str) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text)
}

/// Parses `/proc/<pid>/stat`: the command name (field 2) is in parentheses and may hold
/// spaces, so fields are counted from the last `)`; utime, stime, cutime, cstime are fields
/// 14 to 17.
fn parse_stat(text: &str) -> Option<Stat> {
    let rest = &text[text.rfind(')')? + 1..];
    // `rest` starts at field 3 (the state).
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
    Some(Stat {
        ticks: field(14)? + field(15)?,
        children_ticks: field(16)? + field(17)?,
    })
}

/// `VmRSS` of `/proc/<pid>/status`, KiB.
fn read_rss_kib(pid: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The engine's live children, from `/proc/self/task/*/children` (each thread's own).
fn child_pids() -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    let mut pids = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            pids.extend(
                text.split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            );
        }
    }
    pids.sort_unstable();
    pids.dedup();
    pids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_command_name() {
        // A name with spaces and parentheses, as a user's program may have.
        let line =
            "4242 (my (odd) engine) S 1 2 3 4 5 6 7 8 9 10 111 222 33 44 20 0 1 0 100 200 300";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.ticks, 333);
        assert_eq!(stat.children_ticks, 77);
        assert!(parse_stat("garbage").is_none());
        assert!(parse_stat("1 (x) S 1 2").is_none());
    }

    #[test]
    fn children_are_found_and_counted() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let found = child_pids().contains(&child.id());
        let child_kib = read_rss_kib(&child.id().to_string()).unwrap_or(0);
        let own_kib = read_rss_kib("self").unwrap();
        let mut meter = UsageMeter::new();
        let with_child = meter.sample(Instant::now()).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        assert!(found, "the child {} is listed", child.id());
        // Its memory counts with ours (a sleeping `sleep` holds some hundreds of KiB; ours
        // may move a little between the readings).
        assert!(child_kib > 0);
        assert!(
            with_child.rss_bytes / 1024 + 512 >= own_kib + child_kib,
            "{with_child:?}, own {own_kib} KiB, child {child_kib} KiB"
        );
    }

    #[test]
    fn the_meter_sees_this_process_work_and_its_memory() {
        let mut meter = UsageMeter::new();
        let t0 = Instant::now();
        let first = meter.sample(t0).expect("/proc is readable here");
        assert!(first.rss_bytes > 1 << 20, "{first:?}");
        // Within a second, the same reading comes back.
        assert_eq!(meter.sample(t0 + Duration::from_millis(10)), Some(first));
        // Burn about 0.3 s of CPU, then sample a second later.
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        let later = meter
            .sample(t0 + Duration::from_secs(1))
            .expect("second reading");
        assert!(later.cpu_percent > 10.0, "{later:?}");
    }
}
