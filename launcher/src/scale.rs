//! The autoscaler's policy: engines matched to the queue (`cluster scale --min 0 --max 64
//! --idle-timeout 5m --backlog 2`, or a `[scale]` table).
//!
//! [`decide`] is a pure function of what the caller observed (tasks waiting for an engine,
//! the engines with how long each has been idle, engines launched but not registered yet,
//! launches in flight, recent failed starts) and `now`; it answers start N, release these, or
//! wait (and why, for `cluster status`). The loop around it reads the controller's status,
//! keeps the [`IdleTracker`] and [`Failures`] up to date, and carries decisions out with a
//! launcher (local processes or Slurm jobs).
//!
//! Rules, in order:
//! 1. Fewer than `min` engines (registered + starting): start the difference, back-off
//!    permitting.
//! 2. Tasks wait that neither a free engine nor an engine on its way will take: start that
//!    many more, never above `max` in all, and only while fewer than `backlog` launches are
//!    in flight (each launch is one batch: one Slurm job, or a set of local processes).
//! 3. Nothing waits: release engines idle for `idle_timeout` or more, longest idle first,
//!    keeping `min`.
//! 4. Otherwise wait.
//!
//! After a failed start (a launch refused, or engines that never registered), further starts
//! wait out a back-off that grows with each consecutive failure; after `max_failures` in a
//! row starting is paused until the caller resets the failures (a person, or a start that
//! works).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// The `[scale]` table and `cluster scale` flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleSettings {
    /// Engines kept even when idle.
    pub min: usize,
    /// Engines never exceeded.
    pub max: usize,
    /// Launches that may be in flight (started, engines not registered) at once.
    pub backlog: usize,
    /// Seconds an engine stays idle before it is released.
    pub idle_timeout_s: u64,
    /// Waits after the 1st, 2nd, … consecutive failed start (the last repeats), seconds.
    pub backoff_s: Vec<u64>,
    /// Consecutive failed starts after which starting pauses.
    pub max_failures: u32,
    /// Milliseconds between two decisions.
    pub interval_ms: u64,
}

impl Default for ScaleSettings {
    fn default() -> Self {
        ScaleSettings {
            min: 0,
            max: 16,
            backlog: 2,
            idle_timeout_s: 300,
            backoff_s: vec![1, 10, 60, 300, 900],
            max_failures: 10,
            interval_ms: 1000,
        }
    }
}

impl ScaleSettings {
    /// Reads the `[scale]` table of `profile`'s settings.
    pub fn load(
        profile: &profiles::Profile,
        overrides: &[(&str, String)],
    ) -> Result<ScaleSettings, profiles::ProfileError> {
        crate::settings::section(profile, "scale", overrides)
    }

    /// The policy these settings make, or what is wrong with them.
    pub fn policy(&self) -> Result<ScalePolicy, String> {
        if self.max < self.min {
            return Err(format!(
                "[scale] max = {} is below min = {}",
                self.max, self.min
            ));
        }
        if self.backlog == 0 {
            return Err("[scale] backlog = 0 would never start an engine; use 1 or more".into());
        }
        Ok(ScalePolicy {
            min: self.min,
            max: self.max,
            backlog: self.backlog,
            idle_timeout: Duration::from_secs(self.idle_timeout_s),
            backoff: self
                .backoff_s
                .iter()
                .map(|s| Duration::from_secs(*s))
                .collect(),
            max_failures: self.max_failures,
        })
    }
}

/// The rules' parameters (see the module's documentation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalePolicy {
    /// Engines kept even when idle.
    pub min: usize,
    /// Engines never exceeded (registered + starting).
    pub max: usize,
    /// Launches in flight at most.
    pub backlog: usize,
    /// Idle time after which an engine is released.
    pub idle_timeout: Duration,
    /// Back-off after the n-th consecutive failure (the last repeats; empty: none).
    pub backoff: Vec<Duration>,
    /// Consecutive failures that pause starting (0: never pause).
    pub max_failures: u32,
}

/// An engine's key for the caller (its engine id).
pub type EngineKey = u32;

/// One registered engine as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineView {
    /// The engine.
    pub key: EngineKey,
    /// Since when it has held no task (`None`: busy now).
    pub idle_since: Option<Duration>,
}

/// What the caller observed at `now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    /// Time since any fixed origin (the loop's start).
    pub now: Duration,
    /// Tasks waiting for an engine in the controller's queue.
    pub queued: usize,
    /// Registered engines.
    pub engines: Vec<EngineView>,
    /// Engines launched and not registered yet.
    pub starting: usize,
    /// Launches in flight (each one batch of the `starting` engines).
    pub launches: usize,
}

