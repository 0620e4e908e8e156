//! Parsing checks the grants but keeps only the identity and the kinds; `grants()` builds them on
//! first use. The lazy path answers exactly what building them at parse time answered.

use crate::token_support::*;
use access_manager::grants::GrantKind;
use access_manager::{AccessToken, Grants, TokenError};
use proptest::prelude::*;
use serde_json::{json, Value};

/// The grants of a token's payload, built eagerly with `Grants`' own deserialiser.
fn eager_grants(jwt: &str) -> Grants {
    let claims = decode_segment(jwt.split('.').nth(1).unwrap());
    serde_json::from_value(claims["grants"].clone()).unwrap()
}

#[test]
fn grants_after_parse_equal_the_eager_grants_for_every_vector() {
    let doc = vectors();
    let mut checked = 0;
    for v in doc["valid"]
        .as_array()
        .unwrap()
        .iter()
        .chain(doc["invalid"].as_array().unwrap())
    {
        let jwt = v["token"].as_str().unwrap();
        let Ok(token) = AccessToken::parse(jwt) else {
            continue;
        };
        let name = &v["name"];
        let eager = eager_grants(token.as_str());
        assert_eq!(token.grants(), &eager, "{name}");
        assert_eq!(token.identity(), eager.identity.as_deref(), "{name}");
        for kind in GrantKind::ALL {
            assert_eq!(token.has_grant(kind), eager.has(kind), "{name}: {kind}");
        }
        assert!(token.grant_kinds().eq(eager.kinds()), "{name}");
        checked += 1;
    }
    assert!(checked >= 24, "only {checked} vectors parsed");
}

#[test]
fn grants_are_built_once_and_shared_by_clones() {
    let token = AccessToken::parse(&with_grants_text(
        r#"{"identity":"alice","chat":{},"rtc":{"x":1}}"#,
    ))
    .unwrap();
    let copy = token.clone();
    let first: *const Grants = token.grants();
    assert!(std::ptr::eq(first, token.grants()));
    assert!(std::ptr::eq(first, copy.grants()));
    assert_eq!(token.grants().other.len(), 1);
}

