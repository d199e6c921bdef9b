//! Where a frontend sends a body: scanned in this process (`virus-scanner
//! all`, the embedded default) or queued to the handlers through Redis
//! (`virus-scanner-producer`). Both give the same [`Session`]: write the body
//! as it arrives, then `finish` for the verdict.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use crate::model::{Priority, ScanRequest, Verdict};
use crate::queue::producer::{Producer, QueuedSession};
use crate::scan::{ScanSession, Scanner};

/// The scan pipeline a frontend uses.
#[derive(Clone, Debug)]
pub enum Pipeline {
    /// clamd, from this process; the priority is not used.
    Local(Scanner),
    /// The Redis queue and its handlers.
    Queue(Producer),
}

impl Pipeline {
    /// Starts one scan.
    pub fn session(&self, scan: &ScanRequest, priority: Priority) -> Session {
        match self {
            Pipeline::Local(scanner) => Session::Local(scanner.session_for(
                scan.content_encoding.as_deref(),
                scan.form_boundary.as_deref(),
            )),
            Pipeline::Queue(producer) => Session::Queued(producer.session(scan, priority)),
        }
    }

    /// Whether scans go through the queue (and so have a lane).
    pub fn is_queued(&self) -> bool {
        matches!(self, Pipeline::Queue(_))
    }

    /// clamd's version line, as last seen (the ISTag follows it).
    pub async fn version(&self) -> Option<Arc<str>> {
        match self {
            Pipeline::Local(scanner) => scanner.version().await,
            Pipeline::Queue(producer) => producer.version().await,
        }
    }
}

/// One body being scanned.
pub enum Session {
    /// Scanned here.
    Local(ScanSession),
    /// Queued.
    Queued(QueuedSession),
}

impl Session {
    /// Adds body bytes.
    pub async fn write(&mut self, data: &[u8]) {
        match self {
            Session::Local(s) => s.write(data).await,
            Session::Queued(s) => s.write(data).await,
        }
    }

    /// Body bytes received so far.
    pub fn received(&self) -> u64 {
        match self {
            Session::Local(s) => s.received(),
            Session::Queued(s) => s.received(),
        }
    }

    /// True once the body has outgrown the scan limit.
    pub fn is_too_large(&self) -> bool {
        match self {
            Session::Local(s) => s.is_too_large(),
            Session::Queued(s) => s.is_too_large(),
        }
    }

    /// Ends the body; the future gives the verdict.
    ///
    /// Boxed: a transaction's task is as large as the largest future it may
    /// await, and a producer holds one for every scan that waits on the
    /// queue. Only a box stays in the caller while it waits.
    pub fn finish(self) -> Pin<Box<dyn Future<Output = Verdict> + Send>> {
        crate::metrics::METRICS.body(self.received());
        match self {
            Session::Local(s) => Box::pin(s.finish()),
            Session::Queued(s) => Box::pin(s.finish()),
        }
    }
}
