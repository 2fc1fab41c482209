//! Scheduling policy: which engine gets a task, and how many tasks an engine may hold.
//!
//! Both are pure functions of numbers the core keeps: [`SchedulerKind::pick`] chooses among
//! engine loads (the random schemes take the random source as an argument), and
//! [`LoadEstimate`] turns observed run times into an adaptive limit on outstanding tasks (the
//! `auto` high-water mark). Neither touches a clock or a socket, so each rule is unit- and
//! property-tested on its own. The core has faster equivalents over its own indexes (ordered
//! sets, a list for sampling) and checks them against these definitions in its tests.

use protocol::EngineId;
use rand::Rng;
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

/// How engines are chosen for tasks (IPyparallel's schemes, with its names).
///
/// Every kind considers only *candidates*: engines that are eligible for the task (alive,
/// among its targets, not on its blacklist, offering its function, where its `follow` tasks
/// ran) and below their limit. Each is a pure function of the candidates' loads
/// ([`SchedulerKind::pick`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SchedulerKind {
    /// The least recently assigned engine.
    Lru,
    /// Uniformly at random.
    PlainRandom,
    /// Two drawn uniformly (with replacement); the less recently assigned of the two.
    TwoBin,
    /// Fewest outstanding tasks; ties go to the engine assigned least recently.
    #[default]
    LeastLoad,
    /// Two drawn with probability proportional to `1 / (outstanding + ε)`; the less loaded of
    /// the two (the first drawn on a tie).
    Weighted,
}

/// The ε of [`SchedulerKind::Weighted`]: an idle engine weighs a million times a busy one.
pub const WEIGHT_EPSILON: f64 = 1e-6;

/// The weight of an engine with `outstanding` tasks in [`SchedulerKind::Weighted`].
pub fn weight(outstanding: u32) -> f64 {
    1.0 / (f64::from(outstanding) + WEIGHT_EPSILON)
}

/// `twobin`'s choice between two draws: the less recently assigned (ties: lower id).
pub fn twobin_choice(a: &EngineLoad, b: &EngineLoad) -> EngineId {
    if b.lru_key() < a.lru_key() {
        b.id
    } else {
        a.id
    }
}

/// `weighted`'s choice between two draws: the less loaded, the first on a tie.
pub fn weighted_choice(first: &EngineLoad, second: &EngineLoad) -> EngineId {
    if second.outstanding < first.outstanding {
        second.id
    } else {
        first.id
    }
}

/// Index drawn with probability proportional to `weights[i]` (by the cumulative sum, as
/// IPyparallel does). `None` when empty.
pub fn weighted_index<R: Rng + ?Sized>(weights: &[f64], rng: &mut R) -> Option<usize> {
    let total: f64 = weights.iter().sum();
    if weights.is_empty() {
        return None;
    }
    let x = rng.random::<f64>() * total;
    let mut sum = 0.0;
    for (i, w) in weights.iter().enumerate() {
        sum += w;
        if x < sum {
            return Some(i);
        }
    }
    // Rounding can leave `x` a hair above the last sum.
    Some(weights.len() - 1)
}

