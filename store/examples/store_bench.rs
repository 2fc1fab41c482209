//! Benchmark of the task store, with one-item tasks (a submission and an outcome each, as a
//! `map --chunksize 1` makes them):
//!
//! * the rate a producer thread (standing in for the hub's loop, with some work of its own a
//!   task) keeps with no store, the in-memory store and the SQLite store;
//! * the writer's rate: records committed a second;
//! * the database's size per million tasks;
//! * reopening with a million records: `Store::open`, `recover()`, and a few queries.
//!
//! ```text
//! cargo run --release -p cluster-store --example store_bench -- [--tasks N] [--work-ns NS] [--dir DIR] [--alone]
//! ```

use cluster_store::{
    now_us, HistoryFilter, Purge, Record, Store, StoreConfig, StoreKind, TaskState,
};
use protocol::{ClientId, EngineId, Status, TaskId, TaskOptions, TaskOutcome, TaskRequest, Work};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tasks a send (the hub handles messages of many tasks under load).
const BATCH: u64 = 256;

struct Args {
    /// Only the writer-alone figure (for comparing changes to the writer).
    alone: bool,
    tasks: u64,
    work_ns: u64,
    dir: Option<PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        alone: false,
        tasks: 1_000_000,
        work_ns: 1000,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--tasks" => a.tasks = value().parse().expect("--tasks N"),
            "--work-ns" => a.work_ns = value().parse().expect("--work-ns NS"),
            "--dir" => a.dir = Some(PathBuf::from(value())),
            "--alone" => a.alone = true,
            other => panic!("unknown flag {other}; use --tasks N, --work-ns NS, --dir DIR"),
        }
    }
    a
}

