//! Tests of the store on its own: schema, batching, payload limits, figures, retention,
//! recovery, purges, refusals (corrupt, in use, locked), faults (write errors, disk full)
//! and durability across a `kill -9` (a child process: this test binary run again).

use super::*;
use protocol::{
    ClientId, CommandSpec, EngineId, ErrorKind, Status, TaskError, TaskId, TaskOptions,
    TaskOutcome, TaskRequest, Work,
};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const T0: u64 = 1_700_000_000_000_000;

fn id(n: u64) -> TaskId {
    TaskId::new(ClientId(1), n)
}

fn call(n: u64, function: &str) -> TaskRequest {
    TaskRequest {
        id: id(n),
        work: Work::Call {
            function: function.into(),
        },
        options: TaskOptions::default(),
    }
}

fn submitted(n: u64, function: &str) -> Record {
    Record::submitted(
        call(n, function),
        ClientId(1),
        T0 + n,
        Arc::new(n.to_le_bytes().to_vec()),
    )
}

fn started(n: u64, engine: u32) -> Record {
    Record::Started {
        id: id(n),
        engine: EngineId(engine),
        time_us: T0 + n + 1,
    }
}

fn outcome(n: u64, ok: bool, elapsed_us: u64) -> TaskOutcome {
    TaskOutcome {
        id: id(n),
        engine: Some(EngineId(0)),
        status: if ok {
            Status::Ok
        } else {
            Status::Err(TaskError {
                kind: ErrorKind::Remote,
                message: format!("task {n} failed"),
                engine: Some(EngineId(0)),
            })
        },
        started_us: T0 + n + 2,
        elapsed_us,
    }
}

fn finished(n: u64, ok: bool, elapsed_us: u64) -> Record {
    let payload = if ok { vec![0xcc; 4] } else { Vec::new() };
    Record::finished(outcome(n, ok, elapsed_us), T0 + n + 3, Arc::new(payload))
}

fn config_in(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir.join("db").join("tasks.db"));
    c.commit_interval = Duration::from_millis(20);
    c.busy_timeout = Duration::from_millis(100);
    c
}

fn open(config: &StoreConfig) -> Store {
    Store::open(config).unwrap_or_else(|e| panic!("open {}: {e}", config.path.display()))
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_task_life_reads_back_from_history_result_and_lookup() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let Store { writer, reader } = open(&config);
    // Task 1 over three batches, task 2 in one, task 3 failed, task 4 still running.
    writer.send(vec![submitted(1, "echo"), submitted(4, "sleep")]);
    writer.flush().unwrap();
    writer.send(vec![started(1, 3), started(4, 1)]);
    writer.flush().unwrap();
    writer.send(vec![
        finished(1, true, 500),
        submitted(2, "echo"),
        started(2, 0),
        finished(2, true, 700),
        Record::Acknowledged {
            id: id(2),
            time_us: T0 + 99,
        },
        submitted(3, "echo"),
        finished(3, false, 10),
    ]);
    writer.flush().unwrap();

    let all = reader.history(&HistoryFilter::default()).unwrap();
    let ids: Vec<TaskId> = all.iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![id(4), id(3), id(2), id(1)], "newest first");
    let r1 = &all[3];
    assert_eq!(r1.state, TaskState::Ok);
    assert_eq!(r1.engine, Some(EngineId(0)), "the outcome's engine");
    assert_eq!(r1.started_us, Some(T0 + 3), "the engine's start time");
    assert_eq!(r1.elapsed_us, Some(500));
    assert_eq!(r1.result, PayloadState::Kept);
    assert_eq!(r1.result_size, Some(4));
    assert_eq!(r1.argument_size, 8);
    assert_eq!(
        r1.work,
        Some(Work::Call {
            function: "echo".into()
        })
    );
    assert_eq!(all[2].acknowledged_us, Some(T0 + 99));
    assert_eq!(all[0].state, TaskState::Running);
    assert_eq!(all[0].engine, Some(EngineId(1)));
    let failed = &all[1];
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.error.as_ref().unwrap().message, "task 3 failed");
    assert_eq!(failed.outcome(), Some(outcome(3, false, 10)));

    let stored = reader.result(id(1)).unwrap().unwrap();
    assert_eq!(stored.payload.as_deref(), Some(&vec![0xcc; 4]));
    assert_eq!(stored.record.outcome(), Some(outcome(1, true, 500)));
    assert!(reader.result(id(77)).unwrap().is_none());

    let found = reader.lookup(&[id(2), id(4), id(77)]).unwrap();
    assert_eq!(
        found,
        vec![
            Lookup::Finished {
                outcome: outcome(2, true, 700),
                payload: Some(Arc::new(vec![0xcc; 4])),
                payload_state: PayloadState::Kept,
            },
            Lookup::Unfinished(TaskState::Running),
            Lookup::Unknown,
        ]
    );

    // Filters.
    let f = |filter: HistoryFilter| -> Vec<TaskId> {
        reader
            .history(&filter)
            .unwrap()
            .into_iter()
            .map(|r| r.id)
            .collect()
    };
    let state = |s| HistoryFilter {
        state: Some(s),
        ..Default::default()
    };
    assert_eq!(f(state(TaskState::Failed)), vec![id(3)]);
    assert_eq!(f(state(TaskState::Running)), vec![id(4)]);
    assert_eq!(f(state(TaskState::Ok)), vec![id(2), id(1)]);
    assert_eq!(f(state(TaskState::Queued)), Vec::<TaskId>::new());
    let by_fn = HistoryFilter {
        function: Some("sleep".into()),
        ..Default::default()
    };
    assert_eq!(f(by_fn), vec![id(4)]);
    let by_engine = HistoryFilter {
        engine: Some(EngineId(1)),
        ..Default::default()
    };
    assert_eq!(f(by_engine), vec![id(4)]);
    let since = HistoryFilter {
        since_us: Some(T0 + 3),
        limit: Some(1),
        ..Default::default()
    };
    assert_eq!(f(since), vec![id(4)]);
    let other_client = HistoryFilter {
        client: Some(ClientId(2)),
        ..Default::default()
    };
    assert_eq!(f(other_client), Vec::<TaskId>::new());
}

