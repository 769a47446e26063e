//! The party line's delivery rules, node by node.

use super::*;
use crate::crypto::{KeyRing, Keypair, PubKey};

struct Net {
    keys: Vec<Keypair>,
    unl: Vec<PubKey>,
    ring: KeyRing,
}

impl Net {
    fn new() -> Net {
        let keys: Vec<Keypair> = (1..=4).map(|i| Keypair::from_seed([i; 32])).collect();
        let mut unl: Vec<PubKey> = keys.iter().map(|k| k.public()).collect();
        unl.sort();
        let ring = KeyRing::new(&unl);
        Net { keys, unl, ring }
    }

    fn pk(&self, i: usize) -> PubKey {
        self.keys[i].public()
    }

    /// Node `i`'s party line with `limits`, running `seq`.
    fn line_with(&self, i: usize, limits: NplLimits, seq: u64) -> PartyLine {
        let mut l = PartyLine::new(limits, self.pk(i)).unwrap();
        l.expect(seq);
        assert!(l.run_started(seq).is_empty());
        l
    }

    fn line(&self, i: usize, seq: u64) -> PartyLine {
        self.line_with(i, NplLimits::default(), seq)
    }

    /// Chunk `index` of node `i`'s run `seq`, fresh from its author.
    fn env(&self, i: usize, seq: u64, index: u64, data: &[u8]) -> NplEnvelope {
        NplEnvelope {
            hops: 0,
            chunk: NplChunk {
                author: self.pk(i),
                seq,
                index,
                data: data.to_vec(),
            }
            .sign(&self.keys[i]),
        }
    }

    /// Node `to` receives `env` directly from its author.
    fn recv(&self, line: &mut PartyLine, env: NplEnvelope) -> Received {
        let from = env.chunk.chunk.author;
        line.receive(&self.unl, &self.ring, from, env)
    }
}

#[test]
fn accepts_a_valid_chunk_and_frames_it() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let r = net.recv(&mut l, net.env(1, 5, 0, b"hello"));
    assert_eq!(r.verdict, ChunkVerdict::Accepted);
    assert_eq!(r.records, vec![frame(&net.pk(1), b"hello")]);
    assert_eq!(l.stats().chunks_delivered, 1);
    assert_eq!(l.stats().bytes_delivered, 5);
}

#[test]
fn tampered_chunk_is_rejected() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let mut env = net.env(1, 5, 0, b"hello");
    env.chunk.chunk.data[0] ^= 1;
    assert_eq!(net.recv(&mut l, env).verdict, ChunkVerdict::BadSignature);
    let mut env = net.env(1, 5, 0, b"hello");
    env.chunk.sig.0[10] ^= 1;
    let r = net.recv(&mut l, env);
    assert_eq!(r.verdict, ChunkVerdict::BadSignature);
    assert!(r.records.is_empty() && r.relay.is_none());
    assert_eq!(l.stats().dropped_bad_signature, 2);
    // The real chunk still gets in: a forgery marks nothing.
    let r = net.recv(&mut l, net.env(1, 5, 0, b"hello"));
    assert_eq!(r.verdict, ChunkVerdict::Accepted);
}

#[test]
fn non_unl_author_is_rejected() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let outsider = Keypair::from_seed([99; 32]);
    let env = NplEnvelope {
        hops: 0,
        chunk: NplChunk {
            author: outsider.public(),
            seq: 5,
            index: 0,
            data: b"x".to_vec(),
        }
        .sign(&outsider),
    };
    let r = l.receive(&net.unl, &net.ring, net.pk(1), env);
    assert_eq!(r.verdict, ChunkVerdict::NotUnl);
    assert!(r.records.is_empty() && r.relay.is_none());
    assert_eq!(l.stats().dropped_not_unl, 1);
}

#[test]
fn a_chunk_in_another_nodes_name_is_rejected() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    // Node 2 signs a chunk claiming to be node 1's.
    let env = NplEnvelope {
        hops: 0,
        chunk: NplChunk {
            author: net.pk(1),
            seq: 5,
            index: 0,
            data: b"forged".to_vec(),
        }
        .sign(&net.keys[2]),
    };
    let r = l.receive(&net.unl, &net.ring, net.pk(2), env);
    assert_eq!(r.verdict, ChunkVerdict::BadSignature);
    // A forgery far past the chunk limit does not cut node 1 off either.
    let env = NplEnvelope {
        hops: 0,
        chunk: NplChunk {
            author: net.pk(1),
            seq: 5,
            index: 1 << 40,
            data: b"forged".to_vec(),
        }
        .sign(&net.keys[2]),
    };
    let r = l.receive(&net.unl, &net.ring, net.pk(2), env);
    assert_eq!(r.verdict, ChunkVerdict::BadSignature);
    assert_eq!(l.stats().cut_off, 0);
    let r = net.recv(&mut l, net.env(1, 5, 0, b"real"));
    assert_eq!(r.records, vec![frame(&net.pk(1), b"real")]);
}

