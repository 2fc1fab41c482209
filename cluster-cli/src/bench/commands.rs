//! `cluster bench --commands 1000,10000`: the rate of `cluster map -- true` on two local
//! engines against `xargs -P 2` on the same machine, in the same run.
//!
//! Both are measured as a user runs them, as whole processes reading the same argument file:
//! `xargs -P 2 -n 1 true < FILE` and `cluster map -a FILE -- true` (which connects, submits,
//! waits and prints). The two alternate, so that a machine getting busier mid-run hurts both.

use super::TempCluster;
use anyhow::{bail, Context as _, Result};
use std::process::{Command, Stdio};
use std::time::Instant;

/// One task count's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandFigures {
    /// Commands per run.
    pub commands: usize,
    /// Seconds of each xargs run.
    pub xargs_s: Vec<f64>,
    /// Seconds of each `cluster map` run.
    pub cluster_s: Vec<f64>,
    /// Commands per second, median run of xargs.
    pub xargs_per_s: f64,
    /// Commands per second, median run of `cluster map`.
    pub cluster_per_s: f64,
    /// `cluster_per_s / xargs_per_s`.
    pub ratio: f64,
}

/// The whole comparison.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CommandBench {
    /// Engines (and xargs -P).
    pub engines: usize,
    /// Figures per task count.
    pub figures: Vec<CommandFigures>,
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn timed(mut cmd: Command, what: &str) -> Result<f64> {
    let t = Instant::now();
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {what}"))?;
    let secs = t.elapsed().as_secs_f64();
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(secs)
}

/// Runs the comparison for each count in `counts`, `runs` times each.
pub fn bench_commands(
    counts: &[usize],
    engines: usize,
    runs: usize,
    progress: bool,
) -> Result<CommandBench> {
    let cluster = TempCluster::start(engines, &[])?;
    let root = cluster
        .profile
        .dir()
        .parent()
        .context("the temporary profile has no parent folder")?
        .to_owned();
    let mut figures = Vec::new();
    for &n in counts {
        let file = root.join(format!("args-{n}"));
        std::fs::write(&file, "x\n".repeat(n))
            .with_context(|| format!("cannot write {}", file.display()))?;
        let mut f = CommandFigures {
            commands: n,
            xargs_s: Vec::new(),
            cluster_s: Vec::new(),
            xargs_per_s: 0.0,
            cluster_per_s: 0.0,
            ratio: 0.0,
        };
        for run in 0..runs.max(1) {
            let mut xargs = Command::new("xargs");
            xargs
                .args(["-P", &engines.to_string(), "-n", "1", "true"])
                .stdin(std::fs::File::open(&file)?);
            let x = timed(xargs, "xargs")?;
            let mut map = crate::program::command()?;
            map.env("CLUSTER_DIR", &root)
                .args([
                    "--profile",
                    cluster.profile.name(),
                    "map",
                    "--no-progress",
                    "-a",
                ])
                .arg(&file)
                .args(["--", "true"]);
            let c = timed(map, "cluster map")?;
            if progress {
                eprintln!(
                    "{n} × true, run {}: xargs -P {engines} {x:.3} s ({:.0}/s), cluster map {c:.3} s ({:.0}/s)",
                    run + 1,
                    n as f64 / x,
                    n as f64 / c
                );
            }
            f.xargs_s.push(x);
            f.cluster_s.push(c);
        }
        f.xargs_per_s = n as f64 / median(&f.xargs_s);
        f.cluster_per_s = n as f64 / median(&f.cluster_s);
        f.ratio = f.cluster_per_s / f.xargs_per_s;
        figures.push(f);
    }
    Ok(CommandBench { engines, figures })
}

/// The comparison as a table.
pub fn render(b: &CommandBench) -> String {
    let mut s = format!(
        "{:>9}  {:>16}  {:>16}  {:>7}\n",
        "commands",
        format!("xargs -P {} /s", b.engines),
        "cluster map /s",
        "ratio"
    );
    for f in &b.figures {
        s.push_str(&format!(
            "{:>9}  {:>16.0}  {:>16.0}  {:>6.1}%\n",
            f.commands,
            f.xargs_per_s,
            f.cluster_per_s,
            f.ratio * 100.0
        ));
    }
    s.push_str(&format!(
        "(median of runs; `true` per argument; {} local engines)\n",
        b.engines
    ));
    s
}