#[test]
fn a_burst_is_one_commit_and_a_quiet_store_commits_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.commit_interval = Duration::from_millis(300);
    let Store { writer, reader } = open(&config);
    let start = Instant::now();
    for n in 0..2000 {
        writer.send(vec![submitted(n, "echo"), finished(n, true, 5)]);
    }
    // Committed within one interval, in one transaction, without a flush.
    wait_until("the batch", || writer.counters().committed_records == 4000);
    assert!(start.elapsed() < Duration::from_secs(3));
    assert_eq!(writer.counters().commits, 1, "{:?}", writer.counters());
    assert_eq!(reader.stats().unwrap()[0].ok, 2000);
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        writer.counters().commits,
        1,
        "nothing to write, nothing committed"
    );
    // Two sends further apart than the interval are two commits.
    writer.record(submitted(5000, "echo"));
    wait_until("the second batch", || writer.counters().commits == 2);
    writer.record(submitted(5001, "echo"));
    wait_until("the third batch", || writer.counters().commits == 3);
    assert_eq!(writer.counters().backlog_records, 0);
    writer.flush().unwrap();
    assert_eq!(
        writer.counters().commits,
        3,
        "a flush with nothing to write writes nothing"
    );
}

#[test]
fn a_task_finished_in_its_submission_batch_keeps_no_argument() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let Store { writer, reader } = open(&config);
    writer.send(vec![
        submitted(1, "echo"),
        finished(1, true, 1),
        submitted(2, "echo"),
    ]);
    writer.flush().unwrap();
    writer.record(finished(2, true, 1));
    writer.flush().unwrap();
    let conn = rusqlite::Connection::open(&config.path).unwrap();
    let args: i64 = conn
        .query_row(
            "SELECT count(*) FROM tasks WHERE argument IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(args, 0, "finished tasks keep no argument");
    assert_eq!(reader.recover().unwrap().unfinished.len(), 0);
}

#[test]
fn payloads_above_the_limit_keep_their_size_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.payload_max_bytes = 100;
    let Store { writer, reader } = open(&config);
    let big = Arc::new(vec![7u8; 101]);
    writer.send(vec![
        Record::submitted(call(1, "f"), ClientId(1), T0, big.clone()),
        Record::submitted(call(2, "f"), ClientId(1), T0, Arc::new(vec![1; 100])),
    ]);
    writer.flush().unwrap();
    let rec = reader.recover().unwrap();
    assert_eq!(rec.unfinished[0].argument, None, "too large to keep");
    assert_eq!(rec.unfinished[0].argument_size, 101);
    assert_eq!(rec.unfinished[1].argument.as_ref().unwrap().len(), 100);
    writer.send(vec![
        Record::finished(outcome(1, true, 1), T0, big),
        Record::finished(outcome(2, true, 1), T0, Arc::new(vec![2; 100])),
    ]);
    writer.flush().unwrap();
    let one = reader.result(id(1)).unwrap().unwrap();
    assert_eq!(one.payload, None);
    assert_eq!(one.record.result, PayloadState::TooLarge);
    assert_eq!(one.record.result_size, Some(101));
    let two = reader.result(id(2)).unwrap().unwrap();
    assert_eq!(two.payload.unwrap().len(), 100);
    assert_eq!(two.record.result, PayloadState::Kept);
}

