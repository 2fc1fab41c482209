//! The client's sans-IO core: who waits for which task and answer, when a silent controller
//! is probed and when it is given up on, and what to submit again when the controller
//! restarted. No socket and no clock: the I/O thread passes `now` in and does the sending.
//!
//! * **Pending tables.** Each task sent and not answered yet maps to its waiter `W` (in the
//!   client, a cell and the index in it) and to the number of the submit message that
//!   carried it. Requests wait in one queue in the order they were sent; an answer goes to
//!   the oldest request expecting its kind (an error goes to the oldest request of any
//!   kind), so that answers find their waiters `R` even when several requests are out.
//! * **Liveness.** libzmq reconnects silently, so a stopped controller shows only as
//!   silence. While anything is outstanding, [`Timing::probe_after`] of silence sends a
//!   status request, whose answer proves the controller alive, and [`Timing::dead_after`]
//!   declares the connection lost. With nothing outstanding there is nothing to hear about,
//!   and the silence clock starts again with the next message sent.
//! * **Resubmission.** Every status answer carries the controller's instance number. When it
//!   changes, the controller restarted on the same ports (`--reuse`) and knows nothing of
//!   the tasks its previous life had queued: the submit messages still holding unanswered
//!   tasks are sent again, cut down to those tasks, in the order first sent (so dependencies
//!   come before what depends on them). Each submit is kept until all its tasks are answered.

use protocol::{FromClient, TaskId};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Which answer a request expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expect {
    /// [`protocol::ToClient::Status`].
    Status,
    /// [`protocol::ToClient::Ack`].
    Ack,
    /// [`protocol::ToClient::Aborted`].
    Aborted,
}

/// Probe and give-up delays, derived from the connect timeout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// What the silence at a tick asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tick {
    /// Send a status probe now (the core already counts it as a pending request).
    pub(crate) probe: bool,
    /// How long the I/O thread may sleep before the next tick (`None`: until woken).
    pub(crate) wait: Option<Duration>,
}

/// The controller was silent past [`Timing::dead_after`] with work outstanding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Silent(pub(crate) Duration);

impl Silent {
    /// Why the connection is lost, in words.
    pub(crate) fn reason(&self) -> String {
        format!(
            "no message from the controller for {:.1} s (it may have stopped or crashed)",
            self.0.as_secs_f64()
        )
    }
}

/// Where an answer goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Answer<R> {
    /// To this waiter.
    Reply(R),
    /// To a request nobody waits for (a probe, or an abort sent without waiting).
    Unwaited,
    /// No request expects it.
    Unasked,
}

/// A submit message that may have to be sent again.
#[derive(Debug, Default)]
struct Sent {
    content: Vec<u8>,
    payloads: Vec<Vec<u8>>,
    /// Its tasks not answered yet.
    left: usize,
}

/// A submit message to send again: encoded content, and the payloads of its tasks.
#[derive(Debug)]
pub(crate) struct Resubmit<'a> {
    pub(crate) content: Vec<u8>,
    pub(crate) payloads: Vec<&'a [u8]>,
}

#[derive(Debug)]
struct Pending<R> {
    expect: Expect,
    reply: Option<R>,
}

/// Pending tasks and requests, timers and resubmission; `W` waits for a task's outcome,
/// `R` for a request's answer.
#[derive(Debug)]
pub(crate) struct Core<W, R> {
    timing: Timing,
    /// Each unanswered task's waiter and the number of its submit message.
    tasks: HashMap<TaskId, (W, u64)>,
    /// Submit messages with unanswered tasks, by number (in the order they were sent).
    sent: BTreeMap<u64, Sent>,
    next_sent: u64,
    /// The controller's instance number, as last heard.
    instance: u64,
    requests: VecDeque<Pending<R>>,
    last_heard: Instant,
    probing: bool,
    /// Other requests waiting for answers (shared-object requests, matched by id elsewhere).
    others: usize,
}

impl<W, R> Core<W, R> {
    /// A core for a connection welcomed at `now` by controller instance `instance`.
    pub(crate) fn new(timing: Timing, instance: u64, now: Instant) -> Self {
        Core {
            timing,
            tasks: HashMap::new(),
            sent: BTreeMap::new(),
            next_sent: 0,
            instance,
            requests: VecDeque::new(),
            last_heard: now,
            probing: false,
            others: 0,
        }
    }

    /// True while a status probe is out unanswered (the controller is silent).
    pub(crate) fn probing(&self) -> bool {
        self.probing
    }

    /// True while a task or a request waits for an answer.
    pub(crate) fn outstanding(&self) -> bool {
        !self.tasks.is_empty() || !self.requests.is_empty() || self.others > 0
    }