/// Busy work of about `ns` nanoseconds (the hub's own cost a task).
fn work(ns: u64) {
    if ns == 0 {
        return;
    }
    let end = Instant::now() + Duration::from_nanos(ns);
    let mut x = 1u64;
    while Instant::now() < end {
        for _ in 0..16 {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
    }
}

fn records(first: u64, n: u64, fail_every: u64) -> Vec<Record> {
    let t = now_us();
    let mut out = Vec::with_capacity(2 * n as usize);
    for i in first..first + n {
        let id = TaskId::new(ClientId(1), i);
        out.push(Record::submitted(
            TaskRequest {
                id,
                work: Work::Map {
                    function: "echo".into(),
                },
                options: TaskOptions::default(),
            },
            ClientId(1),
            t,
            Arc::new(vec![0x91, (i & 0x7f) as u8]), // msgpack [i]
        ));
        let status = if fail_every > 0 && i % fail_every == 0 {
            Status::Err(protocol::TaskError {
                kind: protocol::ErrorKind::Remote,
                message: "boom".into(),
                engine: Some(EngineId(0)),
            })
        } else {
            Status::Ok
        };
        out.push(Record::finished(
            TaskOutcome {
                id,
                engine: Some(EngineId((i % 2) as u32)),
                status,
                started_us: t,
                elapsed_us: 3 + i % 50,
            },
            t,
            Arc::new(vec![0x91, (i & 0x7f) as u8]),
        ));
    }
    out
}

/// CPU time of the whole process (user + system), in seconds.
fn cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

fn rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn file_mb(path: &Path) -> f64 {
    let len = |p: PathBuf| std::fs::metadata(p).map_or(0, |m| m.len());
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    (len(path.to_path_buf()) + len(PathBuf::from(wal))) as f64 / 1e6
}

/// Runs the producer against a store; returns (producer tasks/s, tasks/s until committed).
fn produce(config: &StoreConfig, tasks: u64, work_ns: u64, leave_unfinished: u64) -> (f64, f64) {
    let Store { writer, reader } = Store::open(config).expect("open the store");
    let start = Instant::now();
    let mut sent = 0;
    while sent < tasks {
        let n = BATCH.min(tasks - sent);
        for _ in 0..n {
            work(work_ns);
        }
        writer.send(records(sent, n, 1000));
        sent += n;
    }
    // Some tasks left queued, for the recovery figures.
    let mut extra = Vec::new();
    for i in 0..leave_unfinished {
        let mut r = records(tasks + i, 1, 0);
        r.truncate(1);
        extra.extend(r);
    }
    writer.send(extra);
    let produced = start.elapsed();
    writer.flush().expect("flush");
    let committed = start.elapsed();
    let c = writer.counters();
    assert_eq!(
        c.dropped_records, 0,
        "the backlog bound dropped records: {c:?}"
    );
    drop(reader);
    writer.close().expect("close");
    (
        tasks as f64 / produced.as_secs_f64(),
        tasks as f64 / committed.as_secs_f64(),
    )
}

fn main() {
    let a = args();
    let tmp = tempfile::tempdir().expect("a temporary folder");
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_path_buf());
    let db = dir.join("bench-tasks.db");
    let _ = std::fs::remove_file(&db);
    println!(
        "store_bench: {} one-item tasks (2 records each), producer work {} ns a task, sends of {} tasks, db {}",
        a.tasks,
        a.work_ns,
        BATCH,
        db.display()
    );

    // 1. The producer's rate with each kind, and the writer's.
    let mut rates = Vec::new();
    let kinds = if a.alone {
        vec![]
    } else {
        vec![StoreKind::None, StoreKind::Memory, StoreKind::Sqlite]
    };
    for kind in kinds {
        let mut config = match kind {
            StoreKind::None => StoreConfig::none(),
            StoreKind::Memory => StoreConfig::memory(),
            StoreKind::Sqlite => StoreConfig::new(&db),
        };
        config.backlog_max_records = usize::MAX;
        config.backlog_max_bytes = u64::MAX;
        let rss = rss_mb();
        let cpu = cpu_s();
        let (producer, committed) = produce(&config, a.tasks, a.work_ns, 10_000);
        let cpu = cpu_s() - cpu;
        println!(
            "  {kind:>6}: producer {:>7.0} tasks/s; committed {:>7.0} tasks/s = {:>7.0} records/s; CPU {:.2} us a task (rss {:.0} -> {:.0} MB)",
            producer,
            committed,
            2.0 * committed,
            cpu * 1e6 / a.tasks as f64,
            rss,
            rss_mb()
        );
        rates.push(producer);
    }
    if let [none, memory, sqlite] = rates[..] {
        println!(
            "  store's cost to the producer: memory {:.1}%, sqlite {:.1}%",
            100.0 * (1.0 - memory / none),
            100.0 * (1.0 - sqlite / none)
        );
    }

    // 1b. The writer alone: everything sent at once, then the time to commit it.
    {
        let alone = dir.join("bench-alone.db");
        let mut config = StoreConfig::new(&alone);
        config.backlog_max_records = usize::MAX;
        config.backlog_max_bytes = u64::MAX;
        let Store { writer, reader } = Store::open(&config).expect("open the store");
        let batches: Vec<Vec<Record>> = (0..a.tasks.div_ceil(BATCH))
            .map(|b| records(b * BATCH, BATCH.min(a.tasks - b * BATCH), 1000))
            .collect();
        let t = Instant::now();
        let cpu = cpu_s();
        for batch in batches {
            writer.send(batch);
        }
        writer.flush().expect("flush");
        let took = t.elapsed();
        let cpu = cpu_s() - cpu;
        println!(
            "  writer alone: {:.0} tasks/s = {:.0} records/s; {:.2} us of CPU a task ({} commits)",
            a.tasks as f64 / took.as_secs_f64(),
            2.0 * a.tasks as f64 / took.as_secs_f64(),
            cpu * 1e6 / a.tasks as f64,
            writer.counters().commits
        );
        drop(reader);
        writer.close().expect("close");
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let mut p = alone.as_os_str().to_owned();
            p.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(p));
        }
    }

    if a.alone {
        return;
    }

    // 2. Size on disk.
    {
        let conn = rusqlite::Connection::open(&db).expect("open for checkpoint");
        conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .expect("checkpoint");
    }
    let mb = file_mb(&db);
    println!(
        "  database: {:.1} MB for {} tasks = {:.0} MB per million tasks ({:.0} bytes a task)",
        mb,
        a.tasks,
        mb * 1e6 / a.tasks as f64,
        mb * 1e6 / a.tasks as f64
    );

    // 3. Restart: open, recover, queries.
    let config = StoreConfig::new(&db);
    let t = Instant::now();
    let Store { writer, reader } = Store::open(&config).expect("reopen");
    let opened = t.elapsed();
    let t = Instant::now();
    let rec = reader.recover().expect("recover");
    let recovered = t.elapsed();
    println!(
        "  reopen with {} records: open {:.1} ms, recover() {:.1} ms ({} unfinished with arguments, {} finished, max client {:?})",
        a.tasks + 10_000,
        opened.as_secs_f64() * 1e3,
        recovered.as_secs_f64() * 1e3,
        rec.unfinished.len(),
        rec.finished,
        rec.max_client
    );
    let t = Instant::now();
    let mut after = None;
    let mut ids = 0;
    loop {
        let page = reader.finished_ids(after, 100_000).expect("finished ids");
        let Some(last) = page.last() else { break };
        after = Some(*last);
        ids += page.len();
    }
    println!(
        "  all {} finished ids, paged: {:.1} ms",
        ids,
        t.elapsed().as_secs_f64() * 1e3
    );
    let time = |what: &str, f: &mut dyn FnMut() -> usize| {
        let t = Instant::now();
        let n = f();
        println!(
            "  {what}: {:.2} ms ({n} rows)",
            t.elapsed().as_secs_f64() * 1e3
        );
    };
    time("history(limit 100)", &mut || {
        reader
            .history(&HistoryFilter {
                limit: Some(100),
                ..Default::default()
            })
            .unwrap()
            .len()
    });
    time("history(failed, limit 100)", &mut || {
        reader
            .history(&HistoryFilter {
                state: Some(TaskState::Failed),
                limit: Some(100),
                ..Default::default()
            })
            .unwrap()
            .len()
    });
    time("history(engine 1, limit 100)", &mut || {
        reader
            .history(&HistoryFilter {
                engine: Some(EngineId(1)),
                limit: Some(100),
                ..Default::default()
            })
            .unwrap()
            .len()
    });
    time("stats()", &mut || {
        let s = reader.stats().unwrap();
        if let Some(f) = s.first() {
            print!(
                "  [{}: ok {} failed {} p50 {:?} us p99 {:?} us]",
                f.function, f.ok, f.failed, f.p50_us, f.p99_us
            );
        }
        s.len()
    });
    let ids: Vec<TaskId> = (0..1000)
        .map(|i| TaskId::new(ClientId(1), i * (a.tasks / 1000).max(1)))
        .collect();
    time("lookup(1000 ids)", &mut || {
        reader.lookup(&ids).unwrap().len()
    });
    {
        let conn = rusqlite::Connection::open(&db).expect("open");
        let t = Instant::now();
        let check: String = conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .expect("quick_check");
        println!(
            "  PRAGMA quick_check: {check} in {:.0} ms (not run on open)",
            t.elapsed().as_secs_f64() * 1e3
        );
    }
    let t = Instant::now();
    let n = writer.purge(Purge::All).recv().unwrap().unwrap();
    println!(
        "  purge(all): {n} records in {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    drop(reader);
    writer.close().expect("close");
}
