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
    pub(super) allow_insecure_http: bool,
    pub(super) no_proxy: bool,
}

impl HttpFetcherBuilder {
    /// Sends `POST` (default: `GET`, or `POST` when a JSON body is set).
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token").post().build()?;
    /// assert!(format!("{fetcher:?}").contains("method: POST"));
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn post(mut self) -> Self {
        self.method = Some(Method::POST);
        self
    }

    /// Sends `GET` (the default without a body), even with a JSON body.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .json_body(&serde_json::json!({ "device": "laptop" }))
    ///     .get()
    ///     .build()?;
    /// assert!(format!("{fetcher:?}").contains("method: GET"));
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn get(mut self) -> Self {
        self.method = Some(Method::GET);
        self
    }

    /// Adds a header sent with every request, e.g. a session cookie. Values are treated as
    /// credentials: never printed, and marked sensitive for the HTTP stack. A repeated name adds a
    /// second value. The name and the value are checked by [`build`](Self::build), whose error
    /// numbers the header and names the problem without repeating either.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .header("Cookie", "session=abc123")
    ///     .build()?;
    /// let debug = format!("{fetcher:?}");
    /// assert!(debug.contains("cookie: <redacted>") && !debug.contains("abc123"));
    ///
    /// // A whole header line as the name: refused, and the message keeps the secret out.
    /// let err = HttpFetcher::builder("https://app.example.com/token")
    ///     .header("Cookie: session=abc123", "")
    ///     .build()
    ///     .unwrap_err();
    /// assert!(err.to_string().starts_with("invalid HTTP fetcher configuration: header 1: the name"));
    /// assert!(!err.to_string().contains("abc123"));
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Adds `Authorization: Bearer <token>`.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .bearer_auth("user-session-jwt")
    ///     .build()?;
    /// let debug = format!("{fetcher:?}");
    /// assert!(debug.contains("authorization: <redacted>") && !debug.contains("user-session-jwt"));
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn bearer_auth(self, token: impl fmt::Display) -> Self {
        self.header(AUTHORIZATION.as_str(), format!("Bearer {token}"))
    }

    /// Sends `body` as JSON (`Content-Type: application/json`) with every request. Makes the method
    /// `POST` unless [`get`](Self::get) is called.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .json_body(&serde_json::json!({ "device": "laptop" }))
    ///     .build()?;
    /// let debug = format!("{fetcher:?}");
    /// assert!(debug.contains("method: POST"), "{debug}");
    /// assert!(debug.contains(r#"body: Some("<19 bytes>")"#), "{debug}"); // {"device":"laptop"}
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn json_body<T: serde::Serialize + ?Sized>(mut self, body: &T) -> Self {
        self.body = Some(serde_json::to_vec(body).map_err(|e| e.to_string()));
        self
    }

    /// Reads the token from a string field of a JSON body, whatever the content type. `path` is a
    /// field name or a dotted path of names: `"token"`, `"data.token"`. Default: the `token` field
    /// when the content type is JSON, else the whole body.
    ///
    /// ```
    /// use access_manager::http::{HttpErrorKind, HttpFetcher};
    ///
    /// // For {"data": {"token": "eyJ..."}}:
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .json_field("data.token")
    ///     .build()?;
    /// assert!(format!("{fetcher:?}").contains(r#"JsonField(["data", "token"])"#));
    ///
    /// let empty_part = HttpFetcher::builder("https://app.example.com/token").json_field("data.");
    /// assert_eq!(empty_part.build().unwrap_err().kind(), HttpErrorKind::InvalidConfig);
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn json_field(mut self, path: impl AsRef<str>) -> Self {
        self.format = TokenFormat::JsonField(path.as_ref().split('.').map(str::to_owned).collect());
        self
    }

    /// Reads the token from the whole body (trimmed), whatever the content type. A body that
    /// starts as an HTML page (`<!DOCTYPE html` or `<html`) is still refused, as a transient
    /// [`HttpErrorKind::InvalidBody`] failure.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .plain_text()
    ///     .build()?;
    /// assert!(format!("{fetcher:?}").contains("format: PlainText"));
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn plain_text(mut self) -> Self {
        self.format = TokenFormat::PlainText;
        self
    }

    /// How long one request may take, from connecting to the end of the body (default
    /// [`DEFAULT_TIMEOUT`], 10 s). Must be non-zero. This is a network timeout on the real clock;
    /// the manager also bounds each fetch with its own `fetch_timeout` on its clock.
    ///
    /// ```
    /// use access_manager::http::{HttpErrorKind, HttpFetcher};
    /// use std::time::Duration;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .timeout(Duration::from_secs(5))
    ///     .build()?;
    /// assert!(format!("{fetcher:?}").contains("timeout: 5s"));
    ///
    /// let zero = HttpFetcher::builder("https://app.example.com/token").timeout(Duration::ZERO);
    /// assert_eq!(zero.build().unwrap_err().kind(), HttpErrorKind::InvalidConfig);
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Accepts a plain `http` URL to a host that is not this machine. Without it, `http` is
    /// accepted only for `localhost`, 127.0.0.0/8 and `::1`: elsewhere the headers (cookies,
    /// bearer tokens) and the token itself would cross the network in clear text. Call it only
    /// where that network is trusted (a private network, a service mesh that encrypts it).
    ///
    /// ```
    /// use access_manager::http::{HttpErrorKind, HttpFetcher};
    ///
    /// let refused = HttpFetcher::new("http://tokens.internal/token").unwrap_err();
    /// assert_eq!(refused.kind(), HttpErrorKind::InvalidConfig);
    ///
    /// let fetcher = HttpFetcher::builder("http://tokens.internal/token")
    ///     .allow_insecure_http()
    ///     .build()?;
    /// assert_eq!(fetcher.url(), "http://tokens.internal/token");
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn allow_insecure_http(mut self) -> Self {
        self.allow_insecure_http = true;
        self
    }

