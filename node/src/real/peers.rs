//! Peer transport over TCP: length-prefixed frames, a handshake in which
//! each side proves it holds a UNL key by signing the other's fresh
//! challenge, then every frame signed for that session and verified.
//!
//! Each node dials every peer address and sends only on the connections it
//! dialled; connections it accepted are read-only. So every pair has one
//! path each way and no tie-break is needed. Dialling retries with backoff.

use crate::consensus::MAX_FRAME_BYTES;
use crate::crypto::{verify, Hash, Keypair, PubKey, Sig};
use crate::env::{Entropy, PeerNetwork};
use crate::real::OsEntropy;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const HELLO_DOMAIN: &str = "hotpocket/peer-hello/v1";
const FRAME_DOMAIN: &str = "hotpocket/peer-frame/v1";
const VERSION: u8 = 1;
/// counter (8) + signature (64) around each payload.
const FRAME_OVERHEAD: usize = 72;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Frames a peer may send per second (with twice that as a burst); more
/// are dropped. A round has a few dozen messages per peer.
const MAX_FRAMES_PER_SECOND: u32 = 2000;
/// Frames queued for one peer before new ones are dropped.
const SEND_QUEUE: usize = 4096;
/// A write that takes longer means the peer is gone: reconnect.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("handshake timed out")]
    Timeout,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("peer key {0} is not in the UNL")]
    NotInUnl(String),
    #[error("malformed handshake")]
    Malformed,
    #[error("bad signature from {0}")]
    BadSignature(String),
    #[error("frame counter went backwards")]
    Replay,
    #[error("connected to ourselves")]
    Loopback,
    #[error("replaced by a newer connection from the same peer")]
    Replaced,
}

async fn read_frame<R: AsyncRead + Unpin>(r: &mut R, max: usize) -> Result<Vec<u8>, PeerError> {
    let len = r.read_u32().await? as usize;
    if len > max {
        return Err(PeerError::TooLarge(len));
    }
    let mut buf = vec![0u8; len];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, body: &[u8]) -> Result<(), PeerError> {
    w.write_u32(body.len() as u32).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

/// An authenticated connection's keys: who is on the other end, and the
/// session id both sides sign frames under.
pub struct Session {
    pub peer: PubKey,
    id: Hash,
}

/// Runs the handshake on `stream`: both sides send (version, key, fresh
/// challenge), then a signature over the other's challenge and both keys.
pub async fn handshake(
    stream: &mut TcpStream,
    key: &Keypair,
    unl: &[PubKey],
    challenge: [u8; 32],
) -> Result<Session, PeerError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let mut hello = vec![VERSION];
        hello.extend_from_slice(&key.public().0);
        hello.extend_from_slice(&challenge);
        write_frame(stream, &hello).await?;
        let theirs = read_frame(stream, 65).await?;
        if theirs.len() != 65 || theirs[0] != VERSION {
            return Err(PeerError::Malformed);
        }
        let peer = PubKey(theirs[1..33].try_into().expect("length checked"));
        let their_challenge: [u8; 32] = theirs[33..65].try_into().expect("length checked");
        if peer == key.public() {
            return Err(PeerError::Loopback);
        }
        if !unl.contains(&peer) {
            return Err(PeerError::NotInUnl(peer.to_hex()));
        }
        let proof = |c: &[u8; 32], signer: &PubKey, other: &PubKey| {
            let mut m = c.to_vec();
            m.extend_from_slice(&signer.0);
            m.extend_from_slice(&other.0);
            m
        };
        let sig = key.sign(HELLO_DOMAIN, &proof(&their_challenge, &key.public(), &peer));
        write_frame(stream, &sig.0).await?;
        let their_sig = read_frame(stream, 64).await?;
        let their_sig = Sig(their_sig.try_into().map_err(|_| PeerError::Malformed)?);
        verify(
            &peer,
            HELLO_DOMAIN,
            &proof(&challenge, &peer, &key.public()),
            &their_sig,
        )
        .map_err(|_| PeerError::BadSignature(peer.to_hex()))?;
        // Ordered by key, so both sides compute the same id.
        let (a, b) = if key.public() < peer {
            (challenge, their_challenge)
        } else {
            (their_challenge, challenge)
        };
        let id = Hash::of("hotpocket/peer-session/v1", &[&a, &b]);
        Ok(Session { peer, id })
    })
    .await
    .map_err(|_| PeerError::Timeout)?
}

