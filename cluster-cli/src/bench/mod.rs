//! `cluster bench`: figures measured on throw-away local clusters.
//!
//! * [`tasks`]: start-up, round trip and task rates at two hwm settings (`bench tasks`, what
//!   `cluster bench` alone runs);
//! * [`failover`]: how fast the controller notices engines that die or stop, and a
//!   controller killed mid-map (`bench failover`);
//! * [`scale`]: many simulated engines ([`engine::sim`]) on a real controller
//!   (`bench scale N`);
//! * [`commands`]: `cluster map -- true` against `xargs -P` (`bench commands N,…`);
//! * [`objects`]: shared queues and locks: put→get round trip, items/s with one producer and
//!   two consumers, lock acquire + release (`bench objects`);
//! * [`events`]: task rates with the controller's activity feed on and off
//!   (`bench tasks --events-cost ROUNDS`);
//! * [`store`]: task rates with and without the SQLite task store, the controller's memory
//!   as records pile up, and a restart on a big database (`bench store`).
//!
//! Each returns a report that serialises to the `--json` line and renders as a table.

pub mod commands;
pub mod events;
pub mod failover;
pub mod objects;
pub mod scale;
pub mod store;
pub mod tasks;

use crate::launch::{self, EngineLaunch, EngineProgram, StartReport};
use anyhow::{bail, Context as _, Result};
use client::Client;
use profiles::Profile;
use protocol::{EngineId, Notification, PROTOCOL_VERSION};
use security::ConnectionInfo;
use serde::Serialize;
use std::time::{Duration, Instant};
use transport::{poll, Context, Encryption, Kind, Socket, Waitable};

/// A cluster in a temporary profile folder, stopped when dropped.
#[derive(Debug)]
pub struct TempCluster {
    _dir: tempfile::TempDir,
    /// Its profile.
    pub profile: Profile,
    /// What `start` reported.
    pub report: StartReport,
}

impl TempCluster {
    /// Starts a controller and `engines` engines with these setting overrides.
    pub fn start(engines: usize, overrides: &[(&str, String)]) -> Result<TempCluster> {
        let dir = tempfile::Builder::new()
            .prefix("cluster-demo-")
            .tempdir()
            .context("cannot make a temporary folder")?;
        let profile = Profile::in_root(dir.path(), "demo")?;
        let launch = EngineLaunch {
            count: engines,
            program: EngineProgram::Settings,
            timeout: Duration::from_secs(30),
        };
        let report = launch::start(&profile, overrides, &launch)?;
        Ok(TempCluster {
            _dir: dir,
            profile,
            report,
        })
    }

    /// A client of this cluster.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::connect_file(self.profile.client_file())?)
    }

    /// Tasks/s of a `noop` map of `n` one-item tasks (`chunksize(1)`), on a new client.
    pub fn one_item_rate(&self, n: usize) -> Result<f64> {
        self.noop_map_rate(n, Some(1))
    }

    /// Items/s of an auto-chunked `noop` map of `n` items, on a new client.
    pub fn chunked_rate(&self, n: usize) -> Result<f64> {
        self.noop_map_rate(n, None)
    }

    fn noop_map_rate(&self, n: usize, chunksize: Option<usize>) -> Result<f64> {
        let client = self.client()?;
        let mut view = client.load_balanced_view();
        if let Some(c) = chunksize {
            view = view.chunksize(c);
        }
        let t = Instant::now();
        let out: Vec<()> = view
            .map("noop", std::iter::repeat_n((), n))?
            .get(Some(Duration::from_secs(600)))?;
        Ok(out.len() as f64 / t.elapsed().as_secs_f64())
    }
}

impl Drop for TempCluster {
    fn drop(&mut self) {
        if let Err(e) = launch::stop(&self.profile, Duration::from_secs(3)) {
            eprintln!("warning: stopping the temporary cluster: {e:#}");
        }
    }
}

/// A subscriber of a controller's notifications.
pub(crate) struct Notices {
    sock: Socket,
    _ctx: Context,
}

impl Notices {
    pub(crate) fn connect(client_file: &std::path::Path) -> Result<Notices> {
        let (info, key) = ConnectionInfo::load(client_file, PROTOCOL_VERSION, &["notify"])?;
        let address = info.addresses.notify.clone().unwrap_or_default();
        let ctx = Context::new();
        let mut sock = Socket::new(&ctx, Kind::Sub, &key, None)?;
        sock.set_encryption(Encryption::endpoint(info.encrypted()));
        sock.connect(&address)?;
        // A subscriber hears only what is published after it has joined.
        std::thread::sleep(Duration::from_millis(300));
        Ok(Notices { sock, _ctx: ctx })
    }

    /// Waits for a notification matching `want`; returns when it arrived and the match.
    fn wait_for<T>(
        &mut self,
        timeout: Duration,
        mut want: impl FnMut(&Notification) -> Option<T>,
    ) -> Result<(Instant, T)> {
        let deadline = Instant::now() + timeout;
        loop {
            while let Some(got) = self.sock.recv::<Notification>()? {
                if let Some(found) = want(&got.msg) {
                    return Ok((Instant::now(), found));
                }
            }
            let now = Instant::now();
            if now >= deadline {
                bail!("no such notification within {timeout:?}");
            }
            let ms = (deadline - now).as_millis().max(1) as i64;
            poll(&[Waitable::Socket(&self.sock)], ms)?;
        }
    }

    pub(crate) fn left(&mut self, id: EngineId, timeout: Duration) -> Result<(Instant, String)> {
        self.wait_for(timeout, |n| match n {
            Notification::EngineLeft { id: i, reason } if *i == id => Some(reason.clone()),
            _ => None,
        })
    }

    pub(crate) fn joined(&mut self, id: EngineId, timeout: Duration) -> Result<Instant> {
        self.wait_for(timeout, |n| match n {
            Notification::EngineJoined(info) if info.id == id => Some(()),
            _ => None,
        })
        .map(|(t, ())| t)
    }
}

pub(crate) fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) on an engine process this benchmark started.
    unsafe {
        libc::kill(pid as i32, sig);
    }
}

pub(crate) fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Median, minimum and maximum of some samples.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Spread {
    /// Samples.
    pub n: usize,
    /// Median.
    pub median: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
}

impl Spread {
    pub(crate) fn of(mut v: Vec<f64>) -> Spread {
        if v.is_empty() {
            return Spread::default();
        }
        v.sort_by(f64::total_cmp);
        Spread {
            n: v.len(),
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "median {:.1} ms (min {:.1}, max {:.1}, {} runs)",
            self.median, self.min, self.max, self.n
        )
    }
}

/// The `p`-quantile of sorted samples (nearest rank).
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}