#[test]
fn older_runs_are_stale_and_so_are_runs_too_far_ahead() {
    let net = Net::new();
    let mut l = net.line(0, 3);
    let old = net.env(1, 3, 0, b"run 3");
    assert_eq!(
        net.recv(&mut l, old.clone()).verdict,
        ChunkVerdict::Accepted
    );
    l.run_finished(3);
    // A replay of run 3's chunk after the run is over.
    assert_eq!(net.recv(&mut l, old.clone()).verdict, ChunkVerdict::Stale);
    // Between runs only the next one is accepted.
    assert!(l.accepts(4) && !l.accepts(5));
    assert_eq!(
        net.recv(&mut l, net.env(1, 5, 0, b"x")).verdict,
        ChunkVerdict::Stale
    );
    l.run_started(4);
    assert!(l.accepts(4) && l.accepts(5) && !l.accepts(3) && !l.accepts(6));
    assert_eq!(net.recv(&mut l, old).verdict, ChunkVerdict::Stale);
    assert_eq!(
        net.recv(&mut l, net.env(1, 6, 0, b"x")).verdict,
        ChunkVerdict::Stale
    );
    assert_eq!(l.stats().dropped_stale, 4);
}

#[test]
fn next_run_chunks_are_buffered_and_handed_over_in_order() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    for env in [
        net.env(2, 6, 1, b"2b"),
        net.env(1, 6, 2, b"1c"),
        net.env(2, 6, 0, b"2a"),
        net.env(1, 6, 0, b"1a"),
        net.env(1, 6, 1, b"1b"),
        net.env(3, 6, 1, b"3b"), // node 3's chunk 0 comes during the run
    ] {
        let r = net.recv(&mut l, env);
        assert_eq!(r.verdict, ChunkVerdict::Accepted);
        assert!(r.records.is_empty(), "run 6 has not started");
    }
    assert_eq!(l.buffered_bytes(), 12);
    l.run_finished(5);
    assert_eq!(l.buffered_bytes(), 12, "run 6's chunks survive run 5");
    let records = l.run_started(6);
    // Per author, in key order, each in index order.
    let stream = |i: usize, parts: &[&[u8]]| -> Vec<Vec<u8>> {
        parts.iter().map(|d| frame(&net.pk(i), d)).collect()
    };
    let one = stream(1, &[b"1a", b"1b", b"1c"]);
    let two = stream(2, &[b"2a", b"2b"]);
    let want = if net.pk(1) < net.pk(2) {
        [one, two].concat()
    } else {
        [two, one].concat()
    };
    assert_eq!(records, want);
    assert_eq!(l.buffered_bytes(), 2, "node 3's chunk 1 waits for chunk 0");
    let r = net.recv(&mut l, net.env(3, 6, 0, b"3a"));
    assert_eq!(
        r.records,
        vec![frame(&net.pk(3), b"3a"), frame(&net.pk(3), b"3b")]
    );
    assert_eq!(l.buffered_bytes(), 0);
}

#[test]
fn out_of_order_chunks_are_delivered_in_order_at_most_once() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let chunks: Vec<NplEnvelope> = (0..4)
        .map(|i| net.env(1, 5, i, format!("c{i}").as_bytes()))
        .collect();
    let mut got = Vec::new();
    for i in [2, 1, 3, 2, 0, 1, 3, 0] {
        got.extend(net.recv(&mut l, chunks[i].clone()).records);
    }
    let want: Vec<Vec<u8>> = (0..4)
        .map(|i| frame(&net.pk(1), format!("c{i}").as_bytes()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(l.stats().chunks_delivered, 4);
    assert_eq!(l.stats().dropped_duplicate, 4);
    assert_eq!(l.buffered_bytes(), 0);
}

#[test]
fn duplicates_are_delivered_once_also_via_a_relay() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let env = net.env(1, 5, 0, b"once");
    let first = net.recv(&mut l, env.clone());
    assert_eq!(first.records.len(), 1);
    let again = net.recv(&mut l, env.clone());
    assert_eq!(again.verdict, ChunkVerdict::Duplicate);
    assert!(again.records.is_empty() && again.relay.is_none());
    // The same chunk relayed by node 2.
    let relayed = NplEnvelope { hops: 1, ..env };
    let r = l.receive(&net.unl, &net.ring, net.pk(2), relayed.clone());
    assert_eq!(r.verdict, ChunkVerdict::Duplicate);
    assert!(r.records.is_empty());
    // Arriving by relay first, it is delivered once as well.
    let mut m = net.line(3, 5);
    let r = m.receive(&net.unl, &net.ring, net.pk(2), relayed);
    assert_eq!(r.records, vec![frame(&net.pk(1), b"once")]);
    assert_eq!(
        net.recv(&mut m, net.env(1, 5, 0, b"once")).verdict,
        ChunkVerdict::Duplicate
    );
    assert_eq!(m.stats().chunks_delivered, 1);
    assert_eq!(
        m.stats().signature_checks,
        1,
        "copies are not verified again"
    );
}

