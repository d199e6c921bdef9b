//! The scan pipeline: a frontend opens a [`ScanSession`], pushes body bytes
//! into it as they arrive, and gets a [`Verdict`] at the end.
//!
//! A session holds the first bytes of a body back (up to the FILDES size):
//! a small body that ends there is scanned whole, by file descriptor where
//! clamd is on a unix socket. A larger one opens an INSTREAM scan and streams
//! the rest while it arrives, so the scan overlaps the transfer and memory
//! stays bounded whatever the body's size. Errors never escape as `Err`: they
//! become [`Verdict::Error`], and the failure mode decides what that means.

pub mod clamd;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::RwLock;

use crate::error::ScanError;
use crate::model::Verdict;
use clamd::{Clamd, Instream};

/// Scans bodies with clamd. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Scanner {
    clamd: Clamd,
    max_scan_size: u64,
    version: Arc<RwLock<Option<String>>>,
}

impl Scanner {
    /// A scanner that refuses bodies over `max_scan_size` bytes.
    pub fn new(clamd: Clamd, max_scan_size: u64) -> Scanner {
        Scanner {
            clamd,
            max_scan_size,
            version: Arc::new(RwLock::new(None)),
        }
    }

    /// The clamd client.
    pub fn clamd(&self) -> &Clamd {
        &self.clamd
    }

    /// The scan limit in bytes.
    pub fn max_scan_size(&self) -> u64 {
        self.max_scan_size
    }

    /// Starts a scan.
    pub fn session(&self) -> ScanSession {
        ScanSession {
            clamd: self.clamd.clone(),
            limit: self.max_scan_size,
            held: Vec::new(),
            stream: None,
            received: 0,
            failed: None,
        }
    }

    /// clamd's version line, as last seen (`None` before the first answer).
    pub async fn version(&self) -> Option<String> {
        self.version.read().await.clone()
    }

    /// Asks clamd for its version now; keeps the last good answer.
    pub async fn refresh_version(&self) -> Result<String, ScanError> {
        let v = self.clamd.version().await?;
        *self.version.write().await = Some(v.clone());
        Ok(v)
    }

    /// Refreshes the version every `period`, so that a signature update
    /// changes the ISTag. Runs until the task is dropped.
    pub async fn watch_version(self, period: Duration) {
        loop {
            match self.refresh_version().await {
                Ok(v) => tracing::debug!(version = %v, "clamd version"),
                Err(e) => tracing::warn!(error = %e, "clamd VERSION failed"),
            }
            tokio::time::sleep(period).await;
        }
    }
}

/// One body being scanned.
pub struct ScanSession {
    clamd: Clamd,
    limit: u64,
    /// The start of the body, until it outgrows the FILDES size.
    held: Vec<u8>,
    stream: Option<Instream>,
    received: u64,
    failed: Option<ScanError>,
}

impl ScanSession {
    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// True once the body has outgrown the scan limit.
    pub fn is_too_large(&self) -> bool {
        self.received > self.limit
    }

    /// True once the scan has failed (the verdict will be an error).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Adds body bytes. Past the limit or after a failure, bytes are only
    /// counted.
    pub async fn write(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        if self.failed.is_some() || data.is_empty() {
            return;
        }
        if self.is_too_large() {
            // Nothing more goes to clamd; the verdict will say why.
            self.stream = None;
            self.held = Vec::new();
            return;
        }
        if let Some(stream) = self.stream.as_mut() {
            if let Err(e) = stream.send(data).await {
                self.fail(e);
            }
            return;
        }
        self.held.extend_from_slice(data);
        if self.held.len() > self.clamd.options().fildes_max {
            match self.clamd.instream().await {
                Ok(mut stream) => {
                    let held = std::mem::take(&mut self.held);
                    match stream.send(&held).await {
                        Ok(()) => self.stream = Some(stream),
                        Err(e) => self.fail(e),
                    }
                }
                Err(e) => self.fail(e),
            }
        }
    }

    fn fail(&mut self, e: ScanError) {
        self.stream = None;
        self.held = Vec::new();
        self.failed = Some(e);
    }

    /// Ends the body and returns the verdict.
    pub async fn finish(self) -> Verdict {
        if self.is_too_large() {
            return Verdict::TooLarge { limit: self.limit };
        }
        let result = match (self.failed, self.stream) {
            (Some(e), _) => Err(e),
            (None, Some(stream)) => stream.finish().await,
            (None, None) => self.clamd.scan_whole(&self.held).await,
        };
        match result {
            Ok(v) => v,
            Err(e) => Verdict::Error {
                kind: e.kind(),
                message: e.to_string(),
            },
        }
    }
}
