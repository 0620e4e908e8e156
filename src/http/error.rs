//! [`HttpFetcherError`]: why an [`HttpFetcher`](super::HttpFetcher) could not be built or fetch.

use reqwest::StatusCode;
use std::error::Error;
use std::fmt;

/// What kind of failure an [`HttpFetcherError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum HttpErrorKind {
    /// The builder's settings are invalid (from [`HttpFetcherBuilder::build`](super::HttpFetcherBuilder::build)).
    InvalidConfig,
    /// The server answered with a status other than 2xx.
    Status,
    /// The request did not complete within the timeout.
    Timeout,
    /// No connection could be made.
    Connect,
    /// The request or the response broke off, or a redirect could not be followed.
    Transport,
    /// The body is larger than [`MAX_BODY_LEN`](super::MAX_BODY_LEN).
    BodyTooLarge,
    /// The body was to be JSON and is not.
    MalformedJson,
    /// The JSON body has no string at the configured field.
    MissingField,
    /// The body is empty, not UTF-8, or an HTML page.
    InvalidBody,
}

/// Why an [`HttpFetcher`](super::HttpFetcher) could not be built or could not fetch.
///
/// A fetch failure reaches the manager wrapped in a [`FetchError`](crate::FetchError) (its `source()`), and the app
/// as a `RefreshFailed` event whose message is this one's. The message names the method, the URL
/// without credentials or query, and the status; never a header value or the body.
pub struct HttpFetcherError {
    pub(super) kind: HttpErrorKind,
    /// `METHOD url`, redacted; `None` for configuration errors.
    pub(super) target: Option<String>,
    pub(super) status: Option<u16>,
    pub(super) detail: String,
    pub(super) source: Option<Box<dyn Error + Send + Sync>>,
}

impl HttpFetcherError {
    /// What kind of failure this is.
    ///
    /// ```
    /// use access_manager::http::{HttpErrorKind, HttpFetcher};
    ///
    /// let err = HttpFetcher::new("not a url").unwrap_err();
    /// assert_eq!(err.kind(), HttpErrorKind::InvalidConfig);
    /// ```
    pub fn kind(&self) -> HttpErrorKind {
        self.kind
    }

    /// The HTTP status, when the server answered. A fetch failure carries this error as its
    /// `source()`.
    ///
    /// ```
    /// use access_manager::http::{HttpFetcher, HttpFetcherError};
    /// use access_manager::FetchError;
    ///
    /// fn status_of(failure: &FetchError) -> Option<u16> {
    ///     let source = std::error::Error::source(failure)?;
    ///     source.downcast_ref::<HttpFetcherError>()?.status()
    /// }
    ///
    /// // No server answered a configuration error.
    /// assert_eq!(HttpFetcher::new("not a url").unwrap_err().status(), None);
    /// # let _ = status_of;
    /// ```
    pub fn status(&self) -> Option<u16> {
        self.status
    }
}

pub(super) fn config_error(detail: String) -> HttpFetcherError {
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