#[test]
fn equivocation_keeps_the_first() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let r = net.recv(&mut l, net.env(1, 5, 1, b"first"));
    assert!(r.records.is_empty(), "waits for chunk 0");
    let r = net.recv(&mut l, net.env(1, 5, 1, b"second"));
    assert_eq!(r.verdict, ChunkVerdict::Equivocation);
    assert!(r.relay.is_none());
    // A forged "second" is a bad signature, not an equivocation.
    let mut forged = net.env(1, 5, 1, b"third");
    forged.chunk.chunk.data = b"fourth".to_vec();
    assert_eq!(net.recv(&mut l, forged).verdict, ChunkVerdict::BadSignature);
    let r = net.recv(&mut l, net.env(1, 5, 0, b"zero"));
    assert_eq!(
        r.records,
        vec![frame(&net.pk(1), b"zero"), frame(&net.pk(1), b"first")]
    );
    // After delivery too.
    let r = net.recv(&mut l, net.env(1, 5, 0, b"other zero"));
    assert_eq!(r.verdict, ChunkVerdict::Equivocation);
    assert_eq!(l.stats().equivocations, 2);
    // The author re-signing the same bytes is a copy, not equivocation.
    let mut resigned = net.env(1, 5, 0, b"zero");
    resigned.chunk.sig = net.keys[2].sign("x", b"y");
    assert_eq!(net.recv(&mut l, resigned).verdict, ChunkVerdict::Duplicate);
}

#[test]
fn limits_cut_an_author_off_for_that_run_only() {
    let net = Net::new();
    let limits = NplLimits {
        max_chunk_bytes: 4,
        max_bytes_per_author_per_run: 10,
        max_chunks_per_author_per_run: 4,
        ..NplLimits::default()
    };
    let mut l = net.line_with(0, limits, 5);
    // Node 1: 4 + 4 bytes fine, then 4 more is 12 > 10.
    assert_eq!(
        net.recv(&mut l, net.env(1, 5, 0, b"aaaa")).verdict,
        ChunkVerdict::Accepted
    );
    assert_eq!(
        net.recv(&mut l, net.env(1, 5, 2, b"cc")).verdict,
        ChunkVerdict::Accepted
    );
    assert_eq!(l.buffered_bytes(), 2);
    let r = net.recv(&mut l, net.env(1, 5, 1, b"bbbbb"));
    assert_eq!(
        r.verdict,
        ChunkVerdict::CutOff(CutOff {
            author: net.pk(1),
            seq: 5,
            reason: CutOffReason::ChunkTooBig { bytes: 5 },
        })
    );
    assert_eq!(l.buffered_bytes(), 0, "its waiting chunk is dropped");
    assert_eq!(l.stats().dropped_undelivered, 1);
    let r = net.recv(&mut l, net.env(1, 5, 1, b"bbbb"));
    assert_eq!(r.verdict, ChunkVerdict::AfterCutOff);
    assert!(r.records.is_empty() && r.relay.is_none());
    // Node 2 goes over in bytes, node 3 in chunks, one with no data.
    for i in 0..2 {
        net.recv(&mut l, net.env(2, 5, i, b"dddd"));
    }
    let r = net.recv(&mut l, net.env(2, 5, 2, b"ddd"));
    assert!(matches!(
        r.verdict,
        ChunkVerdict::CutOff(CutOff {
            reason: CutOffReason::TooManyBytes { bytes: 11 },
            ..
        })
    ));
    let r = net.recv(&mut l, net.env(3, 5, 4, b"e"));
    assert!(matches!(
        r.verdict,
        ChunkVerdict::CutOff(CutOff {
            reason: CutOffReason::TooManyChunks { index: 4 },
            ..
        })
    ));
    let r = net.recv(&mut l, net.env(3, 6, 0, b""));
    assert!(matches!(
        r.verdict,
        ChunkVerdict::CutOff(CutOff {
            reason: CutOffReason::EmptyChunk,
            seq: 6,
            ..
        })
    ));
    assert_eq!(l.stats().cut_off, 4);
    // In run 6 node 1 is heard again; node 3 stays cut off for run 6.
    l.run_finished(5);
    l.run_started(6);
    let r = net.recv(&mut l, net.env(1, 6, 0, b"aaaa"));
    assert_eq!(r.records, vec![frame(&net.pk(1), b"aaaa")]);
    assert_eq!(
        net.recv(&mut l, net.env(3, 6, 0, b"e")).verdict,
        ChunkVerdict::AfterCutOff
    );
    assert_eq!(l.stats().dropped_cut_off, 2);
}

