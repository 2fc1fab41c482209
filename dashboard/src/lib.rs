//! The dashboard: a client of the controller that shows its engines, queue and throughput,
//! in a browser ([`server`]) or a terminal ([`top`]).
//!
//! Data flows one way: the [`poller`] thread asks the controller for its status and queue
//! report once a second through [`client::Client`], [`snapshot::History`] turns the counters
//! into rates and keeps the last minutes; between polls the same thread reads the
//! controller's activity feed ([`client::Subscriber`]: task counts, samples of finished
//! tasks, failures, maps in flight) into a [`feed::Feed`]; and each [`snapshot::Snapshot`]
//! goes out on a watch channel to the event streams of the pages and to `cluster top`. Nothing here runs
//! inside the controller, and nothing changes the cluster: the page is read-only.

pub mod feed;
pub mod poller;
pub mod server;
pub mod snapshot;
pub mod top;

pub use poller::Poller;
pub use server::{new_token, Server};
pub use snapshot::{History, Snapshot};

use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// What a running dashboard writes to the profile's `run/dashboard.json` (mode 0600: it
/// holds the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The page's URL, with the token.
    pub url: String,
    /// The token.
    pub token: String,
    /// Process id of the dashboard.
    pub pid: u32,
    /// Started by `cluster start` (`dashboard = true`), so `cluster stop` stops it; one
    /// started by hand outlives controller restarts.
    #[serde(default)]
    pub by_start: bool,
}

/// `run/dashboard.json` under the profile folder `profile_dir`'s run folder `run_dir`.
pub fn run_file(run_dir: &Path) -> PathBuf {
    run_dir.join("dashboard.json")
}

impl RunRecord {
    /// Writes the record to `path`, readable by its owner only.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt as _;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.write_all(serde_json::to_string_pretty(self)?.as_bytes())
    }

    /// Reads the record at `path`.
    pub fn read(path: &Path) -> std::io::Result<RunRecord> {
        Ok(serde_json::from_slice(&std::fs::read(path)?)?)
    }
}
