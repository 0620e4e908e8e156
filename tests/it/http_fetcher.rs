//! `HttpFetcher` against a real HTTP/1.1 server on loopback: every branch of reading an answer, and
//! one manager driven end to end through it.
#![cfg(feature = "http")]

use access_manager::clock::{Clock, ManualClock};
use access_manager::grants::{ChatGrant, SyncGrant};
use access_manager::http::{HttpErrorKind, HttpFetcher, HttpFetcherError, MAX_RETRY_AFTER};
use access_manager::{
    AccessManager, Backoff, Event, FetchError, FetchReason, FetchRequest, TokenFetcher,
};
use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ---------------------------------------------------------------------------------------------
// A tiny HTTP/1.1 server: keep-alive, Content-Length bodies, answers chosen per request.

/// A request as the server received it.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Received {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server answers.
enum Reply {
    /// A response with a Content-Length.
    Full {
        status: u16,
        headers: Vec<(&'static str, String)>,
        body: Vec<u8>,
    },
    /// A 200 without Content-Length whose body streams up to this many bytes, then closes.
    Endless(usize),
    /// Never answers.
    Hang,
}

fn reply(status: u16, content_type: &str, body: impl Into<Vec<u8>>) -> Reply {
    Reply::Full {
        status,
        headers: vec![("content-type", content_type.to_owned())],
        body: body.into(),
    }
}

fn status(status: u16) -> Reply {
    reply(status, "text/plain", format!("status {status}"))
}

type Handler = dyn Fn(usize, &Received) -> Reply + Send + Sync;

struct Server {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    received: Arc<Mutex<Vec<Received>>>,
    /// Bytes of `Endless` bodies written before the client hung up.
    streamed: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Server {
    async fn start(handler: impl Fn(usize, &Received) -> Reply + Send + Sync + 'static) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let received = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(AtomicUsize::new(0));
        let handler: Arc<Handler> = Arc::new(handler);
        let (c, r, s) = (connections.clone(), received.clone(), streamed.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, handler.clone(), r.clone(), s.clone()));
            }
        });
        Server {
            addr,
            connections,
            received,
            streamed,
            task,
        }
    }

    /// Answers every request the same way.
    async fn always(make: impl Fn() -> Reply + Send + Sync + 'static) -> Server {
        Server::start(move |_, _| make()).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    handler: Arc<Handler>,
    received: Arc<Mutex<Vec<Received>>>,
    streamed: Arc<AtomicUsize>,
) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let mut request_line = lines.next().unwrap_or("").split(' ');
        let method = request_line.next().unwrap_or("").to_owned();
        let path = request_line.next().unwrap_or("").to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + len].to_vec();
        buf.drain(..head_end + len);
        let request = Received {
            method,
            path,
            headers,
            body,
        };
        let index = {
            let mut all = received.lock().unwrap();
            all.push(request.clone());
            all.len() - 1
        };
        match handler(index, &request) {
            Reply::Hang => std::future::pending::<()>().await,
            Reply::Full {
                status,
                headers,
                body,
            } => {
                let mut out = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", body.len());
                for (n, v) in headers {
                    out.push_str(&format!("{n}: {v}\r\n"));
                }
                out.push_str("\r\n");
                let mut bytes = out.into_bytes();
                bytes.extend_from_slice(&body);
                if stream.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            Reply::Endless(max) => {
                let head =
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![b'a'; 16 * 1024];
                let mut sent = 0;
                while sent < max {
                    if stream.write_all(&chunk).await.is_err() {
                        break;
                    }
                    sent += chunk.len();
                    streamed.store(sent, Ordering::SeqCst);
                }
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers.

fn request() -> FetchRequest {
    FetchRequest::new(FetchReason::Initial, 1, None)
}

async fn fetch(fetcher: &HttpFetcher) -> Result<String, FetchError> {
    fetcher.fetch_token(request()).await
}

/// The `HttpFetcherError` inside a failed fetch.
fn http_error(error: &FetchError) -> &HttpFetcherError {
    error
        .source()
        .and_then(|e| e.downcast_ref::<HttpFetcherError>())
        .expect("an HttpFetcherError inside the FetchError")
}

async fn failure(fetcher: &HttpFetcher) -> FetchError {
    fetch(fetcher).await.expect_err("the fetch should fail")
}

const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJBQzEifQ.c2lnbmF0dXJl";

// ---------------------------------------------------------------------------------------------
// Reading the token.

#[tokio::test]
async fn text_plain_body_is_the_token_trimmed() {
    let server = Server::always(|| reply(200, "text/plain", format!("\n  {JWT} \r\n"))).await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    assert_eq!(fetch(&fetcher).await.unwrap(), JWT);
}

#[tokio::test]
async fn json_body_token_field_is_read_by_default() {
    let server = Server::always(|| {
        reply(
            200,
            "application/json; charset=utf-8",
            format!(r#"{{"identity":"alice","token":"{JWT}"}}"#),
        )
    })
    .await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    assert_eq!(fetch(&fetcher).await.unwrap(), JWT);
}

#[tokio::test]
async fn json_field_reads_a_nested_path_whatever_the_content_type() {
    let server = Server::always(|| {
        reply(
            200,
            "text/plain",
            format!(r#"{{"data":{{"token":" {JWT} "}}}}"#),
        )
    })
    .await;
    let fetcher = HttpFetcher::builder(server.url("/token"))
        .json_field("data.token")
        .build()
        .unwrap();
    assert_eq!(fetch(&fetcher).await.unwrap(), JWT);
}

#[tokio::test]
async fn plain_text_reads_the_whole_body_even_when_labelled_json() {
    let server = Server::always(|| reply(200, "application/json", JWT)).await;
    let fetcher = HttpFetcher::builder(server.url("/t"))
        .plain_text()
        .build()
        .unwrap();
    assert_eq!(fetch(&fetcher).await.unwrap(), JWT);
}

#[tokio::test]
async fn missing_json_field_is_a_transient_failure_that_hides_the_body() {
    let server = Server::always(|| {
        reply(
            200,
            "application/json",
            r#"{"data":{"jwt":"SECRET-TOKEN-TEXT"}}"#,
        )
    })
    .await;
    let fetcher = HttpFetcher::builder(server.url("/token"))
        .json_field("data.token")
        .build()
        .unwrap();
    let err = failure(&fetcher).await;
    assert!(!err.is_permanent());
    assert_eq!(http_error(&err).kind(), HttpErrorKind::MissingField);
    assert_eq!(http_error(&err).status(), Some(200));
    let msg = err.to_string();
    assert!(msg.contains("data.token"), "{msg}");
    assert!(!msg.contains("SECRET-TOKEN-TEXT"), "{msg}");
}

#[tokio::test]
async fn a_json_field_that_is_not_a_string_counts_as_missing() {
    let server = Server::always(|| reply(200, "application/json", r#"{"token":42}"#)).await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    assert_eq!(
        http_error(&failure(&fetcher).await).kind(),
        HttpErrorKind::MissingField
    );
}

#[tokio::test]
async fn malformed_json_is_a_transient_failure() {
    let server =
        Server::always(|| reply(200, "application/json", r#"{"token": "SECRET-TOKEN-TEXT"#)).await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    let err = failure(&fetcher).await;
    assert!(!err.is_permanent());
    assert_eq!(http_error(&err).kind(), HttpErrorKind::MalformedJson);
    assert!(!err.to_string().contains("SECRET-TOKEN-TEXT"), "{err}");
}

#[tokio::test]
async fn empty_body_html_page_and_non_utf8_are_invalid_bodies() {
    for bad in [
        reply(200, "text/plain", " \n "),
        reply(
            200,
            "text/html; charset=utf-8",
            "<html>SECRET-TOKEN-TEXT</html>",
        ),
        reply(200, "text/plain", vec![0xff, 0xfe, 0x00]),
    ] {
        let bad = Mutex::new(Some(bad));
        let server = Server::start(move |_, _| bad.lock().unwrap().take().unwrap()).await;
        let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
        let err = failure(&fetcher).await;
        assert!(!err.is_permanent());
        assert_eq!(http_error(&err).kind(), HttpErrorKind::InvalidBody, "{err}");
        assert!(!err.to_string().contains("SECRET-TOKEN-TEXT"), "{err}");
    }
}

#[tokio::test]
async fn an_html_page_without_an_html_content_type_is_an_invalid_body() {
    let page = |content_type: Option<&str>, body: &str| Reply::Full {
        status: 200,
        headers: content_type
            .map(|ct| ("content-type", ct.to_owned()))
            .into_iter()
            .collect(),
        body: body.as_bytes().to_vec(),
    };
    let cases = [
        (
            false,
            page(Some("text/plain"), "<!DOCTYPE html><p>SECRET-TOKEN-TEXT"),
        ),
        (false, page(None, " \r\n\t<HTML>SECRET-TOKEN-TEXT</HTML>")),
        (
            false,
            page(Some("application/octet-stream"), "<!doctype HTML>"),
        ),
        (
            true,
            page(Some("text/plain"), "\n<html lang=\"en\">SECRET-TOKEN-TEXT"),
        ),
        (
            true,
            page(Some("application/json"), "<!DocType html>SECRET-TOKEN-TEXT"),
        ),
    ];
    for (plain_text, bad) in cases {
        let bad = Mutex::new(Some(bad));
        let server = Server::start(move |_, _| bad.lock().unwrap().take().unwrap()).await;
        let mut builder = HttpFetcher::builder(server.url("/token"));
        if plain_text {
            builder = builder.plain_text();
        }
        let fetcher = builder.build().unwrap();
        let err = failure(&fetcher).await;
        assert!(!err.is_permanent(), "{err}");
        assert_eq!(http_error(&err).kind(), HttpErrorKind::InvalidBody, "{err}");
        assert_eq!(http_error(&err).status(), Some(200));
        let msg = err.to_string();
        assert!(msg.contains("expected a token, got an HTML page"), "{msg}");
        assert!(!msg.contains("SECRET-TOKEN-TEXT"), "{msg}");
    }
}

#[tokio::test]
async fn a_declared_body_over_64_kib_is_refused_unread() {
    let server = Server::always(|| reply(200, "text/plain", vec![b'a'; 64 * 1024 + 1])).await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    let err = failure(&fetcher).await;
    assert_eq!(http_error(&err).kind(), HttpErrorKind::BodyTooLarge);
    assert!(err.to_string().contains("65536"), "{err}");
}

#[tokio::test]
async fn a_body_of_exactly_64_kib_is_read() {
    let server = Server::always(|| reply(200, "text/plain", vec![b'a'; 64 * 1024])).await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    assert_eq!(fetch(&fetcher).await.unwrap().len(), 64 * 1024);
}

#[tokio::test]
async fn an_undeclared_endless_body_is_cut_off_after_64_kib() {
    const OFFERED: usize = 256 * 1024 * 1024;
    let server = Server::always(|| Reply::Endless(OFFERED)).await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    let err = failure(&fetcher).await;
    assert_eq!(http_error(&err).kind(), HttpErrorKind::BodyTooLarge);
    // The fetcher hung up: the server could not write the whole body (its writes stop once the
    // socket buffers fill, or fail once the socket closes).
    drop(fetcher);
    assert!(server.streamed.load(Ordering::SeqCst) < OFFERED);
}

// ---------------------------------------------------------------------------------------------
// Statuses.

#[tokio::test]
async fn unauthorized_forbidden_and_not_found_are_permanent() {
    let server = Server::start(|_, r| match r.path.as_str() {
        "/401" => status(401),
        "/403" => status(403),
        "/404" => status(404),
        _ => status(400),
    })
    .await;
    for code in [401u16, 403, 404, 400] {
        let fetcher = HttpFetcher::new(server.url(&format!("/{code}"))).unwrap();
        let err = failure(&fetcher).await;
        assert!(err.is_permanent(), "{code}: {err}");
        assert_eq!(http_error(&err).kind(), HttpErrorKind::Status);
        assert_eq!(http_error(&err).status(), Some(code));
        assert!(err.to_string().contains(&format!("HTTP {code}")), "{err}");
    }
}

#[tokio::test]
async fn timeout_too_many_requests_and_server_errors_are_transient() {
    let server = Server::start(|_, r| status(r.path[1..].parse().unwrap())).await;
    for code in [408u16, 429, 500, 503] {
        let fetcher = HttpFetcher::new(server.url(&format!("/{code}"))).unwrap();
        let err = failure(&fetcher).await;
        assert!(!err.is_permanent(), "{code}: {err}");
        assert_eq!(http_error(&err).status(), Some(code));
        assert_eq!(err.retry_after(), None);
        let msg = err.to_string();
        assert!(msg.contains(&format!("HTTP {code}")), "{msg}");
        assert!(
            msg.contains(&format!("GET http://{}/{code}", server.addr)),
            "{msg}"
        );
    }
}

#[tokio::test]
async fn retry_after_in_seconds_is_passed_on() {
    let server = Server::always(|| Reply::Full {
        status: 429,
        headers: vec![("retry-after", "7".into())],
        body: Vec::new(),
    })
    .await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    let err = failure(&fetcher).await;
    assert!(!err.is_permanent());
    assert_eq!(err.retry_after(), Some(Duration::from_secs(7)));
}

#[tokio::test]
async fn retry_after_as_a_date_counts_from_the_date_header() {
    let server = Server::always(|| Reply::Full {
        status: 503,
        headers: vec![
            ("date", "Wed, 21 Oct 2015 07:28:00 GMT".into()),
            ("retry-after", "Wed, 21 Oct 2015 07:29:30 GMT".into()),
        ],
        body: Vec::new(),
    })
    .await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    assert_eq!(
        failure(&fetcher).await.retry_after(),
        Some(Duration::from_secs(90))
    );
}

#[tokio::test]
async fn retry_after_with_more_digits_than_u64_holds_is_capped() {
    let server = Server::always(|| Reply::Full {
        status: 503,
        headers: vec![("retry-after", "999999999999999999999999999999".into())],
        body: Vec::new(),
    })
    .await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    assert_eq!(failure(&fetcher).await.retry_after(), Some(MAX_RETRY_AFTER));
}

#[tokio::test]
async fn retry_after_on_a_permanent_failure_is_dropped() {
    let server = Server::always(|| Reply::Full {
        status: 403,
        headers: vec![("retry-after", "5".into())],
        body: Vec::new(),
    })
    .await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    let err = failure(&fetcher).await;
    assert!(err.is_permanent());
    assert_eq!(err.retry_after(), None);
}

// ---------------------------------------------------------------------------------------------
// The network.

#[tokio::test]
async fn a_server_that_never_answers_times_out_transiently() {
    let server = Server::always(|| Reply::Hang).await;
    let fetcher = HttpFetcher::builder(server.url("/token"))
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let err = failure(&fetcher).await;
    assert!(!err.is_permanent());
    assert_eq!(http_error(&err).kind(), HttpErrorKind::Timeout);
    assert!(err.to_string().contains("timed out"), "{err}");
}

#[tokio::test]
async fn a_refused_connection_is_transient() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let fetcher = HttpFetcher::new(format!("http://{addr}/token")).unwrap();
    let err = failure(&fetcher).await;
    assert!(!err.is_permanent());
    assert_eq!(http_error(&err).kind(), HttpErrorKind::Connect);
    assert_eq!(http_error(&err).status(), None);
    assert!(err.to_string().contains("no response"), "{err}");
}

#[tokio::test]
async fn get_sends_the_configured_headers_and_no_body() {
    let server = Server::always(|| reply(200, "text/plain", JWT)).await;
    let fetcher = HttpFetcher::builder(server.url("/token?device=1"))
        .header("Cookie", "session=abc123")
        .bearer_auth("user-jwt")
        .header("X-Custom", "one")
        .build()
        .unwrap();
    fetch(&fetcher).await.unwrap();
    let got = server.received();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].method, "GET");
    assert_eq!(got[0].path, "/token?device=1");
    assert_eq!(got[0].header("cookie"), Some("session=abc123"));
    assert_eq!(got[0].header("authorization"), Some("Bearer user-jwt"));
    assert_eq!(got[0].header("x-custom"), Some("one"));
    assert!(got[0]
        .header("user-agent")
        .unwrap()
        .starts_with("access-manager/"));
    assert!(got[0].body.is_empty());
}

#[tokio::test]
async fn a_json_body_is_posted_with_its_content_type() {
    let server =
        Server::always(|| reply(200, "application/json", format!(r#"{{"token":"{JWT}"}}"#))).await;
    let fetcher = HttpFetcher::builder(server.url("/token"))
        .json_body(&serde_json::json!({ "identity": "alice", "ttl": 600 }))
        .build()
        .unwrap();
    assert_eq!(fetch(&fetcher).await.unwrap(), JWT);
    let got = server.received();
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].header("content-type"), Some("application/json"));
    let body: serde_json::Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body, serde_json::json!({ "identity": "alice", "ttl": 600 }));
}

#[tokio::test]
async fn post_without_a_body_and_get_with_one_are_as_asked() {
    let server = Server::always(|| reply(200, "text/plain", JWT)).await;
    let post = HttpFetcher::builder(server.url("/a"))
        .post()
        .build()
        .unwrap();
    fetch(&post).await.unwrap();
    let get = HttpFetcher::builder(server.url("/b"))
        .json_body(&serde_json::json!({}))
        .get()
        .build()
        .unwrap();
    fetch(&get).await.unwrap();
    let got = server.received();
    assert_eq!((got[0].method.as_str(), got[0].body.len()), ("POST", 0));
    assert_eq!(
        (got[1].method.as_str(), got[1].body.as_slice()),
        ("GET", &b"{}"[..])
    );
}

#[tokio::test]
async fn one_connection_serves_several_fetches() {
    let server = Server::always(|| reply(200, "text/plain", JWT)).await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    for _ in 0..5 {
        assert_eq!(fetch(&fetcher).await.unwrap(), JWT);
    }
    assert_eq!(server.received().len(), 5);
    assert_eq!(server.connections(), 1);
}

#[tokio::test]
async fn a_same_origin_redirect_is_followed_with_the_headers() {
    let server = Server::start(|_, r| match r.path.as_str() {
        "/old" => Reply::Full {
            status: 307,
            headers: vec![("location", "/new".into())],
            body: Vec::new(),
        },
        _ => reply(200, "text/plain", JWT),
    })
    .await;
    let fetcher = HttpFetcher::builder(server.url("/old"))
        .header("X-Api-Key", "key-1")
        .build()
        .unwrap();
    assert_eq!(fetch(&fetcher).await.unwrap(), JWT);
    let got = server.received();
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].path, "/new");
    assert_eq!(got[1].header("x-api-key"), Some("key-1"));
}

#[tokio::test]
async fn a_redirect_to_another_origin_is_a_permanent_failure_and_sends_nothing_there() {
    let elsewhere = Server::always(|| reply(200, "text/plain", JWT)).await;
    let target = elsewhere.url("/login");
    let server = Server::always(move || Reply::Full {
        status: 302,
        headers: vec![("location", target.clone())],
        body: Vec::new(),
    })
    .await;
    let fetcher = HttpFetcher::builder(server.url("/token"))
        .header("X-Api-Key", "key-1")
        .build()
        .unwrap();
    let err = failure(&fetcher).await;
    assert!(err.is_permanent(), "{err}");
    assert_eq!(http_error(&err).status(), Some(302));
    assert!(err.to_string().contains("another origin"), "{err}");
    assert!(elsewhere.received().is_empty());
}

#[tokio::test]
async fn an_unfollowed_3xx_reports_what_happened_not_another_origin() {
    let server = Server::start(|_, r| {
        let (status, location) = match r.path.as_str() {
            "/not-modified" => (304, None),
            "/no-location" => (302, None),
            "/bad-location" => (301, Some("http://[::1")),
            _ => (300, Some("/choice")),
        };
        Reply::Full {
            status,
            headers: location
                .map(|l| ("location", l.to_owned()))
                .into_iter()
                .collect(),
            body: Vec::new(),
        }
    })
    .await;
    for (path, status, says) in [
        (
            "/not-modified",
            304,
            "not modified, yet the request was not conditional",
        ),
        ("/no-location", 302, "redirect without a Location header"),
        ("/bad-location", 301, "redirect to an invalid Location"),
        ("/multiple", 300, "not a redirect the fetcher follows"),
    ] {
        let fetcher = HttpFetcher::new(server.url(path)).unwrap();
        let err = failure(&fetcher).await;
        assert!(err.is_permanent(), "{path}: {err}");
        assert_eq!(http_error(&err).status(), Some(status), "{path}");
        let msg = err.to_string();
        assert!(msg.contains(says), "{path}: {msg}");
        assert!(!msg.contains("another origin"), "{path}: {msg}");
    }
}

#[tokio::test]
async fn endless_same_origin_redirects_are_a_transient_failure() {
    let server = Server::always(|| Reply::Full {
        status: 302,
        headers: vec![("location", "/again".into())],
        body: Vec::new(),
    })
    .await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    let err = failure(&fetcher).await;
    assert!(!err.is_permanent());
    assert_eq!(http_error(&err).kind(), HttpErrorKind::Transport);
    assert!(err.to_string().contains("too many redirects"), "{err}");
    assert_eq!(server.received().len(), 11);
}

// ---------------------------------------------------------------------------------------------
// Secrets stay out of messages.

#[tokio::test]
async fn messages_name_the_url_without_credentials_or_query() {
    let server = Server::always(|| status(503)).await;
    let url = format!("http://user:pw@{}/path?secret=1#frag", server.addr);
    let fetcher = HttpFetcher::builder(&url)
        .header("Cookie", "session=cookie-value")
        .build()
        .unwrap();
    let err = failure(&fetcher).await;
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("GET http://{}/path: HTTP 503", server.addr)),
        "{msg}"
    );
    let debug = format!("{err:?} {fetcher:?}");
    for text in [&msg, &debug] {
        for secret in ["pw", "user", "secret", "frag", "cookie-value"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
    assert!(debug.contains("cookie: <redacted>"), "{debug}");
    assert_eq!(fetcher.url(), format!("http://{}/path", server.addr));
}

#[tokio::test]
async fn transport_errors_hide_credentials_and_query_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    for scheme in ["http", "https"] {
        let fetcher = HttpFetcher::new(format!("{scheme}://user:pw@{addr}/path?secret=1")).unwrap();
        let err = failure(&fetcher).await;
        let mut chain = format!("{err} {err:?}");
        let mut source = err.source();
        while let Some(e) = source {
            chain.push_str(&format!(" | {e} {e:?}"));
            source = e.source();
        }
        assert!(
            chain.contains(&format!("{scheme}://{addr}/path")),
            "{chain}"
        );
        for secret in ["pw", "user", "secret"] {
            assert!(!chain.contains(secret), "{secret} leaked: {chain}");
        }
    }
}

#[test]
fn invalid_settings_are_refused_at_build_without_echoing_values() {
    let kind = |r: Result<HttpFetcher, HttpFetcherError>| r.unwrap_err().kind();
    assert_eq!(
        kind(HttpFetcher::new("not a url")),
        HttpErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(HttpFetcher::new("ftp://example.com/")),
        HttpErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(
            HttpFetcher::builder("https://h/")
                .timeout(Duration::ZERO)
                .build()
        ),
        HttpErrorKind::InvalidConfig
    );
    assert_eq!(
        kind(
            HttpFetcher::builder("https://h/")
                .json_field("data..token")
                .build()
        ),
        HttpErrorKind::InvalidConfig
    );
    let err = HttpFetcher::builder("https://h/")
        .header("Cookie", "secret\nvalue")
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), HttpErrorKind::InvalidConfig);
    assert!(err.to_string().contains("cookie"), "{err}");
    assert!(!err.to_string().contains("secret"), "{err}");
}

