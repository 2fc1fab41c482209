//! The submitted-task ledger: tasks a process sends and then forgets, to be waited for later,
//! possibly by another process. `cluster submit` and `cluster wait` are built on it; a Rust
//! program gets the same with [`Ledger`].
//!
//! A ledger is a file of JSON lines (a profile's `run/submitted.jsonl` for the CLI), one
//! [`LedgerEntry`] a task: its id, a line describing it, the controller instance that took
//! it, and the request itself. Results come back from the controller's result store
//! ([`ResultStore`]), from any process. A controller that restarted has forgotten the tasks
//! it had queued; [`Ledger::wait`] submits those again, exactly as recorded (same ids), and
//! says which.
//!
//! ```no_run
//! use cluster_client::{Client, Command, Ledger, ResultStore};
//! use std::time::Duration;
//!
//! let client = Client::connect_env()?;
//! let ledger = Ledger::new("/tmp/my-tasks.jsonl");
//! let view = client.load_balanced_view();
//! ledger.submit_command(&client, &view, Command::new("make").arg("test"), "make test")?;
//! // … later, in this process or another one:
//! let mut store = ResultStore::open(client.connection_file(), Duration::from_secs(10))?;
//! let found = ledger.wait(&mut store, &client, &ledger.ids()?, true, None)?;
//! println!("{} done, {} still running", found.done.len(), found.pending.len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::{Client, Command, Error, LoadBalancedView, ResultStore};
use protocol::{TaskId, TaskOutcome, TaskRequest, Work};
use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What can go wrong with a ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// Talking to the controller failed (see [`Error::is_retryable`]).
    #[error(transparent)]
    Client(#[from] Error),
    /// The ledger file cannot be read or written; retrying helps only once the file's
    /// folder or permissions are fixed.
    #[error("cannot {action} the task ledger {path}: {error}")]
    Io {
        /// `read` or `record a task in`.
        action: &'static str,
        /// The ledger file.
        path: PathBuf,
        /// The error (in the message, so not also a `source()`: a printed chain says it once).
        error: std::io::Error,
    },
}

impl LedgerError {
    /// The client error inside, if this is one.
    pub fn client_error(&self) -> Option<&Error> {
        match self {
            LedgerError::Client(e) => Some(e),
            LedgerError::Io { .. } => None,
        }
    }
}

/// One line of a ledger.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LedgerEntry {
    /// Task id as printed (`CLIENT:SEQ`).
    pub id: String,
    /// A line describing the task (the CLI writes the command line).
    pub command: String,
    /// When it was submitted, microseconds since the epoch.
    pub submitted_us: u64,
    /// The controller's instance then (0 in records older than this field).
    #[serde(default)]
    pub instance: u64,
    /// The request as submitted, to submit again to a controller that restarted and forgot
    /// it (none in records older than this field).
    #[serde(default)]
    pub request: Option<TaskRequest>,
}

/// What [`Ledger::wait`] and [`lookup`] found.
#[derive(Debug, Default)]
pub struct Found {
    /// Finished tasks in the order asked: outcome and result payload (empty for failures).
    pub done: Vec<(TaskOutcome, Vec<u8>)>,
    /// Tasks still queued or running when the wait ended.
    pub pending: Vec<TaskId>,
    /// Ids the controller does not know (purged, or from an earlier controller and not in
    /// the ledger to submit again).
    pub unknown: Vec<TaskId>,
    /// Tasks a restarted controller had forgotten, submitted again from the ledger.
    pub resubmitted: Vec<TaskId>,
}

/// A file of submitted tasks; see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ledger {
    path: PathBuf,
}

impl Ledger {
    /// The ledger in `path` (made by the first task recorded).
    pub fn new(path: impl Into<PathBuf>) -> Ledger {
        Ledger { path: path.into() }
    }

