//! A `[section]` of `cluster.toml` (`[slurm]`, `[mpi]`, `[scale]`, `[restart]`), layered the
//! way the profile layers its own settings: built-in defaults < `cluster.toml` <
//! `CLUSTER_<SECTION>__<KEY>` environment variables (two underscores before the key, so
//! `CLUSTER_SLURM__PARTITION=debug`) < overrides from flags.
//!
//! The profile's [`profiles::Settings`] ignores tables it does not know, so a section read
//! here never upsets it.

use profiles::{Profile, ProfileError};
use serde::de::DeserializeOwned;
use std::path::Path;

/// Reads table `section` of `profile`'s `cluster.toml` into `T` (a `#[serde(default)]`
/// struct), with environment variables and `overrides` (key within the section, value) on
/// top. A missing file or table gives `T`'s defaults.
pub fn section<T: DeserializeOwned>(
    profile: &Profile,
    section: &str,
    overrides: &[(&str, String)],
) -> Result<T, ProfileError> {
    from_file(&profile.config_file(), section, overrides)
}

/// [`section`] from any settings file.
pub fn from_file<T: DeserializeOwned>(
    file: &Path,
    section: &str,
    overrides: &[(&str, String)],
) -> Result<T, ProfileError> {
    let bad = |e: config::ConfigError| ProfileError::Settings {
        file: file.to_owned(),
        message: format!("[{section}]: {e}"),
    };
    let mut builder = config::Config::builder()
        .add_source(
            config::File::from(file)
                .format(config::FileFormat::Toml)
                .required(false),
        )
        .add_source(
            config::Environment::with_prefix("CLUSTER")
                .prefix_separator("_")
                .separator("__")
                .try_parsing(true),
        );
    for (key, value) in overrides {
        builder = builder
            .set_override(format!("{section}.{key}"), value.as_str())
            .map_err(bad)?;
    }
    let built = builder.build().map_err(bad)?;
    match built.get::<T>(section) {
        Ok(t) => Ok(t),
        // No table at all: the defaults, as an empty table gives.
        Err(config::ConfigError::NotFound(_)) => config::Config::builder()
            .build()
            .and_then(|c| c.try_deserialize::<T>())
            .map_err(bad),
        Err(e) => Err(bad(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize, PartialEq)]
    #[serde(default)]
    struct S {
        partition: Option<String>,
        cpus: u32,
        extra: Vec<String>,
    }

    #[test]
    fn reads_a_table_with_overrides_and_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cluster.toml");
        std::fs::write(
            &file,
            "hwm = \"4\"\n[slurm]\npartition = \"debug\"\nextra = [\"--exclusive\"]\n",
        )
        .unwrap();
        let s: S = from_file(&file, "slurm", &[("cpus", "3".into())]).unwrap();
        assert_eq!(
            s,
            S {
                partition: Some("debug".into()),
                cpus: 3,
                extra: vec!["--exclusive".into()]
            }
        );
        let none: S = from_file(&file, "mpi", &[]).unwrap();
        assert_eq!(none, S::default());
        let missing: S = from_file(&dir.path().join("nope.toml"), "slurm", &[]).unwrap();
        assert_eq!(missing, S::default());
        std::fs::write(&file, "[slurm]\ncpus = \"many\"\n").unwrap();
        let err = from_file::<S>(&file, "slurm", &[]).unwrap_err().to_string();
        assert!(
            err.contains("[slurm]") && err.contains("cluster.toml"),
            "{err}"
        );
    }
}
