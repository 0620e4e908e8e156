//! The `token_server` example: served in process on loopback and fetched with `HttpFetcher`, its
//! configuration from the environment, and the built program's exit status and log lines.
#![cfg(feature = "http")]

#[allow(dead_code)] // its `main` is only for the program
#[path = "../../examples/token_server.rs"]
mod token_server;

use access_manager::clock::{Clock, SystemClock};
use access_manager::http::{HttpFetcher, HttpFetcherError};
use access_manager::{AccessToken, FetchError, FetchReason, FetchRequest, TokenFetcher};
use serde_json::Value;
use std::collections::HashMap;
use std::error::Error as _;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use token_server::{serve, Config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
const KEY: &str = "SKfedcba9876543210fedcba9876543210";
const SECRET: &str = "token-server-test-secret-5f1e";
const CHAT: &str = "IS00000000000000000000000000000001";
const SYNC: &str = "IS00000000000000000000000000000002";
const VOICE_APP: &str = "AP00000000000000000000000000000003";
const WRONG_KEY: &str = "mallory-guessed-key";
const ALICE_KEY: &str = "alice-test-key-3f9c1d2e8b7a";
const BOB_KEY: &str = "bob-test-key-6a5b4c3d2e1f";
/// The keys the server's source once held: anyone who read it could get tokens.
const ONCE_FIXED_KEYS: [&str; 2] = ["alice-session-key", "bob-session-key"];

// ---------------------------------------------------------------------------------------------
// Helpers.

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The Twilio variables, no session keys.
fn twilio() -> Vec<(&'static str, &'static str)> {
    vec![
        ("TWILIO_ACCOUNT_SID", ACCOUNT),
        ("TWILIO_API_KEY_SID", KEY),
        ("TWILIO_API_KEY_SECRET", SECRET),
    ]
}

/// Every required variable: the Twilio ones and the session keys of alice and bob.
fn required() -> Vec<(&'static str, &'static str)> {
    let mut pairs = twilio();
    pairs.push((
        "SESSION_KEYS",
        "alice=alice-test-key-3f9c1d2e8b7a, bob=bob-test-key-6a5b4c3d2e1f",
    ));
    pairs
}

fn every_grant() -> HashMap<String, String> {
    let mut pairs = required();
    pairs.extend([
        ("TWILIO_CHAT_SERVICE_SID", CHAT),
        ("TWILIO_SYNC_SERVICE_SID", SYNC),
        ("TWILIO_VOICE_APP_SID", VOICE_APP),
        ("TOKEN_TTL_SECS", "300"),
    ]);
    env(&pairs)
}

fn key_of(user: &str) -> &'static str {
    match user {
        "alice" => ALICE_KEY,
        "bob" => BOB_KEY,
        _ => panic!("no key for {user}"),
    }
}

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The server running in this test's runtime; stopped when dropped.
struct Running {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn start(env: HashMap<String, String>) -> Running {
    start_with(Config::from_env_map(&env).expect("a valid configuration")).await
}

async fn start_with(config: Config) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(serve(listener, config));
    Running { addr, task }
}

/// `POST /token` through an `HttpFetcher`, as an app would, with this bearer key (if any).
async fn fetch(addr: SocketAddr, key: Option<&str>) -> Result<String, FetchError> {
    let mut builder = HttpFetcher::builder(format!("http://{addr}/token"))
        .json_body(&serde_json::json!({ "device": "test" }))
        .json_field("token");
    if let Some(key) = key {
        builder = builder.bearer_auth(key);
    }
    let fetcher = builder.build().unwrap();
    fetcher
        .fetch_token(FetchRequest::new(FetchReason::Initial, 1, None))
        .await
}

fn status_of(error: &FetchError) -> Option<u16> {
    error
        .source()
        .and_then(|e| e.downcast_ref::<HttpFetcherError>())
        .and_then(HttpFetcherError::status)
}

/// A response as it came over the wire.
struct Raw {
    status: u16,
    headers: HashMap<String, String>,
    body: String,
}

