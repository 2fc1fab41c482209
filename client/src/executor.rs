//! [`Executor`]: the cluster as a `concurrent.futures.ProcessPoolExecutor`.

use crate::cell::Cell;
use crate::error::Error;
use crate::function::{Argument, IntoFunction};
use crate::imap::Imap;
use crate::result::AsyncResult;
use crate::view::LoadBalancedView;
use protocol::TaskId;
use serde::Serialize;

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};

#[derive(Default)]
struct Tracker {
    inner: Mutex<Tracked>,
    cond: Condvar,
}

#[derive(Default)]
struct Tracked {
    shut_down: bool,
    /// Submitted and not finished; weak so a forgotten result is not kept alive here.
    pending: HashMap<TaskId, Weak<Cell>>,
}

impl Tracker {
    fn lock(&self) -> MutexGuard<'_, Tracked> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs functions on the cluster's engines with the interface of Python's
/// `concurrent.futures` executors: [`submit`](Executor::submit) one call and get a future
/// (an [`AsyncResult`]), [`map`](Executor::map) a function over a stream, and
/// [`shutdown`](Executor::shutdown) when done. Made by [`crate::Client::executor`]; clones
/// share the same state.
///
/// ```no_run
/// # fn main() -> Result<(), cluster_client::Error> {
/// use cluster_client::{as_completed, stock::NTH_PRIME, Client};
/// let client = Client::connect_env()?;
/// let pool = client.executor();
/// let futures = (0..8u64)
///     .map(|i| pool.submit(NTH_PRIME, i * 500))
///     .collect::<Result<Vec<_>, _>>()?;
/// for done in as_completed(&futures, None) {
///     println!("{}", done?.get(None)?);
/// }
/// let total: u64 = pool.map(NTH_PRIME, 0..100u64).sum::<Result<u64, _>>()?;
/// pool.shutdown(true);
/// # let _ = total; Ok(()) }
/// ```
#[derive(Clone)]
pub struct Executor {
    view: LoadBalancedView,
    tracker: Arc<Tracker>,
}

impl std::fmt::Debug for Executor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.tracker.lock();
        f.debug_struct("Executor")
            .field("view", &self.view)
            .field("shut_down", &t.shut_down)
            .field("pending", &t.pending.len())
            .finish()
    }
}

impl Executor {
    pub(crate) fn new(view: LoadBalancedView) -> Executor {
        Executor {
            view,
            tracker: Arc::default(),
        }
    }

    /// The view it submits through (its options apply to every task).
    pub fn view(&self) -> &LoadBalancedView {
        &self.view
    }

    /// Schedules `function(arg)` and returns its future. After
    /// [`shutdown`](Executor::shutdown): [`Error::Shutdown`].
    pub fn submit<A: Serialize, R>(
        &self,
        function: impl IntoFunction<A, R>,
        arg: impl Argument<A>,
    ) -> Result<AsyncResult<R>, Error> {
        let name = function.function_name().to_owned();
        // Checked and recorded under one lock, so a concurrent shutdown(true) either refuses
        // this task or waits for it.
        let mut tracked = self.tracker.lock();
        if tracked.shut_down {
            return Err(Error::Shutdown {
                what: format!("a call of {name}"),
            });
        }
        let result = self.view.apply(name.as_str(), arg)?;
        let cell = result.cell();
        tracked.pending.insert(cell.first, Arc::downgrade(cell));
        drop(tracked);
        let tracker = Arc::downgrade(&self.tracker);
        let id = cell.first;
        cell.on_finish(Box::new(move || {
            if let Some(tracker) = tracker.upgrade() {
                let mut tracked = tracker.lock();
                tracked.pending.remove(&id);
                if tracked.pending.is_empty() {
                    tracker.cond.notify_all();
                }
            }
        }));
        Ok(result)
    }

    /// `function` over `items`, results in item order, like `Executor.map`; lazily, with a
    /// bounded number of tasks in flight (see [`LoadBalancedView::imap`]). After
    /// [`shutdown`](Executor::shutdown) it yields one [`Error::Shutdown`].
    pub fn map<'a, A: Serialize, R>(
        &self,
        function: impl IntoFunction<A, R>,
        items: impl IntoIterator<Item: Argument<A>> + 'a,
    ) -> Imap<'a, R> {
        if self.tracker.lock().shut_down {
            let what = format!("a map of {}", function.function_name());
            return self
                .view
                .imap(function, items)
                .refused(Error::Shutdown { what });
        }
        self.view.imap(function, items)
    }

    /// Takes no more work; with `wait`, blocks until every submitted task has finished.
    /// Tasks already submitted keep running either way (see
    /// [`cancel_pending`](Executor::cancel_pending)).
    pub fn shutdown(&self, wait: bool) {
        let mut tracked = self.tracker.lock();
        tracked.shut_down = true;
        if !wait {
            return;
        }
        while !tracked.pending.is_empty() {
            tracked = self
                .tracker
                .cond
                .wait(tracked)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Cancels every submitted task that has not finished (as `shutdown(cancel_futures=True)`
    /// does); returns how many.
    pub fn cancel_pending(&self) -> usize {
        let cells: Vec<Arc<Cell>> = self
            .tracker
            .lock()
            .pending
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        let cells: Vec<&Cell> = cells.iter().map(|c| &**c).collect();
        crate::result::cancel_cells(&self.view.shared, &cells)
    }

    /// Tasks submitted and not finished yet.
    pub fn pending(&self) -> usize {
        self.tracker.lock().pending.len()
    }
}
