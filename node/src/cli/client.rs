//! `hotpocket client`: a user, written from the user protocol alone. It signs the
//! node's challenge string with ed25519, sends `helo`, then sends each
//! stdin line as one input and prints every output.

use crate::crypto::Keypair;
use crate::real::config::parse_secret;
use crate::real::users_ws::now_ms;
use crate::users::answer_challenge;
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use std::path::Path;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

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

pub async fn run(url: &str, key: &Keypair, linger: Duration) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .with_context(|| format!("connecting to {url}"))?;
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