    /// The ledger `cluster submit` writes for a profile (`run/submitted.jsonl`).
    pub fn of_profile(profile: &profiles::Profile) -> Ledger {
        Ledger::new(profile.submitted_file())
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Submits `command` through `view`, waits until the controller has it, and records it
    /// under `label`; returns its id. Once this returns, the caller may exit: the task runs
    /// and its result waits in the controller's store.
    pub fn submit_command(
        &self,
        client: &Client,
        view: &LoadBalancedView,
        command: impl Into<Command>,
        label: &str,
    ) -> Result<TaskId, LedgerError> {
        let command = command.into();
        let mut options = view.options().clone();
        if let Some(limit) = command.time_limit() {
            options.run_timeout_ms = Some(limit.as_millis().min(u128::from(u64::MAX)) as u64);
        }
        let spec = command.spec().clone();
        let id = view.command(command)?.id();
        // The submit and this request travel on the same connection, in order: once the
        // status answer is here, the controller has the task.
        let status = client.status()?;
        self.append(&LedgerEntry {
            id: id.to_string(),
            command: label.to_owned(),
            submitted_us: transport::now_us(),
            instance: status.controller.instance,
            request: Some(TaskRequest {
                id,
                work: Work::Command(spec),
                options,
            }),
        })?;
        Ok(id)
    }

    /// Appends one entry.
    pub fn append(&self, entry: &LedgerEntry) -> Result<(), LedgerError> {
        self.append_line(entry)
    }

    fn append_line(&self, value: &impl serde::Serialize) -> Result<(), LedgerError> {
        let io = |error| LedgerError::Io {
            action: "record a task in",
            path: self.path.clone(),
            error,
        };
        let mut line = serde_json::to_vec(value).map_err(|e| io(e.into()))?;
        line.push(b'\n');
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(io)?;
        // One write of the whole line: `cluster submit`s run side by side (`xargs -P`) append
        // to the same file, and with O_APPEND each write lands whole at the end, where a
        // line written in pieces could interleave with another's.
        file.write_all(&line).map_err(io)
    }

    /// Every entry not forgotten (none when the file does not exist). A line cut by a crash
    /// mid-write is skipped rather than blocking every later wait.
    pub fn entries(&self) -> Result<Vec<LedgerEntry>, LedgerError> {
        let (entries, forgotten) = self.read()?;
        Ok(entries
            .into_iter()
            .filter(|e| !forgotten.contains(&e.id))
            .collect())
    }

    /// Forgets `ids`: they are no longer [`Ledger::entries`] (what `cluster wait` does with
    /// the tasks it has reported, so the next wait does not report them again). Appends a
    /// line, so that a process recording a task at the same time loses nothing.
    pub fn forget(&self, ids: &[TaskId]) -> Result<(), LedgerError> {
        if ids.is_empty() {
            return Ok(());
        }
        let forget: Vec<String> = ids.iter().map(ToString::to_string).collect();
        self.append_line(&serde_json::json!({ "forget": forget }))
    }

    /// All entries ever recorded, and the ids forgotten since.
    fn read(&self) -> Result<(Vec<LedgerEntry>, HashSet<String>), LedgerError> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Line {
            Entry(Box<LedgerEntry>),
            Forget { forget: Vec<String> },
        }
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
            Err(error) => {
                return Err(LedgerError::Io {
                    action: "read",
                    path: self.path.clone(),
                    error,
                })
            }
        };
        let mut entries = Vec::new();
        let mut forgotten = HashSet::new();
        for line in text.lines() {
            match serde_json::from_str(line) {
                Ok(Line::Entry(e)) => entries.push(*e),
                Ok(Line::Forget { forget }) => forgotten.extend(forget),
                Err(_) => {}
            }
        }
        Ok((entries, forgotten))
    }

    /// The ids of every entry, in the order submitted.
    pub fn ids(&self) -> Result<Vec<TaskId>, LedgerError> {
        Ok(self
            .entries()?
            .iter()
            .filter_map(|e| e.id.parse().ok())
            .collect())
    }

    /// The label of each recorded task (forgotten ones too), by id.
    pub fn labels(&self) -> Result<HashMap<TaskId, String>, LedgerError> {
        Ok(self
            .read()?
            .0
            .into_iter()
            .filter_map(|e| Some((e.id.parse().ok()?, e.command)))
            .collect())
    }

    /// Submits again the tasks among `unknown` that were recorded for another controller
    /// than the one running now: it restarted and forgot them (their results, if any came
    /// in meanwhile, are kept and answer at once). Tasks recorded for this very controller
    /// stay unknown: they were purged. Returns the ids submitted again.
    pub fn resubmit_forgotten(
        &self,
        client: &Client,
        unknown: &[TaskId],
    ) -> Result<Vec<TaskId>, LedgerError> {
        if unknown.is_empty() {
            return Ok(Vec::new());
        }
        let now = client.status()?.controller.instance;
        let unknown: HashSet<String> = unknown.iter().map(ToString::to_string).collect();
        let requests: Vec<TaskRequest> = self
            .entries()?
            .into_iter()
            .filter(|e| e.instance != 0 && e.instance != now && unknown.contains(&e.id))
            .filter_map(|e| e.request)
            .collect();
        if requests.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<TaskId> = requests.iter().map(|r| r.id).collect();
        let payloads = vec![Vec::new(); requests.len()];
        client.submit_as_is(requests, payloads)?;
        Ok(ids)
    }

    /// Looks up `ids` (see [`lookup`]), first submitting again the recorded tasks a
    /// restarted controller forgot (listed in [`Found::resubmitted`]).
    pub fn wait(
        &self,
        store: &mut ResultStore,
        client: &Client,
        ids: &[TaskId],
        wait: bool,
        timeout: Option<Duration>,
    ) -> Result<Found, LedgerError> {
        let first = lookup(store, ids, false, None)?;
        let resubmitted = self.resubmit_forgotten(client, &first.unknown)?;
        let found = if wait || !resubmitted.is_empty() {
            lookup(store, ids, wait, timeout)?
        } else {
            first
        };
        Ok(Found {
            resubmitted,
            ..found
        })
    }
}

