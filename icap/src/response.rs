//! ICAP responses: status codes, the answers a server sends, and their parser.
//!
//! A server builds a [`Response`] (with [`Response::no_content`],
//! [`Response::error`], [`ServiceOptions::response`] and so on) and writes it
//! with [`encode_response`]; a client reads one back with [`parse_response`].

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};
use nom::bytes::complete::{take_while, take_while_m_n};
use nom::character::complete::char;
use nom::combinator::rest;
use nom::{IResult, Parser};

use crate::encapsulated::{Rules, Sections};
use crate::head::{encapsulated, parse_head, read_sections, Fields};
use crate::request::{check_version, Method};
use crate::syntax::StartLine;
use crate::{Error, Limits};

/// An ICAP status code: three digits, 100 to 999.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StatusCode(pub u16);

impl StatusCode {
    /// 100: send the rest of the body.
    pub const CONTINUE: StatusCode = StatusCode(100);
    /// 200: here is the (possibly modified) message.
    pub const OK: StatusCode = StatusCode(200);
    /// 204: no modification needed.
    pub const NO_CONTENT: StatusCode = StatusCode(204);
    /// 206: part of the message, then the client's own copy.
    pub const PARTIAL_CONTENT: StatusCode = StatusCode(206);
    /// 400.
    pub const BAD_REQUEST: StatusCode = StatusCode(400);
    /// 404: no such service.
    pub const NOT_FOUND: StatusCode = StatusCode(404);
    /// 405: the service does not offer this method.
    pub const METHOD_NOT_ALLOWED: StatusCode = StatusCode(405);
    /// 408: the client was too slow.
    pub const REQUEST_TIMEOUT: StatusCode = StatusCode(408);
    /// 500.
    pub const INTERNAL_SERVER_ERROR: StatusCode = StatusCode(500);
    /// 501: the method is not implemented.
    pub const NOT_IMPLEMENTED: StatusCode = StatusCode(501);
    /// 502.
    pub const BAD_GATEWAY: StatusCode = StatusCode(502);
    /// 503: overloaded or unavailable.
    pub const SERVICE_UNAVAILABLE: StatusCode = StatusCode(503);
    /// 505: ICAP version not supported.
    pub const VERSION_NOT_SUPPORTED: StatusCode = StatusCode(505);

    /// The reason phrase RFC 3507 gives this status.
    pub fn canonical_reason(self) -> &'static str {
        match self.0 {
            100 => "Continue",
            200 => "OK",
            204 => "No Content",
            206 => "Partial Content",
            400 => "Bad Request",
            404 => "ICAP Service Not Found",
            405 => "Method Not Allowed For Service",
            408 => "Request Timeout",
            500 => "Server Error",
            501 => "Method Not Implemented",
            502 => "Bad Gateway",
            503 => "Service Overloaded",
            505 => "ICAP Version Not Supported",
            _ => "Unknown",
        }
    }
}

impl fmt::Display for StatusCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An ICAP response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The reason phrase.
    pub reason: String,
    /// The ICAP header fields other than `Encapsulated`.
    pub headers: HeaderMap,
    /// The encapsulated heads and body kind; `None` writes no `Encapsulated`
    /// header (only right for `100 Continue`).
    pub sections: Option<Sections>,
}

impl Response {
    /// A response with the status's canonical reason and nothing else.
    pub fn new(status: StatusCode) -> Response {
        Response {
            status,
            reason: status.canonical_reason().to_owned(),
            headers: HeaderMap::new(),
            sections: None,
        }
    }

    /// `100 Continue`: the preview was not enough, send the rest.
    pub fn continue_() -> Response {
        Response::new(StatusCode::CONTINUE)
    }

    /// `204 No Content` with `Encapsulated: null-body=0`.
    pub fn no_content(istag: &IsTag) -> Response {
        Response::with_istag(StatusCode::NO_CONTENT, istag, Sections::NULL)
    }

