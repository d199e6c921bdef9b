//! The ICAP server: bytes from Squid, through the codec, into the scan
//! pipeline, and an answer back (RFC 3507).
//!
//! One task per connection; connections are kept alive between
//! transactions. For REQMOD and RESPMOD the body streams into the scanner as
//! it arrives. The answer follows what Squid accepts (see
//! `shared/PROTOCOL-NOTES.md`): 204 only as the answer to a preview or with
//! `Allow: 204`, never `100 Continue` after `ieof`, and for a body that has to
//! be sent back whole, the `200` starts before the scan ends (Squid 5 stalls
//! otherwise) while the newest bytes are held back; an infected body that has
//! started is cut off before its end, never completed.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use icap::{
    encode_chunk, encode_last_chunk, encode_response, Body, ChunkedDecoder, Event,
    HttpResponseHead, IsTag, LastChunk, Limits, Method, Request, Response, Sections,
    ServiceOptions, StatusCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::time::timeout;

use crate::config::{IcapConfig, Methods};
use crate::model::{
    BlockReason, Decision, Direction, Priority, ScanId, ScanRequest, SkipReason, Verdict,
};
use crate::pipeline::Pipeline;
use crate::policy::{Policy, TooLargeAction, PRIORITY_HEADER};
use crate::scan::decode::DICTIONARY_HEADERS;

/// Service names this server answers to: its own, and those of c-icap's
/// virus_scan, c-icap's srv_clamav and squidclamav, so that an existing
/// squid.conf keeps working.
pub const SERVICES: &[&str] = &["avscan", "virus_scan", "srv_clamav", "squidclamav"];

/// What every connection shares.
pub struct IcapService {
    config: IcapConfig,
    pipeline: Pipeline,
    policy: Policy,
    limits: Limits,
    /// The ISTag made for the clamd version last seen: made again only when
    /// that version changes, not for every answer.
    istag: std::sync::Mutex<Option<(Arc<str>, IsTag)>>,
}

impl IcapService {
    /// A service scanning through `pipeline` under `policy`.
    pub fn new(config: IcapConfig, pipeline: Pipeline, policy: Policy) -> IcapService {
        IcapService {
            config,
            pipeline,
            policy,
            limits: Limits::DEFAULT,
            istag: std::sync::Mutex::new(None),
        }
    }

    /// The current ISTag: follows clamd's version (engine and signatures).
    pub async fn istag(&self) -> IsTag {
        let Some(version) = self.pipeline.version().await else {
            return IsTag::new("VS-unknown");
        };
        let mut made = self.istag.lock().unwrap_or_else(|e| e.into_inner());
        match &*made {
            Some((seen, tag)) if **seen == *version => tag.clone(),
            _ => {
                let tag = IsTag::new(&format!("VS-{:016x}", fnv1a(version.as_bytes())));
                *made = Some((version, tag.clone()));
                tag
            }
        }
    }

    fn offers(&self, method: Method) -> bool {
        match (self.config.icap_methods, method) {
            (_, Method::Options) => true,
            (Methods::Both, _) => true,
            (Methods::Reqmod, m) => m == Method::Reqmod,
            (Methods::Respmod, m) => m == Method::Respmod,
        }
    }

    async fn options(&self) -> Response {
        let methods = match self.config.icap_methods {
            Methods::Both => vec![Method::Respmod, Method::Reqmod],
            Methods::Reqmod => vec![Method::Reqmod],
            Methods::Respmod => vec![Method::Respmod],
        };
        ServiceOptions {
            methods,
            service: format!("virus-scanner/{} (ClamAV)", env!("CARGO_PKG_VERSION")),
            istag: self.istag().await.as_str().to_owned(),
            max_connections: Some(self.config.max_connections as u32),
            options_ttl: Some(self.config.options_ttl.as_secs() as u32),
            allow_204: true,
            allow_206: false,
            preview: Some(self.config.preview_size),
            transfer_preview: Some("*".to_owned()),
            transfer_ignore: None,
            transfer_complete: None,
            date: std::time::SystemTime::now(),
        }
        .response()
    }
}

/// FNV-1a: a stable short hash for the ISTag.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Serves ICAP on `listener` until `shutdown` completes, then lets the
/// transactions in flight finish (within the configured grace) and returns.
pub async fn run(
    listener: TcpListener,
    service: Arc<IcapService>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(listener, service, None, shutdown).await
}

/// The same as [`run`], over TLS (ICAPS): each connection's handshake uses
/// the certificate `tls` holds at that moment.
pub async fn run_tls(
    listener: TcpListener,
    service: Arc<IcapService>,
    tls: crate::tls::Reloadable,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    serve_on(listener, service, Some(tls), shutdown).await
}

async fn serve_on(
    listener: TcpListener,
    service: Arc<IcapService>,
    tls: Option<crate::tls::Reloadable>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = service.config.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let (drain_tx, drain_rx) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors and the like: wait rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        match slots.clone().try_acquire_owned() {
            Ok(permit) => {
                let drain = drain_rx.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    crate::metrics::METRICS.connected();
                    match tls {
                        None => Connection::new(stream, peer, service, drain).serve().await,
                        // Boxed, so that plain connections' tasks are not
                        // sized for TLS (a plain one is about 1 KiB).
                        Some(tls) => Box::pin(serve_tls(tls, stream, peer, service, drain)).await,
                    }
                    crate::metrics::METRICS.disconnected();
                    drop(permit);
                });
            }
            Err(_) => {
                tracing::warn!(%peer, max, "connection refused: Max-Connections reached");
                tokio::spawn(async move { refuse(stream, &service).await });
            }
        }
    }
    let _ = drain_tx.send(true);
    drop(listener);
    let grace = service.config.shutdown_grace;
    tracing::info!(?grace, "shutting down: draining connections");
    if timeout(grace, slots.acquire_many(max as u32))
        .await
        .is_err()
    {
        tracing::warn!("shutdown grace over with transactions still in flight");
    }
    Ok(())
}

