//! Your backend's token endpoint: the server every Twilio app needs, in about a page.
//!
//! ```sh
//! TWILIO_ACCOUNT_SID=AC... TWILIO_API_KEY_SID=SK... TWILIO_API_KEY_SECRET=... \
//!     cargo run --example token_server
//! curl -X POST -H 'Authorization: Bearer alice-session-key' http://127.0.0.1:3000/token
//! ```
//!
//! `POST /token` with `Authorization: Bearer <session key>` mints a token for the user the key
//! belongs to ([`USERS`] stands in for your login sessions) and answers
//! `{"token": "...", "identity": "alice", "expires_in": 600}`, uncached. The token has a video grant,
//! and chat, sync and voice (outgoing) grants when `TWILIO_CHAT_SERVICE_SID`,
//! `TWILIO_SYNC_SERVICE_SID` and `TWILIO_VOICE_APP_SID` are set. It lives `TOKEN_TTL_SECS` (default
//! 600: short, since the client refreshes it). The server listens on `BIND` (default
//! 127.0.0.1:3000). 401 without a known key, 405 for other methods, 404 elsewhere. One line a
//! request on stderr: method, path, status, identity; never the secret, a key or a token.
//! Exit status 2 when the configuration is missing or invalid.

use access_manager::clock::{Clock, SystemClock};
use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::{AccessToken, TokenError};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE,
};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;

/// Session keys and their users: stands in for your app's login sessions.
pub const USERS: &[(&str, &str)] = &[("alice-session-key", "alice"), ("bob-session-key", "bob")];

const REQUIRED: [&str; 3] = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_API_KEY_SID",
    "TWILIO_API_KEY_SECRET",
];

/// What the server mints with, from the environment. The secret stays private and has no `Debug`.
pub struct Config {
    pub account_sid: String,
    pub api_key_sid: String,
    api_key_secret: String,
    pub chat_service_sid: Option<String>,
    pub sync_service_sid: Option<String>,
    pub voice_app_sid: Option<String>,
    pub ttl: Duration,
    pub bind: SocketAddr,
}

impl Config {
    pub fn from_env() -> Result<Config, String> {
        let env = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        Config::from_env_map(&env)
    }

    /// The configuration from these variables; empty ones count as unset. The error says what is
    /// missing or wrong, never a value of the secret.
    pub fn from_env_map(env: &HashMap<String, String>) -> Result<Config, String> {
        let get = |name: &str| Some(env.get(name)?.trim().to_owned()).filter(|v| !v.is_empty());
        let missing: Vec<&str> = REQUIRED.into_iter().filter(|n| get(n).is_none()).collect();
        if !missing.is_empty() {
            return Err(format!(
                "required environment variables not set: {}",
                missing.join(", ")
            ));
        }
        let ttl = match get("TOKEN_TTL_SECS") {
            None => 600,
            Some(v) => v
                .parse()
                .ok()
                .filter(|s| (1..=86_400).contains(s))
                .ok_or_else(|| {
                    format!("TOKEN_TTL_SECS must be whole seconds from 1 to 86400, not {v:?}")
                })?,
        };
        let bind = get("BIND").unwrap_or_else(|| "127.0.0.1:3000".into());
        let config = Config {
            account_sid: get(REQUIRED[0]).unwrap_or_default(),
            api_key_sid: get(REQUIRED[1]).unwrap_or_default(),
            api_key_secret: get(REQUIRED[2]).unwrap_or_default(),
            chat_service_sid: get("TWILIO_CHAT_SERVICE_SID"),
            sync_service_sid: get("TWILIO_SYNC_SERVICE_SID"),
            voice_app_sid: get("TWILIO_VOICE_APP_SID"),
            ttl: Duration::from_secs(ttl),
            bind: bind
                .parse()
                .map_err(|_| format!("BIND must be ip:port, not {bind:?}"))?,
        };
        // Mint once now, so that a bad SID stops the server instead of failing every request.
        config
            .mint("check")
            .map_err(|e| format!("cannot mint tokens: {e}"))?;
        Ok(config)
    }

    fn mint(&self, identity: &str) -> Result<String, TokenError> {
        let mut token =
            AccessToken::builder(&self.account_sid, &self.api_key_sid, &self.api_key_secret)
                .identity(identity)
                .ttl(self.ttl)
                .grant(VideoGrant::default());
        if let Some(sid) = &self.chat_service_sid {
            token = token.grant(ChatGrant {
                service_sid: Some(sid.clone()),
                ..Default::default()
            });
        }
        if let Some(sid) = &self.sync_service_sid {
            token = token.grant(SyncGrant {
                service_sid: Some(sid.clone()),
                ..Default::default()
            });
        }
        if let Some(sid) = &self.voice_app_sid {
            // Add `incoming_allow: true` for users who should receive calls too.
            let voice = VoiceGrant {
                outgoing_application_sid: Some(sid.clone()),
                ..Default::default()
            };
            token = token.grant(voice);
        }
        token.to_jwt()
    }
}

/// Serves `POST /token` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: Config) {
    let config = Arc::new(config);
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, usually: pause rather than spin.
                eprintln!("token_server: accept failed: {e}");
                SystemClock.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let config = config.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&config, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let connection = hyper::server::conn::http1::Builder::new();
            let _ = connection
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer<B>(config: &Config, request: &Request<B>) -> Response<Full<Bytes>> {
    let (response, identity) = route(config, request);
    // The path only: a query string could hold a credential.
    let (method, path) = (request.method(), request.uri().path());
    eprintln!(
        "{method} {path} {} {}",
        response.status().as_u16(),
        identity.unwrap_or("-")
    );
    response
}

fn route<B>(
    config: &Config,
    request: &Request<B>,
) -> (Response<Full<Bytes>>, Option<&'static str>) {
    if request.uri().path() != "/token" {
        return (
            reply(StatusCode::NOT_FOUND, json!({"error": "not found"})),
            None,
        );
    }
    if request.method() != Method::POST {
        let mut response = reply(StatusCode::METHOD_NOT_ALLOWED, json!({"error": "use POST"}));
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("POST"));
        return (response, None);
    }
    let Some(identity) = session_user(request) else {
        let mut response = reply(StatusCode::UNAUTHORIZED, json!({"error": "unauthorized"}));
        response
            .headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return (response, None);
    };
    let response = match config.mint(identity) {
        Ok(token) => reply(
            StatusCode::OK,
            json!({"token": token, "identity": identity, "expires_in": config.ttl.as_secs()}),
        ),
        Err(e) => {
            eprintln!("token_server: minting failed: {e}");
            reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                json!({"error": "cannot mint"}),
            )
        }
    };
    (response, Some(identity))
}

/// The user whose session key is the bearer credential, compared in constant time.
fn session_user<B>(request: &Request<B>) -> Option<&'static str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let key = key.trim().as_bytes();
    USERS
        .iter()
        .find(|(k, _)| bool::from(k.as_bytes().ct_eq(key)))
        .map(|&(_, user)| user)
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(problem) => {
            eprintln!("token_server: {problem} (see examples/token_server.rs)");
            return ExitCode::from(2);
        }
    };
    let listener = match TcpListener::bind(config.bind).await {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("token_server: cannot listen on {}: {e}", config.bind);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(config.bind);
    eprintln!("token_server: listening on http://{addr}/token");
    serve(listener, config).await;
    ExitCode::SUCCESS
}
