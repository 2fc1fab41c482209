//! Engines that die are started again: `restart = "on-failure"` (a `[restart]` table, or a
//! flag), for local, ssh and Slurm engines alike.
//!
//! [`RestartPolicy::on_exit`] is pure: given how an engine ended, how long it had run, its
//! restart history and `now`, it says restart at this time, or give up (and why). The
//! launcher that watches the processes (or jobs) carries it out and logs and counts each
//! restart for `cluster status`.
//!
//! Rules: `never` restarts nothing; `on-failure` restarts an engine that exited non-zero or
//! was killed by a signal (not one that exited 0: it was told to stop); `always` also
//! restarts one that exited 0 on its own. The wait before a restart doubles with each
//! consecutive quick death (from `backoff_initial` up to `backoff_max`), and starts over
//! once an engine ran at least `stable_after`. More than `limit` restarts within `window`
//! stops restarting: a crash loop must end, with the reason in `cluster status`.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

/// When to restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Never (the default).
    #[default]
    Never,
    /// After a non-zero exit or a death by signal.
    OnFailure,
    /// After any exit the cluster did not ask for.
    Always,
}

/// The `[restart]` table (`mode = "on-failure"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RestartSettings {
    /// When to restart.
    pub mode: Mode,
    /// Restarts allowed within `window_s`.
    pub limit: u32,
    /// Seconds over which `limit` counts.
    pub window_s: u64,
    /// First wait before a restart, milliseconds.
    pub backoff_initial_ms: u64,
    /// Longest wait before a restart, milliseconds.
    pub backoff_max_ms: u64,
    /// Seconds of running after which an engine counts as healthy (the back-off resets).
    pub stable_after_s: u64,
}

impl Default for RestartSettings {
    fn default() -> Self {
        RestartSettings {
            mode: Mode::Never,
            limit: 5,
            window_s: 600,
            backoff_initial_ms: 500,
            backoff_max_ms: 60_000,
            stable_after_s: 60,
        }
    }
}

impl RestartSettings {
    /// Reads the `[restart]` table of `profile`'s settings.
    pub fn load(
        profile: &profiles::Profile,
        overrides: &[(&str, String)],
    ) -> Result<RestartSettings, profiles::ProfileError> {
        crate::settings::section(profile, "restart", overrides)
    }

    /// The policy.
    pub fn policy(&self) -> RestartPolicy {
        RestartPolicy {
            mode: self.mode,
            limit: self.limit,
            window: Duration::from_secs(self.window_s),
            backoff_initial: Duration::from_millis(self.backoff_initial_ms),
            backoff_max: Duration::from_millis(self.backoff_max_ms.max(self.backoff_initial_ms)),
            stable_after: Duration::from_secs(self.stable_after_s),
        }
    }
}

/// See the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestartPolicy {
    /// When to restart.
    pub mode: Mode,
    /// Restarts allowed within `window`.
    pub limit: u32,
    /// The window `limit` counts over.
    pub window: Duration,
    /// First back-off.
    pub backoff_initial: Duration,
    /// Longest back-off.
    pub backoff_max: Duration,
    /// Run time after which the back-off starts over.
    pub stable_after: Duration,
}

/// How an engine ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Exit {
    /// Exit code 0.
    Success,
    /// A non-zero exit code.
    Code(i32),
    /// Killed by this signal (9: `kill -9` or the out-of-memory killer; 11: a segfault).
    Signal(i32),
    /// Its job ended badly, or it vanished (a host that went away).
    Lost,
    /// The cluster stopped it (`cluster stop`, scaling down, a drain): never restarted.
    Requested,
}

impl Exit {
    /// From a process's exit status (`code`, or the signal that killed it).
    pub fn from_status(code: Option<i32>, signal: Option<i32>) -> Exit {
        match (code, signal) {
            (Some(0), _) => Exit::Success,
            (Some(c), _) => Exit::Code(c),
            (None, Some(s)) => Exit::Signal(s),
            (None, None) => Exit::Lost,
        }
    }

    /// How a Slurm job that ended in `state` ended, for its engines: COMPLETED is a
    /// success (the engines exited 0, e.g. after a drain), CANCELLED was asked for
    /// (`scancel`, by the cluster or a person), every other end (FAILED, TIMEOUT,
    /// NODE_FAIL, PREEMPTED, OUT_OF_MEMORY…) and an unknown one count as lost.
    pub fn from_job(state: &crate::slurm::JobState) -> Exit {
        use crate::slurm::{JobState, Phase};
        match (state, state.phase()) {
            (JobState::Cancelled, _) => Exit::Requested,
            (_, Phase::Completed) => Exit::Success,
            _ => Exit::Lost,
        }
    }

    fn describe(&self) -> String {
        match self {
            Exit::Success => "exited with 0".into(),
            Exit::Code(c) => format!("exited with {c}"),
            Exit::Signal(s) => format!("was killed by signal {s}"),
            Exit::Lost => "was lost".into(),
            Exit::Requested => "was stopped".into(),
        }
    }
}

/// One engine slot's restart history.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History {
    /// When each recent restart was decided (within the window).
    restarts: VecDeque<Duration>,
    /// Quick deaths in a row (the back-off's exponent).
    quick: u32,
    /// Restarts in all, for `cluster status`.
    pub total: u64,
}

/// The answer for one exit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Start the engine again at this time.
    RestartAt(Duration),
    /// Do not, and say why in the log and `cluster status`.
    GiveUp(String),
    /// Not a case for restarting (mode, or a requested stop).
    No,
}

