//! The `[slurm]` settings and the job scripts made from them: by default one job with one
//! `srun` step for all engines; `jobs = K` splits them into K jobs, as even as can be. A
//! `template` (or `template_file`) replaces the built-in script, with `{placeholders}`.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::SlurmError;
use crate::shell_join;

/// The `[slurm]` table of `cluster.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SlurmSettings {
    /// `--partition`.
    pub partition: Option<String>,
    /// `--account`.
    pub account: Option<String>,
    /// `--qos`.
    pub qos: Option<String>,
    /// `--time`, the wall-time limit (`30`, `1:00:00`, `2-00:00:00`).
    pub time: Option<String>,
    /// CPUs each engine gets (`--cpus-per-task`).
    pub cpus_per_engine: u32,
    /// Memory each engine gets (`4G`, `512M`; plain numbers are MB), given to Slurm as
    /// `--mem-per-cpu` divided over the engine's CPUs.
    pub memory: Option<String>,
    /// Jobs the engines are split into (small jobs start sooner on a busy machine).
    pub jobs: usize,
    /// `--signal` sent before the wall-time limit (`USR1@60`: SIGUSR1 60 s before), on which
    /// engines stop taking tasks, hand back what they hold and exit. Empty: none.
    pub signal: String,
    /// Further `sbatch` options, one per item (`--exclusive`, `--constraint=haswell`).
    pub options: Vec<String>,
    /// Further `srun` options for the engines' step.
    pub srun_options: Vec<String>,
    /// Job name (default `cluster-<profile>`).
    pub job_name: Option<String>,
    /// A job script replacing the built-in one, with placeholders (see [`PLACEHOLDERS`]).
    pub template: Option<String>,
    /// A file holding such a template.
    pub template_file: Option<String>,
    /// `slurm.conf` to use (sets `SLURM_CONF` for the Slurm commands).
    pub conf: Option<String>,
    /// Folder of the Slurm commands, when they are not in `PATH`.
    pub bin_dir: Option<String>,
    /// Milliseconds between two polls of the jobs' states.
    pub poll_interval_ms: u64,
}

impl Default for SlurmSettings {
    fn default() -> Self {
        SlurmSettings {
            partition: None,
            account: None,
            qos: None,
            time: None,
            cpus_per_engine: 1,
            memory: None,
            jobs: 1,
            signal: "USR1@60".into(),
            options: Vec::new(),
            srun_options: Vec::new(),
            job_name: None,
            template: None,
            template_file: None,
            conf: None,
            bin_dir: None,
            poll_interval_ms: 1000,
        }
    }
}

/// The placeholders a template may use, with what they become.
pub const PLACEHOLDERS: &[(&str, &str)] = &[
    ("n", "engines in this job"),
    ("program_and_args", "the engine command line, quoted for sh"),
    ("srun", "the built-in srun line starting the engines"),
    ("sbatch_options", "the #SBATCH lines made from the settings"),
    ("job_name", "the job's name"),
    ("cpus_per_engine", "CPUs per engine"),
    ("output", "the job's output file (%j: job id)"),
    ("partition", "the partition, or empty"),
    ("account", "the account, or empty"),
    ("qos", "the QOS, or empty"),
    ("time", "the time limit, or empty"),
    ("memory", "memory per engine as given, or empty"),
    ("index", "this job's number, from 1"),
    ("jobs", "how many jobs"),
    ("profile", "the cluster profile"),
    ("run_dir", "the profile's run/ folder"),
];

/// The built-in job script.
pub const DEFAULT_TEMPLATE: &str = "#!/bin/sh\n{sbatch_options}\n# Engines of cluster profile {profile}: job {index} of {jobs}, {n} engine(s).\nexec {srun}\n";

