//! The I/O thread: the only user of the client's socket, a thin shell around the client core.
//!
//! It takes the messages callers queued in the outbox ([`crate::shared`]), merges runs of
//! single-task submits ([`crate::submit::merge_submits`]), counts each message's tasks and
//! expected answer into the core, and sends them. It receives results and answers, asks the
//! core whose they are, and fills cells and reply slots. It blocks in `poll` on the socket and
//! the wake-up pipe, never in a sleep, so a round trip costs two thread hand-offs on top of
//! libzmq's own.
//!
//! The rules live in [`crate::core`]: when a silent controller is probed and given up on
//! (then every pending wait ends with [`crate::Error::ConnectionLost`]), and what to submit
//! again when the controller's instance changes. This thread reads the clock for them.
//!
//! While the controller is silent (a probe is out), the thread reads the connection file
//! again every [`RECHECK`]: when a new controller wrote another address or key there (a
//! plain `cluster start` after everything died picks new ports), it connects a new socket to
//! it and probes there, so the new instance number triggers the resubmission as after a
//! `--reuse` restart.

use crate::cell::{mark_io_thread, Cell, Lost, Wakeups};
use crate::core::{Answer, Core, Expect, Timing};
use crate::objects::IoObjects;
use crate::shared::{Reply, Shared};
use crate::submit::merge_submits;
use protocol::{StatusReport, ToClient};
use std::io::Read;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::{Socket, Waitable};

/// Who waits for a task: its cell and its index there.
type Waiter = (Arc<Cell>, u32);

/// How often a silent controller's connection file is read again.
const RECHECK: Duration = Duration::from_secs(1);

/// The connection file the client follows to a new controller.
pub(crate) struct Follow {
    pub(crate) file: PathBuf,
    /// The client address and key (hex) the socket was made from (`None`: unreadable then).
    pub(crate) identity: Option<(String, String)>,
    /// The send timeout to give a new socket (ms).
    pub(crate) send_ms: i32,
}

