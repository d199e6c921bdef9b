//! The HTTP request and response heads that ICAP encapsulates.
//!
//! They are parsed with httparse into `http` types, one section at a time,
//! and written back out by the encoder. Bodies are not here: an encapsulated
//! body is always chunked and goes through [`crate::chunked`].

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode as HttpStatus, Version};

use crate::{Error, Limits};

/// An encapsulated HTTP request head (`req-hdr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRequestHead {
    /// The HTTP method.
    pub method: Method,
    /// The request target as sent: absolute (`http://host/path`, what Squid
    /// sends), origin form (`/path`) or authority form (`host:443`, CONNECT).
    /// Kept as text because real URLs hold characters that [`http::Uri`]
    /// refuses; [`HttpRequestHead::uri`] parses it when it can.
    pub target: String,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The header fields, in the order they arrived (repeats grouped).
    pub headers: HeaderMap,
}

impl HttpRequestHead {
    /// The target as a [`http::Uri`], when it is one.
    pub fn uri(&self) -> Option<http::Uri> {
        self.target.parse().ok()
    }
}

/// An encapsulated HTTP response head (`res-hdr`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpResponseHead {
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// The status code.
    pub status: HttpStatus,
    /// The reason phrase as sent (it may be empty).
    pub reason: String,
    /// The header fields, in the order they arrived (repeats grouped).
    pub headers: HeaderMap,
}

/// Headers kept on the stack before falling back to the heap.
const STACK_HEADERS: usize = 64;

/// Parses exactly one HTTP request head that must fill `section` completely.
pub(crate) fn parse_request_head(
    section: &[u8],
    limits: &Limits,
) -> Result<HttpRequestHead, Error> {
    with_header_slots(limits, |slots| {
        let mut req = httparse::Request::new(slots);
        complete_status(req.parse(section), section.len())?;
        let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
            .map_err(|_| Error::InvalidHttpHead("method"))?;
        Ok(HttpRequestHead {
            method,
            target: req.path.unwrap_or_default().to_owned(),
            version: version(req.version),
            headers: header_map(req.headers)?,
        })
    })
}

/// Parses exactly one HTTP response head that must fill `section` completely.
pub(crate) fn parse_response_head(
    section: &[u8],
    limits: &Limits,
) -> Result<HttpResponseHead, Error> {
    with_header_slots(limits, |slots| {
        let mut res = httparse::Response::new(slots);
        complete_status(res.parse(section), section.len())?;
        let status = HttpStatus::from_u16(res.code.unwrap_or_default())
            .map_err(|_| Error::InvalidHttpHead("status code"))?;
        Ok(HttpResponseHead {
            version: version(res.version),
            status,
            reason: res.reason.unwrap_or_default().to_owned(),
            headers: header_map(res.headers)?,
        })
    })
}

/// Runs `parse` with header slots on the stack, and again with `max_headers`
/// slots on the heap if the stack ones were too few.
fn with_header_slots<'b, T>(
    limits: &Limits,
    mut parse: impl FnMut(&mut [httparse::Header<'b>]) -> Result<T, Error>,
) -> Result<T, Error> {
    let mut slots: [httparse::Header<'b>; STACK_HEADERS] = [httparse::EMPTY_HEADER; STACK_HEADERS];
    let stack = limits.max_headers.min(STACK_HEADERS);
    match parse(&mut slots[..stack]) {
        Err(Error::TooManyHeaders) if limits.max_headers > STACK_HEADERS => {
            let mut heap: Vec<httparse::Header<'b>> =
                vec![httparse::EMPTY_HEADER; limits.max_headers];
            parse(&mut heap)
        }
        other => other,
    }
}

/// Turns httparse's answer into "the head fills the section exactly".
fn complete_status(
    status: Result<httparse::Status<usize>, httparse::Error>,
    section_len: usize,
) -> Result<usize, Error> {
    match prefix_status(status)? {
        Some(n) if n == section_len => Ok(n),
        // The head ended before the next section began, or ran past it.
        _ => Err(Error::EncapsulatedOffsetMismatch),
    }
}

/// httparse's answer as "complete after n bytes", "not yet", or an error.
fn prefix_status(
    status: Result<httparse::Status<usize>, httparse::Error>,
) -> Result<Option<usize>, Error> {
    match status {
        Ok(httparse::Status::Complete(n)) => Ok(Some(n)),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Error::TooManyHeaders),
        Err(e) => Err(Error::InvalidHttpHead(httparse_context(e))),
    }
}

/// Where an HTTP head that starts `bytes` ends, if it ends there; an error
/// as soon as the bytes so far cannot begin a valid head.
pub(crate) fn head_end(
    request: bool,
    bytes: &[u8],
    limits: &Limits,
) -> Result<Option<usize>, Error> {
    with_header_slots(limits, |slots| {
        if request {
            prefix_status(httparse::Request::new(slots).parse(bytes))
        } else {
            prefix_status(httparse::Response::new(slots).parse(bytes))
        }
    })
}

fn httparse_context(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "header name",
        httparse::Error::HeaderValue => "header value",
        httparse::Error::NewLine => "line ending",
        httparse::Error::Status => "status",
        httparse::Error::Token => "token",
        httparse::Error::Version => "version",
        _ => "syntax",
    }
}

