//! The free-engine indexes: engines that can take more work now, kept so that each
//! scheduler's choice costs a lookup, not a scan of every engine.
//!
//! An engine is *free* while it is alive and below its limit. Free engines sit in an ordered
//! set keyed by `(outstanding, last assigned, id)`, exactly `leastload`'s order of preference,
//! so the first eligible member is the choice; in one keyed by `(last assigned, id)` for `lru`;
//! and in a list to draw from for the random schemes (`plainrandom`, `twobin`, `weighted`).
//! Only the indexes the configured scheduler needs beyond the first are kept. The pure
//! definitions of the schemes are in [`crate::scheduler`]; in tests every choice made here is
//! checked against them.

use super::engines::{Engine, Engines};
use super::queues::ClassKey;
use crate::scheduler::{self, SchedulerKind};
use protocol::EngineId;
use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeSet;

/// `(outstanding, last assigned, id)`: leastload's order of preference.
type LoadKey = (u32, u64, EngineId);

/// `(last assigned, id)`: lru's order of preference.
type LruKey = (u64, EngineId);

/// Where one engine is in the indexes (nowhere while it is not free).
#[derive(Debug, Default, Clone, Copy)]
struct Entry {
    load: Option<LoadKey>,
    lru: Option<LruKey>,
    /// Its position in `list`.
    pos: Option<usize>,
}

/// The free engines, in the orders the schedulers need.
#[derive(Debug)]
pub(super) struct FreeEngines {
    scheduler: SchedulerKind,
    /// Free engines in leastload's order (always kept: it also tells whether any is free).
    by_load: BTreeSet<LoadKey>,
    /// The same engines in lru's order (kept for `lru` only).
    by_lru: BTreeSet<LruKey>,
    /// The same engines in no order, to draw from (kept for the random schemes only).
    list: Vec<EngineId>,
    /// By engine id.
    entries: Vec<Entry>,
}

impl FreeEngines {
    pub(super) fn new(scheduler: SchedulerKind) -> FreeEngines {
        FreeEngines {
            scheduler,
            by_load: BTreeSet::new(),
            by_lru: BTreeSet::new(),
            list: Vec::new(),
            entries: Vec::new(),
        }
    }

    /// Whether no engine can take a task now.
    pub(super) fn is_empty(&self) -> bool {
        self.by_load.is_empty()
    }

