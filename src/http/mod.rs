//! [`HttpFetcher`]: a ready [`TokenFetcher`] that asks the app's backend for a token over HTTP(S).
//!
//! Needs the cargo feature `http` (reqwest with rustls on ring: no system TLS library needed).
//!
//! One request per fetch, through one connection pool kept for the fetcher's life. The answer
//! becomes:
//!
//! | response | result |
//! |---|---|
//! | 2xx with a token in the body | the token, whitespace trimmed |
//! | 2xx whose body is empty, not UTF-8, an HTML page, malformed JSON, without the JSON field, or over [`MAX_BODY_LEN`] | transient failure |
//! | 401, 403, 404, and every other 4xx except those below | permanent failure: no automatic retry |
//! | 3xx not followed: a redirect to another origin (scheme, host or port), without or with an invalid `Location`; a 304; a 3xx that is no redirect (300, 305) | permanent failure, the message says which |
//! | 408, 425, 429, 5xx | transient failure, retried with backoff |
//! | connection failure, timeout, more than 10 redirects, broken response | transient failure |
//!
//! Redirects within the URL's origin are followed (a `POST` answered 301, 302 or 303 becomes a `GET`,
//! as browsers do). Redirects to another origin are not: the configured headers may be credentials,
//! and such a redirect is usually to a login page, so the app must act.
//!
//! A 2xx with a bad body is transient rather than permanent because it is usually a proxy's or a
//! deployment's passing page; the manager's backoff keeps the retries gentle, and each failure is a
//! `RefreshFailed` event saying what was wrong. A 4xx is the backend refusing this request; sending
//! it again unchanged cannot help, so it waits for the app (`refresh()` after a new login, or
//! `update_token()`).
//!
//! A `Retry-After` header on a transient failure, in seconds or as an HTTP date (measured from the
//! response's `Date` header, and ignored without one: the fetcher reads no clock), becomes
//! [`FetchError::with_retry_after`], capped at [`MAX_RETRY_AFTER`].
//!
//! Every error message names the method, the URL without credentials, query or fragment, and the
//! status; never a header value or the response body. A configuration error numbers the bad header
//! and names the problem, never its text: a whole `Authorization: Bearer ...` line passed as a name
//! stays out of it.
//!
//! # Plain http and proxies
//!
//! The URL is `https`, or `http` to this machine (`localhost`, 127.0.0.0/8, `::1`): elsewhere the
//! headers (cookies, bearer tokens) and the token would cross the network in clear text, so
//! [`build`](HttpFetcherBuilder::build) refuses it unless
//! [`allow_insecure_http`](HttpFetcherBuilder::allow_insecure_http) says the network is trusted.
//!
//! As curl does, the fetcher goes through the proxy the environment names (`HTTPS_PROXY`,
//! `HTTP_PROXY`, `ALL_PROXY`, or their lowercase forms), except for the hosts in `NO_PROXY`; loopback
//! is not exempt unless listed there. That proxy sees the whole request of an `http` URL, headers
//! and token included, and the host name of an `https` one (the TLS connection is tunnelled through
//! it). [`no_proxy`](HttpFetcherBuilder::no_proxy) connects directly.

use crate::fetcher::{FetchError, FetchRequest, TokenFetcher};
use async_trait::async_trait;
use reqwest::header::{HeaderMap, LOCATION};
use reqwest::{Method, StatusCode, Url};
use std::fmt;
use std::time::Duration;

mod builder;
mod error;
mod response;

pub use builder::HttpFetcherBuilder;
use error::config_error;
pub use error::{HttpErrorKind, HttpFetcherError};
use response::{
    causes, content_type, looks_like_html, origin, redact, retry_after, root_cause, BodyProblem,
    ContentType,
};

/// The largest response body read: 64 KiB. A token is at most 16 KiB; a larger body holds none.
pub const MAX_BODY_LEN: usize = 64 * 1024;
/// How long one request may take by default, from connecting to the body's end: 10 s.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The JSON field the token is read from by default: `token`.
pub const DEFAULT_JSON_FIELD: &str = "token";
/// The longest `Retry-After` honoured: 1 hour. A server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// How many same-origin redirects one request follows.
const MAX_REDIRECTS: usize = 10;

const USER_AGENT: &str = concat!("access-manager/", env!("CARGO_PKG_VERSION"));

