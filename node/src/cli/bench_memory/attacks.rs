//! The two attacks of `hotpocket bench-memory`, and the reference for the
//! second: what an insider and a user do to a node from outside.

use super::Options;
use crate::crypto::{Hash, Keypair, PubKey};
use crate::env::Entropy;
use crate::real::peers::{handshake, seal, PeerTls};
use crate::real::users_ws::now_ms;
use crate::real::{random_key, OsEntropy};
use crate::users::answer_challenge;
use crate::wire::MAX_FRAME_BYTES;
use anyhow::{bail, Context};
use futures_util::{SinkExt, StreamExt};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// What attack A did.
#[derive(Debug, Default)]
pub(super) struct Stalled {
    pub(super) opened: u64,
    /// Handshakes the node refused.
    pub(super) refused: u64,
    pub(super) last_refusal: Option<String>,
    /// Sessions that declared the frame and stayed open at least a second
    /// (or to the attack's end): the node was waiting for the body.
    pub(super) held: u64,
    /// How long the node waited before closing each, ms.
    pub(super) closed_after: Vec<u64>,
    pub(super) open_at_end: u64,
}

impl Stalled {
    fn add(&mut self, o: Stalled) {
        self.opened += o.opened;
        self.refused += o.refused;
        self.last_refusal = o.last_refusal.or(self.last_refusal.take());
        self.held += o.held;
        self.closed_after.extend(o.closed_after);
        self.open_at_end += o.open_at_end;
    }
}

/// A sealed peer frame, length first.
fn sealed(key: &Keypair, session: &Hash, counter: u64, payload: &[u8]) -> Vec<u8> {
    let body = seal(key, session, counter, payload);
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(&body);
    out
}

