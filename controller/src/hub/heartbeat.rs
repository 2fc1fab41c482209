//! The heartbeat rule. Every `heartbeat_period` the controller pings each live engine on the
//! heartbeat socket with a round number; an engine answers from a thread that never runs user
//! code. An engine that has left `heartbeat_misses` rounds unanswered is declared dead (its
//! tasks are retried or failed, see `engines.rs`); one with fewer unanswered is reported as
//! *unresponsive*. A registration counts as an answer to every round so far. An engine
//! declared dead by heartbeat that answers again (it was stopped, or cut off, for a while) is
//! taken back under its id; one that said goodbye is not.
//!
//! Heartbeats are for silent peers; a killed engine's closed connection is noticed by the
//! socket loop at once (`Core::on_engine_disconnected`).

use super::{Action, Core};
use std::time::Duration;

/// Ping rounds.
#[derive(Debug)]
pub(super) struct Heartbeats {
    /// The latest round sent (0: none yet).
    seq: u64,
    /// When the next round is due.
    next_ping: Duration,
}

impl Heartbeats {
    /// No round sent yet; the first is due at `first`.
    pub(super) fn new(first: Duration) -> Heartbeats {
        Heartbeats {
            seq: 0,
            next_ping: first,
        }
    }

    /// The latest round sent.
    pub(super) fn seq(&self) -> u64 {
        self.seq
    }

    pub(super) fn next_ping(&self) -> Duration {
        self.next_ping
    }

    /// Schedules the round after the one due now, `period` later, without a burst of rounds
    /// to catch up when the loop was held up.
    fn schedule_next(&mut self, now: Duration, period: Duration) {
        self.next_ping += period;
        if self.next_ping <= now {
            self.next_ping = now + period;
        }
    }
}

impl Core {
    /// A pong for round `seq` from the engine `uuid` (or whose heartbeat route is `route`).
    pub(super) fn pong(
        &mut self,
        route: &[u8],
        seq: u64,
        uuid: &str,
        usage: Option<protocol::EngineUsage>,
        out: &mut Vec<Action>,
    ) {
        let id = self.engines.with_uuid(uuid).or_else(|| {
            std::str::from_utf8(route)
                .ok()
                .and_then(|u| self.engines.with_uuid(u))
        });
        let Some(e) = id.and_then(|id| self.engines.get_mut(id)) else {
            return;
        };
        // A pong from the future is forged or from another controller's life.
        if seq > self.heartbeats.seq {
            return;
        }
        if usage.is_some() {
            e.usage = usage;
        }
        if e.alive {
            e.last_pong_seq = e.last_pong_seq.max(seq);
            e.missed = 0;
        } else if !e.left && e.pid != 0 {
            // Declared dead by heartbeat, yet it answers (it was stopped, or cut off, for
            // a while): it is back, under its id. Its old tasks went elsewhere already.
            let id = e.id;
            tracing::info!("engine {id} answers heartbeats again; taking it back");
            self.admit(id, "came back", out);
        }
    }

    /// A heartbeat round: counts each live engine's unanswered rounds, declares the silent
    /// ones dead, then pings the others.
    pub(super) fn heartbeat_round(&mut self, now: Duration, out: &mut Vec<Action>) {
        self.heartbeats
            .schedule_next(now, self.config.heartbeat_period);
        let misses = u64::from(self.config.heartbeat_misses);
        let sent = self.heartbeats.seq;
        let mut dead = Vec::new();
        for e in self.engines.alive_mut() {
            let unanswered = sent.saturating_sub(e.last_pong_seq);
            e.missed = u32::try_from(unanswered).unwrap_or(u32::MAX);
            if unanswered >= misses {
                dead.push(e.id);
            } else if unanswered > 0 {
                tracing::debug!("engine {} missed {unanswered} heartbeat(s)", e.id);
            }
        }
        for id in dead {
            self.lose_engine(id, "heartbeat", out);
        }
        self.heartbeats.seq += 1;
        for e in self.engines.alive() {
            out.push(Action::Ping {
                engine: e.id,
                route: e.uuid.as_bytes().to_vec(),
                seq: self.heartbeats.seq,
            });
        }
    }
}
