//! `cluster queue`: the controller's shared queues from the shell: `put`, `get`, `ls`, `rm`.
//!
//! Items are msgpack values made from words as `cluster call` and `cluster map` make them
//! (`0..1000` is 1000 items, `'{"a":1}'` one JSON object, `hello` a string), so a Rust
//! `client.queue::<T>(name)` reads them. Items put by Python (pickles) are shown as a notice
//! naming their format.

use super::Conn;
use crate::ctx::Ctx;
use crate::output::{ObjectsShown, QueueGot, QueuePut};
use anyhow::Result;
use client::{Item, ObjectError};
use std::time::Duration;

/// Shared queues in the controller: put, get, list, remove.
#[derive(clap::Subcommand, Debug)]
pub enum Args {
    /// Append items (words become values; A..B ranges expand) to a queue, made on first use.
    Put(PutArgs),
    /// Take items from a queue, waiting for them.
    Get(GetArgs),
    /// List the queues: items, bytes, waiters.
    Ls(LsArgs),
    /// Delete a queue and its items.
    Rm(RmArgs),
}

impl Args {
    /// Whether the command asked for JSON.
    pub fn json(&self) -> bool {
        match self {
            Args::Put(a) => a.json,
            Args::Get(a) => a.json,
            Args::Ls(a) => a.json,
            Args::Rm(a) => a.json,
        }
    }
}

/// `cluster queue put NAME WORD…`.
#[derive(clap::Args, Debug)]
pub struct PutArgs {
    /// The queue.
    pub name: String,
    /// Items: JSON or plain words; START..END ranges expand to their numbers.
    #[arg(required = true)]
    pub items: Vec<String>,
    /// Bound the queue to this many items first (puts wait while it is full; 0 lifts it).
    #[arg(long)]
    pub maxsize: Option<u64>,
    /// Seconds each put may wait while the queue is full [default: no limit].
    #[arg(long)]
    pub timeout: Option<f64>,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `cluster queue get NAME`.
#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// The queue.
    pub name: String,
    /// How many items to take.
    #[arg(short = 'n', long, default_value_t = 1)]
    pub count: u64,
    /// Seconds to wait for each item [default: no limit]; exit status 5 when none came.
    #[arg(long)]
    pub timeout: Option<f64>,
    /// Do not wait: take what is there now (exit status 5 if the queue is empty).
    #[arg(long, conflicts_with = "timeout")]
    pub nowait: bool,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `cluster queue ls`.
#[derive(clap::Args, Debug)]
pub struct LsArgs {
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// `cluster queue rm NAME`.
#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// The queue.
    pub name: String,
    #[command(flatten)]
    pub conn: Conn,
    /// One JSON object.
    #[arg(long)]
    pub json: bool,
}

/// What a queue command reports.
#[derive(Debug)]
pub enum Shown {
    /// Items put.
    Put(QueuePut),
    /// Items taken.
    Got(QueueGot),
    /// The queues.
    List(ObjectsShown),
    /// A queue removed (or not there).
    Removed(crate::output::Removed),
}

impl crate::output::Report for Shown {
    fn text(&self) -> String {
        match self {
            Shown::Put(r) => r.text(),
            Shown::Got(r) => r.text(),
            Shown::List(r) => r.text(),
            Shown::Removed(r) => r.text(),
        }
    }
    fn json(&self) -> serde_json::Value {
        match self {
            Shown::Put(r) => r.json(),
            Shown::Got(r) => r.json(),
            Shown::List(r) => r.json(),
            Shown::Removed(r) => r.json(),
        }
    }
}

/// Runs one queue command.
pub fn run(args: Args, ctx: &Ctx) -> Result<Shown> {
    match args {
        Args::Put(a) => put(a, ctx).map(Shown::Put),
        Args::Get(a) => get(a, ctx).map(Shown::Got),
        Args::Ls(a) => {
            let client = ctx.connect(&a.conn)?;
            let objects = client
                .objects()?
                .into_iter()
                .filter(|o| o.kind == protocol::ObjectKind::Queue)
                .collect();
            Ok(Shown::List(ObjectsShown { objects }))
        }
        Args::Rm(a) => {
            let client = ctx.connect(&a.conn)?;
            let kind = client
                .objects()?
                .into_iter()
                .find(|o| o.name == a.name)
                .map(|o| o.kind);
            if let Some(kind) = kind.filter(|k| *k != protocol::ObjectKind::Queue) {
                return Err(crate::exit::Usage(format!(
                    "{:?} is a {kind}, not a queue; nothing removed",
                    a.name
                ))
                .into());
            }
            let removed = client.remove_object(&a.name)?;
            Ok(Shown::Removed(crate::output::Removed {
                name: a.name,
                removed,
            }))
        }
    }
}

fn put(a: PutArgs, ctx: &Ctx) -> Result<QueuePut> {
    let items = crate::args::map_items(&a.items)?;
    let timeout = a.timeout.map(super::secs).transpose()?;
    let client = ctx.connect(&a.conn)?;
    let queue = client.raw_queue(&a.name);
    if let Some(m) = a.maxsize {
        queue.set_maxsize((m > 0).then_some(m))?;
    }
    let encoded: Vec<Item> = items
        .iter()
        .map(Item::msgpack)
        .collect::<Result<_, ObjectError>>()?;
    let total = encoded.len();
    put_all(&queue, encoded, timeout)?;
    Ok(QueuePut {
        queue: a.name,
        count: total as u64,
        size: queue.qsize()?,
    })
}

/// Puts `items` in order, pipelined a thousand at a time.
fn put_all(queue: &client::RawQueue, items: Vec<Item>, timeout: Option<Duration>) -> Result<()> {
    let mut items = items.into_iter().peekable();
    while items.peek().is_some() {
        queue.put_many(items.by_ref().take(1000), timeout)?;
    }
    Ok(())
}

fn get(a: GetArgs, ctx: &Ctx) -> Result<QueueGot> {
    let timeout = a.timeout.map(super::secs).transpose()?;
    let client = ctx.connect(&a.conn)?;
    let queue = client.raw_queue(&a.name);
    let mut items = Vec::new();
    for _ in 0..a.count.max(1) {
        let got = if a.nowait {
            queue.get_nowait()
        } else {
            queue.get(timeout)
        };
        match got {
            Ok(item) => items.push(shown_item(&format!("queue {:?}", a.name), item, ctx)),
            // What was taken before the queue ran dry is shown; the status says it ran dry.
            Err(e @ (ObjectError::Empty { .. } | ObjectError::Timeout { .. }))
                if !items.is_empty() =>
            {
                ctx.out
                    .note(&format!("{e}; took {} item(s)", items.len()))?;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(QueueGot {
        queue: a.name,
        items,
    })
}

/// An item as the CLI shows it: its msgpack value as JSON, or a notice naming its format.
pub fn shown_item(what: &str, item: Item, ctx: &Ctx) -> crate::output::ShownItem {
    match item.decode::<serde_json::Value>(what) {
        Ok(value) => crate::output::ShownItem::Value(value),
        Err(e) => {
            let _ = ctx.out.note(&e.to_string());
            crate::output::ShownItem::Opaque {
                format: item.format,
                bytes: item.data.len() as u64,
            }
        }
    }
}
