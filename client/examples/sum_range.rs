//! The seed's benchmark: `sum(range(10_000_000))`, computed REPEAT times (default 100) in
//! this process, then as REPEAT tasks spread over the cluster's engines; prints both times
//! and the speed-up.
//!
//! ```text
//! cluster start -n 4
//! cargo run --release -p cluster-client --example sum_range -- [N] [REPEAT]
//! ```
//!
//! Both sides run the same honest loop (every value added, `black_box` against the
//! optimiser's closed form), so the speed-up is the cluster's parallelism less its overhead.

use cluster_client::{stock::SUM_RANGE, Client};
use std::hint::black_box;
use std::time::Instant;

/// The same loop as the stock engine's `sum_range`.
fn sum_range(n: u64) -> u64 {
    let mut total: u64 = 0;
    for i in 0..n {
        total = total.wrapping_add(black_box(i));
    }
    total
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let n: u64 = args
        .next()
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10_000_000);
    let repeat: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let client = Client::connect_env()?;
    let engines = client.ids()?.len();

    let start = Instant::now();
    let local: Vec<u64> = (0..repeat).map(|_| sum_range(n)).collect();
    let local_s = start.elapsed().as_secs_f64();

    let start = Instant::now();
    // One sum per task, so every engine gets its share.
    let remote = client
        .load_balanced_view()
        .chunksize(1)
        .map(SUM_RANGE, std::iter::repeat_n(n, repeat))?
        .get(None)?;
    let cluster_s = start.elapsed().as_secs_f64();

    if remote != local {
        return Err("the cluster's sums differ from the local ones".into());
    }
    println!(
        "sum(range({n})) = {} ×{repeat}",
        local.first().copied().unwrap_or(0)
    );
    println!("local, 1 process:   {local_s:8.3} s");
    println!("cluster, {engines} engines: {cluster_s:8.3} s");
    println!("speed-up:           {:8.2}×", local_s / cluster_s);
    Ok(())
}