/// Consecutive failed starts, and the last one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Failures {
    /// Failed starts in a row.
    pub consecutive: u32,
    /// When the last failed, and why.
    pub last: Option<(Duration, String)>,
}

impl Failures {
    /// A start failed at `now`.
    pub fn failed(&mut self, now: Duration, why: impl Into<String>) {
        self.consecutive = self.consecutive.saturating_add(1);
        self.last = Some((now, why.into()));
    }

    /// A start worked: the back-off starts over.
    pub fn succeeded(&mut self) {
        *self = Failures::default();
    }
}

/// What to do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Launch this many engines (one launch).
    Start(usize),
    /// Drain and release these engines.
    Release(Vec<EngineKey>),
    /// Nothing to do; `why` says so for `cluster status`, `until` when something may change
    /// on its own (a back-off or an idle timeout ending).
    Wait {
        /// Why, for people.
        why: String,
        /// When to look again at the latest.
        until: Option<Duration>,
    },
}

/// When starting is allowed again after `failures`, or `Err(why)` when paused.
fn start_allowed_at(policy: &ScalePolicy, failures: &Failures) -> Result<Duration, String> {
    let Some((at, why)) = &failures.last else {
        return Ok(Duration::ZERO);
    };
    if failures.consecutive == 0 {
        return Ok(Duration::ZERO);
    }
    if policy.max_failures > 0 && failures.consecutive >= policy.max_failures {
        return Err(format!(
            "starting paused after {} failed starts in a row (last: {why})",
            failures.consecutive
        ));
    }
    let i = (failures.consecutive as usize - 1).min(policy.backoff.len().saturating_sub(1));
    Ok(*at + policy.backoff.get(i).copied().unwrap_or_default())
}

/// The policy's answer for `obs` (see the module's documentation).
pub fn decide(policy: &ScalePolicy, obs: &Observation, failures: &Failures) -> Decision {
    let now = obs.now;
    let registered = obs.engines.len();
    let coming = registered + obs.starting;
    let free = obs
        .engines
        .iter()
        .filter(|e| e.idle_since.is_some())
        .count();
    // Engines wanted now: the floor, or one per waiting task no engine will take.
    let floor = policy.min.saturating_sub(coming);
    let unserved = obs.queued.saturating_sub(free + obs.starting);
    let room = policy.max.saturating_sub(coming);
    let want = floor.max(unserved.min(room));
    if want > 0 {
        if obs.launches >= policy.backlog {
            return Decision::Wait {
                why: format!(
                    "{} launch(es) of {} engine(s) in flight (backlog {}); {} task(s) waiting",
                    obs.launches, obs.starting, policy.backlog, obs.queued
                ),
                until: None,
            };
        }
        return match start_allowed_at(policy, failures) {
            Err(why) => Decision::Wait { why, until: None },
            Ok(at) if at > now => Decision::Wait {
                why: format!(
                    "backing off after {} failed start(s): next try in {:.0} s (last: {})",
                    failures.consecutive,
                    (at - now).as_secs_f64().ceil(),
                    failures.last.as_ref().map_or("", |(_, w)| w.as_str())
                ),
                until: Some(at),
            },
            Ok(_) => Decision::Start(want),
        };
    }
    if obs.queued > 0 && unserved == 0 {
        return Decision::Wait {
            why: format!(
                "{} task(s) waiting for {} free or starting engine(s)",
                obs.queued,
                free + obs.starting
            ),
            until: None,
        };
    }
    if obs.queued > 0 {
        return Decision::Wait {
            why: format!(
                "at max: {coming} engine(s) of {} ({} task(s) waiting)",
                policy.max, obs.queued
            ),
            until: None,
        };
    }
    // Nothing waits: release what has been idle long enough, above the floor.
    let spare = registered.saturating_sub(policy.min);
    let mut idle: Vec<(Duration, EngineKey)> = obs
        .engines
        .iter()
        .filter_map(|e| e.idle_since.map(|s| (s, e.key)))
        .collect();
    idle.sort();
    let expired: Vec<EngineKey> = idle
        .iter()
        .filter(|(since, _)| now.saturating_sub(*since) >= policy.idle_timeout)
        .map(|(_, k)| *k)
        .take(spare)
        .collect();
    if !expired.is_empty() {
        return Decision::Release(expired);
    }
    let next = idle
        .iter()
        .take(spare)
        .map(|(since, _)| *since + policy.idle_timeout)
        .min();
    Decision::Wait {
        why: if registered == 0 {
            "no tasks, no engines".into()
        } else {
            format!("{registered} engine(s), {free} idle, nothing waiting")
        },
        until: next,
    }
}

