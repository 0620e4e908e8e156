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
//! | 3xx to another origin (scheme, host or port), or without `Location` | permanent failure |
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
//! status; never a header value or the response body.

use crate::fetcher::{FetchError, FetchRequest, TokenFetcher};
use async_trait::async_trait;
use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE, DATE, RETRY_AFTER,
};
use reqwest::{Method, StatusCode, Url};
use std::error::Error;
use std::fmt;
use std::time::Duration;

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
}

/// Where the token is in the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
enum TokenFormat {
    /// A JSON content type: the `token` field; an HTML page: refused; anything else: the body.
    Auto,
    /// The whole body, whatever its content type.
    PlainText,
    /// The string at this path of object keys, whatever the content type.
    JsonField(Vec<String>),
}

impl HttpFetcher {
    /// A fetcher that sends `GET url` and reads the token from the body: the `token` field of a JSON
    /// body (content type `application/json` or `*+json`), else the whole body.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::new("https://app.example.com/token")?;
    /// # let _ = fetcher;
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    ///
    /// # Errors
    /// As [`HttpFetcherBuilder::build`].
    pub fn new(url: impl AsRef<str>) -> Result<Self, HttpFetcherError> {
        Self::builder(url).build()
    }

    /// Starts configuring a fetcher for `url` (`http` or `https`). Every setting has a default.
    pub fn builder(url: impl AsRef<str>) -> HttpFetcherBuilder {
        HttpFetcherBuilder {
            url: url.as_ref().to_owned(),
            method: None,
            headers: Vec::new(),
            body: None,
            timeout: DEFAULT_TIMEOUT,
            format: TokenFormat::Auto,
        }
    }

    /// The URL requested, without credentials, query or fragment.
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
            return Err(self.status_error(status, response.headers()));
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

    fn status_error(&self, status: StatusCode, headers: &HeaderMap) -> FetchError {
        let detail = if status.is_redirection() {
            "redirect to another origin not followed (a login page?)".into()
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
            // reqwest's errors carry the full URL, credentials and query included.
            source: Some(Box::new(error.without_url())),
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
            .finish()
    }
}

/// Configures an [`HttpFetcher`]; made by [`HttpFetcher::builder`].
///
/// ```
/// use access_manager::http::HttpFetcher;
///
/// let fetcher = HttpFetcher::builder("https://app.example.com/token")
///     .post()
///     .bearer_auth("user-session-jwt")
///     .plain_text()
///     .build()?;
/// # let _ = fetcher;
/// # Ok::<(), access_manager::http::HttpFetcherError>(())
/// ```
pub struct HttpFetcherBuilder {
    url: String,
    method: Option<Method>,
    headers: Vec<(String, String)>,
    body: Option<Result<Vec<u8>, String>>,
    timeout: Duration,
    format: TokenFormat,
}

impl HttpFetcherBuilder {
    /// Sends `POST` (default: `GET`, or `POST` when a JSON body is set).
    pub fn post(mut self) -> Self {
        self.method = Some(Method::POST);
        self
    }

    /// Sends `GET` (the default without a body).
    pub fn get(mut self) -> Self {
        self.method = Some(Method::GET);
        self
    }

    /// Adds a header sent with every request, e.g. a session cookie. Values are treated as
    /// credentials: never printed, and marked sensitive for the HTTP stack. A repeated name adds a
    /// second value.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    pub fn bearer_auth(self, token: impl fmt::Display) -> Self {
        self.header(AUTHORIZATION.as_str(), format!("Bearer {token}"))
    }

    /// Sends `body` as JSON (`Content-Type: application/json`) with every request. Makes the method
    /// `POST` unless [`get`](Self::get) is called.
    pub fn json_body<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.body = Some(serde_json::to_vec(body).map_err(|e| e.to_string()));
        self
    }

    /// Reads the token from a string field of a JSON body, whatever the content type. `path` is a
    /// field name or a dotted path of names: `"token"`, `"data.token"`. Default: the `token` field
    /// when the content type is JSON, else the whole body.
    pub fn json_field(mut self, path: impl AsRef<str>) -> Self {
        self.format = TokenFormat::JsonField(path.as_ref().split('.').map(str::to_owned).collect());
        self
    }

    /// Reads the token from the whole body (trimmed), whatever the content type.
    pub fn plain_text(mut self) -> Self {
        self.format = TokenFormat::PlainText;
        self
    }

    /// How long one request may take, from connecting to the end of the body (default
    /// [`DEFAULT_TIMEOUT`], 10 s). Must be non-zero. This is a network timeout on the real clock;
    /// the manager also bounds each fetch with its own `fetch_timeout` on its clock.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Builds the fetcher and its HTTP client.
    ///
    /// # Errors
    /// [`HttpErrorKind::InvalidConfig`]: the URL does not parse or is not `http`/`https`, a header
    /// name or value is not valid HTTP, the JSON body cannot be serialized, a JSON path has an empty
    /// part, the timeout is zero, or the TLS stack fails to start.
    pub fn build(self) -> Result<HttpFetcher, HttpFetcherError> {
        let url = Url::parse(&self.url).map_err(|e| config_error(format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "unsupported URL scheme `{}` (http or https)",
                url.scheme()
            )));
        }
        if self.timeout.is_zero() {
            return Err(config_error("timeout must be non-zero".into()));
        }
        if let TokenFormat::JsonField(path) = &self.format {
            if path.iter().any(String::is_empty) {
                return Err(config_error("JSON field path has an empty part".into()));
            }
        }
        let mut headers = HeaderMap::new();
        let accept = match self.format {
            TokenFormat::PlainText => "text/plain",
            TokenFormat::JsonField(_) => "application/json",
            TokenFormat::Auto => "application/json, text/plain;q=0.9",
        };
        headers.insert(ACCEPT, HeaderValue::from_static(accept));
        let body = self
            .body
            .transpose()
            .map_err(|e| config_error(format!("cannot serialize the JSON body: {e}")))?;
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in &self.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config_error(format!("invalid header name `{name}`")))?;
            let mut value = HeaderValue::from_str(value)
                .map_err(|_| config_error(format!("invalid value for header `{name}`")))?;
            value.set_sensitive(true);
            if name == ACCEPT || name == CONTENT_TYPE {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
        let client = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::custom(|attempt| {
                let same_origin = attempt
                    .previous()
                    .first()
                    .is_some_and(|first| origin(first) == origin(attempt.url()));
                if !same_origin {
                    // Headers set here may be credentials: they never go to another origin.
                    attempt.stop()
                } else if attempt.previous().len() > MAX_REDIRECTS {
                    attempt.error("too many redirects")
                } else {
                    attempt.follow()
                }
            }))
            .build()
            .map_err(|e| HttpFetcherError {
                source: Some(Box::new(e.without_url())),
                ..config_error("cannot start the HTTP client".into())
            })?;
        let method = self.method.unwrap_or(if body.is_some() {
            Method::POST
        } else {
            Method::GET
        });
        Ok(HttpFetcher {
            client,
            target: format!("{method} {}", redact(&url)),
            method,
            url,
            headers,
            body,
            timeout: self.timeout,
            format: self.format,
        })
    }
}

