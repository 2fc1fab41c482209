//! Function maps from the command line: `cluster map --function NAME ITEMS…`.
//!
//! Results stream: each is printed as soon as it and every item before it are in (input
//! order), or as soon as it is in (`--unordered`). Either way the results arrive in the order
//! tasks finish, so the progress bar counts what is done, not what is printed. A failed item
//! gets one line on stderr naming it and its value; the others still print, and the run ends
//! with a summary line (the caller turns failures into exit status 3). A closed stdout
//! aborts what is still queued.

use crate::output::{MapItem, Output};
use crate::progress::Progress;
use crate::tasks::Order;
use anyhow::Result;
use client::{AsyncMapResult, Client};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How often a waiting map flushes what it has printed.
const FLUSH_EVERY: Duration = Duration::from_millis(50);

/// Counts of a finished function map.
#[derive(Debug, Clone, Default)]
pub struct ItemSummary {
    /// Items.
    pub total: usize,
    /// Items that failed.
    pub failed: usize,
    /// The first failure, described.
    pub first_failure: Option<String>,
}

impl ItemSummary {
    /// The line that ends a map with failures.
    pub fn failure_line(&self, what: &str) -> String {
        format!(
            "{what}: {} of {} items failed; first: {}",
            self.failed,
            self.total,
            self.first_failure.as_deref().unwrap_or("?")
        )
    }
}

/// What to do with a map's results.
#[derive(Debug, Clone, Copy)]
pub struct Streaming {
    /// Input order or as they finish.
    pub order: Order,
    /// Draw a progress bar (on terminals).
    pub progress: bool,
    /// Give up after this long.
    pub timeout: Option<Duration>,
}

/// Items checked before sending: those sent (their positions), and those refused with why.
#[derive(Debug, Default)]
pub struct Checked {
    /// Positions of the items sent, in the order sent.
    pub sent: Vec<usize>,
    /// Items refused before sending: position and message.
    pub refused: Vec<(usize, String)>,
}

impl Checked {
    /// Checks every item as an argument of `function` ([`crate::signatures`]).
    pub fn items(function: &str, items: &[Value]) -> Checked {
        let mut checked = Checked::default();
        for (i, item) in items.iter().enumerate() {
            match crate::signatures::check(function, item) {
                Ok(()) => checked.sent.push(i),
                Err(why) => checked.refused.push((i, why)),
            }
        }
        checked
    }
}

/// Prints the results of `map` (over the items `checked.sent` names) with the refused items
/// among them, as they come; returns the counts.
pub fn stream(
    client: &Client,
    map: AsyncMapResult<Value>,
    items: &[Value],
    checked: Checked,
    how: Streaming,
    out: &Output,
) -> Result<ItemSummary> {
    let ids = map.task_ids();
    let progress = Progress::start(items.len(), how.progress && !out.json());
    let mut printer = Printer {
        client,
        out,
        items,
        progress: &progress,
        summary: ItemSummary {
            total: items.len(),
            ..ItemSummary::default()
        },
        waiting: BTreeMap::new(),
        next: 0,
        order: how.order,
    };
    for (i, why) in checked.refused {
        printer.arrived(i, Err(why))?;
    }
    let positions = checked.sent;
    let deadline = how.timeout.map(|t| Instant::now() + t);
    let result = printer.drain(map, &positions, deadline);
    if result.as_ref().is_err_and(crate::exit::is_broken_pipe) {
        // Nobody reads the rest: do not keep the engines busy with it.
        let _ = client.abort(&ids);
    }
    result?;
    let summary = printer.summary;
    out.flush()?;
    progress.finish();
    Ok(summary)
}

struct Printer<'a> {
    client: &'a Client,
    out: &'a Output,
    items: &'a [Value],
    progress: &'a Progress,
    summary: ItemSummary,
    /// Results in before an earlier item's (input order).
    waiting: BTreeMap<usize, Result<Value, String>>,
    /// The next item to print in input order.
    next: usize,
    order: Order,
}

impl Printer<'_> {
    /// Takes results as tasks finish until every item is printed.
    fn drain(
        &mut self,
        map: AsyncMapResult<Value>,
        positions: &[usize],
        deadline: Option<Instant>,
    ) -> Result<()> {
        let counter = self.progress.counter();
        let mut finished = 0;
        let mut watch = crate::noengines::NoEngines::default();
        for (index, result) in map.unordered().timeout(FLUSH_EVERY) {
            if index == usize::MAX {
                // Nothing new for a while: show what is printed, then wait on (unless
                // nobody reads it any more).
                self.out.flush()?;
                if self.out.is_stdio() && crate::progress::stdout_gone() {
                    return Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe).into());
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    let what = format!("the map ({finished} of {} items in)", positions.len());
                    return Err(watch.timeout(what).into());
                }
                if finished == 0 {
                    let _terminal = self.progress.hold();
                    watch.check(self.client, self.out)?;
                }
                continue;
            }
            if let Err(e @ client::Error::ConnectionLost { .. }) = result {
                // Every item still out would say the same: say it once.
                return Err(e.into());
            }
            finished += 1;
            counter.set_done(finished);
            let result = result.map_err(|e| crate::exit::message(&anyhow::Error::from(e)));
            self.arrived(positions[index], result)?;
        }
        Ok(())
    }

    /// Item `index` is in: printed now, or once those before it are (input order).
    fn arrived(&mut self, index: usize, result: Result<Value, String>) -> Result<()> {
        match self.order {
            Order::Finish => self.print(index, result),
            Order::Input => {
                self.waiting.insert(index, result);
                while let Some(result) = self.waiting.remove(&self.next) {
                    self.print(self.next, result)?;
                    self.next += 1;
                }
                Ok(())
            }
        }
    }

    fn print(&mut self, index: usize, result: Result<Value, String>) -> Result<()> {
        let item = &self.items[index];
        let _terminal = self.progress.hold();
        match result {
            Ok(value) => {
                let shown = MapItem {
                    item,
                    result: &value,
                };
                self.out.line(&if self.out.json() {
                    crate::output::Report::json(&shown).to_string()
                } else {
                    crate::output::value_text(&value)
                })?;
            }
            Err(e) => {
                self.progress.failed();
                let line = format!("item {} ({item}) failed: {e}", index + 1);
                if self.out.json() {
                    self.out
                        .line(&serde_json::json!({"item": item, "error": line}).to_string())?;
                }
                self.out.note(&line)?;
                self.summary.failed += 1;
                if self.summary.first_failure.is_none() {
                    self.summary.first_failure = Some(line);
                }
            }
        }
        if self.progress.shown() {
            self.out.flush()?;
        }
        Ok(())
    }
}
