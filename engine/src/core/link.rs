//! The engine's link to its controller: when silence means registering again, how attempts
//! back off, and when the engine gives up.
//!
//! Losing the controller is not the end: libzmq reconnects by itself, and when no ping has
//! come for a while (the controller died, restarted, or declared this engine dead) the engine
//! registers again with its uuid and former id. Silence counts from the later of the last
//! ping and the last registration answer. The first attempt comes after
//! [`REREGISTER_AFTER_MIN`] or two heartbeat periods, whichever is longer; unanswered, the
//! attempts back off (doubling from half a second or one period, up to
//! [`REREGISTER_BACKOFF_MAX`]). Only after the lonely timeout without any ping does the
//! engine give up. Nothing here reads the clock: the loop passes `now` and the time of the
//! last ping in.

use protocol::EngineId;
use std::time::{Duration, Instant};

/// Silence (no ping) after which the engine registers again, at least.
pub(crate) const REREGISTER_AFTER_MIN: Duration = Duration::from_secs(2);

/// Longest pause between registration attempts while the controller is silent.
pub(crate) const REREGISTER_BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Shortest pause between registration attempts (with heartbeat periods shorter than it).
const REREGISTER_BACKOFF_MIN: Duration = Duration::from_millis(500);

/// The registration state of an engine that registered once.
#[derive(Debug)]
pub(crate) struct Link {
    engine_id: EngineId,
    period: Duration,
    lonely_timeout: Duration,
    /// When the latest registration answer arrived.
    registered_at: Instant,
    /// When to register again while no ping comes (`None`: not silent long enough yet).
    next_attempt: Option<Instant>,
    backoff: Duration,
}

/// What the silence so far asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Silence {
    /// Nothing to do: pings come, the silence is short, or an attempt is under way.
    Fine,
    /// Send the registration again; `first` for the first attempt of this silence.
    RegisterAgain {
        /// How long the controller has been silent.
        silent: Duration,
        /// True for the first attempt since pings stopped.
        first: bool,
    },
    /// Silent past the lonely timeout: the engine gives up.
    Lost {
        /// How long the controller has been silent.
        silent: Duration,
    },
}

/// What a registration answer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Answered {
    /// It answered an attempt made because of silence.
    pub again: bool,
    /// The id the engine had, when the controller gave it another one.
    pub previous_id: Option<EngineId>,
}

impl Link {
    /// Registered at `now` as `engine_id`, pinged every `period_ms`.
    pub(crate) fn new(
        engine_id: EngineId,
        period_ms: u64,
        lonely_timeout: Duration,
        now: Instant,
    ) -> Link {
        Link {
            engine_id,
            period: Duration::from_millis(period_ms.max(1)),
            lonely_timeout,
            registered_at: now,
            next_attempt: None,
            backoff: Duration::ZERO,
        }
    }

    /// The id the controller gave this engine.
    pub(crate) fn engine_id(&self) -> EngineId {
        self.engine_id
    }

    /// How long the controller has been silent at `now`: since the last ping, or since the
    /// latest registration if that is later.
    pub(crate) fn silence(&self, now: Instant, last_ping: Option<Instant>) -> Duration {
        let since = last_ping.map_or(self.registered_at, |p| p.max(self.registered_at));
        now.saturating_duration_since(since)
    }

    /// Looks at the silence at `now` (the last ping came at `last_ping`, if ever).
    pub(crate) fn on_tick(&mut self, now: Instant, last_ping: Option<Instant>) -> Silence {
        let silent = self.silence(now, last_ping);
        if silent > self.lonely_timeout {
            return Silence::Lost { silent };
        }
        let threshold = (self.period * 2).max(REREGISTER_AFTER_MIN);
        if silent < threshold {
            self.next_attempt = None;
            self.backoff = Duration::ZERO;
            return Silence::Fine;
        }
        if self.next_attempt.is_some_and(|t| now < t) {
            return Silence::Fine;
        }
        let first = self.next_attempt.is_none();
        self.backoff = (self.backoff * 2)
            .max(self.period.max(REREGISTER_BACKOFF_MIN))
            .min(REREGISTER_BACKOFF_MAX);
        self.next_attempt = Some(now + self.backoff);
        Silence::RegisterAgain { silent, first }
    }

    /// The controller answered a registration at `now`: this engine is `engine_id`, pinged
    /// every `period_ms`. Silence counts from here, since pings resume within a period.
    pub(crate) fn on_registered(
        &mut self,
        engine_id: EngineId,
        period_ms: u64,
        now: Instant,
    ) -> Answered {
        let again = self.next_attempt.is_some();
        self.registered_at = now;
        self.next_attempt = None;
        self.backoff = Duration::ZERO;
        self.period = Duration::from_millis(period_ms.max(1));
        let previous_id = (engine_id != self.engine_id).then_some(self.engine_id);
        self.engine_id = engine_id;
        Answered { again, previous_id }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);
    const LONELY: Duration = Duration::from_secs(60);