/// One request on its own connection, the response read to its end. `Host` is `addr` unless
/// `headers` names one.
async fn raw(addr: SocketAddr, method: &str, path: &str, headers: &[(&str, &str)]) -> Raw {
    let mut request = format!("{method} {path} HTTP/1.1\r\nconnection: close\r\n");
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        request.push_str(&format!("host: {addr}\r\n"));
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("content-length: 0\r\n\r\n");
    raw_request(addr, &request).await
}

/// `request`, as written, on its own connection; the response read to its end.
async fn raw_request(addr: SocketAddr, request: &str) -> Raw {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Raw {
        status: status.parse().unwrap(),
        headers,
        body: body.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Minting.

#[tokio::test]
async fn a_session_key_gets_a_verified_token_for_its_user_with_the_configured_grants() {
    let server = start(every_grant()).await;
    for user in ["alice", "bob"] {
        let jwt = fetch(server.addr, Some(key_of(user))).await.unwrap();
        let token = AccessToken::verify(&jwt, SECRET.as_bytes(), SystemClock.now()).unwrap();
        assert_eq!(token.identity(), Some(user));
        assert_eq!((token.account_sid(), token.api_key_sid()), (ACCOUNT, KEY));
        let grants = token.grants();
        let chat = grants.chat.as_ref().expect("a chat grant");
        assert_eq!(chat.service_sid.as_deref(), Some(CHAT));
        let sync = grants.data_sync.as_ref().expect("a sync grant");
        assert_eq!(sync.service_sid.as_deref(), Some(SYNC));
        let voice = grants.voice.as_ref().expect("a voice grant");
        assert_eq!(voice.outgoing_application_sid.as_deref(), Some(VOICE_APP));
        assert!(!voice.incoming_allow);
        assert!(grants.video.is_some());
        let lifetime = token
            .expires_at()
            .duration_since(token.issued_at().unwrap())
            .unwrap();
        assert_eq!(lifetime, Duration::from_secs(300));
    }
}

#[tokio::test]
async fn without_service_sids_the_token_has_the_video_grant_alone_and_lives_600_s() {
    let server = start(env(&required())).await;
    let jwt = fetch(server.addr, Some(key_of("alice"))).await.unwrap();
    let token = AccessToken::verify(&jwt, SECRET.as_bytes(), SystemClock.now()).unwrap();
    let kinds: Vec<String> = token.grant_kinds().map(|k| k.to_string()).collect();
    assert_eq!(kinds, ["video"]);
    let lifetime = token
        .expires_at()
        .duration_since(token.issued_at().unwrap())
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(600));
}

#[tokio::test]
async fn the_reply_is_uncached_json_with_token_identity_and_expires_in() {
    let server = start(every_grant()).await;
    let auth = format!("Bearer {}", key_of("bob"));
    let reply = raw(server.addr, "POST", "/token", &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.headers["content-type"], "application/json");
    assert_eq!(reply.headers["cache-control"], "no-store");
    let body: Value = serde_json::from_str(&reply.body).unwrap();
    assert_eq!(body["identity"], "bob");
    assert_eq!(body["expires_in"], 300);
    let jwt = body["token"].as_str().unwrap();
    AccessToken::verify(jwt, SECRET.as_bytes(), SystemClock.now()).unwrap();
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = start(every_grant()).await;
    let auth = format!("bearer {}", key_of("alice"));
    let reply = raw(server.addr, "POST", "/token", &[("authorization", &auth)]).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
}

// ---------------------------------------------------------------------------------------------
// Refusals.

#[tokio::test]
async fn a_wrong_or_missing_bearer_key_is_a_permanent_401_failure() {
    let server = start(every_grant()).await;
    for key in [Some(WRONG_KEY), None, Some("")] {
        let err = fetch(server.addr, key).await.unwrap_err();
        assert!(err.is_permanent(), "{key:?}: {err}");
        assert_eq!(status_of(&err), Some(401), "{key:?}: {err}");
    }
}

#[tokio::test]
async fn a_401_asks_for_a_bearer_token_and_is_not_cached() {
    let server = start(every_grant()).await;
    let alice_as_basic = format!("Basic {}", key_of("alice"));
    for headers in [
        &[][..],
        &[("authorization", "Bearer nope")][..],
        &[("authorization", alice_as_basic.as_str())][..],
    ] {
        let reply = raw(server.addr, "POST", "/token", headers).await;
        assert_eq!(reply.status, 401, "{headers:?}");
        assert_eq!(reply.headers["www-authenticate"], "Bearer");
        assert_eq!(reply.headers["cache-control"], "no-store");
        assert!(!reply.body.contains("eyJ"), "{}", reply.body);
    }
}

#[tokio::test]
async fn other_methods_on_token_are_405_and_other_paths_404() {
    let server = start(every_grant()).await;
    let auth = format!("Bearer {}", key_of("alice"));
    let auth = [("authorization", auth.as_str())];
    for method in ["GET", "PUT", "DELETE"] {
        let reply = raw(server.addr, method, "/token", &auth).await;
        assert_eq!(reply.status, 405, "{method}");
        assert_eq!(reply.headers["allow"], "POST");
    }
    for path in ["/", "/token/", "/tokens", "/api/token"] {
        let reply = raw(server.addr, "POST", path, &auth).await;
        assert_eq!(reply.status, 404, "{path}");
        assert!(!reply.body.contains("eyJ"), "{}", reply.body);
    }
    // Through the fetcher too: both are permanent failures.
    let get = HttpFetcher::builder(format!("http://{}/token", server.addr))
        .bearer_auth(key_of("alice"))
        .build()
        .unwrap();
    let err = get
        .fetch_token(FetchRequest::new(FetchReason::Initial, 1, None))
        .await
        .unwrap_err();
    assert_eq!((err.is_permanent(), status_of(&err)), (true, Some(405)));
}

// ---------------------------------------------------------------------------------------------
// Host names: a page in the developer's browser may reach the server through DNS rebinding, with
// its own host name in `Host`.

#[tokio::test]
async fn a_request_naming_another_host_is_refused_with_421_whatever_its_key() {
    let server = start(every_grant()).await;
    let auth = format!("Bearer {ALICE_KEY}");
    let port = server.addr.port();
    for host in [
        format!("rebound.attacker.example:{port}"),
        "rebound.attacker.example".to_owned(),
        format!("0.0.0.0:{port}"),
        format!("127.0.0.1.attacker.example:{port}"),
    ] {
        let reply = raw(
            server.addr,
            "POST",
            "/token",
            &[("host", &host), ("authorization", &auth)],
        )
        .await;
        assert_eq!(reply.status, 421, "{host}: {}", reply.body);
        assert!(!reply.body.contains("eyJ"), "{host}: {}", reply.body);
    }
    // Without Host, or with another host in the request line.
    let no_host = format!(
        "POST /token HTTP/1.1\r\nauthorization: {auth}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
    );
    assert_eq!(raw_request(server.addr, &no_host).await.status, 421);
    let absolute = format!(
        "POST http://attacker.example/token HTTP/1.1\r\nhost: {}\r\nauthorization: {auth}\r\n\
         connection: close\r\ncontent-length: 0\r\n\r\n",
        server.addr
    );
    assert_eq!(raw_request(server.addr, &absolute).await.status, 421);
}

#[tokio::test]
async fn the_bind_address_localhost_and_the_allowed_hosts_are_answered() {
    let mut vars = every_grant();
    vars.insert(
        "ALLOWED_HOSTS".into(),
        "tokens.example.com, 192.0.2.7".into(),
    );
    let server = start(vars).await;
    let auth = format!("Bearer {ALICE_KEY}");
    let port = server.addr.port();
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "LocalHost".to_owned(),
        "tokens.example.com".to_owned(),
        "Tokens.Example.COM:443".to_owned(),
        "192.0.2.7:8080".to_owned(),
    ] {
        let reply = raw(
            server.addr,
            "POST",
            "/token",
            &[("host", &host), ("authorization", &auth)],
        )
        .await;
        assert_eq!(reply.status, 200, "{host}: {}", reply.body);
    }
}