/// Keeps each engine's idle-since time from successive observations of its outstanding
/// tasks.
#[derive(Debug, Clone, Default)]
pub struct IdleTracker {
    since: BTreeMap<EngineKey, Option<Duration>>,
}

impl IdleTracker {
    /// Engines seen at `now` with their outstanding task counts; engines not listed are
    /// forgotten. Returns the views for [`Observation::engines`].
    pub fn observe(&mut self, now: Duration, engines: &[(EngineKey, u32)]) -> Vec<EngineView> {
        let mut next = BTreeMap::new();
        for &(key, outstanding) in engines {
            let was = self.since.get(&key).copied().flatten();
            let idle = if outstanding == 0 {
                Some(was.unwrap_or(now))
            } else {
                None
            };
            next.insert(key, idle);
        }
        self.since = next;
        self.since
            .iter()
            .map(|(&key, &idle_since)| EngineView { key, idle_since })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    fn policy() -> ScalePolicy {
        ScaleSettings {
            min: 0,
            max: 4,
            backlog: 2,
            idle_timeout_s: 60,
            backoff_s: vec![5, 30],
            max_failures: 3,
            interval_ms: 1000,
        }
        .policy()
        .unwrap()
    }

    /// A fake world: launches register after `delay`, engines are busy while tasks remain.
    struct World {
        now: Duration,
        queued: usize,
        engines: Vec<(EngineKey, u32)>,
        launching: Vec<(Duration, usize)>,
        next_key: EngineKey,
        tracker: IdleTracker,
    }

    impl World {
        fn observe(&mut self) -> Observation {
            let views = self.tracker.observe(self.now, &self.engines);
            Observation {
                now: self.now,
                queued: self.queued,
                engines: views,
                starting: self.launching.iter().map(|(_, n)| n).sum(),
                launches: self.launching.len(),
            }
        }

        fn tick(&mut self, delay: Duration) {
            let now = self.now;
            let (ready, waiting): (Vec<_>, Vec<_>) = self
                .launching
                .drain(..)
                .partition(|(at, _)| *at + delay <= now);
            self.launching = waiting;
            for (_, n) in ready {
                for _ in 0..n {
                    self.engines.push((self.next_key, 0));
                    self.next_key += 1;
                }
            }
            // Each engine takes one waiting task per tick and finishes it by the next.
            for e in &mut self.engines {
                e.1 = 0;
                if self.queued > 0 {
                    self.queued -= 1;
                    e.1 = 1;
                }
            }
        }
    }

    #[test]
    fn from_zero_to_max_under_backlog_and_back_to_zero_after_idle() {
        let p = policy();
        let mut w = World {
            now: s(0),
            queued: 100,
            engines: vec![],
            launching: vec![],
            next_key: 0,
            tracker: IdleTracker::default(),
        };
        let failures = Failures::default();
        let mut peak = 0;
        let mut starts = Vec::new();
        let mut released_at = None;
        for _ in 0..400 {
            let obs = w.observe();
            match decide(&p, &obs, &failures) {
                Decision::Start(n) => {
                    starts.push(n);
                    w.launching.push((w.now, n));
                }
                Decision::Release(keys) => {
                    assert_eq!(w.queued, 0, "never releases while tasks wait");
                    w.engines.retain(|(k, _)| !keys.contains(k));
                    if w.engines.is_empty() {
                        released_at = Some(w.now);
                    }
                }
                Decision::Wait { .. } => {}
            }
            peak = peak.max(w.engines.len() + w.launching.iter().map(|(_, n)| n).sum::<usize>());
            assert!(peak <= p.max, "never above max");
            assert!(w.launching.len() <= p.backlog);
            w.now += s(1);
            w.tick(s(3));
            if released_at.is_some() {
                break;
            }
        }
        assert_eq!(peak, 4);
        assert_eq!(starts[0], 4, "the first start asks for all that is needed");
        let released_at = released_at.expect("released every engine");
        // The last task ran around t = 28 s; the engines go 60 s after their last task.
        assert!(
            released_at >= s(60) && released_at < s(100),
            "{released_at:?}"
        );
    }

    #[test]
    fn min_is_kept_and_idle_engines_above_it_go_longest_idle_first() {
        let p = ScalePolicy { min: 1, ..policy() };
        let obs = Observation {
            now: s(100),
            queued: 0,
            engines: vec![
                EngineView {
                    key: 1,
                    idle_since: Some(s(30)),
                },
                EngineView {
                    key: 2,
                    idle_since: Some(s(10)),
                },
                EngineView {
                    key: 3,
                    idle_since: Some(s(90)),
                },
            ],
            starting: 0,
            launches: 0,
        };
        assert_eq!(
            decide(&p, &obs, &Failures::default()),
            Decision::Release(vec![2, 1])
        );
        let empty = Observation {
            engines: vec![],
            now: s(0),
            ..obs.clone()
        };
        assert_eq!(decide(&p, &empty, &Failures::default()), Decision::Start(1));
        let Decision::Wait { until, .. } = decide(
            &p,
            &Observation {
                engines: vec![
                    EngineView {
                        key: 1,
                        idle_since: Some(s(90)),
                    },
                    EngineView {
                        key: 2,
                        idle_since: None,
                    },
                ],
                ..obs
            },
            &Failures::default(),
        ) else {
            panic!()
        };
        assert_eq!(until, Some(s(150)), "wakes when the idle one times out");
    }

    #[test]
    fn free_and_starting_engines_take_waiting_tasks_first() {
        let p = policy();
        let obs = Observation {
            now: s(0),
            queued: 3,
            engines: vec![EngineView {
                key: 0,
                idle_since: Some(s(0)),
            }],
            starting: 1,
            launches: 1,
        };
        assert_eq!(decide(&p, &obs, &Failures::default()), Decision::Start(1));
        let full = Observation {
            launches: 2,
            ..obs.clone()
        };
        assert!(matches!(
            decide(&p, &full, &Failures::default()),
            Decision::Wait { .. }
        ));
        let covered = Observation { queued: 2, ..obs };
        let Decision::Wait { why, .. } = decide(&p, &covered, &Failures::default()) else {
            panic!()
        };
        assert!(why.contains("free or starting"), "{why}");
    }

    #[test]
    fn failed_starts_back_off_then_pause() {
        let p = policy();
        let mut failures = Failures::default();
        let obs = |now| Observation {
            now,
            queued: 5,
            engines: vec![],
            starting: 0,
            launches: 0,
        };
        assert_eq!(decide(&p, &obs(s(0)), &failures), Decision::Start(4));
        failures.failed(s(1), "sbatch: invalid partition");
        let Decision::Wait { why, until } = decide(&p, &obs(s(2)), &failures) else {
            panic!()
        };
        assert_eq!(until, Some(s(6)));
        assert!(
            why.contains("backing off") && why.contains("invalid partition"),
            "{why}"
        );
        assert_eq!(decide(&p, &obs(s(6)), &failures), Decision::Start(4));
        failures.failed(s(7), "engines never registered");
        assert!(matches!(
            decide(&p, &obs(s(36)), &failures),
            Decision::Wait { .. }
        ));
        assert_eq!(decide(&p, &obs(s(37)), &failures), Decision::Start(4));
        failures.failed(s(40), "again");
        let Decision::Wait { why, until } = decide(&p, &obs(s(10_000)), &failures) else {
            panic!()
        };
        assert!(why.contains("paused after 3"), "{why}");
        assert_eq!(until, None);
        failures.succeeded();
        assert_eq!(decide(&p, &obs(s(10_001)), &failures), Decision::Start(4));
    }

    #[test]
    fn bad_settings() {
        let bad = ScaleSettings {
            min: 5,
            max: 2,
            ..ScaleSettings::default()
        };
        assert!(bad.policy().unwrap_err().contains("below min"));
        let none = ScaleSettings {
            backlog: 0,
            ..ScaleSettings::default()
        };
        assert!(none.policy().is_err());
    }

    #[test]
    fn idle_tracker_keeps_the_first_idle_time() {
        let mut t = IdleTracker::default();
        let v = t.observe(s(1), &[(1, 0), (2, 3)]);
        assert_eq!(v[0].idle_since, Some(s(1)));
        assert_eq!(v[1].idle_since, None);
        let v = t.observe(s(5), &[(1, 0), (2, 0)]);
        assert_eq!(v[0].idle_since, Some(s(1)));
        assert_eq!(v[1].idle_since, Some(s(5)));
        let v = t.observe(s(6), &[(1, 2)]);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].idle_since, None);
    }
}
