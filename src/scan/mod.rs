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
//! transfer and memory stays bounded whatever the body's size. Errors never
//! escape as `Err`: they become [`Verdict::Error`], and the failure mode
//! decides what that means.
//!
//! What clamd would not see is taken care of on the way: a Content-Encoding
//! is undone ([`decode`]), a form upload is scanned part by part ([`form`]),
//! so are a `.deb`'s members and an rpm's payload (`ar`, `rpm`) and a
//! zstd file's content, and a zip that clamd answers OK for without opening
//! it is not called clean ([`zip_watch`]).

pub mod clamd;

// What is inside a body, taken apart without I/O in a crate of its own
// (fuzzed in fuzz/ without the rest of the service).
pub use virus_scanner_content::{ar, decode, form, rpm, zip_watch};

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

    /// Starts a scan of a body sent as it is.
    pub fn session(&self) -> ScanSession {
        ScanSession {
            limit: self.max_scan_size,
            received: 0,
            decoding: None,
            target: Target::Whole(Sink::new(&self.clamd, self.max_scan_size)),
        }
    }

    /// Starts a scan of a body sent with `content_encoding`: the codings a
    /// browser decodes are undone as the body arrives ([`decode`]), and
    /// clamd scans what a browser would get. A multipart/form-data body
    /// with `form_boundary` is taken apart, and each part's content
    /// scanned alone ([`form`]).
    pub fn session_for(
        &self,
        content_encoding: Option<&str>,
        form_boundary: Option<&str>,
    ) -> ScanSession {
        let mut session = self.session();
        if let Some(boundary) = form_boundary {
            session.target = Target::Form(Box::new(Form {
                clamd: self.clamd.clone(),
                limit: self.max_scan_size,
                parser: form::FormParser::new(boundary),
                events: Vec::new(),
                rest: Sink::new(&self.clamd, self.max_scan_size),
                part: None,
                verdict: Verdict::Clean,
            }));
        }
        let plan = content_encoding.map_or(decode::Plan::AsIs, decode::plan);
        session.decoding = match plan {
            decode::Plan::AsIs => None,
            decode::Plan::Decode(decoder) => Some(Box::new(Decoding {
                decoder: Some(decoder),
                encoded: 0,
                error: None,
            })),
            decode::Plan::Cannot(why) => Some(Box::new(Decoding {
                decoder: None,
                encoded: 0,
                error: Some(why),
            })),
        };
        session
    }

    /// Scans a body that is whole in `file`, `len` bytes long, sent with
    /// `content_encoding` (and, for a form, `form_boundary`). On a unix
    /// socket clamd gets the file's descriptor (FILDES) whatever its size:
    /// nothing is copied, and clamd's `StreamMaxLength` does not apply. On
    /// TCP, or when a coding must come off, a form, an ar archive, an rpm
    /// package or a zstd file come apart first, the file streams through a
    /// session. Returns the verdict and the bytes read (all of them when
    /// clamd read the file).
    pub async fn scan_file(
        &self,
        file: std::fs::File,
        len: u64,
        content_encoding: Option<&str>,
        form_boundary: Option<&str>,
    ) -> (Verdict, u64) {
        if len > self.max_scan_size {
            return (
                Verdict::TooLarge {
                    limit: Some(self.max_scan_size),
                },
                len,
            );
        }
        let mut session = self.session_for(content_encoding, form_boundary);
        if self.clamd.is_unix() && session.is_plain() && !taken_apart(&file) {
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
            match unopened {
                // A zstd file or a package among its tar members or zip
                // entries, or a bzip2 file's streams after the first,
                // which a session scans on its own: the file streams
                // through one.
                Ok(Some(
                    zip_watch::Unopened::Zstd
                    | zip_watch::Unopened::ArPacked
                    | zip_watch::Unopened::Bzip2Streams,
                )) if verdict == Verdict::Clean => {}
                Ok(found) => return (unless_unopened(verdict, found), len),
                Err(e) => return (body_error(e), len),
            }
        }
        let mut file = file;
        if let Err(e) = std::io::Seek::rewind(&mut file) {
            return (body_error(e), 0);
        }
        let mut file = tokio::fs::File::from_std(file);
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            match file.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => session.write(&buf[..n]).await,
                Err(e) => return (body_error(e), session.received()),
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
    limit: u64,
    /// Bytes given to the scan (decoded, when decoding).
    received: u64,
    /// The Content-Encoding being undone, if any.
    decoding: Option<Box<Decoding>>,
    /// Where the bytes go: one scan, or one for each part of a form.
    target: Target,
}

