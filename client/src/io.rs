//! The I/O thread: the only user of the client's socket.
//!
//! Callers encode their messages on their own threads and push them into [`Shared::outbox`],
//! then wake this thread through a socket pair (one byte, written only when no wake-up is
//! already pending). The thread sends them, registering each task's [`Cell`] in a table it
//! alone owns, receives results and answers, and fills cells and reply slots. It blocks in
//! `poll` on the socket and the wake-up pipe, never in a sleep, so a round trip costs two
//! thread hand-offs on top of libzmq's own.
//!
//! Liveness: libzmq reconnects silently, so a stopped controller shows only as silence.
//! While anything is outstanding the thread probes with a `status` request after
//! [`Timing::probe_after`] of silence, and declares the connection lost after
//! [`Timing::dead_after`]; every pending wait then ends with [`crate::Error::ConnectionLost`].
//!
//! Controller restarts: a controller started again on the same ports (`--reuse`) knows
//! nothing of the tasks its previous life had queued. Every status answer carries the
//! controller's instance number; when it changes, the thread submits its unfinished tasks
//! again, from the submit messages it keeps until all their tasks are answered. The new
//! controller answers the ones engines finished meanwhile from what they brought, lets the
//! ones engines still hold run there, and queues the rest.

use crate::cell::{mark_io_thread, Cell, Lost, Wakeups};
use crate::error::Error;
use crate::view::{SUBMIT_MAX_BYTES, SUBMIT_MAX_TASKS};
use protocol::{FromClient, MessageType, StatusReport, TaskId, TaskRequest, ToClient};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{Read, Write};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use transport::{Socket, Waitable};

/// Which answer a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// [`ToClient::Status`].
    Status,
    /// [`ToClient::Ack`].
    Ack,
    /// [`ToClient::Aborted`].
    Aborted,
}

/// The part of the controller's answer to an abort request that the client acts on (the
/// other ids are running or finished, and will deliver or have delivered their results).
#[derive(Debug, Default)]
pub(crate) struct Aborted {
    /// Aborted now.
    pub(crate) aborted: Vec<TaskId>,
    /// Unknown to the controller: nobody will ever deliver their results.
    pub(crate) unknown: Vec<TaskId>,
}

/// Where the answer to a request goes.
#[derive(Debug, Default)]
pub(crate) struct Reply {
    slot: Mutex<Option<Result<ToClient, Lost>>>,
    cond: Condvar,
}

impl Reply {
    fn put(&self, answer: Result<ToClient, Lost>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(answer);
            self.cond.notify_all();
        }
    }

    /// Waits up to `timeout` for the answer; `None` when it did not come in time.
    pub(crate) fn wait(&self, timeout: Duration) -> Option<Result<ToClient, Lost>> {
        let deadline = Instant::now() + timeout;
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(answer) = slot.take() {
                return Some(answer);
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            slot = self
                .cond
                .wait_timeout(slot, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// A task whose outcome goes into part `index` of `cell`.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) id: TaskId,
    pub(crate) cell: Arc<Cell>,
    pub(crate) index: u32,
}

/// A message ready to send, encoded by the caller.
#[derive(Debug)]
pub(crate) struct Outgoing {
    pub(crate) msg_type: &'static str,
    pub(crate) content: Vec<u8>,
    /// Submit requests not encoded yet (`content` is empty): the I/O thread merges a run of
    /// such messages into as few submits as the limits allow, then encodes them.
    pub(crate) requests: Vec<TaskRequest>,
    pub(crate) payloads: Vec<Vec<u8>>,
    /// Tasks in this message, registered before it is sent.
    pub(crate) tasks: Vec<Registration>,
    /// For requests: the answer expected and where it goes (`None` for submits).
    /// A request whose answer nobody waits for still takes its place in the queue of
    /// requests, so that later answers go to the right waiters.
    pub(crate) reply: Option<(Expect, Option<Arc<Reply>>)>,
}

#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Outgoing>,
    /// Set once, when the I/O thread ends or is asked to; nothing is queued after it.
    closed: Option<Arc<str>>,
}

/// Probe and give-up delays, derived from the connect timeout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Silence (with work outstanding) after which a status probe is sent.
    pub(crate) probe_after: Duration,
    /// Silence after which the connection is declared lost.
    pub(crate) dead_after: Duration,
}

