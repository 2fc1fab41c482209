//! `cluster dashboard`: serves the live web page of the profile's cluster (see the
//! `dashboard` crate) until interrupted.

use super::Conn;
use crate::ctx::Ctx;
use anyhow::{Context as _, Result};
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Serve a live, read-only web page of the cluster: engines, queue, throughput.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// TCP port (0 picks a free one).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// Address to listen on; anything but loopback lets other machines load the page (the
    /// token still guards it, but over plain HTTP).
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: IpAddr,
    /// Opens the page in the desktop's browser (`xdg-open`).
    #[arg(long)]
    pub open: bool,
    #[command(flatten)]
    pub conn: Conn,
    /// Marks the run record as started by `cluster start` (so that `cluster stop` stops it).
    #[arg(long, hide = true)]
    pub by_start: bool,
}

/// The client connection file to poll: `--file`, else the profile's.
pub fn client_file(conn: &Conn, ctx: &Ctx) -> Result<PathBuf> {
    Ok(match &conn.file {
        Some(f) => f.clone(),
        None => ctx.open_profile()?.client_file(),
    })
}

/// Serves until SIGINT or SIGTERM; the URL with its token goes to stdout and to the
/// profile's `run/dashboard.json`, which is removed on the way out.
pub fn run(args: Args, ctx: &Ctx) -> Result<()> {
    let file = client_file(&args.conn, ctx)?;
    let run_file = dashboard::run_file(&ctx.open_profile()?.run_dir());
    let poller = dashboard::Poller::spawn(file, Duration::from_secs(1))
        .context("cannot start the dashboard's poller thread")?;
    let addr = SocketAddr::new(args.bind, args.port);
    let server = dashboard::Server::bind(addr, dashboard::new_token(), poller.subscribe())
        .with_context(|| {
            format!("cannot listen on {addr} for the dashboard; pick another with --port (0 for any free one)")
        })?;
    let url = server.url()?;
    let token = url.rsplit('=').next().unwrap_or_default().to_owned();
    let record = dashboard::RunRecord {
        url: url.clone(),
        token,
        pid: std::process::id(),
        by_start: args.by_start,
    };
    record
        .write(&run_file)
        .with_context(|| format!("cannot write {}", run_file.display()))?;
    let mut stdout = std::io::stdout();
    writeln!(stdout, "dashboard: {url}")?;
    stdout.flush()?;
    if args.open {
        if let Err(e) = std::process::Command::new("xdg-open").arg(&url).spawn() {
            eprintln!("cannot open a browser (xdg-open: {e}); open {url} by hand");
        }
    }
    // On SIGINT/SIGTERM: remove the run record, then leave (the server has nothing to flush).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let watched = run_file.clone();
    std::thread::spawn(move || {
        let mut ticks = 0u32;
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
            ticks = (ticks + 1) % 10;
            // `cluster stop` clears run/; a dashboard that outlives the controller puts its
            // record back so that `cluster status` still shows it after the next start.
            if ticks == 0 && !watched.exists() {
                let _ = record.write(&watched);
            }
        }
        let _ = std::fs::remove_file(&watched);
        std::process::exit(0);
    });
    let served = server.run();
    let _ = std::fs::remove_file(&run_file);
    drop(poller);
    served.context("the dashboard server stopped")
}

/// Reads the profile's dashboard record, if that dashboard still runs.
pub fn running(profile: &profiles::Profile) -> Option<dashboard::RunRecord> {
    let record = dashboard::RunRecord::read(&dashboard::run_file(&profile.run_dir())).ok()?;
    profiles::process_alive(record.pid).then_some(record)
}

/// `dashboard = true`: runs `cluster dashboard` detached for `cluster start` (log in
/// `log/dashboard.log`) and waits until it has written its record.
pub fn spawn_for_start(profile: &profiles::Profile, port: u16) -> Result<dashboard::RunRecord> {
    let mut cmd = crate::program::command()?;
    cmd.arg("--profile")
        .arg(profile.name())
        .arg("dashboard")
        .arg("--port")
        .arg(port.to_string())
        .arg("--by-start")
        .env_remove("CLUSTER_CLIENT_FILE")
        .env(
            "CLUSTER_DIR",
            profile.dir().parent().unwrap_or(std::path::Path::new(".")),
        );
    let log = profile.log_dir().join("dashboard.log");
    let mut child = crate::launch::spawn_detached(cmd, &log)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(record) = running(profile).filter(|r| r.pid == child.id()) {
            return Ok(record);
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the dashboard (dashboard = true in cluster.toml) exited during start-up ({status}); its log {} ends with:\n{}",
                log.display(),
                crate::launch::log_tail(&log, 5)
            );
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            anyhow::bail!(
                "the dashboard did not start within 10 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cluster stop`: stops the dashboard `cluster start` ran (SIGTERM, then SIGKILL after
/// `grace`); returns its pid. A dashboard started by hand is left running.
pub fn stop_for_stop(profile: &profiles::Profile, grace: Duration) -> Option<u32> {
    let record = running(profile).filter(|r| r.by_start)?;
    let pid = record.pid as i32;
    // SAFETY: kill(2) on the pid of the dashboard this profile's `cluster start` ran.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while profiles::process_alive(record.pid) {
        if std::time::Instant::now() > deadline {
            // SAFETY: as above; it outlived SIGTERM and the grace.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Some(record.pid)
}