#[test]
fn allowed_hosts_are_parsed_strictly() {
    for value in [
        "https://tokens.example.com",
        "tokens.example.com:443",
        "tokens.example.com,",
        "tokens example.com",
        "*.example.com",
        "[::1]:3000",
    ] {
        let mut vars = env(&required());
        vars.insert("ALLOWED_HOSTS".into(), value.into());
        let err = Config::from_env_map(&vars)
            .err()
            .unwrap_or_else(|| panic!("{value:?} accepted"));
        assert!(err.contains("ALLOWED_HOSTS entry"), "{value:?}: {err}");
    }
    let mut vars = env(&required());
    vars.insert(
        "ALLOWED_HOSTS".into(),
        "[::1], ::1, Tokens.Example.com".into(),
    );
    assert!(Config::from_env_map(&vars).is_ok());
}

#[test]
fn a_bind_that_is_not_loopback_needs_allow_public_bind_and_a_wildcard_needs_allowed_hosts() {
    let with = |pairs: &[(&'static str, &'static str)]| {
        let mut vars = required();
        vars.extend_from_slice(pairs);
        Config::from_env_map(&env(&vars))
    };
    let err = with(&[("BIND", "192.0.2.7:3000")]).err().unwrap();
    assert!(err.contains("ALLOW_PUBLIC_BIND=1"), "{err}");
    assert!(err.contains("TLS"), "{err}");
    let err = with(&[("BIND", "0.0.0.0:3000"), ("ALLOW_PUBLIC_BIND", "1")])
        .err()
        .unwrap();
    assert!(err.contains("ALLOWED_HOSTS"), "{err}");
    let err = with(&[("BIND", "192.0.2.7:3000"), ("ALLOW_PUBLIC_BIND", "yes")])
        .err()
        .unwrap();
    assert!(err.contains("ALLOW_PUBLIC_BIND must be 1"), "{err}");
    assert!(with(&[("BIND", "192.0.2.7:3000"), ("ALLOW_PUBLIC_BIND", "1")]).is_ok());
    assert!(with(&[
        ("BIND", "[::]:3000"),
        ("ALLOW_PUBLIC_BIND", "1"),
        ("ALLOWED_HOSTS", "tokens.example.com"),
    ])
    .is_ok());
    assert!(with(&[("BIND", "[::1]:3000")]).is_ok());
}