#[test]
fn figures_count_states_and_percentiles_and_follow_purges_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    {
        let Store { writer, reader } = open(&config);
        let mut batch = Vec::new();
        for n in 1..=1000 {
            batch.push(submitted(n, "work"));
            batch.push(finished(n, n % 10 != 0, n * 1000));
        }
        batch.push(submitted(2000, "work"));
        batch.push(submitted(2001, "work"));
        batch.push(started(2001, 0));
        batch.push(submitted(3000, "other"));
        writer.send(batch);
        writer.flush().unwrap();
        let stats = reader.stats().unwrap();
        assert_eq!(stats.len(), 2);
        let work = &stats[1];
        assert_eq!(work.function, "work");
        assert_eq!(
            (work.queued, work.running, work.ok, work.failed),
            (1, 1, 900, 100)
        );
        let p50 = work.p50_us.unwrap() as f64;
        let p99 = work.p99_us.unwrap() as f64;
        assert!((p50 / 500_000.0 - 1.0).abs() < 0.04, "{p50}");
        assert!((p99 / 990_000.0 - 1.0).abs() < 0.04, "{p99}");
        assert_eq!(work.mean_us, Some(500_500));
        assert_eq!(stats[0].queued, 1);
        assert_eq!(stats[0].p50_us, None);
        // Purge the tasks 1..=500 (submitted before T0 + 501): figures follow.
        let n = writer
            .purge(Purge::Before(T0 + 501))
            .recv()
            .unwrap()
            .unwrap();
        assert_eq!(n, 500);
        let work = &reader.stats().unwrap()[1];
        assert_eq!((work.ok, work.failed), (450, 50));
        let p50 = work.p50_us.unwrap() as f64;
        assert!((p50 / 750_000.0 - 1.0).abs() < 0.04, "{p50}");
    }
    // Reopened: same figures, and the live tasks are still counted where they are.
    let Store { writer, reader } = open(&config);
    let work = reader.stats().unwrap()[1].clone();
    assert_eq!(
        (work.queued, work.running, work.ok, work.failed),
        (1, 1, 450, 50)
    );
    writer.send(vec![started(2000, 1), finished(2001, true, 1)]);
    writer.flush().unwrap();
    let work = reader.stats().unwrap()[1].clone();
    assert_eq!(
        (work.queued, work.running, work.ok, work.failed),
        (0, 1, 451, 50)
    );
    writer.purge(Purge::All).recv().unwrap().unwrap();
    assert_figures_match_rows(&reader, &config.path);
    let stats = reader.stats().unwrap();
    let work = stats.iter().find(|s| s.function == "work").unwrap();
    assert_eq!(
        (work.queued, work.running, work.ok, work.failed),
        (0, 1, 0, 0)
    );
    assert_eq!(work.p50_us, None);
}

#[test]
fn purges_remove_finished_records_only() {
    let dir = tempfile::tempdir().unwrap();
    let Store { writer, reader } = open(&config_in(dir.path()));
    let mut batch = Vec::new();
    for n in 1..=10 {
        batch.push(submitted(n, "f"));
        if n <= 8 {
            batch.push(finished(n, true, 1));
        }
    }
    writer.send(batch);
    let ids = writer.purge(Purge::Ids(vec![id(1), id(2), id(9), id(77)]));
    assert_eq!(
        ids.recv().unwrap().unwrap(),
        2,
        "9 is unfinished, 77 unknown"
    );
    assert_eq!(writer.purge(Purge::All).recv().unwrap().unwrap(), 6);
    let left: Vec<TaskId> = reader
        .history(&HistoryFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![id(10), id(9)]);
    // A purge record in the stream is ordered with the records around it.
    writer.send(vec![
        finished(9, true, 1),
        Record::Purged(Purge::Ids(vec![id(9)])),
        finished(10, true, 1),
    ]);
    writer.flush().unwrap();
    let left: Vec<TaskId> = reader
        .history(&HistoryFilter::default())
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, vec![id(10)]);
}

#[test]
fn a_resubmitted_id_replaces_its_record() {
    let dir = tempfile::tempdir().unwrap();
    let Store { writer, reader } = open(&config_in(dir.path()));
    writer.send(vec![submitted(1, "a"), finished(1, false, 5)]);
    writer.flush().unwrap();
    writer.record(submitted(1, "b"));
    writer.flush().unwrap();
    let r = reader.result(id(1)).unwrap().unwrap().record;
    assert_eq!((r.function.as_str(), r.state), ("b", TaskState::Queued));
    assert_eq!(r.error, None);
    let stats = reader.stats().unwrap();
    assert_eq!(
        stats.len(),
        1,
        "a's figures went with its record: {stats:?}"
    );
    assert_eq!((stats[0].function.as_str(), stats[0].queued), ("b", 1));
    // An outcome with no recorded submission still makes a record.
    writer.record(finished(50, true, 5));
    writer.flush().unwrap();
    let r = reader.result(id(50)).unwrap().unwrap();
    assert_eq!(r.record.work, None);
    assert_eq!(r.record.function, "(unknown)");
    assert_eq!(r.record.state, TaskState::Ok);
    // A second outcome for a task replaces the first (counted once).
    writer.record(finished(50, false, 9));
    writer.flush().unwrap();
    let unknown = reader
        .stats()
        .unwrap()
        .into_iter()
        .find(|s| s.function == "(unknown)")
        .unwrap();
    assert_eq!((unknown.ok, unknown.failed), (0, 1));
}