    /// An error status, with `Encapsulated: null-body=0`.
    pub fn error(status: StatusCode, istag: &IsTag) -> Response {
        Response::with_istag(status, istag, Sections::NULL)
    }

    /// A response carrying `ISTag` and the given sections: a `200` with
    /// `res-hdr` and `res-body`, say.
    pub fn with_istag(status: StatusCode, istag: &IsTag, sections: Sections) -> Response {
        let mut response = Response::new(status);
        response.headers.insert(ISTAG, istag.0.clone());
        response.sections = Some(sections);
        response
    }

    /// The `ISTag`, without its quotes.
    pub fn istag(&self) -> Option<&str> {
        let v = self.headers.get(ISTAG)?.to_str().ok()?;
        Some(v.trim_matches('"'))
    }
}

// Made once: inserting by a string parses the string.
const ISTAG: HeaderName = HeaderName::from_static("istag");

/// An `ISTag`, cleaned and quoted once (see [`istag_value`]). Cheap to
/// clone: a server keeps one for as long as its tag holds and answers
/// every transaction with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsTag(HeaderValue);

impl IsTag {
    /// `tag` made fit for the header.
    pub fn new(tag: &str) -> IsTag {
        IsTag(istag_value(tag))
    }

    /// The tag, without its quotes.
    pub fn as_str(&self) -> &str {
        // istag_value makes printable ASCII only.
        self.0.to_str().unwrap_or_default().trim_matches('"')
    }
}

/// A quoted `ISTag` value: at most 32 characters, no quotes or controls inside.
pub fn istag_value(tag: &str) -> HeaderValue {
    let clean: String = tag
        .trim_matches('"')
        .chars()
        .filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\')
        .take(32)
        .collect();
    HeaderValue::from_str(&format!("\"{clean}\"")).expect("printable ASCII")
}

/// What a service says about itself in its OPTIONS answer (RFC 3507 4.10.2).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceOptions {
    /// The methods the service takes (REQMOD, RESPMOD).
    pub methods: Vec<Method>,
    /// A short description of the service.
    pub service: String,
    /// The service's current tag; it changes when its verdicts would.
    pub istag: String,
    /// How many connections the client may open.
    pub max_connections: Option<u32>,
    /// For how many seconds this answer stays valid.
    pub options_ttl: Option<u32>,
    /// Whether the service may answer 204 outside a preview.
    pub allow_204: bool,
    /// Whether the service may answer 206.
    pub allow_206: bool,
    /// How many body bytes the client should send as a preview.
    pub preview: Option<u64>,
    /// File extensions to preview (`*` for all).
    pub transfer_preview: Option<String>,
    /// File extensions not to send at all.
    pub transfer_ignore: Option<String>,
    /// File extensions to send whole, without preview.
    pub transfer_complete: Option<String>,
    /// The `Date` header: Squid reckons the TTL from it.
    pub date: SystemTime,
}

impl ServiceOptions {
    /// The `200 OK` answer to OPTIONS, with `Encapsulated: null-body=0`.
    pub fn response(&self) -> Response {
        let mut r = Response::with_istag(StatusCode::OK, &IsTag::new(&self.istag), Sections::NULL);
        let h = &mut r.headers;
        let methods: Vec<&str> = self.methods.iter().map(|m| m.as_str()).collect();
        h.insert("methods", header(&methods.join(", ")));
        h.insert("service", header(&self.service));
        h.insert("date", header(&http_date(self.date)));
        if let Some(n) = self.max_connections {
            h.insert("max-connections", HeaderValue::from(n));
        }
        if let Some(n) = self.options_ttl {
            h.insert("options-ttl", HeaderValue::from(n));
        }
        let allow = crate::Allow {
            no_content: self.allow_204,
            partial: self.allow_206,
            trailers: false,
        };
        if let Some(v) = allow.to_header() {
            h.insert("allow", v);
        }
        if let Some(n) = self.preview {
            h.insert("preview", HeaderValue::from(n));
        }
        for (name, value) in [
            ("transfer-preview", &self.transfer_preview),
            ("transfer-ignore", &self.transfer_ignore),
            ("transfer-complete", &self.transfer_complete),
        ] {
            if let Some(v) = value {
                h.insert(name, header(v));
            }
        }
        r
    }
}

