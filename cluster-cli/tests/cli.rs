//! The command line itself: help, usage errors, argument checks. (Its presence also makes
//! `cargo test --workspace` build the `cluster` binary that the end-to-end tests run.)

use std::process::Command;

fn cluster(args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(env!("CARGO_BIN_EXE_cluster"))
        .env("CLUSTER_DIR", dir.path())
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn help_lists_every_command() {
    let out = cluster(&["--help"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for cmd in [
        "profile",
        "start",
        "stop",
        "status",
        "engines",
        "call",
        "map",
        "submit",
        "result",
        "wait",
        "controller",
        "engine",
        "demo",
        "bench",
    ] {
        assert!(text.contains(cmd), "--help lacks {cmd}:\n{text}");
    }
}

#[test]
fn usage_errors_exit_2() {
    let out = cluster(&["map"]);
    assert_eq!(out.status.code(), Some(2));
    let out = cluster(&["start", "-n", "many"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_settings_are_reported_with_their_source() {
    let out = cluster(&["--profile", "x", "controller", "--hwm", "lots"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("hwm") && err.contains("lots"), "{err}");
}
