//! The engine's sans-IO core: the local task queue with its start limits, the outbox of
//! finished outcomes and the rule that decides when the outbox goes out as one `Results`
//! message, and (in [`link`]) the rule for registering again with a silent controller.
//!
//! Nothing here touches a socket or reads the clock; the loop passes `now` in. The batching
//! rule: send when nothing else is queued (a lone task's result goes out at once), when
//! [`MAX_BATCH`] outcomes are waiting, or [`MAX_DELAY`] after the oldest waiting one finished
//! (so a stream of tiny tasks becomes few messages). Before a task expected to be long, what
//! is waiting goes out first, so finished results never sit behind a slow task. A task with a
//! limit on its wait to start (`start_within_ms`) that waited longer in this queue fails
//! without running, as it would have in the controller's queue.

pub(crate) mod link;

use protocol::{Assignment, EngineId, ErrorKind, Status, TaskError, TaskId, TaskOutcome, Work};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Most outcomes in one `Results` message.
pub(crate) const MAX_BATCH: usize = 64;

/// Longest a finished outcome waits for company.
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(1);

/// Payload bytes above which a batch is sent before another result joins it, keeping
/// messages well under the controller's size limit.
pub(crate) const MAX_BATCH_BYTES: usize = 16 * 1024 * 1024;

/// Tasks at least this long (by the last run of the same function) flush the outbox first.
const LONG_TASK: Duration = Duration::from_millis(1);

/// Most tasks run as one batch (functions with a batch handler: Python tasks).
pub(crate) const MAX_RUN_BATCH: usize = 64;

/// Run time a batch is sized to, by the function's last run: results wait at most about
/// this long for the rest of their batch.
const RUN_BATCH_TIME: Duration = Duration::from_millis(1);

/// Argument bytes a batch carries at most (a large task runs alone).
const RUN_BATCH_BYTES: usize = 1 << 20;

/// Rough size of one outcome's content, for the byte budget.
const OUTCOME_OVERHEAD: usize = 96;

/// A task waiting to run and its argument payload.
#[derive(Debug)]
pub(crate) struct Queued {
    pub task: Assignment,
    pub payload: Vec<u8>,
}

/// Outcomes waiting to be sent, with their payloads (empty for failures).
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub outcomes: Vec<TaskOutcome>,
    pub payloads: Vec<Vec<u8>>,
}

/// What to do with the next task in the queue.
#[derive(Debug)]
pub(crate) enum Next {
    /// Run it.
    Run(Queued),
    /// It waited past its limit to start: report this outcome instead of running it.
    TooLate(TaskOutcome),
}

/// Queue, outbox and per-function run-time estimates.
#[derive(Debug, Default)]
pub(crate) struct Core {
    queue: VecDeque<Queued>,
    /// When each queued task with a limit on its wait to start arrived.
    arrivals: HashMap<TaskId, Instant>,
    outbox: Batch,
    outbox_bytes: usize,
    oldest: Option<Instant>,
    /// Last run time of each function (only names the engine offers, so the map is bounded).
    last_run: HashMap<String, Duration>,
}

impl Core {
    /// Tasks arrived at `now`; the i-th payload is the i-th task's argument (missing ones
    /// are empty, which fails to decode and is reported rather than trusted).
    pub(crate) fn on_tasks(
        &mut self,
        tasks: Vec<Assignment>,
        payloads: Vec<Vec<u8>>,
        now: Instant,
    ) {
        let mut payloads = payloads.into_iter();
        for task in tasks {
            if task.start_within_ms.is_some() {
                self.arrivals.insert(task.id, now);
            }
            let payload = payloads.next().unwrap_or_default();
            self.queue.push_back(Queued { task, payload });
        }
    }

    /// The next task, in arrival order, taken at `now` by engine `engine`: to run, or to
    /// report as not started in time.
    pub(crate) fn next_task(&mut self, now: Instant, engine: EngineId) -> Option<Next> {
        let queued = self.queue.pop_front()?;
        let waited = self
            .arrivals
            .remove(&queued.task.id)
            .map(|at| now.saturating_duration_since(at));
        Some(match too_late(&queued.task, waited, engine) {
            Some(outcome) => Next::TooLate(outcome),
            None => Next::Run(queued),
        })
    }

