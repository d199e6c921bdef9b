//! The grammar shared by every head: CRLF lines, tokens, header fields.
//!
//! These are the small nom parsers the request, response, chunked and
//! `Encapsulated` parsers are built from. They work on complete lines: finding
//! where a line ends, and deciding whether more bytes are needed, is the job
//! of [`scan_head`], which keeps that decision consistent however the input
//! is split.

use http::header::{HeaderMap, HeaderName, HeaderValue};
use nom::bytes::complete::{take_while, take_while1};
use nom::character::complete::char;
use nom::combinator::rest;
use nom::{IResult, Parser};

use crate::Error;

/// RFC 7230 `tchar`: the characters of a token (method, header name, extension name).
pub(crate) fn is_tchar(b: u8) -> bool {
    matches!(b,
        b'!' | b'#' | b'$' | b'%' | b'&' | b'\'' | b'*' | b'+' | b'-' | b'.' |
        b'^' | b'_' | b'`' | b'|' | b'~' | b'0'..=b'9' | b'a'..=b'z' | b'A'..=b'Z')
}

/// A byte allowed inside a field value: visible ASCII, space, tab and obs-text.
pub(crate) fn is_field_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80
}

pub(crate) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// Removes optional whitespace at both ends.
pub(crate) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [first, tail @ ..] = s {
        if !is_ows(*first) {
            break;
        }
        s = tail;
    }
    while let [head @ .., last] = s {
        if !is_ows(*last) {
            break;
        }
        s = head;
    }
    s
}

/// `token`, as nom parser.
pub(crate) fn token<'a, E: nom::error::ParseError<&'a [u8]>>(
    i: &'a [u8],
) -> IResult<&'a [u8], &'a [u8], E> {
    take_while1(is_tchar).parse(i)
}

/// Splits one header line (without its CRLF) into name and trimmed value.
/// The value's characters are checked when it becomes a `HeaderValue`.
pub(crate) fn header_field(line: &[u8]) -> Result<(&[u8], &[u8]), Error> {
    if line.first().is_some_and(|b| is_ows(*b)) {
        return Err(Error::ObsoleteLineFolding);
    }
    let parsed: IResult<&[u8], _> = (token, char(':'), take_while(is_ows), rest).parse(line);
    match parsed {
        Ok((_, (name, _, _, value))) => Ok((name, trim_ows(value))),
        // Tell "no name or no colon at all" from "a name with a bad character".
        Err(_) => match line.iter().position(|b| *b == b':') {
            None | Some(0) => Err(Error::InvalidHeaderLine),
            Some(_) => Err(Error::InvalidHeaderName),
        },
    }
}

/// Adds one header line to `headers`, counting against `max`.
pub(crate) fn push_header(headers: &mut HeaderMap, line: &[u8], max: usize) -> Result<(), Error> {
    let (name, value) = header_field(line)?;
    push_field(headers, name, value, max)
}

/// Adds one header field to `headers`, counting against `max`.
pub(crate) fn push_field(
    headers: &mut HeaderMap,
    name: &[u8],
    value: &[u8],
    max: usize,
) -> Result<(), Error> {
    if headers.len() >= max {
        return Err(Error::TooManyHeaders);
    }
    let name = HeaderName::from_bytes(name).map_err(|_| Error::InvalidHeaderName)?;
    let value = HeaderValue::from_bytes(value).map_err(|_| Error::InvalidHeaderValue)?;
    headers.append(name, value);
    Ok(())
}

/// What may stand in a head's first line, and the errors for a first line
/// that breaks the rules.
pub(crate) struct StartLine {
    /// Said when the first line does not end within the limit.
    pub too_long: Error,
    /// Whether a byte may appear in the first line.
    pub byte_ok: fn(u8) -> bool,
    /// Said for a byte that may not: at once, even before the line is
    /// complete, so that binary junk is answered without waiting.
    pub bad_byte: Error,
}

/// What [`scan_head`] found.
pub(crate) enum Scan {
    /// The head ends here: the byte count includes the empty line.
    Complete(usize),
    /// The head is not complete yet, and fits the limit so far.
    Partial,
}

