//! Input = [secret length][secret][8-byte LE time][mode][token text]. `verify` must answer exactly
//! `parse`'s error, else `SignatureMismatch` iff an independent HMAC-SHA256 differs, else the time
//! rules. With mode bit 0 the target re-signs the token with the secret first, so the fuzzer gets
//! past the signature and exercises the time rules; bit 1 puts `now` before the epoch.
#![no_main]

use access_manager::{AccessToken, TokenError};
use access_manager_fuzz::{at, hs256, secs, Times};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use std::time::{Duration, UNIX_EPOCH};

fuzz_target!(|data: &[u8]| {
    let Some((&len, rest)) = data.split_first() else {
        return;
    };
    let len = usize::from(len);
    if rest.len() < len + 9 {
        return;
    }
    let (secret, rest) = rest.split_at(len);
    let (time, rest) = rest.split_at(8);
    let (&mode, token) = rest.split_first().unwrap();
    let t = u64::from_le_bytes(time.try_into().unwrap());
    let now = if mode & 2 != 0 {
        match UNIX_EPOCH.checked_sub(Duration::from_secs(t)) {
            Some(n) => n,
            None => return,
        }
    } else {
        match at(t) {
            Some(n) => n,
            None => return,
        }
    };
    let Ok(token) = std::str::from_utf8(token) else {
        return;
    };
    // Trimmed first, so that a re-signed token is signed over exactly what `parse` keeps.
    let mut text = token
        .trim_matches(|c: char| c.is_ascii_whitespace())
        .to_owned();
    if mode & 1 != 0 {
        // Re-sign: replace whatever follows the last '.' with the right signature.
        if let Some(dot) = text.rfind('.') {
            let sig = hs256(secret, &text.as_bytes()[..dot]);
            text.truncate(dot + 1);
            URL_SAFE_NO_PAD.encode_string(sig, &mut text);
        }
    }

    let got = AccessToken::verify(&text, secret, now);
    let expected = match AccessToken::parse(&text) {
        Err(e) => Err(e),
        Ok(parsed) => {
            let sig_ok = URL_SAFE_NO_PAD
                .decode(access_manager_fuzz::signature_segment(parsed.as_str()))
                .is_ok_and(|s| s == hs256(secret, parsed.unsigned_part().as_bytes()));
            if !sig_ok {
                Err(TokenError::SignatureMismatch)
            } else {
                let v = parsed.validate_at(now);
                if let Some(times) = Times::of(&parsed) {
                    assert_eq!(
                        v,
                        times.expect_at(secs(now)),
                        "validate_at disagrees with the model"
                    );
                }
                v.map(|()| parsed)
            }
        }
    };
    assert_eq!(got, expected);
    if mode & 1 != 0 {
        assert_ne!(
            got,
            Err(TokenError::SignatureMismatch),
            "a re-signed token failed its signature"
        );
    }
    // Another secret never verifies (not a zero-padded or hashed equivalent of this one).
    if got.is_ok() {
        let mut other = secret.to_vec();
        other.push(1);
        assert_eq!(
            AccessToken::verify(&text, &other, now),
            Err(TokenError::SignatureMismatch)
        );
    }
});
