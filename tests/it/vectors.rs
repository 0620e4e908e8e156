//! Every vector minted by twilio-node (and every hand-broken one) answers what the token format says.

use access_manager::AccessToken;
use serde_json::Value;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn vectors() -> Vec<Value> {
    let doc: Value = serde_json::from_str(include_str!("../data/twilio_tokens.json"))
        .expect("vectors file is JSON");
    let mut all = doc["valid"].as_array().unwrap().clone();
    all.extend(doc["invalid"].as_array().unwrap().iter().cloned());
    assert!(all.len() >= 40, "the vectors file lost entries");
    all
}

fn expectation<T>(result: &Result<T, access_manager::TokenError>) -> String {
    match result {
        Ok(_) => "ok".to_string(),
        Err(e) => e.code().to_string(),
    }
}

fn at(v: &Value) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(v["now"].as_u64().unwrap())
}

#[test]
fn every_vector_answers_its_parse_expectation() {
    let mut wrong = Vec::new();
    for v in vectors() {
        let got = expectation(&AccessToken::parse(v["token"].as_str().unwrap()));
        let want = v["parse_expect"].to_string().trim_matches('"').to_string();
        if got != want {
            wrong.push(format!("{}: parse gave {got}, want {want}", v["name"]));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}

#[test]
fn every_vector_answers_its_verify_expectation_at_its_now() {
    let mut wrong = Vec::new();
    for v in vectors() {
        let token = v["token"].as_str().unwrap();
        let secret = v["secret"].as_str().unwrap().as_bytes();
        let got = expectation(&AccessToken::verify(token, secret, at(&v)));
        let want = v["verify_expect"].to_string().trim_matches('"').to_string();
        if got != want {
            wrong.push(format!("{}: verify gave {got}, want {want}", v["name"]));
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
