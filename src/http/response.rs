//! Reading a response: content types, `Retry-After`, and URLs and errors made safe to print.

use reqwest::header::{HeaderMap, CONTENT_TYPE, DATE, RETRY_AFTER};
use reqwest::Url;
use std::error::Error;
use std::time::Duration;

use super::MAX_RETRY_AFTER;

pub(super) enum BodyProblem {
    TooLarge,
    NotUtf8,
    Empty,
    Html,
    MalformedJson(String),
    MissingField(String),
}

pub(super) enum ContentType {
    Json,
    Html,
    Other,
}

pub(super) fn content_type(headers: &HeaderMap) -> ContentType {
    let Some(value) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return ContentType::Other;
    };
    let essence = value
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json" || essence.ends_with("+json") {
        ContentType::Json
    } else if essence == "text/html" {
        ContentType::Html
    } else {
        ContentType::Other
    }
}

/// `Retry-After` as seconds, or as an HTTP date relative to the response's `Date`.
pub(super) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let after = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        // Digits too many for u64 are still a number of seconds, and more than the cap. (The
        // parser's overflow error is no proof of that: it stops before a trailing non-digit.)
        Err(_) if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => MAX_RETRY_AFTER,
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            let date = headers.get(DATE)?.to_str().ok()?.trim();
            let date = httpdate::parse_http_date(date).ok()?;
            at.duration_since(date).unwrap_or(Duration::ZERO)
        }
    };
    Some(after.min(MAX_RETRY_AFTER))
}

/// Whether a body is an HTML page, whatever its content type says: `<!DOCTYPE html` or `<html`
/// first, after whitespace, in any case. No token starts with `<`.
pub(super) fn looks_like_html(body: &[u8]) -> bool {
    let body = body.trim_ascii_start();
    ["<!doctype html", "<html"].iter().any(|start| {
        body.get(..start.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(start.as_bytes()))
    })
}

pub(super) fn origin(url: &Url) -> (&str, Option<&str>, Option<u16>) {
    (url.scheme(), url.host_str(), url.port_or_known_default())
}

/// The URL without credentials, query or fragment: safe to print.
pub(super) fn redact(url: &Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs that cannot hold credentials at all.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The message of an error's innermost cause.
pub(super) fn root_cause(error: &(dyn Error + 'static)) -> String {
    let mut error = error;
    while let Some(source) = error.source() {
        error = source;
    }
    error.to_string()
}

/// The messages of an error's causes, outermost first, joined by `: `, repeats skipped.
pub(super) fn causes(error: &(dyn Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = error.source();
    while let Some(e) = next {
        let msg = e.to_string();
        if !msg.is_empty() && !parts.iter().any(|p| p.contains(&msg)) {
            parts.push(msg);
        }
        next = e.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn retry_after_reads_seconds_and_dates_relative_to_the_date_header() {
        assert_eq!(
            retry_after(&headers(&[("retry-after", " 7 ")])),
            Some(Duration::from_secs(7))
        );
        let dated = headers(&[
            ("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT"),
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(retry_after(&dated), Some(Duration::from_secs(30)));
        let past = headers(&[
            ("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT"),
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
        ]);
        assert_eq!(retry_after(&past), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_without_a_date_header_or_unparsable_is_ignored_and_huge_is_capped() {
        assert_eq!(
            retry_after(&headers(&[(
                "retry-after",
                "Wed, 21 Oct 2015 07:28:30 GMT"
            )])),
            None
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")])), None);
        assert_eq!(retry_after(&headers(&[("retry-after", "-5")])), None);
        assert_eq!(retry_after(&HeaderMap::new()), None);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "99999999999999")])),
            Some(MAX_RETRY_AFTER)
        );
    }

    #[test]
    fn retry_after_with_more_digits_than_u64_holds_is_capped_not_ignored() {
        let ra = |v: &str| retry_after(&headers(&[("retry-after", v)]));
        assert_eq!(
            ra("999999999999999999999999999999"),
            Some(MAX_RETRY_AFTER),
            "30 digits"
        );
        assert_eq!(
            ra("18446744073709551616"),
            Some(MAX_RETRY_AFTER),
            "u64::MAX + 1"
        );
        assert_eq!(
            ra("18446744073709551615"),
            Some(MAX_RETRY_AFTER),
            "u64::MAX"
        );
        assert_eq!(ra("99999999999999999999x"), None, "not a number");
        assert_eq!(ra("-99999999999999999999"), None, "negative");
    }

    #[test]
    fn html_is_sniffed_by_its_start_after_whitespace_in_any_case() {
        for page in [
            "<!DOCTYPE html>",
            "<!doctype HTML><html></html>",
            " \r\n\t<html>",
            "<HTML lang=\"en\">",
            "<html",
        ] {
            assert!(looks_like_html(page.as_bytes()), "{page:?}");
        }
        for not_page in [
            "",
            "   ",
            "eyJhbGciOiJIUzI1NiJ9.e30.c2ln",
            "<!DOCTYPE",
            "<htm",
            "<!-- a comment -->",
            "<?xml version=\"1.0\"?>",
            "text <html>",
        ] {
            assert!(!looks_like_html(not_page.as_bytes()), "{not_page:?}");
        }
        assert!(looks_like_html(b"\n<html>\xff\xfe"));
    }

    #[test]
    fn redact_drops_credentials_query_and_fragment() {
        let url = Url::parse("https://user:pw@example.com:8443/a/b?secret=1#frag").unwrap();
        assert_eq!(redact(&url), "https://example.com:8443/a/b");
    }

    #[test]
    fn content_types_are_recognised_by_essence() {
        let ct = |v: &str| content_type(&headers(&[("content-type", v)]));
        assert!(matches!(
            ct("application/json; charset=utf-8"),
            ContentType::Json
        ));
        assert!(matches!(ct("application/vnd.api+json"), ContentType::Json));
        assert!(matches!(ct("Text/HTML"), ContentType::Html));
        assert!(matches!(ct("text/plain"), ContentType::Other));
    }
}
