//! Inputs from fuzzing `AccessToken::parse`/`verify` and the builder (see fuzz/README.md), kept as
//! ordinary tests: nasty JSON (deep nesting, huge numbers, long unicode, broken surrogate escapes),
//! the 16 KiB boundary, and anything the fuzzers found.

use crate::token_support::*;
use access_manager::{AccessToken, TokenError, MAX_TOKEN_LEN};
use std::time::{Duration, UNIX_EPOCH};

const HEADER: &str = r#"{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}"#;
const TIMES: &str = r#""iat":1700000000,"exp":1700003600"#;

/// Claims JSON with these `grants` and time claims (both raw JSON text).
fn claims(grants: &str, times: &str) -> String {
    format!(
        r#"{{"jti":"{API_KEY_SID}-{NOW}","grants":{grants},{times},"iss":"{API_KEY_SID}","sub":"{ACCOUNT_SID}"}}"#
    )
}

fn token(grants: &str, times: &str) -> String {
    sign_raw(HEADER, &claims(grants, times))
}

/// Everything a caller might do with a parsed token, none of which may panic.
fn exercise(t: &AccessToken) {
    let _ = (t.identity(), t.account_sid(), t.api_key_sid(), t.region());
    let _ = (
        t.expires_at(),
        t.not_before(),
        t.issued_at(),
        t.unsigned_part(),
    );
    serde_json::to_string(t.grants()).unwrap();
    let sig = t.as_str().rsplit('.').next().unwrap();
    assert!(!t.to_string().contains(sig) && !format!("{t:?}").contains(sig));
    let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
    for now in [
        UNIX_EPOCH - Duration::from_secs(1),
        UNIX_EPOCH,
        at(NOW),
        far,
    ] {
        let _ = t.validate_at(now);
        let _ = t.remaining_at(now);
    }
}

fn parse_code(jwt: &str) -> Result<(), u32> {
    AccessToken::parse(jwt)
        .map(|t| exercise(&t))
        .map_err(|e| e.code())
}

fn nest(open: &str, close: &str, depth: usize) -> String {
    format!("{}1{}", open.repeat(depth), close.repeat(depth))
}

// ---- deep nesting -------------------------------------------------------------------------------