#[test]
fn a_full_buffer_drops_waiting_chunks_but_not_deliverable_ones() {
    let net = Net::new();
    let limits = NplLimits {
        max_chunk_bytes: 4,
        max_buffered_bytes: 6,
        ..NplLimits::default()
    };
    let mut l = net.line_with(0, limits, 5);
    assert_eq!(
        net.recv(&mut l, net.env(1, 6, 0, b"aaaa")).verdict,
        ChunkVerdict::Accepted
    );
    let late = net.env(2, 6, 0, b"bbbb");
    assert_eq!(
        net.recv(&mut l, late.clone()).verdict,
        ChunkVerdict::OverBuffer
    );
    assert_eq!(
        net.recv(&mut l, net.env(3, 5, 1, b"cc")).verdict,
        ChunkVerdict::Accepted
    );
    let late3 = net.env(3, 5, 2, b"c");
    assert_eq!(
        net.recv(&mut l, late3.clone()).verdict,
        ChunkVerdict::OverBuffer
    );
    // In order, the run in progress needs no buffer.
    let r = net.recv(&mut l, net.env(2, 5, 0, b"dddd"));
    assert_eq!(r.records, vec![frame(&net.pk(2), b"dddd")]);
    assert_eq!(l.stats().dropped_over_buffer, 2);
    // A dropped chunk was not marked: a later copy of it gets in.
    let r = net.recv(&mut l, net.env(3, 5, 0, b"c"));
    assert_eq!(r.records.len(), 2);
    assert_eq!(l.buffered_bytes(), 4);
    let r = net.recv(&mut l, late3);
    assert_eq!(r.records, vec![frame(&net.pk(3), b"c")]);
    l.run_finished(5);
    assert_eq!(l.run_started(6), vec![frame(&net.pk(1), b"aaaa")]);
    let r = net.recv(&mut l, late);
    assert_eq!(r.records, vec![frame(&net.pk(2), b"bbbb")]);
    assert_eq!(l.buffered_bytes(), 0);
}

#[test]
fn relay_goes_one_hop_to_the_others() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let env = net.env(1, 5, 0, b"x");
    let r = l.receive(&net.unl, &net.ring, net.pk(2), env.clone());
    let relay = r.relay.expect("a fresh chunk is relayed");
    assert_eq!(relay.env, NplEnvelope { hops: 1, ..env });
    assert_eq!(relay.to, vec![net.pk(3)], "not back to 2, nor to 1 or 0");
    assert_eq!(l.stats().relayed, 1);
    // Node 3 hears it by relay: it does not pass it on again.
    let mut m = net.line(3, 5);
    let r = m.receive(&net.unl, &net.ring, net.pk(0), relay.env);
    assert_eq!(r.verdict, ChunkVerdict::Accepted);
    assert!(r.relay.is_none());
    assert_eq!(m.stats().relayed, 0);
    // With no relaying at all, nothing is.
    let limits = NplLimits {
        max_hops: 0,
        ..NplLimits::default()
    };
    let mut n = net.line_with(2, limits, 5);
    assert!(net.recv(&mut n, net.env(1, 5, 0, b"x")).relay.is_none());
}