    /// Free engines in leastload's order.
    #[cfg(test)]
    pub(super) fn in_load_order(&self) -> impl Iterator<Item = EngineId> + '_ {
        self.by_load.iter().map(|&(_, _, id)| id)
    }

    fn entry(&mut self, id: EngineId) -> &mut Entry {
        let i = id.0 as usize;
        if self.entries.len() <= i {
            self.entries.resize(i + 1, Entry::default());
        }
        &mut self.entries[i]
    }

    /// Whether `id` is in the indexes.
    fn is_free(&self, id: EngineId) -> bool {
        self.entries
            .get(id.0 as usize)
            .is_some_and(|e| e.pos.is_some() || e.load.is_some())
    }

    /// Puts engine `e` where its state says (after anything that changes whether it is alive,
    /// what it holds, its limit, or when it was last assigned).
    pub(super) fn update(&mut self, e: &Engine) {
        let id = e.id;
        let scheduler = self.scheduler;
        let entry = *self.entry(id);
        if let Some(key) = entry.load {
            self.by_load.remove(&key);
        }
        if let Some(key) = entry.lru {
            self.by_lru.remove(&key);
        }
        let mut entry = Entry {
            load: None,
            lru: None,
            pos: entry.pos,
        };
        let outstanding = e.outstanding();
        let free = e.alive && outstanding < e.limit;
        if free {
            let key = (outstanding, e.last_assigned, id);
            self.by_load.insert(key);
            entry.load = Some(key);
            if scheduler == SchedulerKind::Lru {
                let key = (e.last_assigned, id);
                self.by_lru.insert(key);
                entry.lru = Some(key);
            }
        }
        if scheduler.is_random() {
            match (free, entry.pos) {
                (true, None) => {
                    entry.pos = Some(self.list.len());
                    self.list.push(id);
                }
                (false, Some(pos)) => {
                    entry.pos = None;
                    self.list.swap_remove(pos);
                    if let Some(&moved) = self.list.get(pos) {
                        self.entry(moved).pos = Some(pos);
                    }
                }
                _ => {}
            }
        }
        *self.entry(id) = entry;
    }

    /// The engine the scheduler picks for tasks of `key`, if any can take one now.
    pub(super) fn pick(
        &self,
        key: &ClassKey,
        engines: &Engines,
        rng: &mut SmallRng,
    ) -> Option<EngineId> {
        let load = |id: EngineId| engines[id].load(true);
        let chosen = match self.scheduler {
            // The indexes are in each scheme's order of preference: the first eligible wins.
            SchedulerKind::LeastLoad => self
                .by_load
                .iter()
                .map(|&(_, _, id)| id)
                .find(|&id| engines.eligible(id, key)),
            SchedulerKind::Lru => self
                .by_lru
                .iter()
                .map(|&(_, id)| id)
                .find(|&id| engines.eligible(id, key)),
            SchedulerKind::PlainRandom => self.draw(key, engines, rng),
            SchedulerKind::TwoBin => {
                let a = self.draw(key, engines, rng)?;
                let b = self.draw(key, engines, rng)?;
                Some(scheduler::twobin_choice(&load(a), &load(b)))
            }
            SchedulerKind::Weighted => {
                let a = self.draw_weighted(key, engines, rng)?;
                let b = self.draw_weighted(key, engines, rng)?;
                Some(scheduler::weighted_choice(&load(a), &load(b)))
            }
        };
        #[cfg(test)]
        self.check_pick(chosen, key, engines);
        chosen
    }

    /// The fast paths must agree with the pure definitions.
    #[cfg(test)]
    fn check_pick(&self, chosen: Option<EngineId>, key: &ClassKey, engines: &Engines) {
        use crate::scheduler::EngineLoad;
        use rand::SeedableRng;
        let loads = engines.loads(key);
        if self.scheduler.is_random() {
            let any = loads.iter().any(EngineLoad::can_take);
            assert_eq!(chosen.is_some(), any, "{:?}", self.scheduler);
            if let Some(id) = chosen {
                assert!(loads[id.0 as usize].can_take());
            }
        } else {
            let mut rng = SmallRng::seed_from_u64(0);
            assert_eq!(chosen, self.scheduler.pick(&loads, &mut rng));
        }
    }

    /// A free engine eligible for `key`, uniformly at random: a few draws from the free list
    /// (exact whenever one hits), then an exact draw among all of them.
    fn draw(&self, key: &ClassKey, engines: &Engines, rng: &mut SmallRng) -> Option<EngineId> {
        if self.list.is_empty() {
            return None;
        }
        for _ in 0..8 {
            let id = self.list[rng.random_range(0..self.list.len())];
            if engines.eligible(id, key) {
                return Some(id);
            }
        }
        let candidates = self.candidates(key, engines);
        if candidates.is_empty() {
            return None;
        }
        Some(candidates[rng.random_range(0..candidates.len())])
    }

    /// Every free engine eligible for `key` (scanning only the targets when it has some).
    fn candidates(&self, key: &ClassKey, engines: &Engines) -> Vec<EngineId> {
        if key.targets.is_empty() {
            self.list
                .iter()
                .copied()
                .filter(|&id| engines.eligible(id, key))
                .collect()
        } else {
            key.targets
                .iter()
                .copied()
                .filter(|&id| self.is_free(id) && engines.eligible(id, key))
                .collect()
        }
    }

    /// `weighted`'s draw: by rejection against the lightest free load (exact when it
    /// accepts), else exactly among all candidates.
    fn draw_weighted(
        &self,
        key: &ClassKey,
        engines: &Engines,
        rng: &mut SmallRng,
    ) -> Option<EngineId> {
        let lightest = self.by_load.first()?.0;
        let bound = scheduler::weight(lightest);
        for _ in 0..16 {
            let id = self.draw(key, engines, rng)?;
            let w = scheduler::weight(engines[id].outstanding());
            if rng.random::<f64>() * bound < w {
                return Some(id);
            }
        }
        let candidates = self.candidates(key, engines);
        let weights: Vec<f64> = candidates
            .iter()
            .map(|&id| scheduler::weight(engines[id].outstanding()))
            .collect();
        scheduler::weighted_index(&weights, rng).map(|i| candidates[i])
    }
}