impl fmt::Debug for HttpFetcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = Url::parse(&self.url).map_or_else(|_| "<invalid>".to_owned(), |u| redact(&u));
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| format!("{name}: <redacted>"))
            .collect();
        f.debug_struct("HttpFetcherBuilder")
            .field("method", &self.method)
            .field("url", &url)
            .field("headers", &headers)
            .field("body", &self.body.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("format", &self.format)
            .finish()
    }
}

/// What kind of failure an [`HttpFetcherError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// The builder's settings are invalid (from [`HttpFetcherBuilder::build`]).
    InvalidConfig,
    /// The server answered with a status other than 2xx.
    Status,
    /// The request did not complete within the timeout.
    Timeout,
    /// No connection could be made.
    Connect,
    /// The request or the response broke off, or a redirect could not be followed.
    Transport,
    /// The body is larger than [`MAX_BODY_LEN`].
    BodyTooLarge,
    /// The body was to be JSON and is not.
    MalformedJson,
    /// The JSON body has no string at the configured field.
    MissingField,
    /// The body is empty, not UTF-8, or an HTML page.
    InvalidBody,
}

/// Why an [`HttpFetcher`] could not be built or could not fetch.
///
/// A fetch failure reaches the manager wrapped in a [`FetchError`] (its `source()`), and the app
/// as a `RefreshFailed` event whose message is this one's. The message names the method, the URL
/// without credentials or query, and the status; never a header value or the body.
pub struct HttpFetcherError {
    kind: HttpErrorKind,
    /// `METHOD url`, redacted; `None` for configuration errors.
    target: Option<String>,
    status: Option<u16>,
    detail: String,
    source: Option<Box<dyn Error + Send + Sync>>,
}

impl HttpFetcherError {
    /// What kind of failure this is.
    pub fn kind(&self) -> HttpErrorKind {
        self.kind
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

fn config_error(detail: String) -> HttpFetcherError {
    HttpFetcherError {
        kind: HttpErrorKind::InvalidConfig,
        target: None,
        status: None,
        detail,
        source: None,
    }
}

impl fmt::Display for HttpFetcherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Some(target) = &self.target else {
            return write!(f, "invalid HTTP fetcher configuration: {}", self.detail);
        };
        write!(f, "{target}: ")?;
        match self.status.and_then(|s| StatusCode::from_u16(s).ok()) {
            Some(status) => write!(f, "HTTP {status}")?,
            None => f.write_str("no response")?,
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}

impl fmt::Debug for HttpFetcherError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpFetcherError")
            .field("kind", &self.kind)
            .field("message", &self.to_string())
            .finish()
    }
}

impl Error for HttpFetcherError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn Error + 'static))
    }
}

enum BodyProblem {
    TooLarge,
    NotUtf8,
    Empty,
    Html,
    MalformedJson(String),
    MissingField(String),
}

enum ContentType {
    Json,
    Html,
    Other,
}

fn content_type(headers: &HeaderMap) -> ContentType {
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
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let after = match value.parse::<u64>() {
        Ok(secs) => Duration::from_secs(secs),
        Err(_) => {
            let at = httpdate::parse_http_date(value).ok()?;
            let date = headers.get(DATE)?.to_str().ok()?.trim();
            let date = httpdate::parse_http_date(date).ok()?;
            at.duration_since(date).unwrap_or(Duration::ZERO)
        }
    };
    Some(after.min(MAX_RETRY_AFTER))
}

fn origin(url: &Url) -> (&str, Option<&str>, Option<u16>) {
    (url.scheme(), url.host_str(), url.port_or_known_default())
}

/// The URL without credentials, query or fragment: safe to print.
fn redact(url: &Url) -> String {
    let mut url = url.clone();
    // Both fail only for URLs that cannot hold credentials at all.
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

/// The message of an error's innermost cause.
fn root_cause(error: &(dyn Error + 'static)) -> String {
    let mut error = error;
    while let Some(source) = error.source() {
        error = source;
    }
    error.to_string()
}

/// The messages of an error's causes, outermost first, joined by `: `, repeats skipped.
fn causes(error: &(dyn Error + 'static)) -> String {
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