#[test]
fn a_header_error_names_the_problem_never_the_text() {
    let bad_name = HttpFetcher::builder("https://h/")
        .header("X-Ok", "fine")
        .header("Authorization: Bearer s3cret", "");
    let debug = format!("{bad_name:?}");
    assert!(!debug.contains("s3cret"), "{debug}");
    let err = bad_name.build().unwrap_err();
    assert_eq!(err.kind(), HttpErrorKind::InvalidConfig);
    let msg = err.to_string();
    assert!(
        msg.contains("header 2: the name holds a character a header name cannot"),
        "{msg}"
    );
    for text in [&msg, &format!("{err:?}")] {
        assert!(!text.contains("s3cret"), "{text}");
        assert!(!text.contains("Bearer"), "{text}");
    }
    let empty = HttpFetcher::builder("https://h/").header("", "v").build();
    assert!(
        empty
            .unwrap_err()
            .to_string()
            .contains("header 1: the name is empty"),
        "an empty name"
    );
    for builder in [
        HttpFetcher::builder("https://h/").bearer_auth("s3cret\r\nX-Injected: 1"),
        HttpFetcher::builder("https://h/").header("X-Api-Key", "s3cret\u{7f}"),
    ] {
        let msg = builder.build().unwrap_err().to_string();
        assert!(msg.contains("the value holds a character"), "{msg}");
        assert!(!msg.contains("s3cret"), "{msg}");
    }
}