/// What the engines of a job run, and where its files go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Profile name (job names, messages).
    pub profile: String,
    /// Engines in all.
    pub engines: usize,
    /// The engine command line (`/path/cluster engine --file …/engine.json`).
    pub program_and_args: Vec<String>,
    /// The profile's `run/` folder, for scripts and records.
    pub run_dir: PathBuf,
    /// The profile's `log/` folder, for the jobs' output files.
    pub log_dir: PathBuf,
    /// Jobs to split into, instead of the `jobs` setting (`--jobs K`).
    pub jobs: Option<usize>,
}

/// One job to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobPlan {
    /// Number from 1.
    pub index: usize,
    /// Job name.
    pub name: String,
    /// Engines in it.
    pub engines: usize,
    /// The rendered script.
    pub script: String,
    /// Output file pattern given to `--output` (`%j` is the job id).
    pub output: PathBuf,
}

/// `total` engines over `jobs` jobs, as even as can be (larger ones first); never an empty
/// job.
pub fn split(total: usize, jobs: usize) -> Vec<usize> {
    let jobs = jobs.clamp(1, total.max(1));
    (0..jobs)
        .map(|i| total / jobs + usize::from(i < total % jobs))
        .filter(|&n| n > 0)
        .collect()
}

/// Megabytes in a Slurm memory size (`512`, `512M`, `4G`, `1T`, `100K` rounded up).
pub fn parse_memory_mb(text: &str) -> Option<u64> {
    let t = text.trim();
    let (digits, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => (&t[..i], t[i..].trim()),
        None => (t, ""),
    };
    let n: u64 = digits.parse().ok()?;
    let mb = match unit.to_ascii_uppercase().trim_end_matches('B') {
        "" | "M" => n,
        "K" => n.div_ceil(1024),
        "G" => n.checked_mul(1024)?,
        "T" => n.checked_mul(1024 * 1024)?,
        _ => return None,
    };
    (mb > 0).then_some(mb)
}

/// Seconds in a Slurm time limit (`MM`, `MM:SS`, `HH:MM:SS`, `D-HH`, `D-HH:MM`,
/// `D-HH:MM:SS`); `None` for `UNLIMITED`/`INFINITE` or a malformed one.
pub fn parse_time_s(text: &str) -> Option<u64> {
    let t = text.trim();
    let num = |s: &str| -> Option<u64> {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse().ok())
            .flatten()
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (num(d)?, Some(r)),
        None => (0, None),
    };
    let parts: Vec<u64> = rest
        .unwrap_or(t)
        .split(':')
        .map(num)
        .collect::<Option<_>>()?;
    let secs = match (rest.is_some(), parts.as_slice()) {
        (false, [m]) => m * 60,
        (false, [m, s]) => m * 60 + s,
        (false, [h, m, s]) => h * 3600 + m * 60 + s,
        (true, [h]) => h * 3600,
        (true, [h, m]) => h * 3600 + m * 60,
        (true, [h, m, s]) => h * 3600 + m * 60 + s,
        _ => return None,
    };
    Some(days * 86_400 + secs)
}

/// Checks a `--signal` value (`[R:][B:]SIG[@SECS]`) and returns its lead time in seconds
/// (Slurm's default is 60).
pub fn parse_signal(text: &str) -> Option<(String, u64)> {
    let mut t = text.trim();
    let mut flags = String::new();
    while let Some((f, rest)) = t.split_once(':') {
        if !matches!(f, "R" | "B" | "RB" | "BR") {
            return None;
        }
        flags.push_str(f);
        t = rest;
    }
    let (sig, secs) = match t.split_once('@') {
        Some((s, n)) => (s, n.parse().ok()?),
        None => (t, 60),
    };
    let sig = sig.strip_prefix("SIG").unwrap_or(sig);
    let ok = !sig.is_empty()
        && (sig
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()))
        && secs <= 65_535;
    ok.then(|| (sig.to_owned(), secs))
}

/// True for a value that may go on an `#SBATCH` line as is (no newline, nothing to hide).
fn one_line(what: &str, value: &str) -> Result<(), SlurmError> {
    if value.contains(['\n', '\r']) || value.trim().is_empty() {
        return Err(SlurmError::Settings(format!(
            "[slurm] {what} = {value:?}: must be a non-empty single line"
        )));
    }
    Ok(())
}

