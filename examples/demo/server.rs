//! The demo's token server: the app's backend, minting tokens for the session cookie.

use super::{Timeline, ACCOUNT_SID, IDENTITY, SESSION_COOKIE};
use access_manager::clock::{Clock, SystemClock};
use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::AccessToken;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::http::uri::Authority;
use hyper::server::conn::http1;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// An API key: its SID names it in each token (`iss`), its secret signs the token.
pub(super) struct ApiKey {
    pub(super) sid: &'static str,
    pub(super) secret: &'static [u8],
}

impl ApiKey {
    /// The SID as the timeline shows it, `SK…0001`.
    pub(super) fn short(&self) -> String {
        format!("SK…{}", &self.sid[self.sid.len() - 4..])
    }
}

/// The account's API keys, in the order they come into use. The secrets are known to the token
/// server and to the services (here, the SDK clients' checks), never to the manager.
const API_KEYS: [ApiKey; 2] = [
    ApiKey {
        sid: "SK00000000000000000000000000000001",
        secret: b"demo-api-secret-keep-it-on-the-server",
    },
    ApiKey {
        sid: "SK00000000000000000000000000000002",
        secret: b"demo-api-secret-rotated-in-by-the-demo",
    },
];

/// The account's current API key, shared by the token server (which signs with it) and the
/// services (which verify with it): a rotation reaches both at once, as when the old key is
/// deleted in the Twilio console.
#[derive(Default)]
pub(super) struct KeyRing {
    current: AtomicUsize,
}

impl KeyRing {
    pub(super) fn current(&self) -> &'static ApiKey {
        &API_KEYS[self.current.load(Ordering::SeqCst)]
    }

    /// Replaces the current key by the next one; returns the old key and the new.
    pub(super) fn rotate(&self) -> (&'static ApiKey, &'static ApiKey) {
        let old = self.current.fetch_add(1, Ordering::SeqCst);
        assert!(old + 1 < API_KEYS.len(), "the demo has one rotation");
        (&API_KEYS[old], &API_KEYS[old + 1])
    }
}

pub(super) struct TokenServer {
    pub(super) ttl: Duration,
    pub(super) keys: Arc<KeyRing>,
    pub(super) requests: AtomicU32,
    /// Requests numbered in this range answer 503.
    pub(super) outage: std::ops::RangeInclusive<u32>,
    pub(super) refused: AtomicU32,
    pub(super) timeline: Timeline,
}

impl TokenServer {
    fn answer(&self, request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let n = self.requests.fetch_add(1, Ordering::SeqCst) + 1;
        let head = format!("{} {} #{n}", request.method(), request.uri().path());
        if !names_this_machine(request) {
            self.timeline
                .line("server", format!("{head} → 421 (unknown host)"));
            return respond(
                StatusCode::MISDIRECTED_REQUEST,
                "text/plain",
                "unknown host".into(),
            );
        }
        let cookie = request
            .headers()
            .get("cookie")
            .and_then(|v| v.to_str().ok());
        if cookie != Some(SESSION_COOKIE) {
            self.timeline
                .line("server", format!("{head} → 401 (no session)"));
            return respond(
                StatusCode::UNAUTHORIZED,
                "text/plain",
                "log in first".into(),
            );
        }
        if self.outage.contains(&n) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            self.timeline
                .line("server", format!("{head} → 503 (injected outage)"));
            return respond(StatusCode::SERVICE_UNAVAILABLE, "text/plain", "down".into());
        }
        let key = self.keys.current();
        let jwt = AccessToken::builder(ACCOUNT_SID, key.sid, key.secret)
            .identity(IDENTITY)
            .issued_at(SystemClock.now())
            .ttl(self.ttl)
            .grant(ChatGrant::default())
            .grant(SyncGrant::default())
            .grant(VoiceGrant {
                incoming_allow: true,
                ..Default::default()
            })
            .grant(VideoGrant::default())
            .to_jwt()
            .expect("the demo's SIDs and ttl are valid");
        self.timeline.line(
            "server",
            format!(
                "{head} → 200, new token valid {} s, signed with {}",
                self.ttl.as_secs(),
                key.short()
            ),
        );
        let body = serde_json::json!({ "identity": IDENTITY, "token": jwt }).to_string();
        respond(StatusCode::OK, "application/json", body)
    }
}

/// Whether the request's `Host` is this machine (the server listens on loopback only): a web page
/// reaching it through DNS rebinding names its own host.
fn names_this_machine(request: &Request<Incoming>) -> bool {
    let host = request.headers().get("host").and_then(|v| v.to_str().ok());
    let Some(authority) = host.and_then(|h| h.parse::<Authority>().ok()) else {
        return false;
    };
    let target = request.uri().authority();
    target.is_none_or(|t| t.host() == authority.host())
        && ["127.0.0.1", "localhost"].contains(&authority.host().to_ascii_lowercase().as_str())
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        "content-type",
        content_type.parse().expect("a valid content type"),
    );
    response
}

pub(super) async fn serve(listener: TcpListener, server: Arc<TokenServer>) {
    let mut connection = http1::Builder::new();
    // hyper's header timeout (also the idle keep-alive timeout) fires only with a timer.
    connection
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    while let Ok((stream, _)) = listener.accept().await {
        let (server, connection) = (server.clone(), connection.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = server.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = connection
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