#[test]
fn plain_http_is_refused_at_build_unless_the_host_is_loopback_or_it_is_allowed() {
    for url in [
        "http://app.example.com/token",
        "http://10.0.0.1:3000/token",
        "http://127.0.0.1.nip.io/token",
        "http://localhost.example.com/token",
        "http://0.0.0.0:3000/token",
    ] {
        let err = HttpFetcher::new(url).unwrap_err();
        assert_eq!(err.kind(), HttpErrorKind::InvalidConfig, "{url}");
        let msg = err.to_string();
        assert!(
            msg.contains("plain http to a host that is not loopback"),
            "{url}: {msg}"
        );
        assert!(msg.contains("allow_insecure_http"), "{url}: {msg}");
        let allowed = HttpFetcher::builder(url).allow_insecure_http().build();
        assert!(allowed.is_ok(), "{url}: {allowed:?}");
    }
    for url in [
        "http://127.0.0.1:3000/token",
        "http://127.4.5.6/token",
        "http://[::1]:3000/token",
        "http://localhost/token",
        "http://LOCALHOST:8080/token",
        "https://app.example.com/token",
    ] {
        assert!(HttpFetcher::new(url).is_ok(), "{url}");
    }
}

#[test]
fn fetcher_is_send_sync_and_fits_in_a_manager() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<HttpFetcher>();
    assert_send_sync::<HttpFetcherError>();
}

