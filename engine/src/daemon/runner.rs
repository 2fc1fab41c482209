//! Running one task for the loop: inline, or on a helper thread when the task is a function
//! that has a time limit or may take long. Waiting on the helper lets the loop abandon a
//! function that overruns its limit, or that is still running a moment after SIGTERM/SIGINT
//! (a thread cannot be stopped from outside: it finishes the call on its own, unobserved,
//! and the engine goes on with a fresh helper). Commands are killed instead, by the executor.
//!
//! Functions known to be quick (their last run took under a millisecond) run inline: a hop
//! to another thread would cost more than they do, and a stop waits at most for them to end.

use protocol::{Assignment, EngineId, ErrorKind, Status, TaskError, TaskId, TaskOutcome, Work};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::signals::Stop;
use crate::core::Queued;
use crate::exec::{Executor, Whoami, STOP_GRACE};
use crate::registry::Registry;
use crate::EngineError;

/// How often a wait for the helper thread looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(50);

/// A task for the helper thread (with the engine id to run it as), and its answer: the
/// outcome, the result payload and the offered function that ran.
type Job = (EngineId, Assignment, Vec<u8>);
pub(crate) type Done = (TaskOutcome, Vec<u8>, Option<String>);

/// The helper thread that runs functions the loop may have to abandon.
struct Worker {
    jobs: mpsc::Sender<Job>,
    done: mpsc::Receiver<Done>,
}

/// What runs tasks: the registry, the stop flag, and the helper thread.
pub(crate) struct Runner {
    registry: Arc<Registry>,
    max_output: usize,
    pid: u32,
    host: String,
    /// Its rank, when `mpiexec` or `srun` started it (for `whoami`).
    rank: Option<u32>,
    stop: Stop,
    worker: Option<Worker>,
}

/// Why a function on the helper thread was given up on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abandon {
    /// It ran past its time limit.
    Limit(Duration),
    /// The engine is stopping (the signal's name).
    Stop(&'static str),
    /// The helper thread ended without an answer.
    Gone,
}

impl Runner {
    pub(crate) fn new(
        registry: Arc<Registry>,
        max_output: usize,
        (pid, host, rank): (u32, String, Option<u32>),
        stop: Stop,
    ) -> Runner {
        Runner {
            registry,
            max_output,
            pid,
            host,
            rank,
            stop,
            worker: None,
        }
    }

    /// The registry tasks run from.
    pub(crate) fn registry(&self) -> Arc<Registry> {
        Arc::clone(&self.registry)
    }

