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
//! 3. Nothing waits: launches still queued (a Slurm job pending, no engine of it started)
//!    are cancelled once nothing has waited for `idle_timeout`, keeping `min`. A pending
//!    job counts as engines on their way all along (rule 2), so a backlog that waits for
//!    Slurm does not submit job after job.
//! 4. Nothing waits: release engines idle for `idle_timeout` or more, longest idle first,
//!    keeping `min`. Engines of one group (one Slurm job, released with `scancel`) go
//!    together, once every one of them is idle that long.
//! 5. Otherwise wait.
//!
//! After a failed start (a launch refused, or engines that never registered), further starts
//! wait out a back-off that grows with each consecutive failure; after `max_failures` in a
//! row starting is paused until the caller resets the failures (a person, or a start that
//! works).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
#[cfg(test)]
use std::collections::BTreeSet;
use std::time::Duration;

/// Where the autoscaler starts engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScaleLauncher {
    /// Local processes (the default).
    #[default]
    Local,
    /// Slurm jobs (the `[slurm]` settings): one job per start, released with `scancel`.
    Slurm,
}

impl ScaleLauncher {
    /// Its name in settings and `cluster status`.
    pub fn name(&self) -> &'static str {
        match self {
            ScaleLauncher::Local => "local",
            ScaleLauncher::Slurm => "slurm",
        }
    }
}

/// The `[scale]` table and `cluster scale` flags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ScaleSettings {
    /// Where engines start: `local` or `slurm`.
    pub launcher: ScaleLauncher,
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
            launcher: ScaleLauncher::Local,
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

/// Engines released together (one Slurm job); the caller numbers them.
pub type GroupKey = u64;

/// A launch's key for the caller (a Slurm job it numbered).
pub type LaunchKey = u64;

