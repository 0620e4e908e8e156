//! Every rule of TOKEN_FORMAT.md's "What this crate answers" table, each broken by a token made to
//! break exactly that rule, answers its Twilio code and `TokenError` variant; plus the edges around them.

use crate::token_support::*;
use access_manager::grants::{ChatGrant, VideoGrant};
use access_manager::{AccessToken, TokenError, MAX_TOKEN_LEN};
use serde_json::{json, Value};

fn parse_err(jwt: &str) -> TokenError {
    AccessToken::parse(jwt).expect_err("the token should be rejected")
}

fn valid() -> String {
    sign(&good_header(), &good_claims())
}

#[test]
fn the_untouched_helper_token_is_valid() {
    let token = AccessToken::verify(&valid(), SECRET.as_bytes(), at(NOW)).unwrap();
    assert_eq!(token.identity(), Some("alice"));
}

// Rule 1 (20101): size, segments, base64url, JSON object.
#[test]
fn rule_1_malformed_structure_is_20101() {
    let good = valid();
    let (header, rest) = good.split_once('.').unwrap();
    let (payload, sig) = rest.split_once('.').unwrap();
    let header_json = r#"{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}"#;
    let claims_json = good_claims().to_string();
    let cases: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("one segment", "notajwtatall".into()),
        ("two segments", format!("{header}.{payload}")),
        ("four segments", format!("{good}.{sig}")),
        ("header not base64url", format!("eyJ!!!.{payload}.{sig}")),
        (
            "payload not base64url",
            format!("{header}.{payload}*$.{sig}"),
        ),
        (
            "standard base64 alphabet",
            format!("{header}.+/{payload}.{sig}"),
        ),
        ("padded header", format!("{header}=.{payload}.{sig}")),
        ("whitespace inside", format!("{header}.{payload} .{sig}")),
        ("header is a JSON array", sign_raw("[1,2]", &claims_json)),
        ("header is not JSON", sign_raw("{alg:HS256}", &claims_json)),
        (
            "payload is a JSON string",
            sign_raw(header_json, "\"claims\""),
        ),
        (
            "payload has trailing text",
            sign_raw(header_json, &format!("{claims_json} x")),
        ),
        ("payload is not UTF-8", {
            let signed = format!("{header}.{}", b64(b"{\"a\":\"\xff\"}"));
            format!("{signed}.{sig}")
        }),
        (
            "duplicate claim",
            sign_raw(header_json, &claims_json.replacen('{', "{\"exp\":1,", 1)),
        ),
    ];
    for (what, jwt) in cases {
        let err = parse_err(&jwt);
        assert!(
            matches!(err, TokenError::Malformed { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20101, "{what}");
    }
}

/// Asserts that parse and verify (with the right secret) both refuse `jwt` as malformed (20101).
fn assert_malformed(what: &str, jwt: &str) {
    let err = parse_err(jwt);
    assert!(
        matches!(err, TokenError::Malformed { .. }),
        "{what}: {err:?}"
    );
    assert_eq!(err.code(), 20101, "{what}");
    let err = AccessToken::verify(jwt, SECRET.as_bytes(), at(NOW)).unwrap_err();
    assert_eq!(err.code(), 20101, "{what}: verify: {err:?}");
}

#[test]
fn rule_1_a_key_twice_in_the_grants_object_is_20101() {
    for grants in [
        r#"{"identity":"alice","identity":"mallory"}"#,
        r#"{"identity":"alice","video":{"room":"r1"},"video":{"room":"r2"}}"#,
        r#"{"identity":"alice","chat":{},"chat":{}}"#,
        r#"{"identity":"alice","player":{},"player":null}"#,
        r#"{"identity":"alice","rtc":{"a":1},"rtc":{"a":1}}"#,
        // The same key spelt with an escape.
        r#"{"identity":"alice","identit\u0079":"mallory"}"#,
    ] {
        assert_malformed(grants, &with_grants_text(grants));
    }
}

#[test]
fn rule_1_a_key_twice_inside_any_grant_is_20101() {
    for grants in [
        r#"{"chat":{"service_sid":"IS1","service_sid":"IS2"}}"#,
        r#"{"chat":{"endpoint_id":"e","x":1,"endpoint_id":"e"}}"#,
        r#"{"data_sync":{"service_sid":"IS1","service_sid":"IS2"}}"#,
        r#"{"voice":{"push_credential_sid":"CR1","push_credential_sid":"CR2"}}"#,
        r#"{"voice":{"incoming":{"allow":true},"incoming":{"allow":false}}}"#,
        r#"{"voice":{"incoming":{"allow":false,"allow":true}}}"#,
        r#"{"voice":{"outgoing":{"application_sid":"AP1","application_sid":"AP2"}}}"#,
        r#"{"voice":{"outgoing":{"application_sid":"AP1","params":{"to":"a","to":"b"}}}}"#,
        r#"{"voice":{"outgoing":{"params":[{"n":1},{"n":1,"n":2}]}}}"#,
        r#"{"video":{"room":"r1","room":"r2"}}"#,
        r#"{"video":{"r\u006fom":"r1","room":"r2"}}"#,
        r#"{"task_router":{"role":"a","role":"b"}}"#,
        r#"{"player":{"k":1,"k":2}}"#,
        r#"{"player":[[{"deep":{"k":1,"k":1}}]]}"#,
        r#"{"ip_messaging":{"service_sid":"IS1","service_sid":"IS2"}}"#,
        r#"{"rtc":{"a":{"b":{"c":{"d":1,"d":1}}}}}"#,
        r#"{"rtc":{"a":"x","A":"y","a":"z"}}"#,
    ] {
        assert_malformed(grants, &with_grants_text(grants));
    }
}

#[test]
fn rule_1_a_key_twice_anywhere_in_the_header_or_the_claims_is_20101() {
    let header = good_header().to_string();
    let claims = good_claims().to_string();
    let cases = [
        (
            "header alg twice, same value",
            sign_raw(&header.replacen('{', r#"{"alg":"HS256","#, 1), &claims),
        ),
        (
            "header unknown key twice",
            sign_raw(
                &header.replacen('{', r#"{"kid":"a","kid":"b","#, 1),
                &claims,
            ),
        ),
        (
            "header key twice in a nested object",
            sign_raw(
                &header.replacen('{', r#"{"x5":{"a":[{"b":1,"b":1}]},"#, 1),
                &claims,
            ),
        ),
        (
            "unknown claim twice",
            sign_raw(&header, &claims.replacen('{', r#"{"jti":"a","#, 1)),
        ),
        (
            "key twice in an unknown claim's object",
            sign_raw(
                &header,
                &claims.replacen('{', r#"{"ext":{"k":[1],"k":[1]},"#, 1),
            ),
        ),
    ];
    for (what, jwt) in cases {
        assert_malformed(what, &jwt);
    }
}

#[test]
fn a_key_twice_is_reported_before_any_later_rule() {
    // A bad `alg` (rule 2) and a bad `iss` (rule 4) too: the repeated grant key wins.
    let claims = good_claims()
        .to_string()
        .replace(
            r#"{"identity":"alice","video":{"room":"r1"}}"#,
            r#"{"video":{"room":"a","room":"b"}}"#,
        )
        .replace(API_KEY_SID, ACCOUNT_SID);
    let jwt = sign_raw(r#"{"alg":"HS512","cty":"twilio-fpa;v=1"}"#, &claims);
    let err = parse_err(&jwt);
    assert!(matches!(err, TokenError::Malformed { .. }), "{err:?}");
    assert!(err.to_string().contains("twice"), "{err}");
}

#[test]
fn the_same_key_in_different_objects_is_not_a_duplicate() {
    let grants = r#"{"identity":"alice","chat":{"service_sid":"IS1","endpoint_id":"e"},
        "data_sync":{"service_sid":"IS2","endpoint_id":"e"},"video":{"room":"r"},
        "voice":{"outgoing":{"application_sid":"AP1","params":{"room":"r","a":{"room":"r"}}}},
        "rtc":{"room":"r","ROOM":"r","room ":"r"}}"#;
    let token = AccessToken::verify(&with_grants_text(grants), SECRET.as_bytes(), at(NOW)).unwrap();
    assert_eq!(token.identity(), Some("alice"));
    assert_eq!(token.grants().other["rtc"].as_object().unwrap().len(), 3);
}

#[test]
fn an_object_with_many_keys_is_checked_whole() {
    // Enough keys that a check of neighbours only, or of the first few, would miss the repeat.
    let keys: Vec<String> = (0..600).map(|i| format!(r#""k{i}":{i}"#)).collect();
    let distinct = format!(r#"{{"identity":"alice","rtc":{{{}}}}}"#, keys.join(","));
    let token = AccessToken::parse(&with_grants_text(&distinct)).unwrap();
    assert_eq!(token.grants().other["rtc"].as_object().unwrap().len(), 600);
    for repeated in ["k0", "k299", "k599"] {
        let grants = format!(
            r#"{{"identity":"alice","rtc":{{{},"{repeated}":0,"k600":0}}}}"#,
            keys.join(",")
        );
        assert_malformed(repeated, &with_grants_text(&grants));
    }
}

#[test]
fn a_token_over_16_kib_is_20101_and_one_at_the_limit_parses() {
    let token_of = |identity_len: usize| {
        with_claims(|c| c["grants"]["identity"] = json!("x".repeat(identity_len)))
    };
    let base = token_of(0).len();
    let (mut largest_ok, mut smallest_rejected) = (0, usize::MAX);
    // Base64 grows by 1 or 2 characters a byte; walk across the limit.
    let first = (MAX_TOKEN_LEN - base) * 3 / 4 - 8;
    for n in first..first + 16 {
        let jwt = token_of(n);
        match AccessToken::parse(&jwt) {
            Ok(_) => largest_ok = largest_ok.max(jwt.len()),
            Err(e) => {
                assert!(matches!(e, TokenError::Malformed { .. }), "{e:?}");
                assert_eq!(e.code(), 20101);
                assert!(e.to_string().contains("16384-byte limit"), "{e}");
                smallest_rejected = smallest_rejected.min(jwt.len());
            }
        }
    }
    assert!(
        (MAX_TOKEN_LEN - 2..=MAX_TOKEN_LEN).contains(&largest_ok),
        "{largest_ok}"
    );
    assert!(smallest_rejected > MAX_TOKEN_LEN && smallest_rejected <= MAX_TOKEN_LEN + 2);
    // Surrounding whitespace does not count towards the limit.
    let at_limit = (first..first + 16)
        .map(token_of)
        .find(|t| t.len() == largest_ok)
        .unwrap();
    assert!(AccessToken::parse(&format!("\n{}\n", at_limit)).is_ok());
    assert!(AccessToken::parse(&format!("{}{}", " ".repeat(100), at_limit)).is_ok());
}

// Rule 2 (20102): Twilio's header.
#[test]
fn rule_2_a_header_that_is_not_twilios_is_20102() {
    let cases: Vec<(&str, String)> = vec![
        (
            "alg HS384",
            with_header(|h| drop(h.insert("alg".into(), json!("HS384")))),
        ),
        (
            "alg none",
            with_header(|h| drop(h.insert("alg".into(), json!("none")))),
        ),
        (
            "alg lowercase",
            with_header(|h| drop(h.insert("alg".into(), json!("hs256")))),
        ),
        (
            "alg a number",
            with_header(|h| drop(h.insert("alg".into(), json!(256)))),
        ),
        ("alg missing", with_header(|h| drop(h.remove("alg")))),
        ("cty missing", with_header(|h| drop(h.remove("cty")))),
        (
            "cty v2",
            with_header(|h| drop(h.insert("cty".into(), json!("twilio-fpa;v=2")))),
        ),
        (
            "cty null",
            with_header(|h| drop(h.insert("cty".into(), Value::Null))),
        ),
        (
            "typ jwt",
            with_header(|h| drop(h.insert("typ".into(), json!("jwt")))),
        ),
        (
            "typ null",
            with_header(|h| drop(h.insert("typ".into(), Value::Null))),
        ),
        (
            "twr not a string",
            with_header(|h| drop(h.insert("twr".into(), json!(1)))),
        ),
    ];
    for (what, jwt) in cases {
        let err = parse_err(&jwt);
        assert!(
            matches!(err, TokenError::InvalidHeader { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20102, "{what}");
    }
    // `typ` is optional.
    assert!(AccessToken::parse(&with_header(|h| drop(h.remove("typ")))).is_ok());
}

// Rule 3 (20107): the signature's shape.
#[test]
fn rule_3_a_signature_that_is_not_32_bytes_of_base64url_is_20107() {
    let good = valid();
    let (signed, sig) = good.rsplit_once('.').unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("empty", format!("{signed}.")),
        ("31 bytes", format!("{signed}.{}", b64(&[7; 31]))),
        ("33 bytes", format!("{signed}.{}", b64(&[7; 33]))),
        ("64 bytes (HS512)", format!("{signed}.{}", b64(&[7; 64]))),
        ("padded", format!("{signed}.{sig}=")),
        ("not base64url", format!("{signed}.{}!", &sig[1..])),
        ("non-canonical last character", {
            // 43 characters hold 258 bits; a set low bit in the last character is not canonical.
            let mut s = sig.to_string();
            let last = s.pop().unwrap();
            let flipped = if "AEIMQUYcgkosw048".contains(last) {
                'B'
            } else {
                'A'
            };
            format!("{signed}.{s}{flipped}")
        }),
    ];
    for (what, jwt) in cases {
        let err = parse_err(&jwt);
        assert!(
            matches!(err, TokenError::MalformedSignature { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20107, "{what}");
    }
}

// Rule 4 (20103): issuer and subject.
#[test]
fn rule_4_an_issuer_or_subject_that_is_not_a_twilio_sid_is_20103() {
    let cases: Vec<(&str, String)> = vec![
        ("iss missing", with_claims(|c| drop(c.remove("iss")))),
        (
            "iss an account SID",
            with_claims(|c| drop(c.insert("iss".into(), json!(ACCOUNT_SID)))),
        ),
        (
            "iss a number",
            with_claims(|c| drop(c.insert("iss".into(), json!(42)))),
        ),
        (
            "iss lowercase sk",
            with_claims(|c| drop(c.insert("iss".into(), json!("sk123")))),
        ),
        ("sub missing", with_claims(|c| drop(c.remove("sub")))),
        (
            "sub an API key SID",
            with_claims(|c| drop(c.insert("sub".into(), json!(API_KEY_SID)))),
        ),
        (
            "sub null",
            with_claims(|c| drop(c.insert("sub".into(), Value::Null))),
        ),
    ];
    for (what, jwt) in cases {
        let err = parse_err(&jwt);
        assert!(
            matches!(err, TokenError::InvalidIssuer { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20103, "{what}");
    }
}

// Rule 5 (20104): the expiry claim.
#[test]
fn rule_5_a_missing_or_non_numeric_or_negative_exp_is_20104() {
    let cases: Vec<(&str, String)> = vec![
        ("missing", with_claims(|c| drop(c.remove("exp")))),
        (
            "a string",
            with_claims(|c| drop(c.insert("exp".into(), json!("1700003600")))),
        ),
        (
            "null",
            with_claims(|c| drop(c.insert("exp".into(), Value::Null))),
        ),
        (
            "a bool",
            with_claims(|c| drop(c.insert("exp".into(), json!(true)))),
        ),
        (
            "negative",
            with_claims(|c| drop(c.insert("exp".into(), json!(-1)))),
        ),
        (
            "negative fraction",
            with_claims(|c| drop(c.insert("exp".into(), json!(-0.5)))),
        ),
    ];
    for (what, jwt) in cases {
        let err = parse_err(&jwt);
        assert!(
            matches!(err, TokenError::InvalidExpiry { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20104, "{what}");
    }
}

// Rule 6 (20101): nbf and iat.
#[test]
fn rule_6_an_nbf_or_iat_that_is_not_a_non_negative_number_is_20101() {
    let cases: Vec<(&str, String)> = vec![
        (
            "nbf a string",
            with_claims(|c| drop(c.insert("nbf".into(), json!("now")))),
        ),
        (
            "nbf negative",
            with_claims(|c| drop(c.insert("nbf".into(), json!(-1)))),
        ),
        (
            "nbf null",
            with_claims(|c| drop(c.insert("nbf".into(), Value::Null))),
        ),
        (
            "nbf an object",
            with_claims(|c| drop(c.insert("nbf".into(), json!({})))),
        ),
        (
            "iat a string",
            with_claims(|c| drop(c.insert("iat".into(), json!("1700000000")))),
        ),
        (
            "iat negative",
            with_claims(|c| drop(c.insert("iat".into(), json!(-5)))),
        ),
        (
            "iat null",
            with_claims(|c| drop(c.insert("iat".into(), Value::Null))),
        ),
    ];
    for (what, jwt) in cases {
        let err = parse_err(&jwt);
        assert!(
            matches!(err, TokenError::InvalidTimeClaim { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20101, "{what}");
    }
}

// Rule 7 (20106): grants.
#[test]
fn rule_7_missing_or_non_object_grants_or_a_non_string_identity_is_20106() {
    let cases: Vec<(&str, String)> = vec![
        ("missing", with_claims(|c| drop(c.remove("grants")))),
        (
            "null",
            with_claims(|c| drop(c.insert("grants".into(), Value::Null))),
        ),
        (
            "an array",
            with_claims(|c| drop(c.insert("grants".into(), json!([])))),
        ),
        (
            "a string",
            with_claims(|c| drop(c.insert("grants".into(), json!("chat")))),
        ),
        (
            "identity a number",
            with_claims(|c| c["grants"]["identity"] = json!(42)),
        ),
        (
            "identity null",
            with_claims(|c| c["grants"]["identity"] = Value::Null),
        ),
        (
            "identity an object",
            with_claims(|c| c["grants"]["identity"] = json!({"name": "a"})),
        ),
    ];
    for (what, jwt) in cases {
        let err = parse_err(&jwt);
        assert!(
            matches!(err, TokenError::InvalidGrants { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20106, "{what}");
    }
}

#[test]
fn parse_stops_at_the_first_broken_rule_in_table_order() {
    // Breaks rules 2, 4 and 7: the header wins.
    let mut header = good_header();
    header["alg"] = json!("HS512");
    let mut claims = good_claims();
    claims["iss"] = json!(ACCOUNT_SID);
    claims["grants"] = json!([]);
    assert_eq!(parse_err(&sign(&header, &claims)).code(), 20102);
    // Breaks rules 5 and 6: the expiry wins.
    let jwt = with_claims(|c| {
        c.insert("exp".into(), json!("soon"));
        c.insert("nbf".into(), json!("now"));
    });
    assert!(matches!(parse_err(&jwt), TokenError::InvalidExpiry { .. }));
    // A broken signature shape comes before the claims.
    let bad_claims = sign(&good_header(), &claims);
    let (signed, _) = bad_claims.rsplit_once('.').unwrap();
    let jwt = format!("{signed}.{}", b64(&[0; 16]));
    assert!(matches!(
        parse_err(&jwt),
        TokenError::MalformedSignature { .. }
    ));
}

// verify (20107): the HMAC.
#[test]
fn verify_a_signature_made_with_another_secret_is_20107() {
    let jwt = valid();
    let err = AccessToken::verify(&jwt, b"another secret", at(NOW)).unwrap_err();
    assert_eq!(err, TokenError::SignatureMismatch);
    assert_eq!(err.code(), 20107);
    // The same token parses: the client side cannot know.
    assert!(AccessToken::parse(&jwt).is_ok());
}

#[test]
fn verify_a_payload_changed_after_signing_is_20107() {
    let jwt = valid();
    let (header, rest) = jwt.split_once('.').unwrap();
    let (_, sig) = rest.split_once('.').unwrap();
    let mut claims = good_claims();
    claims["grants"]["identity"] = json!("mallory");
    let forged = format!("{header}.{}.{sig}", b64(claims.to_string().as_bytes()));
    assert_eq!(
        AccessToken::parse(&forged).unwrap().identity(),
        Some("mallory")
    );
    let err = AccessToken::verify(&forged, SECRET.as_bytes(), at(NOW)).unwrap_err();
    assert_eq!(err, TokenError::SignatureMismatch);
}

#[test]
fn verify_checks_the_signature_before_the_time() {
    let expired = with_claims(|c| drop(c.insert("exp".into(), json!(NOW - 1))));
    let err = AccessToken::verify(&expired, b"wrong", at(NOW)).unwrap_err();
    assert_eq!(err, TokenError::SignatureMismatch);
    let err = AccessToken::verify(&expired, SECRET.as_bytes(), at(NOW)).unwrap_err();
    assert_eq!(err, TokenError::Expired { ago_secs: 1 });
}

// At `now` (20104): expiry.
#[test]
fn at_now_a_token_past_its_exp_is_expired_20104() {
    let token = AccessToken::parse(&valid()).unwrap();
    let err = token.validate_at(at(NOW + 3600 + 12)).unwrap_err();
    assert_eq!(err, TokenError::Expired { ago_secs: 12 });
    assert_eq!(err.code(), 20104);
    assert!(token.validate_at(at(NOW + 3599)).is_ok());
}

#[test]
fn a_token_whose_exp_is_now_is_expired() {
    let token = AccessToken::parse(&valid()).unwrap();
    let err = token.validate_at(at(NOW + 3600)).unwrap_err();
    assert_eq!(err, TokenError::Expired { ago_secs: 0 });
    assert_eq!(err.code(), 20104);
}

#[test]
fn a_fractional_exp_is_truncated_to_whole_seconds() {
    let jwt = with_claims(|c| drop(c.insert("exp".into(), json!(NOW as f64 + 100.9))));
    let token = AccessToken::parse(&jwt).unwrap();
    assert_eq!(token.expires_at(), at(NOW + 100));
    assert!(token.validate_at(at(NOW + 99)).is_ok());
    assert_eq!(
        token.validate_at(at(NOW + 100)),
        Err(TokenError::Expired { ago_secs: 0 })
    );
    // Fractional nbf and iat too.
    let jwt = with_claims(|c| {
        c.insert("nbf".into(), json!(NOW as f64 + 0.75));
        c.insert("iat".into(), json!(NOW as f64 + 0.5));
    });
    let token = AccessToken::parse(&jwt).unwrap();
    assert_eq!(token.not_before(), Some(at(NOW)));
    assert_eq!(token.issued_at(), Some(at(NOW)));
}

// At `now` (20105): not before.
#[test]
fn at_now_a_token_before_its_nbf_is_not_yet_valid_20105() {
    let jwt = with_claims(|c| drop(c.insert("nbf".into(), json!(NOW + 600))));
    let token = AccessToken::parse(&jwt).unwrap();
    let err = token.validate_at(at(NOW)).unwrap_err();
    assert_eq!(err, TokenError::NotYetValid { in_secs: 600 });
    assert_eq!(err.code(), 20105);
    // nbf == now is valid.
    assert!(token.validate_at(at(NOW + 600)).is_ok());
}

// At `now` (20157): the 24 h cap.
#[test]
fn at_now_a_lifetime_over_24_h_counted_from_iat_is_20157() {
    let jwt = with_claims(|c| drop(c.insert("exp".into(), json!(NOW + 86_401))));
    let token = AccessToken::parse(&jwt).unwrap();
    // Even an hour later, when less than 24 h remain, the lifetime counts from iat.
    let err = token.validate_at(at(NOW + 3600)).unwrap_err();
    assert_eq!(
        err,
        TokenError::LifetimeTooLong {
            lifetime_secs: 86_401
        }
    );
    assert_eq!(err.code(), 20157);
    let exactly_24h = with_claims(|c| drop(c.insert("exp".into(), json!(NOW + 86_400))));
    assert!(AccessToken::parse(&exactly_24h)
        .unwrap()
        .validate_at(at(NOW))
        .is_ok());
}

#[test]
fn without_iat_the_lifetime_counts_from_nbf() {
    let jwt = with_claims(|c| {
        c.remove("iat");
        c.insert("nbf".into(), json!(NOW - 100));
        c.insert("exp".into(), json!(NOW - 100 + 86_401));
    });
    let token = AccessToken::parse(&jwt).unwrap();
    assert_eq!(
        token.validate_at(at(NOW)),
        Err(TokenError::LifetimeTooLong {
            lifetime_secs: 86_401
        })
    );
    let jwt = with_claims(|c| {
        c.remove("iat");
        c.insert("nbf".into(), json!(NOW - 100));
        c.insert("exp".into(), json!(NOW - 100 + 86_400));
    });
    assert!(AccessToken::parse(&jwt)
        .unwrap()
        .validate_at(at(NOW))
        .is_ok());
}

#[test]
fn without_iat_or_nbf_the_lifetime_counts_from_now() {
    let jwt = with_claims(|c| {
        c.remove("iat");
        c.insert("exp".into(), json!(NOW + 86_400));
    });
    let token = AccessToken::parse(&jwt).unwrap();
    assert!(token.validate_at(at(NOW)).is_ok());
    assert_eq!(
        token.validate_at(at(NOW - 1)),
        Err(TokenError::LifetimeTooLong {
            lifetime_secs: 86_401
        })
    );
}

#[test]
fn iat_takes_precedence_over_nbf_for_the_lifetime() {
    // From nbf the lifetime would be 24 h + 100 s; from iat it is 24 h.
    let jwt = with_claims(|c| {
        c.insert("nbf".into(), json!(NOW - 100));
        c.insert("exp".into(), json!(NOW + 86_400));
    });
    assert!(AccessToken::parse(&jwt)
        .unwrap()
        .validate_at(at(NOW))
        .is_ok());
}

#[test]
fn more_than_24_h_left_at_now_is_20157_even_with_a_short_iat_lifetime() {
    // An iat in the future (a skewed server clock): 24 h from iat, but 24 h + 1 h from now.
    let jwt = with_claims(|c| {
        c.insert("iat".into(), json!(NOW + 3600));
        c.insert("exp".into(), json!(NOW + 3600 + 86_400));
    });
    let err = AccessToken::parse(&jwt)
        .unwrap()
        .validate_at(at(NOW))
        .unwrap_err();
    assert_eq!(
        err,
        TokenError::LifetimeTooLong {
            lifetime_secs: 90_000
        }
    );
    assert_eq!(err.code(), 20157);
}

#[test]
fn a_huge_exp_is_20157_and_never_panics() {
    let year_9999 = 253_402_300_799_u64;
    let cases: Vec<(&str, Value)> = vec![
        ("1e300", json!(1e300)),
        ("year 9999", json!(year_9999)),
        ("u64::MAX", json!(u64::MAX)),
        (
            "beyond u64",
            serde_json::from_str("99999999999999999999999").unwrap(),
        ),
    ];
    for (what, exp) in cases {
        let jwt = with_claims(|c| drop(c.insert("exp".into(), exp)));
        let token = AccessToken::parse(&jwt).unwrap_or_else(|e| panic!("{what}: {e}"));
        let err = token.validate_at(at(NOW)).unwrap_err();
        assert!(
            matches!(err, TokenError::LifetimeTooLong { .. }),
            "{what}: {err:?}"
        );
        assert_eq!(err.code(), 20157, "{what}");
        assert_eq!(
            token.expires_at(),
            at(year_9999),
            "{what}: clamped to the last representable second"
        );
        let _ = (
            token.to_string(),
            format!("{token:?}"),
            token.remaining_at(at(NOW)),
        );
        assert_eq!(
            AccessToken::verify(&jwt, SECRET.as_bytes(), at(NOW))
                .unwrap_err()
                .code(),
            20157
        );
    }
    // A number beyond f64 is still a number, only later.
    let header = good_header().to_string();
    let claims = good_claims()
        .to_string()
        .replace(&format!("\"exp\":{}", NOW + 3600), "\"exp\":1e400");
    let token = AccessToken::parse(&sign_raw(&header, &claims)).unwrap();
    assert_eq!(token.validate_at(at(NOW)).unwrap_err().code(), 20157);
    // A huge iat or nbf does not overflow either.
    let jwt = with_claims(|c| {
        c.insert("iat".into(), json!(1e300));
        c.insert("nbf".into(), json!(1e300));
    });
    let err = AccessToken::parse(&jwt)
        .unwrap()
        .validate_at(at(NOW))
        .unwrap_err();
    assert!(matches!(err, TokenError::NotYetValid { .. }), "{err:?}");
}

#[test]
fn surrounding_ascii_whitespace_is_trimmed() {
    let jwt = valid();
    for padded in [
        format!("{jwt}\n"),
        format!("\r\n{jwt}\r\n"),
        format!(" \t{jwt} \x0c"),
    ] {
        let token = AccessToken::parse(&padded).unwrap();
        assert_eq!(token.as_str(), jwt, "as_str is the trimmed text");
        assert!(AccessToken::verify(&padded, SECRET.as_bytes(), at(NOW)).is_ok());
        assert_eq!(token, AccessToken::parse(&jwt).unwrap());
    }
    // Only ASCII whitespace: a no-break space is part of the text.
    assert_eq!(parse_err(&format!("{jwt}\u{a0}")).code(), 20107);
}

#[test]
fn unknown_and_legacy_grant_keys_survive_parse_and_reserialisation_in_order() {
    let grants = r#"{"identity":"alice","chat":{"service_sid":"IS00000000000000000000000000000001"},"video":{"room":"r1"},"ip_messaging":{"service_sid":"IS00000000000000000000000000000009","endpoint_id":"legacy"},"rtc":{"configuration_profile_sid":"VS00000000000000000000000000000001"},"foo":[1,{"z":null,"a":true},"x"],"bar":null}"#;
    let claims = good_claims()
        .to_string()
        .replace(r#"{"identity":"alice","video":{"room":"r1"}}"#, grants);
    assert!(claims.contains("ip_messaging"), "the grants were replaced");
    let token = AccessToken::parse(&sign_raw(&good_header().to_string(), &claims)).unwrap();
    let back = serde_json::to_value(token.grants()).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), grants);
    let keys: Vec<&str> = back
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "identity",
            "chat",
            "video",
            "ip_messaging",
            "rtc",
            "foo",
            "bar"
        ]
    );
    let other: Vec<&str> = token.grants().other.keys().map(String::as_str).collect();
    assert_eq!(other, ["ip_messaging", "rtc", "foo", "bar"]);
    assert_eq!(
        token.grants().kinds().count(),
        2,
        "legacy keys are not grants of a known kind"
    );
}

#[test]
fn debug_and_display_of_a_token_never_show_its_signature() {
    for v in vectors()["valid"].as_array().unwrap() {
        let Ok(token) = AccessToken::parse(v["token"].as_str().unwrap()) else {
            continue;
        };
        let sig = token.as_str().rsplit('.').next().unwrap();
        for shown in [
            format!("{token:?}"),
            format!("{token:#?}"),
            token.to_string(),
        ] {
            assert!(!shown.contains(sig), "{shown}");
            assert!(!shown.contains(&sig[..16]), "{shown}");
        }
        assert!(!token.unsigned_part().contains(sig));
    }
    let token = AccessToken::parse(&valid()).unwrap();
    let debug = format!("{token:?}");
    assert!(
        debug.contains("alice") && debug.contains("Video"),
        "{debug}"
    );
    assert!(token.to_string().contains("alice"));
}

#[test]
fn debug_of_the_builder_never_shows_the_secret() {
    let builder = AccessToken::builder(ACCOUNT_SID, API_KEY_SID, SECRET)
        .identity("alice")
        .grant(ChatGrant::default())
        .grant(VideoGrant::default());
    for shown in [format!("{builder:?}"), format!("{builder:#?}")] {
        assert!(!shown.contains(SECRET), "{shown}");
        assert!(!shown.contains(&SECRET[..12]), "{shown}");
        assert!(
            shown.contains("redacted") && shown.contains("alice"),
            "{shown}"
        );
    }
    // Nor in its bytes' Debug form.
    let bytes = format!("{:?}", SECRET.as_bytes());
    assert!(!format!("{builder:?}").contains(&bytes[1..20]));
}

#[test]
fn error_messages_are_short_name_the_twilio_code_and_never_hold_the_signature() {
    let token = AccessToken::parse(&valid()).unwrap();
    assert_eq!(
        token.validate_at(at(NOW + 3612)).unwrap_err().to_string(),
        "token expired 12 s ago (Twilio error 20104)"
    );
    assert_eq!(
        token
            .validate_at(at(NOW + 3600 + 3 * 60))
            .unwrap_err()
            .to_string(),
        "token expired 3 min ago (Twilio error 20104)"
    );
    let future = AccessToken::parse(&with_claims(|c| {
        drop(c.insert("nbf".into(), json!(NOW + 600)))
    }));
    assert_eq!(
        future
            .unwrap()
            .validate_at(at(NOW))
            .unwrap_err()
            .to_string(),
        "token not valid for another 10 min (Twilio error 20105)"
    );
    let long = AccessToken::parse(&with_claims(|c| {
        drop(c.insert("exp".into(), json!(NOW + 90_000)))
    }));
    assert_eq!(
        long.unwrap().validate_at(at(NOW)).unwrap_err().to_string(),
        "token lifetime of 25 h 0 min exceeds the 24 h maximum (Twilio error 20157)"
    );
    assert_eq!(
        AccessToken::verify(&valid(), b"nope", at(NOW))
            .unwrap_err()
            .to_string(),
        "signature does not match the secret (Twilio error 20107)"
    );
    assert_eq!(
        parse_err("a.b").to_string(),
        "malformed token: a JWT has three '.'-separated segments (Twilio error 20101)"
    );
    assert_eq!(
        parse_err(&with_header(|h| drop(
            h.insert("alg".into(), json!("none"))
        )))
        .to_string(),
        "unsupported token header: alg is \"none\", Twilio requires \"HS256\" (Twilio error 20102)"
    );
    // Every parse error names its code, and none repeats the signature it was given.
    let jwt = valid();
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let broken = [
        format!("{signed}.{sig}x"),
        format!("{signed}.{sig}{sig}"),
        format!("{sig}.{signed}"),
        format!("{sig}.{sig}.{sig}"),
    ];
    for jwt in broken {
        let err = parse_err(&jwt);
        let msg = err.to_string();
        assert!(
            msg.ends_with(&format!("(Twilio error {})", err.code())),
            "{msg}"
        );
        assert!(!msg.contains(&sig[..10]), "{msg}");
        assert!(msg.len() < 120, "{msg}");
    }
}

#[test]
fn header_strings_are_compared_as_json_not_as_text() {
    // `\u0032` is "2": the same JSON string "HS256", spelt with escapes.
    let header = r#"{"alg":"HS\u0032\u00356","typ":"J\u0057T","cty":"twilio-fpa;v\u003d1"}"#;
    let jwt = sign_raw(header, &good_claims().to_string());
    assert!(AccessToken::verify(&jwt, SECRET.as_bytes(), at(NOW)).is_ok());
    let header = r#"{"alg":"HS\u0032\u00357","cty":"twilio-fpa;v=1"}"#;
    let jwt = sign_raw(header, &good_claims().to_string());
    assert_eq!(parse_err(&jwt).code(), 20102);
}
