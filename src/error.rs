//! Errors of the scanning service.
//!
//! Frontends do not match on these to pick a wire answer one by one: a scan
//! error becomes a [`crate::model::Verdict::Error`], and the failure mode
//! decides what the user sees.

use std::io;
use std::time::Duration;

/// Why a scan did not produce a verdict.
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// clamd could not be reached.
    #[error("cannot connect to clamd at {addr}: {source}")]
    Connect {
        /// The address tried.
        addr: String,
        /// The cause.
        source: io::Error,
    },
    /// clamd took longer than allowed.
    #[error("clamd {what} timed out after {after:?}")]
    Timeout {
        /// What was being waited for.
        what: &'static str,
        /// How long.
        after: Duration,
    },
    /// The connection to clamd failed midway.
    #[error("clamd connection failed: {0}")]
    Io(#[from] io::Error),
    /// clamd answered with an error line.
    #[error("clamd error: {0}")]
    Clamd(String),
    /// clamd refused the body as over a size limit of its own
    /// (StreamMaxLength): the body is too large to scan, not a failure.
    #[error("clamd refused the body as too large: {0}")]
    SizeLimit(String),
    /// clamd's answer could not be understood.
    #[error("unexpected clamd reply: {0:?}")]
    Protocol(String),
}

impl ScanError {
    /// A short label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            // clamd could not be reached, refused or timed out: nothing
            // was sent.
            ScanError::Connect { .. }
            | ScanError::Timeout {
                what: "connect", ..
            } => "connect",
            ScanError::Timeout { .. } => "timeout",
            ScanError::Io(_) => "io",
            ScanError::Clamd(_) => "clamd_error",
            ScanError::SizeLimit(_) => "size_limit",
            ScanError::Protocol(_) => "protocol",
        }
    }
}
