//! What can go wrong opening, writing and reading the store.

use std::path::PathBuf;

/// Why the store could not be opened, written or read.
///
/// Errors that refuse a database at open ([`StoreError::InUse`], [`StoreError::Locked`],
/// [`StoreError::Corrupt`], [`StoreError::Unreadable`], [`StoreError::NotOurs`],
/// [`StoreError::NewerSchema`]) name the file and what to do; they never go away by retrying
/// alone, except `InUse` and `Locked` once the other program has stopped.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A setting has a value that does not parse. Not retryable: fix the setting.
    #[error("bad value {value:?} for {setting}: {reason}")]
    Setting {
        /// The setting's name (`retention`, `max_db_mb`, …).
        setting: String,
        /// The value given.
        value: String,
        /// What is wrong and what a good value looks like.
        reason: String,
    },
    /// Another controller holds the database's lock file (the same profile is running).
    /// Retryable once that controller has stopped.
    #[error(
        "the task database {path} is in use by another controller{}: stop it first \
         (`cluster stop`), or give this one another profile or `db_path`",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    InUse {
        /// The database file.
        path: PathBuf,
        /// Process id written in the lock file by its holder, when readable.
        holder: Option<u32>,
    },
    /// Another program (not a controller: a `sqlite3` shell, a backup tool) holds a lock on
    /// the database itself. Retryable once it lets go.
    #[error(
        "the task database {path} is locked by another program (a sqlite3 shell or a backup?): \
         close it and start again"
    )]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// The file is not a readable SQLite database, or SQLite found it damaged. Not retryable:
    /// start with `--db-reset`, which moves the file aside (`<file>.corrupt-<time>`) and
    /// starts an empty one.
    #[error(
        "the task database {path} is corrupt ({detail}): start with --db-reset to move it aside \
         (kept as {path}.corrupt-<time>) and begin an empty one"
    )]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What SQLite said.
        detail: String,
    },
    /// The file or its folder cannot be read or created (permissions, a folder in the way, a
    /// read-only file system). Not retryable until that is fixed.
    #[error("cannot open the task database {path}: {detail}: check the path and its permissions, or set db_path elsewhere")]
    Unreadable {
        /// The database file (or its folder).
        path: PathBuf,
        /// What the system said.
        detail: String,
    },
    /// A SQLite database that is not a cluster task store (no schema version table).
    #[error(
        "{path} is a SQLite database but not a cluster task store: set db_path to another \
         file, or start with --db-reset to move it aside"
    )]
    NotOurs {
        /// The database file.
        path: PathBuf,
    },
    /// The database was written by a newer cluster with a schema this one does not know.
    #[error(
        "the task database {path} has schema version {found}, newer than this program's \
         {supported}: run the newer cluster, or start with --db-reset to move it aside"
    )]
    NewerSchema {
        /// The database file.
        path: PathBuf,
        /// Version found in the file.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// Writing is failing (disk full, I/O error); the records are kept and retried.
    /// Retryable: the writer resumes by itself.
    #[error("the task store cannot write ({0}); records are kept in memory and retried")]
    Degraded(String),
    /// Any other SQLite error on a query or a write. Retrying may help if it was transient.
    #[error("task database {path}: {source}")]
    Sqlite {
        /// The database file (`:memory:` for the in-memory kind).
        path: PathBuf,
        /// What SQLite said.
        #[source]
        source: rusqlite::Error,
    },
    /// The store is off (`db = "none"`): there is no history to query.
    #[error(
        "the task store is off (db = \"none\"): no history is kept; set db = \"sqlite\" to keep it"
    )]
    Disabled,
    /// The writer thread has stopped (it panicked or was closed). Not retryable.
    #[error("the task store's writer has stopped")]
    Closed,
}

impl StoreError {
    /// Turns a SQLite error met on `path` into the error that says what to do about it.
    pub(crate) fn from_sqlite(path: &std::path::Path, e: rusqlite::Error) -> StoreError {
        use rusqlite::ErrorCode as C;
        let path = path.to_path_buf();
        match e.sqlite_error_code() {
            Some(C::NotADatabase | C::DatabaseCorrupt) => StoreError::Corrupt {
                path,
                detail: e.to_string(),
            },
            Some(C::DatabaseBusy | C::DatabaseLocked) => StoreError::Locked { path },
            Some(C::CannotOpen | C::PermissionDenied | C::ReadOnly) => StoreError::Unreadable {
                path,
                detail: e.to_string(),
            },
            _ => StoreError::Sqlite { path, source: e },
        }
    }
}
