//! `cluster ns`: a shared namespace of the controller from the shell: `set`, `get`, `del`,
//! `ls`. Values are msgpack made from words as in `cluster call`; values set by Python
//! (pickles) are shown as a notice naming their format.

use super::Conn;
use crate::ctx::Ctx;
use crate::output::NsShown;
use anyhow::Result;
use client::Item;

/// A shared namespace in the controller: set, get, delete and list keys.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub action: Action,
    /// The namespace [default: default, the one every client shares].
    #[arg(long, global = true, default_value = protocol::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What to do.
#[derive(clap::Subcommand, Debug)]
pub enum Action {
    /// Set KEY to VALUE (JSON or a plain word; several words make an array).
    Set {
        /// The key.
        key: String,
        /// The value.
        #[arg(required = true)]
        value: Vec<String>,
    },
    /// Print the value of KEY (exit status 1 if there is none).
    Get {
        /// The key.
        key: String,
    },
    /// Delete KEY.
    Del {
        /// The key.
        key: String,
    },
    /// List the keys.
    Ls,
}

/// Runs one namespace command.
pub fn run(args: Args, ctx: &Ctx) -> Result<NsShown> {
    let client = ctx.connect(&args.conn)?;
    let ns = client.namespace(&args.namespace);
    let name = args.namespace.clone();
    Ok(match args.action {
        Action::Set { key, value } => {
            let value = crate::args::call_argument(&value);
            ns.set(&key, Item::msgpack(&value)?)?;
            NsShown::Set { name, key }
        }
        Action::Get { key } => match ns.get(&key)? {
            Some(item) => {
                let what = format!("key {key:?} of namespace {name:?}");
                let value = super::queue::shown_item(&what, item, ctx);
                NsShown::Value { name, key, value }
            }
            None => anyhow::bail!("namespace {name:?} has no key {key:?}"),
        },
        Action::Del { key } => {
            let existed = ns.delete(&key)?;
            NsShown::Deleted { name, key, existed }
        }
        Action::Ls => NsShown::Keys {
            keys: ns.keys()?,
            name,
        },
    })
}