/// A header value from text: characters a header cannot hold become `?`.
fn header(s: &str) -> HeaderValue {
    let clean: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    HeaderValue::from_str(&clean).expect("printable ASCII")
}

/// `IMF-fixdate` (RFC 7231 7.1.1.1): `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{}, {:02} {} {} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        day,
        MONTHS[(month - 1) as usize],
        year,
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A status line may carry obs-text in its reason phrase, but no controls.
const STATUS_LINE: StartLine = StartLine {
    too_long: Error::InvalidStatusLine("status line too long"),
    byte_ok: |b| b == b'\t' || b >= b' ' && b != 0x7f,
    bad_byte: Error::InvalidStatusLine("control character in the status line"),
};

/// `ICAP/1.0 SP 3DIGIT SP reason`
fn status_line(line: &[u8]) -> Result<(StatusCode, String), Error> {
    let parsed: IResult<&[u8], _, ()> = (
        take_while(|b| b != b' '),
        char(' '),
        take_while_m_n(3, 3, |b: u8| b.is_ascii_digit()),
        rest,
    )
        .parse(line);
    let Ok((_, (version, _, code, reason))) = parsed else {
        return Err(Error::InvalidStatusLine("expected ICAP/1.0 CODE REASON"));
    };
    check_version(version)?;
    let reason = match reason {
        [] => &[][..],
        [b' ', reason @ ..] => reason,
        _ => return Err(Error::InvalidStatusLine("status code is not three digits")),
    };
    let code = code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    if code < 100 {
        return Err(Error::InvalidStatusLine("status code below 100"));
    }
    Ok((
        StatusCode(code),
        String::from_utf8_lossy(reason).into_owned(),
    ))
}

/// Parses a response head from the start of `buf`, as [`crate::parse_request`]
/// does for requests. An absent `Encapsulated` is accepted on any status, since
/// servers leave it off `100 Continue` and some error answers.
pub fn parse_response(buf: &[u8], limits: &Limits) -> Result<Option<(Response, usize)>, Error> {
    let Some(head) = parse_head(buf, limits, Fields::Response, &STATUS_LINE, status_line)? else {
        return Ok(None);
    };
    let (status, reason) = head.start;
    let encapsulated = encapsulated(head.encapsulated, Rules::Response)?;
    let mut response = Response {
        status,
        reason,
        headers: head.headers,
        sections: None,
    };
    let Some(encapsulated) = encapsulated else {
        return Ok(Some((response, head.len)));
    };
    let Some((sections, used)) = read_sections(buf, head.len, &encapsulated, limits)? else {
        return Ok(None);
    };
    response.sections = Some(sections);
    Ok(Some((response, used)))
}