/// One registered engine as observed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineView {
    /// The engine.
    pub key: EngineKey,
    /// Since when it has held no task (`None`: busy now).
    pub idle_since: Option<Duration>,
    /// The engines it is released with (`None`: alone, a local process).
    pub group: Option<GroupKey>,
    /// The caller cannot release it (an engine on an ssh host): it counts, and stays.
    pub kept: bool,
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
    /// Launches in flight none of whose engines has started (a pending Slurm job), with
    /// their engine counts: what rule 3 may cancel.
    pub queued_launches: Vec<(LaunchKey, usize)>,
    /// Since when no task has waited (`None`: tasks wait now).
    pub quiet_since: Option<Duration>,
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
    /// Drain and release these engines (whole groups only).
    Release(Vec<EngineKey>),
    /// Cancel these launches: still queued, no longer needed.
    Cancel(Vec<LaunchKey>),
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
    // Nothing waits. Queued launches nobody has needed for the idle timeout go first.
    let mut left = coming;
    let mut next: Option<Duration> = None;
    if let (Some(quiet), false) = (obs.quiet_since, obs.queued_launches.is_empty()) {
        let at = quiet + policy.idle_timeout;
        if now >= at {
            let cancel: Vec<LaunchKey> = obs
                .queued_launches
                .iter()
                .filter(|(_, n)| {
                    let keep = left.saturating_sub(*n) >= policy.min;
                    if keep {
                        left -= n;
                    }
                    keep
                })
                .map(|(k, _)| *k)
                .collect();
            if !cancel.is_empty() {
                return Decision::Cancel(cancel);
            }
        } else {
            next = Some(at);
        }
    }
    // Then what has been idle long enough, whole groups at a time, above the floor.
    let mut units = idle_units(&obs.engines);
    units.sort();
    let mut left = registered;
    let mut expired = Vec::new();
    for (since, keys) in &units {
        if left.saturating_sub(keys.len()) < policy.min {
            continue;
        }
        let at = *since + policy.idle_timeout;
        if now >= at {
            left -= keys.len();
            expired.extend(keys.iter().copied());
        } else {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    if !expired.is_empty() {
        return Decision::Release(expired);
    }
    Decision::Wait {
        why: if registered == 0 && obs.starting == 0 {
            "no tasks, no engines".into()
        } else if registered == 0 {
            format!("nothing waiting; {} engine(s) starting", obs.starting)
        } else {
            format!("{registered} engine(s), {free} idle, nothing waiting")
        },
        until: next,
    }
}

/// What may be released on its own: each idle engine without a group, and each group whose
/// engines are all idle (idle since its last one became so), with their keys.
fn idle_units(engines: &[EngineView]) -> Vec<(Duration, Vec<EngineKey>)> {
    let mut units = Vec::new();
    let mut groups: BTreeMap<GroupKey, (Option<Duration>, Vec<EngineKey>)> = BTreeMap::new();
    for e in engines.iter().filter(|e| !e.kept) {
        match (e.group, e.idle_since) {
            (None, Some(since)) => units.push((since, vec![e.key])),
            (None, None) => {}
            (Some(g), idle) => {
                let entry = groups
                    .entry(g)
                    .or_insert((Some(Duration::ZERO), Vec::new()));
                entry.0 = match (entry.0, idle) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
                entry.1.push(e.key);
            }
        }
    }
    units.extend(
        groups
            .into_values()
            .filter_map(|(since, keys)| since.map(|s| (s, keys))),
    );
    units
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
            .map(|(&key, &idle_since)| EngineView {
                key,
                idle_since,
                group: None,
                kept: false,
            })
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
            launcher: ScaleLauncher::Local,
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
                queued_launches: vec![],
                quiet_since: None,
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
                Decision::Cancel(_) => panic!("no queued launches here"),
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
                    group: None,
                    kept: false,
                },
                EngineView {
                    key: 2,
                    idle_since: Some(s(10)),
                    group: None,
                    kept: false,
                },
                EngineView {
                    key: 3,
                    idle_since: Some(s(90)),
                    group: None,
                    kept: false,
                },
            ],
            starting: 0,
            launches: 0,
            queued_launches: vec![],
            quiet_since: None,
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
                        group: None,
                        kept: false,
                    },
                    EngineView {
                        key: 2,
                        idle_since: None,
                        group: None,
                        kept: false,
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
                group: None,
                kept: false,
            }],
            starting: 1,
            launches: 1,
            queued_launches: vec![],
            quiet_since: None,
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
            queued_launches: vec![],
            quiet_since: None,
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

    fn grouped(key: EngineKey, idle_since: Option<Duration>, group: GroupKey) -> EngineView {
        EngineView {
            key,
            idle_since,
            group: Some(group),
            kept: false,
        }
    }

    #[test]
    fn pending_jobs_count_as_coming_and_are_cancelled_once_not_needed() {
        let p = policy();
        let pending = Observation {
            now: s(5),
            queued: 3,
            engines: vec![],
            starting: 3,
            launches: 1,
            queued_launches: vec![(7, 3)],
            quiet_since: None,
        };
        // The pending job's 3 engines will take the 3 tasks: nothing more is submitted.
        let Decision::Wait { why, .. } = decide(&p, &pending, &Failures::default()) else {
            panic!()
        };
        assert!(why.contains("free or starting"), "{why}");
        // One more task: one more engine, not four.
        let more = Observation {
            queued: 4,
            ..pending.clone()
        };
        assert_eq!(decide(&p, &more, &Failures::default()), Decision::Start(1));
        // The tasks went elsewhere; the job is cancelled after the idle timeout, not before.
        let quiet = Observation {
            now: s(30),
            queued: 0,
            quiet_since: Some(s(10)),
            ..pending.clone()
        };
        let Decision::Wait { until, .. } = decide(&p, &quiet, &Failures::default()) else {
            panic!()
        };
        assert_eq!(until, Some(s(70)));
        let later = Observation {
            now: s(70),
            ..quiet.clone()
        };
        assert_eq!(
            decide(&p, &later, &Failures::default()),
            Decision::Cancel(vec![7])
        );
        // Unless it is what keeps the floor.
        let floor = ScalePolicy { min: 2, ..p };
        assert!(matches!(
            decide(&floor, &later, &Failures::default()),
            Decision::Wait { .. }
        ));
    }

    #[test]
    fn a_group_goes_once_all_its_engines_are_idle() {
        let p = policy();
        let obs = |now, engines| Observation {
            now,
            queued: 0,
            engines,
            starting: 0,
            launches: 0,
            queued_launches: vec![],
            quiet_since: Some(s(0)),
        };
        let alone = EngineView {
            key: 3,
            idle_since: Some(s(0)),
            group: None,
            kept: false,
        };
        let busy = obs(
            s(100),
            vec![grouped(1, Some(s(0)), 9), grouped(2, None, 9), alone],
        );
        assert_eq!(
            decide(&p, &busy, &Failures::default()),
            Decision::Release(vec![3])
        );
        let both = vec![grouped(1, Some(s(0)), 9), grouped(2, Some(s(50)), 9)];
        let Decision::Wait { until, .. } =
            decide(&p, &obs(s(100), both.clone()), &Failures::default())
        else {
            panic!()
        };
        assert_eq!(until, Some(s(110)), "idle since its last engine became so");
        assert_eq!(
            decide(&p, &obs(s(110), both.clone()), &Failures::default()),
            Decision::Release(vec![1, 2])
        );
        // A group that would take the engines below min stays.
        let floor = ScalePolicy { min: 1, ..p };
        let Decision::Wait { until, .. } = decide(&floor, &obs(s(500), both), &Failures::default())
        else {
            panic!()
        };
        assert_eq!(until, None);
    }

    #[test]
    fn engines_the_caller_cannot_release_count_and_stay() {
        let p = policy();
        let ssh = EngineView {
            key: 1,
            idle_since: Some(s(0)),
            group: None,
            kept: true,
        };
        let obs = Observation {
            now: s(1000),
            queued: 0,
            engines: vec![ssh],
            starting: 0,
            launches: 0,
            queued_launches: vec![],
            quiet_since: Some(s(0)),
        };
        let Decision::Wait { until, .. } = decide(&p, &obs, &Failures::default()) else {
            panic!()
        };
        assert_eq!(until, None);
        // It is a free engine: one waiting task needs no start.
        let one = Observation {
            queued: 1,
            quiet_since: None,
            ..obs
        };
        assert!(matches!(
            decide(&p, &one, &Failures::default()),
            Decision::Wait { .. }
        ));
    }

    /// A fake Slurm: each start is one job that pends `queue_delay`, then its engines
    /// register together; a job is released whole. Never more engines submitted than `max`,
    /// never more pending jobs than `backlog`, and back to none after the idle timeout.
    #[test]
    fn slurm_jobs_from_zero_to_max_and_back_without_over_submitting() {
        let p = ScalePolicy {
            backlog: 1,
            ..policy()
        };
        let queue_delay = s(20);
        let mut now = s(0);
        let mut queued = 40usize;
        // (job, engines, submitted at); running jobs' engines: (key, busy, job).
        let mut pending: Vec<(LaunchKey, usize, Duration)> = Vec::new();
        let mut engines: Vec<(EngineKey, u32, LaunchKey)> = Vec::new();
        let mut tracker = IdleTracker::default();
        let (mut next_job, mut next_key) = (1, 0);
        let mut quiet_since = None;
        let mut submitted = Vec::new();
        let mut gone_at = None;
        for _ in 0..400 {
            let seen: Vec<(EngineKey, u32)> = engines.iter().map(|e| (e.0, e.1)).collect();
            let mut views = tracker.observe(now, &seen);
            for v in &mut views {
                v.group = engines.iter().find(|e| e.0 == v.key).map(|e| e.2);
            }
            quiet_since = if queued > 0 {
                None
            } else {
                quiet_since.or(Some(now))
            };
            let obs = Observation {
                now,
                queued,
                engines: views,
                starting: pending.iter().map(|j| j.1).sum(),
                launches: pending.len(),
                queued_launches: pending.iter().map(|j| (j.0, j.1)).collect(),
                quiet_since,
            };
            match decide(&p, &obs, &Failures::default()) {
                Decision::Start(n) => {
                    submitted.push(n);
                    pending.push((next_job, n, now));
                    next_job += 1;
                }
                Decision::Release(keys) => {
                    let jobs: BTreeSet<LaunchKey> = engines
                        .iter()
                        .filter(|e| keys.contains(&e.0))
                        .map(|e| e.2)
                        .collect();
                    let whole = engines
                        .iter()
                        .filter(|e| jobs.contains(&e.2))
                        .all(|e| keys.contains(&e.0));
                    assert!(whole, "released a job in part: {keys:?}");
                    engines.retain(|e| !jobs.contains(&e.2));
                    if engines.is_empty() && queued == 0 {
                        gone_at = Some(now);
                    }
                }
                Decision::Cancel(jobs) => pending.retain(|j| !jobs.contains(&j.0)),
                Decision::Wait { .. } => {}
            }
            let total = engines.len() + pending.iter().map(|j| j.1).sum::<usize>();
            assert!(total <= p.max, "{total} engines submitted, max {}", p.max);
            assert!(pending.len() <= p.backlog);
            if gone_at.is_some() {
                break;
            }
            now += s(1);
            // Jobs whose wait is over start; each engine takes a task per second.
            let (run, wait): (Vec<_>, Vec<_>) =
                pending.drain(..).partition(|j| j.2 + queue_delay <= now);
            pending = wait;
            for (job, n, _) in run {
                for _ in 0..n {
                    engines.push((next_key, 0, job));
                    next_key += 1;
                }
            }
            for e in &mut engines {
                e.1 = u32::from(queued > 0);
                queued = queued.saturating_sub(1);
            }
        }
        assert_eq!(
            submitted,
            vec![4],
            "one job of max engines, not one per round"
        );
        let gone_at = gone_at.expect("back to no engines");
        assert!(gone_at > s(60) && gone_at < s(120), "{gone_at:?}");
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