/// A [`TokenFetcher`] that gets the token from the app's backend over HTTP(S).
///
/// It keeps one HTTP client, so connections are reused across fetches. `Debug` prints the URL
/// without credentials or query, and header names without their values.
///
/// ```no_run
/// use access_manager::{http::HttpFetcher, AccessManager};
/// use std::time::Duration;
///
/// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
/// let fetcher = HttpFetcher::builder("https://app.example.com/api/twilio-token")
///     .header("Cookie", "session=abc123")
///     .json_body(&serde_json::json!({ "device": "laptop" })) // sends a POST
///     .json_field("data.token")                              // {"data": {"token": "eyJ..."}}
///     .timeout(Duration::from_secs(5))
///     .build()?;
/// let manager = AccessManager::builder().fetcher(fetcher).build()?;
/// # let _ = manager; Ok(()) }
/// ```
pub struct HttpFetcher {
    client: reqwest::Client,
    method: Method,
    url: Url,
    /// `METHOD url`, the URL redacted: what every message starts with.
    target: String,
    headers: HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Duration,
    format: TokenFormat,
    /// Set by [`HttpFetcherBuilder::no_proxy`]; read by `Debug` only (the client holds the rule).
    no_proxy: bool,
}

/// Where the token is in the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenFormat {
    /// A JSON content type: the `token` field; an HTML page (by content type or by its start):
    /// refused; anything else: the body.
    Auto,
    /// The whole body, whatever its content type, unless it starts as an HTML page.
    PlainText,
    /// The string at this path of object keys, whatever the content type.
    JsonField(Vec<String>),
}

impl HttpFetcher {
    /// A fetcher that sends `GET url` and reads the token from the body: the `token` field of a JSON
    /// body (content type `application/json` or `*+json`), else the whole body.
    ///
    /// ```
    /// use access_manager::http::{HttpErrorKind, HttpFetcher};
    ///
    /// let fetcher = HttpFetcher::new("https://app.example.com/token")?;
    /// assert!(format!("{fetcher:?}").contains("method: GET"));
    ///
    /// // Plain http only to this machine.
    /// assert!(HttpFetcher::new("http://127.0.0.1:3000/token").is_ok());
    /// let err = HttpFetcher::new("http://app.example.com/token").unwrap_err();
    /// assert_eq!(err.kind(), HttpErrorKind::InvalidConfig);
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    ///
    /// # Errors
    /// As [`HttpFetcherBuilder::build`].
    pub fn new(url: impl AsRef<str>) -> Result<Self, HttpFetcherError> {
        Self::builder(url).build()
    }

    /// Starts configuring a fetcher for `url`: `https`, or `http` to this machine (`localhost`,
    /// 127.0.0.0/8, `::1`) unless [`HttpFetcherBuilder::allow_insecure_http`] is called. Every
    /// setting has a default; the URL and the settings are checked by
    /// [`build`](HttpFetcherBuilder::build).
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .header("Cookie", "session=abc123")
    ///     .build()?;
    /// assert_eq!(fetcher.url(), "https://app.example.com/token");
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn builder(url: impl AsRef<str>) -> HttpFetcherBuilder {
        HttpFetcherBuilder {
            url: url.as_ref().to_owned(),
            method: None,
            headers: Vec::new(),
            body: None,
            timeout: DEFAULT_TIMEOUT,
            format: TokenFormat::Auto,
            allow_insecure_http: false,
            no_proxy: false,
        }
    }

    /// The URL requested, without credentials, query or fragment: safe to log.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::new("https://user:pw@app.example.com/token?key=s3cret#top")?;
    /// assert_eq!(fetcher.url(), "https://app.example.com/token");
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn url(&self) -> String {
        redact(&self.url)
    }

