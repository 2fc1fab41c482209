//! `cluster bench objects`: the shared objects' costs on a throw-away local cluster (no
//! engines), with `db = "sqlite"` (objects written to the task store) and `db = "memory"`:
//! a queue's put→get round trip (one client puts, another blocked in `get` receives it),
//! items per second with one producer and two consumers (each its own client), and a lock's
//! acquire + release.

use super::{ms, percentile, TempCluster};
use anyhow::{Context as _, Result};
use serde::Serialize;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Figures printed by `cluster bench objects`.
#[derive(Debug, Default, Serialize)]
pub struct ObjectsReport {
    /// Round trips measured.
    pub round_trips: usize,
    /// Items of the throughput figure.
    pub items: usize,
    /// Lock acquire + release pairs measured.
    pub locks: usize,
    /// With the SQLite task store.
    pub sqlite: Figures,
    /// With `db = "memory"`.
    pub memory: Figures,
}

/// One store's figures.
#[derive(Debug, Default, Serialize)]
pub struct Figures {
    /// Put → get round trip, median ms.
    pub put_get_median_ms: f64,
    /// Put → get round trip, 99th percentile ms.
    pub put_get_p99_ms: f64,
    /// Items per second, 1 producer (one `put` after the other) and 2 consumers.
    pub items_per_s: f64,
    /// The same with the producer's puts pipelined (`put_many`, 1000 at a time).
    pub items_per_s_pipelined: f64,
    /// Lock acquire + release, median ms.
    pub lock_median_ms: f64,
    /// Lock acquire + release, 99th percentile ms.
    pub lock_p99_ms: f64,
}

fn quantiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99))
}

fn figures(db: &str, round_trips: usize, items: usize, locks: usize) -> Result<Figures> {
    let cluster = TempCluster::start(0, &[("db", db.to_owned())])?;
    let producer = cluster.client()?;
    let mut f = Figures::default();

    // Round trip: a consumer blocked in get; the time from put to its arrival there.
    {
        let consumer = cluster.client()?;
        let (tx, rx) = mpsc::channel::<Instant>();
        let q = consumer.queue::<u64>("bench-rt");
        let n = round_trips + 100;
        let reader = std::thread::spawn(move || -> Result<()> {
            for _ in 0..n {
                q.get(Some(Duration::from_secs(30)))?;
                let _ = tx.send(Instant::now());
            }
            Ok(())
        });
        let q = producer.queue::<u64>("bench-rt");
        let mut samples = Vec::with_capacity(round_trips);
        for i in 0..n {
            // Let the consumer be waiting in the controller first.
            std::thread::sleep(Duration::from_micros(200));
            let t = Instant::now();
            q.put(&(i as u64))?;
            let got = rx
                .recv_timeout(Duration::from_secs(30))
                .context("the consumer stopped")?;
            if i >= 100 {
                samples.push(ms(got - t));
            }
        }
        reader
            .join()
            .map_err(|_| anyhow::anyhow!("the consumer panicked"))??;
        (f.put_get_median_ms, f.put_get_p99_ms) = quantiles(samples);
    }

    // Throughput: one producer, two consumers, each its own client.
    f.items_per_s = throughput(&cluster, &producer, "bench-tp", items, false)?;
    f.items_per_s_pipelined = throughput(&cluster, &producer, "bench-tp2", items, true)?;

    // Lock: acquire and release, uncontended.
    {
        let lock = producer.lock("bench-lock");
        let mut samples = Vec::with_capacity(locks);
        for i in 0..locks + 50 {
            let t = Instant::now();
            lock.acquire(None)?.release()?;
            if i >= 50 {
                samples.push(ms(t.elapsed()));
            }
        }
        (f.lock_median_ms, f.lock_p99_ms) = quantiles(samples);
    }
    Ok(f)
}

/// Items per second through queue `name`: `producer` puts `items` (one after the other, or
/// pipelined), two consumers of their own take them.
fn throughput(
    cluster: &TempCluster,
    producer: &client::Client,
    name: &str,
    items: usize,
    pipelined: bool,
) -> Result<f64> {
    let start = Instant::now();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let client = cluster.client()?;
            let name = name.to_owned();
            Ok(std::thread::spawn(move || -> Result<usize> {
                let q = client.queue::<i64>(&name);
                let mut n = 0;
                loop {
                    match q.get(Some(Duration::from_secs(30)))? {
                        -1 => return Ok(n),
                        _ => n += 1,
                    }
                }
            }))
        })
        .collect::<Result<_>>()?;
    let q = producer.queue::<i64>(name);
    if pipelined {
        let values: Vec<i64> = (0..items as i64).collect();
        for chunk in values.chunks(1000) {
            q.put_many(chunk, None)?;
        }
    } else {
        for i in 0..items {
            q.put(&(i as i64))?;
        }
    }
    q.put(&-1)?;
    q.put(&-1)?;
    let mut taken = 0;
    for c in consumers {
        taken += c
            .join()
            .map_err(|_| anyhow::anyhow!("a consumer panicked"))??;
    }
    anyhow::ensure!(
        taken == items,
        "the consumers took {taken} of {items} items"
    );
    Ok(items as f64 / start.elapsed().as_secs_f64())
}

/// Runs the figures with both stores.
pub fn bench_objects(
    round_trips: usize,
    items: usize,
    locks: usize,
    progress: bool,
) -> Result<ObjectsReport> {
    let mut r = ObjectsReport {
        round_trips,
        items,
        locks,
        ..ObjectsReport::default()
    };
    for (db, slot) in [("sqlite", &mut r.sqlite), ("memory", &mut r.memory)] {
        if progress {
            eprintln!("objects with db = {db}...");
        }
        *slot = figures(db, round_trips, items, locks)?;
    }
    Ok(r)
}

/// The report as a table.
pub fn render_objects(r: &ObjectsReport) -> String {
    let mut s = format!(
        "shared objects (local controller; {} round trips, {} items, {} lock pairs)\n",
        r.round_trips, r.items, r.locks
    );
    s.push_str(&format!(
        "{:<34} {:>12} {:>12}\n",
        "", "db=sqlite", "db=memory"
    ));
    let row = |name: &str, a: f64, b: f64, unit: &str| {
        format!("{name:<34} {a:>9.3} {unit:<2} {b:>9.3} {unit:<2}\n")
    };
    s.push_str(&row(
        "queue put->get, median",
        r.sqlite.put_get_median_ms,
        r.memory.put_get_median_ms,
        "ms",
    ));
    s.push_str(&row(
        "queue put->get, p99",
        r.sqlite.put_get_p99_ms,
        r.memory.put_get_p99_ms,
        "ms",
    ));
    s.push_str(&format!(
        "{:<34} {:>12.0} {:>12.0}\n",
        "items/s, 1 producer 2 consumers", r.sqlite.items_per_s, r.memory.items_per_s
    ));
    s.push_str(&format!(
        "{:<34} {:>12.0} {:>12.0}\n",
        "  the same, puts pipelined",
        r.sqlite.items_per_s_pipelined,
        r.memory.items_per_s_pipelined
    ));
    s.push_str(&row(
        "lock acquire+release, median",
        r.sqlite.lock_median_ms,
        r.memory.lock_median_ms,
        "ms",
    ));
    s.push_str(&row(
        "lock acquire+release, p99",
        r.sqlite.lock_p99_ms,
        r.memory.lock_p99_ms,
        "ms",
    ));
    s
}
