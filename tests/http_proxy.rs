//! `HttpFetcher` and the proxy named in the environment: followed by default, not with
//! `no_proxy()`. A binary of its own, since the environment is the whole process's.
#![cfg(feature = "http")]

use access_manager::http::HttpFetcher;
use access_manager::{FetchReason, FetchRequest, TokenFetcher};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// A server that answers every request with `body` and records each request line.
struct Answering {
    addr: SocketAddr,
    request_lines: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Answering {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answering(body: &'static str) -> Answering {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let request_lines = Arc::new(Mutex::new(Vec::new()));
    let lines = request_lines.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let lines = lines.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let head = String::from_utf8_lossy(&head).into_owned();
                let line = head.lines().next().unwrap_or("").to_owned();
                lines.lock().unwrap().push(line);
                let reply = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(reply.as_bytes()).await;
            });
        }
    });
    Answering {
        addr,
        request_lines,
        task,
    }
}

#[tokio::test]
async fn the_environments_proxy_is_followed_by_default_and_not_with_no_proxy() {
    let target = answering("token-from-the-backend").await;
    let proxy = answering("token-from-the-proxy").await;
    // The only test in this binary: no other thread reads the environment meanwhile.
    for name in [
        "NO_PROXY",
        "no_proxy",
        "ALL_PROXY",
        "all_proxy",
        "http_proxy",
    ] {
        // SAFETY: this binary's one test changes the environment before it starts any thread
        // that reads it.
        unsafe { std::env::remove_var(name) };
    }
    // SAFETY: as above.
    unsafe { std::env::set_var("HTTP_PROXY", format!("http://{}", proxy.addr)) };
    let url = format!("http://{}/token", target.addr);
    let request = || FetchRequest::new(FetchReason::Initial, 1, None);

    let default = HttpFetcher::new(&url).unwrap();
    assert_eq!(
        default.fetch_token(request()).await.unwrap(),
        "token-from-the-proxy"
    );
    assert_eq!(
        *proxy.request_lines.lock().unwrap(),
        [format!("GET {url} HTTP/1.1")]
    );
    assert!(target.request_lines.lock().unwrap().is_empty());

    let direct = HttpFetcher::builder(&url).no_proxy().build().unwrap();
    assert_eq!(
        direct.fetch_token(request()).await.unwrap(),
        "token-from-the-backend"
    );
    assert_eq!(
        *target.request_lines.lock().unwrap(),
        ["GET /token HTTP/1.1"]
    );
    assert_eq!(proxy.request_lines.lock().unwrap().len(), 1);
}
