//! The seed's producer and consumers over a shared queue: one producer puts 0..N (default
//! 1000) in the queue `primes-jobs`; a consumer task on every engine takes numbers until the
//! queue is empty, computing the seed's `primes(n)` (the n-th prime) and putting `(n, prime)`
//! in `primes-results`; the producer gathers the first N primes.
//!
//! ```text
//! cluster start -n 4
//! cargo run --release -p cluster-client --example queue_primes -- 1000
//! ```
//!
//! The consumers are this same program (`queue_primes consume`) run as command tasks on the
//! engines, each with a client of its own made from `$CLUSTER_CLIENT_FILE`, as a task on
//! another machine would: any task reaches the shared objects through a client made from
//! the profile's client connection file.

use cluster_client::{Client, Command, ObjectError};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const JOBS: &str = "primes-jobs";
const RESULTS: &str = "primes-results";

/// The seed's `primes(n)`: the n-th prime, counting from 0 (`primes(0) = 2`).
fn nth_prime(n: u64) -> u64 {
    let mut found = 0;
    let mut candidate = 1u64;
    loop {
        candidate += 1;
        if (2..)
            .take_while(|d| d * d <= candidate)
            .all(|d| !candidate.is_multiple_of(d))
        {
            if found == n {
                return candidate;
            }
            found += 1;
        }
    }
}

/// A consumer: takes numbers until the queue is empty; prints how many it did.
fn consume() -> Result<(), Box<dyn std::error::Error>> {
    let client = Client::connect_env()?;
    let jobs = client.queue::<u64>(JOBS);
    let results = client.queue::<(u64, u64)>(RESULTS);
    let mut done = 0u64;
    loop {
        match jobs.get_nowait() {
            Ok(n) => {
                results.put(&(n, nth_prime(n)))?;
                done += 1;
            }
            Err(ObjectError::Empty { .. }) => break,
            Err(e) => return Err(e.into()),
        }
    }
    println!("{done}");
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let arg = std::env::args().nth(1);
    if arg.as_deref() == Some("consume") {
        return consume();
    }
    let n: u64 = arg.as_deref().map(str::parse).transpose()?.unwrap_or(1000);
    let client = Client::connect_env()?;
    client.remove_object(JOBS)?;
    client.remove_object(RESULTS)?;
    let start = Instant::now();

    // The producer.
    let jobs = client.queue::<u64>(JOBS);
    for i in 0..n {
        jobs.put(&i)?;
    }

    // A consumer task on every engine: this program, with the client file to connect.
    let me = std::env::current_exe()?.to_string_lossy().into_owned();
    let file = client.connection_file().to_string_lossy().into_owned();
    let engines = client.ids()?;
    let consumers = client.direct_view(&engines).command(
        Command::new(me)
            .arg("consume")
            .env("CLUSTER_CLIENT_FILE", file),
    )?;

    // The results, as they come.
    let results = client.queue::<(u64, u64)>(RESULTS);
    let mut primes = BTreeMap::new();
    while (primes.len() as u64) < n {
        let (i, p) = results.get(Some(Duration::from_secs(60)))?;
        primes.insert(i, p);
    }
    let outputs = consumers.get(Some(Duration::from_secs(60)))?;
    let counts: Vec<String> = engines
        .iter()
        .zip(&outputs)
        .map(|(e, o)| format!("engine {e}: {}", String::from_utf8_lossy(&o.stdout).trim()))
        .collect();
    let primes: Vec<u64> = primes.into_values().collect();
    let expected: Vec<u64> = (0..n).map(nth_prime).collect();
    if primes != expected {
        return Err("the consumers' primes differ from the local computation".into());
    }
    let shown: Vec<String> = primes.iter().take(10).map(u64::to_string).collect();
    println!(
        "first {n} primes: {} … {} ({:.3} s)",
        shown.join(" "),
        primes.last().copied().unwrap_or_default(),
        start.elapsed().as_secs_f64()
    );
    println!("items taken per consumer: {}", counts.join(", "));
    println!(
        "queues left: {} and {} items",
        jobs.qsize()?,
        results.qsize()?
    );
    Ok(())
}
