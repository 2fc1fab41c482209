//! `cluster bench tasks | failover | scale N | commands N,…` (see [`crate::bench`]).
//!
//! `cluster bench` alone runs `tasks`. The flags of the single-command form still work:
//! `bench --failover`, `bench --scale N`, `bench --commands N,…`, and `bench -n 2 --calls …`.

use super::secs;
use crate::bench::{commands, failover, objects, scale, store, tasks};
use crate::ctx::Ctx;
use crate::output::Rendered;
use anyhow::Result;
use clap::Subcommand;

/// Measure start-up, round trip and task rates on throw-away local clusters.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// What to measure [default: tasks].
    #[command(subcommand)]
    pub which: Option<Which>,
    /// One JSON object instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(flatten)]
    pub old: OldFlags,
}

/// The figures of `bench tasks`.
#[derive(clap::Args, Debug, Clone)]
pub struct TaskArgs {
    /// Engines for the task figures.
    #[arg(short = 'n', long = "engines", default_value_t = 2)]
    pub engines: usize,
    /// Sequential apply calls for the round-trip figures.
    #[arg(long, default_value_t = 2000)]
    pub calls: usize,
    /// Items of the map and apply-many figures.
    #[arg(long, default_value_t = 10_000)]
    pub items: usize,
    /// Start-up runs (`start -n 4`) to take the median of.
    #[arg(long, default_value_t = 3)]
    pub start_runs: usize,
}

/// The benchmarks.
#[derive(Subcommand, Debug, Clone)]
pub enum Which {
    /// Start-up, apply round trips and task rates at hwm auto and hwm 1.
    Tasks(TaskArgs),
    /// Engine deaths: kill -9 → EngineLeft, SIGSTOP → unregistered, SIGCONT → back; the
    /// controller killed mid-map and started again.
    Failover {
        /// Runs of each figure.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// N simulated engines on a real controller: registration time, idle CPU with
    /// heartbeats, task rates (--items one-item tasks), disconnects noticed.
    Scale {
        /// Simulated engines.
        engines: usize,
        /// One-item tasks of the rate figure (the chunked map gets ten times as many items).
        #[arg(long, default_value_t = 10_000)]
        items: usize,
        /// Seconds of the idle CPU measurement.
        #[arg(long, default_value_t = 10.0)]
        idle: f64,
    },
    /// `cluster map -- true` against `xargs -P` for these numbers of commands (1000,10000).
    Commands {
        /// Numbers of commands, comma-separated.
        #[arg(value_delimiter = ',', required = true, value_name = "N,…")]
        counts: Vec<usize>,
        /// Engines (and xargs -P).
        #[arg(short = 'n', long = "engines", default_value_t = 2)]
        engines: usize,
        /// Runs per figure (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// The task store: task rates with db = memory and db = sqlite, controller memory after
    /// 100k and 1M one-item tasks on SQLite, and the time from a restart to serving.
    Store {
        /// Engines.
        #[arg(short = 'n', long = "engines", default_value_t = 2)]
        engines: usize,
        /// One-item tasks of each rate figure (the chunked map gets ten times as many).
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        /// Runs of each rate figure (the best is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Task counts after which the controller's memory is read (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        tasks: Vec<u64>,
    },
    /// Shared objects, with db = sqlite and db = memory: queue put->get round trip (median,
    /// p99), items/s with 1 producer and 2 consumers, lock acquire + release.
    Objects {
        /// Put->get round trips measured.
        #[arg(long, default_value_t = 2000)]
        round_trips: usize,
        /// Items of the producer/consumers figure.
        #[arg(long, default_value_t = 20_000)]
        items: usize,
        /// Lock acquire + release pairs measured.
        #[arg(long, default_value_t = 2000)]
        locks: usize,
    },
}

/// The flags of `cluster bench` before it had subcommands (hidden; still accepted).
#[derive(clap::Args, Debug, Clone)]
pub struct OldFlags {
    #[command(flatten)]
    pub tasks: TaskArgs,
    #[arg(long, value_delimiter = ',', value_name = "N,…", hide = true)]
    pub commands: Vec<usize>,
    #[arg(long, default_value_t = 3, hide = true)]
    pub runs: usize,
    #[arg(long, hide = true)]
    pub failover: bool,
    #[arg(long, value_name = "N", hide = true)]
    pub scale: Option<usize>,
    #[arg(long, default_value_t = 10.0, hide = true)]
    pub idle: f64,
}

impl OldFlags {
    /// The subcommand the old flags meant.
    fn which(self) -> Which {
        if let Some(engines) = self.scale {
            Which::Scale {
                engines,
                items: self.tasks.items,
                idle: self.idle,
            }
        } else if self.failover {
            Which::Failover { runs: self.runs }
        } else if !self.commands.is_empty() {
            Which::Commands {
                counts: self.commands,
                engines: self.tasks.engines,
                runs: self.runs,
            }
        } else {
            Which::Tasks(self.tasks)
        }
    }
}

/// Runs one benchmark and prints its report.
pub fn run(args: Args, ctx: &Ctx) -> Result<()> {
    let progress = !args.json;
    let which = args.which.unwrap_or_else(|| args.old.which());
    let out = &ctx.out;
    match which {
        Which::Tasks(t) => {
            let r = tasks::bench(t.engines, t.calls, t.items, t.start_runs, progress)?;
            let text = move |r: &tasks::BenchReport| tasks::render_bench(r, t.calls, t.items);
            out.report(&Rendered(&r, &text))?;
        }
        Which::Failover { runs } => {
            let r = failover::bench_failover(runs, progress)?;
            out.report(&Rendered(&r, &failover::render_failover))?;
        }
        Which::Scale {
            engines,
            items,
            idle,
        } => {
            let r = scale::bench_scale(engines, items, items * 10, secs(idle)?, progress)?;
            out.report(&Rendered(&r, &scale::render_scale))?;
        }
        Which::Commands {
            counts,
            engines,
            runs,
        } => {
            let r = commands::bench_commands(&counts, engines, runs, progress)?;
            out.report(&Rendered(&r, &commands::render))?;
        }
        Which::Store {
            engines,
            items,
            runs,
            tasks,
        } => {
            let r = store::bench_store(engines, items, runs, &tasks, progress)?;
            out.report(&Rendered(&r, &store::render_store))?;
        }
        Which::Objects {
            round_trips,
            items,
            locks,
        } => {
            let r = objects::bench_objects(round_trips, items, locks, progress)?;
            out.report(&Rendered(&r, &objects::render_objects))?;
        }
    }
    Ok(())
}