impl Timing {
    pub(crate) fn from_connect_timeout(t: Duration) -> Timing {
        let probe_after = (t / 4).clamp(Duration::from_millis(20), Duration::from_secs(1));
        Timing {
            probe_after,
            dead_after: (t * 3).max(probe_after * 3),
        }
    }
}

/// Merges each run of consecutive unencoded submits into as few messages as the limits allow
/// (order is kept), and encodes them. A burst of single-task submits then costs the
/// controller one message instead of one each.
fn merge_submits(queue: VecDeque<Outgoing>) -> Result<Vec<Outgoing>, String> {
    let mut out: Vec<Outgoing> = Vec::with_capacity(queue.len());
    let bytes = |m: &Outgoing| m.payloads.iter().map(Vec::len).sum::<usize>();
    for msg in queue {
        if !msg.requests.is_empty() {
            if let Some(last) = out.last_mut().filter(|last| {
                !last.requests.is_empty()
                    && last.requests.len() + msg.requests.len() <= SUBMIT_MAX_TASKS
                    && bytes(last) + bytes(&msg) <= SUBMIT_MAX_BYTES
            }) {
                last.requests.extend(msg.requests);
                last.payloads.extend(msg.payloads);
                last.tasks.extend(msg.tasks);
                continue;
            }
        }
        out.push(msg);
    }
    for msg in out.iter_mut().filter(|m| !m.requests.is_empty()) {
        let tasks = std::mem::take(&mut msg.requests);
        msg.content = protocol::encode(&FromClient::Submit { tasks })
            .map_err(|e| format!("cannot encode a submit message: {e}"))?;
    }
    Ok(out)
}

/// State shared by the client, its views and the I/O thread.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) address: Arc<str>,
    pub(crate) client_id: protocol::ClientId,
    next_seq: AtomicU64,
    /// Engines registered, as last heard (welcome, any status answer).
    pub(crate) engines: AtomicUsize,
    outbox: Mutex<Outbox>,
    wake_pending: AtomicBool,
    wake_tx: UnixStream,
    pub(crate) request_timeout: Duration,
}

impl Shared {
    pub(crate) fn new(
        address: String,
        client_id: protocol::ClientId,
        engines: usize,
        request_timeout: Duration,
        wake_tx: UnixStream,
    ) -> Shared {
        Shared {
            address: address.into(),
            client_id,
            next_seq: AtomicU64::new(1),
            engines: AtomicUsize::new(engines),
            outbox: Mutex::new(Outbox::default()),
            wake_pending: AtomicBool::new(false),
            wake_tx,
            request_timeout,
        }
    }

    /// Reserves `n` consecutive task ids and returns the first.
    pub(crate) fn task_ids(&self, n: usize) -> TaskId {
        let seq = self.next_seq.fetch_add(n as u64, Ordering::Relaxed);
        TaskId::new(self.client_id, seq)
    }

    fn outbox(&self) -> MutexGuard<'_, Outbox> {
        self.outbox.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues messages for the I/O thread; fails when the connection has ended.
    pub(crate) fn send(&self, messages: impl IntoIterator<Item = Outgoing>) -> Result<(), Lost> {
        {
            let mut outbox = self.outbox();
            if let Some(reason) = &outbox.closed {
                return Err(Lost {
                    address: self.address.clone(),
                    reason: reason.clone(),
                });
            }
            outbox.queue.extend(messages);
        }
        self.wake();
        Ok(())
    }

