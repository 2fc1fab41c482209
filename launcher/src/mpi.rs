//! Engines started by `mpiexec -n N` (`cluster start --launcher mpi`), with Open MPI or MPICH.
//!
//! [`command_line`] builds the `mpiexec` command for a flavour (pure); [`detect`] tells the
//! flavour from `mpiexec --version`; [`spawn`] starts it detached (its own session, output
//! to a log) and [`MpiRecord`] keeps its pid in the profile's `run/` folder, so that `cluster
//! stop` sends it SIGTERM (both flavours forward it to every rank, whose engines then leave
//! cleanly). Each engine learns its rank from the environment mpiexec gives it
//! ([`rank_from_env`]: `OMPI_COMM_WORLD_RANK`, `PMI_RANK`, `PMIX_RANK`, or `SLURM_PROCID`
//! under srun).

use crate::run::{CommandRunner, RunError};
use serde::{Deserialize, Serialize};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// Which MPI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Flavor {
    /// Ask `mpiexec --version`.
    #[default]
    Auto,
    /// Open MPI (`mpiexec` of openmpi-bin).
    OpenMpi,
    /// MPICH's Hydra (`mpiexec.mpich`).
    Mpich,
}

/// The `[mpi]` table of `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MpiSettings {
    /// The program (`mpiexec`, `mpiexec.mpich`, `/opt/openmpi/bin/mpirun`).
    pub mpiexec: String,
    /// Which MPI it is.
    pub flavor: Flavor,
    /// A host file for mpiexec (`--hostfile` / `-f`).
    pub hostfile: Option<String>,
    /// Further mpiexec options, before the program.
    pub options: Vec<String>,
}

impl Default for MpiSettings {
    fn default() -> Self {
        MpiSettings {
            mpiexec: "mpiexec".into(),
            flavor: Flavor::Auto,
            hostfile: None,
            options: Vec::new(),
        }
    }
}

impl MpiSettings {
    /// Reads the `[mpi]` table of `profile`'s settings.
    pub fn load(
        profile: &profiles::Profile,
        overrides: &[(&str, String)],
    ) -> Result<MpiSettings, profiles::ProfileError> {
        crate::settings::section(profile, "mpi", overrides)
    }
}