/// Walks the CRLF-terminated lines of a head, up to and including the empty
/// line that ends it, calling `on_line` for each non-empty line in order.
///
/// Empty lines before the first line are skipped (RFC 7230 section 3.5). Only
/// the first `limit` bytes are looked at, so the answer for a prefix of some
/// input is always consistent with the answer for the whole: the same lines
/// are checked in the same order, and "too large" is only said once `limit`
/// bytes have arrived without an end.
pub(crate) fn scan_head<'b>(
    buf: &'b [u8],
    limit: usize,
    start: &StartLine,
    too_large: Error,
    mut on_line: impl FnMut(usize, &'b [u8]) -> Result<(), Error>,
) -> Result<Scan, Error> {
    let window = &buf[..buf.len().min(limit)];
    let mut pos = 0;
    let mut index = 0;
    let check_start = |line: &[u8]| {
        if line.iter().all(|b| (start.byte_ok)(*b)) {
            Ok(())
        } else {
            Err(start.bad_byte)
        }
    };
    loop {
        let Some(lf) = memchr(b'\n', &window[pos..]) else {
            if index == 0 {
                let partial = &window[pos..];
                check_start(partial.strip_suffix(b"\r").unwrap_or(partial))?;
            }
            if buf.len() <= limit {
                return Ok(Scan::Partial);
            }
            return Err(if index == 0 {
                start.too_long
            } else {
                too_large
            });
        };
        let end = pos + lf;
        if end == 0 || window[end - 1] != b'\r' {
            return Err(Error::BareLineFeed);
        }
        let line = &window[pos..end - 1];
        pos = end + 1;
        if line.is_empty() {
            if index == 0 {
                continue;
            }
            return Ok(Scan::Complete(pos));
        }
        if index == 0 {
            check_start(line)?;
        }
        on_line(index, line)?;
        index += 1;
    }
}

/// The position of `needle` in `haystack`.
pub(crate) fn memchr(needle: u8, haystack: &[u8]) -> Option<usize> {
    haystack.iter().position(|b| *b == needle)
}

/// Parses a decimal number without sign or whitespace, refusing overflow.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, b| {
        let d = (*b as char).to_digit(10)?;
        n.checked_mul(10)?.checked_add(d as u64)
    })
}

/// Writes a header name in its usual spelling (`ISTag`, `Content-Type`)
/// rather than the lower case that [`HeaderMap`] keeps: names are
/// case-insensitive, but not every peer's parser remembers that.
pub(crate) fn write_name(name: &str, out: &mut Vec<u8>) {
    const SPECIAL: &[(&str, &str)] = &[
        ("istag", "ISTag"),
        ("options-ttl", "Options-TTL"),
        ("x-client-ip", "X-Client-IP"),
        ("x-server-ip", "X-Server-IP"),
        ("x-virus-id", "X-Virus-ID"),
        ("www-authenticate", "WWW-Authenticate"),
        ("etag", "ETag"),
        ("te", "TE"),
    ];
    if let Some((_, spelled)) = SPECIAL.iter().find(|(lower, _)| *lower == name) {
        out.extend_from_slice(spelled.as_bytes());
        return;
    }
    let mut upper = true;
    for b in name.bytes() {
        out.push(if upper { b.to_ascii_uppercase() } else { b });
        upper = b == b'-';
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_field_splits_and_trims() {
        assert_eq!(
            header_field(b"Host:  a b \t"),
            Ok((&b"Host"[..], &b"a b"[..]))
        );
        assert_eq!(header_field(b"Empty:"), Ok((&b"Empty"[..], &b""[..])));
    }

    #[test]
    fn header_field_errors() {
        assert_eq!(header_field(b" folded"), Err(Error::ObsoleteLineFolding));
        assert_eq!(header_field(b"no colon"), Err(Error::InvalidHeaderLine));
        assert_eq!(header_field(b": value"), Err(Error::InvalidHeaderLine));
        assert_eq!(header_field(b"Bad Name: x"), Err(Error::InvalidHeaderName));
    }

    #[test]
    fn names_are_spelled_as_usual() {
        for (lower, want) in [
            ("istag", "ISTag"),
            ("content-type", "Content-Type"),
            ("x-a-b", "X-A-B"),
        ] {
            let mut out = Vec::new();
            write_name(lower, &mut out);
            assert_eq!(out, want.as_bytes());
        }
    }

    #[test]
    fn decimal_refuses_overflow_and_junk() {
        assert_eq!(decimal(b"18446744073709551615"), Some(u64::MAX));
        assert_eq!(decimal(b"18446744073709551616"), None);
        assert_eq!(decimal(b"12a"), None);
        assert_eq!(decimal(b""), None);
    }
}