#[test]
fn the_listening_line_says_tls_must_be_terminated_in_front_of_a_public_bind() {
    let public = token_server::listening_line("192.0.2.7:3000".parse().unwrap());
    assert_eq!(
        public,
        "token_server: listening on http://192.0.2.7:3000/token, not loopback: terminate TLS in \
         front of it (plain http carries session keys and tokens in clear text)"
    );
    let local = token_server::listening_line("127.0.0.1:3000".parse().unwrap());
    assert_eq!(
        local,
        "token_server: listening on http://127.0.0.1:3000/token"
    );
}

// ---------------------------------------------------------------------------------------------
// Slow and idle clients: real sockets, so real time, with short timeouts and generous bounds.

/// Far longer than any timeout below: a connection still open after it is being held.
const GENEROUS: Duration = Duration::from_secs(5);

/// The server with this header-read timeout and connection cap.
async fn start_guarded(header_read_timeout: Duration, max_connections: usize) -> Running {
    let mut config = Config::from_env_map(&every_grant()).unwrap();
    config.header_read_timeout = header_read_timeout;
    config.max_connections = max_connections.try_into().unwrap();
    start_with(config).await
}

/// Whether the server closes `stream` within `within` (reading and dropping whatever it sends).
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let drain = async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                return;
            }
        }
    };
    tokio::time::timeout(within, drain).await.is_ok()
}

#[tokio::test]
async fn a_client_that_sends_half_a_request_line_is_cut_off_after_the_header_timeout() {
    let server = start_guarded(Duration::from_millis(200), 16).await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"POST /tok").await.unwrap();
    assert!(closed_within(&mut slow, GENEROUS).await, "still open");
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_after_the_header_timeout() {
    let server = start_guarded(Duration::from_millis(200), 16).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let request = format!(
        "POST /token HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {ALICE_KEY}\r\n\
         content-length: 0\r\n\r\n",
        server.addr
    );
    idle.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    idle.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    assert!(closed_within(&mut idle, GENEROUS).await, "still open");
}

