//! What every command gets besides its own arguments: the profiles folder, the profile name
//! and where to print.

use crate::cmd::Conn;
use crate::connfile::{Role, Source};
use crate::output::Output;
use anyhow::Result;
use profiles::{Profile, Profiles};

/// The context of one command.
#[derive(Debug)]
pub struct Ctx {
    /// The folder of profiles (`--cluster-dir`, `$CLUSTER_DIR` or `~/.cluster`).
    pub profiles: Profiles,
    /// The profile name (`--profile`).
    pub profile: String,
    /// Where the command prints.
    pub out: Output,
}

impl Ctx {
    /// The profile, whether or not it exists.
    pub fn profile(&self) -> Result<Profile> {
        Ok(self.profiles.profile(&self.profile)?)
    }

    /// The profile, which must exist.
    pub fn open_profile(&self) -> Result<Profile> {
        Ok(self.profiles.open(&self.profile)?)
    }

    /// The profile, made if missing.
    pub fn create_profile(&self) -> Result<Profile> {
        Ok(self.profiles.create(&self.profile)?)
    }

    /// The profile's settings, or the defaults when it does not exist.
    pub fn settings(&self) -> Result<profiles::Settings> {
        match self.profiles.open(&self.profile) {
            Ok(p) => Ok(p.settings(&[])?),
            Err(_) => Ok(profiles::Settings::default()),
        }
    }

    /// A client of the profile's controller (or of `--file`).
    pub fn connect(&self, conn: &Conn) -> Result<client::Client> {
        let timeout = crate::cmd::secs(
            conn.connect_timeout
                .unwrap_or(self.settings()?.connect_timeout_s),
        )?;
        let path = match &conn.file {
            Some(f) => {
                crate::connfile::check(f, Role::Client, Source::Given)?;
                f.clone()
            }
            None => {
                let profile = self.profiles.open(&self.profile).map_err(|e| match e {
                    profiles::ProfileError::NotFound { dir, .. } => {
                        anyhow::Error::new(crate::connfile::BadFile(format!(
                            "no controller is running for profile {:?} (there is no such profile in {}); start one with `cluster start`",
                            self.profile,
                            dir.parent().unwrap_or(&dir).display()
                        )))
                    }
                    other => other.into(),
                })?;
                if let Some(pid) = crate::launch::dead_controller(&profile) {
                    return Err(
                        crate::connfile::BadFile(dead_controller_message(&profile, pid)).into(),
                    );
                }
                let file = profile.client_file();
                crate::connfile::check(&file, Role::Client, Source::Profile(&self.profile))?;
                file
            }
        };
        let options = client::ClientOptions {
            connect_timeout: timeout,
        };
        Ok(client::Client::connect_file_with(path, options)?)
    }
}

/// What to say about a profile whose controller (pid `pid`) died.
pub fn dead_controller_message(profile: &Profile, pid: u32) -> String {
    let engines = crate::launch::surviving_engines(profile)
        .map(|e| e.len())
        .unwrap_or(0);
    let name = profile.name();
    format!(
        "the controller of profile {name:?} is not running (pid {pid} is gone) and {} of its engines still run; `cluster start --profile {name}` brings it back and they reattach",
        engines
    )
}