/// The writer's figures agree with a count of the rows.
fn assert_figures_match_rows(reader: &Reader, db: &Path) {
    let conn = rusqlite::Connection::open(db).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT function, sum(state = 0), sum(state = 1), sum(state = 2), sum(state = 3)
             FROM tasks GROUP BY function ORDER BY function",
        )
        .unwrap();
    let rows: Vec<(String, u64, u64, u64, u64)> = stmt
        .query_map([], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let figures: Vec<(String, u64, u64, u64, u64)> = reader
        .stats()
        .unwrap()
        .into_iter()
        .map(|s| (s.function, s.queued, s.running, s.ok, s.failed))
        .collect();
    assert_eq!(figures, rows);
}

#[test]
fn every_mix_of_records_in_one_batch_keeps_rows_and_figures_in_step() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let Store { writer, reader } = open(&config);
    writer.send((1..=6).map(|n| submitted(n, "f")).collect());
    writer.flush().unwrap();
    let ack = |n| Record::Acknowledged {
        id: id(n),
        time_us: T0 + 1000 + n,
    };
    writer.send(vec![
        // 1: acknowledged before its outcome arrives, then started late: ignored.
        ack(1),
        finished(1, true, 10),
        started(1, 5),
        // 2: started, requeued, started elsewhere, finished twice (the second wins).
        started(2, 1),
        Record::Requeued { id: id(2) },
        started(2, 2),
        finished(2, true, 20),
        finished(2, false, 30),
        // 3: finished then submitted again: queued anew under another function.
        finished(3, true, 40),
        submitted(3, "g"),
        // 4: started only.
        started(4, 3),
        // 7: new, finished, submitted again, started.
        submitted(7, "f"),
        finished(7, true, 1),
        submitted(7, "f"),
        started(7, 0),
    ]);
    writer.flush().unwrap();
    let get = |n| reader.result(id(n)).unwrap().unwrap().record;
    let r1 = get(1);
    assert_eq!(
        (r1.state, r1.acknowledged_us),
        (TaskState::Ok, Some(T0 + 1001))
    );
    let r2 = get(2);
    assert_eq!((r2.state, r2.elapsed_us), (TaskState::Failed, Some(30)));
    let r3 = get(3);
    assert_eq!((r3.state, r3.function.as_str()), (TaskState::Queued, "g"));
    assert_eq!(r3.completed_us, None);
    let r4 = get(4);
    assert_eq!(
        (r4.state, r4.engine),
        (TaskState::Running, Some(EngineId(3)))
    );
    let r7 = get(7);
    assert_eq!(
        (r7.state, r7.engine),
        (TaskState::Running, Some(EngineId(0)))
    );
    assert_figures_match_rows(&reader, &config.path);
    let f = reader
        .stats()
        .unwrap()
        .into_iter()
        .find(|s| s.function == "f")
        .unwrap();
    assert_eq!(f.mean_us, Some(20), "run times of 1 (10) and 2 (30)");
    // And after a restart the writer rebuilds the same.
    drop((writer, reader));
    let Store { writer, reader } = open(&config);
    writer.send(vec![finished(4, true, 1), finished(5, false, 1), ack(4)]);
    writer.flush().unwrap();
    assert_figures_match_rows(&reader, &config.path);
    assert_eq!(get_ack(&reader, 4), Some(T0 + 1004));
}

fn get_ack(reader: &Reader, n: u64) -> Option<u64> {
    reader
        .result(id(n))
        .unwrap()
        .unwrap()
        .record
        .acknowledged_us
}