/// Problems starting engines through mpiexec.
#[derive(Debug, thiserror::Error)]
pub enum MpiError {
    /// mpiexec is missing or cannot run.
    #[error(
        "{0}; install Open MPI (Debian: openmpi-bin) or MPICH (mpich), or set mpiexec in [mpi]"
    )]
    Run(#[from] RunError),
    /// `mpiexec --version` names no MPI this code knows.
    #[error("`{program} --version` on host {host} names neither Open MPI nor MPICH ({said:?}); set flavor = \"openmpi\" or \"mpich\" in [mpi]")]
    Unknown {
        /// The program.
        program: String,
        /// This machine.
        host: String,
        /// What it printed.
        said: String,
    },
    /// Zero engines asked for.
    #[error("no engines asked for: give -n N with N > 0")]
    NoEngines,
    /// The log or record file could not be written, or mpiexec not started.
    #[error("{path}: {source}")]
    Io {
        /// The file or program.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// The flavour `mpiexec --version` output names.
pub fn flavor_of(version_output: &str) -> Option<Flavor> {
    let t = version_output.to_ascii_lowercase();
    if t.contains("open mpi") || t.contains("openrte") || t.contains("open-mpi") {
        Some(Flavor::OpenMpi)
    } else if t.contains("hydra") || t.contains("mpich") {
        Some(Flavor::Mpich)
    } else {
        None
    }
}

/// Asks `mpiexec --version` which MPI this is (when the settings say `auto`).
pub fn detect(settings: &MpiSettings, runner: &impl CommandRunner) -> Result<Flavor, MpiError> {
    if settings.flavor != Flavor::Auto {
        return Ok(settings.flavor);
    }
    let out = runner.run(&settings.mpiexec, &["--version".to_owned()])?;
    let said = format!("{}{}", out.stdout, out.stderr);
    flavor_of(&said).ok_or_else(|| MpiError::Unknown {
        program: settings.mpiexec.clone(),
        host: runner.host(),
        said: crate::tail(&said, 3),
    })
}

/// The `mpiexec` command line starting `n` engines running `program_and_args`. Open MPI
/// refuses to run as root without `--allow-run-as-root`, and more ranks than cores without
/// `--oversubscribe`; engines are processes that mostly wait, so both are given.
pub fn command_line(
    settings: &MpiSettings,
    flavor: Flavor,
    n: usize,
    program_and_args: &[String],
    as_root: bool,
) -> Result<Vec<String>, MpiError> {
    if n == 0 {
        return Err(MpiError::NoEngines);
    }
    let mut argv = vec![settings.mpiexec.clone()];
    match flavor {
        Flavor::OpenMpi | Flavor::Auto => {
            if as_root {
                argv.push("--allow-run-as-root".into());
            }
            argv.push("--oversubscribe".into());
            argv.extend(["-n".into(), n.to_string()]);
            if let Some(h) = &settings.hostfile {
                argv.extend(["--hostfile".into(), h.clone()]);
            }
        }
        Flavor::Mpich => {
            argv.extend(["-n".into(), n.to_string()]);
            if let Some(h) = &settings.hostfile {
                argv.extend(["-f".into(), h.clone()]);
            }
        }
    }
    argv.extend(settings.options.iter().cloned());
    argv.extend(program_and_args.iter().cloned());
    Ok(argv)
}

/// A process's rank and the world's size, and the variable that said so.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rank {
    /// This process's rank.
    pub rank: u32,
    /// Processes in all, when known.
    pub size: Option<u32>,
    /// Where it came from (`OMPI_COMM_WORLD_RANK`…).
    pub source: String,
}

/// The rank the launcher gave this process, from its environment (`get(name)`): Open MPI,
/// MPICH/Hydra (PMI), PMIx, or Slurm's srun.
pub fn rank_from_env(get: impl Fn(&str) -> Option<String>) -> Option<Rank> {
    const PAIRS: &[(&str, &str)] = &[
        ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
        ("PMI_RANK", "PMI_SIZE"),
        ("PMIX_RANK", "PMIX_SIZE"),
        ("SLURM_PROCID", "SLURM_NTASKS"),
    ];
    PAIRS.iter().find_map(|(rank, size)| {
        let r = get(rank)?.trim().parse().ok()?;
        Some(Rank {
            rank: r,
            size: get(size).and_then(|s| s.trim().parse().ok()),
            source: (*rank).to_owned(),
        })
    })
}

/// What `run/mpi-<pid>.json` records about a running mpiexec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MpiRecord {
    /// mpiexec's pid.
    pub pid: u32,
    /// Host it runs on.
    pub host: String,
    /// Engines it starts.
    pub engines: usize,
    /// Its command line.
    pub command: Vec<String>,
    /// Its log (every rank's output).
    pub log: PathBuf,
}

impl MpiRecord {
    /// Writes `run_dir/mpi-<pid>.json`.
    pub fn write(&self, run_dir: &Path) -> Result<(), MpiError> {
        let path = run_dir.join(format!("mpi-{}.json", self.pid));
        let text = serde_json::to_string_pretty(self).unwrap_or_default();
        std::fs::write(&path, text).map_err(|source| MpiError::Io { path, source })
    }
}

/// Every mpiexec recorded in `run_dir`.
pub fn records(run_dir: &Path) -> Vec<MpiRecord> {
    let Ok(entries) = std::fs::read_dir(run_dir) else {
        return Vec::new();
    };
    let mut out: Vec<MpiRecord> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n.starts_with("mpi-") && n.ends_with(".json")
        })
        .filter_map(|e| serde_json::from_str(&std::fs::read_to_string(e.path()).ok()?).ok())
        .collect();
    out.sort_by_key(|r| r.pid);
    out
}