impl RestartPolicy {
    /// What to do about an engine that ended at `now` with `exit` after running `ran`.
    pub fn on_exit(
        &self,
        history: &mut History,
        exit: Exit,
        ran: Duration,
        now: Duration,
    ) -> Verdict {
        let wanted = match (self.mode, exit) {
            (_, Exit::Requested) | (Mode::Never, _) => false,
            (Mode::OnFailure, Exit::Success) => false,
            (Mode::OnFailure, _) | (Mode::Always, _) => true,
        };
        if !wanted {
            return Verdict::No;
        }
        while history
            .restarts
            .front()
            .is_some_and(|t| now.saturating_sub(*t) >= self.window)
        {
            history.restarts.pop_front();
        }
        if history.restarts.len() >= self.limit as usize {
            return Verdict::GiveUp(format!(
                "the engine {} and was restarted {} time(s) within {} s (limit {}): not restarting a crash loop",
                exit.describe(),
                history.restarts.len(),
                self.window.as_secs(),
                self.limit
            ));
        }
        if ran >= self.stable_after {
            history.quick = 0;
        }
        let wait = self
            .backoff_initial
            .saturating_mul(1u32 << history.quick.min(20))
            .min(self.backoff_max);
        history.quick = history.quick.saturating_add(1);
        history.restarts.push_back(now);
        history.total += 1;
        Verdict::RestartAt(now + wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn policy() -> RestartPolicy {
        RestartSettings {
            mode: Mode::OnFailure,
            limit: 3,
            window_s: 60,
            backoff_initial_ms: 100,
            backoff_max_ms: 250,
            stable_after_s: 10,
        }
        .policy()
    }

    #[test]
    fn on_failure_restarts_failures_only() {
        let p = policy();
        let mut h = History::default();
        assert_eq!(p.on_exit(&mut h, Exit::Success, ms(5), ms(0)), Verdict::No);
        assert_eq!(
            p.on_exit(&mut h, Exit::Requested, ms(5), ms(0)),
            Verdict::No
        );
        assert_eq!(
            p.on_exit(&mut h, Exit::Signal(9), ms(5), ms(1000)),
            Verdict::RestartAt(ms(1100))
        );
        let never = RestartPolicy {
            mode: Mode::Never,
            ..p.clone()
        };
        assert_eq!(
            never.on_exit(&mut h, Exit::Code(1), ms(5), ms(0)),
            Verdict::No
        );
        let always = RestartPolicy {
            mode: Mode::Always,
            ..p
        };
        assert!(matches!(
            always.on_exit(&mut History::default(), Exit::Success, ms(5), ms(0)),
            Verdict::RestartAt(_)
        ));
    }

    #[test]
    fn back_off_grows_then_the_limit_stops_a_crash_loop() {
        let p = policy();
        let mut h = History::default();
        let mut now = ms(0);
        let mut waits = Vec::new();
        loop {
            match p.on_exit(&mut h, Exit::Code(139), ms(20), now) {
                Verdict::RestartAt(at) => {
                    waits.push(at - now);
                    now = at + ms(20);
                }
                Verdict::GiveUp(why) => {
                    assert!(
                        why.contains("crash loop") && why.contains("exited with 139"),
                        "{why}"
                    );
                    break;
                }
                Verdict::No => panic!(),
            }
        }
        assert_eq!(waits, vec![ms(100), ms(200), ms(250)]);
        assert_eq!(h.total, 3);
        // Once the window has passed, restarts are allowed again.
        assert!(matches!(
            p.on_exit(&mut h, Exit::Code(1), ms(20), now + Duration::from_secs(61)),
            Verdict::RestartAt(_)
        ));
    }

    #[test]
    fn a_stable_run_resets_the_back_off() {
        let p = policy();
        let mut h = History::default();
        p.on_exit(&mut h, Exit::Signal(9), ms(10), ms(0));
        assert_eq!(
            p.on_exit(&mut h, Exit::Signal(9), ms(10), ms(1000)),
            Verdict::RestartAt(ms(1200))
        );
        assert_eq!(
            p.on_exit(&mut h, Exit::Signal(9), Duration::from_secs(30), ms(40_000)),
            Verdict::RestartAt(ms(40_100))
        );
    }

    #[test]
    fn statuses_and_settings() {
        assert_eq!(Exit::from_status(Some(0), None), Exit::Success);
        assert_eq!(Exit::from_status(Some(2), None), Exit::Code(2));
        assert_eq!(Exit::from_status(None, Some(9)), Exit::Signal(9));
        assert_eq!(Exit::from_status(None, None), Exit::Lost);
        use crate::slurm::JobState;
        assert_eq!(Exit::from_job(&JobState::Completed), Exit::Success);
        assert_eq!(Exit::from_job(&JobState::Cancelled), Exit::Requested);
        for lost in [
            JobState::Failed,
            JobState::Timeout,
            JobState::NodeFail,
            JobState::OutOfMemory,
            JobState::Other("WEIRD".into()),
        ] {
            assert_eq!(Exit::from_job(&lost), Exit::Lost, "{lost}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, "[restart]\nmode = \"on-failure\"\nlimit = 2\n").unwrap();
        let s: RestartSettings = crate::settings::from_file(&file, "restart", &[]).unwrap();
        assert_eq!(s.mode, Mode::OnFailure);
        assert_eq!(s.limit, 2);
    }
}