// The whole-body sink is the common case, kept inline: boxing it would cost
// an allocation for every scan.
#[allow(clippy::large_enum_variant)]
enum Target {
    Whole(Sink),
    Form(Box<Form>),
}

/// A multipart/form-data body being taken apart: each part's content is
/// scanned alone, the other bytes together.
struct Form {
    clamd: Clamd,
    limit: u64,
    parser: form::FormParser,
    events: Vec<form::Event>,
    rest: Sink,
    part: Option<Sink>,
    /// What the parts that have ended came to.
    verdict: Verdict,
}

/// One stream of bytes to clamd, and its verdict.
struct Sink {
    clamd: Clamd,
    /// The bytes so far, while they may still go to clamd by FILDES.
    spool: Option<Spool>,
    /// The bytes so far, while they are few enough to go to clamd over TCP
    /// in one write.
    held: Vec<u8>,
    stream: Option<Instream>,
    received: u64,
    failed: Option<ScanError>,
    /// Whether clamd is seeing a zip it answers OK for without opening it.
    unopened: Box<zip_watch::ZipWatch>,
    /// For a body's own scan, while the body may be an ar archive (a
    /// `.deb`) or an rpm package: its members (an rpm's payload) are
    /// scanned one by one, and this scan gets the other bytes ([`ar`]),
    /// kept to the end.
    ar: Option<ar::Splitter>,
    members: Option<Box<Members>>,
    /// How many levels of ar archives this scan takes apart: its own bytes
    /// and, one level fewer, its members' (a `.deb` stored in an ar
    /// archive). Past the last level a member is scanned as it is, and
    /// the watch reports one with packed members of its own.
    ar_levels: u8,
    /// For a body's or an ar member's scan, while it may be a zstd file.
    zstd: Unzstd,
    /// Whether all the bytes are kept in the memory file, to be scanned at
    /// the end (those of a zstd file, whose content is scanned meanwhile).
    spool_all: bool,
    /// The scan limit, for what a zstd file unpacks to.
    limit: u64,
    extracted: Option<Box<Extracted>>,
}

/// The zstd files, ar archives and rpm packages among a body's tar
/// members and zip entries (a conda package stores its `.tar.zst` files in
/// a zip; a `.deb` in a zip), which clamd unpacks from the body but does
/// not open ([`zip_watch::ZipWatch::take_extracted`]): each is kept in a
/// memory file as it passes (one for all of them), and scanned on its own
/// as a body would be once the body's own scan is done, so that a body
/// holds one clamd slot at a time.
struct Extracted {
    spool: Result<Spool, ScanError>,
    /// The files in it, the last one perhaps still coming.
    files: Vec<Kept>,
    /// Whether the last one is still coming.
    open: bool,
}

/// A file handed out by the watch, kept to be scanned.
struct Kept {
    /// Where its bytes are in the memory file.
    at: u64,
    len: u64,
    /// Whether it came whole, and within the scan limit.
    whole: bool,
    too_large: bool,
}

/// A zstd file being unpacked into a scan of its own, as clamd 1.4 does
/// not unpack zstd: it answered OK for EICAR in a `.zst`, in a `.tar.zst`
/// and in a `.deb` whose `data.tar.zst` held it (Ubuntu's packages are
/// made so). The file's own bytes are scanned too, once the content has
/// been, so that the two scans never wait for each other's clamd slot;
/// they are kept in a memory file meanwhile.
enum Unzstd {
    /// The first bytes so far, which may begin a zstd file.
    Head(Vec<u8>),
    Unpacking(Box<Unpacking>),
    /// Not a zstd file, or no longer unpacked.
    No,
}

struct Unpacking {
    /// `None` when no decoder could start.
    decoder: Option<decode::Decoder>,
    /// The scan of the content, whose own limit is what is left of the
    /// scan limit.
    sink: Sink,
    /// The scan limit.
    limit: u64,
    /// Why unpacking stopped before the end: the content does not unpack
    /// (undecodable), or is over the limit (too large).
    stopped: Option<Verdict>,
}

