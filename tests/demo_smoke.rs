//! Runs the built `demo` example with short flags (about 8 s of real time): it must survive its
//! outage, get every client two refreshed tokens, and exit 0.
//!
//! `cargo test --all-features` builds examples before running tests; a lone
//! `cargo test --features http --test demo_smoke` needs `cargo build --features http --example demo`
//! first.
#![cfg(feature = "http")]

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/demo`, next to this test's `target/<profile>/deps/demo_smoke-<hash>`.
fn demo_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>");
    profile_dir
        .join("examples")
        .join(format!("demo{}", std::env::consts::EXE_SUFFIX))
}

#[test]
fn demo_survives_its_outage_and_feeds_every_client() {
    let binary = demo_binary();
    assert!(
        binary.exists(),
        "{} is missing: run `cargo build --features http --example demo` (cargo test --all-features does)",
        binary.display()
    );
    let output = Command::new(&binary)
        .args(["--ttl", "6", "--lead", "3", "--cycles", "2"])
        .output()
        .expect("the demo starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        "→ 503 (injected outage)",
        "RefreshFailed    attempt 1, retry in",
        "RefreshFailed    attempt 2, retry in",
        "#3 accepted by chat, sync, voice, video",
        "outage survived",
        "ok: every client got 2 refreshed tokens",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("TokenExpired"), "{stdout}");
    assert!(!stdout.contains("ConsumerFailed"), "{stdout}");
    // The server's secret and the tokens themselves are never printed.
    assert!(!stdout.contains("demo-api-secret"), "{stdout}");
    assert!(!stdout.contains("eyJ"), "{stdout}");
}

#[test]
fn demo_refuses_bad_flags() {
    let binary = demo_binary();
    if !binary.exists() {
        return; // reported by the test above
    }
    let output = Command::new(&binary)
        .args(["--lead", "1"])
        .output()
        .expect("the demo starts");
    assert_eq!(output.status.code(), Some(2));
}
