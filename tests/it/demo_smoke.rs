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
        // A proxy that refuses every connection: the demo's fetcher must not go through it.
        .env("HTTP_PROXY", "http://127.0.0.1:9")
        .env("ALL_PROXY", "http://127.0.0.1:9")
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

#[test]
fn the_demos_token_server_refuses_a_request_naming_another_host() {
    use std::io::{BufRead, BufReader, Read, Write};
    let mut demo = Command::new(demo_binary())
        .args(["--ttl", "6", "--lead", "3", "--cycles", "2"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("the demo starts");
    // Kept open until the demo is killed: it prints on.
    let mut stdout = BufReader::new(demo.stdout.take().unwrap());
    let addr = stdout
        .by_ref()
        .lines()
        .map_while(Result::ok)
        .find_map(|line| {
            let rest = line.split("token server  POST http://").nth(1)?;
            Some(rest.split('/').next()?.to_owned())
        })
        .expect("the demo prints its token server's address");
    let mut stream = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "POST /token HTTP/1.1\r\nhost: rebound.attacker.example\r\ncookie: session=demo-session-7f3a\r\n\
         connection: close\r\ncontent-length: 0\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let _ = demo.kill();
    let _ = demo.wait();
    assert!(response.starts_with("HTTP/1.1 421"), "{response}");
    assert!(!response.contains("eyJ"), "{response}");
}
