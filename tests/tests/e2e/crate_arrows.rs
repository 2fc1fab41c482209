//! The crate arrows of `DESIGN.md` §2 hold: read from `cargo metadata`, every dependency
//! between the workspace's crates (normal, build and dev) goes the way the table allows, only
//! `transport` depends on ZeroMQ, and `testkit` is a dependency of tests only.
//!
//! Crates are known by their folder (`controller/`), not their package name, as the table
//! does. A new crate needs a row in [`RULES`] (and in DESIGN §2) before the check passes.

use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// One row of DESIGN §2: a folder, the crates of ours it may depend on, and why.
struct Rule {
    folder: &'static str,
    /// Folders of ours it may depend on; `None` means any (the CLI and the end-to-end tests).
    may_use: Option<&'static [&'static str]>,
    /// The sentence of DESIGN §2 the arrow comes from.
    design: &'static str,
}

const LOWER: &[&str] = &["protocol", "security", "transport", "profiles"];

/// What the controller may use: the lower crates and its task store.
const CONTROLLER: &[&str] = &["protocol", "security", "transport", "profiles", "store"];

/// DESIGN §2, "Arrows point one way". `testkit` may also be a dev-dependency of any crate.
const RULES: &[Rule] = &[
    Rule {
        folder: "protocol",
        may_use: Some(&[]),
        design: "protocol and security depend on nothing of ours",
    },
    Rule {
        folder: "security",
        may_use: Some(&[]),
        design: "protocol and security depend on nothing of ours",
    },
    Rule {
        folder: "transport",
        may_use: Some(&["protocol", "security"]),
        design: "transport depends on protocol and security",
    },
    Rule {
        folder: "profiles",
        may_use: Some(&["security"]),
        design: "profiles depends on security (connection files) only",
    },
    Rule {
        folder: "store",
        may_use: Some(&["protocol"]),
        design: "store (SQLite task records) depends on protocol only; the controller uses it, nothing else does",
    },
    Rule {
        folder: "controller",
        may_use: Some(CONTROLLER),
        design: "controller, engine and client depend on protocol, security, transport and profiles (the controller also on store), and never on each other",
    },
    Rule {
        folder: "engine",
        may_use: Some(LOWER),
        design: "controller, engine and client depend on protocol, security, transport and profiles, and never on each other",
    },
    Rule {
        folder: "client",
        may_use: Some(LOWER),
        design: "controller, engine and client depend on protocol, security, transport and profiles, and never on each other",
    },
    Rule {
        folder: "launcher",
        may_use: Some(&["client", "profiles", "protocol", "security"]),
        design: "launcher depends on client and profiles, never on controller or engine",
    },
    Rule {
        folder: "dashboard",
        may_use: Some(&["client", "profiles", "protocol", "security"]),
        design: "dashboard depends on client and profiles, never on controller or engine",
    },
    Rule {
        folder: "python",
        may_use: Some(&["client", "cluster-cli", "profiles", "protocol", "security"]),
        design: "python depends on client (and the CLI's library), never on controller or engine",
    },
    Rule {
        folder: "testkit",
        may_use: Some(LOWER),
        design: "testkit holds fakes speaking the wire: protocol, security, transport and profiles",
    },
    Rule {
        folder: "cluster-cli",
        may_use: None,
        design: "cluster-cli depends on everything",
    },
    Rule {
        folder: "tests",
        may_use: None,
        design: "the end-to-end tests use everything",
    },
];

/// Crates that are ZeroMQ bindings: only `transport` may depend on them.
fn is_zeromq(package: &str) -> bool {
    package.contains("zmq") || package.contains("zeromq")
}

