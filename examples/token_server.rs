//! Your backend's token endpoint: the server every Twilio app needs, in about two pages.
//!
//! ```sh
//! TWILIO_ACCOUNT_SID=AC... TWILIO_API_KEY_SID=SK... TWILIO_API_KEY_SECRET=... \
//!     SESSION_KEYS_GENERATE=alice,bob cargo run --example token_server
//! # prints a fresh key for alice and one for bob, then:
//! curl -X POST -H "Authorization: Bearer $ALICE_KEY" http://127.0.0.1:3000/token
//! ```
//!
//! `POST /token` with `Authorization: Bearer <session key>` mints a token for the user the key
//! belongs to and answers `{"token": "...", "identity": "alice", "expires_in": 600}`, uncached. The
//! token has a video grant, and chat, sync and voice (outgoing) grants when
//! `TWILIO_CHAT_SERVICE_SID`, `TWILIO_SYNC_SERVICE_SID` and `TWILIO_VOICE_APP_SID` are set. It lives
//! `TOKEN_TTL_SECS` (default 600: short, since the client refreshes it). 401 without a known key, 405
//! for other methods, 404 elsewhere. One line a request on stderr: method, path, status, identity;
//! never the secret, a key or a token. Exit status 2 when the configuration is missing or invalid.
//!
//! It answers only requests that name an expected host (421 otherwise), so that a web page the
//! developer visits cannot reach it through DNS rebinding: the bind address (default
//! 127.0.0.1:3000, from `BIND`), `localhost` on a loopback bind, and the names in `ALLOWED_HOSTS`
//! (separated by commas, no port). A bind that is not loopback needs `ALLOW_PUBLIC_BIND=1`, with TLS
//! terminated in front of the server; one on every address (0.0.0.0, ::) needs `ALLOWED_HOSTS`.
//!
//! A client gets 10 s to send a request's head and may stay idle 10 s between requests; at most 256
//! connections are served at once (`Config::header_read_timeout`, `Config::max_connections`).
//!
//! The session keys stand in for your app's login sessions; exactly one of:
//! - `SESSION_KEYS`: `identity=key` entries separated by commas;
//! - `SESSION_KEYS_FILE`: a file of `identity=key` lines (blank lines and `#` comments skipped);
//! - `SESSION_KEYS_GENERATE`: identities separated by commas, for a local try-out: a random key
//!   for each, made at start and printed once on stdout (never in the log); they end with the run.
//!
//! A key is at least 16 characters of visible ASCII other than `,`; no two entries share one.

use access_manager::clock::{Clock, SystemClock};
use access_manager::grants::{ChatGrant, SyncGrant, VideoGrant, VoiceGrant};
use access_manager::{AccessToken, TokenError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HOST, WWW_AUTHENTICATE,
};
use hyper::http::uri::Authority;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

const REQUIRED: [&str; 3] = [
    "TWILIO_ACCOUNT_SID",
    "TWILIO_API_KEY_SID",
    "TWILIO_API_KEY_SECRET",
];

/// How long a client may take to send a request's head, or stay idle between requests: 10 s.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How many connections are served at once: 256.
pub const MAX_CONNECTIONS: NonZeroUsize = NonZeroUsize::new(256).unwrap();

/// The shortest session key accepted: shorter ones can be guessed.
const MIN_KEY_LEN: usize = 16;
/// The variables that give session keys, one of which must be set.
const KEY_SOURCES: [&str; 3] = ["SESSION_KEYS", "SESSION_KEYS_FILE", "SESSION_KEYS_GENERATE"];

/// One login session: the bearer key and whom it mints for. No `Debug`: the key is a credential.
struct Session {
    identity: String,
    key: String,
}

/// Where the session keys came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySource {
    /// `SESSION_KEYS` or `SESSION_KEYS_FILE`.
    Configured,
    /// `SESSION_KEYS_GENERATE`: made at start; `main` prints them once.
    Generated,
}