#[test]
fn own_messages_are_delivered_to_self_and_echoes_dropped() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let out = l.send(&net.keys[0], 5, b"my share").unwrap();
    assert_eq!(out.records, vec![frame(&net.pk(0), b"my share")]);
    assert_eq!(out.envelopes.len(), 1);
    assert_eq!(out.envelopes[0].hops, 0);
    assert_eq!(out.envelopes[0].chunk.verify_with(&net.ring), Ok(()));
    assert_eq!(l.stats().chunks_sent, 1);
    assert_eq!(l.stats().chunks_delivered, 1);
    // The second write continues the numbering.
    let out2 = l.send(&net.keys[0], 5, b"more").unwrap();
    assert_eq!(out2.envelopes[0].chunk.chunk.index, 1);
    // Our chunk coming back by relay is not heard twice.
    let echo = NplEnvelope {
        hops: 1,
        ..out.envelopes[0].clone()
    };
    let r = l.receive(&net.unl, &net.ring, net.pk(1), echo);
    assert_eq!(r.verdict, ChunkVerdict::Echo);
    assert!(r.records.is_empty() && r.relay.is_none());
    // Another node hears it as any other.
    let mut m = net.line(1, 5);
    let r = m.receive(&net.unl, &net.ring, net.pk(0), out.envelopes[0].clone());
    assert_eq!(r.records, out.records);
    // Only for the run in progress, only with our key.
    assert_eq!(
        l.send(&net.keys[0], 6, b"x"),
        Err(SendError::NotRunning {
            seq: 6,
            running: Some(5)
        })
    );
    assert_eq!(l.send(&net.keys[1], 5, b"x"), Err(SendError::WrongKey));
}

#[test]
fn a_big_write_is_cut_into_chunks_that_add_up_to_it() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let out = l.send(&net.keys[0], 5, &big).unwrap();
    assert_eq!(out.envelopes.len(), 4);
    assert_eq!(out.dropped, 0);
    let mut joined = Vec::new();
    for (i, env) in out.envelopes.iter().enumerate() {
        let c = &env.chunk.chunk;
        assert_eq!(c.index, i as u64);
        assert!(!c.data.is_empty() && c.data.len() <= 64 << 10);
        joined.extend_from_slice(&c.data);
    }
    assert_eq!(joined, big);
    // A receiver hears the same stream whatever order the chunks come in.
    let mut m = net.line(1, 5);
    let mut got = Vec::new();
    for env in out.envelopes.iter().rev() {
        got.extend(
            m.receive(&net.unl, &net.ring, net.pk(0), env.clone())
                .records,
        );
    }
    assert_eq!(got, out.records);
}

#[test]
fn our_own_contract_over_the_limits_is_cut_off_for_the_run() {
    let net = Net::new();
    let limits = NplLimits {
        max_chunk_bytes: 4,
        max_bytes_per_author_per_run: 10,
        max_chunks_per_author_per_run: 5,
        ..NplLimits::default()
    };
    let mut l = net.line_with(0, limits.clone(), 5);
    let sent = l.send(&net.keys[0], 5, b"0123456789abc").unwrap();
    let sizes: Vec<usize> = sent
        .envelopes
        .iter()
        .map(|e| e.chunk.chunk.data.len())
        .collect();
    assert_eq!(sizes, vec![4, 4, 2]);
    assert_eq!(sent.dropped, 3);
    assert_eq!(
        sent.cut_off.map(|c| c.reason),
        Some(CutOffReason::TooManyBytes { bytes: 13 })
    );
    let out = l.send(&net.keys[0], 5, b"more").unwrap();
    assert!(out.envelopes.is_empty() && out.records.is_empty() && out.cut_off.is_none());
    assert_eq!(out.dropped, 4);
    assert_eq!(l.stats().own_bytes_dropped, 7);
    assert_eq!(l.stats().cut_off, 1);
    // What was sent is within what every receiver accepts.
    let mut m = net.line_with(1, limits, 5);
    for env in sent.envelopes {
        let r = m.receive(&net.unl, &net.ring, net.pk(0), env);
        assert_eq!(r.verdict, ChunkVerdict::Accepted);
    }
    // Many small writes run out of chunks instead.
    l.run_finished(5);
    l.run_started(6);
    for _ in 0..5 {
        assert_eq!(l.send(&net.keys[0], 6, b"x").unwrap().envelopes.len(), 1);
    }
    let out = l.send(&net.keys[0], 6, b"x").unwrap();
    assert_eq!(
        out.cut_off.map(|c| c.reason),
        Some(CutOffReason::TooManyChunks { index: 5 })
    );
}

#[test]
fn a_gap_left_at_the_end_of_a_run_is_counted_and_freed() {
    let net = Net::new();
    let mut l = net.line(0, 5);
    net.recv(&mut l, net.env(1, 5, 1, b"waits"));
    net.recv(&mut l, net.env(2, 6, 0, b"next"));
    assert_eq!(l.buffered_bytes(), 9);
    l.run_finished(5);
    assert_eq!(l.stats().dropped_undelivered, 1);
    assert_eq!(l.buffered_bytes(), 4);
    // A state sync skips run 6: its buffered chunk goes too.
    l.expect(9);
    assert_eq!(l.stats().dropped_undelivered, 2);
    assert_eq!(l.buffered_bytes(), 0);
    assert!(l.accepts(9) && !l.accepts(6));
    assert!(l.run_started(9).is_empty());
}