    /// The executor of engine `engine` (rebuilt when a re-registration changes the id).
    pub(crate) fn executor<'r>(
        &self,
        registry: &'r Registry,
        engine: EngineId,
    ) -> Result<Executor<'r>, EngineError> {
        let whoami = protocol::encode(&Whoami {
            engine_id: engine,
            pid: self.pid,
            host: self.host.clone(),
            rank: self.rank,
        })
        .map_err(|e| EngineError::Internal(format!("cannot encode whoami: {e}")))?;
        Ok(Executor {
            registry,
            engine,
            max_output: self.max_output,
            whoami,
            stop: Some(self.stop.flag()),
        })
    }

    /// Runs one task; `may_be_long` is the core's guess from the function's last run.
    pub(crate) fn run(
        &mut self,
        executor: &Executor<'_>,
        task: Assignment,
        payload: Vec<u8>,
        may_be_long: bool,
    ) -> Done {
        let limit = task
            .timeout_ms
            .filter(|&ms| ms > 0)
            .map(Duration::from_millis);
        match &task.work {
            Work::Call { .. } | Work::Map { .. } if limit.is_some() || may_be_long => {
                self.run_on_helper(executor, task, payload, limit)
            }
            // Commands are killed at their limit, or after a stop signal, by the executor.
            _ => run_inline(executor, &task, &payload),
        }
    }

    /// Runs quick tasks of one function with a batch handler in one go, on the loop's
    /// thread (they are quick by their last run and have no time limits, as
    /// `Core::take_alike` chose them); one answer each, in order.
    pub(crate) fn run_batch(&mut self, executor: &Executor<'_>, tasks: Vec<Queued>) -> Vec<Done> {
        let Some(function) = tasks.first().and_then(|q| match &q.task.work {
            Work::Call { function } | Work::Map { function } => Some(function.clone()),
            Work::Command(_) => None,
        }) else {
            return tasks
                .iter()
                .map(|q| run_inline(executor, &q.task, &q.payload))
                .collect();
        };
        let refs: Vec<(&Assignment, &[u8])> = tasks
            .iter()
            .map(|q| (&q.task, q.payload.as_slice()))
            .collect();
        executor
            .run_batch(&function, &refs)
            .into_iter()
            .map(|(outcome, payload, ran)| (outcome, payload, ran.map(str::to_owned)))
            .collect()
    }

    /// Hands the task to the helper thread (moved, not copied: map chunks can be large) and
    /// waits for it, giving up at its time limit or a moment after a stop signal.
    fn run_on_helper(
        &mut self,
        executor: &Executor<'_>,
        task: Assignment,
        payload: Vec<u8>,
        limit: Option<Duration>,
    ) -> Done {
        let started_us = transport::now_us();
        let start = Instant::now();
        let (id, name) = (task.id, task.work.name().to_owned());
        let job = (executor.engine, task, payload);
        let unsent = match self.worker() {
            Ok(w) => w.jobs.send(job).err().map(|e| e.0),
            Err(e) => {
                tracing::warn!("{e}; running task {id} on the engine's own thread");
                Some(job)
            }
        };
        let worker = match (unsent, self.worker.as_ref()) {
            (None, Some(worker)) => worker,
            (unsent, _) => {
                self.worker = None;
                return match unsent {
                    Some((_, task, payload)) => run_inline(executor, &task, &payload),
                    None => {
                        let why = (Abandon::Gone, None);
                        let outcome =
                            abandoned(id, &name, executor.engine, why, started_us, start.elapsed());
                        (outcome, Vec::new(), None)
                    }
                };
            }
        };
        let deadline = limit.map(|l| start + l);
        let mut stop_at = None;
        let why = loop {
            let now = Instant::now();
            if stop_at.is_none() && self.stop.requested() {
                stop_at = Some(now + STOP_GRACE);
            }
            if let (Some(limit), Some(d)) = (limit, deadline) {
                if now >= d {
                    break Abandon::Limit(limit);
                }
            }
            if stop_at.is_some_and(|d| now >= d) {
                break Abandon::Stop(self.stop.received().unwrap_or("a stop signal"));
            }
            let wake = [deadline, stop_at, Some(now + STOP_POLL)]
                .into_iter()
                .flatten()
                .min()
                .unwrap_or(now);
            match worker
                .done
                .recv_timeout(wake.saturating_duration_since(now))
            {
                Ok(done) => return done,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break Abandon::Gone,
            }
        };
        // The thread finishes the call on its own and then exits, its channel being gone;
        // a fresh one takes the next task. A function that can be stopped (a Python task's
        // worker is killed) is, so that it does not go on using the machine.
        self.worker = None;
        let stopped = match why {
            Abandon::Limit(_) | Abandon::Stop(_) => self.registry.cancel(&name),
            Abandon::Gone => None,
        };
        let outcome = abandoned(
            id,
            &name,
            executor.engine,
            (why, stopped),
            started_us,
            start.elapsed(),
        );
        (outcome, Vec::new(), None)
    }

    /// The helper thread, started if needed.
    fn worker(&mut self) -> Result<&Worker, EngineError> {
        if self.worker.is_none() {
            let (jobs, job_rx) = mpsc::channel::<Job>();
            let (done_tx, done) = mpsc::channel::<Done>();
            let helper = Runner {
                registry: Arc::clone(&self.registry),
                max_output: self.max_output,
                pid: self.pid,
                host: self.host.clone(),
                rank: self.rank,
                stop: self.stop.clone(),
                worker: None,
            };
            std::thread::Builder::new()
                .name("task-helper".into())
                .spawn(move || {
                    let registry = Arc::clone(&helper.registry);
                    while let Ok((engine, task, payload)) = job_rx.recv() {
                        let done = match helper.executor(&registry, engine) {
                            Ok(executor) => run_inline(&executor, &task, &payload),
                            Err(e) => {
                                tracing::error!("{e}");
                                return;
                            }
                        };
                        if done_tx.send(done).is_err() {
                            // Abandoned while running: nobody waits for this thread.
                            return;
                        }
                    }
                })
                .map_err(EngineError::Thread)?;
            self.worker = Some(Worker { jobs, done });
        }
        self.worker
            .as_ref()
            .ok_or_else(|| EngineError::Internal("no helper thread".into()))
    }
}

fn run_inline(executor: &Executor<'_>, task: &Assignment, payload: &[u8]) -> Done {
    let (outcome, payload, ran) = executor.run(task, payload);
    (outcome, payload, ran.map(str::to_owned))
}

/// The outcome of task `id` (running function `name`) given up on in its thread, and the log
/// line saying so; `stopped` says how the function was stopped, if it could be.
fn abandoned(
    id: TaskId,
    name: &str,
    engine: EngineId,
    (why, stopped): (Abandon, Option<String>),
    started_us: u64,
    ran: Duration,
) -> TaskOutcome {
    let fate = match &stopped {
        Some(how) => format!("was stopped ({how})"),
        None => format!(
            "was abandoned (it goes on in a detached thread of engine {engine} until it returns)"
        ),
    };
    let (kind, message) = match why {
        Abandon::Limit(limit) => {
            let ms = limit.as_millis();
            tracing::warn!(
                "task {id} ({name}) ran past its time limit of {ms} ms; {}",
                if stopped.is_some() {
                    "stopped"
                } else {
                    "abandoned in its thread"
                }
            );
            (
                ErrorKind::Timeout,
                format!(
                    "{name} ran longer than its time limit of {ms} ms on engine {engine} and {fate}"
                ),
            )
        }
        Abandon::Stop(signal) => {
            tracing::info!(
                "task {id} ({name}) still running {:.1} s after {signal}; {}",
                ran.as_secs_f64(),
                if stopped.is_some() {
                    "stopped"
                } else {
                    "abandoned in its thread"
                }
            );
            (
                ErrorKind::EngineLost,
                format!(
                    "engine {engine} was stopped ({signal}) while running {name}, which {fate} after {:.1} s; submit it with retries > 0 to have it re-run on another engine",
                    ran.as_secs_f64()
                ),
            )
        }
        Abandon::Gone => (
            ErrorKind::Remote,
            format!("the thread running {name} on engine {engine} ended without an answer"),
        ),
    };
    TaskOutcome {
        id,
        engine: Some(engine),
        status: Status::Err(TaskError {
            kind,
            message,
            engine: Some(engine),
        }),
        started_us,
        elapsed_us: ran.as_micros() as u64,
    }
}