/// The I/O thread's own state.
pub(crate) struct Io {
    sock: Socket,
    shared: Arc<Shared>,
    wake_rx: UnixStream,
    core: Core<Waiter, Arc<Reply>>,
    /// Shared-object requests in flight, and lease renewals.
    objects: IoObjects,
    /// Why the loop ended; `None` after a panic.
    reason: Option<Arc<str>>,
    follow: Follow,
    /// When the connection file was last read again.
    checked: Instant,
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
        follow: Follow,
    ) -> Io {
        Io {
            sock,
            shared,
            wake_rx,
            core: Core::new(timing, instance, Instant::now()),
            objects: IoObjects::default(),
            reason: None,
            follow,
            checked: Instant::now(),
        }
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
                let _ = self.sock.send(None, &protocol::FromClient::Goodbye, &[]);
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
        let (leftover, objects) = {
            let mut outbox = self.shared.outbox();
            if outbox.closed.is_none() {
                outbox.closed = Some(reason);
            }
            (
                std::mem::take(&mut outbox.queue),
                std::mem::take(&mut outbox.objects),
            )
        };
        for slot in objects
            .into_iter()
            .filter_map(|m| m.slot)
            .chain(self.objects.drain())
        {
            slot.put(Err(lost.clone()));
        }
        for msg in leftover {
            for task in msg.tasks {
                task.cell.fail(&lost);
            }
            if let Some((_, Some(reply))) = msg.reply {
                reply.put(Err(lost.clone()));
            }
        }
        let (waiters, replies) = self.core.drain();
        for (cell, _) in waiters {
            cell.fail(&lost);
        }
        for reply in replies {
            reply.put(Err(lost.clone()));
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
            let now = Instant::now();
            if let Some((_, content)) = self.objects.renewal(&self.shared, now) {
                self.core.on_sending(now);
                self.core.set_others(self.objects.outstanding());
                self.sock
                    .send_encoded(None, "object", &content, &[])
                    .map_err(|e| format!("cannot send to the controller: {e}"))?;
            }
            let tick = self.core.on_tick(now).map_err(|s| s.reason())?;
            if tick.probe {
                self.probe()?;
            }
            let recheck = if self.core.probing() {
                self.follow_file(now)?;
                Some((self.checked + RECHECK).saturating_duration_since(Instant::now()))
            } else {
                None
            };
            let renew = self
                .objects
                .next_due()
                .map(|t| t.saturating_duration_since(Instant::now()));
            let wait = [tick.wait, renew, recheck].into_iter().flatten().min();
            let timeout_ms = wait.map_or(-1, |t| t.as_millis().max(1) as i64);
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
        let (queue, objects, closed) = {
            let mut outbox = self.shared.outbox();
            (
                std::mem::take(&mut outbox.queue),
                std::mem::take(&mut outbox.objects),
                outbox.closed.clone(),
            )
        };
        if !queue.is_empty() || !objects.is_empty() {
            self.core.on_sending(Instant::now());
        }
        for msg in objects {
            let payloads: Vec<&[u8]> = msg.payloads.iter().map(Vec::as_slice).collect();
            let sent = self
                .sock
                .send_encoded(None, "object", &msg.content, &payloads);
            // Counted before a failed send returns, so that the cleanup ends its wait.
            self.objects.sent(msg);
            self.core.set_others(self.objects.outstanding());
            sent.map_err(|e| format!("cannot send to the controller: {e}"))?;
        }
        let queue = merge_submits(queue)?;
        // Register everything before sending anything: if a send fails, the cleanup finds
        // every waiter in the core.
        let mut messages = Vec::with_capacity(queue.len());
        for mut msg in queue {
            let tasks = msg.tasks.drain(..).map(|t| (t.id, (t.cell, t.index)));
            let number = self.core.register(tasks, msg.reply.take());
            messages.push((msg, number));
        }
        for (msg, number) in messages {
            let payloads: Vec<&[u8]> = msg.payloads.iter().map(Vec::as_slice).collect();
            self.sock
                .send_encoded(None, msg.msg_type, &msg.content, &payloads)
                .map_err(|e| format!("cannot send to the controller: {e}"))?;
            if let Some(number) = number {
                self.core.keep(number, msg.content, msg.payloads);
            }
        }
        Ok(closed)
    }

    fn receive_all(&mut self) -> Result<(), String> {
        loop {
            match self.sock.recv::<ToClient>() {
                Ok(Some(received)) => {
                    self.core.on_heard(Instant::now());
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
                if self.core.on_instance(instance) {
                    self.submit_again();
                    self.objects_again();
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
            ToClient::Object { id, reply } => {
                let instance =
                    self.objects
                        .on_reply(&self.shared, id, reply, payloads, Instant::now());
                self.core.set_others(self.objects.outstanding());
                // Lease renewals keep the connection busy, so no status probe would tell.
                if instance.is_some_and(|i| self.core.on_instance(i)) {
                    self.submit_again();
                    self.objects_again();
                }
            }
            ToClient::QueueStatus(_) | ToClient::History { .. } => {
                tracing::debug!("ignoring an answer nobody asked for on this connection");
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
        match self.core.on_answer(expect) {
            Answer::Reply(reply) => reply.put(Ok(msg)),
            Answer::Unwaited => {}
            Answer::Unasked => {
                if let ToClient::Error { message } = &msg {
                    tracing::warn!("the controller reported an error: {message}");
                }
            }
        }
    }

    fn on_results(&mut self, results: Vec<protocol::TaskOutcome>, payloads: Vec<Vec<u8>>) {
        let mut payloads = payloads.into_iter();
        let found: Vec<_> = results
            .into_iter()
            .filter_map(|outcome| {
                // Positional rule: a missing frame is an empty payload, not a shift.
                let payload = payloads.next().unwrap_or_default();
                match self.core.on_result(outcome.id) {
                    Some((cell, index)) => Some((cell, index, outcome, payload)),
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
    /// again, in their first order. Tasks that depended on tasks finished before the restart
    /// fail with a dependency error, since the new controller never saw those.
    fn submit_again(&mut self) {
        let mut again = 0usize;
        for resubmit in self.core.resubmissions() {
            again += resubmit.payloads.len();
            let sent =
                self.sock
                    .send_encoded(None, "submit", &resubmit.content, &resubmit.payloads);
            if let Err(e) = sent {
                tracing::warn!("cannot submit tasks again after a controller restart: {e}");
                return;
            }
        }
        tracing::warn!(
            "the controller at {} restarted; submitted {again} unfinished task(s) again",
            self.shared.address
        );
    }

    /// The controller restarted: sends again the object requests still waiting (a blocked
    /// `get` keeps waiting at the new controller), and renews the leases at once.
    fn objects_again(&mut self) {
        let again = self.objects.again(Instant::now());
        let n = again.len();
        for (content, payloads) in again {
            if let Err(e) = self.sock.send_encoded(None, "object", content, &payloads) {
                tracing::warn!("cannot send object requests again after a controller restart: {e}");
                return;
            }
        }
        if n > 0 {
            tracing::warn!(
                "the controller at {} restarted; sent {n} waiting object request(s) again",
                self.shared.address
            );
        }
    }

    /// While the controller is silent: reads the connection file again (every [`RECHECK`]),
    /// and when it names another address or key, moves to a new socket connected there and
    /// probes it. The answer's new instance number has the unanswered tasks submitted again.
    fn follow_file(&mut self, now: Instant) -> Result<(), String> {
        if now.saturating_duration_since(self.checked) < RECHECK {
            return Ok(());
        }
        self.checked = now;
        let Some(identity) = crate::client::file_identity(&self.follow.file) else {
            // Missing or half written: the next check may read it.
            return Ok(());
        };
        if self.follow.identity.as_ref() == Some(&identity) {
            return Ok(());
        }
        let (sock, address) = match crate::client::dial(&self.follow.file) {
            Ok(dialed) => dialed,
            Err(e) => {
                tracing::warn!(
                    "cannot connect to the controller {} names now: {e}",
                    self.follow.file.display()
                );
                return Ok(());
            }
        };
        let _ = sock.set_send_timeout(self.follow.send_ms);
        let old = std::mem::replace(&mut self.sock, sock);
        let _ = old.set_linger(0);
        drop(old);
        self.follow.identity = Some(identity);
        tracing::warn!(
            "the connection file {} names another controller now, at {address}; following it",
            self.follow.file.display()
        );
        // The core counts one probe as out already; its answer goes to that one.
        self.probe()
    }

    /// Asks the controller for its status (the core counts the probe as a pending request);
    /// the answer proves it alive and tells whether it restarted.
    fn probe(&mut self) -> Result<(), String> {
        let content = protocol::encode(&protocol::FromClient::Status)
            .map_err(|e| format!("cannot encode a status probe: {e}"))?;
        self.sock
            .send_encoded(None, "status", &content, &[])
            .map_err(|e| format!("cannot send to the controller: {e}"))
    }
}
