//! The scan pipeline: a frontend opens a [`ScanSession`], pushes body bytes
//! into it as they arrive, and gets a [`Verdict`] at the end.
//!
//! Where clamd is on a unix socket, a session writes the body into an
//! anonymous memory file as it arrives (not into the process's heap), and a
//! body that ends within `FILDES_MAX` is handed to clamd whole by file
//! descriptor: measured here, that is the fastest way into clamd. On TCP
//! the first `INSTREAM_HOLD` bytes are held, so that a small body goes to
//! clamd in a single write (command, chunk and end marker at once). A larger
//! body streams by INSTREAM while it arrives, so the scan overlaps the
//! transfer and memory stays bounded whatever the body's size. Errors never escape as `Err`: they become
//! [`Verdict::Error`], and the failure mode decides what that means.

pub mod clamd;
pub mod decode;
pub mod zip_watch;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::sync::RwLock;

use crate::error::ScanError;
use crate::model::Verdict;
use clamd::{Clamd, Instream, Spool};

/// Scans bodies with clamd. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Scanner {
    clamd: Clamd,
    max_scan_size: u64,
    version: Arc<RwLock<Option<Arc<str>>>>,
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
            spool: None,
            held: Vec::new(),
            stream: None,
            received: 0,
            failed: None,
            decoding: None,
            unopened: zip_watch::ZipWatch::default(),
        }
    }

    /// Starts a scan of a body sent with `content_encoding`: the codings
    /// clamd cannot see through are undone as the body arrives
    /// ([`decode`]), and clamd scans what a browser would get.
    pub fn session_for(&self, content_encoding: Option<&str>) -> ScanSession {
        let mut session = self.session();
        let plan = content_encoding.map_or(decode::Plan::AsIs, decode::plan);
        session.decoding = match plan {
            decode::Plan::AsIs => None,
            decode::Plan::Decode(decoder) => Some(Box::new(Decoding {
                decoder: Some(decoder),
                piece: Vec::new(),
                encoded: 0,
                error: None,
            })),
            decode::Plan::Cannot(why) => Some(Box::new(Decoding {
                decoder: None,
                piece: Vec::new(),
                encoded: 0,
                error: Some(why),
            })),
        };
        session
    }

    /// Scans a body that is whole in `file`, `len` bytes long, sent with
    /// `content_encoding`. On a unix socket clamd gets the file's
    /// descriptor (FILDES) whatever its size: nothing is copied, and
    /// clamd's `StreamMaxLength` does not apply. On TCP, or when a coding
    /// must come off first, the file streams through a session. Returns
    /// the verdict and the bytes read (all of them when clamd read the
    /// file).
    pub async fn scan_file(
        &self,
        file: std::fs::File,
        len: u64,
        content_encoding: Option<&str>,
    ) -> (Verdict, u64) {
        if len > self.max_scan_size {
            return (
                Verdict::TooLarge {
                    limit: self.max_scan_size,
                },
                len,
            );
        }
        let mut session = self.session_for(content_encoding);
        if self.clamd.is_unix() && session.decoding.is_none() {
            // clamd reads the file while the zip watch does.
            let watched = file
                .try_clone()
                .map(|copy| tokio::task::spawn_blocking(move || zip_watch::watch_file(&copy)));
            let verdict = self.clamd.fildes_file(&file).await;
            let verdict = verdict.unwrap_or_else(error_verdict);
            let unopened = match watched {
                Ok(task) => task.await.unwrap_or_else(|e| Err(std::io::Error::other(e))),
                Err(e) => Err(e),
            };
            let verdict = match unopened {
                Ok(found) => unless_unopened(verdict, found),
                Err(e) => Verdict::Error {
                    kind: "body",
                    message: format!("reading the body file: {e}"),
                },
            };
            return (verdict, len);
        }
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => session.write(&buf[..n]).await,
                Err(e) => {
                    return (
                        Verdict::Error {
                            kind: "body",
                            message: format!("reading the body file: {e}"),
                        },
                        session.received(),
                    )
                }
            }
        }
        let n = session.received();
        (session.finish().await, n)
    }

    /// clamd's version line, as last seen (`None` before the first answer).
    pub async fn version(&self) -> Option<Arc<str>> {
        self.version.read().await.clone()
    }

    /// Asks clamd for its version now; keeps the last good answer.
    pub async fn refresh_version(&self) -> Result<String, ScanError> {
        let v = self.clamd.version().await?;
        self.set_version(&v).await;
        Ok(v)
    }

    /// Takes `v` as clamd's version line.
    pub(crate) async fn set_version(&self, v: &str) {
        *self.version.write().await = Some(v.into());
    }

    /// Refreshes the version every `period`, so that a signature update
    /// changes the ISTag; after a failure, every [`VERSION_RETRY`] until
    /// clamd answers, so that a clamd that starts after this process does
    /// not leave the ISTag unknown for a whole period. Runs until the task
    /// is dropped.
    pub async fn watch_version(self, period: Duration) {
        let mut failing = false;
        loop {
            let answered = match self.refresh_version().await {
                Ok(v) => {
                    tracing::debug!(version = %v, "clamd version");
                    failing = false;
                    true
                }
                Err(e) => {
                    version_failed(&mut failing, &e);
                    false
                }
            };
            tokio::time::sleep(version_wait(answered, period)).await;
        }
    }
}

