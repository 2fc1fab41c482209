//! Client-side cost per task: how long a submit takes to come back as a result in the
//! caller's hands, and how much CPU this process (caller threads plus the client's I/O
//! thread) spends per task, for `apply` and for chunked `map`.
//!
//! ```text
//! cluster start -n 2
//! cargo run --release -p cluster-client --example client_bench -- [--calls 5000] [--items 1000000] [--json]
//! ```
//!
//! The engines run `noop`, so the numbers are the cluster's own overhead. CPU time comes
//! from `getrusage(RUSAGE_SELF)`: this process only, not the controller or the engines.

use cluster_client::{stock::NOOP, AsyncResult, Client};
use std::time::{Duration, Instant};

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes into the struct we pass and nothing else.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Runs `f`, returning its result, wall time and this process's CPU time.
fn measure<T>(f: impl FnOnce() -> T) -> (T, Duration, Duration) {
    let (wall, cpu) = (Instant::now(), cpu_time());
    let out = f();
    (out, wall.elapsed(), cpu_time() - cpu)
}

fn flag(args: &[String], name: &str, default: usize) -> Result<usize, String> {
    match args.iter().position(|a| a == name) {
        None => Ok(default),
        Some(i) => args
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{name} needs a number")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let calls = flag(&args, "--calls", 5000)?;
    let items = flag(&args, "--items", 1_000_000)?;
    let json = args.iter().any(|a| a == "--json");
    let client = Client::connect_env()?;
    let engines = client.ids()?.len();
    let view = client.load_balanced_view();
    let limit = Some(Duration::from_secs(120));

    // Warm up connections, allocators and the engines' adaptive queue depth.
    for _ in 0..200 {
        view.apply(NOOP, ())?.get(limit)?;
    }
    view.map(NOOP, std::iter::repeat_n((), 10_000))?
        .get(limit)?;

    // One at a time: submit, wait, decode.
    let mut rtts = Vec::with_capacity(calls);
    let (_, wall, cpu) = measure(|| -> Result<(), cluster_client::Error> {
        for _ in 0..calls {
            let t = Instant::now();
            view.apply(NOOP, ())?.get(limit)?;
            rtts.push(t.elapsed());
        }
        Ok(())
    });
    rtts.sort_unstable();
    let rtt_median = rtts[rtts.len() / 2].as_secs_f64() * 1e6;
    let rtt_p99 = rtts[rtts.len() * 99 / 100].as_secs_f64() * 1e6;
    let apply_seq_cpu = cpu.as_secs_f64() * 1e6 / calls as f64;
    let _ = wall;

    // Many in flight: submit them all, then collect.
    let (res, wall, cpu) = measure(|| -> Result<(), cluster_client::Error> {
        let tasks: Vec<AsyncResult<()>> = (0..calls)
            .map(|_| view.apply(NOOP, ()))
            .collect::<Result<_, _>>()?;
        for t in &tasks {
            t.get(limit)?;
        }
        Ok(())
    });
    res?;
    let apply_rate = calls as f64 / wall.as_secs_f64();
    let apply_many_cpu = cpu.as_secs_f64() * 1e6 / calls as f64;

    // Chunked map (automatic chunking).
    let (res, wall, cpu) = measure(|| view.map(NOOP, std::iter::repeat_n((), items))?.get(limit));
    let got = res?;
    assert_eq!(got.len(), items);
    let map_rate = items as f64 / wall.as_secs_f64();
    let map_cpu_ns = cpu.as_secs_f64() * 1e9 / items as f64;

    // Streaming imap (adaptive chunks, bounded in flight).
    let (res, wall, cpu) = measure(|| {
        view.imap(NOOP, std::iter::repeat_n((), items))
            .try_fold(0usize, |n, r| r.map(|()| n + 1))
    });
    assert_eq!(res?, items);
    let imap_rate = items as f64 / wall.as_secs_f64();
    let imap_cpu_ns = cpu.as_secs_f64() * 1e9 / items as f64;

    if json {
        println!(
            "{{\"engines\":{engines},\"calls\":{calls},\"items\":{items},\
             \"apply_rtt_median_us\":{rtt_median:.1},\"apply_rtt_p99_us\":{rtt_p99:.1},\
             \"apply_sequential_client_cpu_us\":{apply_seq_cpu:.2},\
             \"apply_pipelined_tasks_per_s\":{apply_rate:.0},\"apply_pipelined_client_cpu_us\":{apply_many_cpu:.2},\
             \"map_items_per_s\":{map_rate:.0},\"map_client_cpu_ns_per_item\":{map_cpu_ns:.1},\
             \"imap_items_per_s\":{imap_rate:.0},\"imap_client_cpu_ns_per_item\":{imap_cpu_ns:.1}}}"
        );
    } else {
        println!("client-side cost per task ({engines} engines, noop)");
        println!("  apply, one at a time ({calls}): round trip median {rtt_median:.0} µs, p99 {rtt_p99:.0} µs; client CPU {apply_seq_cpu:.1} µs/task");
        println!("  apply, all in flight ({calls}):  {apply_rate:.0} tasks/s; client CPU {apply_many_cpu:.2} µs/task");
        println!("  map, chunked ({items} items):     {map_rate:.0} items/s; client CPU {map_cpu_ns:.0} ns/item");
        println!("  imap, streamed ({items} items):   {imap_rate:.0} items/s; client CPU {imap_cpu_ns:.0} ns/item");
    }
    Ok(())
}
