//! The program the CLI runs when it launches itself: the controller and engines of
//! `cluster start` and `cluster engines`, the `cluster map` runs of `cluster bench commands`,
//! the binary `--copy-binary` sends to ssh hosts.
//!
//! Normally that is the running executable. When the CLI runs inside another program (the
//! Python wheel runs it in `python -m ferrocluster`), the running executable is that
//! program's interpreter, so `CLUSTER_PROGRAM` says what to run instead: a JSON array of the
//! program and its leading arguments (`["/venv/bin/python","-m","ferrocluster"]`), or a plain
//! path.

use anyhow::{bail, Context as _, Result};
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Command;

/// The environment variable naming the program to launch instead of the running executable.
pub const ENV: &str = "CLUSTER_PROGRAM";

/// The program and its leading arguments: from `CLUSTER_PROGRAM` when set (and not empty),
/// else the running executable alone.
pub fn words() -> Result<Vec<OsString>> {
    match std::env::var_os(ENV).filter(|v| !v.is_empty()) {
        Some(value) => parse(&value),
        None => {
            let exe = std::env::current_exe()
                .context("cannot find the path of the running `cluster` program")?;
            Ok(vec![exe.into_os_string()])
        }
    }
}

/// Parses a `CLUSTER_PROGRAM` value: a JSON array of strings (when it starts with `[`),
/// else a plain path.
pub fn parse(value: &std::ffi::OsStr) -> Result<Vec<OsString>> {
    let Some(text) = value.to_str().filter(|t| t.trim_start().starts_with('[')) else {
        return Ok(vec![value.to_owned()]);
    };
    let words: Vec<String> = serde_json::from_str(text).with_context(|| {
        format!("{ENV}={text}: expected a JSON array of strings like [\"/venv/bin/python\",\"-m\",\"ferrocluster\"], or a plain path")
    })?;
    if words.first().is_none_or(|w| w.is_empty()) {
        bail!("{ENV}={text}: the array must start with the program to run");
    }
    Ok(words.into_iter().map(OsString::from).collect())
}

/// A command that runs the `cluster` program (with `CLUSTER_PROGRAM`'s leading arguments);
/// add the subcommand and its arguments.
pub fn command() -> Result<Command> {
    let words = words()?;
    let mut cmd = Command::new(&words[0]);
    cmd.args(&words[1..]);
    Ok(cmd)
}

/// A standalone `cluster` binary, for copying to other machines: the running executable, or
/// `CLUSTER_PROGRAM` when it is a single program. Refused when `CLUSTER_PROGRAM` has leading
/// arguments (an interpreter running the CLI cannot be copied as one file).
pub fn binary() -> Result<PathBuf> {
    let words = words()?;
    match words.as_slice() {
        [one] => Ok(PathBuf::from(one)),
        _ => bail!(
            "{ENV} runs the CLI through {:?} with arguments, which is not one binary to copy: install cluster on the hosts and set cluster_path in [ssh] instead of --copy-binary",
            words[0]
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn a_json_array_gives_the_program_and_its_leading_arguments() {
        let words = parse(OsStr::new(r#"["/venv/bin/python","-m","ferrocluster"]"#)).unwrap();
        assert_eq!(words, ["/venv/bin/python", "-m", "ferrocluster"]);
    }

    #[test]
    fn a_plain_value_is_a_path() {
        assert_eq!(
            parse(OsStr::new("/opt/cluster bin/cluster")).unwrap(),
            ["/opt/cluster bin/cluster"]
        );
    }

    #[test]
    fn bad_arrays_are_refused_with_the_variable_named() {
        for bad in ["[1,2]", "[]", "[\"\"]", "[\"a\""] {
            let err = parse(OsStr::new(bad)).unwrap_err().to_string();
            assert!(err.contains("CLUSTER_PROGRAM"), "{bad}: {err}");
        }
    }
}