/// An ICAPS connection: the handshake within HEAD_TIMEOUT, then ICAP.
async fn serve_tls(
    tls: crate::tls::Reloadable,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
    service: Arc<IcapService>,
    drain: watch::Receiver<bool>,
) {
    let limit = service.config.head_timeout;
    match timeout(limit, tls.acceptor().accept(stream)).await {
        Ok(Ok(stream)) => Connection::new(stream, peer, service, drain).serve().await,
        Ok(Err(e)) => tracing::warn!(%peer, error = %e, "ICAPS handshake failed"),
        Err(_) => tracing::warn!(%peer, "ICAPS handshake timed out"),
    }
}

/// Answers 503 to a connection over the limit, and closes it.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, service: &IcapService) {
    let mut res = Response::error(StatusCode::SERVICE_UNAVAILABLE, &service.istag().await);
    res.headers
        .insert("connection", HeaderValue::from_static("close"));
    let mut out = Vec::new();
    encode_response(&res, &mut out);
    let _ = timeout(Duration::from_secs(5), stream.write_all(&out)).await;
    let _ = stream.shutdown().await;
}

/// Why a transaction ended without a complete answer.
#[derive(Debug)]
enum Failure {
    /// The client closed, or the socket failed.
    Io(io::Error),
    /// The client was too slow.
    Timeout(&'static str),
    /// The client sent something malformed.
    Protocol(icap::Error),
    /// An answer had started and cannot be completed (an infected body
    /// that was being echoed): the connection is closed mid-answer.
    Abort(&'static str),
}

impl From<io::Error> for Failure {
    fn from(e: io::Error) -> Self {
        Failure::Io(e)
    }
}

impl From<icap::Error> for Failure {
    fn from(e: icap::Error) -> Self {
        Failure::Protocol(e)
    }
}

/// Whether the connection stays open after a transaction.
#[derive(Debug, PartialEq, Eq)]
enum After {
    KeepAlive,
    Close,
}

struct Connection<S> {
    io: S,
    buf: BytesMut,
    peer: SocketAddr,
    service: Arc<IcapService>,
    drain: watch::Receiver<bool>,
    /// Whether any byte of the current transaction's answer has been written.
    answered: bool,
    /// Whether the connection closes after the current answer, which then
    /// says `Connection: close`: the client asked for that, or the answer
    /// goes out before the body has been read, and the client may stop
    /// sending rather than finish a body nobody waits for.
    closing: bool,
    /// How much room the next read gets: it starts small and doubles while
    /// reads fill it, up to READ_SIZE, so a small message never costs a
    /// large buffer (a producer holds a thousand waiting connections).
    read_size: usize,
}

/// Whether a request's `Connection` header carries the `close` token.
fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("close"))
}

/// The largest read: a typical Squid chunk, and the codec's head limit fits.
const READ_SIZE: usize = 64 * 1024;

/// The first read of a connection.
const FIRST_READ_SIZE: usize = 8 * 1024;

