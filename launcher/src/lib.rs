//! Starting and stopping engines where people's clusters already run, and the policies that
//! decide when to start and release them.
//!
//! | module | owns |
//! |---|---|
//! | [`slurm`] | `[slurm]` settings, job scripts, `sbatch`/`squeue`/`sacct`/`scancel`, job states |
//! | [`mpi`] | `[mpi]` settings, the `mpiexec` command line (Open MPI, MPICH), ranks |
//! | [`scale`] | the autoscaler's policy: a pure function of queue and engine counts and `now` |
//! | [`restart`] | restarts of engines that died: back-off and a limit, a pure policy |
//! | [`run`] | the [`run::CommandRunner`] trait every external command goes through |
//! | [`settings`] | reading a `[section]` of `cluster.toml` with the profile's layering |
//!
//! How data flows: the CLI reads a section ([`slurm::SlurmSettings::load`]), asks for a plan
//! ([`slurm::plan_jobs`]: K jobs, each a rendered script), submits it
//! ([`slurm::Slurm::submit`], which writes each script and a [`slurm::JobRecord`] to the
//! profile's `run/` folder), then polls ([`slurm::Slurm::poll`]: one `squeue` for every job,
//! `sacct` for jobs squeue has forgotten) until the engines registered or a job is stuck or
//! failed. `cluster stop` cancels the recorded jobs ([`slurm::Slurm::cancel`]).
//!
//! Parsing is pure (functions of the commands' text, unit-tested here); only
//! [`run::SystemRunner`] starts processes, so tests can drive the same code against a fake or
//! a real Slurm. This crate knows no message types: it starts programs and reads schedulers'
//! answers; engines meet the controller on the wire.

pub mod mpi;
pub mod restart;
pub mod run;
pub mod scale;
pub mod settings;
pub mod slurm;

/// This machine's host name, for error messages and records.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}

/// `word` quoted for a POSIX shell (left bare when it is made only of safe characters).
pub fn shell_quote(word: &str) -> String {
    let safe = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./:=@%+,".contains(&b));
    if safe {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// A command line quoted for a POSIX shell.
pub fn shell_join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| shell_quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("plain-1.0/x"), "plain-1.0/x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_join(&["echo", "$HOME"]), "echo '$HOME'");
    }

    /// The commented `[slurm]`, `[mpi]`, `[scale]` and `[restart]` sections of a new
    /// profile's `cluster.toml`, uncommented, are valid settings; those of `[scale]` and
    /// `[restart]` are the defaults.
    #[test]
    fn the_commented_sections_of_a_new_profile_parse() {
        let from = profiles::DEFAULT_CONFIG
            .find("# [slurm]")
            .expect("a [slurm] section");
        let text: String = profiles::DEFAULT_CONFIG[from..]
            .lines()
            .filter_map(|l| l.strip_prefix("# "))
            .filter(|l| l.starts_with('[') || l.contains(" = "))
            .map(|l| format!("{l}\n"))
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.toml");
        std::fs::write(&file, &text).unwrap();
        let slurm: slurm::SlurmSettings = settings::from_file(&file, "slurm", &[]).unwrap();
        assert_eq!(slurm.partition.as_deref(), Some("debug"), "{text}");
        let mpi: mpi::MpiSettings = settings::from_file(&file, "mpi", &[]).unwrap();
        assert_eq!(mpi.mpiexec, "mpiexec");
        let scale: scale::ScaleSettings = settings::from_file(&file, "scale", &[]).unwrap();
        assert_eq!(scale, scale::ScaleSettings::default());
        let restart: restart::RestartSettings = settings::from_file(&file, "restart", &[]).unwrap();
        assert_eq!(restart, restart::RestartSettings::default());
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("", 3), "");
        assert_eq!(tail("one", 5), "one");
    }
}
