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
    dashboard::RunRecord {
        url: url.clone(),
        token,
        pid: std::process::id(),
    }
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
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = std::fs::remove_file(&watched);
        std::process::exit(0);
    });
    let served = server.run();
    let _ = std::fs::remove_file(&run_file);
    drop(poller);
    served.context("the dashboard server stopped")
}
