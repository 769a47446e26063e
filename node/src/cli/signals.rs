//! The signals that ask a long-running command to stop cleanly.

use futures_util::future::select_all;
use std::fmt;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// A stop signal, by name for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    Int,
    Term,
    Hup,
}

impl Stop {
    fn kind(self) -> SignalKind {
        match self {
            Stop::Int => SignalKind::interrupt(),
            Stop::Term => SignalKind::terminate(),
            Stop::Hup => SignalKind::hangup(),
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stop::Int => "SIGINT",
            Stop::Term => "SIGTERM",
            Stop::Hup => "SIGHUP",
        })
    }
}

#[derive(Debug, thiserror::Error)]
#[error("installing a {signal} handler")]
pub struct SignalError {
    pub signal: Stop,
    #[source]
    pub source: std::io::Error,
}

/// Handlers for the stop signals. They are registered with the OS when this
/// is made, not when first awaited, so a signal that comes in between (a
/// supervisor stopping a command that is still starting) takes the clean
/// path instead of the default action, which ends the process on the spot.
pub struct StopSignals(Vec<(Stop, Signal)>);

impl StopSignals {
    /// Must be called inside a tokio runtime.
    pub fn install(stops: &[Stop]) -> Result<Self, SignalError> {
        stops
            .iter()
            .map(|&s| {
                signal(s.kind())
                    .map(|h| (s, h))
                    .map_err(|source| SignalError { signal: s, source })
            })
            .collect::<Result<_, _>>()
            .map(StopSignals)
    }

    /// Waits for any of the signals, and says which came.
    pub async fn recv(&mut self) -> Stop {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let waits = self.0.iter_mut().map(|(s, h)| {
            let s = *s;
            Box::pin(async move {
                // `None` only once the runtime is shutting down; the caller
                // is finishing then anyway, so call it the signal it waited on.
                let _ = h.recv().await;
                s
            })
        });
        select_all(waits).await.0
    }
}
