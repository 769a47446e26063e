//! `hotpocket client`: a user, written from the user protocol alone. In
//! the prototype's protocol it signs the node's challenge string with
//! ed25519, sends `helo`, then sends each stdin line as one input and
//! prints every output; hpcore's is `client_hp`. Both over ws or wss.

use crate::crypto::Keypair;
use crate::real::config::parse_secret;
use crate::real::users_ws::now_ms;
use crate::users::answer_challenge;
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// A connection to a node: TCP, or TLS on TCP.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send> Stream for S {}

pub type Ws = WebSocketStream<Box<dyn Stream>>;

/// Opens a websocket to `url`, `ws://` or `wss://` (any certificate: see
/// `real::tls`).
pub async fn connect(url: &str) -> anyhow::Result<Ws> {
    let req = url
        .into_client_request()
        .with_context(|| format!("{url} is not a ws:// or wss:// URL"))?;
    let uri = req.uri().clone();
    let tls = match uri.scheme_str() {
        Some("wss") => true,
        Some("ws") => false,
        _ => bail!("{url}: the URL must start with ws:// or wss://"),
    };
    let host = uri.host().context("the URL has no host")?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let tcp = tokio::net::TcpStream::connect((host, port))
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let stream: Box<dyn Stream> = if tls {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from(host.to_string())
            .with_context(|| format!("{host} is not a host name"))?;
        let connector = crate::real::tls::any_cert_connector()?;
        let tls = connector.connect(name, tcp).await;
        Box::new(tls.with_context(|| format!("TLS with {url}"))?)
    } else {
        Box::new(tcp)
    };
    let (ws, _) = tokio_tungstenite::client_async(req, stream)
        .await
        .with_context(|| format!("websocket handshake with {url}"))?;
    Ok(ws)
}

/// A key from a file holding a hex secret or `hotpocket keygen`'s JSON.
pub fn read_key(path: &Path) -> anyhow::Result<Keypair> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let hex_key = match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(v) => v["seckey"]
            .as_str()
            .context("the key file's JSON has no \"seckey\"")?
            .to_string(),
        Err(_) => text.trim().to_string(),
    };
    parse_secret(&hex_key).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// A node key as `--trust` takes it: "ed" and 64 hex digits, or the 64.
pub fn parse_node_key(s: &str) -> anyhow::Result<crate::crypto::PubKey> {
    let hex = s.strip_prefix("ed").filter(|h| h.len() == 64).unwrap_or(s);
    crate::crypto::PubKey::from_hex(hex)
        .map_err(|e| anyhow::anyhow!("{s:?} is not a node key (\"ed\" and 64 hex digits): {e}"))
}

pub async fn run(url: &str, key: &Keypair, linger: Duration) -> anyhow::Result<()> {
    let mut ws = connect(url).await?;
    let challenge = match ws.next().await {
        // The first is hpcore's `user_challenge`, in a binary frame; its
        // challenge is answered by a `helo` too.
        Some(Ok(m @ (Message::Text(_) | Message::Binary(_)))) => m.into_text()?,
        other => bail!("expected the node's challenge, got {other:?}"),
    };
    ws.send(Message::Text(answer_challenge(
        key,
        &challenge,
        now_ms() / 1000,
    )?))
    .await?;
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut stdout = tokio::io::stdout();
    let mut stdin_open = true;
    loop {
        let idle = tokio::time::sleep(linger);
        tokio::select! {
            line = lines.next_line(), if stdin_open => match line? {
                Some(l) => ws.send(Message::Binary(format!("{l}\n").into_bytes())).await?,
                None => stdin_open = false,
            },
            msg = ws.next() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    stdout.write_all(&b).await?;
                    stdout.flush().await?;
                }
                Some(Ok(Message::Text(t))) => eprintln!("node: {t}"),
                Some(Ok(Message::Close(_))) | None => {
                    eprintln!("node closed the connection");
                    return Ok(());
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(e.into()),
            },
            _ = idle, if !stdin_open => {
                let _ = ws.close(None).await;
                return Ok(());
            }
        }
    }
}