#[tokio::test]
async fn a_client_over_the_connection_cap_is_served_once_a_connection_closes() {
    let server = start_guarded(GENEROUS * 4, 1).await;
    let mut holder = TcpStream::connect(server.addr).await.unwrap();
    holder.write_all(b"POST /tok").await.unwrap();
    // The holder takes the one connection; a second client's whole request...
    let request = format!(
        "POST /token HTTP/1.1\r\nhost: {}\r\nauthorization: Bearer {ALICE_KEY}\r\n\
         connection: close\r\ncontent-length: 0\r\n\r\n",
        server.addr
    );
    let mut waiting = TcpStream::connect(server.addr).await.unwrap();
    waiting.write_all(request.as_bytes()).await.unwrap();
    let mut first = [0u8; 12];
    // ...is not answered while the holder's connection is open (a bound that could only make
    // this test pass wrongly, never fail wrongly)...
    let early = tokio::time::timeout(Duration::from_millis(300), waiting.read_exact(&mut first));
    assert!(early.await.is_err(), "answered over the cap");
    // ...and answered once it closes.
    drop(holder);
    tokio::time::timeout(GENEROUS, waiting.read_exact(&mut first))
        .await
        .expect("answered once a connection closed")
        .unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
}

// ---------------------------------------------------------------------------------------------
// Configuration.

#[test]
fn missing_required_variables_are_all_named() {
    let err = Config::from_env_map(&HashMap::new()).err().unwrap();
    assert!(
        err.contains("TWILIO_ACCOUNT_SID, TWILIO_API_KEY_SID, TWILIO_API_KEY_SECRET"),
        "{err}"
    );
    let mut only_secret_missing = env(&required());
    only_secret_missing.insert("TWILIO_API_KEY_SECRET".into(), "  ".into());
    let err = Config::from_env_map(&only_secret_missing).err().unwrap();
    assert!(err.ends_with("not set: TWILIO_API_KEY_SECRET"), "{err}");
}

#[test]
fn without_session_keys_the_server_refuses_to_start_naming_the_ways_to_give_them() {
    let err = Config::from_env_map(&env(&twilio())).err().unwrap();
    assert!(
        err.contains(
            "no session keys: set SESSION_KEYS, SESSION_KEYS_FILE or SESSION_KEYS_GENERATE"
        ),
        "{err}"
    );
}

#[test]
fn session_keys_are_parsed_strictly_and_errors_never_show_a_key() {
    const K: &str = "k3y-that-must-not-leak-1";
    for (value, problem) in [
        ("alice".to_owned(), "entry 1 is not identity=key"),
        (K.to_owned(), "entry 1 is not identity=key"),
        ("alice=".to_owned(), "entry 1: the key is empty"),
        (format!("={K}"), "entry 1: the identity is empty"),
        (format!("alice={K},"), "entry 2 is empty"),
        (format!("alice={K},,bob={K}2"), "entry 2 is empty"),
        (
            format!("alice=short-{}", &K[..3]),
            "entry 1: the key is shorter than 16",
        ),
        (
            format!("alice={K} extra"),
            "entry 1: the key holds a character",
        ),
        (
            format!("al ice={K}"),
            "entry 1: the identity holds a character",
        ),
        (
            format!("alice={K},bob={K}"),
            "entries 1 and 2 have the same key",
        ),
    ] {
        let mut vars = env(&twilio());
        vars.insert("SESSION_KEYS".into(), value.clone());
        let err = Config::from_env_map(&vars)
            .err()
            .unwrap_or_else(|| panic!("{value:?} accepted"));
        assert!(
            err.contains(&format!("SESSION_KEYS {problem}")),
            "{value:?}: {err}"
        );
        assert!(!err.contains(K) && !err.contains("k3y"), "{value:?}: {err}");
    }
    let mut both = env(&required());
    both.insert("SESSION_KEYS_GENERATE".into(), "carol".into());
    let err = Config::from_env_map(&both).err().unwrap();
    assert!(err.contains("set only one of"), "{err}");
}

