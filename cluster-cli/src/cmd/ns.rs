//! `cluster ns`: a shared namespace of the controller from the shell: `set`, `get`, `del`,
//! `ls`. Values are msgpack made from words as in `cluster call`; values set by Python
//! (pickles) are shown as a notice naming their format.

use super::Conn;
use crate::ctx::Ctx;
use crate::output::NsShown;
use anyhow::Result;
use client::Item;

/// A shared namespace in the controller: set, get, delete and list keys.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Set KEY to VALUE (JSON or a plain word; several words make an array).
    Set {
        /// The key.
        key: String,
        /// The value.
        #[arg(required = true)]
        value: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// Print the value of KEY (exit status 1 if there is none).
    Get {
        /// The key.
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Delete KEY.
    Del {
        /// The key.
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// List the keys.
    Ls {
        #[command(flatten)]
        common: Common,
    },
}

/// The options every `cluster ns` command takes.
#[derive(clap::Args, Debug)]
pub struct Common {
    /// The namespace [default: default, the one every client shares].
    #[arg(long, default_value = protocol::DEFAULT_NAMESPACE)]
    pub namespace: String,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

impl Args {
    fn common(&self) -> &Common {
        match self {
            Args::Set { common, .. }
            | Args::Get { common, .. }
            | Args::Del { common, .. }
            | Args::Ls { common } => common,
        }
    }

    /// Whether the command asked for JSON.
    pub fn json(&self) -> bool {
        self.common().json
    }
}

/// Runs one namespace command.
pub fn run(args: Args, ctx: &Ctx) -> Result<NsShown> {
    let common = args.common();
    let client = ctx.connect(&common.conn)?;
    let name = common.namespace.clone();
    let ns = client.namespace(&name);
    Ok(match args {
        Args::Set { key, value, .. } => {
            let value = crate::args::call_argument(&value);
            ns.set(&key, Item::msgpack(&value)?)?;
            NsShown::Set { name, key }
        }
        Args::Get { key, .. } => match ns.get(&key)? {
            Some(item) => {
                let what = format!("key {key:?} of namespace {name:?}");
                let value = super::queue::shown_item(&what, item, ctx);
                NsShown::Value { name, key, value }
            }
            None => anyhow::bail!("namespace {name:?} has no key {key:?}"),
        },
        Args::Del { key, .. } => {
            let existed = ns.delete(&key)?;
            NsShown::Deleted { name, key, existed }
        }
        Args::Ls { .. } => NsShown::Keys {
            keys: ns.keys()?,
            name,
        },
    })
}
