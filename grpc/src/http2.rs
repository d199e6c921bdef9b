//! gRPC over HTTP/2 without a framework: each connection is one task that
//! drives the HTTP/2 connection and every stream on it.
//!
//! An ext_proc exchange is a handful of small messages, each answered before
//! the next comes. Served through hyper and tonic, every message crossed
//! three tasks (the connection's, the stream's, the handler's), and those
//! wake-ups, often across threads, cost more than the message's own work.
//! Here the connection, its streams and their scans are polled by one task:
//! a message is read, handled and answered in the same poll when it can be.
//!
//! What is gRPC here: the `application/grpc` content type, messages framed
//! with a compression flag and a 4-byte length, `grpc-status` and
//! `grpc-message` in the trailers (or in the headers of a trailers-only
//! answer), and the paths of the two services this server offers.

use std::future::poll_fn;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use envoy_types::pb::envoy::service::ext_proc::v3::{ProcessingRequest, ProcessingResponse};
use futures_util::stream::{FuturesUnordered, StreamExt};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{HeaderMap, HeaderValue, Request, Response};
use prost::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::{mpsc, watch};
use tonic::{Code, Status};
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, HealthCheckResponse};

use crate::stream::{ExtProcStream, Stop};
use crate::{Scanning, Settings};

/// The ext_proc method's path.
const PROCESS: &str = "/envoy.service.ext_proc.v3.ExternalProcessor/Process";
/// The health service's methods.
const HEALTH_CHECK: &str = "/grpc.health.v1.Health/Check";
const HEALTH_WATCH: &str = "/grpc.health.v1.Health/Watch";
/// The ext_proc service's name, as health checks ask for it.
const SERVICE_NAME: &str = "envoy.service.ext_proc.v3.ExternalProcessor";

/// What every connection shares.
pub(crate) struct Shared<S> {
    pub(crate) scanning: S,
    pub(crate) settings: Settings,
    pub(crate) max_message_size: usize,
    /// Serving (true) or not; turned false at shutdown.
    pub(crate) serving: watch::Receiver<bool>,
}

/// The HTTP/2 settings: large windows, because a BUFFERED body is one
/// message and Envoy's own windows are large; a bound on a call's header
/// fields (Envoy sends a few, plus any `initial_metadata` configured), where
/// HTTP/2's own default would let a client hold 16 MiB per stream.
fn builder() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .max_concurrent_streams(1024)
        .max_header_list_size(64 << 10)
        .max_send_buffer_size(1 << 20);
    b
}

/// How long a new connection has to send HTTP/2's preface.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// Serves one connection until the peer closes it, or until `stop` turns
/// true; then it sends GOAWAY and lets the streams in flight finish.
pub(crate) async fn connection<S, IO>(
    io: IO,
    shared: Arc<Shared<S>>,
    mut stop: watch::Receiver<bool>,
) where
    S: Scanning,
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut conn = match tokio::time::timeout(HANDSHAKE, builder().handshake::<_, Bytes>(io)).await
    {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::info!(error = %e, "ext_proc connection closed: not HTTP/2");
            return;
        }
        Err(_) => {
            tracing::info!("ext_proc connection closed: no HTTP/2 preface in time");
            return;
        }
    };
    let mut keepalive = std::pin::pin!(keepalive(
        conn.ping_pong().expect("the pinger is taken once"),
    ));
    let mut streams = FuturesUnordered::new();
    let mut stopping = *stop.borrow();
    if stopping {
        conn.graceful_shutdown();
    }
    loop {
        tokio::select! {
            biased;
            Some(()) = streams.next(), if !streams.is_empty() => {}
            () = &mut keepalive => {
                tracing::info!("ext_proc connection closed: the client stopped answering pings");
                break;
            }
            changed = stop.changed(), if !stopping => {
                if changed.is_err() || *stop.borrow() {
                    stopping = true;
                    conn.graceful_shutdown();
                }
            }
            accepted = conn.accept() => match accepted {
                Some(Ok((request, respond))) => {
                    streams.push(Box::pin(stream(request, respond, shared.clone())));
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "ext_proc connection ended");
                    break;
                }
                None => break,
            },
        }
    }
}