/// How soon clamd's version is asked for again after a failed attempt.
pub const VERSION_RETRY: Duration = Duration::from_secs(2);

/// The wait before the next version check: `period` after an answer, at
/// most [`VERSION_RETRY`] after a failure.
pub fn version_wait(answered: bool, period: Duration) -> Duration {
    if answered {
        period
    } else {
        period.min(VERSION_RETRY)
    }
}

/// Logs a failed VERSION: a warning when it starts failing, then at debug
/// level while it goes on (the retries come every few seconds).
pub fn version_failed(failing: &mut bool, e: &ScanError) {
    if *failing {
        tracing::debug!(error = %e, "clamd VERSION failed again");
    } else {
        tracing::warn!(error = %e, "clamd VERSION failed");
    }
    *failing = true;
}

/// Over TCP, a body up to this size is held and sent to clamd in one write.
pub const INSTREAM_HOLD: usize = 64 * 1024;

/// One body being scanned.
pub struct ScanSession {
    clamd: Clamd,
    limit: u64,
    /// The body so far, while it may still go to clamd by FILDES.
    spool: Option<Spool>,
    /// The body so far, while it is small enough to go to clamd over TCP in
    /// one write.
    held: Vec<u8>,
    stream: Option<Instream>,
    /// Bytes given to clamd (decoded, when decoding).
    received: u64,
    failed: Option<ScanError>,
    /// The Content-Encoding being undone, if any.
    decoding: Option<Box<Decoding>>,
    /// Whether clamd is seeing a zip it answers OK for without opening it.
    unopened: zip_watch::ZipWatch,
}

/// A body's Content-Encoding being undone on its way to clamd.
struct Decoding {
    /// `None` when the coding cannot be undone here (`error` says why).
    decoder: Option<decode::Decoder>,
    /// The latest decoded piece.
    piece: Vec<u8>,
    /// Encoded bytes received.
    encoded: u64,
    /// Why decoding stopped. What was decoded until then is still scanned:
    /// found infected, it is blocked as such; else the verdict is this
    /// error, since the scan did not see the whole body.
    error: Option<String>,
}

impl ScanSession {
    /// Body bytes received so far (as they arrived, still encoded).
    pub fn received(&self) -> u64 {
        self.decoding.as_ref().map_or(self.received, |d| d.encoded)
    }

    /// True once the body, as it arrived or decoded, has outgrown the scan
    /// limit.
    pub fn is_too_large(&self) -> bool {
        self.received > self.limit || self.received() > self.limit
    }

    /// True once the scan has failed (the verdict will be an error).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Adds body bytes. Past the limit or after a failure, bytes are only
    /// counted.
    pub async fn write(&mut self, data: &[u8]) {
        let Some(mut decoding) = self.decoding.take() else {
            return self.write_decoded(data).await;
        };
        decoding.encoded += data.len() as u64;
        self.decode(&mut decoding, data).await;
        self.decoding = Some(decoding);
    }

    /// Decodes `data` (nothing at the end of the body) piece by piece into
    /// the scan, until it needs more, fails, or the body is too large.
    async fn decode(&mut self, d: &mut Decoding, mut data: &[u8]) {
        let Some(decoder) = d.decoder.as_mut() else {
            return;
        };
        while d.error.is_none() && self.failed.is_none() && !self.is_too_large() {
            match decoder.decode(&mut data, &mut d.piece) {
                Ok(true) => self.write_decoded(&d.piece).await,
                Ok(false) => break,
                Err(e) => d.error = Some(e),
            }
        }
    }