    /// Connects directly, ignoring the proxy the environment names. By default the fetcher goes
    /// through the proxy in `HTTPS_PROXY`, `HTTP_PROXY` or `ALL_PROXY` (or their lowercase
    /// forms) except for the hosts in `NO_PROXY`, as curl does: that proxy sees the whole request
    /// of an `http` URL, headers and token included, and the host name of an `https` one.
    ///
    /// ```
    /// use access_manager::http::HttpFetcher;
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token")
    ///     .no_proxy()
    ///     .build()?;
    /// assert!(format!("{fetcher:?}").contains(r#"proxy: "none""#));
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    pub fn no_proxy(mut self) -> Self {
        self.no_proxy = true;
        self
    }

    /// Builds the fetcher and its HTTP client.
    ///
    /// ```
    /// use access_manager::http::{HttpErrorKind, HttpFetcher};
    ///
    /// let fetcher = HttpFetcher::builder("https://app.example.com/token?device=1")
    ///     .bearer_auth("user-session-jwt")
    ///     .build()?;
    /// assert_eq!(fetcher.url(), "https://app.example.com/token");
    ///
    /// let err = HttpFetcher::builder("ftp://app.example.com/token").build().unwrap_err();
    /// assert_eq!(err.kind(), HttpErrorKind::InvalidConfig);
    /// assert_eq!(
    ///     err.to_string(),
    ///     "invalid HTTP fetcher configuration: unsupported URL scheme `ftp` (http or https)"
    /// );
    /// # Ok::<(), access_manager::http::HttpFetcherError>(())
    /// ```
    ///
    /// # Errors
    /// [`HttpErrorKind::InvalidConfig`]: the URL does not parse or is not `http`/`https`, it is
    /// plain `http` to a host other than this machine without
    /// [`allow_insecure_http`](Self::allow_insecure_http), a header name or value is not valid
    /// HTTP, the JSON body cannot be serialized, a JSON path has an empty part, the timeout is
    /// zero, or the TLS stack fails to start.
    pub fn build(self) -> Result<HttpFetcher, HttpFetcherError> {
        let url = Url::parse(&self.url).map_err(|e| config_error(format!("invalid URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(config_error(format!(
                "unsupported URL scheme `{}` (http or https)",
                url.scheme()
            )));
        }
        if url.scheme() == "http" && !self.allow_insecure_http && !is_loopback(&url) {
            return Err(config_error(
                "plain http to a host that is not loopback: use https, or allow_insecure_http()"
                    .into(),
            ));
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
        // The messages number the header and name the problem: the text may be a credential, and
        // a name that is no header name may be a whole `Authorization: Bearer ...` line.
        for (number, (name, value)) in (1..).zip(&self.headers) {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| config_error(format!("header {number}: {}", name_problem(name))))?;
            let mut value = HeaderValue::from_str(value).map_err(|_| {
                config_error(format!(
                    "header {number} (`{name}`): the value holds a character a header value \
                     cannot (a line break or another control character)"
                ))
            })?;
            value.set_sensitive(true);
            if name == ACCEPT || name == CONTENT_TYPE {
                headers.insert(name, value);
            } else {
                headers.append(name, value);
            }
        }
        let mut client = reqwest::Client::builder().user_agent(USER_AGENT);
        if self.no_proxy {
            client = client.no_proxy();
        }
        let client = client
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
            no_proxy: self.no_proxy,
        })
    }
}

impl fmt::Debug for HttpFetcherBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = Url::parse(&self.url).map_or_else(|_| "<invalid>".to_owned(), |u| redact(&u));
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(name, _)| match HeaderName::from_bytes(name.as_bytes()) {
                Ok(name) => format!("{name}: <redacted>"),
                // Not a header name: perhaps a whole header line, credential included.
                Err(_) => "<invalid name>: <redacted>".to_owned(),
            })
            .collect();
        f.debug_struct("HttpFetcherBuilder")
            .field("method", &self.method)
            .field("url", &url)
            .field("headers", &headers)
            .field("body", &self.body.as_ref().map(|_| "<set>"))
            .field("timeout", &self.timeout)
            .field("format", &self.format)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .field("proxy", &proxy(self.no_proxy))
            .finish()
    }
}

/// Whether `url` names this machine: `localhost`, 127.0.0.0/8 or `::1`. Plain http to it never
/// crosses a network.
fn is_loopback(url: &Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host keeps its brackets here.
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

/// What is wrong with a header name, without repeating it.
fn name_problem(name: &str) -> &'static str {
    if name.is_empty() {
        "the name is empty"
    } else if name.len() > 64 * 1024 {
        "the name is too long"
    } else {
        "the name holds a character a header name cannot (a space, `:`, a control character or \
         non-ASCII): set the name and the value apart"
    }
}

/// How the `Debug` outputs say where requests go.
pub(super) fn proxy(no_proxy: bool) -> &'static str {
    if no_proxy {
        "none"
    } else {
        "from the environment"
    }
}
