//! Frames on the wire: a length, then a body read in chunks under a
//! deadline; a sealed frame's body is a counter, the sender's signature
//! over the session id, counter and payload, then the payload.

use super::PeerError;
use crate::crypto::{verify, Hash, Keypair, Sig};
use crate::handshake::PeerSession;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const FRAME_DOMAIN: &str = "hotpocket/peer-frame/v2";
/// counter (8) + signature (64) around each payload.
pub const FRAME_OVERHEAD: usize = 72;
/// A frame's buffer grows by at most this much before the bytes to fill it
/// have arrived.
pub const READ_CHUNK: usize = 64 << 10;

/// Reads one length-prefixed frame of at most `max` bytes into `buf`
/// (cleared first). Waiting for a frame to start is not bounded (a quiet
/// link is fine); its body must arrive within `body_timeout`, and `buf`
/// grows by at most [`READ_CHUNK`] ahead of the bytes received, so a
/// declared length costs nothing until it is sent.
pub async fn read_frame_into<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
    body_timeout: Duration,
    buf: &mut Vec<u8>,
) -> Result<(), PeerError> {
    buf.clear();
    let len = r.read_u32().await? as usize;
    if len > max {
        return Err(PeerError::TooLarge(len));
    }
    let body = async {
        while buf.len() < len {
            let start = buf.len();
            buf.resize(start + (len - start).min(READ_CHUNK), 0);
            r.read_exact(&mut buf[start..]).await?;
        }
        Ok::<(), PeerError>(())
    };
    tokio::time::timeout(body_timeout, body)
        .await
        .map_err(|_| PeerError::Timeout)?
}

pub(super) async fn write_frame<W: AsyncWrite + Unpin>(
    w: &mut W,
    body: &[u8],
) -> Result<(), PeerError> {
    w.write_u32(body.len() as u32).await?;
    w.write_all(body).await?;
    w.flush().await?;
    Ok(())
}

fn frame_message(session: &Hash, counter: u64, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(40 + payload.len());
    m.extend_from_slice(&session.0);
    m.extend_from_slice(&counter.to_be_bytes());
    m.extend_from_slice(payload);
    m
}

/// A frame as sent: counter, signature, payload (public for tools and
/// tests that speak to a node as a peer).
pub fn seal(key: &Keypair, session: &Hash, counter: u64, payload: &[u8]) -> Vec<u8> {
    let sig = key.sign(FRAME_DOMAIN, &frame_message(session, counter, payload));
    let mut body = Vec::with_capacity(FRAME_OVERHEAD + payload.len());
    body.extend_from_slice(&counter.to_be_bytes());
    body.extend_from_slice(&sig.0);
    body.extend_from_slice(payload);
    body
}

/// Checks a sealed frame from `session`'s peer: its counter and payload.
pub(super) fn open<'a>(
    session: &PeerSession,
    frame: &'a [u8],
) -> Result<(u64, &'a [u8]), PeerError> {
    if frame.len() < FRAME_OVERHEAD {
        return Err(PeerError::Malformed);
    }
    let counter = u64::from_be_bytes(frame[..8].try_into().expect("length checked"));
    let sig = Sig(frame[8..FRAME_OVERHEAD].try_into().expect("length checked"));
    let payload = &frame[FRAME_OVERHEAD..];
    let signed = frame_message(&session.id, counter, payload);
    verify(&session.peer, FRAME_DOMAIN, &signed, &sig)
        .map_err(|_| PeerError::BadSignature(session.peer.to_hex()))?;
    Ok((counter, payload))
}