#[test]
fn recovery_gives_unfinished_requests_with_arguments_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let command = TaskRequest {
        id: TaskId::new(ClientId(7), 1),
        work: Work::Command(CommandSpec {
            program: "sh".into(),
            args: vec!["-c".into(), "echo hi >> out".into()],
            ..Default::default()
        }),
        options: TaskOptions {
            retries: 2,
            timeout_ms: Some(5000),
            ..Default::default()
        },
    };
    {
        let Store { writer, .. } = open(&config);
        writer.send(vec![
            submitted(1, "echo"),
            submitted(2, "echo"),
            started(2, 4),
            submitted(3, "echo"),
            finished(3, true, 1),
            Record::submitted(command.clone(), ClientId(7), T0 + 10, Arc::new(Vec::new())),
        ]);
        writer.flush().unwrap();
    }
    let Store { reader, .. } = open(&config);
    let rec = reader.recover().unwrap();
    assert_eq!(rec.finished, 1);
    assert_eq!(rec.max_client, Some(ClientId(7)));
    assert_eq!(rec.unfinished.len(), 3);
    let (a, b, c) = (&rec.unfinished[0], &rec.unfinished[1], &rec.unfinished[2]);
    assert_eq!(a.request, call(1, "echo"));
    assert_eq!(a.state, TaskState::Queued);
    assert_eq!(a.argument.as_deref(), Some(&1u64.to_le_bytes().to_vec()));
    assert_eq!((b.state, b.engine), (TaskState::Running, Some(EngineId(4))));
    assert_eq!(
        c.request, command,
        "the command line and options come back whole"
    );
    assert_eq!(c.client, ClientId(7));
    assert_eq!(reader.finished_ids(None, 10).unwrap(), vec![id(3)]);
    assert_eq!(reader.finished_ids(Some(id(3)), 10).unwrap(), vec![]);
}

#[test]
fn retention_deletes_old_finished_records_by_age_and_by_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.retention = Some(Duration::from_secs(3600));
    let hour = 3_600_000_000u64;
    // Records from 9.95 hours ago to 0.05 hour ago, away from the cutoff at 1 hour (the
    // writer's own passes use the real clock, a few milliseconds later).
    let t0 = now_us() - 10 * hour + hour / 20;
    {
        let Store { writer, reader } = open(&config);
        let mut batch = Vec::new();
        for n in 0..100u64 {
            let mut s = submitted(n, "f");
            if let Record::Submitted(s) = &mut s {
                s.submitted_us = t0 + n * hour / 10;
            }
            batch.push(s);
            if n != 5 {
                let mut f = finished(n, true, n);
                if let Record::Finished(f) = &mut f {
                    f.completed_us = t0 + n * hour / 10 + 1;
                }
                batch.push(f);
            }
        }
        writer.send(batch);
        writer.flush().unwrap();
        // Records older than an hour go, except unfinished task 5.
        writer.enforce_retention(now_us()).unwrap();
        assert_eq!(writer.counters().retention_deleted, 89);
        let left = reader.history(&HistoryFilter::default()).unwrap();
        assert_eq!(left.len(), 11);
        assert!(left.iter().any(|r| r.id == id(5)));
        assert_eq!(reader.stats().unwrap()[0].ok, 10);
    }
    // By size: 3000 records with 1 KiB results, then a limit of a quarter of that.
    let mut config = config_in(&dir.path().join("size"));
    let Store { writer, reader } = open(&config);
    for n in 0..3000u64 {
        writer.send(vec![
            submitted(n, "f"),
            Record::finished(outcome(n, true, 1), T0 + n, Arc::new(vec![n as u8; 1024])),
        ]);
    }
    writer.flush().unwrap();
    let full = writer.counters().db_bytes;
    assert!(full > 3_000_000, "{full}");
    drop((writer, reader));
    config.max_db_bytes = Some(full / 4);
    let file_before = std::fs::metadata(&config.path).unwrap().len();
    // The writer runs a pass as it opens; this one finds little or nothing left to do.
    let Store { writer, reader } = open(&config);
    let report = writer.enforce_retention(now_us()).unwrap();
    assert!(report.db_bytes <= full / 4, "{report:?}");
    let deleted = writer.counters().retention_deleted;
    assert!(deleted > 2000, "{deleted}");
    let left = reader.history(&HistoryFilter::default()).unwrap();
    assert_eq!(left.len() as u64, 3000 - deleted);
    assert_eq!(
        left.last().unwrap().id,
        id(deleted),
        "the oldest went first"
    );
    // The file gave the space back.
    let conn = rusqlite::Connection::open(&config.path).unwrap();
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    let file_after = std::fs::metadata(&config.path).unwrap().len();
    assert!(
        file_after < file_before / 2,
        "{file_before} -> {file_after}"
    );
}

