//! One ext_proc stream: the messages of one HTTP exchange, answered in
//! order.
//!
//! Outside FULL_DUPLEX_STREAMED, every message Envoy sends gets exactly one
//! reply, in order, and a reply to a body chunk releases that chunk. A body
//! is therefore held by holding replies (STREAMED) or, in
//! FULL_DUPLEX_STREAMED, by keeping the chunks here and sending them back
//! once the verdict is clean. A blocked message ends the exchange with an
//! `ImmediateResponse`. A stream that breaks off inside a body ends with an
//! error status, never OK: Envoy reads OK as "go on without the processor".

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    header_value_option::HeaderAppendAction, HeaderValue, HeaderValueOption,
};
use envoy_types::pb::envoy::extensions::filters::http::ext_proc::v3::{
    processing_mode::{BodySendMode, HeaderSendMode},
    ProcessingMode,
};
use envoy_types::pb::envoy::r#type::v3::HttpStatus;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    body_mutation::Mutation, common_response::ResponseStatus, processing_request,
    processing_response, BodyMutation, BodyResponse, CommonResponse, HeaderMutation,
    HeadersResponse, HttpBody, HttpHeaders, ImmediateResponse, ProcessingRequest,
    ProcessingResponse, StreamedBodyResponse, TrailersResponse,
};
use envoy_types::pb::google::protobuf::Duration as PbDuration;
use http::{HeaderMap, HeaderName, HeaderValue as HttpValue};
use tokio::sync::mpsc;
use tonic::Status;

use crate::{
    Begin, BodyMode, Direction, Exchange, Headers, Outcome, Scan, Scanning, Settings,
    StreamedRelease,
};

/// Where Envoy says the client connected from (its trusted downstream
/// address), made once: looking a header up by a string parses the string.
const EXTERNAL_ADDRESS: http::HeaderName =
    http::HeaderName::from_static("x-envoy-external-address");

/// How long a body message without its end waits for a next one, when
/// Envoy did not say its body mode, before it is answered as a BUFFERED body.
const SETTLE: std::time::Duration = std::time::Duration::from_millis(50);

/// The replies' channel to the HTTP/2 stream.
pub(crate) type Replies = mpsc::Sender<Result<ProcessingResponse, Status>>;

/// What follows a body whose scan is being finished.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Rest {
    /// Nothing: the body ended with `end_of_stream`.
    Nothing,
    /// Trailers: the body is complete, but its last chunk does not end the
    /// stream.
    Trailers,
    /// More of the body, over the scan limit, which policy lets through.
    Body,
}

/// Why a stream stops.
#[derive(Debug)]
pub(crate) enum Stop {
    /// Envoy went away (cancelled, reset): nobody to answer.
    Gone,
    /// The exchange is decided (an ImmediateResponse went out).
    Answered,
    /// Envoy broke the protocol, or the stream broke inside a body: end with
    /// this error status.
    Fail(Status),
}

/// Where one direction's body stands.
enum Route<S> {
    /// No body under way: headers not yet seen, headers that said no body
    /// follows, or a body answered. A body that comes anyway is scanned.
    Idle,
    /// Not scanned, as policy decided (a trusted host or client, a body over
    /// the limit that may pass): bodies pass as they come.
    Pass,
    /// Being scanned.
    Scan(Held<S>),
}

/// A body being scanned and what is held back meanwhile.
struct Held<S> {
    scan: S,
    /// STREAMED: chunks Envoy has sent and not had a reply for.
    replies: usize,
    /// FULL_DUPLEX_STREAMED: chunks to send back once clean.
    chunks: Vec<Vec<u8>>,
    /// Body messages received.
    seen: u64,
}

/// One stream's state.
pub(crate) struct ExtProcStream<S: Scanning> {
    scanning: S,
    settings: Settings,
    replies: Replies,
    exchange: Exchange,
    /// Envoy's modes, from the first message, when it sent them.
    modes: Option<(Option<BodyMode>, Option<BodyMode>)>,
    /// Observability mode: Envoy ignores replies, so none are sent.
    observe: bool,
    first: bool,
    request: Route<S::Scan>,
    response: Route<S::Scan>,
    /// When to ask Envoy for more time for a body held while it arrives,
    /// and for which direction.
    ask_at: Option<(tokio::time::Instant, Direction)>,
    /// Modes seen in what Envoy sends, when it did not say them.
    learned: [Option<BodyMode>; 2],
    /// When Envoy did not say its mode: a body message without its end is
    /// held this long for a next one (STREAMED) before it is taken to be a
    /// whole BUFFERED body whose trailers follow.
    settle_at: Option<(tokio::time::Instant, Direction)>,
    /// Whether more time was asked for, per direction (Envoy grants it once
    /// per message state).
    asked: [bool; 2],
}