/// What a connection reads into while it waits for a request head.
const IDLE_READ_SIZE: usize = 4 * 1024;

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Connection<S> {
    fn new(
        io: S,
        peer: SocketAddr,
        service: Arc<IcapService>,
        drain: watch::Receiver<bool>,
    ) -> Self {
        Connection {
            io,
            buf: BytesMut::new(),
            peer,
            service,
            drain,
            answered: false,
            closing: false,
            read_size: FIRST_READ_SIZE,
        }
    }

    async fn serve(mut self) {
        loop {
            self.answered = false;
            self.closing = false;
            let outcome = match self.read_head().await {
                Ok(Some((req, used))) => {
                    self.buf.advance(used);
                    // `Connection: close` makes this the client's last
                    // request (as in HTTP/1.1): a client that reads the
                    // answer to the end of the connection gets that end.
                    self.closing = asks_to_close(&req.headers);
                    self.transaction(req).await
                }
                Ok(None) => break,
                Err(f) => Err(f),
            };
            match outcome {
                Ok(After::KeepAlive) if !self.closing && !*self.drain.borrow() => continue,
                Ok(_) => break,
                Err(failure) => {
                    Box::pin(self.fail(failure)).await;
                    break;
                }
            }
        }
        self.linger().await;
    }

    /// Closes gracefully: sends FIN, then reads and drops what the client
    /// is still sending for a moment. Closing with unread bytes would make the
    /// kernel answer with a reset, which can destroy the answer just sent
    /// before the client reads it.
    async fn linger(&mut self) {
        let _ = timeout(Duration::from_secs(1), self.io.shutdown()).await;
        // On the heap: an array here would make every connection's task
        // (waiting ones too) 16K larger.
        let mut sink = vec![0u8; 16 * 1024];
        let mut left: usize = 4 << 20;
        let deadline = Instant::now() + Duration::from_secs(2);
        while left > 0 {
            let wait = deadline.saturating_duration_since(Instant::now());
            match timeout(wait, self.io.read(&mut sink)).await {
                Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
                _ => break,
            }
        }
    }

    /// Logs a failed transaction and, when nothing was answered yet, says
    /// why with the right status before closing.
    async fn fail(&mut self, failure: Failure) {
        let status = match &failure {
            Failure::Io(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "connection closed");
                None
            }
            Failure::Timeout(what) => {
                tracing::warn!(peer = %self.peer, what, "ICAP client too slow");
                Some(StatusCode::REQUEST_TIMEOUT)
            }
            Failure::Protocol(e) => {
                tracing::warn!(peer = %self.peer, error = %e, status = e.status().0, "malformed ICAP request");
                Some(e.status())
            }
            Failure::Abort(why) => {
                tracing::warn!(peer = %self.peer, why, "answer cut off: connection closed mid-body");
                None
            }
        };
        if let (Some(status), false) = (status, self.answered) {
            let mut res = Response::error(status, &self.service.istag().await);
            res.headers
                .insert("connection", HeaderValue::from_static("close"));
            let _ = self.send(&res).await;
        }
    }

    /// Gives the read buffer's memory back when it holds nothing, before a
    /// wait that may be long (the verdict, the next request).
    fn shed(&mut self) {
        if self.buf.is_empty() && self.buf.capacity() > IDLE_READ_SIZE {
            self.buf = BytesMut::new();
        }
    }

    /// Reads more bytes before `deadline`; false at end of input.
    async fn fill(&mut self, deadline: Instant, what: &'static str) -> Result<bool, Failure> {
        self.buf.reserve(self.read_size);
        let left = deadline.saturating_duration_since(Instant::now());
        match timeout(left, self.io.read_buf(&mut self.buf)).await {
            Ok(Ok(0)) => Ok(false),
            Ok(Ok(n)) => {
                if n >= self.read_size {
                    self.read_size = (self.read_size * 2).min(READ_SIZE);
                }
                Ok(true)
            }
            Ok(Err(e)) => Err(Failure::Io(e)),
            Err(_) => Err(Failure::Timeout(what)),
        }
    }

    /// Waits for the next request head: the idle timeout until its first
    /// byte, the head timeout after. `None` when the client closed, went
    /// idle for too long, or the server is draining.
    async fn read_head(&mut self) -> Result<Option<(Request, usize)>, Failure> {
        let config = &self.service.config;
        if self.buf.is_empty() {
            let idle = config.idle_timeout;
            let mut drain = self.drain.clone();
            if *drain.borrow() {
                return Ok(None);
            }
            // An idle connection keeps only a small buffer: Squid holds
            // many of them open.
            if self.buf.capacity() > IDLE_READ_SIZE {
                self.buf = BytesMut::new();
            }
            self.buf.reserve(IDLE_READ_SIZE);
            tokio::select! {
                read = timeout(idle, self.io.read_buf(&mut self.buf)) => match read {
                    Ok(Ok(0)) | Err(_) => return Ok(None),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(Failure::Io(e)),
                },
                _ = drain.changed() => return Ok(None),
            }
        }
        let deadline = Instant::now() + config.head_timeout;
        loop {
            if let Some(parsed) = icap::parse_request(&self.buf, &self.service.limits)? {
                return Ok(Some(parsed));
            }
            if !self.fill(deadline, "head").await? {
                return Err(Failure::Protocol(icap::Error::Truncated));
            }
        }
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.answered = true;
        let t = self.service.config.body_timeout;
        match timeout(t, self.io.write_all(bytes)).await {
            Ok(r) => r.map_err(Failure::Io),
            Err(_) => Err(Failure::Timeout("write")),
        }
    }

    async fn send(&mut self, res: &Response) -> Result<(), Failure> {
        let mut out = Vec::with_capacity(512);
        self.encode(res, &mut out);
        self.write(&out).await
    }

    /// Encodes a response head, saying `Connection: close` when the
    /// connection ends after it.
    fn encode(&self, res: &Response, out: &mut Vec<u8>) {
        if self.closing {
            let mut res = res.clone();
            res.headers
                .insert("connection", HeaderValue::from_static("close"));
            encode_response(&res, out);
        } else {
            encode_response(res, out);
        }
    }

    /// The next piece of body, or the last chunk.
    async fn next_chunk(&mut self, dec: &mut ChunkedDecoder) -> Result<Chunk, Failure> {
        let deadline = Instant::now() + self.service.config.body_timeout;
        loop {
            let step = dec.decode(&self.buf)?;
            let consumed = step.consumed;
            match step.event {
                Some(Event::Data(d)) => {
                    let n = d.len();
                    let frame = self.buf.split_to(consumed).freeze();
                    return Ok(Chunk::Data(frame.slice(consumed - n..)));
                }
                Some(Event::End(last)) => {
                    self.buf.advance(consumed);
                    return Ok(Chunk::End(last));
                }
                None => {
                    self.buf.advance(consumed);
                    if !self.fill(deadline, "body").await? {
                        return Err(Failure::Protocol(icap::Error::Truncated));
                    }
                }
            }
        }
    }

    /// Reads and drops the rest of a body the answer no longer needs.
    async fn drain_body(&mut self, dec: &mut ChunkedDecoder) -> Result<(), Failure> {
        while let Chunk::Data(_) = self.next_chunk(dec).await? {}
        Ok(())
    }

    /// One transaction, boxed: a task is sized for the largest future it
    /// may await, and a connection waiting for its next request (Squid keeps
    /// many) then holds about 1 KiB rather than a transaction's worth.
    fn transaction(&mut self, req: Request) -> Transacting<'_> {
        crate::metrics::METRICS.icap_request(req.method.as_str());
        let known = SERVICES.contains(&req.uri.service.as_str());
        let status = if !known {
            Some(StatusCode::NOT_FOUND)
        } else if !self.service.offers(req.method) {
            Some(StatusCode::METHOD_NOT_ALLOWED)
        } else {
            None
        };
        if let Some(status) = status {
            return Box::pin(self.refuse_service(req, status));
        }
        if req.method == Method::Options {
            return Box::pin(self.options(req));
        }
        // The request moves into the transaction before the future is
        // made, so that the future does not keep a copy of it. The body is
        // read in a box of its own, freed before the wait for the verdict:
        // a producer holds a transaction for every scan it has queued, and
        // the reading takes most of a transaction's memory.
        let mut t = Transaction::new(self, req);
        Box::pin(async move {
            match Box::pin(t.receive()).await? {
                Received::Answered(after) => Ok(after),
                Received::Scanning {
                    verdict,
                    answers_preview,
                } => {
                    let verdict = verdict.await;
                    t.finish(verdict, answers_preview).await
                }
            }
        })
    }

    /// Answers a request for an unknown service, or for a method the
    /// service does not offer.
    async fn refuse_service(&mut self, req: Request, status: StatusCode) -> Result<After, Failure> {
        let service = self.service.clone();
        tracing::info!(peer = %self.peer, method = req.method.as_str(), service = %req.uri.service, status = status.0, "refused");
        let res = Response::error(status, &service.istag().await);
        if !req.has_body() {
            self.send(&res).await?;
            return Ok(After::KeepAlive);
        }
        // Keep the stream in step: a preview is on its way and the answer
        // ends it; without one, the body follows the answer and is dropped.
        let mut dec = match req.preview {
            Some(p) => ChunkedDecoder::preview(service.limits, p),
            None => ChunkedDecoder::new(service.limits),
        };
        if req.preview.is_some() {
            self.drain_body(&mut dec).await?;
            self.send(&res).await?;
            return Ok(After::KeepAlive);
        }
        self.closing = true;
        self.send(&res).await?;
        Ok(After::Close)
    }

    /// Answers OPTIONS.
    async fn options(&mut self, req: Request) -> Result<After, Failure> {
        let service = self.service.clone();
        if req.has_body() {
            let mut dec = ChunkedDecoder::new(service.limits);
            self.drain_body(&mut dec).await?;
        }
        let res = service.options().await;
        self.send(&res).await?;
        Ok(After::KeepAlive)
    }
}