fn frame_message(session: &Hash, counter: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(40 + payload.len());
    m.extend_from_slice(&session.0);
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// The running transport, as the driver sees it.
pub struct TcpPeers {
    incoming: mpsc::Receiver<(PubKey, Vec<u8>)>,
    outbound: Arc<Mutex<BTreeMap<PubKey, mpsc::Sender<Vec<u8>>>>>,
    shutdown: watch::Receiver<bool>,
}

#[derive(Clone)]
struct Shared {
    key: Keypair,
    unl: Arc<Vec<PubKey>>,
    incoming: mpsc::Sender<(PubKey, Vec<u8>)>,
    outbound: Arc<Mutex<BTreeMap<PubKey, mpsc::Sender<Vec<u8>>>>>,
    /// The one inbound connection each peer may have (the newest), so a
    /// peer cannot multiply its rate budget by opening more.
    inbound: Arc<Mutex<(u64, BTreeMap<PubKey, u64>)>>,
}

fn challenge() -> [u8; 32] {
    OsEntropy.seed32()
}

impl TcpPeers {
    /// Listens on `listener` and dials every address in `peers` until
    /// `shutdown` turns true.
    pub fn start(
        key: Keypair,
        unl: Vec<PubKey>,
        listener: TcpListener,
        peers: Vec<String>,
        shutdown: watch::Receiver<bool>,
    ) -> TcpPeers {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let outbound = Arc::new(Mutex::new(BTreeMap::new()));
        let shared = Shared {
            key,
            unl: Arc::new(unl),
            incoming: tx,
            outbound: outbound.clone(),
            inbound: Default::default(),
        };
        tokio::spawn(accept_loop(shared.clone(), listener, shutdown.clone()));
        for addr in peers {
            tokio::spawn(dial_loop(shared.clone(), addr, shutdown.clone()));
        }
        TcpPeers {
            incoming: rx,
            outbound,
            shutdown,
        }
    }

    /// Peers this node currently has a sending connection to.
    pub fn connected(&self) -> Vec<PubKey> {
        self.outbound
            .lock()
            .expect("not poisoned")
            .keys()
            .copied()
            .collect()
    }
}

impl PeerNetwork for TcpPeers {
    fn send(&mut self, to: &PubKey, bytes: Vec<u8>) {
        let out = self.outbound.lock().expect("not poisoned");
        if let Some(tx) = out.get(to) {
            if tx.try_send(bytes).is_err() {
                tracing::warn!(peer = %to.short(), "send queue full: frame dropped");
            }
        }
    }

    fn broadcast(&mut self, bytes: Vec<u8>) {
        let out = self.outbound.lock().expect("not poisoned");
        for (peer, tx) in out.iter() {
            if tx.try_send(bytes.clone()).is_err() {
                tracing::warn!(peer = %peer.short(), "send queue full: frame dropped");
            }
        }
    }

    async fn recv(&mut self) -> Option<(PubKey, Vec<u8>)> {
        if *self.shutdown.borrow() {
            return None;
        }
        tokio::select! {
            m = self.incoming.recv() => m,
            _ = self.shutdown.changed() => None,
        }
    }
}

async fn accept_loop(shared: Shared, listener: TcpListener, mut shutdown: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = shutdown.changed() => return,
        };
        let (mut stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let shared = shared.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let _ = stream.set_nodelay(true);
            match handshake(&mut stream, &shared.key, &shared.unl, challenge()).await {
                Ok(session) => {
                    tracing::info!(peer = %session.peer.short(), %addr, "peer connected (inbound)");
                    let generation = {
                        let mut g = shared.inbound.lock().expect("not poisoned");
                        g.0 += 1;
                        let n = g.0;
                        g.1.insert(session.peer, n);
                        n
                    };
                    let why = read_loop(&shared, stream, &session, generation, shutdown).await;
                    tracing::info!(peer = %session.peer.short(), reason = %why, "inbound peer connection closed");
                }
                Err(PeerError::Loopback) => {}
                Err(e) => tracing::warn!(%addr, error = %e, "refused a peer connection"),
            }
        });
    }
}

