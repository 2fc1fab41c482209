//! `cluster profile create | list | locate`.

use crate::ctx::Ctx;
use crate::output::{PathReport, ProfileList, ProfileRow, Report};
use anyhow::Result;
use clap::Subcommand;

/// Create, list and locate profiles.
#[derive(Subcommand, Debug)]
pub enum Args {
    /// Create a profile folder with cluster.toml (commented defaults), security/, log/, run/.
    Create {
        /// Profile name [default: --profile].
        name: Option<String>,
    },
    /// List profiles and whether a cluster runs in each.
    List {
        /// JSON lines.
        #[arg(long)]
        json: bool,
    },
    /// Print a profile's folder.
    Locate {
        /// Profile name [default: --profile].
        name: Option<String>,
    },
}

impl Args {
    /// `--json` was given.
    pub fn json(&self) -> bool {
        matches!(self, Args::List { json: true })
    }
}

/// Runs the subcommand.
pub fn run(args: Args, ctx: &Ctx) -> Result<Box<dyn Report>> {
    let name = |n: Option<String>| n.unwrap_or_else(|| ctx.profile.clone());
    Ok(match args {
        Args::Create { name: n } => {
            Box::new(PathReport(ctx.profiles.create(&name(n))?.dir().to_owned()))
        }
        Args::Locate { name: n } => {
            Box::new(PathReport(ctx.profiles.open(&name(n))?.dir().to_owned()))
        }
        Args::List { .. } => {
            let rows = ctx
                .profiles
                .list()?
                .into_iter()
                .map(|p| ProfileRow {
                    controller_pid: crate::launch::running_controller(&p)
                        .ok()
                        .flatten()
                        .map(|r| r.pid),
                    dead_controller_pid: crate::launch::dead_controller(&p),
                    engines_running: crate::launch::surviving_engines(&p)
                        .map(|e| e.len())
                        .unwrap_or(0),
                    name: p.name().to_owned(),
                    dir: p.dir().to_owned(),
                })
                .collect();
            Box::new(ProfileList(rows))
        }
    })
}