/// One of attack A's sessions, again and again until `end`: the handshake
/// as `key`, the signed empty frame that proves the session, then the
/// largest frame's length and `fill` bytes of it, and nothing more.
async fn stall(
    addr: SocketAddr,
    key: Keypair,
    unl: Vec<PubKey>,
    fill: usize,
    end: tokio::time::Instant,
) -> anyhow::Result<Stalled> {
    let mut r = Stalled::default();
    // The insider's TLS, as node 1 would make it.
    let tls = PeerTls::new(&key, &unl).context("TLS as the insider")?;
    while tokio::time::Instant::now() < end {
        let tcp = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to the target's peer port {addr}"))?;
        r.opened += 1;
        // Refused at TLS (over capacity, say) is refused like a handshake.
        let mut s = match tls.connector.connect(PeerTls::server_name(), tcp).await {
            Ok(s) => s,
            Err(e) => {
                r.refused += 1;
                r.last_refusal = Some(format!("TLS: {e}"));
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let session = match handshake(&mut s, &key, &unl, OsEntropy.seed32()).await {
            Ok(session) => session,
            Err(e) => {
                r.refused += 1;
                r.last_refusal = Some(e.to_string());
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut attack = sealed(&key, &session.id, 1, &[]);
        attack.extend_from_slice(&(MAX_FRAME_BYTES as u32).to_be_bytes());
        attack.resize(attack.len() + fill, 0);
        if s.write_all(&attack).await.is_err() {
            continue; // closed on us: the next try says why, if it fails
        }
        let declared = Instant::now();
        let mut b = [0u8; 1];
        match tokio::time::timeout_at(end, s.read(&mut b)).await {
            Ok(_) => {
                let ms = declared.elapsed().as_millis() as u64;
                if ms >= 1000 {
                    r.held += 1;
                }
                r.closed_after.push(ms);
            }
            Err(_) => {
                r.held += 1;
                r.open_at_end += 1;
            }
        }
    }
    Ok(r)
}

/// Attack A: `o.stall_sessions` stalled sessions at once for
/// `o.stall_seconds`, each replaced when the node closes it.
pub(super) async fn attack_a(
    o: &Options,
    addr: SocketAddr,
    key: &Keypair,
    unl: &[PubKey],
) -> anyhow::Result<Stalled> {
    let end = tokio::time::Instant::now() + Duration::from_secs(o.stall_seconds);
    let tasks: Vec<_> = (0..o.stall_sessions)
        .map(|_| tokio::spawn(stall(addr, key.clone(), unl.to_vec(), o.stall_fill(), end)))
        .collect();
    let mut all = Stalled::default();
    for t in tasks {
        all.add(t.await.context("a stalled session's task")??);
    }
    if all.held == 0 {
        bail!(
            "attack A never held a session open ({} opened, {} refused{})",
            all.opened,
            all.refused,
            all.last_refusal
                .as_ref()
                .map_or(String::new(), |e| format!(", last: {e}"))
        );
    }
    Ok(all)
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A user connection past the helo, taking messages of up to `max` bytes.
async fn user_connection(port: u16, key: &Keypair, max: usize) -> anyhow::Result<Ws> {
    let url = format!("ws://127.0.0.1:{port}");
    let config = WebSocketConfig {
        max_message_size: Some(max),
        max_frame_size: Some(max),
        ..WebSocketConfig::default()
    };
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(&url, Some(config), false)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    let challenge = match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
        Ok(Some(Ok(m @ (Message::Text(_) | Message::Binary(_))))) => m.into_text()?,
        other => bail!("{url}: expected the node's challenge, got {other:?}"),
    };
    let helo = answer_challenge(key, &challenge, now_ms() / 1000)?;
    ws.send(Message::Text(helo)).await?;
    Ok(ws)
}

/// Bytes the node sent on `ws` that wait unread in its socket.
fn unread(ws: &Ws) -> u64 {
    let MaybeTlsStream::Plain(s) = ws.get_ref() else {
        return 0;
    };
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, on a socket
    // this process owns.
    let rc = unsafe { libc::ioctl(s.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n.max(0) as u64
    } else {
        0
    }
}

/// What attack B did.
#[derive(Debug, Default)]
pub(super) struct Amplified {
    pub(super) inputs: u64,
    pub(super) opened: u64,
    /// Connections found closed (a write to them failed).
    pub(super) closed_by_node: u64,
    /// Output bytes that reached the attacker's sockets and wait there
    /// unread (each socket's receive queue, when it was dropped).
    pub(super) unread: u64,
}

/// Attack B: one user, `o.connections` connections that never read, one
/// input a round on one of them for `o.amplify_rounds` rounds; a
/// connection the node closes is opened again.
pub(super) async fn attack_b(o: &Options, port: u16) -> anyhow::Result<Amplified> {
    let key = random_key(&mut OsEntropy);
    let mut r = Amplified::default();
    let mut conns: Vec<Option<Ws>> = (0..o.connections).map(|_| None).collect();
    let round = Duration::from_millis(o.roundtime);
    let mut tick = tokio::time::interval(round);
    for n in 0..o.amplify_rounds {
        tick.tick().await;
        for c in conns.iter_mut().filter(|c| c.is_none()) {
            *c = Some(user_connection(port, &key, 1 << 20).await?);
            r.opened += 1;
        }
        // A write fails once the node has closed the connection (the first
        // after the close draws a reset): a ping each round finds those.
        // Distinct inputs, as a repeat within two rounds is a retry.
        let input = Message::Binary(format!("amplify {n}").into_bytes());
        let at = n as usize % conns.len();
        for (i, c) in conns.iter_mut().enumerate() {
            let Some(ws) = c else { continue };
            let m = if i == at {
                input.clone()
            } else {
                Message::Ping(vec![])
            };
            let sent = tokio::time::timeout(Duration::from_secs(1), ws.send(m)).await;
            if matches!(sent, Ok(Ok(()))) {
                r.inputs += u64::from(i == at);
            } else {
                r.unread += unread(ws);
                r.closed_by_node += 1;
                *c = None;
            }
        }
    }
    r.unread += conns.iter().flatten().map(unread).sum::<u64>();
    if r.unread == 0 {
        bail!("attack B took no effect: no output reached the attacker's connections");
    }
    Ok(r)
}

/// The reference for attack B: the same outputs to a user with one
/// connection that reads them, so what the outputs cost the node anyway
/// is told apart from what the attack adds. Outputs and bytes received.
pub(super) async fn reference_b(o: &Options, port: u16) -> anyhow::Result<(u64, u64)> {
    let key = random_key(&mut OsEntropy);
    let ws = user_connection(port, &key, o.output_bytes() + (1 << 20)).await?;
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        let (mut n, mut bytes) = (0u64, 0u64);
        while let Some(Ok(m)) = rx.next().await {
            if let Message::Binary(b) = m {
                n += 1;
                bytes += b.len() as u64;
            }
        }
        (n, bytes)
    });
    let mut tick = tokio::time::interval(Duration::from_millis(o.roundtime));
    for n in 0..o.amplify_rounds {
        tick.tick().await;
        tx.send(Message::Binary(format!("reference {n}").into_bytes()))
            .await
            .context("the reading user's input")?;
    }
    // Its last outputs come two or three rounds after its last input.
    tokio::time::sleep(Duration::from_millis(3 * o.roundtime)).await;
    let _ = tx.close().await;
    let got = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .context("the reading user did not finish")?
        .context("the reading user's task")?;
    if got.0 == 0 {
        bail!("the reading user got no output");
    }
    Ok(got)
}