/// What the server mints with, from the environment. The secret and the session keys stay private,
/// and there is no `Debug`.
pub struct Config {
    pub account_sid: String,
    pub api_key_sid: String,
    api_key_secret: String,
    pub chat_service_sid: Option<String>,
    pub sync_service_sid: Option<String>,
    pub voice_app_sid: Option<String>,
    pub ttl: Duration,
    pub bind: SocketAddr,
    /// The host names requests may name, lowercase, IPv6 without brackets: the bind address
    /// (unless 0.0.0.0 or ::), `localhost` on a loopback bind, and `ALLOWED_HOSTS`.
    pub hosts: Vec<String>,
    sessions: Vec<Session>,
    pub key_source: KeySource,
    /// How long a connection may take to send a request's head, and stay idle between requests
    /// (default [`HEADER_READ_TIMEOUT`]).
    pub header_read_timeout: Duration,
    /// How many connections are served at once (default [`MAX_CONNECTIONS`]); further clients wait
    /// in the listen queue.
    pub max_connections: NonZeroUsize,
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
        let bind: SocketAddr = bind
            .parse()
            .map_err(|_| format!("BIND must be ip:port, not {bind:?}"))?;
        let hosts = hosts(bind, get("ALLOWED_HOSTS"), get("ALLOW_PUBLIC_BIND"))?;
        let (sessions, key_source) = sessions(&get)?;
        let config = Config {
            account_sid: get(REQUIRED[0]).unwrap_or_default(),
            api_key_sid: get(REQUIRED[1]).unwrap_or_default(),
            api_key_secret: get(REQUIRED[2]).unwrap_or_default(),
            chat_service_sid: get("TWILIO_CHAT_SERVICE_SID"),
            sync_service_sid: get("TWILIO_SYNC_SERVICE_SID"),
            voice_app_sid: get("TWILIO_VOICE_APP_SID"),
            ttl: Duration::from_secs(ttl),
            bind,
            hosts,
            sessions,
            key_source,
            header_read_timeout: HEADER_READ_TIMEOUT,
            max_connections: MAX_CONNECTIONS,
        };
        // Mint once for each identity now, so that a bad SID or identity stops the server instead
        // of failing every request.
        for session in &config.sessions {
            config
                .mint(&session.identity)
                .map_err(|e| format!("cannot mint tokens: {e}"))?;
        }
        Ok(config)
    }

    /// The user whose session key is `key`. Every key is compared, each in constant time.
    fn identity_of(&self, key: &[u8]) -> Option<&str> {
        let mut found = None;
        for session in &self.sessions {
            if bool::from(session.key.as_bytes().ct_eq(key)) {
                found = Some(session.identity.as_str());
            }
        }
        found
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

/// The host names requests may name. A bind that is not loopback must be asked for, since the
/// server speaks plain http; one on every address (0.0.0.0, ::) names no host, so it needs
/// `ALLOWED_HOSTS`.
fn hosts(
    bind: SocketAddr,
    allowed: Option<String>,
    allow_public: Option<String>,
) -> Result<Vec<String>, String> {
    let allow_public = match allow_public.as_deref() {
        None => false,
        Some("1") => true,
        Some(other) => {
            return Err(format!(
                "ALLOW_PUBLIC_BIND must be 1 or unset, not {other:?}"
            ))
        }
    };
    let ip = bind.ip();
    if !ip.is_loopback() && !allow_public {
        return Err(format!(
            "BIND {bind} is not loopback: set ALLOW_PUBLIC_BIND=1 once TLS is terminated in front \
             of the server (a reverse proxy or a load balancer)"
        ));
    }
    let mut hosts = Vec::new();
    for (n, entry) in (1..).zip(allowed.iter().flat_map(|a| a.split(','))) {
        let host = entry.trim().to_ascii_lowercase();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(&host);
        let is_name = !host.is_empty()
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !is_name && host.parse::<IpAddr>().is_err() {
            return Err(format!(
                "ALLOWED_HOSTS entry {n} must be a host name or an IP address, without scheme, \
                 port or wildcard, not {entry:?}"
            ));
        }
        hosts.push(host.to_owned());
    }
    if ip.is_unspecified() {
        if hosts.is_empty() {
            return Err(format!(
                "BIND {bind} is every address, so no host name: list the ones clients use in \
                 ALLOWED_HOSTS"
            ));
        }
    } else {
        hosts.push(ip.to_string());
    }
    if ip.is_loopback() {
        hosts.push("localhost".into());
    }
    Ok(hosts)
}

/// Whether the request names only expected hosts: its `Host` header (required) and the
/// authority of an absolute request target. The port is not compared: behind a proxy the
/// client's port is not the one bound.
fn host_is_expected<B>(config: &Config, request: &Request<B>) -> bool {
    let Some(host) = request.headers().get(HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let target = request.uri().authority().map(Authority::as_str);
    [Some(host), target].into_iter().flatten().all(|named| {
        named.parse::<Authority>().is_ok_and(|authority| {
            let host = authority.host().to_ascii_lowercase();
            let host = host
                .strip_prefix('[')
                .and_then(|h| h.strip_suffix(']'))
                .unwrap_or(&host);
            config.hosts.iter().any(|expected| expected == host)
        })
    })
}

/// The session keys from the one variable that gives them. Errors name the entry and the problem,
/// never a key.
fn sessions(get: &dyn Fn(&str) -> Option<String>) -> Result<(Vec<Session>, KeySource), String> {
    let given: Vec<&str> = KEY_SOURCES
        .into_iter()
        .filter(|n| get(n).is_some())
        .collect();
    let (source, value) = match given[..] {
        [] => {
            return Err("no session keys: set SESSION_KEYS, SESSION_KEYS_FILE or \
                 SESSION_KEYS_GENERATE (identities separated by commas, for a local try-out)"
                .into())
        }
        [one] => (one, get(one).unwrap_or_default()),
        _ => return Err(format!("set only one of {}", given.join(", "))),
    };
    match source {
        "SESSION_KEYS" => {
            let entries: Vec<(usize, &str)> = (1..).zip(value.split(',')).collect();
            let sessions = parse_sessions(source, ("entry", "entries"), &entries)?;
            Ok((sessions, KeySource::Configured))
        }
        "SESSION_KEYS_FILE" => {
            let text = std::fs::read_to_string(&value)
                .map_err(|e| format!("cannot read SESSION_KEYS_FILE {value:?}: {e}"))?;
            // Skipped lines keep their numbers, so that an error points at the right line.
            let lines: Vec<(usize, &str)> = (1..)
                .zip(text.lines())
                .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
                .collect();
            let sessions = parse_sessions(source, ("line", "lines"), &lines)?;
            Ok((sessions, KeySource::Configured))
        }
        _ => Ok((generate_sessions(&value)?, KeySource::Generated)),
    }
}

/// `identity=key` entries, numbered for the errors, checked strictly: no empty part, no short key,
/// no key given twice.
fn parse_sessions(
    source: &str,
    (unit, units): (&str, &str),
    entries: &[(usize, &str)],
) -> Result<Vec<Session>, String> {
    let mut sessions: Vec<(usize, Session)> = Vec::new();
    for &(n, entry) in entries {
        if entry.trim().is_empty() {
            return Err(format!("{source} {unit} {n} is empty"));
        }
        let Some((identity, key)) = entry.split_once('=') else {
            return Err(format!("{source} {unit} {n} is not identity=key"));
        };
        let (identity, key) = (identity.trim(), key.trim());
        let problem = identity_problem(identity).or_else(|| key_problem(key));
        if let Some(problem) = problem {
            return Err(format!("{source} {unit} {n}: {problem}"));
        }
        if let Some((first, _)) = sessions.iter().find(|(_, s)| s.key == key) {
            return Err(format!(
                "{source} {units} {first} and {n} have the same key"
            ));
        }
        let session = Session {
            identity: identity.to_owned(),
            key: key.to_owned(),
        };
        sessions.push((n, session));
    }
    Ok(sessions.into_iter().map(|(_, s)| s).collect())
}

/// A random key for each identity: 32 bytes from the system's generator, as URL-safe base64.
fn generate_sessions(identities: &str) -> Result<Vec<Session>, String> {
    let mut sessions = Vec::new();
    for (n, identity) in (1..).zip(identities.split(',')) {
        let identity = identity.trim();
        if let Some(problem) = identity_problem(identity) {
            return Err(format!("SESSION_KEYS_GENERATE entry {n}: {problem}"));
        }
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| format!("cannot generate session keys: {e}"))?;
        sessions.push(Session {
            identity: identity.to_owned(),
            key: URL_SAFE_NO_PAD.encode(bytes),
        });
    }
    Ok(sessions)
}

fn identity_problem(identity: &str) -> Option<&'static str> {
    if identity.is_empty() {
        Some("the identity is empty")
    } else if identity
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        Some(
            "the identity holds a character an identity cannot (whitespace or a control character)",
        )
    } else {
        None
    }
}

