//! The dialling side of the peer transport: one loop per configured peer
//! address, each holding at most one connection, the only ones this node
//! sends on.

use super::frame::{read_frame_into, seal, write_frame};
use super::tls::{peer_key, PeerTls};
use super::{bound, challenge, tls_error, Link, PeerError, Shared};
use super::{HANDSHAKE_TIMEOUT, SEND_QUEUE, WRITE_TIMEOUT};
use crate::crypto::{Keypair, PubKey};
use crate::handshake::{Handshake, PeerSession, Step, MAX_MESSAGE_BYTES};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};

/// A peer to dial: `host:port`, or `KEY@host:port` (KEY in hex) to take
/// only that key at that address. Without a key, the first key found there
/// is the only one taken from it afterwards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    pub key: Option<PubKey>,
    pub addr: String,
}

impl std::str::FromStr for PeerAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<PeerAddr, String> {
        let (key, addr) = match s.split_once('@') {
            Some((k, a)) => (
                Some(PubKey::from_hex(k).map_err(|e| format!("key {k:?}: {e}"))?),
                a,
            ),
            None => (None, s),
        };
        addr.rsplit_once(':')
            .and_then(|(host, port)| (!host.is_empty()).then_some(port))
            .and_then(|port| port.parse::<u16>().ok())
            .ok_or_else(|| format!("{addr:?} is not host:port"))?;
        Ok(PeerAddr {
            key,
            addr: addr.to_string(),
        })
    }
}

/// Connects to a peer at `addr`: over TLS as `tls` says (bounded by the
/// handshake timeout), else bare TCP. With TLS, also what key the peer's
/// certificate proved (`Some(None)`: none, which `bound` refuses).
pub async fn connect(
    addr: &str,
    tls: Option<&PeerTls>,
) -> Result<(Box<dyn Link>, Option<Option<PubKey>>), PeerError> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let Some(tls) = tls else {
        return Ok((Box::new(stream), None));
    };
    let dial = tls.connector.connect(PeerTls::server_name(), stream);
    let s = (tokio::time::timeout(HANDSHAKE_TIMEOUT, dial).await)
        .map_err(|_| PeerError::Timeout)?
        .map_err(tls_error)?;
    let key = peer_key(s.get_ref().1);
    Ok((Box::new(s), Some(key)))
}

/// Dials a handshake on `stream` as `key` (bounded by the handshake
/// timeout), for tools and tests that speak to a node directly.
pub async fn handshake<S: Link>(
    stream: &mut S,
    key: &Keypair,
    unl: &[PubKey],
    challenge: [u8; 32],
) -> Result<PeerSession, PeerError> {
    dial_handshake(stream, key, unl, None, challenge).await
}

/// As [`handshake`], refusing any key at the other end but `expect`.
async fn dial_handshake<S: Link>(
    stream: &mut S,
    key: &Keypair,
    unl: &[PubKey],
    expect: Option<PubKey>,
    challenge: [u8; 32],
) -> Result<PeerSession, PeerError> {
    let (mut hs, hello) = Handshake::dialer(key.clone(), unl.to_vec(), challenge);
    if let Some(peer) = expect {
        hs = hs.expecting(peer);
    }
    tokio::time::timeout(HANDSHAKE_TIMEOUT, run_handshake(stream, hs, Some(hello)))
        .await
        .unwrap_or(Err(PeerError::Timeout))
}

/// Runs `hs` over `stream` to the end, sending `first` before anything.
pub(super) async fn run_handshake<S: Link>(
    stream: &mut S,
    mut hs: Handshake,
    first: Option<Vec<u8>>,
) -> Result<PeerSession, PeerError> {
    if let Some(m) = first {
        write_frame(stream, &m).await?;
    }
    let mut msg = Vec::new();
    loop {
        read_frame_into(stream, MAX_MESSAGE_BYTES, HANDSHAKE_TIMEOUT, &mut msg).await?;
        match hs.receive(&msg)? {
            Step::Send(m) => write_frame(stream, &m).await?,
            Step::Done { last, session } => {
                if let Some(m) = last {
                    write_frame(stream, &m).await?;
                }
                return Ok(session);
            }
        }
    }
}

