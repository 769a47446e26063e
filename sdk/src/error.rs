//! The SDK's errors: one enum a contract can `?` through.

use std::io;

#[derive(Debug)]
pub enum SdkError {
    Io(io::Error),
    Description(String),
}

impl std::fmt::Display for SdkError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SdkError::Io(e) => write!(f, "I/O: {e}"),
            SdkError::Description(m) => write!(f, "bad run description: {m}"),
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

impl From<io::Error> for SdkError {
    fn from(e: io::Error) -> Self {
        SdkError::Io(e)
    }
}