fn key_problem(key: &str) -> Option<&'static str> {
    if key.is_empty() {
        Some("the key is empty")
    } else if !key.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        Some("the key holds a character a key cannot (visible ASCII other than `,` only)")
    } else if key.len() < MIN_KEY_LEN {
        Some("the key is shorter than 16 characters")
    } else {
        None
    }
}

/// Serves `POST /token` on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: Config) {
    let mut connection = http1::Builder::new();
    // Without a timer hyper's header timeout never fires, and slow or idle clients hold their
    // connections forever. It runs whenever the connection waits for a request's head: while one
    // arrives, and between keep-alive requests, so it is the idle timeout too.
    connection
        .timer(TokioTimer::new())
        .header_read_timeout(config.header_read_timeout);
    // At the cap the server stops accepting: further clients wait in the kernel's listen queue.
    let slots = Arc::new(Semaphore::new(config.max_connections.get()));
    let config = Arc::new(config);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return; // the semaphore is never closed
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of file descriptors, usually: pause rather than spin.
                eprintln!("token_server: accept failed: {e}");
                SystemClock.sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (config, connection) = (config.clone(), connection.clone());
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let response = answer(&config, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            let _ = connection
                .serve_connection(TokioIo::new(stream), service)
                .await;
            drop(slot);
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

fn route<'c, B>(
    config: &'c Config,
    request: &Request<B>,
) -> (Response<Full<Bytes>>, Option<&'c str>) {
    if !host_is_expected(config, request) {
        return (
            reply(
                StatusCode::MISDIRECTED_REQUEST,
                json!({"error": "unknown host"}),
            ),
            None,
        );
    }
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
    let Some(identity) = session_user(config, request) else {
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

/// The user whose session key is the bearer credential.
fn session_user<'c, B>(config: &'c Config, request: &Request<B>) -> Option<&'c str> {
    let value = request.headers().get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, key) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    config.identity_of(key.trim().as_bytes())
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// The first line of the log; for a bind that is not loopback, a reminder that TLS is needed.
pub fn listening_line(addr: SocketAddr) -> String {
    let line = format!("token_server: listening on http://{addr}/token");
    if addr.ip().is_loopback() {
        line
    } else {
        format!(
            "{line}, not loopback: terminate TLS in front of it (plain http carries session keys \
             and tokens in clear text)"
        )
    }
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
    if config.key_source == KeySource::Generated {
        // Once, on stdout: the log (stderr) never holds a key.
        println!("session keys generated for this run (they end with it):");
        for session in &config.sessions {
            println!("  {}  {}", session.identity, session.key);
        }
    }
    let addr = listener.local_addr().unwrap_or(config.bind);
    eprintln!("{}", listening_line(addr));
    serve(listener, config).await;
    ExitCode::SUCCESS
}
