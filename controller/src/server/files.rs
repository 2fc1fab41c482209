//! The connection files: `engine.json` and `client.json` in the security folder (mode 0600,
//! the folder 0700), telling engines and clients where the controller listens and its key.

use super::{ControllerConfig, ControllerError};
use protocol::PROTOCOL_VERSION;
use security::{Addresses, ConnectionInfo, SIGNATURE_SCHEME};

/// Writes both files; `client.json` last, since its appearance tells `cluster start` that the
/// controller is ready.
pub(super) fn write_connection_files(
    config: &ControllerConfig,
    addresses: &Addresses,
    host: &str,
    pid: u32,
) -> Result<(), ControllerError> {
    let dir = &config.security_dir;
    if !dir.is_dir() {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|error| ControllerError::SecurityDir {
                path: dir.clone(),
                error,
            })?;
    }
    let info = |addresses: Addresses| ConnectionInfo {
        protocol_version: PROTOCOL_VERSION,
        signature_scheme: SIGNATURE_SCHEME.to_owned(),
        key: config.key.to_hex(),
        addresses,
        location: host.to_owned(),
        controller_pid: pid,
        replay_window_s: config.replay_window.as_secs(),
        encryption: if config.encrypt {
            security::ENCRYPTION_SCHEME.to_owned()
        } else {
            "none".to_owned()
        },
    };
    info(Addresses {
        engine: addresses.engine.clone(),
        heartbeat: addresses.heartbeat.clone(),
        ..Default::default()
    })
    .save(&dir.join("engine.json"))?;
    // client.json last: its appearance tells `cluster start` that the controller is ready.
    info(Addresses {
        client: addresses.client.clone(),
        notify: addresses.notify.clone(),
        ..Default::default()
    })
    .save(&dir.join("client.json"))?;
    Ok(())
}
