//! Scheduling policy: which engine gets a task, and how many tasks an engine may hold.
//!
//! Both are pure functions of numbers the core keeps: [`SchedulerKind::pick`] chooses among
//! engine loads, and [`LoadEstimate`] turns observed run times into an adaptive limit on
//! outstanding tasks (the `auto` high-water mark). Neither touches a clock or a socket, so
//! each rule is unit- and property-tested on its own.

use protocol::EngineId;
use std::fmt;
use std::str::FromStr;

/// A setting given as text could not be understood (not retryable; fix the value).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseSettingError {
    /// Not the name of a scheduler.
    #[error("unknown scheduler {given:?}; valid schedulers: {valid}")]
    Scheduler {
        /// What was given.
        given: String,
        /// The valid names, comma-separated.
        valid: String,
    },
    /// Not `auto` nor a whole number.
    #[error("invalid hwm {given:?}: expected \"auto\" or a whole number of tasks (0 = unlimited)")]
    Hwm {
        /// What was given.
        given: String,
    },
}

/// How engines are chosen for tasks.
///
/// Each kind is a pure function of the candidates' loads ([`SchedulerKind::pick`]); `lru`,
/// `plainrandom`, `twobin` and `weighted` fit the same shape (the random ones will take an
/// RNG argument).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// Fewest outstanding tasks; ties go to the engine assigned least recently.
    #[default]
    LeastLoad,
}

impl SchedulerKind {
    /// Every scheduler, in the order they are listed to users.
    pub const ALL: &'static [SchedulerKind] = &[SchedulerKind::LeastLoad];

    /// The name used in flags, `cluster.toml` and status reports.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::LeastLoad => "leastload",
        }
    }

    /// Chooses an engine among `engines`, considering only those that are `eligible` and
    /// below their limit. `None` when there is no such engine.
    pub fn pick(self, engines: &[EngineLoad]) -> Option<EngineId> {
        let candidates = engines.iter().filter(|e| e.can_take());
        match self {
            SchedulerKind::LeastLoad => candidates.min_by_key(|e| e.leastload_key()).map(|e| e.id),
        }
    }
}

impl fmt::Display for SchedulerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SchedulerKind {
    type Err = ParseSettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase();
        SchedulerKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == wanted)
            .ok_or_else(|| ParseSettingError::Scheduler {
                given: s.to_owned(),
                valid: SchedulerKind::ALL
                    .iter()
                    .map(|k| k.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

/// One engine as a scheduler sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLoad {
    /// Which engine.
    pub id: EngineId,
    /// Tasks assigned and not yet finished.
    pub outstanding: u32,
    /// Most tasks it may hold (`u32::MAX` when unlimited).
    pub limit: u32,
    /// Stamp of its latest assignment (larger = more recent; 0 = never).
    pub last_assigned: u64,
    /// Alive, and allowed for this task by its targets, blacklist and function.
    pub eligible: bool,
}

impl EngineLoad {
    /// Eligible and below its limit.
    pub fn can_take(&self) -> bool {
        self.eligible && self.outstanding < self.limit
    }

    /// Order of preference of `leastload` (smallest first). The id makes it total, so that
    /// the choice is deterministic.
    pub fn leastload_key(&self) -> (u32, u64, EngineId) {
        (self.outstanding, self.last_assigned, self.id)
    }
}

/// Limit on the tasks one engine may hold at once (the high-water mark).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Hwm {
    /// Adaptive: many tasks while they are short (hiding the round trip), one at a time while
    /// they are long (balancing well). See [`LoadEstimate`].
    #[default]
    Auto,
    /// At most this many outstanding tasks per engine; 0 = unlimited.
    Limit(u32),
}

impl fmt::Display for Hwm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hwm::Auto => f.write_str("auto"),
            Hwm::Limit(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Hwm {
    type Err = ParseSettingError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(Hwm::Auto);
        }
        t.parse::<u32>()
            .map(Hwm::Limit)
            .map_err(|_| ParseSettingError::Hwm {
                given: s.to_owned(),
            })
    }
}

/// Work an `auto` engine should have queued, in microseconds of estimated run time. About ten
/// loopback round trips: enough to keep an engine busy while results and new tasks cross.
pub const AUTO_HWM_BUDGET_US: f64 = 2_000.0;

/// Most tasks an `auto` engine may hold per slot, however short its tasks.
pub const AUTO_HWM_MAX: u32 = 256;

/// Weight of a sample above the estimate: a long task shows up at once, so that an engine
/// stops hoarding tasks as soon as they turn long.
pub const EWMA_GROW: f64 = 0.5;

/// Weight of a sample below the estimate: one quick task among long ones is not trusted.
pub const EWMA_SHRINK: f64 = 0.05;

/// An engine's running estimate of its tasks' run time, and the `auto` limit it implies.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadEstimate {
    estimate_us: Option<f64>,
    /// Slow-start ceiling per slot: doubles with each finished task, so an engine whose first
    /// tasks were tiny cannot grab a whole queue of tasks that turn out long (a map whose
    /// items grow in cost, say) before the estimate has caught up.
    cap: u32,
}