    /// `n` other requests (shared-object requests) wait for answers: while any does, a silent
    /// controller is probed and given up on as for tasks.
    pub(crate) fn set_others(&mut self, n: usize) {
        self.others = n;
    }

    /// Messages are about to be sent at `now`: with nothing outstanding before them, the
    /// silence clock starts here, when there is something to hear about.
    pub(crate) fn on_sending(&mut self, now: Instant) {
        if !self.outstanding() {
            self.last_heard = now;
        }
    }

    /// Counts in a message about to be sent: its tasks with their waiters, and the answer it
    /// expects (with its waiter, if anyone waits). Returns the message's submit number when
    /// it carries tasks; keep its bytes with [`Core::keep`] once it is sent.
    pub(crate) fn register(
        &mut self,
        tasks: impl IntoIterator<Item = (TaskId, W)>,
        reply: Option<(Expect, Option<R>)>,
    ) -> Option<u64> {
        let mut tasks = tasks.into_iter().peekable();
        let number = tasks.peek().is_some().then(|| {
            self.next_sent += 1;
            self.next_sent
        });
        if let Some(number) = number {
            let mut left = 0;
            for (id, waiter) in tasks {
                self.tasks.insert(id, (waiter, number));
                left += 1;
            }
            self.sent.insert(
                number,
                Sent {
                    left,
                    ..Sent::default()
                },
            );
        }
        if let Some((expect, reply)) = reply {
            self.requests.push_back(Pending { expect, reply });
        }
        number
    }

    /// Keeps the bytes of submit `number`, sent, to send again after a controller restart.
    pub(crate) fn keep(&mut self, number: u64, content: Vec<u8>, payloads: Vec<Vec<u8>>) {
        if let Some(sent) = self.sent.get_mut(&number) {
            sent.content = content;
            sent.payloads = payloads;
        }
    }

    /// A message arrived at `now`.
    pub(crate) fn on_heard(&mut self, now: Instant) {
        self.last_heard = now;
    }

    /// The outcome of task `id` arrived: returns its waiter (`None` for a task unknown or
    /// answered already).
    pub(crate) fn on_result(&mut self, id: TaskId) -> Option<W> {
        let (waiter, number) = self.tasks.remove(&id)?;
        if let Some(sent) = self.sent.get_mut(&number) {
            sent.left = sent.left.saturating_sub(1);
            if sent.left == 0 {
                self.sent.remove(&number);
            }
        }
        Some(waiter)
    }

    /// An answer arrived: it goes to the oldest request expecting `expect` (`None`, for
    /// errors: the oldest request of any kind).
    pub(crate) fn on_answer(&mut self, expect: Option<Expect>) -> Answer<R> {
        let position = self
            .requests
            .iter()
            .position(|r| expect.is_none_or(|e| r.expect == e));
        let Some(request) = position.and_then(|i| self.requests.remove(i)) else {
            return Answer::Unasked;
        };
        match request.reply {
            Some(reply) => Answer::Reply(reply),
            None => {
                if request.expect == Expect::Status {
                    self.probing = false;
                }
                Answer::Unwaited
            }
        }
    }

    /// A status answer named controller instance `instance`: true when it differs from the
    /// one heard before (the controller restarted; send [`Core::resubmissions`]).
    pub(crate) fn on_instance(&mut self, instance: u64) -> bool {
        let changed = instance != self.instance;
        self.instance = instance;
        changed
    }