/// How a zstd frame begins.
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// How many levels of ar archives nested in one another a scan takes
/// apart (a `.deb` in an ar archive is two): each level holds a scan of its
/// own bytes while its members are scanned.
const AR_LEVELS: u8 = 3;

/// The members of an ar archive (an rpm's payload), each scanned as a
/// file of its own.
struct Members {
    part: Option<Sink>,
    /// What the members that have ended came to.
    verdict: Verdict,
}

/// A body's Content-Encoding being undone on its way to clamd.
struct Decoding {
    /// `None` when the coding cannot be undone here (`error` says why).
    decoder: Option<decode::Decoder>,
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
        match &self.target {
            Target::Whole(sink) => sink.failed.is_some(),
            Target::Form(form) => {
                form.rest.failed.is_some()
                    || form.part.as_ref().is_some_and(|p| p.failed.is_some())
                    || matches!(form.verdict, Verdict::Error { .. })
            }
        }
    }

    /// Whether the body is sent to clamd as it is, in one scan: a body file
    /// may then go by descriptor.
    fn is_plain(&self) -> bool {
        self.decoding.is_none() && matches!(self.target, Target::Whole(_))
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
        while d.error.is_none() && !self.has_failed() && !self.is_too_large() {
            match decoder.decode(&mut data) {
                Ok([]) => break,
                Ok(piece) => self.write_decoded(piece).await,
                Err(e) => d.error = Some(e),
            }
        }
    }

    /// Adds bytes as clamd is to see them.
    async fn write_decoded(&mut self, data: &[u8]) {
        self.received += data.len() as u64;
        if data.is_empty() {
            return;
        }
        if self.is_too_large() {
            // Nothing more goes to clamd; the verdict will say why.
            match &mut self.target {
                Target::Whole(sink) => sink.drop_body(),
                Target::Form(form) => {
                    form.rest.drop_body();
                    if let Some(part) = form.part.as_mut() {
                        part.drop_body();
                    }
                }
            }
            return;
        }
        match &mut self.target {
            Target::Whole(sink) => sink.write(data).await,
            Target::Form(form) => {
                form.parser.feed(data, &mut form.events);
                form.take_events().await;
            }
        }
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
            return Verdict::TooLarge {
                limit: Some(self.limit),
            };
        }
        let verdict = match self.target {
            Target::Whole(sink) => sink.finish().await,
            Target::Form(mut form) => {
                form.parser.finish(&mut form.events);
                form.take_events().await;
                let rest = form.rest.finish().await;
                let verdict = worse(form.verdict, rest);
                match form.parser.ambiguous() {
                    // A server might take the parts otherwise than the
                    // scans did.
                    Some(why) => worse(
                        verdict,
                        Verdict::Undecodable {
                            reason: format!("multipart/form-data with {why}"),
                        },
                    ),
                    None => verdict,
                }
            }
        };
        match (verdict, undecoded) {
            (Verdict::Clean, Some(reason)) => Verdict::Undecodable { reason },
            (verdict, _) => verdict,
        }
    }
}

impl Form {
    /// Sends what the parser found where it goes.
    async fn take_events(&mut self) {
        for event in std::mem::take(&mut self.events) {
            match event {
                form::Event::Rest(bytes) => self.rest.write(&bytes).await,
                form::Event::Start => self.part = Some(Sink::new(&self.clamd, self.limit)),
                form::Event::Data(bytes) => {
                    if let Some(part) = self.part.as_mut() {
                        part.write(&bytes).await;
                    }
                }
                form::Event::End => {
                    if let Some(part) = self.part.take() {
                        let verdict = part.finish().await;
                        self.verdict = worse(
                            std::mem::replace(&mut self.verdict, Verdict::Clean),
                            verdict,
                        );
                    }
                }
            }
        }
    }
}