    /// The tasks queued behind `first` (just taken) that may run with it as one batch:
    /// tasks of the same function, quick by its last run, without time limits, as many as
    /// fit in [`RUN_BATCH_TIME`] (at most [`MAX_RUN_BATCH`] and [`RUN_BATCH_BYTES`] in
    /// all). Empty when `first` itself should run alone.
    pub(crate) fn take_alike(&mut self, first: &Queued) -> Vec<Queued> {
        let Some(function) = batchable(&first.task) else {
            return Vec::new();
        };
        let Some(&per_task) = self.last_run.get(function) else {
            return Vec::new();
        };
        if per_task >= LONG_TASK {
            return Vec::new();
        }
        let fit = RUN_BATCH_TIME.as_nanos() / per_task.as_nanos().max(1_000);
        let most = (fit as usize).clamp(1, MAX_RUN_BATCH) - 1;
        let mut bytes = first.payload.len();
        let mut more = Vec::new();
        while more.len() < most {
            let Some(next) = self.queue.front() else {
                break;
            };
            if batchable(&next.task) != Some(function)
                || bytes + next.payload.len() > RUN_BATCH_BYTES
            {
                break;
            }
            bytes += next.payload.len();
            more.extend(self.queue.pop_front());
        }
        more
    }

    /// Tasks still waiting to run.
    pub(crate) fn queued(&self) -> usize {
        self.queue.len()
    }

    /// Takes every task still waiting to run, in order (a drain hands them back).
    pub(crate) fn take_queue(&mut self) -> Vec<Queued> {
        self.arrivals.clear();
        self.queue.drain(..).collect()
    }

    /// Ids of the tasks still waiting to run, in order.
    pub(crate) fn queued_ids(&self) -> Vec<TaskId> {
        self.queue.iter().map(|q| q.task.id).collect()
    }

    /// True when waiting outcomes should be sent before starting `work`: it may take long.
    pub(crate) fn flush_before(&self, work: &Work) -> bool {
        !self.outbox.outcomes.is_empty() && self.may_be_long(work)
    }

    /// True when `work` may take long, judging by the last run of the same function
    /// (commands and functions not seen yet count as long).
    pub(crate) fn may_be_long(&self, work: &Work) -> bool {
        match work {
            Work::Command(_) => true,
            Work::Call { function } | Work::Map { function } => self
                .last_run
                .get(function.as_str())
                .is_none_or(|d| *d >= LONG_TASK),
        }
    }

    /// Remembers how long a run of `function` took. Call only for functions the engine
    /// offers, so that names sent by a peer cannot grow the table.
    pub(crate) fn on_ran(&mut self, function: &str, took: Duration) {
        match self.last_run.get_mut(function) {
            Some(d) => *d = took,
            None => {
                self.last_run.insert(function.to_owned(), took);
            }
        }
    }

    /// True when adding `payload_len` bytes would make the batch too big, so it must be sent
    /// first.
    pub(crate) fn must_flush_for(&self, payload_len: usize) -> bool {
        !self.outbox.outcomes.is_empty()
            && self.outbox_bytes + payload_len + OUTCOME_OVERHEAD > MAX_BATCH_BYTES
    }

    /// A task finished at `now`.
    pub(crate) fn on_outcome(&mut self, outcome: TaskOutcome, payload: Vec<u8>, now: Instant) {
        self.outbox_bytes += payload.len() + OUTCOME_OVERHEAD;
        if let protocol::Status::Err(e) = &outcome.status {
            self.outbox_bytes += e.message.len();
        }
        self.outbox.outcomes.push(outcome);
        self.outbox.payloads.push(payload);
        self.oldest.get_or_insert(now);
    }

    /// True when the waiting outcomes should be sent now.
    pub(crate) fn flush_due(&self, now: Instant) -> bool {
        match self.oldest {
            None => false,
            Some(oldest) => {
                self.queue.is_empty()
                    || self.outbox.outcomes.len() >= MAX_BATCH
                    || now.saturating_duration_since(oldest) >= MAX_DELAY
            }
        }
    }

    /// Takes the waiting outcomes for sending (`None` when there are none).
    pub(crate) fn take_batch(&mut self) -> Option<Batch> {
        if self.outbox.outcomes.is_empty() {
            return None;
        }
        self.oldest = None;
        self.outbox_bytes = 0;
        Some(std::mem::take(&mut self.outbox))
    }
}

/// The function of a task that may join a batch: a call or map chunk with no limit on its
/// run time or on its wait to start.
fn batchable(task: &Assignment) -> Option<&str> {
    if task.timeout_ms.is_some_and(|ms| ms > 0) || task.start_within_ms.is_some() {
        return None;
    }
    match &task.work {
        Work::Call { function } | Work::Map { function } => Some(function),
        Work::Command(_) => None,
    }
}

