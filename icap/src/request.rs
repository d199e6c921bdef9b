//! ICAP requests: what Squid and other clients send (RFC 3507 section 4.3).
//!
//! [`parse_request`] reads a request head (the ICAP head and the HTTP heads it
//! encapsulates) from the bytes that have arrived so far; the body, if any,
//! follows and is read with [`crate::ChunkedDecoder`]. [`encode_request`]
//! writes one, for clients and tests.

use std::net::IpAddr;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use nom::bytes::complete::take_while1;
use nom::character::complete::char;
use nom::combinator::rest;
use nom::{IResult, Parser};

use crate::encapsulated::{Rules, Sections};
use crate::head::{encapsulated, parse_head, read_sections, Fields};
use crate::syntax::{token, StartLine};
use crate::{Error, IcapUri, Limits};

/// The three ICAP methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Ask a service what it does.
    Options,
    /// Request modification: the client's HTTP request.
    Reqmod,
    /// Response modification: the origin's HTTP response.
    Respmod,
}

impl Method {
    /// The method's name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Options => "OPTIONS",
            Method::Reqmod => "REQMOD",
            Method::Respmod => "RESPMOD",
        }
    }

    /// Method names are case-sensitive: `reqmod` is not REQMOD.
    pub fn from_bytes(b: &[u8]) -> Option<Method> {
        Some(match b {
            b"OPTIONS" => Method::Options,
            b"REQMOD" => Method::Reqmod,
            b"RESPMOD" => Method::Respmod,
            _ => return None,
        })
    }

    fn rules(self) -> Rules {
        match self {
            Method::Options => Rules::Options,
            Method::Reqmod => Rules::Reqmod,
            Method::Respmod => Rules::Respmod,
        }
    }
}

/// The `Allow` header: which answers the client accepts besides 200.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Allow {
    /// `204`: the server may answer "no modification" without echoing.
    pub no_content: bool,
    /// `206`: the server may answer with part of the body and
    /// `use-original-body`.
    pub partial: bool,
    /// `trailers`: the server may send trailer fields.
    pub trailers: bool,
}

impl Allow {
    /// Adds the items of one `Allow` value.
    pub(crate) fn add(&mut self, value: &[u8]) {
        for item in value.split(|b| *b == b',') {
            match crate::syntax::trim_ows(item) {
                b"204" => self.no_content = true,
                b"206" => self.partial = true,
                t if t.eq_ignore_ascii_case(b"trailers") => self.trailers = true,
                // Unknown values are ignored, as for any extensible list.
                _ => {}
            }
        }
    }

    /// The header value, or `None` when nothing is allowed.
    pub fn to_header(self) -> Option<HeaderValue> {
        let items: Vec<&str> = [
            (self.no_content, "204"),
            (self.partial, "206"),
            (self.trailers, "trailers"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, s)| *s)
        .collect();
        (!items.is_empty()).then(|| HeaderValue::from_str(&items.join(", ")).expect("ASCII"))
    }
}

/// A parsed ICAP request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// OPTIONS, REQMOD or RESPMOD.
    pub method: Method,
    /// The request URI; its path names the service.
    pub uri: IcapUri,
    /// The ICAP header fields other than `Encapsulated`, `Preview` and
    /// `Allow`, which are parsed into the fields below.
    pub headers: HeaderMap,
    /// `Preview`: how many body bytes come before the client waits for
    /// `100 Continue`.
    pub preview: Option<u64>,
    /// `Allow`.
    pub allow: Allow,
    /// The encapsulated heads and body kind; `None` when the request had no
    /// `Encapsulated` header (only OPTIONS may omit it: Squid does).
    pub sections: Option<Sections>,
}

// Names made once: looking a header up by a string parses the string.
const X_CLIENT_IP: HeaderName = HeaderName::from_static("x-client-ip");
const X_AUTHENTICATED_USER: HeaderName = HeaderName::from_static("x-authenticated-user");
const X_CLIENT_USERNAME: HeaderName = HeaderName::from_static("x-client-username");

impl Request {
    /// True when chunks follow the head (a `*-body` section, not `null-body`).
    pub fn has_body(&self) -> bool {
        self.sections.as_ref().is_some_and(Sections::has_body)
    }

    /// `X-Client-IP`, when present and an address.
    pub fn client_ip(&self) -> Option<IpAddr> {
        let v = self.headers.get(X_CLIENT_IP)?.to_str().ok()?;
        v.trim().parse().ok()
    }