/// Looks up `ids` in the controller's result store and, with `wait`, polls (backing off
/// from 5 to 200 ms) until none is pending or `timeout` passes.
pub fn lookup(
    store: &mut ResultStore,
    ids: &[TaskId],
    wait: bool,
    timeout: Option<Duration>,
) -> Result<Found, Error> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut found: HashMap<TaskId, (TaskOutcome, Vec<u8>)> = HashMap::new();
    let mut unknown = Vec::new();
    let mut left: Vec<TaskId> = ids.to_vec();
    let mut pause = Duration::from_millis(5);
    loop {
        let answer = store.fetch(&left)?;
        for (outcome, payload) in answer.done {
            found.insert(outcome.id, (outcome, payload));
        }
        unknown.extend(answer.unknown);
        left = answer.pending;
        if left.is_empty() || !wait || deadline.is_some_and(|d| Instant::now() >= d) {
            break;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(200));
    }
    Ok(Found {
        done: ids.iter().filter_map(|id| found.remove(id)).collect(),
        pending: left,
        unknown,
        resubmitted: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: TaskId, instance: u64) -> LedgerEntry {
        LedgerEntry {
            id: id.to_string(),
            command: format!("echo {}", id.0),
            submitted_us: 1,
            instance,
            request: None,
        }
    }

    #[test]
    fn entries_round_trip_and_cut_lines_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::new(dir.path().join("submitted.jsonl"));
        assert!(ledger.entries().unwrap().is_empty());
        let a = TaskId::new(protocol::ClientId(1), 1);
        let b = TaskId::new(protocol::ClientId(1), 2);
        ledger.append(&entry(a, 7)).unwrap();
        // A crash in the middle of a write leaves half a line.
        std::fs::OpenOptions::new()
            .append(true)
            .open(ledger.path())
            .unwrap()
            .write_all(b"{\"id\":\"1:")
            .unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(ledger.path())
            .unwrap()
            .write_all(b"\n")
            .unwrap();
        ledger.append(&entry(b, 7)).unwrap();
        assert_eq!(ledger.entries().unwrap(), [entry(a, 7), entry(b, 7)]);
        assert_eq!(ledger.ids().unwrap(), [a, b]);
        assert_eq!(
            ledger.labels().unwrap()[&b],
            "echo ".to_owned() + &b.0.to_string()
        );
        ledger.forget(&[a]).unwrap();
        assert_eq!(ledger.ids().unwrap(), [b]);
        assert!(ledger.labels().unwrap().contains_key(&a));
    }

    #[test]
    fn an_unwritable_ledger_names_its_file() {
        let ledger = Ledger::new("/nonexistent-folder/submitted.jsonl");
        let err = ledger.append(&entry(TaskId(1), 0)).unwrap_err().to_string();
        assert!(err.contains("/nonexistent-folder/submitted.jsonl"), "{err}");
    }

    /// Regression: the ledger's I/O error was in its message and again its `source()`.
    #[test]
    fn an_unreadable_ledger_says_why_once() {
        let dir = tempfile::tempdir().unwrap();
        let err = Ledger::new(dir.path()).entries().unwrap_err();
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(
            err.to_string(),
            format!(
                "cannot read the task ledger {}: Is a directory (os error 21)",
                dir.path().display()
            )
        );
    }
}