    /// Ticks every 100 ms of a fake clock from `from` to `to` (pings stopped at `last_ping`)
    /// and returns the offsets (from `t0`) of the registration attempts.
    fn attempts(
        link: &mut Link,
        t0: Instant,
        range: (u32, u32),
        last_ping: Option<Instant>,
    ) -> Vec<u32> {
        let mut at = Vec::new();
        for ms in (range.0..=range.1).step_by(100) {
            match link.on_tick(t0 + ms * MS, last_ping) {
                Silence::Fine => {}
                Silence::RegisterAgain { .. } => at.push(ms),
                Silence::Lost { silent } => panic!("lost after {silent:?}"),
            }
        }
        at
    }

    #[test]
    fn pings_keep_the_link_quiet() {
        let t0 = Instant::now();
        let mut link = Link::new(EngineId(1), 100, LONELY, t0);
        for ms in (0..60_000).step_by(100) {
            let now = t0 + ms * MS;
            // A ping every 100 ms (the latest one 100 ms ago).
            assert_eq!(link.on_tick(now, Some(now - 100 * MS)), Silence::Fine);
        }
    }

    #[test]
    fn a_silent_controller_gets_registrations_that_back_off() {
        let t0 = Instant::now();
        let mut link = Link::new(EngineId(7), 100, LONELY, t0);
        let last_ping = Some(t0 + 500 * MS);
        // Silent from 500 ms: the first attempt at 2.5 s (the 2 s minimum), then pauses of
        // 0.5, 1, 2, 4 s and 5 s from then on.
        assert_eq!(
            attempts(&mut link, t0, (0, 25_000), last_ping),
            [2_500, 3_000, 4_000, 6_000, 10_000, 15_000, 20_000, 25_000]
        );
        // The first attempt of a silence is marked (worth a warning), later ones are not.
        let mut link = Link::new(EngineId(7), 100, LONELY, t0);
        assert_eq!(
            link.on_tick(t0 + 2_000 * MS, None),
            Silence::RegisterAgain {
                silent: 2_000 * MS,
                first: true
            }
        );
        assert!(matches!(
            link.on_tick(t0 + 2_500 * MS, None),
            Silence::RegisterAgain { first: false, .. }
        ));
    }

    #[test]
    fn long_heartbeat_periods_wait_two_periods_and_back_off_from_one() {
        let t0 = Instant::now();
        let mut link = Link::new(EngineId(0), 1_500, LONELY, t0);
        assert_eq!(
            attempts(&mut link, t0, (0, 12_500), None),
            [3_000, 4_500, 7_500, 12_500]
        );
    }

    #[test]
    fn pings_that_resume_reset_the_back_off() {
        let t0 = Instant::now();
        let mut link = Link::new(EngineId(0), 100, LONELY, t0);
        assert_eq!(
            attempts(&mut link, t0, (0, 4_000), None),
            [2_000, 2_500, 3_500]
        );
        // A ping at 4 s: quiet again, and a later silence starts over from the minimum.
        let ping = Some(t0 + 4_000 * MS);
        assert_eq!(
            attempts(&mut link, t0, (4_000, 7_000), ping),
            [6_000, 6_500]
        );
    }

    #[test]
    fn an_answer_resets_silence_and_may_change_the_id() {
        let t0 = Instant::now();
        let mut link = Link::new(EngineId(7), 100, LONELY, t0);
        assert!(matches!(
            link.on_tick(t0 + 3_000 * MS, None),
            Silence::RegisterAgain { .. }
        ));
        let answered = link.on_registered(EngineId(9), 200, t0 + 3_100 * MS);
        assert_eq!(
            answered,
            Answered {
                again: true,
                previous_id: Some(EngineId(7))
            }
        );
        assert_eq!(link.engine_id(), EngineId(9));
        // Silence counts from the answer (no ping ever came).
        assert_eq!(link.silence(t0 + 3_600 * MS, None), 500 * MS);
        assert_eq!(link.on_tick(t0 + 4_000 * MS, None), Silence::Fine);
        // An answer to a registration nobody asked for again (a reconnection) is not "again".
        let answered = link.on_registered(EngineId(9), 200, t0 + 4_100 * MS);
        assert_eq!(
            answered,
            Answered {
                again: false,
                previous_id: None
            }
        );
    }

    #[test]
    fn the_lonely_timeout_ends_it() {
        let t0 = Instant::now();
        let mut link = Link::new(EngineId(1), 100, 300 * MS, t0);
        let ping = Some(t0 + 200 * MS);
        assert_eq!(link.on_tick(t0 + 500 * MS, ping), Silence::Fine);
        assert_eq!(
            link.on_tick(t0 + 501 * MS, ping),
            Silence::Lost { silent: 301 * MS }
        );
    }
}