    /// Adds bytes as clamd is to see them.
    async fn write_decoded(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        if self.failed.is_some() || data.is_empty() {
            return;
        }
        if self.is_too_large() {
            // Nothing more goes to clamd; the verdict will say why.
            self.stream = None;
            self.keep_spool();
            self.held = Vec::new();
            return;
        }
        self.unopened.observe(data);
        if let Some(stream) = self.stream.as_mut() {
            if let Err(e) = stream.send(data).await {
                self.fail(e);
            }
            return;
        }
        let unix = self.clamd.is_unix();
        if unix && self.received <= self.clamd.options().fildes_max as u64 {
            if let Err(e) = self.spool_write(data) {
                self.fail(e);
            }
            return;
        }
        if !unix && self.received <= INSTREAM_HOLD as u64 {
            self.held.extend_from_slice(data);
            return;
        }
        // Too large for FILDES or for one write: stream what is spooled or
        // held, then everything else as it comes.
        let held = std::mem::take(&mut self.held);
        let result = async {
            let mut stream = self.clamd.instream().await?;
            if !held.is_empty() {
                stream.send(&held).await?;
            }
            if let Some(spool) = self.spool.take() {
                let mut buf = vec![0u8; 64 * 1024];
                let mut at = 0;
                loop {
                    let n = spool.read_at(&mut buf, at)?;
                    if n == 0 {
                        break;
                    }
                    at += n as u64;
                    stream.send(&buf[..n]).await?;
                }
                self.clamd.keep(spool);
            }
            stream.send(data).await?;
            Ok::<_, ScanError>(stream)
        }
        .await;
        match result {
            Ok(stream) => self.stream = Some(stream),
            Err(e) => self.fail(e),
        }
    }

    fn spool_write(&mut self, data: &[u8]) -> Result<(), ScanError> {
        if self.spool.is_none() {
            self.spool = Some(self.clamd.spool()?);
        }
        let spool = self.spool.as_mut().expect("just created");
        spool.write(data)?;
        Ok(())
    }

    /// Gives the memory file, if any, back for a later body.
    fn keep_spool(&mut self) {
        if let Some(spool) = self.spool.take() {
            self.clamd.keep(spool);
        }
    }

    fn fail(&mut self, e: ScanError) {
        self.stream = None;
        self.keep_spool();
        self.held = Vec::new();
        self.failed = Some(e);
    }

    /// Ends the body and returns the verdict.
    pub async fn finish(mut self) -> Verdict {
        let mut undecoded = None;
        if let Some(mut d) = self.decoding.take() {
            self.decode(&mut d, &[]).await;
            if d.error.is_none() && !self.is_too_large() {
                d.error = d.decoder.as_ref().and_then(|dec| dec.finish().err());
            }
            undecoded = d.error.take();
            self.decoding = Some(d);
        }
        if self.is_too_large() {
            return Verdict::TooLarge { limit: self.limit };
        }
        let unopened = self.unopened.found();
        let verdict = self.scan_what_came().await;
        match (verdict, undecoded) {
            (Verdict::Clean, Some(reason)) => Verdict::Undecodable { reason },
            (verdict, _) => unless_unopened(verdict, unopened),
        }
    }

    /// The verdict on the bytes given to clamd.
    async fn scan_what_came(self) -> Verdict {
        let result = match (self.failed, self.stream, self.spool) {
            (Some(e), _, _) => Err(e),
            (None, Some(stream), _) => stream.finish().await,
            (None, None, Some(spool)) => self.clamd.fildes_spool(spool).await,
            // A body held whole, or an empty one: even that verdict comes
            // from clamd.
            (None, None, None) => self.clamd.scan_whole(&self.held).await,
        };
        result.unwrap_or_else(error_verdict)
    }
}

/// clamd's verdict on a body in which `unopened` was found: not clean,
/// since clamd answers OK for a zip it did not open. The failure mode
/// decides, as for a coding that cannot be undone.
fn unless_unopened(verdict: Verdict, unopened: Option<zip_watch::Unopened>) -> Verdict {
    match (verdict, unopened) {
        (Verdict::Clean, Some(what)) => Verdict::Undecodable {
            reason: what.to_string(),
        },
        (verdict, _) => verdict,
    }
}

/// A failed scan as a verdict: the failure mode decides what it means. A
/// body clamd refused as over its own size limit is too large to scan
/// instead, and the too-large policy decides (its limit is not known here).
fn error_verdict(e: ScanError) -> Verdict {
    if let ScanError::SizeLimit(reply) = &e {
        tracing::warn!(clamd = %reply, "clamd refused a body as over its StreamMaxLength: keep MAX_SCAN_SIZE at or below it");
        return Verdict::TooLarge { limit: 0 };
    }
    Verdict::Error {
        kind: e.kind(),
        message: e.to_string(),
    }
}