/// The outcome of a task with a time limit that waited in this engine's queue past it: it
/// fails without running, as it would have in the controller's queue.
fn too_late(task: &Assignment, waited: Option<Duration>, engine: EngineId) -> Option<TaskOutcome> {
    let limit = Duration::from_millis(task.start_within_ms?);
    let waited = waited?;
    if waited <= limit {
        return None;
    }
    let message = format!(
        "{} did not start within its time limit of {} ms (it waited {} ms in engine {engine}'s queue); not run",
        task.work.name(),
        limit.as_millis(),
        waited.as_millis()
    );
    Some(TaskOutcome {
        id: task.id,
        engine: Some(engine),
        status: Status::Err(TaskError {
            kind: ErrorKind::Timeout,
            message,
            engine: Some(engine),
        }),
        started_us: 0,
        elapsed_us: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::ClientId;

    const ENGINE: EngineId = EngineId(0);

    /// The next task, which must be one to run.
    fn run_next(core: &mut Core, now: Instant) -> Option<Queued> {
        match core.next_task(now, ENGINE)? {
            Next::Run(queued) => Some(queued),
            Next::TooLate(outcome) => panic!("not too late: {outcome:?}"),
        }
    }

    fn call(seq: u64, function: &str) -> Assignment {
        Assignment {
            id: TaskId::new(ClientId(1), seq),
            work: Work::Call {
                function: function.into(),
            },
            timeout_ms: None,
            start_within_ms: None,
        }
    }

    fn outcome(seq: u64) -> TaskOutcome {
        TaskOutcome {
            id: TaskId::new(ClientId(1), seq),
            engine: Some(EngineId(0)),
            status: Status::Ok,
            started_us: 1,
            elapsed_us: 1,
        }
    }

    #[test]
    fn tasks_run_in_order_and_missing_payloads_are_empty() {
        let mut core = Core::default();
        let t0 = Instant::now();
        core.on_tasks(vec![call(1, "a"), call(2, "b")], vec![b"x".to_vec()], t0);
        assert_eq!(core.queued(), 2);
        let first = run_next(&mut core, t0).unwrap();
        assert_eq!(
            (first.task.id.0 & 0xff, first.payload.as_slice()),
            (1, &b"x"[..])
        );
        let second = run_next(&mut core, t0).unwrap();
        assert_eq!((second.task.id.0 & 0xff, second.payload.len()), (2, 0));
        assert!(core.next_task(t0, ENGINE).is_none());
    }

    #[test]
    fn a_lone_result_goes_out_at_once() {
        let mut core = Core::default();
        let t0 = Instant::now();
        assert!(!core.flush_due(t0));
        core.on_outcome(outcome(1), vec![], t0);
        assert!(core.flush_due(t0), "nothing queued: send now");
        let batch = core.take_batch().unwrap();
        assert_eq!(batch.outcomes.len(), 1);
        assert!(core.take_batch().is_none());
        assert!(!core.flush_due(t0));
    }

    #[test]
    fn a_stream_of_tasks_is_batched_by_count_and_age() {
        let mut core = Core::default();
        let t0 = Instant::now();
        core.on_tasks((0..200).map(|i| call(i, "noop")).collect(), vec![], t0);
        let mut sent = Vec::new();
        for i in 0..150u64 {
            run_next(&mut core, t0).unwrap();
            // 10 µs per task on a fake clock.
            let now = t0 + Duration::from_micros(10 * (i + 1));
            core.on_outcome(outcome(i), vec![], now);
            if core.flush_due(now) {
                sent.push(core.take_batch().unwrap().outcomes.len());
            }
        }
        assert_eq!(sent, vec![64, 64], "full batches of {MAX_BATCH}");

        // Slow tasks: the age rule sends them before the batch is full.
        let mut core = Core::default();
        core.on_tasks((0..10).map(|i| call(i, "f")).collect(), vec![], t0);
        run_next(&mut core, t0);
        core.on_outcome(outcome(0), vec![], t0);
        assert!(!core.flush_due(t0 + Duration::from_micros(500)));
        assert!(core.flush_due(t0 + MAX_DELAY));
    }

    #[test]
    fn outcomes_are_sent_before_a_task_that_may_be_long() {
        let mut core = Core::default();
        let t0 = Instant::now();
        let fast = Work::Call {
            function: "fast".into(),
        };
        let slow = Work::Call {
            function: "slow".into(),
        };
        assert!(
            !core.flush_before(&slow),
            "nothing waiting, nothing to send"
        );
        core.on_outcome(outcome(0), vec![], t0);
        assert!(core.flush_before(&fast), "never seen: assume long");
        core.on_ran("fast", Duration::from_micros(5));
        core.on_ran("slow", Duration::from_millis(50));
        assert!(!core.flush_before(&fast));
        assert!(core.flush_before(&slow));
        assert!(core.flush_before(&Work::Command(Default::default())));
    }

    #[test]
    fn big_payloads_split_batches() {
        let mut core = Core::default();
        let t0 = Instant::now();
        assert!(
            !core.must_flush_for(MAX_BATCH_BYTES * 2),
            "an empty batch takes anything"
        );
        core.on_outcome(outcome(0), vec![0; MAX_BATCH_BYTES / 2], t0);
        assert!(!core.must_flush_for(1000));
        assert!(core.must_flush_for(MAX_BATCH_BYTES / 2));
    }

    #[test]
    fn quick_tasks_of_one_function_are_taken_as_a_batch() {
        let mut core = Core::default();
        let t0 = Instant::now();
        let seqs = |q: &[Queued]| q.iter().map(|q| q.task.id.0 & 0xffff).collect::<Vec<_>>();
        let limited = |seq, ms| Assignment {
            timeout_ms: Some(ms),
            ..call(seq, "py")
        };
        // py 0..=79, other, py 80..=88, py with a time limit, py 89..=199.
        let mut tasks: Vec<Assignment> = (0..200).map(|i| call(i, "py")).collect();
        tasks.insert(80, call(1000, "other"));
        tasks.insert(90, limited(1001, 500));
        core.on_tasks(tasks, vec![], t0);
        // Not run yet: its run time is unknown, so it runs alone.
        let first = run_next(&mut core, t0).unwrap();
        assert!(core.take_alike(&first).is_empty());
        // Slow by its last run: alone too.
        core.on_ran("py", Duration::from_millis(3));
        let first = run_next(&mut core, t0).unwrap();
        assert!(core.take_alike(&first).is_empty());
        // 50 µs a task: 20 fit in the batch's time, taken in queue order.
        core.on_ran("py", Duration::from_micros(50));
        let first = run_next(&mut core, t0).unwrap();
        assert_eq!(seqs(&core.take_alike(&first)), (3..22).collect::<Vec<_>>());
        // 1 µs a task: a task of another function ends the batch ...
        core.on_ran("py", Duration::from_micros(1));
        let first = run_next(&mut core, t0).unwrap();
        assert_eq!(seqs(&core.take_alike(&first)), (23..80).collect::<Vec<_>>());
        let other = run_next(&mut core, t0).unwrap();
        assert!(core.take_alike(&other).is_empty(), "not run yet");
        // ... so does one with a time limit, which then runs alone ...
        let first = run_next(&mut core, t0).unwrap();
        assert_eq!(seqs(&core.take_alike(&first)), (81..89).collect::<Vec<_>>());
        let first = run_next(&mut core, t0).unwrap();
        assert_eq!(first.task.timeout_ms, Some(500));
        assert!(core.take_alike(&first).is_empty());
        // ... and a batch holds at most MAX_RUN_BATCH tasks.
        let first = run_next(&mut core, t0).unwrap();
        assert_eq!(core.take_alike(&first).len(), MAX_RUN_BATCH - 1);
        // Large arguments: a batch stays under RUN_BATCH_BYTES.
        let mut core = Core::default();
        core.on_ran("py", Duration::from_micros(1));
        let big = vec![0u8; RUN_BATCH_BYTES / 4];
        core.on_tasks((0..8).map(|i| call(i, "py")).collect(), vec![big; 8], t0);
        let first = run_next(&mut core, t0).unwrap();
        assert_eq!(core.take_alike(&first).len(), 3);
    }

    #[test]
    fn a_task_that_waited_past_its_start_limit_is_not_run() {
        let mut core = Core::default();
        let t0 = Instant::now();
        let limited = |seq, ms| Assignment {
            start_within_ms: Some(ms),
            ..call(seq, "f")
        };
        core.on_tasks(
            vec![limited(1, 200), limited(2, 5_000), call(3, "f")],
            vec![],
            t0,
        );
        // Task 1 is taken 300 ms after it arrived (a fake clock: nothing sleeps).
        let later = t0 + Duration::from_millis(300);
        match core.next_task(later, EngineId(5)) {
            Some(Next::TooLate(outcome)) => {
                assert_eq!(outcome.engine, Some(EngineId(5)));
                assert_eq!((outcome.started_us, outcome.elapsed_us), (0, 0));
                match outcome.status {
                    Status::Err(e) => {
                        assert_eq!(e.kind, ErrorKind::Timeout);
                        assert!(
                            e.message
                                .contains("did not start within its time limit of 200 ms")
                                && e.message.contains("waited 300 ms in engine 5's queue"),
                            "{}",
                            e.message
                        );
                    }
                    Status::Ok => panic!("task 1 waited too long"),
                }
            }
            other => panic!("expected a late task, got {other:?}"),
        }
        assert!(run_next(&mut core, later).is_some(), "5 s limit: in time");
        // No start limit: however long it waited, it runs.
        assert!(run_next(&mut core, t0 + Duration::from_secs(3600)).is_some());
        assert!(
            core.arrivals.is_empty(),
            "arrivals are forgotten once taken"
        );
        // Exactly at the limit still runs.
        core.on_tasks(vec![limited(4, 200)], vec![], t0);
        assert!(run_next(&mut core, t0 + Duration::from_millis(200)).is_some());
    }
}
