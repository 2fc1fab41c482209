//! `cluster start --launcher ssh`: a local controller and engines on other machines, started
//! as one step that leaves nothing behind when it fails.
//!
//! The controller starts first (with no local engines), then [`crate::ssh::launch`] starts the
//! engines on every host in parallel. When no host could start any engine, or the launch
//! itself fails, the controller and whatever did start over ssh are stopped again before the
//! error is returned. Hosts that failed while others worked are reported in the result (the
//! caller turns them into an error after printing what started).

use crate::launch::{self, EngineLaunch, StartReport};
use crate::ssh::{self, HostSpec, LaunchReport, SshLaunch};
use anyhow::{bail, Context as _, Result};
use profiles::{Profile, Settings};
use std::time::{Duration, Instant};

/// What the ssh start did.
#[derive(Debug, Clone)]
pub struct SshStartReport {
    /// The controller's start.
    pub controller: StartReport,
    /// The engines' start on the hosts.
    pub hosts: LaunchReport,
    /// Seconds from the call until the engines were ready.
    pub seconds: f64,
}

/// Starts the controller of `profile` (with setting `overrides`) and `hosts`' engines (host,
/// count); stops everything again when no engine could start.
pub fn start(
    profile: &Profile,
    overrides: &[(&str, String)],
    launch: &SshLaunch,
    hosts: &[(String, usize)],
) -> Result<SshStartReport> {
    let settings = profile.settings(overrides)?;
    if ssh::is_loopback(&settings.ip) {
        bail!(
            "the controller would listen on {} only, which other machines cannot reach: pass --ip ADDRESS (an address of this machine the hosts reach, or 0.0.0.0 for every interface), or set ip in {}",
            settings.ip,
            profile.config_file().display()
        );
    }
    let none = EngineLaunch {
        count: 0,
        program: None,
        timeout: launch.timeout,
    };
    let t0 = Instant::now();
    let controller = launch::start(profile, overrides, &none).with_context(|| {
        format!(
            "cluster start failed; logs are in {}",
            profile.log_dir().display()
        )
    })?;
    let report = match ssh::launch(profile, launch, hosts, 0) {
        Ok(r) if r.started.is_empty() => {
            let _ = launch::stop(profile, Duration::from_secs(2));
            bail!(
                "{}\nthe controller was stopped again",
                r.failure_message().unwrap_or_default()
            );
        }
        Ok(r) => r,
        Err(e) => {
            let records = profile.ssh_host_records().unwrap_or_default();
            let _ = launch::stop(profile, Duration::from_secs(2));
            ssh::stop_hosts(&records, Duration::from_secs(2));
            return Err(e.context("starting engines over ssh failed; the cluster was stopped"));
        }
    };
    Ok(SshStartReport {
        controller,
        hosts: report,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

/// The ssh hosts: `hosts` (a `--hosts` list), else the lines of `hostfile`, else the
/// `[ssh] hosts` setting.
pub fn host_specs(
    hosts: Option<&str>,
    hostfile: Option<&std::path::Path>,
    settings: &Settings,
) -> Result<Vec<HostSpec>> {
    if let Some(list) = hosts {
        return ssh::parse_hosts(list);
    }
    if let Some(file) = hostfile {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the host file {}", file.display()))?;
        return ssh::parse_hostfile(&text).with_context(|| format!("in {}", file.display()));
    }
    ssh::parse_hosts(&settings.ssh.hosts.join(","))
}
