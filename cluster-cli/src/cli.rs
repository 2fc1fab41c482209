//! The `cluster` command line: parse, dispatch to the command's module in [`crate::cmd`],
//! print its report, and map errors to exit statuses ([`crate::exit`]).
//!
//! It is a library function, [`main_with`], so that another program can run the whole CLI:
//! the `cluster` binary is one call to it, and the Python wheel's `python -m ferrocluster`
//! another.

use crate::cmd;
use crate::ctx::Ctx;
use crate::exit;
use crate::output::{Format, Output, Report};
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

/// The whole command line.
#[derive(Parser, Debug)]
#[command(
    name = "cluster",
    version,
    about = "An IPyparallel-style compute cluster: a controller, engines, and load-balanced tasks",
    after_help = "Exit status: 0 success, 1 error, 2 usage, 3 a task failed, 4 controller unreachable or connection file bad, 5 timeout.\nLogs: CLUSTER_LOG=debug (or RUST_LOG) sets the log level."
)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

/// Options of every command.
#[derive(clap::Args, Debug)]
struct Global {
    // The environment twins are read by hand, not with clap's `env`: clap shows a flag
    // whose variable is set in every usage line, as if it were required.
    /// Profile to use (folder <cluster dir>/profile_<NAME>) [env: CLUSTER_PROFILE]
    /// [default: default].
    #[arg(long, global = true, value_name = "NAME")]
    profile: Option<String>,
    /// Folder holding the profiles [env: CLUSTER_DIR] [default: ~/.cluster].
    #[arg(long, global = true, value_name = "DIR")]
    cluster_dir: Option<PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Create, list and locate profiles.
    #[command(subcommand)]
    Profile(cmd::profile::Args),
    Start(cmd::start::Args),
    Stop(cmd::stop::Args),
    Status(cmd::status::Args),
    Engines(cmd::engines::Args),
    Scale(cmd::scale::Args),
    Call(cmd::call::Args),
    Map(cmd::map::Args),
    Submit(cmd::submit::Args),
    Result(cmd::result::Args),
    Wait(cmd::wait::Args),
    History(cmd::history::Args),
    Purge(cmd::purge::Args),
    /// Shared queues in the controller: put, get, ls, rm.
    #[command(subcommand)]
    Queue(cmd::queue::Args),
    /// A shared namespace in the controller: set, get, del, ls.
    #[command(subcommand)]
    Ns(cmd::ns::Args),
    Controller(cmd::controller::Args),
    Engine(cmd::engine::Args),
    Demo(cmd::demo::Args),
    Bench(cmd::bench::Args),
    Dashboard(cmd::dashboard::Args),
    Top(cmd::top::Args),
}

impl Command {
    /// The output format the command asked for.
    fn format(&self) -> Format {
        let json = match self {
            Command::Profile(a) => a.json(),
            Command::Start(a) => a.json,
            Command::Stop(a) => a.json,
            Command::Status(a) => a.json,
            Command::Engines(a) => a.json,
            Command::Scale(a) => a.json,
            Command::Call(a) => a.json,
            Command::Map(a) => a.json,
            Command::Result(a) => a.json,
            Command::Wait(a) => a.json,
            Command::History(a) => a.json,
            Command::Purge(a) => a.json,
            Command::Queue(a) => a.json(),
            Command::Ns(a) => a.json(),
            Command::Bench(a) => a.json,
            Command::Submit(_)
            | Command::Controller(_)
            | Command::Engine(_)
            | Command::Demo(_)
            | Command::Dashboard(_)
            | Command::Top(_) => false,
        };
        if json {
            Format::Json
        } else {
            Format::Text
        }
    }
}

