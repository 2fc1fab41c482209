//! The socket loop around the core: bind, write connection files, then receive, feed the core
//! and perform its actions until told to stop.
//!
//! The loop is here ([`run`]); the sockets, receiving into the core and performing its actions
//! are in `sockets.rs`; the settings and errors in `config.rs`; the connection files in
//! `files.rs`. No rule of the hub lives here: the loop only reads the clock and moves messages.
//!
//! The engine and client sockets are watched ([`transport::Socket::watch_peers`]): an engine
//! whose connection closes (a killed process, local or remote) is reported to the core within
//! milliseconds, without waiting for missed heartbeats, and so is a client's (the core then
//! forgets it once none of its tasks is unfinished).

mod config;
mod files;
mod sockets;

pub use config::{ControllerConfig, ControllerError};

use crate::hub::{Core, CoreConfig};
use security::Addresses;
use sockets::Sockets;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use transport::Context;

/// How often the loop looks at the stop flag, at the latest.
const STOP_CHECK: Duration = Duration::from_millis(100);

/// How often the loop looks for the task store's answers while some are due.
const LOOKUP_CHECK: Duration = Duration::from_millis(1);

/// Runs the controller until `stop` is set (checked at least every 100 ms) or a client asks
/// for `Shutdown { controller: true }` (engines are told to shut down first).
///
/// Binds the engine, heartbeat and client ROUTERs and the notification PUB on
/// `tcp://{ip}:{port}`, then writes `engine.json` (engine and heartbeat addresses) and
/// `client.json` (client and notification addresses) into `security_dir`.
pub fn run(config: ControllerConfig, stop: Arc<AtomicBool>) -> Result<(), ControllerError> {
    // The store first: a database it refuses leaves the connection files alone.
    if config.db_reset {
        if let Some(aside) = store::Store::reset(&config.store)? {
            tracing::warn!(
                "--db-reset: the old task database is now {}",
                aside.display()
            );
        }
    }
    let opened = Instant::now();
    let store::Store { writer, reader } = store::Store::open(&config.store)?;
    let recovery = reader.recover()?;
    let stored_objects = reader.objects()?;
    let persist = config.store.kind != store::StoreKind::None;
    if persist {
        tracing::info!(
            "task store {} ({:?}): {} finished task(s), {} unfinished to queue again; read in {} ms",
            config.store.path.display(),
            config.store.kind,
            recovery.finished,
            recovery.unfinished.len(),
            opened.elapsed().as_millis()
        );
    }
    let queries = store::QueryService::spawn(reader, || {});
    // Declared first so that it is dropped last, after the sockets have flushed.
    let ctx = Context::new();
    let (mut socks, addresses) = Sockets::open(&ctx, &config)?;
    socks.attach_store(writer, queries);
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    let pid = std::process::id();
    files::write_connection_files(&config, &addresses, &host, pid)?;
    if config.restarted {
        tracing::info!("controller restarted on the ports and key of the previous one; engines and clients reconnect by themselves");
    }
    tracing::info!(
        "controller pid {pid} listening: engines {}, heartbeats {}, clients {}, notifications {} (scheduler {}, hwm {})",
        addresses.engine.as_deref().unwrap_or(""),
        addresses.heartbeat.as_deref().unwrap_or(""),
        addresses.client.as_deref().unwrap_or(""),
        addresses.notify.as_deref().unwrap_or(""),
        config.scheduler,
        config.hwm,
    );

    let start = Instant::now();
    let mut core_config = core_config(&config, addresses, host, pid);
    core_config.persist = persist;
    core_config.result_cache_bytes = config.result_cache_bytes;
    core_config.epoch_us = store::now_us();
    core_config.objects = config.objects;
    if let Some(max) = recovery.max_client {
        core_config.stored_clients_upto = max.0;
        core_config.first_client_id = core_config.first_client_id.max(max.0.saturating_add(1));
    }
    let mut core = Core::new(core_config, Duration::ZERO);
    let restored = core.restore_objects(stored_objects);
    if restored > 0 {
        tracing::info!("restored {restored} shared object(s) from the task store");
    }
    let requeued = core.recover(recovery.unfinished);
    if requeued > 0 {
        tracing::info!("queued again {requeued} task(s) the previous controller left unfinished");
    }
    let mut dropped_total = 0;
    loop {
        if stop.load(Ordering::Relaxed) {
            tracing::info!("controller stopping (signal)");
            socks.close_store();
            return Ok(());
        }
        let mut wait = core
            .next_tick()
            .saturating_sub(start.elapsed())
            .min(STOP_CHECK);
        if core.lookups_pending() > 0 {
            // Answers come from the query thread: look often while some are due. Lookups
            // are rare (old results, history), so the loop sleeps in poll otherwise.
            wait = wait.min(LOOKUP_CHECK);
        }
        let ready = socks.poll(wait)?;

        let dropped = socks.dropped();
        if dropped.total() > dropped_total {
            tracing::warn!(
                "dropped {} bad message(s) so far ({dropped:?}): wrong key, replayed, malformed, oversized or another protocol version",
                dropped.total()
            );
            dropped_total = dropped.total();
        }
        core.set_dropped(dropped);
        if persist {
            core.set_store_health(Some(socks.store_health()));
        }

        let now = start.elapsed();
        let mut stopping = socks.drain(&mut core, &ready, now)?;
        stopping |= socks.answers(&mut core, now);
        let now = start.elapsed();
        if now >= core.next_tick() {
            let actions = core.on_tick(now);
            stopping |= socks.perform(&mut core, actions, now);
        }
        if stopping {
            tracing::info!("controller stopping (shutdown requested by a client)");
            socks.flush_on_close();
            socks.close_store();
            return Ok(());
        }
    }
}

/// What the core is told about this controller.
fn core_config(
    config: &ControllerConfig,
    addresses: Addresses,
    host: String,
    pid: u32,
) -> CoreConfig {
    CoreConfig {
        scheduler: config.scheduler,
        hwm: config.hwm,
        heartbeat_period: config.heartbeat_period,
        heartbeat_misses: config.heartbeat_misses,
        pid,
        host,
        addresses,
        seed: rand::random(),
        instance: rand::random(),
        // A restarted controller's old clients keep their ids: start elsewhere.
        first_client_id: if config.restarted {
            rand::random_range(1_000..(1 << 23))
        } else {
            1
        },
        ..CoreConfig::default()
    }
}
