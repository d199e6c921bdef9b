//! The Envoy ext_proc frontend of virus-scanner.
//!
//! Envoy opens one gRPC stream per HTTP request and sends the request's
//! headers, body and trailers, then the response's, each as a
//! `ProcessingRequest`. This crate reads those messages, hands each body to
//! a [`Scanning`] backend while it arrives, and answers Envoy: carry on
//! (the body released only once the scan is clean), or an
//! `ImmediateResponse` with a block page instead of the message.
//!
//! The crate knows Envoy and gRPC, not clamd, Redis or block pages: the
//! service implements [`Scanning`] with its own scan pipeline and policy,
//! exactly as its ICAP frontend does.
//!
//! # Layout
//!
//! - [`Scanning`], [`Scan`], [`Exchange`], [`Outcome`]: what the frontend
//!   needs from the service.
//! - [`Settings`], [`BodyMode`], [`StreamedRelease`]: how bodies are held
//!   and released.
//! - `stream`: one ext_proc stream, message by message.
//! - [`server`]: the server: ext_proc, grpc.health.v1, TLS, shutdown.
//! - `http2`: HTTP/2 and gRPC's framing, one task per connection.

#![forbid(unsafe_code)]

mod http2;
pub mod server;
mod stream;

use std::future::Future;
use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};

pub use http2::frame;
pub use server::{serve, ServerSettings, TlsSource};

/// Which HTTP message a body belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client's request (an upload).
    Request,
    /// The upstream's response (a download).
    Response,
}

/// What Envoy has told the frontend about one HTTP exchange so far.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// `:method`.
    pub method: Option<Method>,
    /// `:scheme`.
    pub scheme: Option<String>,
    /// `:authority` (or `host`).
    pub authority: Option<String>,
    /// `:path`.
    pub path: Option<String>,
    /// The request's header fields, without the pseudo-headers.
    pub request_headers: HeaderMap,
    /// `:status`, once the response headers have arrived.
    pub status: Option<StatusCode>,
    /// The response's header fields, without the pseudo-headers.
    pub response_headers: HeaderMap,
    /// The downstream client's address: the `source.address` attribute when
    /// Envoy is configured to send it, else `x-envoy-external-address`.
    pub client: Option<IpAddr>,
    /// Whether `client` is the `source.address` attribute, which Envoy sets
    /// itself, rather than a header a client may have written.
    pub client_from_envoy: bool,
}

impl Exchange {
    /// The URL: `scheme://authority/path`, as far as it is known.
    pub fn url(&self) -> String {
        let scheme = self.scheme.as_deref().unwrap_or("http");
        match (&self.authority, &self.path) {
            (Some(a), Some(p)) => format!("{scheme}://{a}{p}"),
            (Some(a), None) => format!("{scheme}://{a}/"),
            (None, Some(p)) => p.clone(),
            (None, None) => String::new(),
        }
    }

    /// The host the request went to: lower-case, without port or brackets.
    pub fn host(&self) -> Option<String> {
        let authority = self.authority.as_deref()?;
        let host = match authority.strip_prefix('[') {
            Some(v6) => v6.split_once(']').map_or(v6, |(h, _)| h),
            None => authority
                .rsplit_once(':')
                .filter(|(_, port)| port.bytes().all(|b| b.is_ascii_digit()))
                .map_or(authority, |(h, _)| h),
        };
        (!host.is_empty()).then(|| host.to_ascii_lowercase())
    }