/// Every arrow of `metadata` (the JSON of `cargo metadata --format-version 1 --no-deps`) that
/// DESIGN §2 does not allow, one sentence each; empty when the design holds.
fn broken_arrows(metadata: &Value) -> Vec<String> {
    let root = Path::new(metadata["workspace_root"].as_str().unwrap_or(""));
    let folder_of = |manifest_dir: &Path| -> String {
        manifest_dir
            .strip_prefix(root)
            .unwrap_or(manifest_dir)
            .display()
            .to_string()
    };
    let rules: BTreeMap<&str, &Rule> = RULES.iter().map(|r| (r.folder, r)).collect();
    let mut broken = Vec::new();
    let packages = metadata["packages"]
        .as_array()
        .map_or(&[][..], Vec::as_slice);
    for package in packages {
        let name = package["name"].as_str().unwrap_or("?");
        let manifest = Path::new(package["manifest_path"].as_str().unwrap_or(""));
        let folder = folder_of(manifest.parent().unwrap_or(root));
        let Some(rule) = rules.get(folder.as_str()) else {
            broken.push(format!(
                "{folder}/ ({name}) has no row in the crate-arrow table: add its arrows to DESIGN.md §2 (through an issue) and to RULES in {}",
                file!()
            ));
            continue;
        };
        for dep in package["dependencies"]
            .as_array()
            .map_or(&[][..], Vec::as_slice)
        {
            let dep_name = dep["name"].as_str().unwrap_or("?");
            let kind = dep["kind"].as_str().unwrap_or("normal");
            if is_zeromq(dep_name) && folder != "transport" {
                broken.push(format!(
                    "{folder}/ ({name}) depends on {dep_name} ({kind}): only transport/ touches ZeroMQ (DESIGN §2); go through the transport crate"
                ));
            }
            // Path dependencies are ours; registry crates are not.
            let Some(path) = dep["path"].as_str() else {
                continue;
            };
            let to = folder_of(Path::new(path));
            if to == "testkit" {
                if kind != "dev" && folder != "tests" {
                    broken.push(format!(
                        "{folder}/ ({name}) depends on testkit/ as a {kind} dependency: testkit is dev-only and must never be a dependency of a non-test target (DESIGN §2); move it to [dev-dependencies]"
                    ));
                }
                continue;
            }
            if let Some(allowed) = rule.may_use {
                if !allowed.contains(&to.as_str()) {
                    let allowed = if allowed.is_empty() {
                        "nothing of ours".to_owned()
                    } else {
                        allowed.join(", ")
                    };
                    broken.push(format!(
                        "{folder}/ ({name}) depends on {to}/ ({dep_name}, {kind}), which the design does not allow: {}; {folder}/ may depend on {allowed} (DESIGN §2)",
                        rule.design
                    ));
                }
            }
        }
    }
    broken
}

#[test]
fn the_crate_arrows_of_the_design_hold() {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let out = std::process::Command::new(&cargo)
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cargo:?} metadata: {e}"));
    assert!(
        out.status.success(),
        "cargo metadata failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Value = serde_json::from_slice(&out.stdout).expect("cargo metadata prints JSON");
    assert!(
        metadata["packages"]
            .as_array()
            .is_some_and(|p| p.len() >= 8),
        "cargo metadata lists the workspace's crates: {metadata}"
    );
    let broken = broken_arrows(&metadata);
    assert!(
        broken.is_empty(),
        "{} crate arrow(s) against DESIGN.md §2:\n  {}",
        broken.len(),
        broken.join("\n  ")
    );
}

/// A workspace of `(folder, [(dependency folder or crate, kind)])`, as `cargo metadata` says it.
fn workspace(crates: &[(&str, &[(&str, &str)])]) -> Value {
    let packages: Vec<Value> = crates
        .iter()
        .map(|(folder, deps)| {
            let deps: Vec<Value> = deps
                .iter()
                .map(|(to, kind)| {
                    let mut d = serde_json::json!({
                        "name": format!("cluster-{to}"),
                        "kind": if *kind == "normal" { Value::Null } else { Value::from(*kind) },
                    });
                    if is_zeromq(to) {
                        d["name"] = Value::from(*to);
                    } else {
                        d["path"] = Value::from(format!("/ws/{to}"));
                    }
                    d
                })
                .collect();
            serde_json::json!({
                "name": format!("cluster-{folder}"),
                "manifest_path": format!("/ws/{folder}/Cargo.toml"),
                "dependencies": deps,
            })
        })
        .collect();
    serde_json::json!({ "workspace_root": "/ws", "packages": packages })
}

#[test]
fn the_crate_arrow_check_names_each_broken_arrow() {
    let good = workspace(&[
        ("protocol", &[]),
        ("transport", &[("protocol", "normal"), ("zmq", "normal")]),
        ("engine", &[("transport", "normal"), ("testkit", "dev")]),
        ("testkit", &[("transport", "normal")]),
        ("cluster-cli", &[("engine", "normal"), ("client", "normal")]),
    ]);
    assert_eq!(broken_arrows(&good), Vec::<String>::new());

    let bad = workspace(&[
        ("controller", &[("engine", "normal")]),
        ("client", &[("controller", "dev"), ("zmq", "normal")]),
        ("protocol", &[("security", "build")]),
        ("profiles", &[("protocol", "normal")]),
        ("engine", &[("testkit", "normal")]),
        ("scheduler", &[]),
    ]);
    let broken = broken_arrows(&bad);
    let expect = [
        "controller/ (cluster-controller) depends on engine/ (cluster-engine, normal)",
        "client/ (cluster-client) depends on controller/ (cluster-controller, dev)",
        "client/ (cluster-client) depends on zmq (normal): only transport/ touches ZeroMQ",
        "protocol/ (cluster-protocol) depends on security/ (cluster-security, build)",
        "profiles/ (cluster-profiles) depends on protocol/",
        "engine/ (cluster-engine) depends on testkit/ as a normal dependency",
        "scheduler/ (cluster-scheduler) has no row in the crate-arrow table",
    ];
    assert_eq!(broken.len(), expect.len(), "{broken:#?}");
    for (line, start) in broken.iter().zip(expect) {
        assert!(
            line.starts_with(start),
            "{line:?} should start with {start:?}"
        );
    }
}
