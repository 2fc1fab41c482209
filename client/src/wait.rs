//! Waiting for many handles at once, like `concurrent.futures.wait` and `as_completed`.
//!
//! Both helpers work on anything that is a [`Completion`]: [`crate::AsyncResult`],
//! [`crate::AsyncMapResult`], references to them, `(key, handle)` pairs (so that a caller
//! gets its own key back with each finished handle), and `&dyn Completion` for mixed lists.
//! They register a callback on each handle instead of polling, so waiting on ten thousand
//! handles costs ten thousand callbacks, not ten thousand wake-ups per check.

use crate::cell::deadline;
use crate::error::Error;
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Something that finishes once: a task handle, a map handle, or a pair holding one.
pub trait Completion {
    /// True once it has finished (successfully or not).
    fn ready(&self) -> bool;
    /// `Some(true)` finished successfully, `Some(false)` finished with an error, `None` while
    /// pending.
    fn successful(&self) -> Option<bool>;
    /// Runs `f` once it has finished: at once if it already has, else on the thread that
    /// finishes it (the client's I/O thread), so `f` must be quick and must not block.
    fn on_done(&self, f: Box<dyn FnOnce() + Send>);
}

impl<T: Completion + ?Sized> Completion for &T {
    fn ready(&self) -> bool {
        (**self).ready()
    }
    fn successful(&self) -> Option<bool> {
        (**self).successful()
    }
    fn on_done(&self, f: Box<dyn FnOnce() + Send>) {
        (**self).on_done(f)
    }
}

impl<T: Completion + ?Sized> Completion for Box<T> {
    fn ready(&self) -> bool {
        (**self).ready()
    }
    fn successful(&self) -> Option<bool> {
        (**self).successful()
    }
    fn on_done(&self, f: Box<dyn FnOnce() + Send>) {
        (**self).on_done(f)
    }
}

/// A handle with a key of the caller's (an index, a name), handed back with it.
impl<K, T: Completion> Completion for (K, T) {
    fn ready(&self) -> bool {
        self.1.ready()
    }
    fn successful(&self) -> Option<bool> {
        self.1.successful()
    }
    fn on_done(&self, f: Box<dyn FnOnce() + Send>) {
        self.1.on_done(f)
    }
}

/// When [`wait`] returns, as in `concurrent.futures`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ReturnWhen {
    /// As soon as any one has finished.
    FirstCompleted,
    /// As soon as any one has failed, or when all have finished.
    FirstException,
    /// When all have finished.
    #[default]
    AllCompleted,
}

/// What [`wait`] returns: the handles split by whether they had finished, each list in the
/// order the handles were given.
#[derive(Debug)]
pub struct Waited<T> {
    /// Finished handles.
    pub done: Vec<T>,
    /// Handles still pending.
    pub not_done: Vec<T>,
}

/// Indices of finished handles, pushed by their callbacks.
#[derive(Default)]
struct Signal {
    finished: Mutex<VecDeque<usize>>,
    cond: Condvar,
}

impl Signal {
    fn arm<T: Completion>(self: &Arc<Self>, index: usize, handle: &T) {
        let signal = self.clone();
        handle.on_done(Box::new(move || {
            signal
                .finished
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push_back(index);
            signal.cond.notify_all();
        }));
    }

