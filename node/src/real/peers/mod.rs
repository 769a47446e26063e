//! Peer transport over TCP: length-prefixed frames, the handshake of
//! [`crate::handshake`] (which this file only moves bytes for), then every
//! frame signed for that session and verified.
//!
//! Each node dials every peer address and sends only on the connections it
//! dialled; connections it accepted are read-only. So every pair has one
//! path each way and no tie-break is needed. Dialling retries with backoff.
//!
//! Until a connection has proved itself it costs little and displaces
//! nothing: a bounded number of them at once (in total and per source
//! address), a TLS handshake (an X25519 exchange and one signature; up to
//! 64 KiB buffered) and the signed handshake inside it within one 5 s
//! deadline, buffers that grow only as bytes arrive, a deadline on every
//! frame body, and an accepted connection replaces an older one from the
//! same peer only once it delivered a validly signed frame.

use crate::crypto::{Keypair, PubKey};
use crate::env::{Entropy, PeerNetwork};
use crate::gate::{Gate, GateConfig, LogThrottle, Slot};
use crate::handshake::{Handshake, HandshakeError, Hello, PeerSession, VERSION};
use crate::real::OsEntropy;
use crate::wire::MAX_FRAME_BYTES;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};

mod dial;
mod frame;
mod tls;

pub use dial::{connect, handshake, PeerAddr};
use dial::{dial_loop, run_handshake};
use frame::{open, write_frame, FRAME_OVERHEAD};
pub use frame::{read_frame_into, seal, READ_CHUNK};
pub use tls::{peer_key, PeerTls, PeerTlsError};

/// A peer connection as the transport reads and writes it: TLS over TCP,
/// or bare TCP where TLS is off (transport tests of the signed layer).
pub trait Link: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Link for T {}

/// Bounds TLS and the handshake inside it (four messages of at most 65
/// bytes), and then again the wait for the dialer's first signed frame,
/// sent right after it.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A frame's body must arrive within this once its length did; a peer that
/// declares a large frame and stalls is cut off.
const FRAME_BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Frames a peer may send per second (with twice that as a burst); more
/// are dropped. A round has a few dozen messages per peer.
const MAX_FRAMES_PER_SECOND: u32 = 2000;
/// Frames queued for one peer before new ones are dropped.
const SEND_QUEUE: usize = 4096;
/// A write that takes longer means the peer is gone: reconnect.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Warnings anyone can cause are logged at most once per this.
const WARN_INTERVAL_MS: u64 = 10_000;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("timed out")]
    Timeout,
    #[error("frame of {0} bytes is over the limit")]
    TooLarge(usize),
    #[error("handshake: {0}")]
    Handshake(#[from] HandshakeError),
    #[error("malformed frame")]
    Malformed,
    #[error("bad signature from {0}")]
    BadSignature(String),
    #[error("frame counter went backwards")]
    Replay,
    #[error("replaced by a newer connection from the same peer")]
    Replaced,
    #[error("already connected to {0} through another address")]
    Duplicate(String),
    #[error("TLS certificate of {tls} but handshake of {handshake}")]
    TlsKeyMismatch { tls: String, handshake: String },
    #[error("TLS: {0}")]
    Tls(String),
}

/// A TLS failure as a peer error: rustls's own (a certificate outside
/// the UNL, an alert) named as such, rather than as I/O.
fn tls_error(e: std::io::Error) -> PeerError {
    let rustls = e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<tokio_rustls::rustls::Error>());
    match rustls {
        Some(r) => PeerError::Tls(r.to_string()),
        None => PeerError::Io(e),
    }
}

/// `session`, unless TLS proved another key than it did: `tls` is what
/// TLS proved, or `None` for bare TCP (transport tests).
fn bound(
    tls: Option<Option<PubKey>>,
    session: Result<PeerSession, PeerError>,
) -> Result<PeerSession, PeerError> {
    let session = session?;
    match tls {
        None => Ok(session),
        Some(Some(k)) if k == session.peer => Ok(session),
        Some(proved) => Err(PeerError::TlsKeyMismatch {
            tls: proved.map_or_else(|| "no key".into(), |k| k.short()),
            handshake: session.peer.short(),
        }),
    }
}