/// The verdict of a body made of parts found `a` and `b`: infected over a
/// failure, over too large, over undecodable, over clean.
fn worse(a: Verdict, b: Verdict) -> Verdict {
    fn rank(v: &Verdict) -> u8 {
        match v {
            Verdict::Infected { .. } => 5,
            Verdict::Error { .. } => 4,
            Verdict::TooLarge { .. } => 3,
            Verdict::Undecodable { .. } => 2,
            Verdict::NotScanned(_) => 1,
            Verdict::Clean => 0,
        }
    }
    match (a, b) {
        (Verdict::Infected { mut signatures }, Verdict::Infected { signatures: more }) => {
            for s in more {
                if !signatures.contains(&s) {
                    signatures.push(s);
                }
            }
            Verdict::Infected { signatures }
        }
        (a, b) if rank(&b) > rank(&a) => b,
        (a, _) => a,
    }
}

impl Sink {
    /// A sink for a body, or a form's part: an ar archive's members and an
    /// rpm's payload are scanned each, a zstd file's content too, and the
    /// files the watch finds in a tar or a zip are handed out.
    fn new(clamd: &Clamd, limit: u64) -> Sink {
        Sink::taking_apart(clamd, limit, zip_watch::TakenApart::BODY, None)
    }

    /// A sink that takes `apart` what its bytes begin with, and has its
    /// watch hand out files or not (counted in `handed`, the body's count,
    /// for a part of it): the watch reports what the sink does not take
    /// apart.
    fn taking_apart(
        clamd: &Clamd,
        limit: u64,
        apart: zip_watch::TakenApart,
        handed: Option<zip_watch::HandedCount>,
    ) -> Sink {
        Sink {
            clamd: clamd.clone(),
            spool: None,
            held: Vec::new(),
            stream: None,
            received: 0,
            failed: None,
            unopened: Box::new(zip_watch::ZipWatch::of_scan(apart, handed)),
            ar: apart.ar.then(ar::Splitter::default),
            members: None,
            ar_levels: if apart.ar { AR_LEVELS } else { 0 },
            zstd: match apart.zstd {
                true => Unzstd::Head(Vec::new()),
                false => Unzstd::No,
            },
            spool_all: false,
            limit,
            extracted: None,
        }
    }

    /// Sends nothing more to clamd: the body is too large to scan.
    fn drop_body(&mut self) {
        self.stream = None;
        self.keep_spool();
        self.held = Vec::new();
        self.ar = None;
        self.zstd = Unzstd::No;
        self.extracted = None;
        if let Some(part) = self.members.as_mut().and_then(|m| m.part.as_mut()) {
            part.drop_body();
        }
    }

    /// Adds bytes; an ar archive's members go to scans of their own, and
    /// so does a zstd file's content.
    async fn write(&mut self, data: &[u8]) {
        self.unzstd(data).await;
        let Some(ar) = self.ar.as_mut() else {
            return self.write_whole(data).await;
        };
        let mut events = Vec::new();
        let taken = ar.feed(data, &mut events);
        if !ar.is_archive() {
            self.ar = None;
        } else if ar.has_begun() {
            self.keep_all();
        }
        self.take_members(events).await;
        self.write_whole(&data[taken..]).await;
    }

    /// Sends what the ar splitter found where it goes.
    async fn take_members(&mut self, events: Vec<ar::Event>) {
        for event in events {
            if let ar::Event::Rest(bytes) = &event {
                self.write_whole(bytes).await;
                continue;
            }
            let (clamd, limit, levels) = (self.clamd.clone(), self.limit, self.ar_levels);
            let members = self.members.get_or_insert_with(|| {
                Box::new(Members {
                    part: None,
                    verdict: Verdict::Clean,
                })
            });
            match event {
                ar::Event::Rest(_) => {}
                ar::Event::Start => {
                    // A member that is an ar archive itself is split again,
                    // up to AR_LEVELS deep.
                    let apart = zip_watch::TakenApart {
                        ar: levels > 1,
                        extract: self.unopened.extracts(),
                        ..zip_watch::TakenApart::BODY
                    };
                    let handed = Some(self.unopened.handed_count());
                    let mut part = Sink::taking_apart(&clamd, limit, apart, handed);
                    part.ar_levels = levels.saturating_sub(1);
                    members.part = Some(part);
                }
                ar::Event::Data(bytes) => {
                    if let Some(part) = members.part.as_mut() {
                        Box::pin(part.write(&bytes)).await;
                    }
                }
                ar::Event::End => {
                    if let Some(part) = members.part.take() {
                        let verdict = Box::pin(part.finish()).await;
                        members.verdict = worse(
                            std::mem::replace(&mut members.verdict, Verdict::Clean),
                            verdict,
                        );
                    }
                }
            }
        }
    }

