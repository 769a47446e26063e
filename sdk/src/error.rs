//! The SDK's errors: one enum a contract can `?` through, with the NPL's
//! framing problems typed separately so a contract can tell them apart.

use std::io;

#[derive(Debug)]
pub enum SdkError {
    Io(io::Error),
    Description(String),
    Npl(NplError),
    /// A user's framed input that does not split into whole messages (a
    /// broken node), or an output message too long to frame.
    Framing(String),
}

/// What went wrong on the node party line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NplError {
    /// The node wrote a record whose header does not parse. The node is the
    /// only writer of the input fd, so this is a broken node, and the byte
    /// stream cannot be resynchronised: every later read fails the same way.
    BadRecord(String),
    /// A message longer than [`crate::MAX_MESSAGE`]: ours when sending, or
    /// announced by a peer's length prefix (`author` is then its key).
    TooLarge { author: Option<String>, len: u64 },
}

impl std::fmt::Display for NplError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NplError::BadRecord(m) => write!(f, "malformed NPL record from the node: {m}"),
            NplError::TooLarge { author: None, len } => write!(
                f,
                "NPL message of {len} bytes exceeds the limit of {} bytes",
                crate::MAX_MESSAGE
            ),
            NplError::TooLarge {
                author: Some(a),
                len,
            } => write!(
                f,
                "node {a} announced an NPL message of {len} bytes, over the limit of {} bytes; \
                 its stream is ignored from here on",
                crate::MAX_MESSAGE
            ),
        }
    }
}

impl std::fmt::Display for SdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdkError::Io(e) => write!(f, "I/O: {e}"),
            SdkError::Description(m) => write!(f, "bad run description: {m}"),
            SdkError::Npl(e) => write!(f, "{e}"),
            SdkError::Framing(m) => write!(f, "user message framing: {m}"),
        }
    }
}

impl std::error::Error for SdkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SdkError::Io(e) => Some(e),
            _ => None,
        }
    }
}

impl std::error::Error for NplError {}

impl From<io::Error> for SdkError {
    fn from(e: io::Error) -> Self {
        SdkError::Io(e)
    }
}

impl From<NplError> for SdkError {
    fn from(e: NplError) -> Self {
        SdkError::Npl(e)
    }
}