    /// The declared body length of one direction's message.
    pub fn declared_length(&self, direction: Direction) -> Option<u64> {
        let headers = match direction {
            Direction::Request => &self.request_headers,
            Direction::Response => &self.response_headers,
        };
        headers
            .get(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

/// Header fields to add: lower-case names, visible ASCII values.
pub type Headers = Vec<(String, String)>;

/// How a scan ended, for Envoy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Let the message through. `headers` are added where Envoy still holds
    /// the message's headers (BUFFERED modes); in streamed modes they have
    /// left already.
    Allow {
        /// Marks, such as a warning that the message passed unscanned.
        headers: Headers,
    },
    /// Answer the client with this instead of the message.
    Block {
        /// The HTTP status (403 infected, 503 scanner unavailable).
        status: StatusCode,
        /// Header fields of the answer, `content-type` included.
        headers: Headers,
        /// The page.
        body: Vec<u8>,
        /// One line for Envoy's access log (`%RESPONSE_CODE_DETAILS%`).
        details: String,
    },
}

/// Where a message goes once its headers are known.
pub enum Begin<S> {
    /// Not scanned (a trusted host): its body is skipped where Envoy allows
    /// a `mode_override`, and passed unread where not.
    Skip {
        /// Added to the headers.
        headers: Headers,
    },
    /// Scanned by this session.
    Scan(S),
}

/// The service behind the frontend: starts scans.
pub trait Scanning: Clone + Send + Sync + 'static {
    /// One body being scanned.
    type Scan: Scan;

    /// Decides on `direction`'s message of `exchange`, whose headers have
    /// just arrived (or whose body has, when Envoy skips headers).
    fn begin(&self, exchange: &Exchange, direction: Direction) -> Begin<Self::Scan>;

    /// Request header fields (lower-case) to remove before the request goes
    /// on, asked once its headers have arrived. None by default.
    fn request_removals(&self, exchange: &Exchange) -> Vec<String> {
        let _ = exchange;
        Vec::new()
    }
}

/// One body being scanned. Dropping it unfinished cancels the scan.
pub trait Scan: Send + 'static {
    /// Adds body bytes, as they arrive.
    fn write(&mut self, data: &[u8]) -> impl Future<Output = ()> + Send;

    /// True once the body has outgrown the scan limit: the frontend then
    /// finishes at once instead of holding more.
    fn is_too_large(&self) -> bool;

    /// Ends the body; returns what Envoy is told.
    fn finish(self) -> impl Future<Output = Outcome> + Send;
}

/// Envoy's body send mode for one direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyMode {
    /// The whole body in one message (over Envoy's buffer limit, the
    /// client gets 413 or 500).
    Buffered,
    /// The body up to Envoy's buffer limit in one message; the rest passes
    /// unseen.
    BufferedPartial,
    /// Chunks as they arrive, one reply each, released in order.
    Streamed,
    /// Chunks as they arrive; the processor sends the body back itself.
    FullDuplexStreamed,
}

impl BodyMode {
    /// From Envoy's `BodySendMode` number; NONE and unknown modes give
    /// `None`.
    pub fn from_envoy(mode: i32) -> Option<BodyMode> {
        match mode {
            1 => Some(BodyMode::Streamed),
            2 => Some(BodyMode::Buffered),
            3 => Some(BodyMode::BufferedPartial),
            4 => Some(BodyMode::FullDuplexStreamed),
            _ => None,
        }
    }
}

impl std::str::FromStr for BodyMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "buffered" => Ok(BodyMode::Buffered),
            "buffered_partial" => Ok(BodyMode::BufferedPartial),
            "streamed" => Ok(BodyMode::Streamed),
            "full_duplex_streamed" => Ok(BodyMode::FullDuplexStreamed),
            _ => Err(format!(
                "{s:?} is not buffered, buffered-partial, streamed or full-duplex-streamed"
            )),
        }
    }
}

/// In STREAMED mode, when the chunks are released to their destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamedRelease {
    /// Every reply waits for the verdict: nothing reaches the destination
    /// before the whole body is scanned. The chunks wait in Envoy, so the
    /// body must fit Envoy's buffer limit, and the scan within its message
    /// timeout.
    Hold,
    /// Each chunk is released as soon as the scanner has it, except the
    /// last, which waits for the verdict. An infected body is cut off before
    /// its end (Envoy resets the stream); its first part has gone through.
    Early,
}

impl std::str::FromStr for StreamedRelease {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "hold" => Ok(StreamedRelease::Hold),
            "early" => Ok(StreamedRelease::Early),
            _ => Err(format!("{s:?} is not hold or early")),
        }
    }
}

/// How the frontend treats bodies and timeouts.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The body mode assumed when Envoy does not say (Envoy sends its modes
    /// in the stream's first message since 1.34; older ones do not).
    pub assumed_mode: BodyMode,
    /// STREAMED mode: hold every chunk, or only the last.
    pub streamed: StreamedRelease,
    /// When a verdict has taken this long, Envoy is asked for more time
    /// (`override_message_timeout`); `None` never asks.
    pub override_after: Option<Duration>,
    /// The time asked for. Envoy grants it only up to its
    /// `max_message_timeout`.
    pub override_timeout: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            assumed_mode: BodyMode::Buffered,
            streamed: StreamedRelease::Hold,
            override_after: Some(Duration::from_millis(100)),
            override_timeout: Duration::from_secs(120),
        }
    }
}