impl SlurmSettings {
    /// Checks the settings and returns the `#SBATCH` option values they make for a job of
    /// `n` engines (without `--job-name` and `--output`, which the plan adds).
    pub fn sbatch_options(&self, n: usize) -> Result<Vec<String>, SlurmError> {
        if self.cpus_per_engine == 0 {
            return Err(SlurmError::Settings(
                "[slurm] cpus_per_engine = 0: each engine needs at least one CPU".into(),
            ));
        }
        let mut o = vec![
            format!("--ntasks={n}"),
            format!("--cpus-per-task={}", self.cpus_per_engine),
        ];
        for (flag, value) in [
            ("partition", &self.partition),
            ("account", &self.account),
            ("qos", &self.qos),
        ] {
            if let Some(v) = value {
                one_line(flag, v)?;
                if v.contains(char::is_whitespace) {
                    return Err(SlurmError::Settings(format!(
                        "[slurm] {flag} = {v:?}: Slurm names have no spaces"
                    )));
                }
                o.push(format!("--{flag}={v}"));
            }
        }
        let limit = match &self.time {
            Some(t) => {
                let Some(secs) = parse_time_s(t).or_else(|| {
                    matches!(
                        t.trim().to_ascii_uppercase().as_str(),
                        "UNLIMITED" | "INFINITE"
                    )
                    .then_some(u64::MAX)
                }) else {
                    return Err(SlurmError::Settings(format!(
                        "[slurm] time = {t:?}: use minutes, MM:SS, HH:MM:SS or D-HH:MM:SS"
                    )));
                };
                o.push(format!("--time={}", t.trim()));
                Some(secs)
            }
            None => None,
        };
        if let Some(m) = &self.memory {
            let Some(mb) = parse_memory_mb(m) else {
                return Err(SlurmError::Settings(format!(
                    "[slurm] memory = {m:?}: use a size such as 512M, 4G (per engine)"
                )));
            };
            let per_cpu = mb.div_ceil(u64::from(self.cpus_per_engine));
            o.push(format!("--mem-per-cpu={per_cpu}M"));
        }
        if !self.signal.trim().is_empty() {
            let Some((_, lead)) = parse_signal(&self.signal) else {
                return Err(SlurmError::Settings(format!(
                    "[slurm] signal = {:?}: use SIG@SECONDS, such as USR1@60 (or \"\" for none)",
                    self.signal
                )));
            };
            if let Some(limit) = limit.filter(|&l| l <= lead) {
                return Err(SlurmError::Settings(format!(
                    "[slurm] signal = {:?} asks for the drain signal {lead} s before the end, but time = {:?} is only {limit} s: engines would drain at once",
                    self.signal,
                    self.time.as_deref().unwrap_or_default()
                )));
            }
            o.push(format!("--signal={}", self.signal.trim()));
        }
        for extra in &self.options {
            one_line("options", extra)?;
            o.push(extra.trim().to_owned());
        }
        Ok(o)
    }

    /// The template to render: `template`, else `template_file`'s text, else the built-in.
    pub fn template_text(&self) -> Result<String, SlurmError> {
        match (&self.template, &self.template_file) {
            (Some(t), _) => Ok(t.clone()),
            (None, Some(path)) => std::fs::read_to_string(path).map_err(|source| SlurmError::Io {
                path: PathBuf::from(path),
                source,
            }),
            (None, None) => Ok(DEFAULT_TEMPLATE.into()),
        }
    }
}

