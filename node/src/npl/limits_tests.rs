//! The party line's limits: checked at start, each legal up to its edge.

use super::*;
use crate::crypto::PubKey;

/// Each limit's edge is legal and one past it is not (mutation testing
/// found every `>` here could be `>=` unnoticed).
#[test]
fn limits_are_legal_up_to_their_edge() {
    let with = |f: &dyn Fn(&mut NplLimits)| {
        let mut l = NplLimits::default();
        f(&mut l);
        l.validate()
    };
    let max = crate::wire::MAX_FRAME_BYTES - ENVELOPE_OVERHEAD;
    let big = |l: &mut NplLimits, chunk| {
        l.max_chunk_bytes = chunk;
        l.max_buffered_bytes = chunk;
    };
    assert_eq!(with(&|l| big(l, max)), Ok(()));
    let over = with(&|l| big(l, max + 1));
    assert_eq!(over, Err(LimitsError::ChunkBytes { got: max + 1, max }));
    assert_eq!(with(&|l| l.max_buffered_bytes = l.max_chunk_bytes), Ok(()));
    assert_eq!(with(&|l| l.max_hops = MAX_HOPS), Ok(()));
    assert_eq!(
        with(&|l| l.max_hops = MAX_HOPS + 1),
        Err(LimitsError::Hops(MAX_HOPS + 1))
    );
}

#[test]
fn limits_validate_names_the_problem() {
    assert_eq!(NplLimits::default().validate(), Ok(()));
    let bad = |f: fn(&mut NplLimits)| {
        let mut l = NplLimits::default();
        f(&mut l);
        l.validate().unwrap_err()
    };
    assert!(matches!(
        bad(|l| l.max_chunk_bytes = 0),
        LimitsError::ChunkBytes { got: 0, .. }
    ));
    assert!(matches!(
        bad(|l| l.max_chunk_bytes = 16 << 20),
        LimitsError::ChunkBytes { .. }
    ));
    assert_eq!(
        bad(|l| l.max_bytes_per_author_per_run = 0),
        LimitsError::AuthorBytes
    );
    assert_eq!(
        bad(|l| l.max_chunks_per_author_per_run = 0),
        LimitsError::AuthorChunks
    );
    assert!(matches!(
        bad(|l| l.max_buffered_bytes = 1000),
        LimitsError::Buffer { got: 1000, .. }
    ));
    assert_eq!(bad(|l| l.max_hops = 9), LimitsError::Hops(9));
    let zero = NplLimits {
        max_chunk_bytes: 0,
        ..NplLimits::default()
    };
    assert!(PartyLine::new(zero, PubKey([1; 32])).is_err());
}
