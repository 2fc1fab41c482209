//! The replay window: per-session sequence numbers and a time window around the clock.

use std::collections::HashMap;

/// Remembers, per sender session, the highest sequence number accepted, and refuses messages
/// stamped outside a time window around this machine's clock.
///
/// Each socket has its own random session and numbers its messages 1, 2, 3…; one peer socket
/// delivers them in order, so anything not above the last accepted number is a replay. The
/// sequence check alone has two holes: a receiver that restarts (a controller started again
/// with `--reuse`, same key) has an empty table, and a bounded table forgets sessions. The
/// window closes both for anything older than it: a captured message can be played again only
/// within the window, and only to a receiver that has forgotten its session, which it does not
/// do for sessions heard from within the window unless the table overflows.
#[derive(Debug)]
pub struct ReplayGuard {
    /// Session → (last sequence number, when last heard from in µs since the epoch).
    last: HashMap<u64, (u64, u64)>,
    capacity: usize,
    window_us: u64,
}

/// Why [`ReplayGuard::check`] refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Its sequence number is not above the last one accepted from its session.
    Replayed,
    /// Its time stamp is further from this machine's clock than the window (by the given
    /// microseconds, positive when it is from the past): a replay, or clocks that disagree.
    Stale {
        /// How far in the past its stamp is by the receiver's clock (negative: in the future).
        behind_us: i64,
    },
}

/// Default time window: generous, since clocks of machines in a cluster may disagree.
pub const DEFAULT_REPLAY_WINDOW_S: u64 = 300;

impl Default for ReplayGuard {
    fn default() -> Self {
        ReplayGuard::new(
            65_536,
            std::time::Duration::from_secs(DEFAULT_REPLAY_WINDOW_S),
        )
    }
}

impl ReplayGuard {
    /// A guard remembering at most `capacity` sessions and refusing messages stamped more
    /// than `window` away from the receiver's clock (a zero window turns that check off).
    pub fn new(capacity: usize, window: std::time::Duration) -> ReplayGuard {
        ReplayGuard {
            last: HashMap::new(),
            capacity: capacity.max(1),
            window_us: u64::try_from(window.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// Accepts `(session, seq)` sent at `sent_us` if `seq` is above the last one accepted for
    /// that session and `sent_us` is within the window of `now_us` (both µs since the epoch).
    pub fn check(
        &mut self,
        session: u64,
        seq: u64,
        sent_us: u64,
        now_us: u64,
    ) -> Result<(), Refusal> {
        if self.window_us > 0 && sent_us.abs_diff(now_us) > self.window_us {
            let behind_us = i64::try_from(now_us as i128 - sent_us as i128).unwrap_or(i64::MAX);
            return Err(Refusal::Stale { behind_us });
        }
        if let Some((last, heard)) = self.last.get_mut(&session) {
            if seq <= *last {
                return Err(Refusal::Replayed);
            }
            *last = seq;
            *heard = now_us;
            return Ok(());
        }
        if self.last.len() >= self.capacity {
            self.evict(now_us);
        }
        self.last.insert(session, (seq, now_us));
        Ok(())
    }

    /// Sessions remembered.
    pub fn sessions(&self) -> usize {
        self.last.len()
    }

    fn evict(&mut self, now_us: u64) {
        // Sessions silent for longer than the window are safe to forget: anything captured
        // from them is stale by now.
        if self.window_us > 0 {
            let window = self.window_us;
            self.last
                .retain(|_, (_, heard)| now_us.saturating_sub(*heard) <= window);
        }
        if self.last.len() >= self.capacity {
            // Still full of live sessions: drop the older half (amortised O(1) per session).
            let mut stamps: Vec<u64> = self.last.values().map(|(_, heard)| *heard).collect();
            stamps.sort_unstable();
            let cut = stamps[stamps.len() / 2];
            self.last.retain(|_, (_, heard)| *heard > cut);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn replay_guard_refuses_old_sequence_numbers() {
        let mut guard = ReplayGuard::new(4, std::time::Duration::ZERO);
        let mut check = |session, seq| guard.check(session, seq, 0, 0);
        assert_eq!(check(1, 1), Ok(()));
        assert_eq!(check(1, 2), Ok(()));
        assert_eq!(check(1, 2), Err(Refusal::Replayed));
        assert_eq!(check(1, 1), Err(Refusal::Replayed));
        assert_eq!(check(2, 1), Ok(()));
        assert_eq!(check(1, 10), Ok(()));
        for session in 10..100 {
            assert_eq!(check(session, 1), Ok(()));
        }
        assert!(guard.sessions() <= 4);
    }

    #[test]
    fn replay_guard_refuses_messages_outside_its_time_window() {
        let mut guard = ReplayGuard::new(16, std::time::Duration::from_secs(300));
        let now = 1_000_000 * SEC;
        assert_eq!(guard.check(1, 1, now - 300 * SEC, now), Ok(()));
        assert_eq!(guard.check(2, 1, now + 299 * SEC, now), Ok(()));
        assert_eq!(
            guard.check(3, 1, now - 301 * SEC, now),
            Err(Refusal::Stale {
                behind_us: 301 * SEC as i64
            })
        );
        assert_eq!(
            guard.check(4, 1, now + 400 * SEC, now),
            Err(Refusal::Stale {
                behind_us: -400 * SEC as i64
            })
        );
        // A stale message does not touch the session's sequence.
        assert_eq!(guard.check(1, 2, now, now), Ok(()));
    }

    #[test]
    fn a_full_replay_guard_forgets_sessions_silent_past_the_window_first() {
        let mut guard = ReplayGuard::new(4, std::time::Duration::from_secs(60));
        let t0 = 1_000 * SEC;
        // Two sessions heard from long ago, two recently.
        guard.check(1, 5, t0, t0).unwrap();
        guard.check(2, 5, t0, t0).unwrap();
        let t1 = t0 + 100 * SEC;
        guard.check(3, 5, t1, t1).unwrap();
        guard.check(4, 5, t1, t1).unwrap();
        // Full: a new session evicts only the silent ones; the recent ones are still guarded.
        guard.check(5, 1, t1, t1).unwrap();
        assert_eq!(guard.sessions(), 3);
        assert_eq!(guard.check(3, 5, t1, t1), Err(Refusal::Replayed));
        assert_eq!(guard.check(4, 4, t1, t1), Err(Refusal::Replayed));
        // A replay from a forgotten session is stale by now anyway.
        assert!(matches!(
            guard.check(1, 5, t0, t1),
            Err(Refusal::Stale { .. })
        ));
    }
}
