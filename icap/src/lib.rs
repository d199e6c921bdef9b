//! An ICAP/1.0 (RFC 3507) codec: a parser and an encoder, with no I/O.
//!
//! The caller owns the socket and the buffer. It hands the parser the bytes
//! that have arrived, and the parser answers with a complete message head and
//! how many bytes it used, `Ok(None)` for "I need more", or a typed [`Error`]
//! whose [`Error::status`] is the ICAP status to answer with. Bodies are
//! chunked and go through the [`ChunkedDecoder`] state machine, which hands
//! out slices of the input without copying.
//!
//! What the parser accepts follows what Squid and c-icap really send: OPTIONS
//! without `Encapsulated`, `Preview: 0` with `null-body` and no chunk at all,
//! `0; ieof`, `Allow` as a comma list. Every bound lives in [`Limits`].
//!
//! # Layout
//!
//! - `request`: [`Request`], [`parse_request`], [`encode_request`].
//! - `response`: [`Response`], [`StatusCode`], [`ServiceOptions`] (the OPTIONS
//!   answer), [`parse_response`], [`encode_response`].
//! - `encapsulated`: the `Encapsulated` list and the [`Sections`] it lays out.
//! - `http_head`: the encapsulated HTTP heads, parsed with httparse.
//! - `chunked`: [`ChunkedDecoder`] and the chunk encoders.
//! - `uri`: [`IcapUri`].
//! - `limits`, `error`: [`Limits`] and [`Error`].
//! - `head`, `syntax`, `base64`: the shared grammar underneath.
//!
//! ```
//! use icap::{parse_request, Limits, Method};
//!
//! let raw = b"OPTIONS icap://127.0.0.1:1344/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
//! let (req, used) = parse_request(raw, &Limits::default()).unwrap().unwrap();
//! assert_eq!(req.method, Method::Options);
//! assert_eq!(req.uri.service, "avscan");
//! assert_eq!(used, raw.len());
//! assert_eq!(parse_request(&raw[..10], &Limits::default()), Ok(None));
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod base64;
mod chunked;
mod encapsulated;
mod error;
mod head;
mod http_head;
mod limits;
mod request;
mod response;
mod syntax;
mod uri;

pub use chunked::{encode_chunk, encode_last_chunk, ChunkedDecoder, Event, LastChunk, Step};
pub use encapsulated::{Body, Encapsulated, Section, Sections};
pub use error::Error;
pub use http_head::{encode_request_head, encode_response_head, HttpRequestHead, HttpResponseHead};
pub use limits::Limits;
pub use request::{encode_request, parse_request, Allow, Method, Request};
pub use response::{
    encode_response, http_date, istag_value, parse_response, IsTag, Response, ServiceOptions,
    StatusCode,
};
pub use uri::{IcapUri, Scheme};

#[cfg(fuzzing)]
pub mod fuzzing;