    /// Sends one request and reads the token out of the answer.
    async fn fetch(&self) -> Result<String, FetchError> {
        let mut request = self
            .client
            .request(self.method.clone(), self.url.clone())
            .headers(self.headers.clone())
            .timeout(self.timeout);
        if let Some(body) = &self.body {
            request = request.body(body.clone());
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| FetchError::transient(self.transport_error(e, None)))?;
        let status = response.status();
        if !status.is_success() {
            return Err(self.status_error(status, response.headers(), response.url()));
        }
        let default_path = [DEFAULT_JSON_FIELD.to_owned()];
        let json_path: Option<&[String]> = match &self.format {
            TokenFormat::PlainText => None,
            TokenFormat::JsonField(path) => Some(path),
            TokenFormat::Auto => match content_type(response.headers()) {
                ContentType::Json => Some(&default_path),
                ContentType::Html => {
                    return Err(self.body_error(status, BodyProblem::Html));
                }
                ContentType::Other => None,
            },
        };
        let body = self.read_body(status, &mut response).await?;
        // A proxy's or a login page, labelled as something else: no token in it either.
        if json_path.is_none() && looks_like_html(&body) {
            return Err(self.body_error(status, BodyProblem::Html));
        }
        let text = std::str::from_utf8(&body)
            .map_err(|_| self.body_error(status, BodyProblem::NotUtf8))?;
        let token = match json_path {
            None => text.trim().to_owned(),
            Some(path) => self.json_token(status, text, path)?,
        };
        if token.is_empty() {
            return Err(self.body_error(status, BodyProblem::Empty));
        }
        Ok(token)
    }

    /// Reads at most [`MAX_BODY_LEN`] bytes, chunk by chunk: a larger body is refused as soon as it
    /// shows, without reading the rest.
    async fn read_body(
        &self,
        status: StatusCode,
        response: &mut reqwest::Response,
    ) -> Result<Vec<u8>, FetchError> {
        let too_large = || self.body_error(status, BodyProblem::TooLarge);
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_LEN as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| FetchError::transient(self.transport_error(e, Some(status))))?
        {
            if body.len() + chunk.len() > MAX_BODY_LEN {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }

    fn json_token(
        &self,
        status: StatusCode,
        text: &str,
        path: &[String],
    ) -> Result<String, FetchError> {
        let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            // serde_json's message gives a position, never the text.
            self.body_error(status, BodyProblem::MalformedJson(e.to_string()))
        })?;
        let field = path
            .iter()
            .try_fold(&value, |v, key| v.get(key))
            .and_then(serde_json::Value::as_str);
        match field {
            Some(token) => Ok(token.trim().to_owned()),
            None => Err(self.body_error(status, BodyProblem::MissingField(path.join(".")))),
        }
    }

    /// `url` is the one answered: the configured URL, or where same-origin redirects led.
    fn status_error(&self, status: StatusCode, headers: &HeaderMap, url: &Url) -> FetchError {
        let detail = if status.is_redirection() {
            self.unfollowed_redirect(status, headers, url).into()
        } else {
            String::new()
        };
        let error = HttpFetcherError {
            kind: HttpErrorKind::Status,
            target: Some(self.target.clone()),
            status: Some(status.as_u16()),
            detail,
            source: None,
        };
        let transient = matches!(status.as_u16(), 408 | 425 | 429)
            || status.is_server_error()
            || status.is_informational();
        if !transient {
            return FetchError::permanent(error);
        }
        let error = FetchError::transient(error);
        match retry_after(headers) {
            Some(after) => error.with_retry_after(after),
            None => error,
        }
    }

    /// Why a 3xx answer was not followed. Never the `Location` itself: it may hold a credential.
    fn unfollowed_redirect(&self, status: StatusCode, headers: &HeaderMap, url: &Url) -> &str {
        match status {
            StatusCode::NOT_MODIFIED => {
                "not modified, yet the request was not conditional (a caching proxy?)"
            }
            StatusCode::MOVED_PERMANENTLY
            | StatusCode::FOUND
            | StatusCode::SEE_OTHER
            | StatusCode::TEMPORARY_REDIRECT
            | StatusCode::PERMANENT_REDIRECT => {
                let Some(location) = headers.get(LOCATION) else {
                    return "redirect without a Location header";
                };
                let to = location.to_str().ok().and_then(|l| url.join(l).ok());
                match to {
                    None => "redirect to an invalid Location",
                    Some(to) if origin(&to) != origin(&self.url) => {
                        "redirect to another origin not followed (a login page?)"
                    }
                    Some(_) => "redirect not followed",
                }
            }
            _ => "not a redirect the fetcher follows (301, 302, 303, 307 or 308)",
        }
    }

    fn body_error(&self, status: StatusCode, problem: BodyProblem) -> FetchError {
        let (kind, detail) = match problem {
            BodyProblem::TooLarge => (
                HttpErrorKind::BodyTooLarge,
                format!("body over {MAX_BODY_LEN} bytes"),
            ),
            BodyProblem::NotUtf8 => (HttpErrorKind::InvalidBody, "body is not UTF-8".into()),
            BodyProblem::Empty => (HttpErrorKind::InvalidBody, "empty token".into()),
            BodyProblem::Html => (
                HttpErrorKind::InvalidBody,
                "expected a token, got an HTML page".into(),
            ),
            BodyProblem::MalformedJson(e) => {
                (HttpErrorKind::MalformedJson, format!("malformed JSON: {e}"))
            }
            BodyProblem::MissingField(path) => (
                HttpErrorKind::MissingField,
                format!("no string at JSON field `{path}`"),
            ),
        };
        FetchError::transient(HttpFetcherError {
            kind,
            target: Some(self.target.clone()),
            status: Some(status.as_u16()),
            detail,
            source: None,
        })
    }

    fn transport_error(
        &self,
        error: reqwest::Error,
        status: Option<StatusCode>,
    ) -> HttpFetcherError {
        // reqwest's errors carry the full URL, credentials and query included, and print it when
        // they have no cause: keep it, redacted, in the message and in the source.
        let error = match error.url().and_then(|url| Url::parse(&redact(url)).ok()) {
            Some(url) => error.with_url(url),
            None => error.without_url(),
        };
        let kind = if error.is_timeout() {
            HttpErrorKind::Timeout
        } else if error.is_connect() {
            HttpErrorKind::Connect
        } else {
            HttpErrorKind::Transport
        };
        let detail = match kind {
            HttpErrorKind::Timeout => format!("timed out after {} s", self.timeout.as_secs_f64()),
            // The innermost cause says what happened ("Connection refused (os error 111)").
            HttpErrorKind::Connect => format!("connection failed: {}", root_cause(&error)),
            _ => causes(&error),
        };
        HttpFetcherError {
            kind,
            target: Some(self.target.clone()),
            status: status.map(|s| s.as_u16()),
            detail,
            source: Some(Box::new(error)),
        }
    }
}

