//! Connecting: the welcome, requests, and connection files or keys that do not fit.

use super::*;

#[test]
fn hello_welcome_and_requests() {
    let f = fake(Config::default());
    let client = Client::connect_file(&f.file).unwrap();
    assert_eq!(client.address(), f.address);
    assert_eq!(client.client_id(), ClientId(CLIENT_ID));
    assert_eq!(client.ids().unwrap(), vec![EngineId(0), EngineId(1)]);
    assert_eq!(
        client.wait_for_engines(2, Duration::from_secs(1)).unwrap(),
        vec![EngineId(0), EngineId(1)]
    );
    let err = client
        .wait_for_engines(3, Duration::from_millis(200))
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }));
    assert!(err.to_string().contains("3 engines (2 registered"), "{err}");
    let report = client.status().unwrap();
    assert_eq!(report.controller.client_address, f.address);
    client.purge().unwrap();
    client.shutdown(false).unwrap();
}

#[test]
fn connect_timeout_with_another_key_names_the_address() {
    let f = fake(Config {
        file_key: Some(Key::generate()),
        ..Config::default()
    });
    let start = Instant::now();
    let err = Client::connect_file_with(&f.file, quick()).unwrap_err();
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(300) && waited < Duration::from_secs(3));
    assert!(matches!(err, Error::ConnectTimeout { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&f.address), "{text}");
    assert!(text.contains(&f.file.display().to_string()), "{text}");
    assert!(text.contains("cluster start"), "{text}");
}

#[test]
fn bad_connection_files_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.json");
    let err = Client::connect_file(&missing).unwrap_err();
    assert!(matches!(
        err,
        Error::BadConnectionFile(security::ConnectionFileError::Missing { .. })
    ));
    assert!(err.to_string().contains(&missing.display().to_string()));

    let corrupt = dir.path().join("corrupt.json");
    std::fs::write(&corrupt, "{ not json").unwrap();
    let err = Client::connect_file(&corrupt).unwrap_err();
    assert!(matches!(
        err,
        Error::BadConnectionFile(security::ConnectionFileError::Corrupt { .. })
    ));
    assert!(err.to_string().contains(&corrupt.display().to_string()));
}