/// Writes a response head: the status line, the ICAP headers, a computed
/// `Encapsulated`, then the HTTP heads. A body, if any, follows as chunks.
pub fn encode_response(res: &Response, out: &mut Vec<u8>) {
    out.extend_from_slice(b"ICAP/1.0 ");
    let code = res.status.0.min(999);
    out.extend_from_slice(&[
        b'0' + (code / 100) as u8,
        b'0' + (code / 10 % 10) as u8,
        b'0' + (code % 10) as u8,
    ]);
    out.push(b' ');
    out.extend_from_slice(res.reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    write_icap_headers(&res.headers, &[], res.sections.as_ref(), out);
}

/// Writes ICAP header fields, `extra` typed ones, `Encapsulated`, the empty
/// line and the encapsulated heads.
pub(crate) fn write_icap_headers(
    headers: &HeaderMap,
    extra: &[(&str, HeaderValue)],
    sections: Option<&Sections>,
    out: &mut Vec<u8>,
) {
    let encapsulated = HeaderName::from_static("encapsulated");
    for (name, value) in headers {
        if *name == encapsulated {
            continue;
        }
        write_field(name.as_str(), value.as_bytes(), out);
    }
    for (name, value) in extra {
        write_field(name, value.as_bytes(), out);
    }
    let mut heads = Vec::new();
    if let Some(sections) = sections {
        let value = sections.encode(&mut heads);
        write_field("Encapsulated", value.as_bytes(), out);
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&heads);
}

fn write_field(name: &str, value: &[u8], out: &mut Vec<u8>) {
    crate::syntax::write_name(name, out);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn dates() {
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(784_111_777)),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        assert_eq!(http_date(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            http_date(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn status_lines() {
        assert_eq!(
            status_line(b"ICAP/1.0 204 No Content").unwrap(),
            (StatusCode::NO_CONTENT, "No Content".into())
        );
        assert_eq!(
            status_line(b"ICAP/1.0 100").unwrap().0,
            StatusCode::CONTINUE
        );
        assert_eq!(
            status_line(b"ICAP/1.0 2000 x"),
            Err(Error::InvalidStatusLine("status code is not three digits"))
        );
        assert_eq!(
            status_line(b"ICAP/1.0 abc x"),
            Err(Error::InvalidStatusLine("expected ICAP/1.0 CODE REASON"))
        );
        assert_eq!(status_line(b"HTTP/1.1 200 OK"), Err(Error::InvalidVersion));
        // Found by fuzzing: "000" is three digits but no status.
        assert_eq!(
            status_line(b"ICAP/1.0 000 OK"),
            Err(Error::InvalidStatusLine("status code below 100"))
        );
    }

    #[test]
    fn options_answer_has_what_squid_needs() {
        let opts = ServiceOptions {
            methods: vec![Method::Respmod, Method::Reqmod],
            service: "virus-scanner".into(),
            istag: "sig-1".into(),
            max_connections: Some(100),
            options_ttl: Some(60),
            allow_204: true,
            allow_206: false,
            preview: Some(1024),
            transfer_preview: Some("*".into()),
            transfer_ignore: None,
            transfer_complete: None,
            date: UNIX_EPOCH,
        };
        let mut out = Vec::new();
        encode_response(&opts.response(), &mut out);
        let text = String::from_utf8(out.clone()).unwrap();
        for want in [
            "ICAP/1.0 200 OK\r\n",
            "Methods: RESPMOD, REQMOD\r\n",
            "ISTag: \"sig-1\"\r\n",
            "Allow: 204\r\n",
            "Preview: 1024\r\n",
            "Transfer-Preview: *\r\n",
            "Options-TTL: 60\r\n",
            "Date: Thu, 01 Jan 1970 00:00:00 GMT\r\n",
            "Encapsulated: null-body=0\r\n\r\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from {text}");
        }
        let (parsed, used) = parse_response(&out, &Limits::DEFAULT).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(parsed, opts.response());
        assert_eq!(parsed.istag(), Some("sig-1"));
    }

    #[test]
    fn an_istag_is_cleaned_and_quoted_once_and_kept_as_made() {
        let long = "A".repeat(40);
        for (given, kept) in [
            ("VS-0123456789abcdef", "VS-0123456789abcdef"),
            ("\"quoted\"", "quoted"),
            ("in\"side and\x07 ctl\\", "insideandctl"),
            (long.as_str(), &long[..32]),
        ] {
            let tag = IsTag::new(given);
            assert_eq!(tag.as_str(), kept, "{given:?}");
            let res = Response::no_content(&tag);
            assert_eq!(res.istag(), Some(kept));
            let mut out = Vec::new();
            encode_response(&res, &mut out);
            let wire = format!("ISTag: \"{kept}\"\r\n");
            assert!(String::from_utf8(out).unwrap().contains(&wire), "{given:?}");
        }
    }
}