// ---------------------------------------------------------------------------------------------
// End to end: a manager on a fake clock, fetching through HTTP, survives a 503.

#[tokio::test]
async fn manager_gets_a_token_over_http_after_a_503_and_a_backoff_on_its_clock() {
    let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
    let clock = ManualClock::new(start);
    let jwt = access_manager::AccessToken::builder(
        "AC0123456789abcdef0123456789abcdef",
        "SKfedcba9876543210fedcba9876543210",
        "server-secret",
    )
    .identity("alice")
    .issued_at(start)
    .ttl(Duration::from_secs(600))
    .grant(ChatGrant::default())
    .grant(SyncGrant::default())
    .to_jwt()
    .unwrap();
    let served = jwt.clone();
    let server = Server::start(move |i, _| match i {
        0 => Reply::Full {
            status: 503,
            headers: vec![("content-type", "text/plain".into())],
            body: b"down for maintenance".to_vec(),
        },
        _ => reply(
            200,
            "application/json",
            format!(r#"{{"token":"{served}"}}"#),
        ),
    })
    .await;
    let fetcher = HttpFetcher::new(server.url("/token")).unwrap();
    let manager = AccessManager::builder()
        .fetcher(fetcher)
        .clock(clock.clone())
        .backoff(Backoff::default().without_jitter())
        .build()
        .unwrap();
    let mut events = manager.subscribe();

    // The initial fetch meets the 503: the retry is due 1 s later on the fake clock.
    let Some(Event::RefreshFailed {
        attempt,
        error,
        retry_at,
    }) = events.recv().await
    else {
        panic!("expected RefreshFailed first");
    };
    assert_eq!(attempt, 1);
    assert!(error.contains("HTTP 503"), "{error}");
    assert_eq!(retry_at, Some(start + Duration::from_secs(1)));
    assert!(manager.token().is_none());
    assert_eq!(server.received().len(), 1);

    clock.advance(Duration::from_secs(1));
    let Some(Event::TokenUpdated { token }) = events.recv().await else {
        panic!("expected TokenUpdated after the retry");
    };
    assert!(crate::common::is_of(&token, &jwt));
    assert_eq!(token.identity(), Some("alice"));
    assert_eq!(manager.token().unwrap().as_str(), jwt);
    assert_eq!(server.received().len(), 2);
    assert_eq!(clock.now(), start + Duration::from_secs(1));
    manager.shutdown().await;
}
