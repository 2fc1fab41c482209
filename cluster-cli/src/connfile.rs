//! Checking a connection file before using it, with a message that matches what was given:
//! a file named with `--file` is not "the right profile?", `{}` is valid JSON but not a
//! connection file, and `engine.json` given to a client command is the wrong one of the two,
//! not corrupt. Every problem here exits with status 4 (see [`crate::exit`]).

use security::{ConnectionFileError, ConnectionInfo};
use std::path::Path;

/// Which of the two connection files a command needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `security/client.json`: clients (`status`, `call`, `map`…).
    Client,
    /// `security/engine.json`: engines.
    Engine,
}

impl Role {
    fn addresses(self) -> &'static [&'static str] {
        match self {
            Role::Client => &["client"],
            Role::Engine => &["engine", "heartbeat"],
        }
    }

    fn file_name(self) -> &'static str {
        match self {
            Role::Client => "client.json",
            Role::Engine => "engine.json",
        }
    }
}

/// Where the file came from.
#[derive(Debug, Clone, Copy)]
pub enum Source<'a> {
    /// Named on the command line (`--file`, or its environment twin).
    Given,
    /// The profile's own file (the profile's name).
    Profile(&'a str),
}

/// A connection file that cannot be used (exit status 4).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BadFile(pub String);

/// Checks that `path` is a usable connection file for `role`.
pub fn check(path: &Path, role: Role, source: Source<'_>) -> Result<(), BadFile> {
    let err = match ConnectionInfo::load(path, protocol::PROTOCOL_VERSION, role.addresses()) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    let shown = path.display();
    Err(BadFile(match (err, source) {
        (ConnectionFileError::Missing { .. }, Source::Given) => {
            format!("connection file {shown} does not exist")
        }
        (ConnectionFileError::Missing { .. }, Source::Profile(name)) => format!(
            "no controller is running for profile {name:?} (its connection file {shown} does not exist); start one with `cluster start`"
        ),
        (ConnectionFileError::Corrupt { reason, .. }, source) => corrupt(path, role, &reason, source),
        (other, _) => other.to_string(),
    }))
}

/// The message for a file that reads but does not load.
fn corrupt(path: &Path, role: Role, reason: &str, source: Source<'_>) -> String {
    let shown = path.display();
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let value: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    let Some(value) = value else {
        return format!("connection file {shown} is corrupt: it is not valid JSON");
    };
    let has = |name: &str| value["addresses"][name].is_string();
    let other = match role {
        Role::Client if has("engine") && !has("client") => Some(Role::Engine),
        Role::Engine if has("client") && !has("engine") => Some(Role::Client),
        _ => None,
    };
    if let Some(other) = other {
        return format!(
            "{shown} is the {} connection file; this command needs the {} one ({} in the same folder)",
            other.file_name(),
            role.file_name(),
            role.file_name()
        );
    }
    if value.get("key").is_none() || value.get("protocol_version").is_none() {
        let reason = reason
            .strip_prefix("not valid JSON (")
            .and_then(|r| r.strip_suffix(')'));
        return format!(
            "{shown} is not a cluster connection file ({})",
            reason.unwrap_or("no key or protocol version")
        );
    }
    match source {
        Source::Given => format!("connection file {shown} is damaged: {reason}"),
        Source::Profile(_) => format!(
            "connection file {shown} is damaged: {reason}; `cluster stop` then `cluster start` writes a fresh one"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), text).unwrap();
        f
    }

    fn message(path: &Path, role: Role, source: Source<'_>) -> String {
        check(path, role, source).unwrap_err().to_string()
    }

    #[test]
    fn a_given_file_is_not_about_profiles() {
        let m = message(Path::new("/tmp/nope.json"), Role::Client, Source::Given);
        assert_eq!(m, "connection file /tmp/nope.json does not exist");
        let m = message(
            Path::new("/x/client.json"),
            Role::Client,
            Source::Profile("p"),
        );
        assert!(
            m.starts_with("no controller is running for profile \"p\""),
            "{m}"
        );
    }

    #[test]
    fn json_that_is_not_a_connection_file_is_not_called_invalid_json() {
        let f = file("{}");
        let m = message(f.path(), Role::Client, Source::Given);
        assert!(m.contains("is not a cluster connection file"), "{m}");
        assert!(!m.contains("not valid JSON"), "{m}");
        let f = file("{nope");
        let m = message(f.path(), Role::Engine, Source::Given);
        assert!(m.contains("is not valid JSON"), "{m}");
    }

    #[test]
    fn the_other_file_is_named_as_such() {
        let key = "00".repeat(32);
        let f = file(&format!(
            r#"{{"protocol_version": {}, "key": "{key}", "signature_scheme": "hmac-sha256",
                "addresses": {{"engine": "tcp://127.0.0.1:1", "heartbeat": "tcp://127.0.0.1:2"}}}}"#,
            protocol::PROTOCOL_VERSION
        ));
        let m = message(f.path(), Role::Client, Source::Given);
        assert!(
            m.contains(
                "is the engine.json connection file; this command needs the client.json one"
            ),
            "{m}"
        );
        assert!(!m.contains("corrupt") && !m.contains("restart"), "{m}");
    }
}