#[async_trait]
impl TokenFetcher for HttpFetcher {
    async fn fetch_token(&self, request: FetchRequest) -> Result<String, FetchError> {
        let span =
            tracing::debug_span!("http_fetch", target = %self.target, attempt = request.attempt());
        tracing::Instrument::instrument(self.fetch(), span).await
    }
}

impl fmt::Debug for HttpFetcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .keys()
            .map(|name| format!("{name}: <redacted>"))
            .collect();
        f.debug_struct("HttpFetcher")
            .field("method", &self.method)
            .field("url", &redact(&self.url))
            .field("headers", &headers)
            .field(
                "body",
                &self.body.as_ref().map(|b| format!("<{} bytes>", b.len())),
            )
            .field("timeout", &self.timeout)
            .field("format", &self.format)
            .field("proxy", &builder::proxy(self.no_proxy))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::ResponseBuilderExt;
    use std::error::Error;

    /// A reqwest error without a source (reqwest makes them for statuses): its own message is the
    /// only one, and it carries the URL it was given.
    fn error_without_source(url: &str) -> reqwest::Error {
        let response = hyper::http::Response::builder()
            .status(500)
            .url(Url::parse(url).unwrap())
            .body("")
            .unwrap();
        let error = reqwest::Response::from(response)
            .error_for_status()
            .unwrap_err();
        assert!(error.source().is_none());
        error
    }

    #[test]
    fn a_transport_error_without_a_source_hides_credentials_and_query() {
        let url = "http://user:pass@127.0.0.1:9/token?key=secret";
        let fetcher = HttpFetcher::new(url).unwrap();
        let error = fetcher.transport_error(error_without_source(url), None);
        let mut chain = format!("{error} {error:?}");
        let mut source = error.source();
        while let Some(e) = source {
            chain.push_str(&format!(" | {e} {e:?}"));
            source = e.source();
        }
        assert!(chain.contains("http://127.0.0.1:9/token"), "{chain}");
        for secret in ["user", "pass", "secret"] {
            assert!(!chain.contains(secret), "{secret} leaked: {chain}");
        }
    }
}