#[tokio::test]
async fn session_keys_come_from_a_file_whose_comments_and_blank_lines_are_skipped() {
    let file = TempFile::new(
        "session-keys",
        &format!("# identity=key, one a line\n\nalice={ALICE_KEY}\n  bob = {BOB_KEY}  \n"),
    );
    let mut vars = env(&twilio());
    vars.insert("SESSION_KEYS_FILE".into(), file.0.display().to_string());
    let server = start(vars).await;
    for user in ["alice", "bob"] {
        let jwt = fetch(server.addr, Some(key_of(user))).await.unwrap();
        let token = AccessToken::verify(&jwt, SECRET.as_bytes(), SystemClock.now()).unwrap();
        assert_eq!(token.identity(), Some(user));
    }

    let bad = TempFile::new(
        "bad-session-keys",
        &format!("alice={ALICE_KEY}\n# ok\n{BOB_KEY}\n"),
    );
    let mut vars = env(&twilio());
    vars.insert("SESSION_KEYS_FILE".into(), bad.0.display().to_string());
    let err = Config::from_env_map(&vars).err().unwrap();
    assert!(
        err.contains("SESSION_KEYS_FILE line 3 is not identity=key"),
        "{err}"
    );
    assert!(!err.contains(BOB_KEY), "{err}");

    let missing = std::env::temp_dir().join("no-such-session-keys-file");
    vars.insert("SESSION_KEYS_FILE".into(), missing.display().to_string());
    let err = Config::from_env_map(&vars).err().unwrap();
    assert!(err.contains("cannot read SESSION_KEYS_FILE"), "{err}");
}

#[tokio::test]
async fn the_keys_once_fixed_in_the_source_get_nothing() {
    let server = start(every_grant()).await;
    for key in ONCE_FIXED_KEYS {
        let err = fetch(server.addr, Some(key)).await.unwrap_err();
        assert_eq!(status_of(&err), Some(401), "{key}: {err}");
    }
}

#[test]
fn defaults_are_a_600_s_ttl_on_loopback_port_3000() {
    let config = Config::from_env_map(&env(&required())).unwrap();
    assert_eq!(config.ttl, Duration::from_secs(600));
    assert_eq!(config.bind, "127.0.0.1:3000".parse::<SocketAddr>().unwrap());
    assert_eq!(
        (config.chat_service_sid, config.voice_app_sid),
        (None, None)
    );
}

#[test]
fn bad_values_are_refused_without_echoing_the_secret() {
    for (name, value, needle) in [
        ("TOKEN_TTL_SECS", "0", "TOKEN_TTL_SECS"),
        ("TOKEN_TTL_SECS", "86401", "TOKEN_TTL_SECS"),
        ("TOKEN_TTL_SECS", "ten minutes", "TOKEN_TTL_SECS"),
        ("BIND", "localhost", "BIND"),
        ("TWILIO_ACCOUNT_SID", "XX123", "account SID"),
        ("TWILIO_API_KEY_SID", "AK123", "API key SID"),
    ] {
        let mut vars = env(&required());
        vars.insert(name.into(), value.into());
        let err = Config::from_env_map(&vars).err().unwrap();
        assert!(err.contains(needle), "{name}={value}: {err}");
        assert!(!err.contains(SECRET), "{err}");
    }
}

// ---------------------------------------------------------------------------------------------
// The built program.

/// The example program as cargo builds it.
fn program() -> PathBuf {
    crate::examples_support::built_example("token_server")
}

#[test]
fn the_built_program_without_configuration_exits_2_naming_what_is_missing() {
    let out = Command::new(program())
        .env_clear()
        .env("TWILIO_API_KEY_SID", KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("not set: TWILIO_ACCOUNT_SID, TWILIO_API_KEY_SECRET"),
        "{stderr}"
    );
}