#[test]
fn a_corrupt_file_is_refused_with_its_name_and_reset_moves_it_aside() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    std::fs::create_dir_all(config.path.parent().unwrap()).unwrap();
    std::fs::write(&config.path, vec![0x5a; 8192]).unwrap();
    let e = Store::open(&config).unwrap_err();
    assert!(matches!(e, StoreError::Corrupt { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains(&config.path.display().to_string()), "{msg}");
    assert!(msg.contains("--db-reset"), "{msg}");

    let aside = Store::reset(&config).unwrap().unwrap();
    let name = aside.file_name().unwrap().to_string_lossy().into_owned();
    assert!(name.starts_with("tasks.db.corrupt-20"), "{name}");
    assert_eq!(
        std::fs::read(&aside).unwrap(),
        vec![0x5a; 8192],
        "kept as it was"
    );
    let Store { writer, reader } = open(&config);
    writer.record(submitted(1, "f"));
    writer.flush().unwrap();
    assert_eq!(reader.history(&HistoryFilter::default()).unwrap().len(), 1);
    // Reset is refused while the store is open.
    let e = Store::reset(&config).unwrap_err();
    assert!(matches!(e, StoreError::InUse { .. }), "{e}");
    drop((writer, reader));
    // A good file moved aside keeps its WAL beside it and opens as a database.
    let aside = Store::reset(&config).unwrap().unwrap();
    let conn = rusqlite::Connection::open(&aside).unwrap();
    let n: i64 = conn
        .query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(Store::reset(&config).unwrap(), None, "nothing left to move");
}

#[test]
fn a_folder_in_the_way_is_unreadable_and_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    std::fs::create_dir_all(&config.path).unwrap();
    let e = Store::open(&config).unwrap_err();
    assert!(matches!(e, StoreError::Unreadable { .. }), "{e}");
    assert!(e.to_string().contains("tasks.db"), "{e}");
}

#[test]
fn a_second_open_of_one_database_is_refused_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let first = open(&config);
    let e = Store::open(&config).unwrap_err();
    match &e {
        StoreError::InUse { holder, .. } => assert_eq!(*holder, Some(std::process::id())),
        other => panic!("{other}"),
    }
    let msg = e.to_string();
    assert!(msg.contains("in use by another controller"), "{msg}");
    assert!(msg.contains("cluster stop"), "{msg}");
    // Readers keep the lock too; once all are gone the next open succeeds.
    let Store { writer, reader } = first;
    drop(writer);
    assert!(Store::open(&config).is_err());
    drop(reader);
    open(&config);
}

#[test]
fn a_database_locked_by_another_program_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    drop(open(&config));
    let other = rusqlite::Connection::open(&config.path).unwrap();
    other
        .execute_batch("BEGIN IMMEDIATE; DELETE FROM tasks;")
        .unwrap();
    let e = Store::open(&config).unwrap_err();
    assert!(matches!(e, StoreError::Locked { .. }), "{e}");
    assert!(e.to_string().contains("locked by another program"), "{e}");
    other.execute_batch("ROLLBACK").unwrap();
    open(&config);
}

#[test]
fn write_errors_degrade_keep_the_records_and_resume() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.backlog_max_records = 1000;
    let Store { writer, reader } = open(&config);
    writer.record(submitted(0, "f"));
    writer.flush().unwrap();
    // Back-pressure reads the backlog while writing works...
    assert_eq!(writer.backlog(), Some((0, 1000)));
    // Another program takes the write lock: commits fail (busy) until it lets go.
    let other = rusqlite::Connection::open(&config.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    for n in 1..=450 {
        writer.send(vec![submitted(n, "f"), finished(n, true, 1)]);
    }
    writer.record(submitted(1000, "f"));
    wait_until("degraded", || writer.health() != Health::Ok);
    let Health::Degraded(why) = writer.health() else {
        unreachable!()
    };
    assert!(why.contains("locked"), "{why}");
    assert!(matches!(writer.flush(), Err(StoreError::Degraded(_))));
    // ... and not while it fails: the controller must not stop for a failing disk.
    assert_eq!(writer.backlog(), None);
    // Past the backlog bound (1000 records, 901 waiting), records are dropped and counted.
    writer.send((2000..2100).map(|n| submitted(n, "f")).collect());
    let c = writer.counters();
    assert_eq!(c.dropped_records, 100, "{c:?}");
    assert_eq!(c.backlog_records, 901, "{c:?}");
    assert!(c.write_errors >= 1);
    // Reads still work meanwhile.
    assert_eq!(reader.history(&HistoryFilter::default()).unwrap().len(), 1);
    other.execute_batch("ROLLBACK").unwrap();
    wait_until("resumed", || writer.health() == Health::Ok);
    writer.flush().unwrap();
    let stats = reader.stats().unwrap();
    assert_eq!(
        (stats[0].queued, stats[0].ok),
        (2, 450),
        "nothing queued was lost"
    );
    assert_eq!(writer.counters().backlog_records, 0);
    assert_eq!(writer.backlog(), Some((0, 1000)));
}