pub(super) async fn dial_loop(shared: Shared, peer: PeerAddr, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    // The key configured for this address, else the first found there: the
    // only one taken from it. An insider whose address we dial cannot
    // answer as another node and relay our handshake to it.
    let mut pinned = peer.key;
    let addr = peer.addr;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = dial_once(&shared, &addr, &mut pinned, &mut shutdown, &mut backoff).await;
        match result {
            // Our own address (or someone reflecting us): try again later.
            Err(e) if e.is_loopback() => backoff = Duration::from_secs(30),
            Err(e @ (PeerError::Io(_) | PeerError::Timeout | PeerError::Duplicate(_))) => {
                tracing::debug!(%addr, error = %e, "peer connection failed")
            }
            // One address each, retried with backoff: not a flood.
            Err(e) => tracing::warn!(%addr, error = %e, "refused a peer we dialled"),
            Ok(()) => {}
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.changed() => return,
        }
        backoff = (backoff * 2).clamp(Duration::from_millis(100), Duration::from_secs(5));
    }
}

/// Whether `peer` has a working outbound link.
fn linked(out: &BTreeMap<PubKey, mpsc::Sender<Vec<u8>>>, peer: &PubKey) -> bool {
    out.get(peer).is_some_and(|tx| !tx.is_closed())
}

async fn dial_once(
    shared: &Shared,
    addr: &str,
    pinned: &mut Option<PubKey>,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
) -> Result<(), PeerError> {
    // The key this address answers for is linked through another address:
    // a second link would only replace that one at the acceptor.
    let already = |p: &PubKey| linked(&shared.outbound.lock().expect("not poisoned"), p);
    if let Some(peer) = pinned.as_ref().filter(|p| already(p)) {
        return Err(PeerError::Duplicate(peer.short()));
    }
    let (mut stream, tls_key) = connect(addr, shared.tls.as_ref()).await?;
    let session = dial_handshake(&mut stream, &shared.key, &shared.unl, *pinned, challenge()).await;
    let session = bound(tls_key, session)?;
    *pinned = Some(session.peer);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    // Weak, so a connection whose entry a newer one replaced still sees
    // its queue close and ends.
    let mine = tx.downgrade();
    {
        // Checked and taken under one lock, before the first frame proves
        // this link to the acceptor (where it would end the working one).
        let mut out = shared.outbound.lock().expect("not poisoned");
        if linked(&out, &session.peer) {
            return Err(PeerError::Duplicate(session.peer.short()));
        }
        out.insert(session.peer, tx);
    }
    *backoff = Duration::from_millis(100);
    tracing::info!(peer = %session.peer.short(), %addr, "peer connected (outbound)");
    let mut w = tokio::io::BufWriter::new(stream);
    let result = async {
        // The empty first frame proves the link to the acceptor at once.
        let mut counter = 1u64;
        write_frame(&mut w, &seal(&shared.key, &session.id, counter, &[])).await?;
        loop {
            let payload = tokio::select! {
                p = rx.recv() => p,
                _ = shutdown.changed() => None,
            };
            let Some(payload) = payload else { break Ok(()) };
            counter += 1;
            let body = seal(&shared.key, &session.id, counter, &payload);
            match tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut w, &body)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Err(e),
                Err(_) => break Err(PeerError::Timeout),
            }
        }
    }
    .await;
    {
        // Only our own entry: a newer connection to this peer may own it.
        let mut out = shared.outbound.lock().expect("not poisoned");
        let ours = mine.upgrade();
        if out
            .get(&session.peer)
            .is_some_and(|tx| ours.as_ref().is_some_and(|o| tx.same_channel(o)))
        {
            out.remove(&session.peer);
        }
    }
    tracing::info!(peer = %session.peer.short(), "outbound peer connection closed");
    result
}
