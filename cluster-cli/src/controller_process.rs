//! The controller process of a profile (`cluster controller`, which `cluster start` launches):
//! settings resolved, the connection files written or reused, the run record kept, signals
//! turned into a clean stop, and stale files removed at the end.

use anyhow::{bail, Context as _, Result};
use profiles::{Profile, Settings};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

/// Runs the controller of `profile` in this process until SIGTERM or SIGINT (or a shutdown
/// request). `overrides` are settings from flags; with `reuse` it takes the address, ports
/// and key of the connection files a controller that died left, so its engines and clients
/// come back without a restart.
pub fn run(
    profile: &Profile,
    overrides: &[(&str, String)],
    reuse: bool,
    db_reset: bool,
) -> Result<()> {
    let settings = profile.settings(overrides)?;
    let me = std::process::id();
    if let Some(rec) = crate::launch::running_controller(profile)?.filter(|r| r.pid != me) {
        bail!(
            "a controller is already running for profile {:?} (pid {}); stop it with `cluster stop`",
            profile.name(),
            rec.pid
        );
    }
    let mut config = config(profile, &settings, reuse)?;
    config.db_reset = db_reset;
    profile.write_controller_record(&profiles::ControllerRecord {
        pid: me,
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        started_us: transport::now_us(),
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let result = controller::run(config, stop);
    // Leave no stale files behind a clean exit.
    if profile.controller_record()?.is_some_and(|r| r.pid == me) {
        let _ = std::fs::remove_file(profile.controller_record_file());
        let _ = std::fs::remove_file(profile.client_file());
        let _ = std::fs::remove_file(profile.engine_file());
    }
    Ok(result?)
}

/// The controller's configuration from the settings (and, with `reuse`, the old connection
/// files).
fn config(
    profile: &Profile,
    settings: &Settings,
    reuse: bool,
) -> Result<controller::ControllerConfig> {
    let scheduler = settings
        .scheduler
        .parse()
        .map_err(|e| anyhow::anyhow!("scheduler {:?}: {e}", settings.scheduler))?;
    let hwm = settings
        .hwm
        .parse()
        .map_err(|e| anyhow::anyhow!("hwm {:?}: {e}", settings.hwm))?;
    let mut config = if reuse {
        controller::ControllerConfig::reusing(profile.security_dir()).with_context(|| {
            format!(
                "--reuse takes the address, ports and key from the connection files in {}",
                profile.security_dir().display()
            )
        })?
    } else {
        let key = if settings.db == "sqlite" {
            store_key(profile)?
        } else {
            security::Key::generate()
        };
        let mut config = controller::ControllerConfig::new(key, profile.security_dir());
        config.ip = settings.ip.clone();
        config.engine_port = settings.engine_port;
        config.client_port = settings.client_port;
        config.heartbeat_port = settings.heartbeat_port;
        config.notify_port = settings.notify_port;
        // A controller taking over keeps the window its engines and clients already use.
        config.replay_window = Duration::from_secs(settings.replay_window_s);
        config.encrypt = settings.encrypt;
        config
    };
    config.scheduler = scheduler;
    config.hwm = hwm;
    config.heartbeat_period = Duration::from_millis(settings.heartbeat_period_ms.max(1));
    config.heartbeat_misses = settings.heartbeat_misses.max(1);
    config.store = store_config(profile, settings)?;
    config.result_cache_bytes = usize::try_from(settings.result_cache_mb)
        .unwrap_or(usize::MAX / 2)
        .saturating_mul(1 << 20);
    config.objects = object_limits(settings)?;
    Ok(config)
}

/// The cluster key of a profile whose tasks are kept on disk (`security/task-store.key`,
/// 0600, made on first use). Arguments and results cross the controller encrypted under a
/// key derived from the cluster key and are stored that way, so a controller started again on
/// the same database must keep the key, or clients could not read what it answers from disk.
fn store_key(profile: &Profile) -> Result<security::Key> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = profile.security_dir().join("task-store.key");
    match std::fs::read_to_string(&path) {
        Ok(text) => security::Key::from_hex(text.trim()).map_err(|e| {
            anyhow::anyhow!(
                "{}: {e}; delete it together with the task database (cluster start --db-reset), since stored results need the key they were stored under",
                path.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = security::Key::generate();
            std::fs::create_dir_all(profile.security_dir())
                .with_context(|| format!("cannot create {}", profile.security_dir().display()))?;
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .with_context(|| format!("cannot write {}", path.display()))?;
            writeln!(file, "{}", key.to_hex())
                .with_context(|| format!("cannot write {}", path.display()))?;
            Ok(key)
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// The shared objects' limits (`object_max_bytes`, `objects_max_bytes`, `objects_max`).
pub fn object_limits(settings: &Settings) -> Result<controller::ObjectLimits> {
    let size = |key: &str, value: &str| {
        store::parse_size(key, value, 1)
            .with_context(|| format!("{key} in cluster.toml or CLUSTER_{}", key.to_uppercase()))
    };
    Ok(controller::ObjectLimits {
        object_max_bytes: size("object_max_bytes", &settings.object_max_bytes)?,
        objects_max_bytes: size("objects_max_bytes", &settings.objects_max_bytes)?,
        max_objects: usize::try_from(settings.objects_max).unwrap_or(usize::MAX),
    })
}

/// The task store's settings (`db`, `db_path`, ... of `cluster.toml`).
pub fn store_config(profile: &Profile, settings: &Settings) -> Result<store::StoreConfig> {
    let mut store = store::StoreConfig::new(profile.db_file());
    let db_path = settings.db_path.clone().filter(|p| !p.is_empty());
    let pairs = [
        ("db", Some(settings.db.clone())),
        ("db_path", db_path),
        (
            "db_commit_interval",
            Some(settings.db_commit_interval.clone()),
        ),
        (
            "store_payload_max_bytes",
            Some(settings.store_payload_max_bytes.clone()),
        ),
        ("retention", Some(settings.retention.clone())),
        ("max_db_mb", Some(settings.max_db_mb.to_string())),
    ];
    for (key, value) in pairs {
        if let Some(value) = value {
            store.set(key, &value)?;
        }
    }
    if store.kind == store::StoreKind::Memory {
        store.path = ":memory:".into();
    }
    Ok(store)
}