impl<S: Scanning> ExtProcStream<S> {
    pub(crate) fn new(scanning: S, settings: Settings, replies: Replies) -> Self {
        ExtProcStream {
            scanning,
            settings,
            replies,
            exchange: Exchange::default(),
            modes: None,
            observe: false,
            first: true,
            request: Route::Idle,
            response: Route::Idle,
            ask_at: None,
            learned: [None; 2],
            settle_at: None,
            asked: [false; 2],
        }
    }

    /// When the stream wants [`ExtProcStream::on_timer`] called.
    pub(crate) fn timer(&self) -> Option<tokio::time::Instant> {
        let at = |t: Option<(tokio::time::Instant, Direction)>| t.map(|(at, _)| at);
        match (at(self.ask_at), at(self.settle_at)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// A body has been held long enough that Envoy's message timeout may
    /// run out before the rest arrives: ask for more time.
    pub(crate) async fn on_timer(&mut self) -> Result<(), Stop> {
        let now = tokio::time::Instant::now();
        if let Some((at, direction)) = self.settle_at {
            if at <= now {
                // No second chunk came: a BUFFERED body, trailers to follow.
                self.settle_at = None;
                self.learned[direction as usize] = Some(BodyMode::Buffered);
                return self
                    .decide(direction, BodyMode::Buffered, Rest::Trailers)
                    .await;
            }
        }
        match self.ask_at {
            Some((at, direction)) if at <= now => {
                self.ask_at = None;
                self.ask_for_time(direction).await
            }
            _ => Ok(()),
        }
    }

    /// Handles one message from Envoy.
    pub(crate) async fn on_message(&mut self, msg: ProcessingRequest) -> Result<(), Stop> {
        if self.first {
            self.first = false;
            self.observe = msg.observability_mode;
            self.modes = msg.protocol_config.map(|c| {
                (
                    BodyMode::from_envoy(c.request_body_mode),
                    BodyMode::from_envoy(c.response_body_mode),
                )
            });
        }
        if !self.exchange.client_from_envoy {
            if let Some(client) = client_address(&msg) {
                self.exchange.client = Some(client);
                self.exchange.client_from_envoy = true;
            }
        }
        use processing_request::Request as R;
        match msg.request {
            // A flow-control update alone: nothing to answer.
            None => Ok(()),
            Some(R::RequestHeaders(h)) => self.on_headers(Direction::Request, h).await,
            Some(R::ResponseHeaders(h)) => self.on_headers(Direction::Response, h).await,
            Some(R::RequestBody(b)) => self.on_body(Direction::Request, b).await,
            Some(R::ResponseBody(b)) => self.on_body(Direction::Response, b).await,
            Some(R::RequestTrailers(_)) => self.on_trailers(Direction::Request).await,
            Some(R::ResponseTrailers(_)) => self.on_trailers(Direction::Response).await,
        }
    }

    /// Envoy closed its side. Inside a body that is a broken exchange.
    pub(crate) fn on_end(&self) -> Result<(), Stop> {
        let open = |r: &Route<S::Scan>| matches!(r, Route::Scan(h) if h.seen > 0);
        if open(&self.request) || open(&self.response) {
            return Err(Stop::Fail(Status::aborted(
                "the stream ended inside a body: the scan is cancelled",
            )));
        }
        Ok(())
    }

    fn route(&mut self, direction: Direction) -> &mut Route<S::Scan> {
        match direction {
            Direction::Request => &mut self.request,
            Direction::Response => &mut self.response,
        }
    }

    /// The direction's body mode: as Envoy said (`None` for NONE: no body
    /// will come), else as assumed.
    fn mode(&self, direction: Direction) -> Option<BodyMode> {
        match self.modes {
            Some((req, _)) if direction == Direction::Request => req,
            Some((_, res)) => res,
            None => Some(self.learned[direction as usize].unwrap_or(self.settings.assumed_mode)),
        }
    }

    async fn on_headers(&mut self, direction: Direction, h: HttpHeaders) -> Result<(), Stop> {
        let (pseudo, fields) = split_headers(h.headers.map(|m| m.headers).unwrap_or_default());
        match direction {
            Direction::Request => {
                for (name, value) in pseudo {
                    match name.as_str() {
                        ":method" => self.exchange.method = value.parse().ok(),
                        ":scheme" => self.exchange.scheme = Some(value),
                        ":authority" => self.exchange.authority = Some(value),
                        ":path" => self.exchange.path = Some(value),
                        _ => {}
                    }
                }
                if self.exchange.authority.is_none() {
                    self.exchange.authority = fields
                        .get(http::header::HOST)
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                }
                if self.exchange.client.is_none() {
                    self.exchange.client = fields
                        .get(EXTERNAL_ADDRESS)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse().ok());
                }
                self.exchange.request_headers = fields;
            }
            Direction::Response => {
                self.exchange.status = pseudo
                    .iter()
                    .find(|(n, _)| n == ":status")
                    .and_then(|(_, v)| v.parse().ok());
                self.exchange.response_headers = fields;
            }
        }
        let mut reply = HeadersResponse {
            response: Some(CommonResponse::default()),
        };
        let mut mode_override = None;
        if h.end_of_stream || self.mode(direction).is_none() {
            // No body, or Envoy will not send it: nothing to scan now. A
            // body that comes anyway starts a scan of its own.
            *self.route(direction) = Route::Idle;
        } else {
            match self.scanning.begin(&self.exchange, direction) {
                Begin::Skip { headers } => {
                    *self.route(direction) = Route::Pass;
                    reply.response = Some(common(headers));
                    mode_override = Some(skip_bodies(direction));
                }
                Begin::Scan(scan) => *self.route(direction) = Route::Scan(Held::new(scan)),
            }
        }
        if direction == Direction::Request {
            let removals = self.scanning.request_removals(&self.exchange);
            if !removals.is_empty() {
                let common = reply.response.get_or_insert_with(Default::default);
                common
                    .header_mutation
                    .get_or_insert_with(Default::default)
                    .remove_headers
                    .extend(removals);
            }
        }
        let response = match direction {
            Direction::Request => processing_response::Response::RequestHeaders(reply),
            Direction::Response => processing_response::Response::ResponseHeaders(reply),
        };
        self.send(ProcessingResponse {
            response: Some(response),
            mode_override,
            ..Default::default()
        })
        .await
    }

    async fn on_body(&mut self, direction: Direction, b: HttpBody) -> Result<(), Stop> {
        if matches!(self.settle_at, Some((_, d)) if d == direction) {
            // A second chunk: Envoy streams (STREAMED, as it did not say).
            self.settle_at = None;
            self.learned[direction as usize] = Some(BodyMode::Streamed);
        }
        let mode = self.mode(direction).unwrap_or(self.settings.assumed_mode);
        if matches!(self.route(direction), Route::Idle) {
            // Headers were skipped (header mode SKIP), or a buffered body was
            // answered and another follows (Envoy streams but did not say so).
            *self.route(direction) = match self.scanning.begin(&self.exchange, direction) {
                Begin::Skip { .. } => Route::Pass,
                Begin::Scan(scan) => Route::Scan(Held::new(scan)),
            };
        }
        let end = b.end_of_stream;
        let early = self.settings.streamed == StreamedRelease::Early;
        let holds = !end
            && (mode == BodyMode::FullDuplexStreamed || (mode == BodyMode::Streamed && !early));
        if holds && self.ask_at.is_none() && !self.asked[direction as usize] && !self.observe {
            if let Some(after) = self.settings.override_after {
                self.ask_at = Some((tokio::time::Instant::now() + after, direction));
            }
        }
        let held = match self.route(direction) {
            Route::Scan(held) => held,
            _ => return self.pass_body(direction, mode, b).await,
        };
        held.seen += 1;
        held.scan.write(&b.body).await;
        let too_large = held.scan.is_too_large();
        match mode {
            BodyMode::Buffered | BodyMode::BufferedPartial => {
                if !end && mode == BodyMode::BufferedPartial {
                    tracing::debug!("BUFFERED_PARTIAL body without its end: trailers follow, or the rest passes unseen by Envoy's design");
                }
                held.replies += 1;
                let guessing = self.modes.is_none() && self.learned[direction as usize].is_none();
                if guessing && !end && !too_large {
                    self.settle_at = Some((tokio::time::Instant::now() + SETTLE, direction));
                    return Ok(());
                }
                self.decide(direction, mode, Rest::Nothing).await
            }
            BodyMode::Streamed => {
                held.replies += 1;
                if end || too_large {
                    let rest = if end { Rest::Nothing } else { Rest::Body };
                    self.decide(direction, mode, rest).await
                } else if early {
                    held.replies -= 1;
                    self.send(body_reply(direction, CommonResponse::default()))
                        .await
                } else {
                    Ok(())
                }
            }
            BodyMode::FullDuplexStreamed => {
                held.chunks.push(b.body);
                if end || too_large {
                    let rest = if end { Rest::Nothing } else { Rest::Body };
                    self.decide(direction, mode, rest).await
                } else {
                    Ok(())
                }
            }
        }
    }

    async fn on_trailers(&mut self, direction: Direction) -> Result<(), Stop> {
        let mode = self.mode(direction).unwrap_or(self.settings.assumed_mode);
        let holding = matches!(self.route(direction), Route::Scan(h) if h.seen > 0);
        if holding {
            // The body ended with trailers instead of end_of_stream.
            self.decide(direction, mode, Rest::Trailers).await?;
        }
        let reply = TrailersResponse::default();
        let response = match direction {
            Direction::Request => processing_response::Response::RequestTrailers(reply),
            Direction::Response => processing_response::Response::ResponseTrailers(reply),
        };
        self.send(ProcessingResponse {
            response: Some(response),
            ..Default::default()
        })
        .await
    }

    /// A body that is not scanned: answered at once.
    async fn pass_body(
        &mut self,
        direction: Direction,
        mode: BodyMode,
        b: HttpBody,
    ) -> Result<(), Stop> {
        let reply = match mode {
            BodyMode::FullDuplexStreamed => streamed(b.body, b.end_of_stream),
            _ => CommonResponse::default(),
        };
        self.send(body_reply(direction, reply)).await
    }

    /// Finishes the scan and answers what was held; `rest` is what follows
    /// the body.
    async fn decide(
        &mut self,
        direction: Direction,
        mode: BodyMode,
        rest: Rest,
    ) -> Result<(), Stop> {
        let Route::Scan(held) = std::mem::replace(self.route(direction), Route::Idle) else {
            return Ok(());
        };
        let Held {
            scan,
            replies,
            chunks,
            ..
        } = held;
        if matches!(self.ask_at, Some((_, d)) if d == direction) {
            self.ask_at = None;
        }
        if matches!(self.settle_at, Some((_, d)) if d == direction) {
            self.settle_at = None;
        }
        let outcome = self.wait_for(direction, scan.finish()).await?;
        match outcome {
            Outcome::Block {
                status,
                headers,
                body,
                details,
            } => {
                let reply = ImmediateResponse {
                    status: Some(HttpStatus {
                        code: i32::from(status.as_u16()),
                    }),
                    headers: Some(mutation(headers)),
                    body,
                    grpc_status: None,
                    details,
                };
                self.send(ProcessingResponse {
                    response: Some(processing_response::Response::ImmediateResponse(reply)),
                    ..Default::default()
                })
                .await?;
                Err(Stop::Answered)
            }
            Outcome::Allow { headers } => {
                match mode {
                    BodyMode::Buffered | BodyMode::BufferedPartial => {
                        // Envoy still holds the headers: the marks go on them.
                        self.send(body_reply(direction, common(headers))).await?;
                    }
                    BodyMode::Streamed => {
                        for _ in 0..replies {
                            self.send(body_reply(direction, CommonResponse::default()))
                                .await?;
                        }
                    }
                    BodyMode::FullDuplexStreamed => {
                        let last = chunks.len().saturating_sub(1);
                        let ends = rest == Rest::Nothing;
                        if chunks.is_empty() && ends {
                            self.send(body_reply(direction, streamed(Vec::new(), true)))
                                .await?;
                        }
                        for (i, chunk) in chunks.into_iter().enumerate() {
                            let end = i == last && ends;
                            self.send(body_reply(direction, streamed(chunk, end)))
                                .await?;
                        }
                    }
                }
                if rest == Rest::Body {
                    // Let the rest through (a body over the limit that policy
                    // allows).
                    *self.route(direction) = Route::Pass;
                }
                Ok(())
            }
        }
    }

    /// Waits for a verdict; asks Envoy for more time once if it is slow,
    /// and gives up if Envoy goes away.
    async fn wait_for(
        &mut self,
        direction: Direction,
        verdict: impl std::future::Future<Output = Outcome>,
    ) -> Result<Outcome, Stop> {
        tokio::pin!(verdict);
        let mut ask = self
            .settings
            .override_after
            .filter(|_| !self.observe && !self.asked[direction as usize]);
        loop {
            let sleep = tokio::time::sleep(ask.unwrap_or(Duration::MAX));
            tokio::select! {
                outcome = &mut verdict => return Ok(outcome),
                () = self.replies.closed() => return Err(Stop::Gone),
                () = sleep, if ask.is_some() => {
                    ask = None;
                    self.ask_for_time(direction).await?;
                }
            }
        }
    }

    /// Sends `override_message_timeout`, once per direction.
    async fn ask_for_time(&mut self, direction: Direction) -> Result<(), Stop> {
        if std::mem::replace(&mut self.asked[direction as usize], true) {
            return Ok(());
        }
        let timeout = self.settings.override_timeout;
        self.send(ProcessingResponse {
            override_message_timeout: Some(PbDuration {
                seconds: timeout.as_secs() as i64,
                nanos: timeout.subsec_nanos() as i32,
            }),
            ..Default::default()
        })
        .await
    }

    async fn send(&mut self, response: ProcessingResponse) -> Result<(), Stop> {
        if self.observe {
            return Ok(());
        }
        self.replies
            .send(Ok(response))
            .await
            .map_err(|_| Stop::Gone)
    }
}

impl<S> Held<S> {
    fn new(scan: S) -> Self {
        Held {
            scan,
            replies: 0,
            chunks: Vec::new(),
            seen: 0,
        }
    }
}

/// Splits Envoy's header list into pseudo-headers and an `http::HeaderMap`.
/// A field `http` cannot represent is left out (and logged).
fn split_headers(list: Vec<HeaderValue>) -> (Vec<(String, String)>, HeaderMap) {
    let mut pseudo = Vec::new();
    let mut fields = HeaderMap::with_capacity(list.len());
    for h in list {
        let raw = if h.raw_value.is_empty() {
            h.value.into_bytes()
        } else {
            h.raw_value
        };
        if h.key.starts_with(':') {
            pseudo.push((h.key, String::from_utf8_lossy(&raw).into_owned()));
            continue;
        }
        match (
            HeaderName::from_bytes(h.key.as_bytes()),
            HttpValue::from_bytes(&raw),
        ) {
            (Ok(name), Ok(value)) => {
                fields.append(name, value);
            }
            _ => tracing::debug!(name = %h.key, "header field left out: not valid HTTP"),
        }
    }
    (pseudo, fields)
}

/// `source.address` from the attributes Envoy sends when configured to.
fn client_address(msg: &ProcessingRequest) -> Option<std::net::IpAddr> {
    use envoy_types::pb::google::protobuf::value::Kind;
    msg.attributes.values().find_map(|s| {
        let Some(Kind::StringValue(addr)) = s.fields.get("source.address")?.kind.as_ref() else {
            return None;
        };
        addr.parse::<std::net::SocketAddr>()
            .map(|a| a.ip())
            .or_else(|_| addr.parse())
            .ok()
    })
}

/// The mode override that skips a trusted message's body (and, asked on
/// the request, the response too, since both go to the same host).
fn skip_bodies(direction: Direction) -> ProcessingMode {
    let none = BodySendMode::None as i32;
    let mut mode = ProcessingMode {
        request_header_mode: HeaderSendMode::Send as i32,
        response_header_mode: HeaderSendMode::Skip as i32,
        request_body_mode: none,
        response_body_mode: none,
        request_trailer_mode: HeaderSendMode::Skip as i32,
        response_trailer_mode: HeaderSendMode::Skip as i32,
    };
    if direction == Direction::Response {
        mode.response_header_mode = HeaderSendMode::Send as i32;
    }
    mode
}

fn mutation(headers: Headers) -> HeaderMutation {
    HeaderMutation {
        set_headers: headers
            .into_iter()
            .map(|(key, value)| HeaderValueOption {
                header: Some(HeaderValue {
                    key,
                    value: String::new(),
                    raw_value: value.into_bytes(),
                }),
                append_action: HeaderAppendAction::OverwriteIfExistsOrAdd as i32,
                ..Default::default()
            })
            .collect(),
        remove_headers: Vec::new(),
    }
}

/// CONTINUE, adding `headers` if any.
fn common(headers: Headers) -> CommonResponse {
    CommonResponse {
        status: ResponseStatus::Continue as i32,
        header_mutation: (!headers.is_empty()).then(|| mutation(headers)),
        ..Default::default()
    }
}

/// FULL_DUPLEX_STREAMED: a chunk sent back to Envoy.
fn streamed(body: Vec<u8>, end_of_stream: bool) -> CommonResponse {
    CommonResponse {
        body_mutation: Some(BodyMutation {
            mutation: Some(Mutation::StreamedResponse(StreamedBodyResponse {
                body,
                end_of_stream,
                ..Default::default()
            })),
        }),
        ..Default::default()
    }
}

fn body_reply(direction: Direction, response: CommonResponse) -> ProcessingResponse {
    let reply = BodyResponse {
        response: Some(response),
    };
    let response = match direction {
        Direction::Request => processing_response::Response::RequestBody(reply),
        Direction::Response => processing_response::Response::ResponseBody(reply),
    };
    ProcessingResponse {
        response: Some(response),
        ..Default::default()
    }
}