#[test]
fn the_built_program_without_session_keys_exits_2_naming_the_ways_to_give_them() {
    let mut program = Program(
        Command::new(program())
            .env_clear()
            .envs(twilio())
            .env("BIND", "127.0.0.1:0")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    // The first line, not the whole log: a server that starts anyway would never end it.
    let mut first = String::new();
    BufReader::new(program.0.stderr.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("no session keys"), "{first}");
    assert_eq!(program.0.wait().unwrap().code(), Some(2));
}

/// The program, killed when dropped.
struct Program(Child);

impl Drop for Program {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The built program with generated keys for `identities`, on a free loopback port: the program,
/// its address, the keys it printed on stdout (identity, key) and its log (stderr).
fn run_with_generated_keys(identities: &str) -> (Program, SocketAddr, Vec<(String, String)>, Log) {
    let mut vars = every_grant();
    vars.remove("SESSION_KEYS");
    // Stdout to a file: the keys are printed before the server listens, so the file holds them
    // all once the log says it listens, and a program that prints none leaves it empty.
    let stdout = TempFile::new(&format!("stdout-{identities}"), "");
    let mut program = Program(
        Command::new(program())
            .env_clear()
            .envs(vars)
            .env("SESSION_KEYS_GENERATE", identities)
            .env("BIND", "127.0.0.1:0")
            .stdout(std::fs::File::create(&stdout.0).unwrap())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut stderr = BufReader::new(program.0.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    let addr: SocketAddr = first
        .trim()
        .strip_prefix("token_server: listening on http://")
        .and_then(|rest| rest.strip_suffix("/token"))
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .parse()
        .unwrap();
    let printed = std::fs::read_to_string(&stdout.0).unwrap();
    let mut lines = printed.lines();
    let heading = lines.next().unwrap_or("");
    assert!(
        heading.starts_with("session keys generated for this run"),
        "{printed:?}"
    );
    let keys = lines
        .map(|line| {
            let mut words = line.split_whitespace().map(str::to_owned);
            (words.next().unwrap(), words.next().unwrap())
        })
        .collect();
    (program, addr, keys, stderr)
}

type Log = BufReader<std::process::ChildStderr>;

#[tokio::test]
async fn the_built_program_generates_a_key_for_each_identity_and_the_once_fixed_keys_fail() {
    let (program, addr, keys, _log) = run_with_generated_keys("alice,bob");
    assert_eq!(
        keys.iter()
            .map(|(identity, _)| identity.as_str())
            .collect::<Vec<_>>(),
        ["alice", "bob"]
    );
    assert_ne!(keys[0].1, keys[1].1);
    for (identity, key) in &keys {
        assert!(key.len() >= 32, "{key}");
        let jwt = fetch(addr, Some(key)).await.unwrap();
        let token = AccessToken::verify(&jwt, SECRET.as_bytes(), SystemClock.now()).unwrap();
        assert_eq!(token.identity(), Some(identity.as_str()));
    }
    for key in ONCE_FIXED_KEYS {
        let err = fetch(addr, Some(key)).await.unwrap_err();
        assert_eq!(status_of(&err), Some(401), "{key}: {err}");
    }
    drop(program);
}

#[tokio::test]
async fn the_built_program_logs_a_line_a_request_without_secret_key_or_token() {
    let (program, addr, keys, mut stderr) = run_with_generated_keys("alice");
    let alice_key = keys[0].1.clone();

    let jwt = fetch(addr, Some(&alice_key)).await.unwrap();
    fetch(addr, Some(WRONG_KEY)).await.unwrap_err();
    raw(addr, "GET", "/token", &[]).await;
    raw(addr, "POST", "/elsewhere?key=query-secret", &[]).await;

    drop(program); // kills it, so the pipe ends
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "POST /token 200 alice",
            "POST /token 401 -",
            "GET /token 405 -",
            "POST /elsewhere 404 -",
        ],
        "{log}"
    );
    let signature = jwt.rsplit('.').next().unwrap();
    for secret in [SECRET, &alice_key, WRONG_KEY, "query-secret", signature] {
        assert!(!log.contains(secret), "{secret:?} in the log:\n{log}");
    }
}