fn version(minor: Option<u8>) -> Version {
    if minor == Some(0) {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    }
}

fn header_map(headers: &[httparse::Header<'_>]) -> Result<HeaderMap, Error> {
    let mut map = HeaderMap::with_capacity(headers.len());
    for h in headers {
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| Error::InvalidHttpHead("header name"))?;
        let value =
            HeaderValue::from_bytes(h.value).map_err(|_| Error::InvalidHttpHead("header value"))?;
        map.append(name, value);
    }
    Ok(map)
}

fn version_str(v: Version) -> &'static str {
    if v == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    }
}

/// Writes header fields and the empty line that ends a head.
pub(crate) fn write_headers(headers: &HeaderMap, out: &mut Vec<u8>) {
    for (name, value) in headers {
        crate::syntax::write_name(name.as_str(), out);
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes an HTTP request head.
pub fn encode_request_head(head: &HttpRequestHead, out: &mut Vec<u8>) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.push(b' ');
    out.extend_from_slice(version_str(head.version).as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(&head.headers, out);
}

/// Writes an HTTP response head.
pub fn encode_response_head(head: &HttpResponseHead, out: &mut Vec<u8>) {
    out.extend_from_slice(version_str(head.version).as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_headers(&head.headers, out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_head_fills_section() {
        let raw =
            b"GET http://example.com/a?b HTTP/1.1\r\nHost: example.com\r\nX-A: 1\r\nX-A: 2\r\n\r\n";
        let head = parse_request_head(raw, &Limits::DEFAULT).unwrap();
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.target, "http://example.com/a?b");
        assert_eq!(head.headers.get_all("x-a").iter().count(), 2);
        let mut out = Vec::new();
        encode_request_head(&head, &mut out);
        assert_eq!(parse_request_head(&out, &Limits::DEFAULT).unwrap(), head);
    }

    #[test]
    fn head_shorter_or_longer_than_section_is_a_mismatch() {
        let raw = b"HTTP/1.1 200 OK\r\nA: b\r\n\r\nextra";
        assert_eq!(
            parse_response_head(raw, &Limits::DEFAULT),
            Err(Error::EncapsulatedOffsetMismatch)
        );
        assert_eq!(
            parse_response_head(&raw[..20], &Limits::DEFAULT),
            Err(Error::EncapsulatedOffsetMismatch)
        );
    }

    #[test]
    fn many_headers_fall_back_to_the_heap() {
        let mut raw = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..100 {
            raw.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        raw.extend_from_slice(b"\r\n");
        assert_eq!(
            parse_response_head(&raw, &Limits::DEFAULT)
                .unwrap()
                .headers
                .len(),
            100
        );
        let tight = Limits {
            max_headers: 99,
            ..Limits::DEFAULT
        };
        assert_eq!(
            parse_response_head(&raw, &tight),
            Err(Error::TooManyHeaders)
        );
    }
}