    /// The user: `X-Authenticated-User` (base64, c-icap's and Squid's
    /// `icap_client_username_encode on` form), else `X-Client-Username` (plain,
    /// Squid's default).
    pub fn client_username(&self) -> Option<String> {
        if let Some(v) = self.headers.get(X_AUTHENTICATED_USER) {
            if let Some(user) = crate::base64::decode(v.as_bytes()) {
                return Some(String::from_utf8_lossy(&user).into_owned());
            }
        }
        let v = self.headers.get(X_CLIENT_USERNAME)?;
        Some(String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A request line is printable ASCII and spaces: anything else (controls,
/// bytes over 0x7f) is refused as soon as it arrives.
const REQUEST_LINE: StartLine = StartLine {
    too_long: Error::StartLineTooLong,
    byte_ok: |b| (b' '..=b'~').contains(&b),
    bad_byte: Error::InvalidRequestLine("character not allowed in a request line"),
};

/// `METHOD SP URI SP ICAP/1.0`
fn request_line(line: &[u8]) -> Result<(Method, IcapUri), Error> {
    let parsed: IResult<&[u8], _, ()> = (
        token,
        char(' '),
        take_while1(|b: u8| b != b' '),
        char(' '),
        rest,
    )
        .parse(line);
    let Ok((_, (method, _, uri, _, version))) = parsed else {
        return Err(Error::InvalidRequestLine("expected METHOD URI VERSION"));
    };
    let method = Method::from_bytes(method).ok_or(Error::UnknownMethod)?;
    let uri = IcapUri::parse(uri)?;
    check_version(version)?;
    Ok((method, uri))
}

/// `ICAP/1.0` is the only version; `ICAP/x.y` is unsupported, anything else
/// is not ICAP at all.
pub(crate) fn check_version(v: &[u8]) -> Result<(), Error> {
    match v {
        b"ICAP/1.0" => Ok(()),
        [b'I', b'C', b'A', b'P', b'/', major, b'.', minor]
            if major.is_ascii_digit() && minor.is_ascii_digit() =>
        {
            Err(Error::UnsupportedVersion)
        }
        _ => Err(Error::InvalidVersion),
    }
}

/// Parses a request head from the start of `buf`.
///
/// Returns the request and the number of bytes its head used (the ICAP head
/// and the encapsulated HTTP heads; a body follows them), `Ok(None)` when more
/// bytes are needed, or the error. Never asks for more than
/// [`Limits::max_message_head`] bytes.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, Error> {
    let Some(head) = parse_head(buf, limits, Fields::Request, &REQUEST_LINE, request_line)? else {
        return Ok(None);
    };
    let (method, uri) = head.start;
    let encapsulated = encapsulated(head.encapsulated, method.rules())?;
    let mut request = Request {
        method,
        uri,
        headers: head.headers,
        preview: head.preview,
        allow: head.allow,
        sections: None,
    };
    let Some(encapsulated) = encapsulated else {
        if method != Method::Options {
            return Err(Error::MissingEncapsulated);
        }
        return Ok(Some((request, head.len)));
    };
    let Some((sections, used)) = read_sections(buf, head.len, &encapsulated, limits)? else {
        return Ok(None);
    };
    request.sections = Some(sections);
    Ok(Some((request, used)))
}

/// Writes a request head: the ICAP head with a computed `Encapsulated`, then
/// the HTTP heads. A body, if any, follows as chunks.
pub fn encode_request(req: &Request, out: &mut Vec<u8>) {
    out.extend_from_slice(req.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(req.uri.to_string().as_bytes());
    out.extend_from_slice(b" ICAP/1.0\r\n");
    let mut extra = Vec::with_capacity(3);
    if let Some(n) = req.preview {
        extra.push(("Preview", HeaderValue::from(n)));
    }
    if let Some(allow) = req.allow.to_header() {
        extra.push(("Allow", allow));
    }
    crate::response::write_icap_headers(&req.headers, &extra, req.sections.as_ref(), out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_line_errors() {
        assert_eq!(
            request_line(b"REQMOD icap://h/s"),
            Err(Error::InvalidRequestLine("expected METHOD URI VERSION"))
        );
        assert_eq!(
            request_line(b"REQMOD  icap://h/s ICAP/1.0"),
            Err(Error::InvalidRequestLine("expected METHOD URI VERSION"))
        );
        assert_eq!(
            request_line(b"GET icap://h/s ICAP/1.0"),
            Err(Error::UnknownMethod)
        );
        assert_eq!(
            request_line(b"reqmod icap://h/s ICAP/1.0"),
            Err(Error::UnknownMethod)
        );
        assert_eq!(
            request_line(b"REQMOD icap://h/s ICAP/2.0"),
            Err(Error::UnsupportedVersion)
        );
        assert_eq!(
            request_line(b"REQMOD icap://h/s HTTP/1.1"),
            Err(Error::InvalidVersion)
        );
        assert_eq!(
            request_line(b"REQMOD icap://h/s ICAP/1.0 "),
            Err(Error::InvalidVersion)
        );
        assert!(request_line(b"OPTIONS icap://h:1344/s ICAP/1.0").is_ok());
    }

    #[test]
    fn allow_lists() {
        let mut a = Allow::default();
        a.add(b"204, trailers");
        a.add(b"206,x-future");
        assert_eq!(
            a,
            Allow {
                no_content: true,
                partial: true,
                trailers: true
            }
        );
        assert_eq!(a.to_header().unwrap(), "204, 206, trailers");
        assert_eq!(Allow::default().to_header(), None);
    }
}