#[test]
fn identity_and_kinds_need_no_grants() {
    let token = AccessToken::parse(&with_grants_text(
        r#"{"identity":"b\u00f6b","data_sync":{},"player":null,"foo":[]}"#,
    ))
    .unwrap();
    assert_eq!(token.identity(), Some("böb"));
    assert!(token.has_grant(GrantKind::Sync) && token.has_grant(GrantKind::Playback));
    assert!(!token.has_grant(GrantKind::Chat));
    let debug = format!("{token:?}");
    assert!(
        debug.contains("Sync") && debug.contains("Playback"),
        "{debug}"
    );
    // No identity at all, and an empty one, are told apart.
    let none = AccessToken::parse(&with_grants_text(r#"{"video":{}}"#)).unwrap();
    assert_eq!(none.identity(), None);
    let empty = AccessToken::parse(&with_grants_text(r#"{"identity":""}"#)).unwrap();
    assert_eq!(empty.identity(), Some(""));
}

#[test]
fn a_grant_of_the_wrong_shape_is_still_20106_at_parse_time() {
    let cases = [
        r#"{"identity":"a","chat":{"service_sid":1}}"#,
        r#"{"identity":"a","chat":"x"}"#,
        r#"{"identity":"a","chat":null}"#,
        r#"{"identity":"a","data_sync":{"endpoint_id":[]}}"#,
        r#"{"identity":"a","voice":{"incoming":{"allow":"yes"}}}"#,
        r#"{"identity":"a","voice":{"outgoing":{"params":1e400}}}"#,
        r#"{"identity":"a","video":{"room":{}}}"#,
        r#"{"identity":"a","task_router":{"role":false}}"#,
        r#"{"identity":"a","player":[1e400]}"#,
        r#"{"identity":"a","ip_messaging":{"n":-1e999}}"#,
        r#"{"identity":7}"#,
        r#"{"identity":null}"#,
    ];
    for grants in cases {
        let err = AccessToken::parse(&with_grants_text(grants)).unwrap_err();
        assert!(
            matches!(err, TokenError::InvalidGrants { .. }),
            "{grants}: {err:?}"
        );
        assert!(serde_json::from_str::<Grants>(grants).is_err(), "{grants}");
    }
    // An earlier rule still wins over a broken grant.
    let jwt = with_claims(|c| {
        c.insert("grants".into(), json!({"chat": 1}));
        c.insert("nbf".into(), json!("soon"));
    });
    assert_eq!(
        AccessToken::parse(&jwt).unwrap_err().code(),
        20101,
        "rule 6 before rule 7"
    );
}

#[test]
fn the_reasons_are_the_eager_deserialisers() {
    let err = AccessToken::parse(&with_grants_text(r#"{"chat":{"service_sid":1}}"#)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid grants: a grant is not of the expected shape (invalid type: integer `1`, \
         expected a string) (Twilio error 20106)"
    );
    let err = AccessToken::parse(&with_grants_text(r#"{"identity":[]}"#)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid grants: grants.identity must be a string (Twilio error 20106)"
    );
}

#[test]
fn an_owned_token_keeps_its_buffer_and_is_trimmed_in_place() {
    let jwt = with_grants_text(r#"{"identity":"alice"}"#);
    for text in [jwt.clone(), format!("{jwt}\n"), format!("\r\n {jwt}\t")] {
        let token = AccessToken::try_from(text).unwrap();
        assert_eq!(token.as_str(), jwt);
        assert_eq!(token, AccessToken::parse(&jwt).unwrap());
    }
    let owned = jwt.clone();
    let at = owned.as_ptr();
    let token = AccessToken::try_from(owned).unwrap();
    assert_eq!(token.as_str().as_ptr(), at, "no copy of the text");
    assert_eq!(
        AccessToken::try_from(String::from("a.b"))
            .unwrap_err()
            .code(),
        20101
    );
}

/// What parsing must answer for a token whose grants are spliced in as `text`, judged from the
/// payload with serde_json and `Grants`' own deserialiser (the splice may swallow other claims).
fn expected_for_grants_text(text: &str) -> Result<Grants, u32> {
    #[derive(serde::Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        grants: &'a serde_json::value::RawValue,
    }
    let claims = good_claims()
        .to_string()
        .replace(r#"{"identity":"alice","video":{"room":"r1"}}"#, text);
    let Ok(payload) = serde_json::from_str::<Payload<'_>>(&claims) else {
        return Err(20101); // not JSON, or a duplicate claim
    };
    if has_duplicate_key(&claims) == Some(true) {
        return Err(20101); // a key twice in any object
    }
    let grants = payload.grants.get();
    if !grants.starts_with('{') {
        return Err(20106);
    }
    serde_json::from_str::<Grants>(grants).map_err(|_| 20106)
}

fn check_grants_text(text: &str) -> Result<(), TestCaseError> {
    let jwt = with_grants_text(text);
    match (AccessToken::parse(&jwt), expected_for_grants_text(text)) {
        (Ok(token), Ok(eager)) => {
            prop_assert_eq!(token.grants(), &eager);
            prop_assert_eq!(token.identity(), eager.identity.as_deref());
            for kind in GrantKind::ALL {
                prop_assert_eq!(token.has_grant(kind), eager.has(kind));
            }
        }
        (Err(e), Err(code)) => prop_assert_eq!(e.code(), code, "{}", e),
        (got, want) => prop_assert!(false, "{text}: parse {got:?}, eager {want:?}"),
    }
    Ok(())
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        "\\PC{0,6}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
            prop::collection::vec((field_name(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Known grant keys and field names, so that shapes are often nearly right.
fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "identity",
            "chat",
            "data_sync",
            "voice",
            "video",
            "task_router",
            "player",
            "service_sid",
            "endpoint_id",
            "incoming",
            "allow",
            "outgoing",
            "application_sid",
            "params",
            "room",
            "role",
        ])
        .prop_map(String::from),
        "[a-z_]{1,6}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn lazy_grants_answer_as_eager_grants_on_arbitrary_grants(grants in json_value()) {
        check_grants_text(&grants.to_string())?;
    }

    #[test]
    fn lazy_grants_answer_as_eager_grants_on_mutated_grants_text(
        grants in json_value(),
        at in any::<prop::sample::Index>(),
        with in prop::sample::select(b"{}[]\",:0-.eE \\nulltrue1".to_vec()),
        delete in any::<bool>(),
    ) {
        let mut text = grants.to_string().into_bytes();
        let i = at.index(text.len() + 1);
        if delete && i < text.len() {
            text.remove(i);
        } else {
            text.insert(i, with);
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        check_grants_text(&text)?;
    }
}

#[test]
fn lazy_grants_agree_with_parse_at_serde_jsons_nesting_limit() {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    let token = |grants: &str| {
        let h = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT","cty":"twilio-fpa;v=1"}"#);
        let p = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"jti":"SK1-1","iss":"SK1","sub":"AC1","exp":2000000000,"grants":{grants}}}"#
        ));
        format!("{h}.{p}.{}", URL_SAFE_NO_PAD.encode([0u8; 32]))
    };
    for depth in 120..130 {
        let grants = format!(
            r#"{{"identity":"alice","chat":{{}},"rtc":{}1{}}}"#,
            "[".repeat(depth),
            "]".repeat(depth)
        );
        if let Ok(t) = access_manager::AccessToken::parse(&token(&grants)) {
            assert_eq!(
                t.has_grant(access_manager::GrantKind::Chat),
                t.grants().chat.is_some(),
                "depth {depth}"
            );
            assert!(t.grants().other.contains_key("rtc"), "depth {depth}");
        }
    }
}
