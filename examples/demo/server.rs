//! The demo's token server: the app's backend, minting tokens for the session cookie.

use super::{Timeline, ACCOUNT_SID, API_KEY_SID, API_SECRET, IDENTITY, SESSION_COOKIE};
use access_manager::clock::{Clock, SystemClock};
use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::AccessToken;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

pub(super) struct TokenServer {
    pub(super) ttl: Duration,
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
        let jwt = AccessToken::builder(ACCOUNT_SID, API_KEY_SID, API_SECRET)
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
            format!("{head} → 200, new token valid {} s", self.ttl.as_secs()),
        );
        let body = serde_json::json!({ "identity": IDENTITY, "token": jwt }).to_string();
        respond(StatusCode::OK, "application/json", body)
    }
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
    while let Ok((stream, _)) = listener.accept().await {
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = server.answer(&request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
