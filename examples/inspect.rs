//! Token inspector, for people debugging a rejected token.
//!
//! ```text
//! cargo run --example inspect -- [--secret S] [--now UNIX_SECONDS] [TOKEN | -]
//! ```
//!
//! Reads a JWT from the argument (or stdin), prints who it is for, its grants, its times in UTC and
//! relative to now, and every rule it breaks with its Twilio error code. With `--secret` it also
//! checks the HS256 signature. `--now` pins the time (e.g. a vector's `now`). Never prints the
//! signature. Exit status: 0 valid, 1 not valid, 2 usage error.

use access_manager::clock::{Clock, SystemClock};
use access_manager::{AccessToken, TokenError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::Value;
use std::io::{self, Read, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const USAGE: &str = "usage: inspect [--secret S] [--now UNIX_SECONDS] [TOKEN | -]
  TOKEN        the JWT; without it (or with -) it is read from stdin
  --secret S   the API key secret: also check the HS256 signature
  --now T      judge the times at unix second T instead of the system clock";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let code = run(
        &args,
        &mut io::stdin(),
        &mut io::stdout(),
        &mut io::stderr(),
        SystemClock.now(),
    );
    std::process::exit(code);
}

struct Options {
    token: Option<String>,
    secret: Option<String>,
    now: Option<u64>,
}

fn parse_args(args: &[String]) -> Result<Option<Options>, String> {
    let mut opts = Options {
        token: None,
        secret: None,
        now: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_owned())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        match flag {
            "-h" | "--help" => return Ok(None),
            "--secret" => opts.secret = Some(value("--secret")?),
            "--now" => {
                let v = value("--now")?;
                let secs = v
                    .parse()
                    .map_err(|_| format!("--now takes unix seconds, not {v:?}"))?;
                opts.now = Some(secs);
            }
            "-" if opts.token.is_none() => opts.token = Some("-".into()),
            f if f.starts_with('-') && f.len() > 1 => return Err(format!("unknown option {f}")),
            _ if opts.token.is_none() => opts.token = Some(arg.clone()),
            _ => return Err("give one token".into()),
        }
    }
    Ok(Some(opts))
}

/// The whole program, with its inputs and outputs passed in so that tests can drive it.
pub(crate) fn run(
    args: &[String],
    stdin: &mut dyn Read,
    out: &mut dyn Write,
    err: &mut dyn Write,
    clock_now: SystemTime,
) -> i32 {
    let opts = match parse_args(args) {
        Ok(Some(opts)) => opts,
        Ok(None) => {
            let _ = writeln!(out, "{USAGE}");
            return 0;
        }
        Err(e) => {
            let _ = writeln!(err, "inspect: {e}\n{USAGE}");
            return 2;
        }
    };
    let jwt = match opts.token.as_deref() {
        Some(t) if t != "-" => t.to_owned(),
        _ => {
            let mut buf = String::new();
            if let Err(e) = stdin.read_to_string(&mut buf) {
                let _ = writeln!(err, "inspect: cannot read stdin: {e}");
                return 2;
            }
            buf
        }
    };
    if jwt.trim().is_empty() {
        let _ = writeln!(err, "inspect: no token given\n{USAGE}");
        return 2;
    }
    let now = opts
        .now
        .map_or(clock_now, |s| UNIX_EPOCH + Duration::from_secs(s));
    let report = inspect(&jwt, opts.secret.as_deref(), now);
    let _ = out.write_all(report.text.as_bytes());
    if report.valid {
        0
    } else {
        1
    }
}

struct Report {
    text: String,
    valid: bool,
}

