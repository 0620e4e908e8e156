//! Builds an example program with cargo for the tests that run it as users do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// The path of example `name` as cargo builds it, with this test's features and profile, so that
/// the build is a no-op after `cargo test --all-features` (which builds examples) and a lone
/// test run never uses a stale program. Built once per test process.
pub fn built_example(name: &str) -> PathBuf {
    static BUILT: OnceLock<Mutex<HashMap<String, PathBuf>>> = OnceLock::new();
    let mut built = BUILT
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    built
        .entry(name.to_owned())
        .or_insert_with(|| build(name))
        .clone()
}

fn build(name: &str) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--quiet",
        "--example",
        name,
        "--message-format=json",
    ])
    .current_dir(env!("CARGO_MANIFEST_DIR"));
    if cfg!(feature = "http") {
        cmd.args(["--features", "http"]);
    }
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    // Cargo sets these for the test itself, not in a shell; build scripts (ring's) watch some of
    // them, and seeing them would make this build redo, and undo, the outer one.
    for (var, _) in std::env::vars_os() {
        let var = var.to_string_lossy();
        let set_for_tests = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_PRIMARY_",
        ]
        .iter()
        .any(|p| var.starts_with(p))
            || ["CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&var.as_ref());
        if set_for_tests {
            cmd.env_remove(var.as_ref());
        }
    }
    let output = cmd.stderr(Stdio::inherit()).output().expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo build --example {name} failed"
    );
    String::from_utf8(output.stdout)
        .expect("cargo's messages are UTF-8")
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == name)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .expect("cargo reported the example's executable")
}