/// A transaction on its way, boxed.
type Transacting<'c> = Pin<Box<dyn Future<Output = Result<After, Failure>> + Send + 'c>>;

/// Where a transaction stands once its body has been read.
enum Received {
    /// Answered without a verdict to wait for.
    Answered(After),
    /// Handed to the scanner: the verdict to wait for, and whether the
    /// answer answers the preview.
    Scanning {
        verdict: Pin<Box<dyn Future<Output = Verdict> + Send>>,
        answers_preview: bool,
    },
}

/// A piece of body, or its end.
enum Chunk {
    Data(Bytes),
    End(LastChunk),
}

/// One REQMOD or RESPMOD.
struct Transaction<'c, S> {
    conn: &'c mut Connection<S>,
    req: Request,
    scan: ScanRequest,
    started: Instant,
    /// Body bytes received, for the audit line.
    bytes: u64,
    /// The queue lane, when the scan was queued.
    lane: Option<Priority>,
    /// Body bytes kept for an answer that must send the body back, and
    /// whether that answer has begun.
    echo: Echo,
}

/// The body an answer may have to send back (no `Allow: 204`).
struct Echo {
    /// Whether the body must be kept at all.
    needed: bool,
    /// Whether the body is kept whole until the verdict (an upload), so
    /// that an infected one gets the block page. A download is sent back
    /// as it arrives but for the newest `ECHO_HOLD` bytes instead: Squid
    /// stalls a RESPMOD that gets no answer before its body's end, not a
    /// REQMOD.
    whole: bool,
    /// The oldest bytes kept, in memory (at most `ECHO_HOLD` of a body kept
    /// whole).
    held: std::collections::VecDeque<Bytes>,
    held_len: usize,
    /// The rest of a body kept whole, in an unlinked temporary file.
    spill: Option<Spill>,
    /// The `200` head has gone out; from now on held bytes drain as they
    /// exceed the hold.
    started: bool,
}

/// Body bytes kept in a temporary file.
struct Spill {
    file: std::fs::File,
    len: u64,
}

impl<'c, S: AsyncRead + AsyncWrite + Unpin + Send> Transaction<'c, S> {
    fn new(conn: &'c mut Connection<S>, req: Request) -> Self {
        let scan = scan_request(&req);
        let needed = !req.allow.no_content;
        let whole = scan.direction == Direction::Request;
        Transaction {
            conn,
            req,
            scan,
            started: Instant::now(),
            bytes: 0,
            lane: None,
            echo: Echo {
                needed,
                whole,
                held: Default::default(),
                held_len: 0,
                spill: None,
                started: false,
            },
        }
    }

    fn service(&self) -> Arc<IcapService> {
        self.conn.service.clone()
    }