/// Sets up logging to stderr: `CLUSTER_LOG`, else `RUST_LOG`, else `default`.
pub fn init_logging(default: &str) {
    let filter = std::env::var("CLUSTER_LOG")
        .or_else(|_| std::env::var("RUST_LOG"))
        .unwrap_or_else(|_| default.to_owned());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        // Colours only on a terminal: the controller's and engines' stderr is a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Prints `report`, then turns what it says into the command's result.
fn show<R: Report>(ctx: &Ctx, report: R, outcome: impl FnOnce(&R) -> Result<()>) -> Result<()> {
    ctx.out.report(&report)?;
    outcome(&report)
}

fn done<R>(_: &R) -> Result<()> {
    Ok(())
}

/// Runs the parsed command.
fn run(cli: Cli) -> Result<()> {
    let ctx = Ctx {
        profiles: match cli.global.cluster_dir {
            Some(dir) => profiles::Profiles::at(dir),
            None => profiles::Profiles::from_env(),
        },
        profile: cli.global.profile.unwrap_or_else(|| {
            std::env::var("CLUSTER_PROFILE")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "default".into())
        }),
        out: Output::stdio(cli.command.format()),
    };
    let ctx = &ctx;
    let result = dispatch(cli.command, ctx);
    // What a command printed goes out before its error message.
    let flushed = ctx.out.flush();
    result.and(Ok(flushed?))
}

/// Runs `command` and prints its report.
fn dispatch(command: Command, ctx: &Ctx) -> Result<()> {
    match command {
        Command::Profile(a) => {
            let report = cmd::profile::run(a, ctx)?;
            Ok(ctx.out.report(report.as_ref())?)
        }
        Command::Start(a) => show(ctx, cmd::start::run(a, ctx)?, |r| r.outcome()),
        Command::Stop(a) => show(ctx, cmd::stop::run(a, ctx)?, |r| r.outcome()),
        Command::Status(a) => show(ctx, cmd::status::run(a, ctx)?, done),
        Command::Engines(a) => show(ctx, cmd::engines::run(a, ctx)?, |r| r.outcome()),
        Command::Scale(a) => show(ctx, cmd::scale::run(a, ctx)?, done),
        Command::Call(a) => show(ctx, cmd::call::run(a, ctx)?, done),
        Command::Map(a) => show(ctx, cmd::map::run(a, ctx)?, done),
        Command::Submit(a) => show(ctx, cmd::submit::run(a, ctx)?, done),
        Command::Result(a) => show(ctx, cmd::result::run(a, ctx)?, done),
        Command::Wait(a) => show(ctx, cmd::wait::run(a, ctx)?, |r| r.outcome()),
        Command::History(a) => show(ctx, cmd::history::run(a, ctx)?, done),
        Command::Purge(a) => show(ctx, cmd::purge::run(a, ctx)?, done),
        Command::Queue(a) => show(ctx, cmd::queue::run(a, ctx)?, done),
        Command::Ns(a) => show(ctx, cmd::ns::run(a, ctx)?, done),
        Command::Controller(a) => show(ctx, cmd::controller::run(a, ctx)?, done),
        Command::Engine(a) => show(ctx, cmd::engine::run(a, ctx)?, done),
        Command::Demo(a) => show(ctx, cmd::demo::run(a, ctx)?, done),
        Command::Bench(a) => cmd::bench::run(a, ctx),
        Command::Dashboard(a) => cmd::dashboard::run(a, ctx),
        Command::Top(a) => cmd::top::run(a, ctx),
    }
}

/// Runs the `cluster` command line on `args` (the program name first, as in
/// `std::env::args_os()`) and returns its exit status. Usage errors print clap's message and
/// give 2; `--help` and `--version` print and give 0.
pub fn main_with(args: impl IntoIterator<Item = OsString>) -> ExitCode {
    ExitCode::from(main_status(args))
}