    fn wake(&self) {
        // One byte per batch of pushes: the I/O thread clears the flag before it drains.
        if !self.wake_pending.swap(true, Ordering::SeqCst) {
            // A full pipe already means a wake-up is pending; nothing else can go wrong that
            // the I/O thread would not notice by itself.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }

    /// Sends a request and waits (up to the request timeout) for its answer.
    pub(crate) fn request(&self, msg: FromClient, expect: Expect) -> Result<ToClient, Error> {
        let name = msg.msg_type();
        let content = protocol::encode(&msg).map_err(|e| Error::Encode {
            what: format!("the {name} request"),
            message: e.to_string(),
        })?;
        let reply = Arc::new(Reply::default());
        self.send([Outgoing {
            msg_type: name,
            content,
            requests: Vec::new(),
            payloads: Vec::new(),
            tasks: Vec::new(),
            reply: Some((expect, Some(reply.clone()))),
        }])
        .map_err(|lost| lost.error())?;
        match reply.wait(self.request_timeout) {
            None => Err(Error::Timeout {
                what: format!(
                    "the controller at {} to answer the {name} request",
                    self.address
                ),
            }),
            Some(Err(lost)) => Err(lost.error()),
            Some(Ok(ToClient::Error { message })) => Err(Error::Refused {
                request: name.to_owned(),
                message,
            }),
            Some(Ok(answer)) => Ok(answer),
        }
    }

    /// Asks the controller to abort tasks that have not started, and waits for its answer.
    pub(crate) fn abort(&self, ids: Vec<TaskId>) -> Result<Aborted, Error> {
        match self.request(FromClient::Abort { ids }, Expect::Aborted)? {
            ToClient::Aborted {
                aborted, unknown, ..
            } => Ok(Aborted { aborted, unknown }),
            other => Err(Error::Decode {
                what: "the answer to the abort request".into(),
                message: format!("unexpected {:?} message", other.msg_type()),
            }),
        }
    }

    /// Asks the controller to abort tasks that have not started, without waiting for the
    /// answer (for callers that cannot wait: drops, and done callbacks on the I/O thread).
    /// Best effort: if the tasks run anyway, their results are ignored when they arrive.
    pub(crate) fn abort_quietly(&self, ids: Vec<TaskId>) {
        if ids.is_empty() {
            return;
        }
        let Ok(content) = protocol::encode(&FromClient::Abort { ids }) else {
            return;
        };
        // A closed connection has nothing left to abort.
        let _ = self.send([Outgoing {
            msg_type: "abort",
            content,
            requests: Vec::new(),
            payloads: Vec::new(),
            tasks: Vec::new(),
            reply: Some((Expect::Aborted, None)),
        }]);
    }

    /// Asks the I/O thread to finish (the client is being dropped).
    pub(crate) fn close(&self, reason: &str) {
        {
            let mut outbox = self.outbox();
            if outbox.closed.is_none() {
                outbox.closed = Some(reason.into());
            }
        }
        self.wake_pending.store(false, Ordering::SeqCst);
        self.wake();
    }
}

struct PendingRequest {
    expect: Expect,
    reply: Option<Arc<Reply>>,
}

/// A submit message kept until each of its tasks is answered, to send again to a controller
/// that restarted.
struct Sent {
    content: Vec<u8>,
    payloads: Vec<Vec<u8>>,
    /// Its tasks not answered yet.
    left: usize,
}

/// The I/O thread's own state.
pub(crate) struct Io {
    sock: Socket,
    shared: Arc<Shared>,
    wake_rx: UnixStream,
    timing: Timing,
    /// Each unanswered task's cell, its index there, and the number of its submit message.
    table: HashMap<TaskId, (Arc<Cell>, u32, u64)>,
    /// Submit messages with unanswered tasks, by number (in the order they were sent).
    sent: BTreeMap<u64, Sent>,
    next_sent: u64,
    /// The controller's instance number, as last heard.
    instance: u64,
    requests: VecDeque<PendingRequest>,
    last_heard: Instant,
    probing: bool,
    /// Why the loop ended; `None` after a panic.
    reason: Option<Arc<str>>,
}

impl Drop for Io {
    // Cleanup lives here so that waiters are released even if the loop panicked.
    fn drop(&mut self) {
        let reason = self
            .reason
            .take()
            .unwrap_or_else(|| "the client's I/O thread stopped unexpectedly".into());
        self.end(reason);
    }
}

impl Io {
    pub(crate) fn new(
        sock: Socket,
        shared: Arc<Shared>,
        wake_rx: UnixStream,
        timing: Timing,
        instance: u64,
    ) -> Io {
        Io {
            sock,
            shared,
            wake_rx,
            timing,
            table: HashMap::new(),
            sent: BTreeMap::new(),
            next_sent: 0,
            instance,
            requests: VecDeque::new(),
            last_heard: Instant::now(),
            probing: false,
            reason: None,
        }
    }

    fn outstanding(&self) -> bool {
        !self.table.is_empty() || !self.requests.is_empty()
    }

    /// Runs until the client closes or the connection fails; dropping `self` then ends every
    /// wait.
    pub(crate) fn run(mut self) {
        mark_io_thread();
        let reason: Arc<str> = match self.run_loop() {
            Ok(reason) => {
                // Closed: the controller may forget this connection. Never wait for one that
                // is gone; let the goodbye leave after the socket is closed.
                let _ = self.sock.set_send_timeout(0);
                let _ = self.sock.set_linger(500);
                let _ = self.sock.send(None, &FromClient::Goodbye, &[]);
                reason
            }
            Err(reason) => {
                tracing::warn!(
                    "client connection to {} lost: {reason}",
                    self.shared.address
                );
                reason.into()
            }
        };
        self.reason = Some(reason);
    }

    /// Fails everything still outstanding or queued, and refuses further messages.
    fn end(&mut self, reason: Arc<str>) {
        let lost = Lost {
            address: self.shared.address.clone(),
            reason: reason.clone(),
        };
        let leftover = {
            let mut outbox = self.shared.outbox();
            if outbox.closed.is_none() {
                outbox.closed = Some(reason);
            }
            std::mem::take(&mut outbox.queue)
        };
        for msg in leftover {
            for task in msg.tasks {
                task.cell.fail(&lost);
            }
            if let Some((_, Some(reply))) = msg.reply {
                reply.put(Err(lost.clone()));
            }
        }
        for (_, (cell, ..)) in self.table.drain() {
            cell.fail(&lost);
        }
        self.sent.clear();
        for request in self.requests.drain(..) {
            if let Some(reply) = request.reply {
                reply.put(Err(lost.clone()));
            }
        }
    }

    /// The loop; `Ok(reason)` when asked to close, `Err(reason)` when the connection failed.
    fn run_loop(&mut self) -> Result<Arc<str>, String> {
        let wake_fd = self.wake_rx.as_raw_fd();
        loop {
            self.drain_wake_pipe();
            if let Some(reason) = self.flush_outbox()? {
                return Ok(reason);
            }
            self.receive_all()?;
            let timeout = self.check_liveness()?;
            let timeout_ms = timeout.map_or(-1, |t| t.as_millis().max(1) as i64);
            transport::poll(
                &[Waitable::Socket(&self.sock), Waitable::Fd(wake_fd)],
                timeout_ms,
            )
            .map_err(|e| format!("polling the socket failed: {e}"))?;
        }
    }

    fn drain_wake_pipe(&mut self) {
        let mut buf = [0u8; 64];
        // Empty the pipe *before* clearing the flag: a byte written after this read stays
        // for the next poll, so no push is ever left without a wake-up.
        while let Ok(n) = (&self.wake_rx).read(&mut buf) {
            if n < buf.len() {
                break;
            }
        }
        self.shared.wake_pending.store(false, Ordering::SeqCst);
    }

    /// Sends everything queued; returns the close reason once the client asked to close.
    fn flush_outbox(&mut self) -> Result<Option<Arc<str>>, String> {
        let (queue, closed) = {
            let mut outbox = self.shared.outbox();
            (std::mem::take(&mut outbox.queue), outbox.closed.clone())
        };
        if !queue.is_empty() && !self.outstanding() {
            // The silence clock starts when there is something to hear about.
            self.last_heard = Instant::now();
        }
        let queue = merge_submits(queue)?;
        // Register everything before sending anything: if a send fails, the cleanup finds
        // every waiter in the table and the request queue.
        let mut messages = Vec::with_capacity(queue.len());
        for mut msg in queue {
            let number = (!msg.tasks.is_empty()).then(|| {
                self.next_sent += 1;
                self.next_sent
            });
            let left = msg.tasks.len();
            for task in msg.tasks.drain(..) {
                let number = number.unwrap_or_default();
                self.table.insert(task.id, (task.cell, task.index, number));
            }
            if let Some((expect, reply)) = msg.reply.take() {
                self.requests.push_back(PendingRequest { expect, reply });
            }
            messages.push((msg, number, left));
        }
        for (msg, number, left) in messages {
            let payloads: Vec<&[u8]> = msg.payloads.iter().map(Vec::as_slice).collect();
            self.sock
                .send_encoded(None, msg.msg_type, &msg.content, &payloads)
                .map_err(|e| format!("cannot send to the controller: {e}"))?;
            if let Some(number) = number {
                let sent = Sent {
                    content: msg.content,
                    payloads: msg.payloads,
                    left,
                };
                self.sent.insert(number, sent);
            }
        }
        Ok(closed)
    }

    fn receive_all(&mut self) -> Result<(), String> {
        loop {
            match self.sock.recv::<ToClient>() {
                Ok(Some(received)) => {
                    self.last_heard = Instant::now();
                    self.on_message(received.msg, received.payloads);
                }
                // `recv` skips bad messages itself; poll reports any still waiting.
                Ok(None) => return Ok(()),
                Err(e) => return Err(format!("receiving from the controller failed: {e}")),
            }
        }
    }

    fn on_message(&mut self, msg: ToClient, payloads: Vec<Vec<u8>>) {
        match msg {
            ToClient::Results { results } => self.on_results(results, payloads),
            ToClient::Status(report) => {
                self.note_engines(&report);
                let instance = report.controller.instance;
                self.answer(Some(Expect::Status), ToClient::Status(report));
                if instance != self.instance {
                    self.instance = instance;
                    self.submit_again();
                }
            }
            ToClient::Ack => self.answer(Some(Expect::Ack), ToClient::Ack),
            ToClient::Error { message } => {
                self.answer(None, ToClient::Error { message });
            }
            ToClient::Welcome { engines, .. } => {
                self.shared.engines.store(engines.len(), Ordering::Relaxed);
            }
            ToClient::Pending { .. } => {
                tracing::debug!("ignoring a pending list nobody asked for");
            }
            // Asked for by `cancel` on result handles.
            answer @ ToClient::Aborted { .. } => self.answer(Some(Expect::Aborted), answer),
            // Answers to requests made on their own connection (`requests.rs`).
            ToClient::QueueStatus(_) => {
                tracing::debug!("ignoring a queue status answer nobody asked for");
            }
        }
    }

    fn note_engines(&self, report: &StatusReport) {
        self.shared
            .engines
            .store(report.engines.len(), Ordering::Relaxed);
    }

    /// Gives an answer to the oldest request expecting it (`None`: any request, for errors).
    fn answer(&mut self, expect: Option<Expect>, msg: ToClient) {
        let position = self
            .requests
            .iter()
            .position(|r| expect.is_none_or(|e| r.expect == e));
        let Some(request) = position.and_then(|i| self.requests.remove(i)) else {
            if let ToClient::Error { message } = &msg {
                tracing::warn!("the controller reported an error: {message}");
            }
            return;
        };
        match request.reply {
            Some(reply) => reply.put(Ok(msg)),
            None if request.expect == Expect::Status => self.probing = false,
            None => {}
        }
    }

    fn on_results(&mut self, results: Vec<protocol::TaskOutcome>, payloads: Vec<Vec<u8>>) {
        let mut payloads = payloads.into_iter();
        let found: Vec<_> = results
            .into_iter()
            .filter_map(|outcome| {
                // Positional rule: a missing frame is an empty payload, not a shift.
                let payload = payloads.next().unwrap_or_default();
                match self.table.remove(&outcome.id) {
                    Some((cell, index, number)) => {
                        if let Some(sent) = self.sent.get_mut(&number) {
                            sent.left -= 1;
                            if sent.left == 0 {
                                self.sent.remove(&number);
                            }
                        }
                        Some((cell, index, outcome, payload))
                    }
                    None => {
                        tracing::debug!("result for unknown or finished task {}", outcome.id);
                        None
                    }
                }
            })
            .collect();
        // Consecutive outcomes usually belong to the same map: fill them under one lock.
        // Wakers and callbacks run once every lock is released.
        let mut wakeups = Wakeups::default();
        let mut found = found.into_iter().peekable();
        while let Some((cell, index, outcome, payload)) = found.next() {
            let mut state = cell.lock();
            cell.fill(&mut state, index as usize, outcome, payload, &mut wakeups);
            while let Some((_, index, outcome, payload)) =
                found.next_if(|(next, ..)| Arc::ptr_eq(next, &cell))
            {
                cell.fill(&mut state, index as usize, outcome, payload, &mut wakeups);
            }
        }
        wakeups.run();
    }

    /// The controller restarted and forgot the tasks it had: submits the unanswered ones
    /// again, in their first order (so that dependencies come before what depends on them).
    /// Tasks that depended on tasks finished before the restart fail with a dependency error,
    /// since the new controller never saw those.
    fn submit_again(&mut self) {
        let mut again = 0usize;
        for sent in self.sent.values() {
            let Ok(FromClient::Submit { tasks }) = protocol::decode::<FromClient>(&sent.content)
            else {
                continue;
            };
            let (tasks, payloads): (Vec<_>, Vec<&[u8]>) = tasks
                .into_iter()
                .zip(&sent.payloads)
                .filter(|(task, _)| self.table.contains_key(&task.id))
                .map(|(task, payload)| (task, payload.as_slice()))
                .unzip();
            if tasks.is_empty() {
                continue;
            }
            again += tasks.len();
            let Ok(content) = protocol::encode(&FromClient::Submit { tasks }) else {
                continue;
            };
            if let Err(e) = self.sock.send_encoded(None, "submit", &content, &payloads) {
                tracing::warn!("cannot submit tasks again after a controller restart: {e}");
                return;
            }
        }
        tracing::warn!(
            "the controller at {} restarted; submitted {again} unfinished task(s) again",
            self.shared.address
        );
    }

    /// Asks the controller for its status; the answer proves it alive and tells whether it
    /// restarted.
    fn probe(&mut self) -> Result<(), String> {
        let content = protocol::encode(&protocol::FromClient::Status)
            .map_err(|e| format!("cannot encode a status probe: {e}"))?;
        self.sock
            .send_encoded(None, "status", &content, &[])
            .map_err(|e| format!("cannot send to the controller: {e}"))?;
        self.requests.push_back(PendingRequest {
            expect: Expect::Status,
            reply: None,
        });
        self.probing = true;
        Ok(())
    }

    /// Probes or gives up on a silent controller; returns how long `poll` may sleep.
    fn check_liveness(&mut self) -> Result<Option<Duration>, String> {
        if !self.outstanding() {
            return Ok(None);
        }
        let silent = self.last_heard.elapsed();
        if silent >= self.timing.dead_after {
            return Err(format!(
                "no message from the controller for {:.1} s (it may have stopped or crashed)",
                silent.as_secs_f64()
            ));
        }
        if silent >= self.timing.probe_after && !self.probing {
            self.probe()?;
        }
        let next = if self.probing {
            self.timing.dead_after
        } else {
            self.timing.probe_after
        };
        Ok(Some(next.saturating_sub(silent)))
    }
}

#[cfg(test)]
mod merge_tests {
    use super::*;
    use protocol::{ClientId, TaskOptions, Work};

    fn single(seq: u64) -> Outgoing {
        Outgoing {
            msg_type: "submit",
            content: Vec::new(),
            requests: vec![TaskRequest {
                id: TaskId::new(ClientId(1), seq),
                work: Work::Call {
                    function: "f".into(),
                },
                options: TaskOptions::default(),
            }],
            payloads: vec![vec![seq as u8]],
            tasks: Vec::new(),
            reply: None,
        }
    }

    fn ids(msg: &Outgoing) -> Vec<TaskId> {
        match protocol::decode::<FromClient>(&msg.content) {
            Ok(FromClient::Submit { tasks }) => tasks.iter().map(|t| t.id).collect(),
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn consecutive_single_submits_become_one_message_in_order() {
        let status = Outgoing {
            msg_type: "status",
            content: protocol::encode(&FromClient::Status).unwrap(),
            requests: Vec::new(),
            payloads: Vec::new(),
            tasks: Vec::new(),
            reply: Some((Expect::Status, None)),
        };
        let queue = VecDeque::from([single(1), single(2), single(3), status, single(4)]);
        let out = merge_submits(queue).unwrap();
        assert_eq!(out.len(), 3);
        let id = |seq| TaskId::new(ClientId(1), seq);
        assert_eq!(ids(&out[0]), [id(1), id(2), id(3)]);
        assert_eq!(out[0].payloads, [vec![1], vec![2], vec![3]]);
        assert_eq!(out[1].msg_type, "status");
        assert_eq!(ids(&out[2]), [id(4)]);
    }
}