impl PeerError {
    fn is_loopback(&self) -> bool {
        matches!(self, PeerError::Handshake(HandshakeError::Loopback))
    }
}

/// Counts of what the transport saw, for operators and tests.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Accepted connections whose handshake completed.
    pub inbound_sessions: u64,
    /// Accepted connections whose handshake failed or timed out.
    pub refused: u64,
    /// Accepted connections closed at once: too many unauthenticated.
    pub over_capacity: u64,
}

#[derive(Default)]
struct Counters {
    inbound_sessions: AtomicU64,
    refused: AtomicU64,
    over_capacity: AtomicU64,
}

/// What `TcpPeers::watch` sees.
#[derive(Clone)]
pub struct PeerWatch {
    outbound: Arc<Mutex<BTreeMap<PubKey, mpsc::Sender<Vec<u8>>>>>,
    counters: Arc<Counters>,
}

impl PeerWatch {
    /// Peers this node has a sending connection to now.
    pub fn connected(&self) -> usize {
        self.outbound.lock().expect("not poisoned").len()
    }

    pub fn stats(&self) -> PeerStats {
        let c = &self.counters;
        PeerStats {
            inbound_sessions: c.inbound_sessions.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            over_capacity: c.over_capacity.load(Ordering::Relaxed),
        }
    }
}

/// The running transport, as the driver sees it.
pub struct TcpPeers {
    incoming: mpsc::Receiver<(PubKey, Vec<u8>)>,
    outbound: Arc<Mutex<BTreeMap<PubKey, mpsc::Sender<Vec<u8>>>>>,
    shutdown: watch::Receiver<bool>,
    shared: Shared,
}

/// Log throttles, one per kind of warning a peer can cause at will.
struct Warnings {
    epoch: tokio::time::Instant,
    refused: LogThrottle,
    over_capacity: LogThrottle,
    queue_full: LogThrottle,
}

impl Warnings {
    /// Counts one event of the kind `pick` names; the count to log, if due.
    fn event(&mut self, pick: fn(&mut Warnings) -> &mut LogThrottle) -> Option<u64> {
        let now = self.epoch.elapsed().as_millis() as u64;
        pick(self).event(now)
    }
}

/// A peer's inbound link: its generation, and the bell that ends it.
type Inbound = (u64, Arc<Notify>);

#[derive(Clone)]
struct Shared {
    key: Keypair,
    unl: Arc<Vec<PubKey>>,
    incoming: mpsc::Sender<(PubKey, Vec<u8>)>,
    outbound: Arc<Mutex<BTreeMap<PubKey, mpsc::Sender<Vec<u8>>>>>,
    /// The one inbound connection each peer may have (the newest proven
    /// one, by generation, with the bell that ends it when a newer one is
    /// proven), so a peer can neither multiply its rate budget by opening
    /// more nor hold a partly sent frame on each of many.
    inbound: Arc<Mutex<(u64, BTreeMap<PubKey, Inbound>)>>,
    gate: Arc<Mutex<Gate>>,
    warnings: Arc<Mutex<Warnings>>,
    counters: Arc<Counters>,
    /// TLS on every link; none only in transport tests.
    tls: Option<PeerTls>,
}

