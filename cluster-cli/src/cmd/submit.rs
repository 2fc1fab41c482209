//! `cluster submit`: one command sent, its id printed at once and kept in the profile's
//! ledger for `cluster wait`.

use super::{CommandFlags, Conn, TaskFlags};
use crate::ctx::Ctx;
use crate::output::Submitted;
use anyhow::Result;

/// Submit one command and print its task id at once; see `cluster result` and `cluster wait`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The command and its arguments (after `--`).
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    #[command(flatten)]
    pub conn: Conn,
    #[command(flatten)]
    pub task: TaskFlags,
    #[command(flatten)]
    pub cmd: CommandFlags,
}

/// Submits and records the command.
pub fn run(args: Args, ctx: &Ctx) -> Result<Submitted> {
    let shell = args.cmd.shell_mode(&args.command);
    let template = crate::template::Template::parse(&args.command, shell)?;
    let line = template.render(&[], 1)?;
    let options = args.cmd.options(&args.task)?;
    let ledger = client::Ledger::of_profile(&ctx.open_profile()?);
    let client = ctx.connect(&args.conn)?;
    let id = ledger.submit_command(
        &client,
        &options.view(&client),
        options.spec(&line),
        &line.to_string(),
    )?;
    Ok(Submitted(id))
}