    /// Unpacks a zstd file's next bytes into the scan of its content; at
    /// the start, tells whether the bytes are one.
    async fn unzstd(&mut self, data: &[u8]) {
        let Unzstd::Head(head) = &mut self.zstd else {
            if let Unzstd::Unpacking(u) = &mut self.zstd {
                u.feed(data).await;
            }
            return;
        };
        let take = (ZSTD_MAGIC.len() - head.len()).min(data.len());
        head.extend_from_slice(&data[..take]);
        if !ZSTD_MAGIC.starts_with(head) {
            self.zstd = Unzstd::No;
            return;
        }
        if head.len() < ZSTD_MAGIC.len() {
            return;
        }
        // What it unpacks to is not taken apart again; files in it are
        // handed out as they are here.
        let apart = zip_watch::TakenApart {
            extract: self.unopened.extracts(),
            ..Default::default()
        };
        let handed = Some(self.unopened.handed_count());
        let sink = Sink::taking_apart(&self.clamd, self.limit, apart, handed);
        let mut u = Box::new(Unpacking::start(sink, self.limit));
        u.feed(&ZSTD_MAGIC).await;
        u.feed(&data[take..]).await;
        self.zstd = Unzstd::Unpacking(u);
        // The file's own bytes wait for the content's scan.
        self.keep_all();
    }

    /// Keeps all the bytes in the memory file, to be scanned at the end,
    /// after the scans that are taken apart from them: so a body holds one
    /// clamd scan slot at a time.
    fn keep_all(&mut self) {
        if self.spool_all {
            return;
        }
        self.spool_all = true;
        let held = std::mem::take(&mut self.held);
        if let Err(e) = self.spool_write(&held) {
            self.fail(e);
        }
    }

