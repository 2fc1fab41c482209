//! How an engine was launched, as it tells the controller when it registers: which launcher
//! gave it a rank ([`LaunchInfo::from_env`] reads the variables `mpiexec` and `srun` set) and
//! the batch job it runs in. Shown in `cluster status` and returned by `whoami`.

use serde::{Deserialize, Serialize};

/// An engine's place in a parallel launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchInfo {
    /// `mpi` (Open MPI, MPICH/Hydra, PMIx) or `slurm` (srun without MPI).
    pub launcher: String,
    /// This engine's rank among the processes started together.
    pub rank: u32,
    /// How many were started together, when the launcher says.
    #[serde(default)]
    pub size: Option<u32>,
    /// The Slurm job it runs in (`SLURM_JOB_ID`), if any.
    #[serde(default)]
    pub job_id: Option<String>,
}

/// Rank and size variables, by launcher, in the order they are believed: an MPI rank inside
/// a Slurm job is the MPI one.
const RANK_VARS: &[(&str, &str, &str)] = &[
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "mpi"),
    ("PMI_RANK", "PMI_SIZE", "mpi"),
    ("PMIX_RANK", "PMIX_SIZE", "mpi"),
    ("SLURM_PROCID", "SLURM_NTASKS", "slurm"),
];

impl LaunchInfo {
    /// What the environment (`get(name)`) says; `None` when no launcher set a rank (an
    /// engine started by hand, by `cluster start` locally or over ssh). A value that is not
    /// a number is ignored, as if unset.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Option<LaunchInfo> {
        RANK_VARS.iter().find_map(|(rank, size, launcher)| {
            let rank = get(rank)?.trim().parse().ok()?;
            Some(LaunchInfo {
                launcher: (*launcher).to_owned(),
                rank,
                size: get(size).and_then(|s| s.trim().parse().ok()),
                job_id: get("SLURM_JOB_ID")
                    .map(|j| j.trim().to_owned())
                    .filter(|j| !j.is_empty()),
            })
        })
    }

    /// From this process's environment.
    pub fn from_process_env() -> Option<LaunchInfo> {
        LaunchInfo::from_env(|name| std::env::var(name).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        }
    }

    #[test]
    fn ranks_come_from_mpi_before_slurm() {
        let info = LaunchInfo::from_env(env(&[
            ("SLURM_PROCID", "0"),
            ("SLURM_JOB_ID", "42"),
            ("PMI_RANK", "3"),
            ("PMI_SIZE", "4"),
        ]))
        .unwrap();
        assert_eq!(
            info,
            LaunchInfo {
                launcher: "mpi".into(),
                rank: 3,
                size: Some(4),
                job_id: Some("42".into()),
            }
        );
        let srun = LaunchInfo::from_env(env(&[("SLURM_PROCID", "5"), ("SLURM_NTASKS", "6")]));
        assert_eq!(
            srun.map(|i| (i.launcher, i.rank, i.size)),
            Some(("slurm".into(), 5, Some(6)))
        );
        assert_eq!(LaunchInfo::from_env(env(&[("SLURM_JOB_ID", "1")])), None);
        assert_eq!(LaunchInfo::from_env(env(&[("PMI_RANK", "x")])), None);
    }
}
