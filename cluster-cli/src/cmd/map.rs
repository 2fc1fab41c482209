//! `cluster map`: a function over items (`--function NAME ITEMS…`), or a command over
//! argument sets (`-- COMMAND TEMPLATE ::: ARG…`): two handlers behind one set of flags.

use super::{CommandFlags, Conn, TaskFlags};
use crate::ctx::Ctx;
use crate::exit::{TasksFailed, Usage};
use crate::output::Nothing;
use crate::tasks::{Order, Printing};
use crate::template;
use anyhow::{bail, Context as _, Result};
use std::path::{Path, PathBuf};

/// Load-balanced map of a function (`--function NAME ITEMS…`) or of a command
/// (`-- COMMAND TEMPLATE ::: ARG…`, GNU-parallel style).
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Command maps: `cluster map -- convert {} {.}.png ::: *.jpg` runs one task per argument; arguments come after `:::` (several `:::` groups combine), from --args-file FILE, or from stdin, one per line.\nPlaceholders: {} argument, {.} without extension, {/} basename, {//} directory, {/.} basename without extension, {#} task number, {N} (and {N.} {N/}…) column N of the argument set. Without any placeholder the arguments are appended.\nEach task's stdout and stderr are printed as a block, in input order (or as they finish with --unordered); exit status 0 only when every task exited 0."
)]
pub struct Args {
    /// Function to apply to each item (a function map); without it, a command map.
    #[arg(long)]
    pub function: Option<String>,
    /// Function map: items (ranges like 0..1000, JSON values or plain words). Command map:
    /// the command template, then `:::` and arguments.
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub items: Vec<String>,
    /// Items per task (0 = automatic; function maps).
    #[arg(long, default_value_t = 0)]
    pub chunksize: usize,
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub task: TaskFlags,
    #[command(flatten)]
    pub cmd: CommandFlags,
    /// Command maps: read argument sets from FILE, one per line (`-` for stdin).
    #[arg(long, short = 'a', value_name = "FILE")]
    pub args_file: Option<PathBuf>,
    /// Command maps: split each input line into columns {1} {2}… at SEP.
    #[arg(long, value_name = "SEP", default_value = "\t")]
    pub colsep: String,
    /// Print each result (or command task's output) as soon as it is in, not in input order.
    #[arg(long)]
    pub unordered: bool,
    /// No progress bar (it shows only when stderr is a terminal anyway).
    #[arg(long)]
    pub no_progress: bool,
    /// Print JSON lines: `{"item","result"}` for function maps; for command maps one
    /// object per task (argument, engine, host, exit_status, stdout, stderr, start, end…).
    #[arg(long)]
    pub json: bool,
}

/// Runs the map; its output is printed as it comes.
pub fn run(args: Args, ctx: &Ctx) -> Result<Nothing> {
    match args.function.clone() {
        Some(function) => function_map(&function, args, ctx),
        None => command_map(args, ctx),
    }
}

/// `--function NAME ITEMS…`: one result a line, streamed in item order (or as they finish).
fn function_map(function: &str, args: Args, ctx: &Ctx) -> Result<Nothing> {
    let items = crate::args::map_items(&args.items)?;
    let checked = crate::fmap::Checked::items(function, &items);
    let client = ctx.connect(&args.conn)?;
    let map = args
        .task
        .view(&client)
        .chunksize(args.chunksize)
        .map::<serde_json::Value, serde_json::Value>(
            function,
            checked.sent.iter().map(|&i| items[i].clone()),
        )?;
    let how = crate::fmap::Streaming {
        order: order(args.unordered),
        progress: !args.no_progress,
        timeout: args.task.timeout()?,
    };
    let ids = map.task_ids();
    let abort = || crate::interrupt::summary("cluster map", client.abort(&ids));
    let summary = crate::interrupt::abort_on_interrupt(abort, || {
        crate::fmap::stream(&client, map, &items, checked, how, &ctx.out)
    })??;
    if summary.failed > 0 {
        return Err(TasksFailed(summary.failure_line("cluster map")).into());
    }
    Ok(Nothing)
}

fn order(unordered: bool) -> Order {
    if unordered {
        Order::Finish
    } else {
        Order::Input
    }
}

/// `-- COMMAND ::: ARGS`: one task per argument set, each task's output as a block.
fn command_map(args: Args, ctx: &Ctx) -> Result<Nothing> {
    let (words, groups) = template::split_groups(&args.items);
    check_command(&words)?;
    let template = template::Template::parse(&words, args.cmd.shell_mode(&words))?;
    let sets = argument_sets(groups, args.args_file.as_deref(), &args.colsep)?;
    if sets.is_empty() {
        ctx.out
            .note("no argument sets (none after `:::`, or empty input); nothing to run")?;
        return Ok(Nothing);
    }
    let options = args.cmd.options(&args.task)?;
    let client = ctx.connect(&args.conn)?;
    let printing = Printing {
        order: order(args.unordered),
        progress: !args.no_progress,
    };
    let summary = crate::tasks::run_map(&client, &template, sets, &options, printing, &ctx.out)?;
    if summary.failed() > 0 {
        return Err(TasksFailed(summary.failure_line("cluster map")).into());
    }
    Ok(Nothing)
}

/// A command map needs a command: a first word that is an item (a range, a number, a JSON
/// array) means `--function` was forgotten, and nothing may be run or read for it.
fn check_command(words: &[String]) -> Result<()> {
    let Some(first) = words.first() else {
        return Err(Usage(
            "no command before `:::`: write it after `--`, e.g. `cluster map -- echo {} ::: a b`"
                .into(),
        )
        .into());
    };
    let is_range = !matches!(crate::args::parse_range(first), Ok(None));
    let is_value = matches!(
        serde_json::from_str::<serde_json::Value>(first),
        // Not objects: `{}` is the placeholder.
        Ok(serde_json::Value::Number(_) | serde_json::Value::Array(_))
    );
    if is_range || is_value {
        return Err(Usage(format!(
            "{first:?} is an item, not a command: to map a function over items give it with --function (`cluster map --function nth_prime {first}`); to run a command per argument, write it after `--` (`cluster map -- echo {{}} ::: a b`)"
        ))
        .into());
    }
    Ok(())
}

/// Argument sets of a command map: the `:::` groups combined, else the lines of --args-file,
/// else the lines of stdin (refused when stdin is a terminal: nobody is typing them).
fn argument_sets(
    groups: Vec<Vec<String>>,
    args_file: Option<&Path>,
    colsep: &str,
) -> Result<Vec<Vec<String>>> {
    if !groups.is_empty() {
        if args_file.is_some() {
            bail!("give arguments either after `:::` or with --args-file, not both");
        }
        return Ok(template::combinations(&groups));
    }
    let text = match args_file {
        Some(p) if p != Path::new("-") => std::fs::read_to_string(p)
            .with_context(|| format!("cannot read the argument file {}", p.display()))?,
        _ => {
            if args_file.is_none() && crate::progress::is_terminal(0) {
                bail!("no arguments: give them after `:::` (`cluster map -- echo {{}} ::: a b`), with --args-file FILE, or on stdin");
            }
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .context("cannot read arguments from stdin")?;
            text
        }
    };
    let sep = (!colsep.is_empty()).then_some(colsep);
    Ok(text
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| template::columns(l, sep))
        .collect())
}
