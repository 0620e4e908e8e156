//! [`HttpFetcherBuilder`]: how an [`HttpFetcher`] is configured.

use super::*;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use reqwest::{Method, Url};
use std::fmt;
use std::time::Duration;

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
    pub(super) url: String,
    pub(super) method: Option<Method>,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: Option<Result<Vec<u8>, String>>,
    pub(super) timeout: Duration,
    pub(super) format: TokenFormat,
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

    /// Reads the token from the whole body (trimmed), whatever the content type. A body that
    /// starts as an HTML page (`<!DOCTYPE html` or `<html`) is still refused, as a transient
    /// [`HttpErrorKind::InvalidBody`] failure.
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
