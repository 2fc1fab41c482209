//! The database layout, its version, and opening a connection with the right settings.

use crate::StoreError;
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use std::path::Path;
use std::time::Duration;

/// Version of the layout below. A file with a newer one is refused; an older one is brought
/// up to date by [`MIGRATIONS`] in one transaction.
pub(crate) const SCHEMA_VERSION: i64 = 1;

/// The layout of version 1. Integers are SQLite's 64-bit ones: task ids keep their bits
/// (client in the top 24, sequence in the low 40), times are µs since the epoch.
const SCHEMA_V1: &str = "
CREATE TABLE schema_version (
    version     INTEGER NOT NULL,
    applied_us  INTEGER NOT NULL
);
-- One row a task, written at submission and updated as it starts and ends.
CREATE TABLE tasks (
    id             INTEGER PRIMARY KEY,
    client         INTEGER NOT NULL,
    kind           INTEGER NOT NULL,   -- 0 call, 1 map, 2 command, -1 unknown
    function       TEXT NOT NULL,      -- function name, or the program of a command
    command        BLOB,               -- msgpack CommandSpec of a command
    options        BLOB,               -- msgpack TaskOptions; NULL when default
    state          INTEGER NOT NULL,   -- 0 queued, 1 running, 2 ok, 3 failed
    submitted_us   INTEGER NOT NULL,
    started_us     INTEGER,
    completed_us   INTEGER,
    elapsed_us     INTEGER,
    engine         INTEGER,
    error_kind     TEXT,               -- ErrorKind in snake_case, as on the wire
    error_message  TEXT,
    error_engine   INTEGER,
    argument_size  INTEGER NOT NULL,
    argument       BLOB,               -- kept while unfinished (for a restart)
    argument_state INTEGER NOT NULL,   -- PayloadState: 0 kept, 1 too large, 2 backlog, 3 absent
    result_size    INTEGER,
    result         BLOB,
    result_state   INTEGER NOT NULL,   -- PayloadState
    acked_us       INTEGER
);
-- History in submission order, --since, and retention by age.
CREATE INDEX tasks_submitted ON tasks(submitted_us);
-- Unfinished tasks (recovery), and failed ones (--status failed): small partial indexes.
CREATE INDEX tasks_unfinished ON tasks(state) WHERE state < 2;
CREATE INDEX tasks_failed ON tasks(submitted_us) WHERE state = 3;
-- Kept by the writer in the transaction of each batch, so that `cluster status` never scans.
CREATE TABLE function_stats (
    function   TEXT PRIMARY KEY,
    queued     INTEGER NOT NULL,
    running    INTEGER NOT NULL,
    ok         INTEGER NOT NULL,
    failed     INTEGER NOT NULL,
    histogram  BLOB NOT NULL           -- run times of the finished records (see hist.rs)
) WITHOUT ROWID;
";

/// `MIGRATIONS[i]` brings version `i + 1` to `i + 2`. None yet: version 1 is the first.
const MIGRATIONS: &[&str] = &[];