    /// The submit messages to send again after a restart: each kept one cut down to its
    /// unanswered tasks, in the order first sent. Messages that no longer decode (never: the
    /// client encoded them) are skipped.
    pub(crate) fn resubmissions(&self) -> Vec<Resubmit<'_>> {
        let mut again = Vec::new();
        for sent in self.sent.values() {
            let Ok(FromClient::Submit { tasks }) = protocol::decode::<FromClient>(&sent.content)
            else {
                continue;
            };
            let (tasks, payloads): (Vec<_>, Vec<&[u8]>) = tasks
                .into_iter()
                .zip(&sent.payloads)
                .filter(|(task, _)| self.tasks.contains_key(&task.id))
                .map(|(task, payload)| (task, payload.as_slice()))
                .unzip();
            if tasks.is_empty() {
                continue;
            }
            if let Ok(content) = protocol::encode(&FromClient::Submit { tasks }) {
                again.push(Resubmit { content, payloads });
            }
        }
        again
    }

    /// Looks at the silence at `now`: whether to probe, how long to sleep, or that the
    /// controller is gone.
    pub(crate) fn on_tick(&mut self, now: Instant) -> Result<Tick, Silent> {
        if !self.outstanding() {
            return Ok(Tick {
                probe: false,
                wait: None,
            });
        }
        let silent = now.saturating_duration_since(self.last_heard);
        if silent >= self.timing.dead_after {
            return Err(Silent(silent));
        }
        let probe = silent >= self.timing.probe_after && !self.probing;
        if probe {
            self.requests.push_back(Pending {
                expect: Expect::Status,
                reply: None,
            });
            self.probing = true;
        }
        let next = if self.probing {
            self.timing.dead_after
        } else {
            self.timing.probe_after
        };
        Ok(Tick {
            probe,
            wait: Some(next.saturating_sub(silent)),
        })
    }

    /// Ends everything: the waiters of every unanswered task and request, to be told the
    /// connection is lost.
    pub(crate) fn drain(&mut self) -> (Vec<W>, Vec<R>) {
        self.sent.clear();
        let waiters = self.tasks.drain().map(|(_, (w, _))| w).collect();
        let replies = self.requests.drain(..).filter_map(|r| r.reply).collect();
        (waiters, replies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::{ClientId, TaskOptions, TaskRequest, Work};

    const MS: Duration = Duration::from_millis(1);

    fn timing() -> Timing {
        // What a 300 ms connect timeout gives: probe after 75 ms, lost after 900 ms.
        Timing::from_connect_timeout(300 * MS)
    }

    fn id(seq: u64) -> TaskId {
        TaskId::new(ClientId(1), seq)
    }

    /// A submit of tasks `seqs`, each with a one-byte payload equal to its number.
    fn submit(seqs: &[u64]) -> (Vec<u8>, Vec<Vec<u8>>) {
        let tasks = seqs
            .iter()
            .map(|&s| TaskRequest {
                id: id(s),
                work: Work::Call {
                    function: "f".into(),
                },
                options: TaskOptions::default(),
            })
            .collect();
        let content = protocol::encode(&FromClient::Submit { tasks }).unwrap();
        (content, seqs.iter().map(|&s| vec![s as u8]).collect())
    }

    /// Registers and "sends" a submit of `seqs`, each task's waiter being its number.
    fn send(core: &mut Core<u64, &'static str>, seqs: &[u64], now: Instant) -> u64 {
        core.on_sending(now);
        let number = core
            .register(seqs.iter().map(|&s| (id(s), s)), None)
            .unwrap();
        let (content, payloads) = submit(seqs);
        core.keep(number, content, payloads);
        number
    }

    fn ids_of(resubmit: &Resubmit<'_>) -> Vec<u64> {
        match protocol::decode::<FromClient>(&resubmit.content).unwrap() {
            FromClient::Submit { tasks } => tasks.iter().map(|t| t.id.0 & 0xffff).collect(),
            other => panic!("not a submit: {other:?}"),
        }
    }

    #[test]
    fn timing_follows_the_connect_timeout() {
        assert_eq!(
            timing(),
            Timing {
                probe_after: 75 * MS,
                dead_after: 900 * MS
            }
        );
        let long = Timing::from_connect_timeout(Duration::from_secs(10));
        assert_eq!(long.probe_after, Duration::from_secs(1));
        assert_eq!(long.dead_after, Duration::from_secs(30));
        assert_eq!(Timing::from_connect_timeout(MS).probe_after, 20 * MS);
    }

    #[test]
    fn a_silent_controller_is_probed_then_given_up_on() {
        let t0 = Instant::now();
        let mut core: Core<u64, &str> = Core::new(timing(), 1, t0);
        send(&mut core, &[1], t0 + 10 * MS);
        let tick = |core: &mut Core<u64, &str>, ms| core.on_tick(t0 + ms * MS);
        // Silence counts from the send, not from the welcome.
        assert_eq!(
            tick(&mut core, 80),
            Ok(Tick {
                probe: false,
                wait: Some(5 * MS)
            })
        );
        assert_eq!(
            tick(&mut core, 85),
            Ok(Tick {
                probe: true,
                wait: Some(825 * MS)
            })
        );
        // One probe at a time.
        assert_eq!(
            tick(&mut core, 500),
            Ok(Tick {
                probe: false,
                wait: Some(410 * MS)
            })
        );
        assert_eq!(tick(&mut core, 910), Err(Silent(900 * MS)));
        assert!(Silent(900 * MS).reason().contains("0.9 s"));
        // Every waiter is handed back to be told: the task and nobody for the probe.
        let (waiters, replies) = core.drain();
        assert_eq!((waiters, replies), (vec![1], vec![]));
        assert!(!core.outstanding());
    }

    #[test]
    fn an_answered_probe_keeps_a_held_task_waiting() {
        let t0 = Instant::now();
        let mut core: Core<u64, &str> = Core::new(timing(), 1, t0);
        send(&mut core, &[1], t0);
        for round in 0..20u32 {
            let at = t0 + (round * 80 + 80) * MS;
            assert!(core.on_tick(at).unwrap().probe, "round {round}");
            // The controller answers the probe at once.
            core.on_heard(at);
            assert_eq!(core.on_answer(Some(Expect::Status)), Answer::Unwaited);
            assert!(!core.on_instance(1), "same controller: nothing to resubmit");
        }
        assert!(core.outstanding(), "the task still waits, 1.6 s on");
    }

    #[test]
    fn with_nothing_outstanding_silence_does_not_matter() {
        let t0 = Instant::now();
        let mut core: Core<u64, &str> = Core::new(timing(), 1, t0);
        assert_eq!(
            core.on_tick(t0 + Duration::from_secs(3600)),
            Ok(Tick {
                probe: false,
                wait: None
            })
        );
        // A task answered: nothing outstanding again, whatever the silence.
        send(&mut core, &[1], t0);
        assert_eq!(core.on_result(id(1)), Some(1));
        assert_eq!(core.on_result(id(1)), None, "answered once");
        assert_eq!(
            core.on_tick(t0 + Duration::from_secs(3600)).unwrap().wait,
            None
        );
        // A new send an hour later starts the silence clock afresh.
        let later = t0 + Duration::from_secs(3600);
        send(&mut core, &[2], later);
        assert!(!core.on_tick(later + 10 * MS).unwrap().probe);
    }

    #[test]
    fn a_new_controller_instance_gets_the_unanswered_tasks_again_in_their_first_order() {
        let t0 = Instant::now();
        let mut core: Core<u64, &str> = Core::new(timing(), 1, t0);
        send(&mut core, &[1, 2, 3], t0);
        send(&mut core, &[4, 5], t0);
        send(&mut core, &[6], t0);
        send(&mut core, &[7, 8], t0);
        // Answered before the restart: 2 of the first, all of the second, 8 of the last.
        for seq in [2, 4, 5, 8] {
            assert_eq!(core.on_result(id(seq)), Some(seq));
        }
        assert!(core.resubmissions().len() == 3, "kept until answered");
        assert!(core.on_instance(2), "a restart");
        let again = core.resubmissions();
        let ids: Vec<Vec<u64>> = again.iter().map(ids_of).collect();
        assert_eq!(ids, [vec![1, 3], vec![6], vec![7]]);
        // Payloads stay with their tasks.
        let payloads: Vec<Vec<&[u8]>> = again.iter().map(|r| r.payloads.clone()).collect();
        assert_eq!(
            payloads,
            [vec![&[1u8][..], &[3]], vec![&[6][..]], vec![&[7][..]]]
        );
        assert!(
            !core.on_instance(2),
            "the same instance again: no second resubmission"
        );
        // Answers still reach the waiters of resubmitted tasks.
        assert_eq!(core.on_result(id(3)), Some(3));
        assert_eq!(ids_of(&core.resubmissions()[0]), [1]);
    }

    #[test]
    fn answers_go_to_the_oldest_request_expecting_them() {
        let t0 = Instant::now();
        let mut core: Core<u64, &str> = Core::new(timing(), 1, t0);
        core.register([], Some((Expect::Status, Some("status a"))));
        core.register([], Some((Expect::Ack, Some("purge"))));
        core.register([], Some((Expect::Aborted, None)));
        core.register([], Some((Expect::Status, Some("status b"))));
        // A probe joins the queue too.
        assert!(core.on_tick(t0 + 100 * MS).unwrap().probe);
        assert_eq!(core.on_answer(Some(Expect::Ack)), Answer::Reply("purge"));
        assert_eq!(
            core.on_answer(Some(Expect::Status)),
            Answer::Reply("status a")
        );
        // An error goes to the oldest request of any kind: the abort nobody waits for.
        assert_eq!(core.on_answer(None), Answer::Unwaited);
        assert_eq!(
            core.on_answer(Some(Expect::Status)),
            Answer::Reply("status b")
        );
        // The probe's answer; it may be sent again after the next silence.
        assert_eq!(core.on_answer(Some(Expect::Status)), Answer::Unwaited);
        assert_eq!(core.on_answer(Some(Expect::Status)), Answer::Unasked);
        assert_eq!(core.on_answer(None), Answer::Unasked);
        assert!(!core.outstanding());
        // Requests' waiters are handed back on the way out.
        core.register([], Some((Expect::Ack, Some("shutdown"))));
        core.register([], Some((Expect::Ack, None)));
        assert_eq!(core.drain(), (vec![], vec!["shutdown"]));
    }

    #[test]
    fn only_messages_with_tasks_get_submit_numbers() {
        let t0 = Instant::now();
        let mut core: Core<u64, &str> = Core::new(timing(), 1, t0);
        assert_eq!(core.register([], Some((Expect::Status, None))), None);
        assert_eq!(core.register([(id(1), 1)], None), Some(1));
        assert_eq!(core.register([(id(2), 2)], None), Some(2));
    }
}
