//! The `inspect` example: what it prints for good and bad tokens, and its exit status, both in
//! process (its `run` function) and as the real program built by cargo.

#[allow(dead_code)] // its `main` is only for the program
#[path = "../../examples/inspect.rs"]
mod inspect;

use crate::token_support::*;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn vector(name: &str) -> Value {
    let doc = vectors();
    doc["valid"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["invalid"].as_array().unwrap())
        .find(|v| v["name"] == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
        .clone()
}

/// Runs the example's logic in process at `now`; returns (status, stdout, stderr).
fn run(args: &[&str], stdin: &str, now: u64) -> (i32, String, String) {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = inspect::run(&args, &mut stdin.as_bytes(), &mut out, &mut err, at(now));
    (
        code,
        String::from_utf8(out).unwrap(),
        String::from_utf8(err).unwrap(),
    )
}

fn signature_of(jwt: &str) -> &str {
    jwt.trim().rsplit('.').next().unwrap()
}

#[test]
fn a_valid_token_prints_its_fields_grants_and_times_and_exits_0() {
    let v = vector("all_six_grants");
    let jwt = v["token"].as_str().unwrap();
    let (code, out, _) = run(&[jwt], "", NOW + 42 * 60);
    assert_eq!(code, 0, "{out}");
    for needle in [
        "identity    alice",
        "account     AC0123456789abcdef0123456789abcdef",
        "api key     SKfedcba9876543210fedcba9876543210",
        "region      (none)",
        "issued      2023-11-14T22:13:20Z (42 min ago)",
        "expires     2023-11-14T23:13:20Z (in 18 min)",
        "lifetime    60 min (3600 s, counted from iat",
        "grants      chat, sync, voice, video, task_router, playback",
        "signature   not checked",
        "result      VALID (signature not checked)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    for (path, value) in [
        ("service_sid", "IS00000000000000000000000000000001"),
        ("incoming.allow", "true"),
        ("outgoing.params.nested.a", "[1,2]"),
        ("playbackUrl", "https://example.invalid/playback.m3u8"),
    ] {
        assert!(
            has_field(&out, path, value),
            "missing {path} {value} in\n{out}"
        );
    }
    assert!(!out.contains(signature_of(jwt)));
}

/// A grant field line: `    path   value`.
fn has_field(out: &str, path: &str, value: &str) -> bool {
    out.lines().any(|l| {
        l.trim_start()
            .strip_prefix(path)
            .and_then(|rest| rest.strip_suffix(value))
            .is_some_and(|gap| gap.len() >= 2 && gap.trim().is_empty())
    })
}

#[test]
fn an_expired_token_names_the_rule_and_code_and_exits_1() {
    let v = vector("chat_only");
    let jwt = v["token"].as_str().unwrap();
    let (code, out, _) = run(&[jwt], "", NOW + 3600 + 180);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(expired 3 min ago)"), "{out}");
    assert!(
        out.contains("  - token expired 3 min ago (Twilio error 20104)"),
        "{out}"
    );
    assert!(out.contains("result      NOT VALID"), "{out}");
}

#[test]
fn with_a_secret_it_checks_the_signature() {
    let v = vector("region_ie1");
    let jwt = v["token"].as_str().unwrap();
    let (code, out, _) = run(&["--secret", SECRET, jwt], "", NOW);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("signature   ok"), "{out}");
    assert!(out.contains("region      ie1"), "{out}");
    assert!(out.contains("result      VALID\n"), "{out}");
    assert!(!out.contains(SECRET), "never echoes the secret");

    let (code, out, _) = run(&["--secret=wrong", jwt], "", NOW);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("signature   DOES NOT MATCH"), "{out}");
    assert!(
        out.contains("signature does not match the secret (Twilio error 20107)"),
        "{out}"
    );
}

#[test]
fn a_token_it_cannot_read_shows_the_decodable_parts_and_the_code() {
    let v = vector("missing_cty");
    let jwt = v["token"].as_str().unwrap();
    let (code, out, _) = run(&[jwt], "", NOW);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(r#"header      {"alg":"HS256""#), "{out}");
    assert!(out.contains("(Twilio error 20102)"), "{out}");
    assert!(!out.contains(signature_of(jwt)), "{out}");
}

#[test]
fn it_reads_the_token_from_stdin_and_reports_time_rules_at_now() {
    let jwt = with_claims(|c| drop(c.insert("nbf".into(), json!(NOW + 600))));
    let (code, out, _) = run(&["--now", &NOW.to_string()], &format!("{jwt}\n"), 0);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("not before  2023-11-14T22:23:20Z (in 10 min)"),
        "{out}"
    );
    assert!(out.contains("(Twilio error 20105)"), "{out}");
    let (code, _, _) = run(&["-"], &jwt, NOW + 600);
    assert_eq!(code, 0);
}

#[test]
fn unknown_grant_keys_are_shown_as_kept() {
    let jwt = with_claims(|c| c["grants"]["ip_messaging"] = json!({"service_sid": "IS1"}));
    let (code, out, _) = run(&[&jwt], "", NOW);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("  ip_messaging (a key this crate does not know"),
        "{out}"
    );
    assert!(has_field(&out, "service_sid", "IS1"), "{out}");
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &["--bogus"][..],
        &["--secret"][..],
        &["--now", "soon", "x.y.z"][..],
        &["a.b.c", "d.e.f"][..],
    ] {
        let (code, _, err) = run(args, "", NOW);
        assert_eq!(code, 2, "{args:?}");
        assert!(err.contains("usage: inspect"), "{err}");
    }
    let (code, _, err) = run(&[], "  \n", NOW);
    assert_eq!(code, 2);
    assert!(err.contains("no token"), "{err}");
    let (code, out, _) = run(&["--help"], "", NOW);
    assert_eq!((code, out.starts_with("usage: inspect")), (0, true));
}

#[test]
fn utc_times_are_rfc_3339() {
    // Through the program's output, at known instants.
    for (unix, iso) in [
        (0, "1970-01-01T00:00:00Z"),
        (951_782_400, "2000-02-29T00:00:00Z"),
        (1_700_000_000, "2023-11-14T22:13:20Z"),
        (253_402_300_799, "9999-12-31T23:59:59Z"),
    ] {
        let (_, out, _) = run(&[&sign(&good_header(), &good_claims())], "", unix);
        assert!(
            out.contains(&format!("now         {iso} (unix {unix})")),
            "{out}"
        );
    }
}

/// The example program as cargo builds it.
fn program() -> PathBuf {
    crate::examples_support::built_example("inspect")
}

#[test]
fn the_built_program_exits_0_1_and_2() {
    let v = vector("ttl_86400");
    let jwt = v["token"].as_str().unwrap();
    let now = v["now"].to_string();
    let status = |args: &[&str]| {
        let out = Command::new(program()).args(args).output().unwrap();
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert!(!stdout.contains(signature_of(jwt)));
        (out.status.code().unwrap(), stdout)
    };
    let (code, out) = status(&["--now", &now, "--secret", SECRET, jwt]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("lifetime    24 h 0 min"), "{out}");
    // With the real clock every fixed vector has long expired.
    let (code, out) = status(&[jwt]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("(Twilio error 20104)"), "{out}");
    assert_eq!(status(&["--nope"]).0, 2);
}