    /// Reads the body and hands it to the scanner, or answers without a
    /// scan.
    async fn receive(&mut self) -> Result<Received, Failure> {
        let service = self.service();
        let policy = &service.policy;
        if let Some(sections) = self.edited_request(policy) {
            let istag = service.istag().await;
            let res = Response::with_istag(StatusCode::OK, &istag, sections);
            self.log(
                &Verdict::NotScanned(SkipReason::NoBody),
                &policy.decide(&Verdict::NotScanned(SkipReason::NoBody)),
            );
            self.conn.send(&res).await?;
            return Ok(Received::Answered(After::KeepAlive));
        }
        if !self.req.has_body() {
            // null-body: with or without `Preview: 0`, no chunk follows.
            return self
                .finish(Verdict::NotScanned(SkipReason::NoBody), true)
                .await
                .map(Received::Answered);
        }
        let declared_too_large = self
            .scan
            .declared_length
            .is_some_and(|n| n > policy.max_scan_size);
        let priority_header = self
            .req
            .sections
            .as_ref()
            .and_then(|s| s.request.as_ref())
            .and_then(|h| h.headers.get(PRIORITY_HEADER))
            .and_then(|v| v.to_str().ok());
        let triage = policy.triage(
            self.scan.host.as_deref(),
            self.scan.client_ip,
            priority_header,
        );
        if let (Ok(p), true) = (triage, service.pipeline.is_queued()) {
            self.lane = Some(p);
        }
        let mut dec = match self.req.preview {
            Some(p) => ChunkedDecoder::preview(service.limits, p),
            None => ChunkedDecoder::new(service.limits),
        };
        let skip = match triage {
            Err(reason) => Verdict::NotScanned(reason),
            Ok(_) if declared_too_large => Verdict::TooLarge {
                limit: Some(policy.max_scan_size),
            },
            Ok(priority) => {
                return self.scan_body(priority, dec).await;
            }
        };
        self.without_scan(skip, &mut dec)
            .await
            .map(Received::Answered)
    }

    /// A body-less request that goes on changed: its heads without
    /// `Range` and `If-Range` with RANGE_REQUESTS=whole (the whole file is
    /// fetched, and its RESPMOD scanned whole), and always without
    /// `Available-Dictionary` and `Dictionary-ID`, so that the response is
    /// not compressed against a dictionary the scan does not have.
    fn edited_request(&self, policy: &crate::policy::Policy) -> Option<Sections> {
        if self.req.method != Method::Reqmod || self.req.has_body() {
            return None;
        }
        let headers = &self.req.sections.as_ref()?.request.as_ref()?.headers;
        let range = policy.range_requests == crate::policy::RangeRequests::Whole
            && headers.contains_key(http::header::RANGE);
        let dictionary = DICTIONARY_HEADERS.iter().any(|h| headers.contains_key(*h));
        if !range && !dictionary {
            return None;
        }
        let mut sections = self.req.sections.clone()?;
        let head = sections.request.as_mut()?;
        if range {
            head.headers.remove(http::header::RANGE);
            head.headers.remove(http::header::IF_RANGE);
            tracing::debug!(id = %self.scan.id, url = %self.scan.url, "Range removed: the whole file is fetched and scanned");
        }
        for name in DICTIONARY_HEADERS {
            head.headers.remove(name);
        }
        Some(sections)
    }

    /// Reads the body into a scan in the `priority` lane.
    async fn scan_body(
        &mut self,
        priority: Priority,
        mut dec: ChunkedDecoder,
    ) -> Result<Received, Failure> {
        let service = self.service();
        let policy = &service.policy;
        let mut session = service.pipeline.session(&self.scan, priority);
        let mut whole_in_preview = false;
        if self.req.preview.is_some() {
            loop {
                match self.conn.next_chunk(&mut dec).await? {
                    Chunk::Data(data) => {
                        session.write(&data).await;
                        self.keep(data)?;
                    }
                    Chunk::End(last) => {
                        whole_in_preview = last.ieof;
                        break;
                    }
                }
            }
            if !whole_in_preview {
                if session.is_too_large() && policy.too_large == TooLargeAction::Block {
                    // Answering the preview: the client sends nothing more.
                    self.bytes = session.received();
                    return Ok(Received::Scanning {
                        verdict: session.finish(),
                        answers_preview: true,
                    });
                }
                self.conn.write(b"ICAP/1.0 100 Continue\r\n\r\n").await?;
                dec.reset();
            }
        }
        if !whole_in_preview {
            while let Chunk::Data(data) = self.conn.next_chunk(&mut dec).await? {
                session.write(&data).await;
                if session.is_too_large()
                    && policy.too_large == TooLargeAction::Block
                    && !self.echo.started
                {
                    let verdict = Verdict::TooLarge {
                        limit: Some(policy.max_scan_size),
                    };
                    self.conn.closing = true;
                    return self.finish(verdict, false).await.map(Received::Answered);
                }
                self.keep(data)?;
                self.trickle(session.is_too_large()).await?;
            }
        }
        self.conn.shed();
        self.travel_light(whole_in_preview);
        self.bytes = session.received();
        Ok(Received::Scanning {
            verdict: session.finish(),
            answers_preview: whole_in_preview,
        })
    }

    /// Before the wait for a verdict, drops the heads the answer will not
    /// need: a producer holds a transaction for every scan it has queued.
    /// The HTTP heads go back only in a `200` that sends the message back,
    /// which a `204` (a preview's answer, or `Allow: 204`) and a block page
    /// replace.
    fn travel_light(&mut self, answers_preview: bool) {
        self.req.headers = HeaderMap::new();
        if answers_preview || self.req.allow.no_content {
            if let Some(sections) = self.req.sections.as_mut() {
                sections.request = None;
                sections.response = None;
            }
        }
    }

