//! The connection files: `engine.json` and `client.json` in the security folder (mode 0600,
//! the folder 0700), telling engines and clients where the controller listens and its key.

use super::{ControllerConfig, ControllerError};
use protocol::PROTOCOL_VERSION;
use security::{Addresses, ConnectionInfo};

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
    let info = |addresses: Addresses| {
        ConnectionInfo::new(PROTOCOL_VERSION, &config.key, addresses)
            .with_location(host, pid)
            .with_replay_window(config.replay_window)
            .with_encryption(config.encrypt)
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

#[cfg(test)]
mod tests {
    use super::*;
    use security::Key;
    use std::time::Duration;

    #[test]
    fn the_files_carry_the_settings_and_each_its_own_addresses() {
        let dir = tempfile::tempdir().unwrap();
        let key = Key::generate();
        let mut config = ControllerConfig::new(key.clone(), dir.path().join("security"));
        config.replay_window = Duration::from_secs(60);
        config.encrypt = false;
        let addresses = Addresses {
            engine: Some("tcp://127.0.0.1:1".into()),
            heartbeat: Some("tcp://127.0.0.1:2".into()),
            client: Some("tcp://127.0.0.1:3".into()),
            notify: Some("tcp://127.0.0.1:4".into()),
        };
        write_connection_files(&config, &addresses, "host-a", 42).unwrap();
        let (engine, engine_key) = ConnectionInfo::load(
            &config.security_dir.join("engine.json"),
            PROTOCOL_VERSION,
            &["engine", "heartbeat"],
        )
        .unwrap();
        let (client, _) = ConnectionInfo::load(
            &config.security_dir.join("client.json"),
            PROTOCOL_VERSION,
            &["client", "notify"],
        )
        .unwrap();
        assert_eq!(engine_key, key);
        assert_eq!(
            (engine.location.as_str(), engine.controller_pid),
            ("host-a", 42)
        );
        assert_eq!(engine.replay_window_s, 60);
        assert!(!engine.encrypted() && !client.encrypted());
        assert_eq!(engine.addresses.client, None);
        assert_eq!(client.addresses.engine, None);
        assert_eq!(
            client.addresses.notify.as_deref(),
            Some("tcp://127.0.0.1:4")
        );
    }
}