/// Reads signed frames until the connection fails or misbehaves.
async fn read_loop(
    shared: &Shared,
    stream: TcpStream,
    session: &Session,
    generation: u64,
    mut shutdown: watch::Receiver<bool>,
) -> PeerError {
    let mut r = tokio::io::BufReader::new(stream);
    let mut last = 0u64;
    let mut window = tokio::time::Instant::now();
    let mut in_window = 0u32;
    let mut dropped = 0u64;
    loop {
        let frame = tokio::select! {
            f = read_frame(&mut r, MAX_FRAME_BYTES + FRAME_OVERHEAD) => f,
            _ = shutdown.changed() => return PeerError::Io(std::io::ErrorKind::Interrupted.into()),
        };
        let frame = match frame {
            Ok(f) if f.len() >= FRAME_OVERHEAD => f,
            Ok(_) => return PeerError::Malformed,
            Err(e) => return e,
        };
        // The rate is checked first, so a flood costs no verifications.
        if window.elapsed() >= Duration::from_secs(1) {
            let g = shared.inbound.lock().expect("not poisoned");
            if g.1.get(&session.peer) != Some(&generation) {
                return PeerError::Replaced;
            }
            drop(g);
            if dropped > 0 {
                tracing::warn!(peer = %session.peer.short(), dropped, "peer over its message rate");
            }
            window = tokio::time::Instant::now();
            in_window = 0;
            dropped = 0;
        }
        in_window += 1;
        if in_window > MAX_FRAMES_PER_SECOND * 2 {
            dropped += 1;
            continue;
        }
        let counter = u64::from_be_bytes(frame[..8].try_into().expect("length checked"));
        let sig = Sig(frame[8..72].try_into().expect("length checked"));
        let payload = &frame[72..];
        let signed = frame_message(&session.id, counter, payload);
        if verify(&session.peer, FRAME_DOMAIN, &signed, &sig).is_err() {
            return PeerError::BadSignature(session.peer.to_hex());
        }
        if counter <= last {
            return PeerError::Replay;
        }
        last = counter;
        if shared
            .incoming
            .send((session.peer, payload.to_vec()))
            .await
            .is_err()
        {
            return PeerError::Io(std::io::ErrorKind::BrokenPipe.into());
        }
    }
}

async fn dial_loop(shared: Shared, addr: String, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let result = dial_once(&shared, &addr, &mut shutdown, &mut backoff).await;
        match result {
            // Our own address (or someone reflecting us): try again later.
            Err(PeerError::Loopback) => backoff = Duration::from_secs(30),
            Err(e @ (PeerError::Io(_) | PeerError::Timeout)) => {
                tracing::debug!(%addr, error = %e, "peer connection failed")
            }
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

async fn dial_once(
    shared: &Shared,
    addr: &str,
    shutdown: &mut watch::Receiver<bool>,
    backoff: &mut Duration,
) -> Result<(), PeerError> {
    let mut stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    let session = handshake(&mut stream, &shared.key, &shared.unl, challenge()).await?;
    *backoff = Duration::from_millis(100);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(SEND_QUEUE);
    // Weak, so a connection whose entry a newer one replaced still sees
    // its queue close and ends.
    let mine = tx.downgrade();
    shared
        .outbound
        .lock()
        .expect("not poisoned")
        .insert(session.peer, tx);
    tracing::info!(peer = %session.peer.short(), %addr, "peer connected (outbound)");
    let mut w = tokio::io::BufWriter::new(stream);
    let mut counter = 0u64;
    let result = loop {
        let payload = tokio::select! {
            p = rx.recv() => p,
            _ = shutdown.changed() => None,
        };
        let Some(payload) = payload else { break Ok(()) };
        counter += 1;
        let sig = shared
            .key
            .sign(FRAME_DOMAIN, &frame_message(&session.id, counter, &payload));
        let mut body = Vec::with_capacity(FRAME_OVERHEAD + payload.len());
        body.extend_from_slice(&counter.to_be_bytes());
        body.extend_from_slice(&sig.0);
        body.extend_from_slice(&payload);
        match tokio::time::timeout(WRITE_TIMEOUT, write_frame(&mut w, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => break Err(e),
            Err(_) => break Err(PeerError::Timeout),
        }
    };
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