#[test]
fn deep_nesting_in_a_read_grant_is_refused_without_overflowing_the_stack() {
    // serde_json stops at 128 levels when building values: an unknown grant, the playback grant and
    // voice params are built, so deep ones are a grants error (20106), never a stack overflow.
    // (Capturing `grants` as raw JSON has no depth limit, so this is the first place that counts.)
    for depth in [127, 200, 1000, 5000] {
        for grants in [
            format!(r#"{{"identity":"a","rtc":{}}}"#, nest("[", "]", depth)),
            format!(
                r#"{{"identity":"a","player":{}}}"#,
                nest(r#"{"a":"#, "}", depth.min(1500))
            ),
            format!(
                r#"{{"voice":{{"outgoing":{{"application_sid":"AP1","params":{}}}}}}}"#,
                nest("[", "]", depth)
            ),
        ] {
            let jwt = token(&grants, TIMES);
            assert!(jwt.len() <= MAX_TOKEN_LEN, "{}", jwt.len());
            assert_eq!(parse_code(&jwt), Err(20106), "depth {depth}");
        }
    }
}

#[test]
fn nesting_within_serde_jsons_limit_reads_back() {
    let grants = format!(r#"{{"identity":"a","rtc":{}}}"#, nest("[", "]", 125));
    let t = AccessToken::parse(&token(&grants, TIMES)).unwrap();
    exercise(&t);
    assert!(serde_json::to_string(t.grants())
        .unwrap()
        .contains(&nest("[", "]", 125)));
}

#[test]
fn deep_nesting_in_claims_and_header_nobody_reads() {
    // Skipped claims and header fields are only scanned (serde_json skips them without recursing,
    // and without its 128-level limit): deep nesting there is accepted, and must not overflow the
    // stack. The answer is pinned so that a change is noticed.
    let deep = nest("[", "]", 5000);
    let jwt = token(r#"{"identity":"a"}"#, &format!(r#"{TIMES},"x":{deep}"#));
    let claims_answer = parse_code(&jwt);
    let header = format!(r#"{{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1","x":{deep}}}"#);
    let jwt = sign_raw(&header, &claims(r#"{"identity":"a"}"#, TIMES));
    let header_answer = parse_code(&jwt);
    assert_eq!(claims_answer, Ok(()));
    assert_eq!(header_answer, Ok(()));
}

// ---- huge and odd numbers -----------------------------------------------------------------------

#[test]
fn huge_expiry_numbers_are_clamped_not_overflowed() {
    let max = UNIX_EPOCH + Duration::from_secs(253_402_300_799);
    for exp in [
        "1e400",
        "18446744073709551615",
        "18446744073709551616",
        "1.8446744073709552e19",
        "1e19",
        &format!("1{}", "0".repeat(400)),
        "253402300800",
    ] {
        let jwt = token(
            r#"{"identity":"a"}"#,
            &format!(r#""iat":1700000000,"exp":{exp}"#),
        );
        let t = AccessToken::parse(&jwt).unwrap_or_else(|e| panic!("exp {exp}: {e}"));
        exercise(&t);
        assert_eq!(t.expires_at(), max, "exp {exp}");
        // Far beyond 24 h from any time before it.
        assert!(matches!(
            t.validate_at(at(NOW)),
            Err(TokenError::LifetimeTooLong { .. })
        ));
    }
}

#[test]
fn negative_zero_tiny_and_fractional_numbers() {
    let read = |exp: &str| {
        AccessToken::parse(&token(r#"{}"#, &format!(r#""iat":1700000000,"exp":{exp}"#)))
            .map(|t| t.expires_at())
            .map_err(|e| e.code())
    };
    assert_eq!(read("-0"), Ok(UNIX_EPOCH));
    assert_eq!(read("-0.0"), Ok(UNIX_EPOCH));
    assert_eq!(read("1e-400"), Ok(UNIX_EPOCH));
    assert_eq!(read("0.9999999999"), Ok(UNIX_EPOCH));
    assert_eq!(read("1700003600.999"), Ok(at(NOW + 3600)));
    assert_eq!(read("1.7000036e9"), Ok(at(NOW + 3600)));
    assert_eq!(read("-1e400"), Err(20104));
    assert_eq!(read("-1e-400"), Ok(UNIX_EPOCH)); // -0.0 after underflow: not negative
    assert_eq!(read("-9223372036854775809"), Err(20104));
    assert_eq!(read("-1"), Err(20104));
}

#[test]
fn huge_nbf_and_iat() {
    let t = AccessToken::parse(&token(
        r#"{}"#,
        r#""iat":1e400,"nbf":18446744073709551615,"exp":1e400"#,
    ))
    .unwrap();
    exercise(&t);
    assert_eq!(
        t.validate_at(at(NOW)),
        Err(TokenError::NotYetValid {
            in_secs: u64::MAX - NOW
        })
    );
    // iat after exp: a lifetime of zero, not an underflow.
    let t = AccessToken::parse(&token(r#"{}"#, r#""iat":1e400,"exp":1700003600"#)).unwrap();
    assert_eq!(t.validate_at(at(NOW)), Ok(()));
}

#[test]
fn validate_at_the_ends_of_system_time() {
    let t = AccessToken::parse(&token(r#"{}"#, TIMES)).unwrap();
    let far = UNIX_EPOCH + Duration::from_secs(i64::MAX as u64);
    assert_eq!(
        t.validate_at(far),
        Err(TokenError::Expired {
            ago_secs: i64::MAX as u64 - (NOW + 3600)
        })
    );
    assert_eq!(t.remaining_at(far), Duration::ZERO);
    assert!(matches!(
        t.validate_at(UNIX_EPOCH - Duration::from_secs(1 << 40)),
        Err(TokenError::LifetimeTooLong { .. })
    ));
}

// ---- unicode and escapes ------------------------------------------------------------------------

#[test]
fn long_unicode_identities_read_back() {
    for identity in [
        "😀".repeat(2500),
        "é\u{301}\u{202e}漢字".repeat(600),
        "\u{0}\u{1f}\u{7f}\u{feff}".repeat(500),
    ] {
        let grants = serde_json::json!({ "identity": identity }).to_string();
        let jwt = token(&grants, TIMES);
        assert!(jwt.len() <= MAX_TOKEN_LEN, "{}", jwt.len());
        let t = AccessToken::parse(&jwt).unwrap();
        exercise(&t);
        assert_eq!(t.identity(), Some(identity.as_str()));
        // Display quotes the identity, escaping control characters.
        assert!(!t.to_string().contains('\u{0}'));
    }
    // The same, spelt as escaped surrogate pairs.
    let t = AccessToken::parse(&token(
        &format!(r#"{{"identity":"{}"}}"#, r"\ud83d\ude00".repeat(800)),
        TIMES,
    ))
    .unwrap();
    assert_eq!(t.identity(), Some("😀".repeat(800).as_str()));
}

#[test]
fn invalid_surrogate_escapes_are_refused_with_the_code_of_their_place() {
    for bad in [
        r"\ud800",
        r"\udc00",
        r"\ud800\u0041",
        r"\ud800\ud800",
        r"\udfff\ud800",
        r"\ud83d",
    ] {
        // grants.identity: not a string this crate can hold.
        let jwt = token(&format!(r#"{{"identity":"{bad}"}}"#), TIMES);
        assert_eq!(parse_code(&jwt), Err(20106), "identity {bad}");
        // A known grant's field, an unknown grant's key and value.
        for grants in [
            format!(r#"{{"video":{{"room":"{bad}"}}}}"#),
            format!(r#"{{"rtc":{{"{bad}":1}}}}"#),
            format!(r#"{{"rtc":"{bad}"}}"#),
            format!(r#"{{"{bad}":{{}}}}"#),
        ] {
            assert_eq!(parse_code(&token(&grants, TIMES)), Err(20106), "{grants}");
        }
        // alg, cty, typ, twr: the header rule (20102).
        for header in [
            format!(r#"{{"alg":"{bad}","cty":"twilio-fpa;v=1"}}"#),
            format!(r#"{{"alg":"HS256","cty":"{bad}"}}"#),
            format!(r#"{{"alg":"HS256","cty":"twilio-fpa;v=1","typ":"{bad}"}}"#),
            format!(r#"{{"alg":"HS256","cty":"twilio-fpa;v=1","twr":"{bad}"}}"#),
        ] {
            let jwt = sign_raw(&header, &claims("{}", TIMES));
            assert_eq!(parse_code(&jwt), Err(20102), "{header}");
        }
        // iss / sub: 20103.
        let c = claims("{}", TIMES).replace(API_KEY_SID, &format!("SK{bad}"));
        assert_eq!(parse_code(&sign_raw(HEADER, &c)), Err(20103), "iss {bad}");
    }
}

#[test]
fn bytes_that_are_not_utf8_inside_the_json_are_malformed() {
    let mut payload = claims(r#"{"identity":"a"}"#, TIMES).into_bytes();
    let at_a = payload.windows(3).position(|w| w == br#""a""#).unwrap() + 1;
    payload[at_a] = 0xff;
    let signed = format!("{}.{}", b64(HEADER.as_bytes()), b64(&payload));
    let jwt = format!("{signed}.{}", b64(&hs256(&signed, SECRET.as_bytes())));
    assert_eq!(parse_code(&jwt), Err(20101));
}

// ---- the 16 KiB boundary ------------------------------------------------------------------------

/// A valid token of exactly `len` bytes: the identity pads the payload, a region shifts the header
/// (an unpadded base64 segment is never 1 mod 4 long).
fn token_of_len(len: usize) -> String {
    for region in 0..8 {
        let header = if region == 0 {
            HEADER.to_string()
        } else {
            format!(
                r#"{{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1","twr":"{}"}}"#,
                "r".repeat(region)
            )
        };
        let make = |pad: usize| {
            let c = claims(&format!(r#"{{"identity":"{}"}}"#, "x".repeat(pad)), TIMES);
            sign_raw(&header, &c)
        };
        // Each identity byte adds 4/3 of a char: start a little short of the target.
        let start = (len.saturating_sub(make(0).len()) * 3 / 4).saturating_sub(8);
        for pad in start..len {
            let jwt = make(pad);
            if jwt.len() == len {
                return jwt;
            }
            if jwt.len() > len {
                break;
            }
        }
    }
    panic!("no token of {len} bytes");
}

#[test]
fn sixteen_kib_is_accepted_one_byte_more_is_not() {
    let at_limit = token_of_len(MAX_TOKEN_LEN);
    let t = AccessToken::verify(&at_limit, SECRET.as_bytes(), at(NOW)).unwrap();
    exercise(&t);
    // Whitespace around it is trimmed before the size check.
    let padded = format!("\n\t {at_limit} \r\n");
    assert!(padded.len() > MAX_TOKEN_LEN);
    assert_eq!(AccessToken::parse(&padded).unwrap(), t);

    let over = token_of_len(MAX_TOKEN_LEN + 1);
    assert_eq!(parse_code(&over), Err(20101));
    assert_eq!(
        AccessToken::verify(&over, SECRET.as_bytes(), at(NOW)).map_err(|e| e.code()),
        Err(20101)
    );
}

#[test]
fn sixteen_kib_of_junk_and_a_char_across_the_limit() {
    assert_eq!(parse_code(&".".repeat(MAX_TOKEN_LEN)), Err(20101));
    assert_eq!(parse_code(&"a".repeat(MAX_TOKEN_LEN + 1)), Err(20101));
    // A multi-byte char straddling the limit: counted in bytes, never sliced.
    let s = format!("{}é", "a".repeat(MAX_TOKEN_LEN - 1));
    assert_eq!(parse_code(&s), Err(20101));
    let s = format!("{}é", "a".repeat(MAX_TOKEN_LEN - 2));
    assert_eq!(parse_code(&s), Err(20101));
}

// ---- signature segment --------------------------------------------------------------------------

#[test]
fn non_canonical_signature_encodings_are_refused() {
    let jwt = token(r#"{"identity":"a"}"#, TIMES);
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    // 43 chars carry 258 bits: the last char's low 2 bits must be zero. Flip one of them.
    let last = sig.chars().last().unwrap();
    let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let idx = alphabet.find(last).unwrap();
    let other = alphabet.chars().nth(idx ^ 1).unwrap();
    let tampered = format!("{signed}.{}{other}", &sig[..sig.len() - 1]);
    assert_eq!(parse_code(&tampered), Err(20107));
    // Padded, 33 bytes, 31 bytes, standard-alphabet characters.
    for sig in [
        format!("{sig}="),
        format!("{sig}AA"),
        sig[..sig.len() - 2].to_string(),
        sig.replace('-', "+").replace('_', "/") + "+",
    ] {
        assert_eq!(parse_code(&format!("{signed}.{sig}")), Err(20107), "{sig}");
    }
}

#[test]
fn verify_with_empty_and_long_secrets() {
    for secret in [
        &b""[..],
        &[0u8; 64][..],
        &[7u8; 65][..],
        &[0xffu8; 4096][..],
    ] {
        let signed = format!(
            "{}.{}",
            b64(HEADER.as_bytes()),
            b64(claims("{}", TIMES).as_bytes())
        );
        let jwt = format!("{signed}.{}", b64(&hs256(&signed, secret)));
        assert!(AccessToken::verify(&jwt, secret, at(NOW)).is_ok());
        let mut other = secret.to_vec();
        other.push(1);
        assert_eq!(
            AccessToken::verify(&jwt, &other, at(NOW)),
            Err(TokenError::SignatureMismatch)
        );
    }
}

// ---- found by the roundtrip fuzzer ----------------------------------------------------------------

/// `fuzz/artifacts/roundtrip/crash-370782ab…`: grant strings full of control characters (six bytes
/// each once JSON-escaped, eight once base64url-encoded) made the builder mint a 33 227-byte token,
/// which `AccessToken::parse` (like Twilio) refuses as over 16 KiB. `to_jwt` now refuses it (20101).
#[test]
fn the_builder_refuses_to_mint_a_token_over_16_kib() {
    let builder = |identity: &str| {
        AccessToken::builder(ACCOUNT_SID, API_KEY_SID, SECRET)
            .identity(identity)
            .issued_at(at(NOW))
    };
    let err = builder(&"\u{1}".repeat(4000)).to_jwt().unwrap_err();
    assert_eq!(err.code(), 20101);
    assert!(err.to_string().contains("16384-byte limit"), "{err}");

    // At the boundary: the longest identity that mints gives a token parse accepts, one more
    // character is refused by both.
    let mut n = 12_000;
    let longest = loop {
        match builder(&"x".repeat(n + 1)).to_jwt() {
            Ok(_) => n += 1,
            Err(e) => {
                assert_eq!(e.code(), 20101);
                break builder(&"x".repeat(n)).to_jwt().unwrap();
            }
        }
    };
    assert!(longest.len() <= MAX_TOKEN_LEN && longest.len() > MAX_TOKEN_LEN - 4);
    let t = AccessToken::verify(&longest, SECRET.as_bytes(), at(NOW)).unwrap();
    assert_eq!(t.identity().map(str::len), Some(n));
}
