//! The metrics endpoint: `GET /metrics` over plain HTTP/1.1, one request
//! a connection, bounded in bytes, time and connections.

use super::Metrics;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Most bytes of a scrape's request read; the rest is not looked at.
const MAX_REQUEST: usize = 8 * 1024;
/// Most scrapes answered at once; a connection past them is closed at
/// once, so connections cannot make the node hold more.
const MAX_SCRAPES: usize = 16;
/// A scrape not answered in this long, from its connection on (a slow
/// request or a client that will not read the answer), is dropped.
const SCRAPE_DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);

/// Serves `GET /metrics` (HTTP/1.1, one request per connection) until
/// `shutdown`; any other path is a 404.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Mutex<Metrics>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_SCRAPES));
    loop {
        let conn = tokio::select! {
            c = listener.accept() => c,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match conn {
            Ok((stream, _)) => {
                // Dropping the stream closes it.
                if let Ok(slot) = slots.clone().try_acquire_owned() {
                    let metrics = metrics.clone();
                    tokio::spawn(async move {
                        let _ =
                            tokio::time::timeout(SCRAPE_DEADLINE, answer(stream, metrics)).await;
                        drop(slot);
                    });
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

async fn answer(mut stream: TcpStream, metrics: Arc<Mutex<Metrics>>) {
    let mut buf = vec![0u8; MAX_REQUEST];
    let mut got = 0;
    // The request line and headers end with an empty line; each read
    // looks only at what it added (and the 3 bytes before).
    loop {
        let n = match stream.read(&mut buf[got..]).await {
            Ok(n) if n > 0 => n,
            _ => return,
        };
        let from = got.saturating_sub(3);
        got += n;
        if buf[from..got].windows(4).any(|w| w == b"\r\n\r\n") || got == buf.len() {
            break;
        }
    }
    let line = buf[..got].split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        let text = (metrics.lock())
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .encode();
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            text,
        )
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "this endpoint serves GET /metrics only\n".to_string(),
        )
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes()).await;
    let _ = stream.write_all(body.as_bytes()).await;
    let _ = stream.shutdown().await;
}