    /// Adds bytes to this scan. After a failure they are only counted.
    async fn write_whole(&mut self, data: &[u8]) {
        if !self.observe(data) {
            return;
        }
        if let Some(stream) = self.stream.as_mut() {
            if let Err(e) = stream.send(data).await {
                self.fail(e);
            }
            return;
        }
        let unix = self.clamd.is_unix();
        if self.spool_all || unix && self.received <= self.clamd.options().fildes_max as u64 {
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
                stream.send_spool(&spool).await?;
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

    /// Counts bytes and watches them, handing out the zstd files the watch
    /// finds in them; false when nothing more is to be done with them
    /// (after a failure).
    fn observe(&mut self, data: &[u8]) -> bool {
        self.received += data.len() as u64;
        if self.failed.is_some() || data.is_empty() {
            return false;
        }
        self.unopened.observe(data);
        self.extract();
        true
    }

    /// Keeps the files the watch handed out since the last call.
    fn extract(&mut self) {
        let events = self.unopened.take_extracted();
        if events.is_empty() || self.failed.is_some() {
            return;
        }
        let clamd = &self.clamd;
        let x = self.extracted.get_or_insert_with(|| {
            Box::new(Extracted {
                spool: clamd.spool(),
                files: Vec::new(),
                open: false,
            })
        });
        for event in events {
            let kept = match &x.spool {
                Ok(spool) => spool.written(),
                Err(_) => 0,
            };
            match event {
                zip_watch::Handed::Start => {
                    x.open = true;
                    x.files.push(Kept {
                        at: kept,
                        len: 0,
                        whole: false,
                        too_large: false,
                    });
                }
                zip_watch::Handed::Data(bytes) => {
                    let Some(file) = x.files.last_mut().filter(|_| x.open) else {
                        continue;
                    };
                    file.too_large |= kept + bytes.len() as u64 > self.limit;
                    if let (Ok(spool), false) = (&mut x.spool, file.too_large) {
                        match spool.write(&bytes) {
                            Ok(()) => file.len += bytes.len() as u64,
                            Err(e) => x.spool = Err(e.into()),
                        }
                    }
                }
                zip_watch::Handed::End { whole } => {
                    if let Some(file) = x.files.last_mut().filter(|_| x.open) {
                        file.whole = whole;
                    }
                    x.open = false;
                }
            }
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
        self.drop_body();
        self.failed = Some(e);
    }

    /// clamd's verdict on the bytes given to it, on an ar archive's
    /// members and on a zstd file's content: the worst.
    async fn finish(mut self) -> Verdict {
        if let Some(mut ar) = self.ar.take() {
            let mut events = Vec::new();
            ar.finish(&mut events);
            self.take_members(events).await;
        }
        let members = self.members.take().map(|m| m.verdict);
        let whole = self.finish_unsplit().await;
        match members {
            Some(members) => worse(whole, members),
            None => whole,
        }
    }

    /// clamd's verdict on the bytes given to this scan, on a zstd file's
    /// content (scanned first), and on the zstd files among its tar
    /// members or zip entries (scanned last): the worst.
    async fn finish_unsplit(mut self) -> Verdict {
        // A packed file's content ends with the body: a gzip file's
        // members, an xz file's streams may come until then.
        self.unopened.end();
        self.extract();
        let extracted = self.extracted.take();
        // What is handed out of the files hands out one level less.
        let rescan = extracted.is_some().then(|| Rescan {
            clamd: self.clamd.clone(),
            limit: self.limit,
            levels: self.unopened.extracts().saturating_sub(1),
            handed: self.unopened.handed_count(),
        });
        let own = match std::mem::replace(&mut self.zstd, Unzstd::No) {
            Unzstd::Unpacking(u) => {
                let content = u.finish().await;
                worse(content, self.finish_whole().await)
            }
            _ => self.finish_whole().await,
        };
        let (Some(x), Some(rescan)) = (extracted, rescan) else {
            return own;
        };
        let spool = match x.spool {
            Ok(spool) => spool,
            Err(e) => return worse(own, error_verdict(e)),
        };
        let mut verdict = own;
        for file in x.files {
            let scan = Box::pin(file.scan(&rescan, &spool));
            verdict = worse(verdict, scan.await);
        }
        rescan.clamd.keep(spool);
        verdict
    }

    /// clamd's verdict on the bytes given to this scan.
    async fn finish_whole(self) -> Verdict {
        let unopened = self.unopened.found();
        let result = match (self.failed, self.stream, self.spool) {
            (Some(e), _, _) => Err(e),
            (None, Some(stream), _) => stream.finish().await,
            (None, None, Some(spool)) => self.clamd.scan_spool(spool).await,
            // Bytes held whole, or none: even that verdict comes from
            // clamd.
            (None, None, None) => self.clamd.scan_whole(&self.held).await,
        };
        unless_unopened(result.unwrap_or_else(error_verdict), unopened)
    }
}

/// Whether a body file is an ar archive or an rpm package, whose members
/// go to clamd one by one through a session, or a zstd file, whose
/// content does.
fn taken_apart(file: &std::fs::File) -> bool {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; ar::MAGIC.len()];
    let n = file.read_at(&mut head, 0).unwrap_or(0);
    &head[..n] == ar::MAGIC
        || head[..n].starts_with(&rpm::MAGIC)
        || head[..n].starts_with(&ZSTD_MAGIC)
}

impl Unpacking {
    /// Unpacking into `sink`, for a scan limited to `limit`.
    fn start(sink: Sink, limit: u64) -> Unpacking {
        let (decoder, stopped) = match decode::plan("zstd") {
            decode::Plan::Decode(decoder) => (Some(decoder), None),
            decode::Plan::Cannot(e) => (None, Some(not_unpacked(e))),
            decode::Plan::AsIs => (None, Some(not_unpacked("no decoder".into()))),
        };
        Unpacking {
            decoder,
            sink,
            limit,
            stopped,
        }
    }

    /// Unpacks the file's next bytes (none at the end) into the content's
    /// scan, until they are used up, the content does not unpack, or is
    /// over the limit.
    async fn feed(&mut self, mut data: &[u8]) {
        loop {
            let Some(decoder) = self.decoder.as_mut().filter(|_| self.stopped.is_none()) else {
                return;
            };
            match decoder.decode(&mut data) {
                Ok([]) => return,
                Ok(piece) if self.sink.received + piece.len() as u64 > self.sink.limit => {
                    self.sink.drop_body();
                    self.stopped = Some(Verdict::TooLarge {
                        limit: Some(self.limit),
                    });
                    return;
                }
                Ok(piece) => self.sink.write_whole(piece).await,
                Err(e) => {
                    self.stopped = Some(not_unpacked(e));
                    return;
                }
            }
        }
    }

    /// The verdict on the content: clamd's, or why it was not all scanned
    /// (when clamd found nothing in what was).
    async fn finish(mut self) -> Verdict {
        self.feed(&[]).await;
        if self.stopped.is_none() {
            if let Some(Err(e)) = self.decoder.as_ref().map(decode::Decoder::finish) {
                self.stopped = Some(not_unpacked(e));
            }
        }
        // With what was handed out of it.
        let verdict = Box::pin(self.sink.finish_unsplit()).await;
        match self.stopped {
            Some(stopped) => worse(verdict, stopped),
            None => verdict,
        }
    }
}

/// How the files handed out of a body are scanned.
struct Rescan {
    clamd: Clamd,
    limit: u64,
    /// The levels of files they hand out in turn.
    levels: u8,
    handed: zip_watch::HandedCount,
}

impl Kept {
    /// Scans the file as a body would be, its bytes read back from the
    /// memory file.
    async fn scan(self, rescan: &Rescan, spool: &Spool) -> Verdict {
        if self.too_large {
            return Verdict::TooLarge {
                limit: Some(rescan.limit),
            };
        }
        // Taken apart as a body; what its watch finds is handed out one
        // level less, and reported at the last.
        let apart = zip_watch::TakenApart {
            extract: rescan.levels,
            ..zip_watch::TakenApart::BODY
        };
        let handed = Some(rescan.handed.clone());
        let mut sink = Sink::taking_apart(&rescan.clamd, rescan.limit, apart, handed);
        let mut buf = vec![0u8; 256 * 1024];
        let mut at = self.at;
        let end = self.at + self.len;
        while at < end {
            let want = buf.len().min((end - at) as usize);
            match spool.read_at(&mut buf[..want], at) {
                Ok(0) => break,
                Ok(n) => {
                    at += n as u64;
                    sink.write(&buf[..n]).await;
                }
                Err(e) => return error_verdict(e.into()),
            }
        }
        match (sink.finish().await, self.whole) {
            (Verdict::Clean, false) => Verdict::Undecodable {
                reason: "a file inside an archive that clamd does not open, cut short".into(),
            },
            (verdict, _) => verdict,
        }
    }
}

/// The verdict on a body file that could not be read.
fn body_error(e: std::io::Error) -> Verdict {
    Verdict::Error {
        kind: "body",
        message: format!("reading the body file: {e}"),
    }
}

/// The verdict on a zstd file that does not unpack.
fn not_unpacked(e: String) -> Verdict {
    Verdict::Undecodable {
        reason: format!("a zstd file that does not unpack ({e}): clamd does not unpack zstd"),
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
        return Verdict::TooLarge { limit: None };
    }
    Verdict::Error {
        kind: e.kind(),
        message: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infected(names: &[&str]) -> Verdict {
        Verdict::Infected {
            signatures: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn the_worse_part_decides_a_form() {
        let error = Verdict::Error {
            kind: "clamd",
            message: "down".into(),
        };
        let undecodable = Verdict::Undecodable { reason: "r".into() };
        let too_large = Verdict::TooLarge { limit: None };
        assert_eq!(worse(Verdict::Clean, Verdict::Clean), Verdict::Clean);
        assert_eq!(worse(Verdict::Clean, undecodable.clone()), undecodable);
        assert_eq!(worse(too_large.clone(), undecodable.clone()), too_large);
        assert_eq!(worse(error.clone(), too_large.clone()), error);
        assert_eq!(worse(infected(&["A"]), error.clone()), infected(&["A"]));
        assert_eq!(worse(error, infected(&["A"])), infected(&["A"]));
        // Every part's signatures, once each.
        assert_eq!(
            worse(infected(&["A", "B"]), infected(&["B", "C"])),
            infected(&["A", "B", "C"])
        );
    }
}
