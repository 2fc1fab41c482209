//! `cluster demo`: the seed examples on a throw-away cluster, with the truth about the
//! machine beside them.
//!
//! Each example runs three ways in the same run: on the cluster's engines, in one local
//! thread (the baseline), and in as many local threads as there are engines (the machine's
//! own ceiling: on a VM whose vCPUs cannot run two copies of the loop at full speed, no
//! cluster on it can do better). The cluster's speed-up is printed beside that ceiling, so
//! "0.7x" on such a machine reads as what it is: "cluster 0.69x of a possible 0.70x".

use crate::bench::TempCluster;
use crate::output::Output;
use anyhow::{bail, Result};
use std::time::{Duration, Instant};

/// Times of one example: on the cluster, one local thread, and `engines` local threads.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timings {
    /// Seconds on the cluster.
    pub cluster: f64,
    /// Seconds in one local thread.
    pub one_thread: f64,
    /// Seconds in as many local threads as engines.
    pub threads: f64,
}

impl Timings {
    /// The cluster's speed-up over one thread.
    pub fn speed_up(&self) -> f64 {
        self.one_thread / self.cluster.max(1e-9)
    }

    /// The best speed-up this machine allows with that many threads.
    pub fn ceiling(&self) -> f64 {
        self.one_thread / self.threads.max(1e-9)
    }

    /// The line comparing them.
    pub fn line(&self, engines: usize) -> String {
        format!(
            "  cluster ({engines} engines) {:.3} s, one local thread {:.3} s, {engines} local threads {:.3} s\n  cluster {:.2}x of a possible {:.2}x on this machine",
            self.cluster,
            self.one_thread,
            self.threads,
            self.speed_up(),
            self.ceiling()
        )
    }
}

/// Runs `work(i)` for `0..n` on `threads` local threads (item `i` on thread `i % threads`)
/// and returns the results in order with the seconds taken.
pub fn on_threads<T: Send>(
    n: usize,
    threads: usize,
    work: impl Fn(usize) -> T + Sync,
) -> (Vec<T>, f64) {
    let threads = threads.clamp(1, n.max(1));
    let t = Instant::now();
    let mut parts: Vec<Vec<(usize, T)>> = std::thread::scope(|s| {
        let work = &work;
        let handles: Vec<_> = (0..threads)
            .map(|k| s.spawn(move || (k..n).step_by(threads).map(|i| (i, work(i))).collect()))
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    let seconds = t.elapsed().as_secs_f64();
    let mut all: Vec<(usize, T)> = parts.iter_mut().flat_map(std::mem::take).collect();
    all.sort_by_key(|(i, _)| *i);
    (all.into_iter().map(|(_, v)| v).collect(), seconds)
}

/// Runs the seeds' examples on a fresh local cluster and prints results and timings.
pub fn demo(engines: usize, out: &Output) -> Result<()> {
    let say = |s: &str| -> Result<()> {
        out.line(s)?;
        Ok(out.flush()?)
    };
    say(&format!(
        "starting a throw-away cluster with {engines} engines…"
    ))?;
    let cluster = TempCluster::start(engines, &[])?;
    say(&format!(
        "controller pid {}, {} ready in {:.3} s (profile folder {})",
        cluster.report.controller_pid,
        crate::output::count(engines, "engine"),
        cluster.report.seconds,
        cluster.profile.dir().display()
    ))?;
    let client = cluster.client()?;
    let view = client.load_balanced_view();

    // Seed 1: the first 1000 primes, one task per index, through the load balancer.
    let t = Instant::now();
    let primes: Vec<u64> = view
        .map("nth_prime", 0..1000u64)?
        .get(Some(Duration::from_secs(120)))?;
    let cluster_s = t.elapsed().as_secs_f64();
    let (local, one_thread) = on_threads(1000, 1, |i| engine::stock::nth_prime(i as u64));
    let (_, threads) = on_threads(1000, engines, |i| engine::stock::nth_prime(i as u64));
    if primes != local {
        bail!("the cluster's primes differ from the ones computed here");
    }
    let times = Timings {
        cluster: cluster_s,
        one_thread,
        threads,
    };
    say(&format!(
        "\nfirst 1000 primes via map(nth_prime, 0..1000): {:?} … {:?}\n  {} results, all equal to a local computation\n{}",
        &primes[..10],
        &primes[990..],
        primes.len(),
        times.line(engines)
    ))?;

    // Seed 2: sum(range(10_000_000)) a hundred times, spread over the engines vs. here.
    let n = 10_000_000u64;
    let t = Instant::now();
    let sums: Vec<u64> = view
        .chunksize(1)
        .map("sum_range", std::iter::repeat_n(n, 100))?
        .get(Some(Duration::from_secs(300)))?;
    let cluster_s = t.elapsed().as_secs_f64();
    let (local, one_thread) = on_threads(100, 1, |_| engine::stock::sum_range(n));
    let (_, threads) = on_threads(100, engines, |_| engine::stock::sum_range(n));
    if sums != local {
        bail!("the cluster's sums differ from the ones computed here");
    }
    let times = Timings {
        cluster: cluster_s,
        one_thread,
        threads,
    };
    say(&format!(
        "\nsum_range(10_000_000) x 100 = {} each\n{}",
        sums[0],
        times.line(engines)
    ))?;
    drop(client);
    drop(cluster);
    say("\ncluster stopped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn threads_keep_the_order_and_share_the_items() {
        let (v, _) = on_threads(10, 3, |i| i * i);
        assert_eq!(v, (0..10).map(|i| i * i).collect::<Vec<_>>());
        let (v, _) = on_threads(2, 8, |i| i);
        assert_eq!(v, [0, 1]);
        let (v, _): (Vec<usize>, _) = on_threads(0, 4, |i| i);
        assert!(v.is_empty());
    }

    #[test]
    fn the_line_puts_the_speed_up_beside_the_ceiling() {
        let t = Timings {
            cluster: 1.0,
            one_thread: 0.69,
            threads: 0.7,
        };
        let line = t.line(2);
        assert!(
            line.contains("cluster 0.69x of a possible 0.99x on this machine"),
            "{line}"
        );
    }
}