    /// Pops the next finished index, waiting until `deadline`.
    fn next(&self, deadline: Option<Instant>) -> Option<usize> {
        let mut finished = self.finished.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(i) = finished.pop_front() {
                return Some(i);
            }
            match deadline {
                None => finished = self.cond.wait(finished).unwrap_or_else(|p| p.into_inner()),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return None;
                    }
                    finished = self
                        .cond
                        .wait_timeout(finished, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}

/// Waits until `when` holds for `handles` or `timeout` passes (`None`: no limit), and
/// splits them into finished and pending, like `concurrent.futures.wait`.
///
/// ```no_run
/// # fn main() -> Result<(), cluster_client::Error> {
/// use cluster_client::{stock::NTH_PRIME, wait, Client, ReturnWhen};
/// let client = Client::connect_env()?;
/// let view = client.load_balanced_view();
/// let tasks = (0..10u64)
///     .map(|n| view.apply(NTH_PRIME, n * 1000))
///     .collect::<Result<Vec<_>, _>>()?;
/// let first = wait(&tasks, None, ReturnWhen::FirstCompleted);
/// println!("{} done, {} still running", first.done.len(), first.not_done.len());
/// # Ok(()) }
/// ```
pub fn wait<T: Completion>(
    handles: impl IntoIterator<Item = T>,
    timeout: Option<Duration>,
    when: ReturnWhen,
) -> Waited<T> {
    let handles: Vec<T> = handles.into_iter().collect();
    let deadline = deadline(timeout);
    let signal = Arc::new(Signal::default());
    let mut finished = vec![false; handles.len()];
    let mut left = handles.len();
    let mut failed = false;
    for (i, h) in handles.iter().enumerate() {
        signal.arm(i, h);
    }
    let satisfied = |left: usize, failed: bool, total: usize| match when {
        ReturnWhen::AllCompleted => left == 0,
        ReturnWhen::FirstCompleted => left < total || total == 0,
        ReturnWhen::FirstException => left == 0 || failed,
    };
    while !satisfied(left, failed, handles.len()) {
        let Some(i) = signal.next(deadline) else {
            break;
        };
        if !std::mem::replace(&mut finished[i], true) {
            left -= 1;
            failed |= handles[i].successful() == Some(false);
        }
    }
    // Whatever else finished meanwhile counts too.
    let mut done = Vec::new();
    let mut not_done = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        if finished[i] || h.ready() {
            done.push(h);
        } else {
            not_done.push(h);
        }
    }
    Waited { done, not_done }
}

/// Yields handles as they finish (successfully or not), like
/// `concurrent.futures.as_completed`; after `timeout` (`None`: no limit) it yields one
/// [`Error::Timeout`] saying how many are still pending, and ends.
///
/// ```no_run
/// # fn main() -> Result<(), cluster_client::Error> {
/// use cluster_client::{as_completed, stock::NTH_PRIME, Client};
/// let client = Client::connect_env()?;
/// let view = client.load_balanced_view();
/// let tasks = (0..10u64)
///     .map(|n| view.apply(NTH_PRIME, n * 1000).map(|t| (n, t)))
///     .collect::<Result<Vec<_>, _>>()?;
/// for finished in as_completed(tasks, None) {
///     let (n, task) = finished?;
///     println!("prime #{n} is {}", task.get(None)?);
/// }
/// # Ok(()) }
/// ```
pub fn as_completed<T: Completion>(
    handles: impl IntoIterator<Item = T>,
    timeout: Option<Duration>,
) -> AsCompleted<T> {
    let handles: Vec<Option<T>> = handles.into_iter().map(Some).collect();
    let signal = Arc::new(Signal::default());
    for (i, h) in handles.iter().enumerate() {
        if let Some(h) = h {
            signal.arm(i, h);
        }
    }
    AsCompleted {
        left: handles.len(),
        handles,
        signal,
        deadline: deadline(timeout),
        timeout,
    }
}

/// The iterator of [`as_completed`].
pub struct AsCompleted<T> {
    handles: Vec<Option<T>>,
    left: usize,
    signal: Arc<Signal>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
}

impl<T> std::fmt::Debug for AsCompleted<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsCompleted")
            .field("pending", &self.left)
            .finish()
    }
}

impl<T> Iterator for AsCompleted<T> {
    type Item = Result<T, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        while self.left > 0 {
            let Some(i) = self.signal.next(self.deadline) else {
                let pending = std::mem::take(&mut self.left);
                let waited = self.timeout.unwrap_or_default().as_secs_f64();
                return Some(Err(Error::Timeout {
                    what: format!(
                        "{pending} of {} tasks (as_completed, {waited:.3} s)",
                        self.handles.len()
                    ),
                }));
            };
            if let Some(h) = self.handles.get_mut(i).and_then(Option::take) {
                self.left -= 1;
                return Some(Ok(h));
            }
        }
        None
    }
}
