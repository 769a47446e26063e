//! Limits every peer frame obeys, whatever part of the protocol it carries.
//! A leaf module, so the parts that size their answers to fit a frame
//! (history, bodies, state listings) need not import the consensus that
//! frames them.

/// Largest frame a node decodes; anything bigger is dropped unread.
pub const MAX_FRAME_BYTES: usize = 16 << 20;