/// Fills `{name}` placeholders of `template` from `values`. `${…}` (shell) and braces around
/// anything that is not a plain name are left alone; an unknown `{name}` is an error naming
/// it, so a typo does not reach the shell.
pub fn render(template: &str, values: &[(&str, String)]) -> Result<String, SlurmError> {
    let mut out = String::with_capacity(template.len() + 256);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let dollar = out.ends_with('$');
        let name_len = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        let is_placeholder = !dollar && name_len > 0 && after[name_len..].starts_with('}');
        if !is_placeholder {
            out.push('{');
            rest = after;
            continue;
        }
        let name = &after[..name_len];
        match values.iter().find(|(k, _)| *k == name) {
            Some((_, v)) => out.push_str(v),
            None => {
                let known: Vec<&str> = PLACEHOLDERS.iter().map(|(k, _)| *k).collect();
                return Err(SlurmError::Template(format!(
                    "unknown placeholder {{{name}}} in the [slurm] job template; known: {}",
                    known.join(", ")
                )));
            }
        }
        rest = &after[name_len + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Plans the jobs for `spec`: splits the engines, renders each job's script.
pub fn plan_jobs(settings: &SlurmSettings, spec: &JobSpec) -> Result<Vec<JobPlan>, SlurmError> {
    if spec.engines == 0 {
        return Err(SlurmError::Settings(
            "no engines asked for: give -n N with N > 0".into(),
        ));
    }
    let jobs = spec.jobs.unwrap_or(settings.jobs);
    if jobs == 0 {
        return Err(SlurmError::Settings(
            "jobs = 0: engines need at least one job".into(),
        ));
    }
    if spec.program_and_args.is_empty() {
        return Err(SlurmError::Settings("no engine program given".into()));
    }
    let template = settings.template_text()?;
    let sizes = split(spec.engines, jobs);
    let base = file_safe(
        settings
            .job_name
            .as_deref()
            .unwrap_or(&format!("cluster-{}", spec.profile)),
    );
    let program = shell_join(&spec.program_and_args);
    let mut plans = Vec::new();
    for (i, &n) in sizes.iter().enumerate() {
        let index = i + 1;
        let name = if sizes.len() == 1 {
            base.clone()
        } else {
            format!("{base}-{index}")
        };
        let output = spec.log_dir.join(format!("slurm-{name}-%j.out"));
        let mut options = vec![
            format!("--job-name={name}"),
            format!("--output={}", output.display()),
        ];
        options.extend(settings.sbatch_options(n)?);
        let sbatch_lines = options
            .iter()
            .map(|o| format!("#SBATCH {o}"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut srun = vec![
            "srun".to_owned(),
            format!("--ntasks={n}"),
            format!("--cpus-per-task={}", settings.cpus_per_engine),
            "--kill-on-bad-exit=0".to_owned(),
            "--label".to_owned(),
        ];
        srun.extend(settings.srun_options.iter().cloned());
        let srun = format!("{} {program}", shell_join(&srun));
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let values = [
            ("n", n.to_string()),
            ("program_and_args", program.clone()),
            ("srun", srun),
            ("sbatch_options", sbatch_lines),
            ("job_name", name.clone()),
            ("cpus_per_engine", settings.cpus_per_engine.to_string()),
            ("output", output.display().to_string()),
            ("partition", opt(&settings.partition)),
            ("account", opt(&settings.account)),
            ("qos", opt(&settings.qos)),
            ("time", opt(&settings.time)),
            ("memory", opt(&settings.memory)),
            ("index", index.to_string()),
            ("jobs", sizes.len().to_string()),
            ("profile", spec.profile.clone()),
            ("run_dir", spec.run_dir.display().to_string()),
        ];
        plans.push(JobPlan {
            index,
            name,
            engines: n,
            script: render(&template, &values)?,
            output,
        });
    }
    // Checked after rendering, so that a misspelt placeholder is named as such.
    if !template.contains("{srun}") && !template.contains("{program_and_args}") {
        return Err(SlurmError::Template(
            "the [slurm] job template never starts the engines: put {srun} (or srun … {program_and_args}) in it".into(),
        ));
    }
    Ok(plans)
}

/// The output file of job `id` from its `--output` pattern.
pub fn output_path(pattern: &Path, id: &str) -> PathBuf {
    PathBuf::from(pattern.to_string_lossy().replace("%j", id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(n: usize, jobs: Option<usize>) -> JobSpec {
        JobSpec {
            profile: "default".into(),
            engines: n,
            program_and_args: vec![
                "/opt/cluster".into(),
                "engine".into(),
                "--file".into(),
                "/home/me/.cluster/profile_default/security/engine.json".into(),
            ],
            run_dir: "/home/me/.cluster/profile_default/run".into(),
            log_dir: "/home/me/.cluster/profile_default/log".into(),
            jobs,
        }
    }

    #[test]
    fn splits_evenly_without_empty_jobs() {
        assert_eq!(split(6, 2), vec![3, 3]);
        assert_eq!(split(7, 3), vec![3, 2, 2]);
        assert_eq!(split(2, 5), vec![1, 1]);
        assert_eq!(split(5, 1), vec![5]);
        assert_eq!(split(0, 3), Vec::<usize>::new());
        assert_eq!(split(4, 0), vec![4]);
    }

    #[test]
    fn default_script_is_one_srun_step() {
        let settings = SlurmSettings {
            partition: Some("debug".into()),
            time: Some("1:00:00".into()),
            memory: Some("4G".into()),
            cpus_per_engine: 2,
            options: vec!["--exclusive".into()],
            ..SlurmSettings::default()
        };
        let plans = plan_jobs(&settings, &spec(6, None)).unwrap();
        assert_eq!(plans.len(), 1);
        let s = &plans[0].script;
        let expected = "#!/bin/sh\n\
#SBATCH --job-name=cluster-default\n\
#SBATCH --output=/home/me/.cluster/profile_default/log/slurm-cluster-default-%j.out\n\
#SBATCH --ntasks=6\n\
#SBATCH --cpus-per-task=2\n\
#SBATCH --partition=debug\n\
#SBATCH --time=1:00:00\n\
#SBATCH --mem-per-cpu=2048M\n\
#SBATCH --signal=USR1@60\n\
#SBATCH --exclusive\n\
# Engines of cluster profile default: job 1 of 1, 6 engine(s).\n\
exec srun --ntasks=6 --cpus-per-task=2 --kill-on-bad-exit=0 --label /opt/cluster engine --file /home/me/.cluster/profile_default/security/engine.json\n";
        assert_eq!(s, expected);
    }

    #[test]
    fn jobs_split_and_names_number_them() {
        let plans = plan_jobs(&SlurmSettings::default(), &spec(5, Some(2))).unwrap();
        assert_eq!(
            plans.iter().map(|p| p.engines).collect::<Vec<_>>(),
            vec![3, 2]
        );
        assert_eq!(plans[1].name, "cluster-default-2");
        assert!(plans[1].script.contains("--ntasks=2"));
        assert!(plans[1].script.contains("job 2 of 2"));
        assert_eq!(
            output_path(&plans[1].output, "77"),
            PathBuf::from("/home/me/.cluster/profile_default/log/slurm-cluster-default-2-77.out")
        );
    }

    #[test]
    fn templates_fill_placeholders_and_leave_shell_alone() {
        let settings = SlurmSettings {
            template: Some(
                "#!/bin/bash\n#SBATCH -n {n} -J {job_name}\nmodule load x\necho ${SLURM_JOB_ID} {not a name} {}\nsrun {program_and_args}\n".into(),
            ),
            ..SlurmSettings::default()
        };
        let plans = plan_jobs(&settings, &spec(3, None)).unwrap();
        assert_eq!(
            plans[0].script,
            "#!/bin/bash\n#SBATCH -n 3 -J cluster-default\nmodule load x\necho ${SLURM_JOB_ID} {not a name} {}\nsrun /opt/cluster engine --file /home/me/.cluster/profile_default/security/engine.json\n"
        );
        let typo = SlurmSettings {
            template: Some("srun {program_and_arg}".into()),
            ..SlurmSettings::default()
        };
        let err = plan_jobs(&typo, &spec(1, None)).unwrap_err().to_string();
        assert!(
            err.contains("{program_and_arg}") && err.contains("known"),
            "{err}"
        );
        let useless = SlurmSettings {
            template: Some("#!/bin/sh\nsleep 1\n".into()),
            ..SlurmSettings::default()
        };
        assert!(plan_jobs(&useless, &spec(1, None)).is_err());
    }

    #[test]
    fn quoting_reaches_the_script() {
        let mut s = spec(1, None);
        s.program_and_args[3] = "/home/my files/engine.json".into();
        let plans = plan_jobs(&SlurmSettings::default(), &s).unwrap();
        assert!(plans[0]
            .script
            .contains("--file '/home/my files/engine.json'"));
    }

    #[test]
    fn bad_settings_are_named() {
        for (settings, needle) in [
            (
                SlurmSettings {
                    time: Some("soon".into()),
                    ..SlurmSettings::default()
                },
                "time",
            ),
            (
                SlurmSettings {
                    memory: Some("lots".into()),
                    ..SlurmSettings::default()
                },
                "memory",
            ),
            (
                SlurmSettings {
                    cpus_per_engine: 0,
                    ..SlurmSettings::default()
                },
                "cpus_per_engine",
            ),
            (
                SlurmSettings {
                    partition: Some("a\n#SBATCH --x".into()),
                    ..SlurmSettings::default()
                },
                "partition",
            ),
            (
                SlurmSettings {
                    signal: "USR1@oops".into(),
                    ..SlurmSettings::default()
                },
                "signal",
            ),
            (
                SlurmSettings {
                    time: Some("1".into()),
                    signal: "USR1@120".into(),
                    ..SlurmSettings::default()
                },
                "drain at once",
            ),
        ] {
            let err = plan_jobs(&settings, &spec(2, None))
                .unwrap_err()
                .to_string();
            assert!(err.contains(needle), "{needle}: {err}");
        }
        assert!(plan_jobs(&SlurmSettings::default(), &spec(0, None)).is_err());
        let no_signal = SlurmSettings {
            signal: String::new(),
            ..SlurmSettings::default()
        };
        assert!(!plan_jobs(&no_signal, &spec(1, None)).unwrap()[0]
            .script
            .contains("--signal"));
    }

    #[test]
    fn sizes_times_and_signals() {
        assert_eq!(parse_memory_mb("512"), Some(512));
        assert_eq!(parse_memory_mb("4G"), Some(4096));
        assert_eq!(parse_memory_mb("4gb"), Some(4096));
        assert_eq!(parse_memory_mb("1T"), Some(1 << 20));
        assert_eq!(parse_memory_mb("100K"), Some(1));
        assert_eq!(parse_memory_mb("0"), None);
        assert_eq!(parse_memory_mb("x"), None);
        assert_eq!(parse_memory_mb("99999999999999999999G"), None);
        assert_eq!(parse_time_s("30"), Some(1800));
        assert_eq!(parse_time_s("1:30"), Some(90));
        assert_eq!(parse_time_s("1:00:00"), Some(3600));
        assert_eq!(parse_time_s("2-00:00:01"), Some(172_801));
        assert_eq!(parse_time_s("1-2"), Some(93_600));
        assert_eq!(parse_time_s("1-2:3"), Some(93_780));
        assert_eq!(parse_time_s("1:2:3:4"), None);
        assert_eq!(parse_time_s(""), None);
        assert_eq!(parse_signal("USR1@60"), Some(("USR1".into(), 60)));
        assert_eq!(parse_signal("B:SIGUSR2@5"), Some(("USR2".into(), 5)));
        assert_eq!(parse_signal("TERM"), Some(("TERM".into(), 60)));
        assert_eq!(parse_signal("X:USR1"), None);
        assert_eq!(parse_signal("usr1"), None);
    }
}
