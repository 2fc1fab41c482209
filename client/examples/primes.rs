//! The seed's distributed primes: the first N primes (default 1000), one task per prime,
//! taken by whichever engine is free, like workers pulling from a task queue.
//!
//! ```text
//! cluster start -n 4
//! cargo run --release -p cluster-client --example primes -- 1000
//! ```
//!
//! It connects like the `cluster` command (`$CLUSTER_CLIENT_FILE`, else the profile in
//! `$CLUSTER_PROFILE`, else `default`) and checks the result against a local computation.

use cluster_client::{stock::NTH_PRIME, Client};
use std::collections::BTreeSet;
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u64 = match std::env::args().nth(1) {
        Some(arg) => arg.parse()?,
        None => 1000,
    };
    let client = Client::connect_env()?;
    let view = client.load_balanced_view();

    let start = Instant::now();
    // One prime per task: the controller's queue hands each to the next free engine, so the
    // growing cost of later primes spreads evenly.
    let tasks = view.chunksize(1).map(NTH_PRIME, 0..n)?;
    let primes = tasks.get(None)?;
    let elapsed = start.elapsed();

    let engines: BTreeSet<u32> = tasks
        .metadata()
        .iter()
        .filter_map(|m| m.engine.map(|e| e.0))
        .collect();
    let expected = local_primes(n as usize);
    if primes != expected {
        return Err("the cluster's primes differ from the local computation".into());
    }
    let shown: Vec<String> = primes.iter().take(10).map(u64::to_string).collect();
    println!(
        "first {n} primes: {} … {} ({} tasks on engines {engines:?}, {:.3} s)",
        shown.join(" "),
        primes.last().copied().unwrap_or_default(),
        tasks.tasks(),
        elapsed.as_secs_f64()
    );
    println!("checked against a local computation: ok");
    Ok(())
}

/// The first `n` primes, by trial division.
fn local_primes(n: usize) -> Vec<u64> {
    let mut primes = Vec::with_capacity(n);
    let mut candidate = 2u64;
    while primes.len() < n {
        if primes
            .iter()
            .take_while(|&&p| p * p <= candidate)
            .all(|&p| !candidate.is_multiple_of(p))
        {
            primes.push(candidate);
        }
        candidate += 1;
    }
    primes
}
