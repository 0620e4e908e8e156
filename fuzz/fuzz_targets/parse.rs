//! Arbitrary bytes → `AccessToken::parse`: never panics; on `Ok`, every accessor, the grants'
//! serialisation, `validate_at` at interesting times (against a model of the time rules),
//! Debug/Display without the signature; on `Err`, a parse-rule code and no signature in the message.
#![no_main]

use access_manager::AccessToken;
use access_manager_fuzz::{check_parse_error, check_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let result = AccessToken::parse(text);
    match &result {
        Ok(token) => check_token(token, text),
        Err(e) => check_parse_error(e, text),
    }
    // Surrounding ASCII whitespace changes nothing.
    let padded = format!(" \t\n{text}\r\n ");
    assert_eq!(
        AccessToken::parse(&padded),
        result,
        "whitespace changed the answer"
    );
});