#[test]
fn past_the_backlog_bytes_payloads_are_dropped_and_the_record_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_in(dir.path());
    config.backlog_max_bytes = 10_000;
    let Store { writer, reader } = open(&config);
    writer.send(vec![submitted(1, "f"), submitted(2, "f")]);
    writer.flush().unwrap();
    let other = rusqlite::Connection::open(&config.path).unwrap();
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let big = Arc::new(vec![9u8; 8000]);
    writer.record(Record::finished(outcome(1, true, 1), T0, big.clone()));
    writer.record(Record::finished(outcome(2, true, 1), T0, big));
    assert_eq!(writer.counters().dropped_payloads, 1);
    assert_eq!(writer.counters().backlog_bytes, 8000);
    other.execute_batch("ROLLBACK").unwrap();
    wait_until("written", || writer.counters().backlog_records == 0);
    let one = reader.result(id(1)).unwrap().unwrap();
    assert_eq!(one.payload.map(|p| p.len()), Some(8000));
    let two = reader.result(id(2)).unwrap().unwrap();
    assert_eq!(two.payload, None);
    assert_eq!(two.record.result, PayloadState::Backlog);
    assert_eq!(two.record.result_size, Some(8000));
    assert_eq!(writer.counters().backlog_bytes, 0);
}

#[test]
fn a_store_that_is_off_discards_and_answers_disabled() {
    let Store { writer, reader } = open(&StoreConfig::none());
    writer.record(submitted(1, "f"));
    writer.flush().unwrap();
    assert!(matches!(
        reader.history(&HistoryFilter::default()),
        Err(StoreError::Disabled)
    ));
    assert_eq!(reader.lookup(&[id(1)]).unwrap(), vec![Lookup::Unknown]);
    assert_eq!(reader.recover().unwrap(), Recovery::default());
    assert_eq!(writer.purge(Purge::All).recv().unwrap().unwrap(), 0);
    assert_eq!(writer.health(), Health::Ok);
}

#[test]
fn the_memory_store_has_the_same_api() {
    let Store { writer, reader } = open(&StoreConfig::memory());
    writer.send(vec![
        submitted(1, "f"),
        finished(1, true, 3),
        submitted(2, "f"),
    ]);
    writer.flush().unwrap();
    let other = reader.try_clone().unwrap();
    assert_eq!(other.history(&HistoryFilter::default()).unwrap().len(), 2);
    assert_eq!(reader.recover().unwrap().unfinished.len(), 1);
    assert_eq!(reader.stats().unwrap()[0].ok, 1);
    assert!(writer.counters().db_bytes > 0);
}

#[test]
fn the_query_service_answers_tagged_queries_and_notifies() {
    let dir = tempfile::tempdir().unwrap();
    let Store { writer, reader } = open(&config_in(dir.path()));
    writer.send(vec![submitted(1, "f"), finished(1, true, 3)]);
    writer.flush().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let service = QueryService::spawn(reader.try_clone().unwrap(), move || {
        let _ = tx.send(());
    });
    service.ask(7, Query::Lookup(vec![id(1), id(2)])).unwrap();
    service.ask(8, Query::Stats).unwrap();
    rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let (tag, answer) = service.wait_answer(Duration::from_secs(5)).unwrap();
    assert_eq!(tag, 7);
    let Answer::Lookup(Ok(found)) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!(found[1], (id(2), Lookup::Unknown));
    assert!(matches!(found[0].1, Lookup::Finished { .. }));
    let (tag, answer) = service.wait_answer(Duration::from_secs(5)).unwrap();
    assert_eq!(tag, 8);
    assert!(matches!(answer, Answer::Stats(Ok(s)) if s[0].ok == 1));
    assert!(service.try_answer().is_none());
}

#[test]
fn handles_cross_threads() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Writer>();
    send_sync::<Reader>();
    send::<QueryService>();
}

#[test]
fn utc_stamps() {
    assert_eq!(utc_stamp(0), "19700101T000000Z");
    assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
    assert_eq!(utc_stamp(1_767_225_599), "20251231T235959Z");
}

// ---- Child processes: this test binary run again with CLUSTER_STORE_CHILD set. ----

const CHILD_ENV: &str = "CLUSTER_STORE_CHILD";