/// [`main_with`] with the exit status as a number (for hosts that exit themselves, such as
/// the Python extension: an `ExitCode` cannot be read back).
pub fn main_status(args: impl IntoIterator<Item = OsString>) -> u8 {
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return u8::try_from(e.exit_code()).unwrap_or(exit::USAGE);
        }
    };
    let daemon = matches!(&cli.command, Command::Scale(a) if a.foreground);
    if daemon {
        init_logging("info");
    } else if !matches!(cli.command, Command::Controller(_) | Command::Engine(_)) {
        init_logging("warn");
    }
    match run(cli) {
        Ok(()) => 0,
        // A closed pipe (`cluster map … | head`) is not a failure.
        Err(e) if exit::is_broken_pipe(&e) => 0,
        Err(e) => {
            // Not eprintln!: a closed stderr must not turn an error into a panic.
            let _ = writeln!(std::io::stderr(), "error: {}", exit::message(&e));
            exit::code(&e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Words of a shell line (single and double quotes; no expansions).
    fn words(line: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut word = String::new();
        let mut quote = None;
        let mut any = false;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    any = true;
                }
                (None, c) if c.is_whitespace() => {
                    if any || !word.is_empty() {
                        out.push(std::mem::take(&mut word));
                    }
                    any = false;
                }
                (None, c) => word.push(c),
            }
        }
        if any || !word.is_empty() {
            out.push(word);
        }
        out
    }

    /// The `cluster …` command lines of README's shell blocks (also as `target/release/cluster …`,
    /// `cargo run -p cluster-cli -- …` or after `&&`), with `[optional]` parts kept and placeholders given example values.
    fn readme_commands() -> Vec<(String, Vec<String>)> {
        let readme = include_str!("../../README.md");
        let mut out = Vec::new();
        let mut in_sh = false;
        for line in readme.lines() {
            if line.starts_with("```") {
                in_sh = line == "```sh";
                continue;
            }
            if !in_sh {
                continue;
            }
            let code = line.split(" # ").next().unwrap_or_default().trim();
            for code in code.split(" && ") {
                let code = code.strip_prefix("target/release/").unwrap_or(code);
                let rest =
                    if let Some(r) = code.strip_prefix("cargo run --release -p cluster-cli -- ") {
                        r.to_owned()
                    } else if let Some(r) = code
                        .split_once("$(cluster ")
                        .map(|(_, r)| r.trim_end_matches(')'))
                    {
                        r.to_owned()
                    } else if let Some(r) = code.strip_prefix("cluster ") {
                        r.to_owned()
                    } else {
                        continue;
                    };
                let rest = rest
                    .replace(['[', ']'], " ")
                    .replace("$(seq 100)", "1 2")
                    .replace("$id", "3:1");
                let mut args = vec!["cluster".to_owned()];
                for w in words(&rest) {
                    args.push(match w.as_str() {
                        "ID" => "3:1".to_owned(),
                        "NAME" => "demo".to_owned(),
                        "PATH" => "/tmp/engine.json".to_owned(),
                        _ => w,
                    });
                }
                out.push((line.to_owned(), args));
            }
        }
        out
    }

    /// Issue 9 item 1: a README step failed as written. Every `cluster` command README shows
    /// parses with the real command line (the steps that need a cluster are run by the
    /// end-to-end tests).
    #[test]
    fn every_readme_command_parses() {
        let commands = readme_commands();
        assert!(
            commands.len() >= 40,
            "only {} commands found",
            commands.len()
        );
        for (line, args) in commands {
            if let Err(e) = Cli::try_parse_from(&args) {
                if e.kind() != clap::error::ErrorKind::DisplayHelp {
                    panic!("README line `{line}` does not parse ({args:?}):\n{e}");
                }
            }
        }
    }

    #[test]
    fn old_bench_flags_still_parse() {
        for line in [
            "cluster bench --failover --runs 2",
            "cluster bench --scale 100 --items 10 --idle 1",
            "cluster bench --commands 10,20 -n 2",
            "cluster bench -n 2 --calls 10 --json",
            "cluster bench --json scale 10",
        ] {
            let args: Vec<&str> = line.split(' ').collect();
            assert!(Cli::try_parse_from(&args).is_ok(), "{line}");
        }
    }
}