/// Settings of every connection: WAL (readers never block the writer), commits that survive
/// a crash of the process (`synchronous = NORMAL` in WAL mode: a power cut may lose the last
/// commits but never corrupts), a bounded WAL file, and a 4 MiB page cache: the writer only
/// appends and updates recent rows (the right edges of the table and its indexes), and every
/// MiB of cache is controller memory once the database is larger than it.
fn configure(conn: &Connection, path: &Path, busy: Duration) -> Result<(), StoreError> {
    let err = |e| StoreError::from_sqlite(path, e);
    conn.busy_timeout(busy).map_err(err)?;
    // Must precede the first table of a new file; a no-op on an existing one.
    conn.execute_batch("PRAGMA auto_vacuum = INCREMENTAL;")
        .map_err(err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(err)?;
    if !mode.eq_ignore_ascii_case("wal") && !mode.eq_ignore_ascii_case("memory") {
        return Err(StoreError::Unreadable {
            path: path.to_path_buf(),
            detail: format!("cannot switch the journal to WAL (it stays {mode:?})"),
        });
    }
    conn.execute_batch(
        "PRAGMA synchronous = NORMAL;
         PRAGMA journal_size_limit = 67108864;
         PRAGMA cache_size = -4096;
         PRAGMA foreign_keys = OFF;",
    )
    .map_err(err)?;
    Ok(())
}

/// Opens (creating when missing) the database at `path` and checks or creates its layout.
/// The caller holds the lock file.
pub(crate) fn open_file(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    if path.is_dir() {
        return Err(StoreError::Unreadable {
            path: path.to_path_buf(),
            detail: "it is a folder".into(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::from_sqlite(path, e))?;
    configure(&conn, path, busy)?;
    prepare(&conn, path)?;
    Ok(conn)
}

/// Another connection to a database already opened (and checked) by [`open_file`], for
/// queries only.
pub(crate) fn open_reader(path: &Path, busy: Duration) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::from_sqlite(path, e))?;
    conn.busy_timeout(busy)
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -4096;")
        .map_err(|e| StoreError::from_sqlite(path, e))?;
    Ok(conn)
}

/// An in-memory database with the layout.
pub(crate) fn open_memory() -> Result<Connection, StoreError> {
    let path = Path::new(":memory:");
    let conn = Connection::open_in_memory().map_err(|e| StoreError::from_sqlite(path, e))?;
    prepare(&conn, path)?;
    Ok(conn)
}

/// Creates the layout in an empty database, migrates an older one, refuses a newer one or a
/// foreign one. Runs in an IMMEDIATE transaction, which also proves that no other program
/// holds a write lock on the file.
fn prepare(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let err = |e| StoreError::from_sqlite(path, e);
    conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let result = (|| {
        let tables: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table'",
                [],
                |r| r.get(0),
            )
            .map_err(err)?;
        let has_version: bool = conn
            .query_row(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                [],
                |_| Ok(()),
            )
            .optional()
            .map_err(err)?
            .is_some();
        if tables == 0 {
            conn.execute_batch(SCHEMA_V1).map_err(err)?;
            conn.execute(
                "INSERT INTO schema_version (version, applied_us) VALUES (?1, ?2)",
                (SCHEMA_VERSION, crate::now_us() as i64),
            )
            .map_err(err)?;
            return Ok(());
        }
        if !has_version {
            return Err(StoreError::NotOurs {
                path: path.to_path_buf(),
            });
        }
        let found: i64 = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| {
                r.get::<_, Option<i64>>(0)
            })
            .map_err(err)?
            .unwrap_or(0);
        if found > SCHEMA_VERSION {
            return Err(StoreError::NewerSchema {
                path: path.to_path_buf(),
                found,
                supported: SCHEMA_VERSION,
            });
        }
        if found < 1 {
            return Err(StoreError::Corrupt {
                path: path.to_path_buf(),
                detail: "its schema_version table is empty".into(),
            });
        }
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(found as usize - 1) {
            conn.execute_batch(sql).map_err(err)?;
            conn.execute(
                "INSERT INTO schema_version (version, applied_us) VALUES (?1, ?2)",
                (i as i64 + 2, crate::now_us() as i64),
            )
            .map_err(err)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => conn.execute_batch("COMMIT").map_err(err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_file_gets_the_layout_and_its_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let conn = open_file(&path, Duration::from_millis(100)).unwrap();
        let v: i64 = conn
            .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, SCHEMA_VERSION);
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
        let vacuum: i64 = conn
            .query_row("PRAGMA auto_vacuum", [], |r| r.get(0))
            .unwrap();
        assert_eq!(vacuum, 2, "incremental");
        drop(conn);
        // Opening again checks and keeps it.
        open_file(&path, Duration::from_millis(100)).unwrap();
    }

    #[test]
    fn a_newer_or_foreign_database_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tasks.db");
        let conn = open_file(&path, Duration::from_millis(100)).unwrap();
        conn.execute("INSERT INTO schema_version VALUES (99, 0)", [])
            .unwrap();
        drop(conn);
        let e = open_file(&path, Duration::from_millis(100)).unwrap_err();
        assert!(
            matches!(e, StoreError::NewerSchema { found: 99, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("--db-reset"), "{e}");

        let other = dir.path().join("other.db");
        let conn = Connection::open(&other).unwrap();
        conn.execute_batch("CREATE TABLE photos (x)").unwrap();
        drop(conn);
        let e = open_file(&other, Duration::from_millis(100)).unwrap_err();
        assert!(matches!(e, StoreError::NotOurs { .. }), "{e}");
        assert!(e.to_string().contains("other.db"), "{e}");
    }
}