/// How often an idle connection is checked with a ping, and how long the
/// answer may take before the connection counts as dead.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// Pings the client every [`KEEPALIVE_INTERVAL`]; returns when one goes
/// unanswered, so that a peer that vanished without a FIN (a dead host, a
/// dropped NAT entry) does not hold its streams and their scans forever.
async fn keepalive(mut pinger: h2::PingPong) {
    loop {
        tokio::time::sleep(KEEPALIVE_INTERVAL).await;
        match tokio::time::timeout(KEEPALIVE_TIMEOUT, pinger.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// The methods served, by path.
enum Method {
    Process,
    HealthCheck,
    HealthWatch,
    Unknown(String),
}

/// One HTTP/2 stream: a gRPC call.
async fn stream<S: Scanning>(
    request: Request<RecvStream>,
    mut respond: SendResponse<Bytes>,
    shared: Arc<Shared<S>>,
) {
    let method = match request.uri().path() {
        PROCESS => Method::Process,
        HEALTH_CHECK => Method::HealthCheck,
        HEALTH_WATCH => Method::HealthWatch,
        other => Method::Unknown(other.to_owned()),
    };
    if !is_grpc(request.headers()) {
        let answer = Response::builder()
            .status(http::StatusCode::UNSUPPORTED_MEDIA_TYPE)
            .body(())
            .expect("a valid response");
        let _ = respond.send_response(answer, true);
        return;
    }
    let inbound = Inbound::new(request.into_body(), shared.max_message_size);
    match method {
        Method::Process => process(inbound, respond, &shared).await,
        Method::HealthCheck => health_check(inbound, respond, &shared).await,
        Method::HealthWatch => health_watch(inbound, respond, &shared).await,
        Method::Unknown(path) => {
            let status = Status::unimplemented(format!("no method {path} here"));
            let _ = respond.send_response(trailers_only(&status), true);
        }
    }
}

fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| {
            t == "application/grpc"
                || t.starts_with("application/grpc+")
                || t.starts_with("application/grpc;")
        })
}

/// The messages of a call's request side, read from the HTTP/2 stream.
struct Inbound {
    body: RecvStream,
    buf: BytesMut,
    max: usize,
}

impl Inbound {
    fn new(body: RecvStream, max: usize) -> Self {
        Inbound {
            body,
            buf: BytesMut::new(),
            max,
        }
    }

    /// The next message; `Ok(None)` when the client has closed its side
    /// between messages.
    async fn message<M: Message + Default>(&mut self) -> Result<Option<M>, Status> {
        loop {
            if let Some(len) = self.whole()? {
                self.buf.advance(5);
                let frame = self.buf.split_to(len);
                return M::decode(frame)
                    .map(Some)
                    .map_err(|e| Status::internal(format!("a message that does not decode: {e}")));
            }
            match self.body.data().await {
                Some(Ok(chunk)) => {
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.buf.extend_from_slice(&chunk);
                }
                Some(Err(e)) => return Err(h2_status(&e)),
                None if self.buf.is_empty() => return Ok(None),
                None => return Err(Status::internal("the stream ended inside a message")),
            }
        }
    }

    /// The length of the message at the front of the buffer, once it has
    /// all arrived.
    fn whole(&mut self) -> Result<Option<usize>, Status> {
        if self.buf.len() < 5 {
            return Ok(None);
        }
        if self.buf[0] != 0 {
            return Err(Status::unimplemented(
                "compressed messages are not accepted: no grpc-encoding was offered",
            ));
        }
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > self.max {
            return Err(Status::resource_exhausted(format!(
                "a message of {len} bytes, over the limit of {}",
                self.max
            )));
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return Ok(None);
        }
        Ok(Some(len))
    }
}

fn h2_status(e: &h2::Error) -> Status {
    if e.is_reset() {
        Status::cancelled(format!("the client reset the stream: {e}"))
    } else {
        Status::unavailable(format!("the connection broke: {e}"))
    }
}

/// The head of a gRPC answer. Messages are taken uncompressed only, and
/// the head says so, as gRPC asks of a server that refuses compression.
fn grpc_head() -> Response<()> {
    Response::builder()
        .header(http::header::CONTENT_TYPE, "application/grpc")
        .header("grpc-accept-encoding", "identity")
        .body(())
        .expect("a valid response")
}

/// An answer with no messages: the status in the headers.
fn trailers_only(status: &Status) -> Response<()> {
    let mut head = grpc_head();
    put_status(head.headers_mut(), status);
    head
}

fn put_status(headers: &mut HeaderMap, status: &Status) {
    headers.insert("grpc-status", HeaderValue::from(status.code() as i32));
    if !status.message().is_empty() {
        if let Ok(v) = HeaderValue::from_str(&percent_encode(status.message())) {
            headers.insert("grpc-message", v);
        }
    }
}

/// gRPC's percent-encoding of `grpc-message`: printable ASCII but `%` as is.
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn end(send: &mut SendStream<Bytes>, status: &Status) {
    let mut trailers = HeaderMap::new();
    put_status(&mut trailers, status);
    let _ = send.send_trailers(trailers);
}

/// A message framed for the wire (gRPC's 5-byte prefix, uncompressed), or
/// an error status when it is over `max` bytes.
pub fn frame<M: Message>(msg: &M, max: usize) -> Result<Bytes, Status> {
    let len = msg.encoded_len();
    if len > max {
        return Err(Status::resource_exhausted(format!(
            "an answer of {len} bytes, over the limit of {max}"
        )));
    }
    let mut buf = BytesMut::with_capacity(5 + len);
    buf.put_u8(0);
    buf.put_u32(len as u32);
    msg.encode(&mut buf).expect("the buffer was sized for it");
    Ok(buf.freeze())
}

/// Envoy's ext_proc call: the messages go through an [`ExtProcStream`],
/// and its replies out as they come.
async fn process<S: Scanning>(
    mut inbound: Inbound,
    mut respond: SendResponse<Bytes>,
    shared: &Shared<S>,
) {
    let mut send = match respond.send_response(grpc_head(), false) {
        Ok(send) => send,
        Err(_) => return,
    };
    let _open = crate::server::OpenStream::new();
    let (tx, mut rx) = mpsc::channel::<Result<ProcessingResponse, Status>>(16);
    let mut stream =
        ExtProcStream::new(shared.scanning.clone(), shared.settings.clone(), tx.clone());
    let work = async move {
        let stopped = loop {
            let next = match stream.timer() {
                None => inbound.message::<ProcessingRequest>().await,
                Some(at) => tokio::select! {
                    next = inbound.message::<ProcessingRequest>() => next,
                    () = tokio::time::sleep_until(at) => {
                        match stream.on_timer().await {
                            Ok(()) => continue,
                            Err(stop) => break Err(stop),
                        }
                    }
                },
            };
            match next {
                Ok(Some(msg)) => {
                    if let Err(stop) = stream.on_message(msg).await {
                        break Err(stop);
                    }
                }
                Ok(None) => break stream.on_end(),
                Err(status) if matches!(status.code(), Code::Cancelled | Code::Unavailable) => {
                    tracing::debug!(
                        message = status.message(),
                        "ext_proc stream broken by Envoy"
                    );
                    break Err(Stop::Gone);
                }
                Err(status) => break Err(Stop::Fail(status)),
            }
        };
        match stopped {
            Ok(()) | Err(Stop::Answered) => {}
            Err(Stop::Gone) => tracing::debug!("ext_proc stream gone; scans in flight cancelled"),
            Err(Stop::Fail(status)) => {
                tracing::warn!(
                    message = status.message(),
                    "ext_proc stream ended with an error"
                );
                let _ = tx.send(Err(status)).await;
            }
        }
    };
    let mut work = std::pin::pin!(work);
    let mut working = true;
    loop {
        tokio::select! {
            biased;
            reply = rx.recv() => match reply {
                Some(Ok(msg)) => match frame(&msg, shared.max_message_size) {
                    Ok(bytes) => {
                        if send.send_data(bytes, false).is_err() {
                            return;
                        }
                    }
                    Err(status) => return end(&mut send, &status),
                },
                Some(Err(status)) => return end(&mut send, &status),
                None => return end(&mut send, &Status::ok("")),
            },
            () = &mut work, if working => working = false,
            _ = poll_fn(|cx| send.poll_reset(cx)) => return,
        }
    }
}

/// The one request message of a call that takes one; when it does not come
/// whole, the call ends with the error status.
async fn request<M: Message + Default>(
    inbound: &mut Inbound,
    respond: &mut SendResponse<Bytes>,
) -> Option<M> {
    let status = match inbound.message::<M>().await {
        Ok(Some(req)) => return Some(req),
        Ok(None) => Status::invalid_argument("no request message"),
        Err(status) => status,
    };
    let _ = respond.send_response(trailers_only(&status), true);
    None
}

/// grpc.health.v1 Check: the status of the server ("") or of the ext_proc
/// service by name.
async fn health_check<S>(
    mut inbound: Inbound,
    mut respond: SendResponse<Bytes>,
    shared: &Shared<S>,
) {
    let Some(asked) = request::<HealthCheckRequest>(&mut inbound, &mut respond).await else {
        return;
    };
    match health_of(&asked.service, *shared.serving.borrow()) {
        Some(answer) => {
            let Ok(mut send) = respond.send_response(grpc_head(), false) else {
                return;
            };
            if let Ok(bytes) = frame(&answer, usize::MAX) {
                if send.send_data(bytes, false).is_ok() {
                    end(&mut send, &Status::ok(""));
                }
            }
        }
        None => {
            let status = Status::not_found(format!("no service {:?} here", asked.service));
            let _ = respond.send_response(trailers_only(&status), true);
        }
    }
}

/// grpc.health.v1 Watch: the status now, then each change, until the
/// client goes.
async fn health_watch<S>(
    mut inbound: Inbound,
    mut respond: SendResponse<Bytes>,
    shared: &Shared<S>,
) {
    let Some(asked) = request::<HealthCheckRequest>(&mut inbound, &mut respond).await else {
        return;
    };
    let Ok(mut send) = respond.send_response(grpc_head(), false) else {
        return;
    };
    let mut serving = shared.serving.clone();
    loop {
        let answer = health_of(&asked.service, *serving.borrow_and_update()).unwrap_or(
            HealthCheckResponse {
                status: ServingStatus::ServiceUnknown as i32,
            },
        );
        let Ok(bytes) = frame(&answer, usize::MAX) else {
            return;
        };
        if send.send_data(bytes, false).is_err() {
            return;
        }
        tokio::select! {
            changed = serving.changed() => if changed.is_err() {
                return end(&mut send, &Status::unavailable("the server is stopping"));
            },
            _ = poll_fn(|cx| send.poll_reset(cx)) => return,
        }
    }
}

fn health_of(service: &str, serving: bool) -> Option<HealthCheckResponse> {
    if !service.is_empty() && service != SERVICE_NAME {
        return None;
    }
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    Some(HealthCheckResponse {
        status: status as i32,
    })
}