    /// Trusted hosts and bodies let through by size: no scan, the quickest
    /// answer the protocol allows.
    async fn without_scan(
        &mut self,
        verdict: Verdict,
        dec: &mut ChunkedDecoder,
    ) -> Result<After, Failure> {
        let decision = self.service().policy.decide(&verdict);
        if self.req.preview.is_some() {
            // Read the preview (it is on its way), then answer it.
            while let Chunk::Data(data) = self.conn.next_chunk(dec).await? {
                self.keep(data)?;
            }
            return self.answer(&verdict, decision, true).await;
        }
        if self.req.allow.no_content || matches!(decision, Decision::Block(_)) {
            self.conn.closing = true;
            return self.answer(&verdict, decision, false).await;
        }
        // The body has to come back whole: pass it through as it arrives.
        self.log(&verdict, &decision);
        self.start_echo(&decision).await?;
        while let Chunk::Data(data) = self.conn.next_chunk(dec).await? {
            let mut out = Vec::with_capacity(data.len() + 16);
            encode_chunk(&data, &mut out);
            self.conn.write(&out).await?;
        }
        let mut out = Vec::new();
        encode_last_chunk(&LastChunk::default(), &mut out);
        self.conn.write(&out).await?;
        Ok(After::KeepAlive)
    }

    /// Keeps body bytes for an answer that may send them back: in memory,
    /// or for a body kept whole past `ECHO_HOLD`, in a temporary file. If
    /// no file can be made, the body is sent back as a download's is; if
    /// one fails later (a full disk), the transaction fails.
    fn keep(&mut self, data: Bytes) -> Result<(), Failure> {
        let echo = &mut self.echo;
        if !echo.needed || data.is_empty() {
            return Ok(());
        }
        let memory = self.conn.service.config.echo_hold as usize;
        let to_file = echo.whole
            && !echo.started
            && (echo.spill.is_some() || echo.held_len + data.len() > memory);
        if to_file {
            match echo.spill_write(&data) {
                Ok(()) => return Ok(()),
                Err(e) if echo.spill.as_ref().is_none_or(|s| s.len == 0) => {
                    tracing::warn!(id = %self.scan.id, error = %e, "no temporary file for the upload: it is sent back as it arrives, as a download is");
                    echo.spill = None;
                    echo.whole = false;
                }
                Err(e) => return Err(Failure::Io(e)),
            }
        }
        echo.held_len += data.len();
        echo.held.push_back(data);
        Ok(())
    }

    /// Starts the `200` and sends all but the newest `ECHO_HOLD` bytes, once
    /// more than that is kept: for a download, and for an upload once it is
    /// too large to scan (`past_limit`, when `TOO_LARGE=allow` lets it
    /// through: nothing more is held back then, and its head says so).
    async fn trickle(&mut self, past_limit: bool) -> Result<(), Failure> {
        if !self.echo.needed {
            return Ok(());
        }
        if self.echo.whole {
            if !past_limit {
                return Ok(());
            }
            if !self.echo.started {
                let unscanned = Some(SkipReason::TooLarge);
                self.start_echo(&Decision::Allow { unscanned }).await?;
            }
            return self.send_kept(false).await;
        }
        let hold = self.service().config.echo_hold as usize;
        if self.echo.held_len <= hold {
            return Ok(());
        }
        if !self.echo.started {
            self.start_echo(&Decision::Allow { unscanned: None })
                .await?;
        }
        let mut out = Vec::new();
        while self.echo.held_len > hold {
            let Some(front) = self.echo.held.pop_front() else {
                break;
            };
            let excess = self.echo.held_len - hold;
            if front.len() <= excess {
                self.echo.held_len -= front.len();
                encode_chunk(&front, &mut out);
            } else {
                let (send, keep) = (front.slice(..excess), front.slice(excess..));
                self.echo.held_len -= excess;
                encode_chunk(&send, &mut out);
                self.echo.held.push_front(keep);
            }
        }
        self.conn.write(&out).await
    }

    /// Writes the head of a `200` that sends the message back unchanged.
    async fn start_echo(&mut self, decision: &Decision) -> Result<(), Failure> {
        let sections = self
            .req
            .sections
            .as_ref()
            .expect("REQMOD and RESPMOD carry Encapsulated");
        let echoed = match self.scan.direction {
            Direction::Request => Sections {
                request: sections.request.clone(),
                response: None,
                body: Body::Request,
            },
            Direction::Response => Sections {
                request: None,
                response: sections.response.clone(),
                body: Body::Response,
            },
        };
        let istag = self.service().istag().await;
        let mut res = Response::with_istag(StatusCode::OK, &istag, echoed);
        mark(&mut res.headers, decision);
        self.echo.started = true;
        self.conn.send(&res).await
    }

    /// Logs the verdict and answers.
    async fn finish(&mut self, verdict: Verdict, answers_preview: bool) -> Result<After, Failure> {
        let decision = self.service().policy.decide(&verdict);
        Box::pin(self.answer(&verdict, decision, answers_preview)).await
    }