fn inspect(jwt: &str, secret: Option<&str>, now: SystemTime) -> Report {
    let mut text = String::new();
    let now_secs = unix(now);
    line(
        &mut text,
        "now",
        &format!("{} (unix {now_secs})", rfc3339(now_secs)),
    );

    let token = match AccessToken::parse(jwt) {
        Ok(token) => token,
        Err(e) => {
            // Show what can be decoded, to help see why; never the signature segment.
            let mut segments = jwt.trim().split('.');
            for label in ["header", "payload"] {
                if let Some(json) = segments.next().and_then(decode_json) {
                    line(&mut text, label, &json);
                }
            }
            text.push_str("problems\n");
            text.push_str(&format!("  - {e}\n"));
            line(&mut text, "result", "NOT VALID: the token cannot be read");
            return Report { text, valid: false };
        }
    };

    line(&mut text, "identity", token.identity().unwrap_or("(none)"));
    line(&mut text, "account", token.account_sid());
    line(&mut text, "api key", token.api_key_sid());
    line(&mut text, "region", token.region().unwrap_or("(none)"));
    let iat = token.issued_at().map(unix);
    let nbf = token.not_before().map(unix);
    let exp = unix(token.expires_at());
    line(
        &mut text,
        "issued",
        &iat.map_or("(no iat)".into(), |t| when(t, now_secs)),
    );
    line(
        &mut text,
        "not before",
        &nbf.map_or("(no nbf)".into(), |t| when(t, now_secs)),
    );
    line(&mut text, "expires", &expiry(exp, now_secs));
    let (start, from) = match (iat, nbf) {
        (Some(t), _) => (t, "iat"),
        (None, Some(t)) => (t, "nbf"),
        (None, None) => (now_secs, "now"),
    };
    line(
        &mut text,
        "lifetime",
        &format!(
            "{} ({} s, counted from {from}; Twilio allows 24 h)",
            human(exp.saturating_sub(start)),
            exp.saturating_sub(start)
        ),
    );

    let grants = serde_json::to_value(token.grants()).unwrap_or(Value::Null);
    let kinds: Vec<String> = token.grants().kinds().map(|k| k.to_string()).collect();
    line(
        &mut text,
        "grants",
        &if kinds.is_empty() {
            "(no known grant)".to_string()
        } else {
            kinds.join(", ")
        },
    );
    for (key, grant) in grants.as_object().into_iter().flatten() {
        if key == "identity" {
            continue;
        }
        let known = !token.grants().other.contains_key(key);
        text.push_str(&format!(
            "  {key}{}\n",
            if known {
                ""
            } else {
                " (a key this crate does not know: kept as is)"
            }
        ));
        let mut fields = Vec::new();
        flatten("", grant, &mut fields);
        if fields.is_empty() {
            text.push_str("    (no fields)\n");
        }
        let width = fields
            .iter()
            .map(|(p, _)| p.chars().count())
            .max()
            .unwrap_or(0)
            + 2;
        for (path, value) in fields {
            text.push_str(&format!("    {path:<width$}{value}\n"));
        }
    }

    let mut problems: Vec<TokenError> = Vec::new();
    let signature = match secret {
        None => "not checked (pass --secret to check it)",
        Some(secret) => match AccessToken::verify(jwt, secret.as_bytes(), now) {
            Err(e @ TokenError::SignatureMismatch) => {
                problems.push(e);
                "DOES NOT MATCH the secret"
            }
            // Only the time rules come after the signature in `verify`.
            _ => "ok (HS256, matches the secret)",
        },
    };
    line(&mut text, "signature", signature);
    if let Err(e) = token.validate_at(now) {
        problems.push(e);
    }
    let valid = problems.is_empty();
    if !valid {
        text.push_str("problems\n");
        for e in &problems {
            text.push_str(&format!("  - {e}\n"));
        }
    }
    line(
        &mut text,
        "result",
        match (valid, secret.is_some()) {
            (true, true) => "VALID",
            (true, false) => "VALID (signature not checked)",
            (false, _) => "NOT VALID",
        },
    );
    Report { text, valid }
}

fn line(text: &mut String, label: &str, value: &str) {
    text.push_str(&format!("{label:<12}{value}\n"));
}

fn decode_json(segment: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(segment).ok()?;
    let value: Value = serde_json::from_slice(&bytes).ok()?;
    Some(value.to_string())
}

/// Leaf fields of a grant as `dotted.path = JSON`; arrays and scalars are leaves.
fn flatten(prefix: &str, value: &Value, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) if !map.is_empty() || prefix.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, out);
            }
        }
        Value::String(s) => out.push((prefix.to_owned(), s.clone())),
        other if prefix.is_empty() => out.push(("(value)".into(), other.to_string())),
        other => out.push((prefix.to_owned(), other.to_string())),
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn when(t: u64, now: u64) -> String {
    let rel = if t <= now {
        format!("{} ago", human(now - t))
    } else {
        format!("in {}", human(t - now))
    };
    format!("{} ({rel})", rfc3339(t))
}

fn expiry(exp: u64, now: u64) -> String {
    let rel = if exp > now {
        format!("in {}", human(exp - now))
    } else {
        format!("expired {} ago", human(now - exp))
    };
    format!("{} ({rel})", rfc3339(exp))
}

/// `42 s`, `12 min`, `3 h 5 min`, `2 days`.
fn human(s: u64) -> String {
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        _ if s < 172_800 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} days", s / 86_400),
    }
}

/// RFC 3339 in UTC from unix seconds (the proleptic Gregorian calendar, days from civil by
/// Howard Hinnant's algorithm).
fn rfc3339(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let secs = unix % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}