impl LoadEstimate {
    /// Folds in one task's run time (asymmetric EWMA: quick to grow, slow to shrink).
    pub fn observe(&mut self, elapsed_us: u64) {
        let sample = elapsed_us as f64;
        let estimate = match self.estimate_us {
            None => sample,
            Some(est) => {
                let weight = if sample > est { EWMA_GROW } else { EWMA_SHRINK };
                est + weight * (sample - est)
            }
        };
        self.estimate_us = Some(estimate);
        // Sub-microsecond tasks report 0; treat them as 1 µs rather than divide by zero.
        let target = (AUTO_HWM_BUDGET_US / estimate.max(1.0))
            .round()
            .clamp(1.0, AUTO_HWM_MAX as f64) as u32;
        self.cap = target.min(self.cap.max(1).saturating_mul(2));
    }

    /// The current estimate in microseconds, if any task has finished.
    pub fn estimate_us(&self) -> Option<f64> {
        self.estimate_us
    }

    /// Tasks the engine may hold: `clamp(round(budget / estimate), 1, 256)` per slot, reached
    /// by doubling once per finished task (slow start), and one per slot before the first
    /// sample.
    pub fn limit(&self, slots: u32) -> u32 {
        self.cap.max(1).saturating_mul(slots.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(id: u32, outstanding: u32, limit: u32, last: u64, eligible: bool) -> EngineLoad {
        EngineLoad {
            id: EngineId(id),
            outstanding,
            limit,
            last_assigned: last,
            eligible,
        }
    }

    #[test]
    fn names_parse_and_print() {
        assert_eq!(
            "leastload".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::LeastLoad
        );
        assert_eq!(SchedulerKind::LeastLoad.to_string(), "leastload");
        let err = "fastest".parse::<SchedulerKind>().unwrap_err().to_string();
        assert!(
            err.contains("fastest") && err.contains("leastload"),
            "{err}"
        );

        assert_eq!("auto".parse::<Hwm>().unwrap(), Hwm::Auto);
        assert_eq!("16".parse::<Hwm>().unwrap(), Hwm::Limit(16));
        assert_eq!("0".parse::<Hwm>().unwrap(), Hwm::Limit(0));
        assert_eq!(Hwm::Auto.to_string(), "auto");
        assert_eq!(Hwm::Limit(4).to_string(), "4");
        assert!("-1"
            .parse::<Hwm>()
            .unwrap_err()
            .to_string()
            .contains("auto"));
    }

    #[test]
    fn leastload_prefers_fewest_then_least_recent() {
        let engines = [
            load(0, 2, 10, 1, true),
            load(1, 1, 10, 5, true),
            load(2, 1, 10, 3, true),
            load(3, 0, 10, 0, false),
            load(4, 0, 0, 0, true),
        ];
        assert_eq!(SchedulerKind::LeastLoad.pick(&engines), Some(EngineId(2)));
        assert_eq!(SchedulerKind::LeastLoad.pick(&engines[3..]), None);
    }

    #[test]
    fn auto_limit_grows_for_short_tasks_and_stays_one_for_long() {
        let mut est = LoadEstimate::default();
        assert_eq!(est.limit(1), 1);
        for _ in 0..50 {
            est.observe(10);
        }
        assert_eq!(est.limit(1), 200);
        est.observe(0);
        assert!(est.limit(1) <= AUTO_HWM_MAX);

        let mut long = LoadEstimate::default();
        for _ in 0..10 {
            long.observe(500_000);
        }
        assert_eq!(long.limit(1), 1);
        assert_eq!(long.limit(4), 4);
    }

    /// Regression: a map whose items grow in cost (nth_prime over 0..1000 in chunks) had one
    /// engine jump to 256 after its first tiny chunk and take the whole queue, leaving the
    /// others idle.
    #[test]
    fn auto_limit_grows_by_doubling_and_falls_at_once() {
        let mut est = LoadEstimate::default();
        est.observe(1);
        assert_eq!(est.limit(1), 2);
        est.observe(1);
        assert_eq!(est.limit(1), 4);
        for _ in 0..10 {
            est.observe(1);
        }
        assert_eq!(est.limit(1), AUTO_HWM_MAX);
        est.observe(100_000);
        assert_eq!(
            est.limit(1),
            1,
            "one long task brings the limit straight down"
        );
    }

    #[test]
    fn estimate_grows_fast_and_shrinks_slowly() {
        let mut est = LoadEstimate::default();
        est.observe(100);
        est.observe(100_000);
        // One long task halves the distance at once…
        assert!(est.estimate_us().unwrap() > 40_000.0);
        assert_eq!(est.limit(1), 1);
        // …while one short task barely moves it.
        est.observe(1);
        assert!(est.estimate_us().unwrap() > 40_000.0);
    }
}