    async fn answer(
        &mut self,
        verdict: &Verdict,
        decision: Decision,
        answers_preview: bool,
    ) -> Result<After, Failure> {
        self.log(verdict, &decision);
        let istag = self.service().istag().await;
        match decision {
            Decision::Block(_) if self.echo.started => {
                Err(Failure::Abort("blocked after the answer had started"))
            }
            Decision::Block(reason) => {
                let res = self.block_response(&reason, &istag);
                let mut out = Vec::with_capacity(2048);
                self.conn.encode(&res.0, &mut out);
                encode_chunk(res.1.as_bytes(), &mut out);
                encode_last_chunk(&LastChunk::default(), &mut out);
                self.conn.write(&out).await?;
                Ok(After::KeepAlive)
            }
            Decision::Allow { .. } if self.echo.started => {
                self.send_kept(true).await?;
                Ok(After::KeepAlive)
            }
            decision @ Decision::Allow { .. } => {
                // 204 answers a preview, or any request that allows it.
                if answers_preview || self.req.allow.no_content {
                    let mut res = Response::no_content(&istag);
                    mark(&mut res.headers, &decision);
                    self.conn.send(&res).await?;
                    return Ok(After::KeepAlive);
                }
                // Otherwise the whole message goes back: it is all held.
                if !self.req.has_body() {
                    let sections = self
                        .req
                        .sections
                        .clone()
                        .expect("REQMOD and RESPMOD carry Encapsulated");
                    let mut res = Response::with_istag(StatusCode::OK, &istag, sections);
                    mark(&mut res.headers, &decision);
                    self.conn.send(&res).await?;
                    return Ok(After::KeepAlive);
                }
                self.start_echo(&decision).await?;
                self.send_kept(true).await?;
                Ok(After::KeepAlive)
            }
        }
    }

    /// Sends every kept byte, from memory and then from the file, and with
    /// `last` the body's last chunk.
    async fn send_kept(&mut self, last: bool) -> Result<(), Failure> {
        let mut out = Vec::with_capacity(self.echo.held_len + 64);
        for piece in self.echo.held.drain(..) {
            encode_chunk(&piece, &mut out);
        }
        self.echo.held_len = 0;
        if let Some(spill) = self.echo.spill.take() {
            let mut buf = vec![0u8; 64 * 1024];
            let mut at = 0;
            while at < spill.len {
                let n = std::os::unix::fs::FileExt::read_at(&spill.file, &mut buf, at)?;
                if n == 0 {
                    return Err(Failure::Abort("the upload's temporary file ended early"));
                }
                at += n as u64;
                encode_chunk(&buf[..n], &mut out);
                self.conn.write(&out).await?;
                out.clear();
            }
        }
        if last {
            encode_last_chunk(&LastChunk::default(), &mut out);
        }
        if out.is_empty() {
            return Ok(());
        }
        self.conn.write(&out).await
    }

    /// A `200` whose encapsulated HTTP response is the block page.
    fn block_response(&self, reason: &BlockReason, istag: &IsTag) -> (Response, String) {
        let page = self
            .service()
            .policy
            .pages
            .html(reason, &self.scan.url, &self.scan.id);
        let mut headers = HeaderMap::new();
        headers.insert(
            "content-type",
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert("content-length", HeaderValue::from(page.html.len()));
        headers.insert("cache-control", HeaderValue::from_static("no-store"));
        headers.insert(
            HeaderName::from_static("x-virus-scanner-result"),
            HeaderValue::from_static(reason.as_str()),
        );
        headers.insert(
            HeaderName::from_static("x-virus-scanner-reference"),
            HeaderValue::from_str(self.scan.id.as_str()).expect("ids are ASCII"),
        );
        let head = HttpResponseHead {
            version: http::Version::HTTP_11,
            status: page.status,
            reason: page.status.canonical_reason().unwrap_or("").to_owned(),
            headers,
        };
        let sections = Sections {
            request: None,
            response: Some(head),
            body: Body::Response,
        };
        let mut res = Response::with_istag(StatusCode::OK, istag, sections);
        if let BlockReason::Infected(signatures) = reason {
            let threat = signatures.join(", ");
            let clean = |s: String| {
                HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
            };
            res.headers.insert(
                "x-infection-found",
                clean(format!("Type=0; Resolution=2; Threat={threat};")),
            );
            res.headers.insert("x-virus-id", clean(threat));
        }
        (res, page.html)
    }

    fn log(&self, verdict: &Verdict, decision: &Decision) {
        crate::telemetry::audit(
            "icap",
            &self.scan,
            verdict,
            decision,
            self.started.elapsed(),
            self.bytes,
            self.lane,
        );
    }
}

impl Echo {
    /// Appends to the temporary file, made at the first bytes.
    fn spill_write(&mut self, data: &[u8]) -> io::Result<()> {
        if self.spill.is_none() {
            self.spill = Some(Spill {
                file: temporary_file()?,
                len: 0,
            });
        }
        let spill = self.spill.as_mut().expect("just made");
        std::os::unix::fs::FileExt::write_all_at(&spill.file, data, spill.len)?;
        spill.len += data.len() as u64;
        Ok(())
    }
}

/// An unlinked file in the temporary directory (`TMPDIR`): gone when
/// closed, whatever happens to the process.
fn temporary_file() -> io::Result<std::fs::File> {
    use rustix::fs::{Mode, OFlags};
    let dir = std::env::temp_dir();
    let flags = OFlags::RDWR | OFlags::CLOEXEC;
    match rustix::fs::open(&dir, flags | OFlags::TMPFILE, Mode::RUSR | Mode::WUSR) {
        Ok(fd) => Ok(std::fs::File::from(fd)),
        // A file system without O_TMPFILE: a named file, unlinked at once.
        Err(_) => {
            static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!("virus-scanner-upload-{}-{n}", std::process::id()));
            let fd = rustix::fs::open(
                &path,
                flags | OFlags::CREATE | OFlags::EXCL,
                Mode::RUSR | Mode::WUSR,
            )?;
            std::fs::remove_file(&path)?;
            Ok(std::fs::File::from(fd))
        }
    }
}

