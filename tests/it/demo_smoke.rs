//! Runs the built `demo` example with short flags (about 8 s of real time): it must survive its
//! outage and its API key rotation, get every client its refreshed tokens, and exit 0.
//!
//! The test builds the example itself (with cargo, a no-op after `cargo test --all-features`,
//! which builds examples), so a lone `cargo test --all-features --test demo_smoke` never runs a
//! stale binary.
#![cfg(feature = "http")]

use std::path::PathBuf;
use std::process::Command;

fn demo_binary() -> PathBuf {
    crate::examples_support::built_example("demo")
}

#[test]
fn demo_survives_its_outage_and_key_rotation_and_feeds_every_client() {
    let binary = demo_binary();
    assert!(binary.exists(), "{} is missing", binary.display());
    let output = Command::new(&binary)
        .args(["--ttl", "6", "--lead", "3", "--cycles", "2"])
        .output()
        .expect("the demo starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo failed:\n{stdout}\n{stderr}");
    for expected in [
        // The key rotation: the clients refuse the old key's token, the manager fetches at once.
        "API key rotated: SK…0001 → SK…0002",
        "ServiceRejected  20107 → Refresh",
        "FetchRequest     Rejected { code: 20107 }, attempt 1",
        "signed with SK…0002",
        "#3 accepted by chat, sync, voice, video",
        "service refusals  4 × 20107 → Refresh; fetches at once: 1",
        "refused token replaced in",
        "4/4 clients on the new key",
        // The outage.
        "→ 503 (injected outage)",
        "RefreshFailed    attempt 1, retry in",
        "RefreshFailed    attempt 2, retry in",
        "#4 accepted by chat, sync, voice, video",
        "outage survived",
        "ok: every client got 3 refreshed tokens",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(!stdout.contains("TokenExpired"), "{stdout}");
    // The only failures are the four refusals of the old key's token.
    let failures: Vec<&str> = stdout
        .lines()
        .filter(|line| line.contains("ConsumerFailed"))
        .collect();
    assert_eq!(failures.len(), 4, "{stdout}");
    for line in failures {
        assert!(
            line.contains("the API key was rotated (refused by the service: Twilio error 20107)"),
            "{stdout}"
        );
    }
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
    for args in [
        &["--lead", "1"][..],
        &["--cycles", "1"],
        &["--ttl", "x"],
        &["--bogus"],
    ] {
        let output = Command::new(&binary)
            .args(args)
            .output()
            .expect("the demo starts");
        assert_eq!(output.status.code(), Some(2), "{args:?}");
    }
}