/// Runs a child role when this binary was started as a child; a plain run passes at once.
#[test]
fn child_role() {
    let Ok(role) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (role, path) = role.split_once(':').unwrap();
    let mut config = StoreConfig::new(path);
    config.commit_interval = Duration::from_millis(50);
    let Store {
        writer,
        reader: _reader,
    } = open(&config);
    match role {
        "hold" => {
            println!("CHILD opened");
        }
        "write" => {
            // 1000 tasks sent, then say so; then keep writing until killed.
            for n in 0..1000 {
                writer.send(vec![
                    submitted(n, "echo"),
                    started(n, 0),
                    finished(n, true, 1),
                ]);
            }
            println!("CHILD sent");
            let mut n = 1000;
            loop {
                writer.send(vec![submitted(n, "echo"), finished(n, true, 1)]);
                n += 1;
                if n % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
        _ => panic!("unknown role {role}"),
    }
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

struct Child(std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        // Stopped by pid (SIGKILL), and reaped.
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the child role `role` on `db` and waits for its line `CHILD <ready>`.
fn spawn_child(role: &str, db: &Path, ready: &str) -> Child {
    let mut child = Child(
        Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "tests::child_role",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, format!("{role}:{}", db.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    let out = std::io::BufReader::new(child.0.stdout.take().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        // The test harness prints the test's name on the same line first.
        if line.trim_end().ends_with(&format!("CHILD {ready}")) {
            return child;
        }
    }
    panic!("the child ({role}) exited before saying {ready:?}");
}

#[test]
fn a_database_held_by_another_process_is_refused_until_it_dies() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let mut child = spawn_child("hold", &config.path, "opened");
    let e = Store::open(&config).unwrap_err();
    match &e {
        StoreError::InUse { holder, .. } => assert_eq!(*holder, Some(child.0.id())),
        other => panic!("{other}"),
    }
    assert!(
        e.to_string().contains(&format!("pid {}", child.0.id())),
        "{e}"
    );
    // kill -9 leaves no stale lock behind.
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    open(&config);
}

#[test]
fn records_committed_before_kill_9_are_there_after() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let mut child = spawn_child("write", &config.path, "sent");
    // Longer than the child's commit interval (50 ms) plus a commit, while it goes on
    // writing: the kill lands in the middle of a batch.
    std::thread::sleep(Duration::from_millis(500));
    child.0.kill().unwrap();
    child.0.wait().unwrap();
    let Store { reader, .. } = open(&config);
    let found = reader
        .lookup(&(0..1000).map(id).collect::<Vec<_>>())
        .unwrap();
    let missing: Vec<usize> = found
        .iter()
        .enumerate()
        .filter(|(_, l)| !matches!(l, Lookup::Finished { .. }))
        .map(|(i, _)| i)
        .collect();
    assert!(
        missing.is_empty(),
        "tasks not finished after the kill: {missing:?}"
    );
    // The rest is consistent: the figures match the rows, and the file checks out.
    let stats = reader.stats().unwrap();
    let total = stats[0].ok + stats[0].queued;
    let rows = reader.history(&HistoryFilter::default()).unwrap().len() as u64;
    assert_eq!(total, rows);
    assert!(rows > 1000, "the child went on writing ({rows} records)");
    let conn = rusqlite::Connection::open(&config.path).unwrap();
    let check: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
}

// ---- Disk full, on a tiny tmpfs (needs root). ----

struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn a_full_disk_degrades_the_store_which_resumes_when_space_is_freed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: mounting a tiny tmpfs needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let fs = dir.path().join("fs");
    std::fs::create_dir(&fs).unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&fs)
        .status()
        .unwrap();
    if !status.success() {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    let mount = Mount(fs.clone());
    {
        let mut config = StoreConfig::new(fs.join("tasks.db"));
        config.commit_interval = Duration::from_millis(20);
        let Store { writer, reader } = open(&config);
        writer.record(submitted(0, "f"));
        writer.flush().unwrap();
        // Fill the rest of the file system.
        let filler = fs.join("filler");
        {
            use std::io::Write;
            let mut f = std::fs::File::create(&filler).unwrap();
            let block = vec![0u8; 4096];
            while f.write_all(&block).is_ok() {}
            let _ = f.sync_all();
        }
        // 200 tasks of 4 KiB each cannot fit.
        for n in 1..=200 {
            writer.send(vec![
                Record::submitted(call(n, "f"), ClientId(1), T0 + n, Arc::new(vec![1; 4096])),
                Record::finished(outcome(n, true, 1), T0 + n, Arc::new(vec![2; 4096])),
            ]);
        }
        wait_until("degraded", || writer.health() != Health::Ok);
        let Health::Degraded(why) = writer.health() else {
            unreachable!()
        };
        assert!(why.contains("disk full"), "{why}");
        assert!(writer.counters().write_errors >= 1);
        // Serving goes on: reads work.
        assert!(reader.result(id(0)).unwrap().is_some());
        std::fs::remove_file(&filler).unwrap();
        wait_until("resumed", || writer.health() == Health::Ok);
        writer.flush().unwrap();
        let found = reader
            .lookup(&(1..=200).map(id).collect::<Vec<_>>())
            .unwrap();
        assert!(
            found.iter().all(|l| matches!(l, Lookup::Finished {
                payload: Some(p), ..
            } if p.len() == 4096)),
            "every record written once space came back"
        );
        assert_eq!(writer.counters().dropped_records, 0);
    }
    drop(mount);
}