/// Marks an answer that lets a message through unscanned.
fn mark(headers: &mut HeaderMap, decision: &Decision) {
    if let Decision::Allow {
        unscanned: Some(reason),
    } = decision
    {
        let value = format!("not scanned; reason={}", reason.as_str());
        headers.insert(
            "x-virus-scanner-warning",
            HeaderValue::from_str(&value).expect("ASCII"),
        );
    }
}

/// Translates the ICAP request into the internal model.
fn scan_request(req: &Request) -> ScanRequest {
    let sections = req.sections.as_ref();
    let http_req = sections.and_then(|s| s.request.as_ref());
    let http_res = sections.and_then(|s| s.response.as_ref());
    let direction = if req.method == Method::Reqmod {
        Direction::Request
    } else {
        Direction::Response
    };
    let host_header = http_req
        .and_then(|h| h.headers.get(http::header::HOST))
        .and_then(|v| v.to_str().ok());
    let target = http_req.map(|h| h.target.as_str()).unwrap_or("");
    let uri = http_req.and_then(|h| h.uri());
    let host = uri
        .as_ref()
        .and_then(|u| u.host().map(str::to_owned))
        .or_else(|| host_header.map(|h| strip_port(h).to_owned()))
        .map(|h| h.trim_matches(['[', ']']).to_ascii_lowercase());
    let url = match (uri.as_ref().and_then(|u| u.scheme_str()), host_header) {
        (Some(_), _) | (None, None) => target.to_owned(),
        (None, Some(h)) => format!("http://{h}{target}"),
    };
    let length_of = |headers: &HeaderMap| {
        headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let headers = match direction {
        Direction::Request => http_req.map(|h| &h.headers),
        Direction::Response => http_res.map(|h| &h.headers),
    };
    let declared_length = headers.and_then(length_of);
    ScanRequest {
        id: ScanId::next(),
        direction,
        method: http_req.map(|h| h.method.clone()),
        url,
        host,
        response_status: http_res.map(|h| h.status),
        declared_length,
        client_ip: req.client_ip(),
        user: req.client_username(),
        content_encoding: headers.and_then(crate::model::content_encoding),
        form_boundary: headers.and_then(|h| crate::model::form_boundary(direction, h)),
    }
}

fn strip_port(host: &str) -> &str {
    if let Some(bracketed) = host.strip_prefix('[') {
        return bracketed.split_once(']').map_or(host, |(h, _)| h);
    }
    host.rsplit_once(':').map_or(host, |(h, p)| {
        if p.bytes().all(|b| b.is_ascii_digit()) {
            h
        } else {
            host
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_requests_carry_url_host_and_length() {
        let req_head = "GET /a/b HTTP/1.1\r\nHost: Files.Example:8080\r\n\r\n";
        let res_head = "HTTP/1.1 200 OK\r\nContent-Length: 12345\r\n\r\n";
        let raw = format!(
            "RESPMOD icap://h/avscan ICAP/1.0\r\nX-Client-IP: 10.0.0.7\r\n\
             Encapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req_head}{res_head}",
            req_head.len(),
            req_head.len() + res_head.len()
        );
        let raw = raw.as_bytes();
        let (req, _) = icap::parse_request(raw, &Limits::DEFAULT).unwrap().unwrap();
        let scan = scan_request(&req);
        assert_eq!(scan.url, "http://Files.Example:8080/a/b");
        assert_eq!(scan.host.as_deref(), Some("files.example"));
        assert_eq!(scan.declared_length, Some(12345));
        assert_eq!(scan.direction, Direction::Response);
        assert_eq!(scan.client_ip, Some("10.0.0.7".parse().unwrap()));
    }

    #[tokio::test]
    async fn the_istag_is_made_again_when_clamd_version_changes() {
        #[derive(clap::Parser)]
        struct Settings {
            #[command(flatten)]
            icap: IcapConfig,
            #[command(flatten)]
            scan: crate::config::ScanConfig,
        }
        let settings = <Settings as clap::Parser>::parse_from(["virus-scanner"]);
        let clamd = crate::scan::clamd::Clamd::new(
            settings.scan.clamd_url.clone(),
            settings.scan.clamd_options(),
        );
        let scanner = crate::scan::Scanner::new(clamd, 1 << 20);
        let service = IcapService::new(
            settings.icap,
            Pipeline::Local(scanner.clone()),
            settings.scan.policy(),
        );
        assert_eq!(service.istag().await.as_str(), "VS-unknown");
        let old = "ClamAV 1.4.3/27840/Fri Dec  4 09:27:02 2026";
        scanner.set_version(old).await;
        let first = service.istag().await;
        assert!(first.as_str().starts_with("VS-"), "{first:?}");
        assert_eq!(service.istag().await, first);
        // A signature update: a new tag, and every answer carries it.
        scanner
            .set_version("ClamAV 1.4.3/27841/Sat Dec  5 09:25:01 2026")
            .await;
        let second = service.istag().await;
        assert_ne!(second, first);
        assert_eq!(
            Response::no_content(&service.istag().await).istag(),
            Some(second.as_str())
        );
        assert_eq!(service.options().await.istag(), Some(second.as_str()));
        scanner.set_version(old).await;
        assert_eq!(service.istag().await, first);
    }

    #[test]
    fn ports_come_off_hosts() {
        assert_eq!(strip_port("a.b:80"), "a.b");
        assert_eq!(strip_port("a.b"), "a.b");
        assert_eq!(strip_port("[::1]:443"), "::1");
    }
}
