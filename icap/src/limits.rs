//! Every bound the codec enforces, in one place.
//!
//! The parser never asks its caller to keep more bytes than these allow: a
//! head, a chunk-size line or a trailer section that would need more is an
//! error of its own kind, not an ever-growing buffer.

/// The bounds on what the parser accepts. Every field has a default that fits
/// real Squid and c-icap traffic with room to spare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the ICAP head: start line, header fields and the empty line.
    /// Default 16 KiB (Squid's ICAP headers are a few hundred bytes).
    pub max_icap_head: usize,
    /// Bytes of the encapsulated HTTP heads together (`req-hdr` plus
    /// `res-hdr`). Default 256 KiB: Squid allows 64 KiB for each HTTP head.
    pub max_http_head: usize,
    /// Header fields in any one head (ICAP, HTTP request, HTTP response) or in
    /// a trailer section. Default 256.
    pub max_headers: usize,
    /// Bytes of one chunk-size line, extensions and CRLF included. Default 4 KiB.
    pub max_chunk_line: usize,
    /// The largest `Preview` a client may announce. Default 1 MiB.
    pub max_preview: u64,
    /// Bytes of the trailer section after the last chunk. Default 16 KiB.
    pub max_trailers: usize,
}

impl Limits {
    /// The defaults, usable in `const` context.
    pub const DEFAULT: Limits = Limits {
        max_icap_head: 16 * 1024,
        max_http_head: 256 * 1024,
        max_headers: 256,
        max_chunk_line: 4 * 1024,
        max_preview: 1024 * 1024,
        max_trailers: 16 * 1024,
    };

    /// The most bytes of a message head the parser may need to see at once:
    /// a caller's read buffer for heads never has to grow past this.
    pub fn max_message_head(&self) -> usize {
        self.max_icap_head + self.max_http_head
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits::DEFAULT
    }
}