/// Starts `argv` detached (its own session, so it outlives the caller and a kill of the
/// caller's process group) with stdin closed and output to `log`.
pub fn spawn(argv: &[String], env: &[(String, String)], log: &Path) -> Result<Child, MpiError> {
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| MpiError::Io { path, source }
    };
    let Some((program, args)) = argv.split_first() else {
        return Err(MpiError::NoEngines);
    };
    let out = std::fs::File::create(log).map_err(io(log))?;
    let err = out.try_clone().map_err(io(log))?;
    let mut cmd = Command::new(program);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.spawn().map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => MpiError::Run(RunError::NotFound {
            program: program.clone(),
            host: crate::hostname(),
            path: std::env::var("PATH").unwrap_or_default(),
        }),
        _ => MpiError::Io {
            path: PathBuf::from(program),
            source,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run::{FakeRunner, Output};

    fn engine() -> Vec<String> {
        vec![
            "cluster".into(),
            "engine".into(),
            "--file".into(),
            "e.json".into(),
        ]
    }

    #[test]
    fn command_lines_per_flavor() {
        let s = MpiSettings::default();
        assert_eq!(
            command_line(&s, Flavor::OpenMpi, 4, &engine(), true).unwrap(),
            "mpiexec --allow-run-as-root --oversubscribe -n 4 cluster engine --file e.json"
                .split(' ')
                .collect::<Vec<_>>()
        );
        assert!(!command_line(&s, Flavor::OpenMpi, 4, &engine(), false)
            .unwrap()
            .contains(&"--allow-run-as-root".to_owned()));
        let m = MpiSettings {
            mpiexec: "mpiexec.mpich".into(),
            hostfile: Some("hosts".into()),
            options: vec!["-bind-to".into(), "none".into()],
            ..MpiSettings::default()
        };
        assert_eq!(
            command_line(&m, Flavor::Mpich, 2, &engine(), true).unwrap(),
            "mpiexec.mpich -n 2 -f hosts -bind-to none cluster engine --file e.json"
                .split(' ')
                .collect::<Vec<_>>()
        );
        assert!(command_line(&m, Flavor::Mpich, 0, &engine(), true).is_err());
    }

    #[test]
    fn flavors_from_version_output() {
        assert_eq!(
            flavor_of(
                "mpiexec (OpenRTE) 4.1.4\n\nReport bugs to http://www.open-mpi.org/community/help/"
            ),
            Some(Flavor::OpenMpi)
        );
        assert_eq!(
            flavor_of("HYDRA build details:\n    Version: 4.0.2"),
            Some(Flavor::Mpich)
        );
        assert_eq!(flavor_of("Intel(R) something"), None);
        let fake = FakeRunner::new(|_, _| Ok(Output::ok("HYDRA build details:")));
        assert_eq!(
            detect(&MpiSettings::default(), &fake).unwrap(),
            Flavor::Mpich
        );
        let odd = FakeRunner::new(|_, _| Ok(Output::ok("who knows")));
        let err = detect(&MpiSettings::default(), &odd)
            .unwrap_err()
            .to_string();
        assert!(err.contains("testhost") && err.contains("flavor"), "{err}");
    }

    #[test]
    fn ranks_from_each_launcher() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(
            rank_from_env(env(&[
                ("OMPI_COMM_WORLD_RANK", "3"),
                ("OMPI_COMM_WORLD_SIZE", "4")
            ])),
            Some(Rank {
                rank: 3,
                size: Some(4),
                source: "OMPI_COMM_WORLD_RANK".into()
            })
        );
        assert_eq!(rank_from_env(env(&[("PMI_RANK", "1")])).unwrap().rank, 1);
        assert_eq!(
            rank_from_env(env(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "6")]))
                .unwrap()
                .size,
            Some(6)
        );
        assert_eq!(rank_from_env(env(&[("PMI_RANK", "x")])), None);
        assert_eq!(rank_from_env(env(&[])), None);
    }
}
