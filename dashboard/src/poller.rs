//! The poller: a thread that asks the controller for its status and queue once a second and
//! publishes each [`Snapshot`] on a watch channel (the web server's event streams and
//! `cluster top` read it).
//!
//! It reconnects by itself: a poll that fails drops the client, and the next tick connects
//! afresh from the connection file, which a restarted controller has rewritten.
//!
//! Between polls it does not sleep but reads the controller's notifications (a
//! [`Subscriber`], which follows a restarted controller by itself) into the [`Feed`] that
//! each snapshot carries a view of.

use crate::feed::Feed;
use crate::snapshot::{History, Snapshot};
use client::{Client, ClientOptions, Subscriber};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How long one connect or request may take before the poll counts as failed.
const POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// A running poller; dropping it stops the thread (within one interval).
#[derive(Debug)]
pub struct Poller {
    rx: watch::Receiver<Arc<Snapshot>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Poller {
    /// Starts polling the controller named by the client connection file `file` every
    /// `interval`.
    pub fn spawn(file: PathBuf, interval: Duration) -> std::io::Result<Poller> {
        let (tx, rx) = watch::channel(Arc::new(Snapshot::empty()));
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("dashboard-poller".into())
            .spawn(move || poll_loop(&file, interval, &tx, &flag))?;
        Ok(Poller {
            rx,
            stop,
            thread: Some(thread),
        })
    }

    /// A receiver of the snapshots (the current one is there at once).
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    /// The latest snapshot.
    pub fn latest(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }
}

impl Drop for Poller {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn now_s() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn poll_loop(
    file: &std::path::Path,
    interval: Duration,
    tx: &watch::Sender<Arc<Snapshot>>,
    stop: &AtomicBool,
) {
    let mut history = History::new();
    let mut client: Option<Client> = None;
    let mut subscriber: Option<Subscriber> = None;
    let mut feed = Feed::new();
    let mut instance = None;
    let mut next = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if subscriber.is_none() {
            // The file may not be there yet (a controller starting): try again next time.
            subscriber = Subscriber::connect_file(file).ok();
        }
        let mut snapshot = match poll_once(file, &mut client) {
            Ok((status, queue)) => {
                let now = Some(status.controller.instance);
                if instance.is_some() && instance != now {
                    feed.on_restart();
                }
                instance = now;
                history.on_poll(now_s(), &status, &queue)
            }
            Err(e) => {
                client = None;
                history.on_error(now_s(), e)
            }
        };
        snapshot.feed = feed.view(snapshot.t);
        tx.send_replace(Arc::new(snapshot));
        next += interval;
        // Read notifications until the next poll, in short steps so that a dropped poller
        // stops soon.
        loop {
            let now = Instant::now();
            if stop.load(Ordering::Relaxed) || now >= next {
                break;
            }
            let step = (next - now).min(Duration::from_millis(100));
            match subscriber.as_mut().map(|s| s.next(step)) {
                Some(Ok(Some(note))) => feed.on_notification(now_s(), note),
                Some(Ok(None)) => {}
                Some(Err(e)) => {
                    tracing::debug!("notifications: {e}; subscribing again");
                    subscriber = None;
                }
                None => std::thread::sleep(step),
            }
        }
        // A poll that took longer than the interval does not make the next ones bunch up.
        next = next.max(Instant::now());
    }
}

fn poll_once(
    file: &std::path::Path,
    client: &mut Option<Client>,
) -> Result<(protocol::StatusReport, protocol::QueueStatus), String> {
    if client.is_none() {
        let options = ClientOptions {
            connect_timeout: POLL_TIMEOUT,
        };
        *client = Some(
            Client::connect_file_with(file, options)
                .map_err(|e| format!("cannot reach the controller ({}): {e}", file.display()))?,
        );
    }
    let Some(c) = client.as_ref() else {
        return Err("no client".into());
    };
    let status = c
        .status()
        .map_err(|e| format!("status request failed: {e}"))?;
    let queue = c
        .queue_status()
        .map_err(|e| format!("queue request failed: {e}"))?;
    Ok((status, queue))
}