impl Shared {
    fn warn(&self, pick: fn(&mut Warnings) -> &mut LogThrottle) -> Option<u64> {
        self.warnings.lock().expect("not poisoned").event(pick)
    }
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
        tls: Option<PeerTls>,
    ) -> TcpPeers {
        let gate = GateConfig::default();
        Self::start_with(key, unl, listener, peers, shutdown, gate, tls)
    }

    /// As [`TcpPeers::start`], with limits on unauthenticated connections.
    /// Without `tls` the links are bare TCP: only for tests of the signed
    /// layer beneath it.
    pub fn start_with(
        key: Keypair,
        unl: Vec<PubKey>,
        listener: TcpListener,
        peers: Vec<String>,
        shutdown: watch::Receiver<bool>,
        gate: GateConfig,
        tls: Option<PeerTls>,
    ) -> TcpPeers {
        let (tx, rx) = mpsc::channel(16 * 1024);
        let outbound = Arc::new(Mutex::new(BTreeMap::new()));
        let shared = Shared {
            key,
            unl: Arc::new(unl),
            incoming: tx,
            outbound: outbound.clone(),
            inbound: Default::default(),
            gate: Arc::new(Mutex::new(Gate::new(gate))),
            warnings: Arc::new(Mutex::new(Warnings {
                epoch: tokio::time::Instant::now(),
                refused: LogThrottle::new(WARN_INTERVAL_MS),
                over_capacity: LogThrottle::new(WARN_INTERVAL_MS),
                queue_full: LogThrottle::new(WARN_INTERVAL_MS),
            })),
            counters: Default::default(),
            tls,
        };
        tokio::spawn(accept_loop(shared.clone(), listener, shutdown.clone()));
        for entry in peers {
            match entry.parse::<PeerAddr>() {
                Ok(peer) => {
                    tokio::spawn(dial_loop(shared.clone(), peer, shutdown.clone()));
                }
                Err(e) => {
                    tracing::error!(peer = %entry, error = %e, "not dialling a malformed peer")
                }
            }
        }
        TcpPeers {
            incoming: rx,
            outbound,
            shutdown,
            shared,
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

    pub fn stats(&self) -> PeerStats {
        self.watch().stats()
    }

    /// A view of the links that stays with the caller once the transport
    /// has moved into the driver (the metrics endpoint reads it).
    pub fn watch(&self) -> PeerWatch {
        PeerWatch {
            outbound: self.outbound.clone(),
            counters: self.shared.counters.clone(),
        }
    }

    fn queue(&self, to: &PubKey, tx: &mpsc::Sender<Vec<u8>>, bytes: Vec<u8>) {
        if tx.try_send(bytes).is_err() {
            if let Some(dropped) = self.shared.warn(|w| &mut w.queue_full) {
                tracing::warn!(peer = %to.short(), dropped, "send queue full: frames dropped");
            }
        }
    }
}

impl PeerNetwork for TcpPeers {
    fn send(&mut self, to: &PubKey, bytes: Vec<u8>) {
        let out = self.outbound.lock().expect("not poisoned");
        if let Some(tx) = out.get(to) {
            self.queue(to, tx, bytes);
        }
    }

    fn broadcast(&mut self, bytes: Vec<u8>) {
        let out = self.outbound.lock().expect("not poisoned");
        for (peer, tx) in out.iter() {
            self.queue(peer, tx, bytes.clone());
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
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors, mostly: one line per interval.
                if let Some(n) = shared.warn(|w| &mut w.refused) {
                    tracing::warn!(error = %e, events = n, "accept failed");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let slot = match Slot::take(&shared.gate, addr.ip()) {
            Ok(slot) => slot,
            Err(admission) => {
                shared
                    .counters
                    .over_capacity
                    .fetch_add(1, Ordering::Relaxed);
                if let Some(n) = shared.warn(|w| &mut w.over_capacity) {
                    tracing::warn!(%addr, ?admission, refused = n, "too many unauthenticated peer connections");
                }
                drop(stream);
                continue;
            }
        };
        tokio::spawn(serve_inbound(
            shared.clone(),
            stream,
            addr,
            slot,
            shutdown.clone(),
        ));
    }
}

async fn serve_inbound(
    shared: Shared,
    stream: TcpStream,
    addr: SocketAddr,
    slot: Slot,
    shutdown: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let hs = Handshake::acceptor(shared.key.clone(), shared.unl.to_vec(), challenge());
    // TLS and the handshake inside it share one deadline.
    let session = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
        let (mut link, tls_key): (Box<dyn Link>, _) = match &shared.tls {
            Some(tls) => {
                let s = tls.acceptor.accept(stream).await.map_err(tls_error)?;
                let key = peer_key(s.get_ref().1);
                (Box::new(s), Some(key))
            }
            None => (Box::new(stream), None),
        };
        let session = run_handshake(&mut link, hs, None).await;
        Ok((link, bound(tls_key, session)))
    })
    .await
    .unwrap_or(Err(PeerError::Timeout));
    let refused = |e: PeerError| {
        shared.counters.refused.fetch_add(1, Ordering::Relaxed);
        if let Some(n) = shared.warn(|w| &mut w.refused) {
            tracing::warn!(%addr, error = %e, refused = n, "refused peer connections");
        }
    };
    let (mut stream, session) = match session {
        Ok(s) => s,
        Err(e) => return refused(e),
    };
    match session {
        Ok(session) => {
            shared
                .counters
                .inbound_sessions
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(peer = %session.peer.short(), %addr, "peer connected (inbound)");
            let generation = {
                let mut g = shared.inbound.lock().expect("not poisoned");
                g.0 += 1;
                g.0
            };
            let why = read_loop(&shared, stream, &session, generation, slot, shutdown).await;
            // A replaced or failed connection only ever held its own entry.
            let mut g = shared.inbound.lock().expect("not poisoned");
            if g.1
                .get(&session.peer)
                .is_some_and(|(n, _)| *n == generation)
            {
                g.1.remove(&session.peer);
            }
            drop(g);
            tracing::info!(peer = %session.peer.short(), reason = %why, "inbound peer connection closed");
        }
        Err(e) if e.is_loopback() => {
            // Our own hello tells the dialer (ourselves) too, so it backs
            // off instead of redialling its own address.
            let me = Hello {
                version: VERSION,
                key: shared.key.public(),
                challenge: challenge(),
            };
            let _ = write_frame(&mut stream, &me.encode()).await;
        }
        Err(e) => refused(e),
    }
}

/// Reads signed frames until the connection fails or misbehaves. `slot`
/// is held, and the connection displaces no other from the same peer,
/// until its first validly signed frame.
async fn read_loop(
    shared: &Shared,
    stream: Box<dyn Link>,
    session: &PeerSession,
    generation: u64,
    slot: Slot,
    mut shutdown: watch::Receiver<bool>,
) -> PeerError {
    let mut r = tokio::io::BufReader::new(stream);
    let mut slot = Some(slot);
    let mut last = 0u64;
    let mut window = tokio::time::Instant::now();
    let mut in_window = 0u32;
    let mut dropped = 0u64;
    let mut frame = Vec::new();
    let replaced = Arc::new(Notify::new());
    loop {
        // A big frame's buffer is not kept for the small ones after it.
        if frame.capacity() > 4 * READ_CHUNK {
            frame = Vec::new();
        }
        let proven = slot.is_none();
        // The first frame is the dialer's empty one: nothing bigger is read
        // before the link is proven.
        let max = if proven { MAX_FRAME_BYTES } else { 0 } + FRAME_OVERHEAD;
        let read = async {
            let read = read_frame_into(&mut r, max, FRAME_BODY_TIMEOUT, &mut frame);
            if proven {
                read.await
            } else {
                // The dialer sends its first frame right after the handshake.
                tokio::time::timeout(HANDSHAKE_TIMEOUT, read)
                    .await
                    .unwrap_or(Err(PeerError::Timeout))
            }
        };
        let result = tokio::select! {
            f = read => f,
            _ = shutdown.changed() => return PeerError::Io(std::io::ErrorKind::Interrupted.into()),
            // Even in the middle of a frame: its buffer goes with it.
            _ = replaced.notified() => return PeerError::Replaced,
        };
        if let Err(e) = result {
            return e;
        }
        if frame.len() < FRAME_OVERHEAD {
            return PeerError::Malformed;
        }
        // The rate is checked first, so a flood costs no verifications.
        if window.elapsed() >= Duration::from_secs(1) {
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
        let (counter, payload) = match open(session, &frame) {
            Ok(f) => f,
            Err(e) => return e,
        };
        if counter <= last {
            return PeerError::Replay;
        }
        last = counter;
        if !proven {
            // Proven: now it is the peer's one inbound link, and the one
            // before it ends at once.
            let old = shared
                .inbound
                .lock()
                .expect("not poisoned")
                .1
                .insert(session.peer, (generation, replaced.clone()));
            if let Some((_, bell)) = old {
                bell.notify_one();
            }
            slot = None;
        }
        // The dialer's first frame is empty: it proves the link, and
        // carries nothing to deliver.
        if payload.is_empty() {
            continue;
        }
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