impl SchedulerKind {
    /// Every scheduler, in the order they are listed to users.
    pub const ALL: &'static [SchedulerKind] = &[
        SchedulerKind::Lru,
        SchedulerKind::PlainRandom,
        SchedulerKind::TwoBin,
        SchedulerKind::LeastLoad,
        SchedulerKind::Weighted,
    ];

    /// The name used in flags, `cluster.toml` and status reports.
    pub fn name(self) -> &'static str {
        match self {
            SchedulerKind::Lru => "lru",
            SchedulerKind::PlainRandom => "plainrandom",
            SchedulerKind::TwoBin => "twobin",
            SchedulerKind::LeastLoad => "leastload",
            SchedulerKind::Weighted => "weighted",
        }
    }

    /// True for the kinds that draw at random.
    pub fn is_random(self) -> bool {
        matches!(
            self,
            SchedulerKind::PlainRandom | SchedulerKind::TwoBin | SchedulerKind::Weighted
        )
    }

    /// Chooses an engine among `engines`, considering only those that are `eligible` and
    /// below their limit; `None` when there is no such engine. `rng` is used only by the
    /// random kinds.
    pub fn pick<R: Rng + ?Sized>(self, engines: &[EngineLoad], rng: &mut R) -> Option<EngineId> {
        let candidates: Vec<&EngineLoad> = engines.iter().filter(|e| e.can_take()).collect();
        if candidates.is_empty() {
            return None;
        }
        let uniform = |rng: &mut R| candidates[rng.random_range(0..candidates.len())];
        match self {
            SchedulerKind::LeastLoad => candidates
                .iter()
                .min_by_key(|e| e.leastload_key())
                .map(|e| e.id),
            SchedulerKind::Lru => candidates.iter().min_by_key(|e| e.lru_key()).map(|e| e.id),
            SchedulerKind::PlainRandom => Some(uniform(rng).id),
            SchedulerKind::TwoBin => {
                let a = uniform(rng);
                let b = uniform(rng);
                Some(twobin_choice(a, b))
            }
            SchedulerKind::Weighted => {
                let weights: Vec<f64> = candidates.iter().map(|e| weight(e.outstanding)).collect();
                let a = candidates[weighted_index(&weights, rng)?];
                let b = candidates[weighted_index(&weights, rng)?];
                Some(weighted_choice(a, b))
            }
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

    /// Order of preference of `lru` (least recently assigned first, then lower id).
    pub fn lru_key(&self) -> (u64, EngineId) {
        (self.last_assigned, self.id)
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

    fn rng(seed: u64) -> rand::rngs::StdRng {
        use rand::SeedableRng;
        rand::rngs::StdRng::seed_from_u64(seed)
    }

    #[test]
    fn names_parse_and_print() {
        for kind in SchedulerKind::ALL {
            assert_eq!(kind.name().parse::<SchedulerKind>().unwrap(), *kind);
            assert_eq!(kind.to_string(), kind.name());
        }
        assert_eq!(
            " LeastLoad ".parse::<SchedulerKind>().unwrap(),
            SchedulerKind::LeastLoad
        );
        assert_eq!(SchedulerKind::default(), SchedulerKind::LeastLoad);
        let err = "fastest".parse::<SchedulerKind>().unwrap_err().to_string();
        assert!(
            err.contains("fastest")
                && err.contains("lru, plainrandom, twobin, leastload, weighted"),
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
        let r = &mut rng(1);
        assert_eq!(
            SchedulerKind::LeastLoad.pick(&engines, r),
            Some(EngineId(2))
        );
        assert_eq!(SchedulerKind::LeastLoad.pick(&engines[3..], r), None);
    }

    #[test]
    fn lru_prefers_least_recently_assigned_whatever_the_load() {
        let engines = [
            load(0, 0, 10, 9, true),
            load(1, 7, 10, 2, true),
            load(2, 0, 10, 1, false),
            load(3, 3, 3, 0, true),
            load(4, 5, 10, 2, true),
        ];
        let r = &mut rng(1);
        // 2 is excluded and 3 is full; 1 and 4 tie on the stamp: lower id.
        assert_eq!(SchedulerKind::Lru.pick(&engines, r), Some(EngineId(1)));
    }

    #[test]
    fn twobin_and_weighted_choose_between_their_two_draws() {
        let a = load(0, 4, 10, 3, true);
        let b = load(1, 1, 10, 8, true);
        assert_eq!(twobin_choice(&a, &b), EngineId(0), "a was assigned earlier");
        assert_eq!(twobin_choice(&b, &a), EngineId(0));
        assert_eq!(twobin_choice(&b, &b), EngineId(1));
        assert_eq!(weighted_choice(&a, &b), EngineId(1), "b is less loaded");
        assert_eq!(weighted_choice(&b, &a), EngineId(1));
        let c = load(2, 1, 10, 0, true);
        assert_eq!(weighted_choice(&b, &c), EngineId(1), "tie: the first drawn");
        assert!(weight(0) / weight(1) > 999_999.0);
    }

    #[test]
    fn weighted_index_follows_the_weights() {
        let r = &mut rng(7);
        assert_eq!(weighted_index(&[], r), None);
        let mut counts = [0u32; 3];
        for _ in 0..30_000 {
            counts[weighted_index(&[1.0, 2.0, 0.0], r).unwrap()] += 1;
        }
        assert_eq!(counts[2], 0);
        let ratio = f64::from(counts[1]) / f64::from(counts[0]);
        assert!((1.8..2.2).contains(&ratio), "{counts:?}");
    }

    #[test]
    fn weighted_practically_never_picks_a_busy_engine_over_an_idle_one() {
        let engines = [
            load(0, 3, 10, 0, true),
            load(1, 0, 10, 5, true),
            load(2, 2, 10, 0, true),
        ];
        let r = &mut rng(3);
        for _ in 0..10_000 {
            assert_eq!(SchedulerKind::Weighted.pick(&engines, r), Some(EngineId(1)));
        }
    }

    #[test]
    fn plainrandom_is_uniform() {
        let engines: Vec<EngineLoad> = (0..4).map(|i| load(i, i, 10, 0, true)).collect();
        let r = &mut rng(11);
        let mut counts = [0u32; 4];
        for _ in 0..40_000 {
            let id = SchedulerKind::PlainRandom.pick(&engines, r).unwrap();
            counts[id.0 as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (9_000..11_000).contains(&c)),
            "{counts:?}"
        );
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

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn engines() -> impl Strategy<Value = Vec<EngineLoad>> {
            prop::collection::vec(
                (0u32..5, 0u32..6, 0u64..8, prop::bool::weighted(0.8)),
                0..12,
            )
            .prop_map(|v| {
                v.into_iter()
                    .enumerate()
                    .map(|(i, (outstanding, limit, last, eligible))| {
                        load(i as u32, outstanding, limit, last, eligible)
                    })
                    .collect()
            })
        }

        fn kind() -> impl Strategy<Value = SchedulerKind> {
            prop::sample::select(SchedulerKind::ALL.to_vec())
        }

        proptest! {
            #[test]
            fn never_picks_a_full_or_excluded_engine(engines in engines(), kind in kind(), seed: u64) {
                let r = &mut rng(seed);
                let any = engines.iter().any(EngineLoad::can_take);
                for _ in 0..20 {
                    match kind.pick(&engines, r) {
                        None => prop_assert!(!any),
                        Some(id) => {
                            let e = engines.iter().find(|e| e.id == id).unwrap();
                            prop_assert!(e.can_take(), "{kind} picked {e:?}");
                        }
                    }
                }
            }

            #[test]
            fn leastload_never_picks_a_busier_engine_and_lru_an_older_stamp(engines in engines(), seed: u64) {
                let r = &mut rng(seed);
                let candidates: Vec<&EngineLoad> = engines.iter().filter(|e| e.can_take()).collect();
                if let Some(id) = SchedulerKind::LeastLoad.pick(&engines, r) {
                    let chosen = engines[id.0 as usize];
                    prop_assert!(candidates.iter().all(|c| chosen.outstanding <= c.outstanding));
                    prop_assert!(candidates.iter().all(|c| chosen.leastload_key() <= c.leastload_key()));
                }
                if let Some(id) = SchedulerKind::Lru.pick(&engines, r) {
                    let chosen = engines[id.0 as usize];
                    prop_assert!(candidates.iter().all(|c| chosen.last_assigned <= c.last_assigned));
                }
            }

            #[test]
            fn random_schemes_reach_every_candidate(engines in engines(), seed: u64) {
                let r = &mut rng(seed);
                let candidates: Vec<EngineId> =
                    engines.iter().filter(|e| e.can_take()).map(|e| e.id).collect();
                for kind in [SchedulerKind::PlainRandom, SchedulerKind::TwoBin] {
                    let mut seen = std::collections::BTreeSet::new();
                    for _ in 0..3_000 {
                        seen.extend(kind.pick(&engines, r));
                    }
                    prop_assert_eq!(seen.into_iter().collect::<Vec<_>>(), candidates.clone(), "{}", kind);
                }
                // Weighted favours the least loaded by design; among equally loaded engines
                // it reaches every one.
                let level: Vec<EngineLoad> = engines
                    .iter()
                    .map(|e| EngineLoad { outstanding: 0, ..*e })
                    .collect();
                let level_candidates: Vec<EngineId> =
                    level.iter().filter(|e| e.can_take()).map(|e| e.id).collect();
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..3_000 {
                    seen.extend(SchedulerKind::Weighted.pick(&level, r));
                }
                prop_assert_eq!(seen.into_iter().collect::<Vec<_>>(), level_candidates);
            }
        }
    }
}
