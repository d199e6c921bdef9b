//! The codec's one error type, and the single place where an error becomes an
//! ICAP status code.
//!
//! Errors are small `Copy` values with `&'static str` context, so the hot path
//! pays nothing for them and tests can compare them with `==`. Nothing here
//! knows about sockets or services: "service not found" (404) and "method not
//! allowed for this service" (405) are decisions of the server, not of the
//! codec, and live there.

use std::fmt;

use crate::StatusCode;

/// Everything that can be wrong with bytes handed to the parser.
///
/// Each variant names one kind of defect, so that a test, a log line or a
/// metric can tell them apart. [`Error::status`] maps each to the ICAP status
/// a server should answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Error {
    /// The request line (or status line) did not end within the head limit.
    StartLineTooLong,
    /// The request line is not `METHOD SP URI SP VERSION`.
    InvalidRequestLine(&'static str),
    /// The method is not OPTIONS, REQMOD or RESPMOD (methods are case-sensitive).
    UnknownMethod,
    /// The request URI is not a usable `icap://` or `icaps://` URI.
    InvalidUri(&'static str),
    /// The protocol is not ICAP at all (`HTTP/1.1`, `FOO`).
    InvalidVersion,
    /// The protocol is ICAP, but a version other than 1.0.
    UnsupportedVersion,
    /// A response's status line is not `ICAP/1.0 SP 3DIGIT SP reason`.
    InvalidStatusLine(&'static str),
    /// A line ended in a bare LF instead of CRLF.
    BareLineFeed,
    /// The ICAP head did not end within [`Limits::max_icap_head`](crate::Limits).
    HeadTooLarge,
    /// More header fields than [`Limits::max_headers`](crate::Limits).
    TooManyHeaders,
    /// A header line has no colon, or an empty name before it.
    InvalidHeaderLine,
    /// A header name has a character outside the token set.
    InvalidHeaderName,
    /// A header value has a control character in it.
    InvalidHeaderValue,
    /// A header line begins with whitespace (obsolete line folding, RFC 7230 3.2.4).
    ObsoleteLineFolding,
    /// `Preview` is not a decimal number, or is given twice with different values.
    InvalidPreview,
    /// `Preview` announces more bytes than [`Limits::max_preview`](crate::Limits).
    PreviewTooLarge,
    /// A REQMOD or RESPMOD request (or a response other than 100) has no `Encapsulated`.
    MissingEncapsulated,
    /// `Encapsulated` appears more than once.
    DuplicateEncapsulated,
    /// `Encapsulated` is not a list of `section=offset`.
    InvalidEncapsulated(&'static str),
    /// `Encapsulated` offsets do not increase strictly from one section to the next.
    EncapsulatedOutOfOrder,
    /// The first `Encapsulated` offset is not 0.
    EncapsulatedFirstOffset,
    /// Sections are in the wrong order (`res-hdr` before `req-hdr`, a body not last).
    EncapsulatedSectionOrder,
    /// A section that this method does not carry (`res-hdr` in REQMOD, `opt-body` in RESPMOD).
    EncapsulatedSectionNotAllowed,
    /// `Encapsulated` names no body section (`*-body` or `null-body`) at its end.
    EncapsulatedNoBody,
    /// An encapsulated HTTP head does not end exactly where the next offset says.
    EncapsulatedOffsetMismatch,
    /// The encapsulated HTTP heads are larger than [`Limits::max_http_head`](crate::Limits).
    HttpHeadTooLarge,
    /// An encapsulated HTTP head is not valid HTTP/1.x.
    InvalidHttpHead(&'static str),
    /// A chunk-size line does not start with a hexadecimal size.
    InvalidChunkSize,
    /// A chunk size does not fit in 64 bits.
    ChunkSizeOverflow,
    /// A chunk-size line did not end within [`Limits::max_chunk_line`](crate::Limits).
    ChunkLineTooLong,
    /// A chunk extension is malformed (or `ieof` sits on a chunk that carries data).
    InvalidChunkExtension,
    /// `use-original-body=` is not a decimal offset.
    InvalidUseOriginalBody,
    /// Chunk data is not followed by CRLF.
    MissingChunkCrlf,
    /// The trailer section did not end within [`Limits::max_trailers`](crate::Limits).
    TrailerTooLarge,
    /// A trailer field is malformed.
    InvalidTrailer,
    /// The preview carried more body bytes than its `Preview` header announced.
    PreviewExceeded,
    /// The connection ended in the middle of a message.
    Truncated,
}

impl Error {
    /// The ICAP status a server answers this error with (RFC 3507 section 4.3.3).
    ///
    /// This is the only place where codec errors meet status codes.
    pub fn status(&self) -> StatusCode {
        match self {
            Error::UnknownMethod => StatusCode::NOT_IMPLEMENTED,
            Error::UnsupportedVersion => StatusCode::VERSION_NOT_SUPPORTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (what, context) = match self {
            Error::StartLineTooLong => ("start line too long", None),
            Error::InvalidRequestLine(c) => ("invalid request line", Some(c)),
            Error::UnknownMethod => ("unknown ICAP method", None),
            Error::InvalidUri(c) => ("invalid ICAP URI", Some(c)),
            Error::InvalidVersion => ("not an ICAP version", None),
            Error::UnsupportedVersion => ("ICAP version not supported", None),
            Error::InvalidStatusLine(c) => ("invalid status line", Some(c)),
            Error::BareLineFeed => ("line ends in LF without CR", None),
            Error::HeadTooLarge => ("ICAP head too large", None),
            Error::TooManyHeaders => ("too many header fields", None),
            Error::InvalidHeaderLine => ("header line without a name and colon", None),
            Error::InvalidHeaderName => ("invalid header name", None),
            Error::InvalidHeaderValue => ("invalid header value", None),
            Error::ObsoleteLineFolding => ("obsolete line folding", None),
            Error::InvalidPreview => ("invalid Preview header", None),
            Error::PreviewTooLarge => ("Preview larger than allowed", None),
            Error::MissingEncapsulated => ("missing Encapsulated header", None),
            Error::DuplicateEncapsulated => ("Encapsulated header repeated", None),
            Error::InvalidEncapsulated(c) => ("invalid Encapsulated header", Some(c)),
            Error::EncapsulatedOutOfOrder => ("Encapsulated offsets out of order", None),
            Error::EncapsulatedFirstOffset => ("first Encapsulated offset is not 0", None),
            Error::EncapsulatedSectionOrder => ("Encapsulated sections out of order", None),
            Error::EncapsulatedSectionNotAllowed => {
                ("Encapsulated section not allowed for this method", None)
            }
            Error::EncapsulatedNoBody => ("Encapsulated names no body section", None),
            Error::EncapsulatedOffsetMismatch => (
                "encapsulated HTTP head does not end at the next offset",
                None,
            ),
            Error::HttpHeadTooLarge => ("encapsulated HTTP heads too large", None),
            Error::InvalidHttpHead(c) => ("invalid encapsulated HTTP head", Some(c)),
            Error::InvalidChunkSize => ("invalid chunk size", None),
            Error::ChunkSizeOverflow => ("chunk size overflows", None),
            Error::ChunkLineTooLong => ("chunk-size line too long", None),
            Error::InvalidChunkExtension => ("invalid chunk extension", None),
            Error::InvalidUseOriginalBody => ("invalid use-original-body", None),
            Error::MissingChunkCrlf => ("chunk data not followed by CRLF", None),
            Error::TrailerTooLarge => ("trailer section too large", None),
            Error::InvalidTrailer => ("invalid trailer field", None),
            Error::PreviewExceeded => ("preview longer than announced", None),
            Error::Truncated => ("message truncated", None),
        };
        match context {
            Some(c) => write!(f, "{what}: {c}"),
            None => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {}
