//! What requests and responses share: reading the ICAP head, reading its
//! typed fields (`Encapsulated`, `Preview`, `Allow`), and reading the encapsulated HTTP heads that follow.
//!
//! The head is read in one pass over its lines, in order: the start line
//! first (checked even before it is complete, so that garbage is answered at
//! once), then each header field. A head that is not complete yet is read
//! again from its start when more bytes arrive. Every check is made in the
//! same order whatever part of the message has arrived, so feeding a message
//! in pieces gives the same answer as feeding it whole.

use http::header::HeaderMap;

use crate::encapsulated::{Encapsulated, Rules, Section, Sections};
use crate::syntax::{decimal, header_field, push_field, scan_head, Scan, StartLine};
use crate::{http_head, Allow, Error, Limits};

/// A complete ICAP head: the parsed start line, the header fields, and the
/// fields the codec reads itself instead of keeping as headers.
pub(crate) struct Head<'a, S> {
    pub start: S,
    pub headers: HeaderMap,
    pub len: usize,
    /// The `Encapsulated` value, when present.
    pub encapsulated: Option<&'a [u8]>,
    /// `Preview` (requests only).
    pub preview: Option<u64>,
    /// `Allow` (requests only).
    pub allow: Allow,
}

/// Which header fields become typed values rather than entries of the map.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fields {
    /// Only `Encapsulated`: a response's `Preview` and `Allow` are what an
    /// OPTIONS answer tells the client, and stay headers.
    Response,
    /// `Encapsulated`, `Preview` and `Allow`.
    Request,
}

/// Reads the ICAP head at the start of `buf`.
pub(crate) fn parse_head<'a, S>(
    buf: &'a [u8],
    limits: &Limits,
    fields: Fields,
    start_line: &StartLine,
    parse_start: impl Fn(&[u8]) -> Result<S, Error>,
) -> Result<Option<Head<'a, S>>, Error> {
    let mut start = None;
    let mut headers = HeaderMap::new();
    let mut encapsulated: Option<&'a [u8]> = None;
    let mut preview: Option<u64> = None;
    let mut allow = Allow::default();
    let scan = scan_head(
        buf,
        limits.max_icap_head,
        start_line,
        Error::HeadTooLarge,
        |i, line| {
            if i == 0 {
                start = Some(parse_start(line)?);
                return Ok(());
            }
            let (name, value) = header_field(line)?;
            if name.eq_ignore_ascii_case(b"encapsulated") {
                if encapsulated.replace(value).is_some() {
                    return Err(Error::DuplicateEncapsulated);
                }
            } else if fields == Fields::Request && name.eq_ignore_ascii_case(b"preview") {
                let n = decimal(value).ok_or(Error::InvalidPreview)?;
                if preview.replace(n).is_some_and(|p| p != n) {
                    return Err(Error::InvalidPreview);
                }
                if n > limits.max_preview {
                    return Err(Error::PreviewTooLarge);
                }
            } else if fields == Fields::Request && name.eq_ignore_ascii_case(b"allow") {
                allow.add(value);
            } else {
                push_field(&mut headers, name, value, limits.max_headers)?;
            }
            Ok(())
        },
    )?;
    let (Scan::Complete(len), Some(start)) = (scan, start) else {
        return Ok(None);
    };
    Ok(Some(Head {
        start,
        headers,
        len,
        encapsulated,
        preview,
        allow,
    }))
}

/// Checks the `Encapsulated` value, if there was one.
pub(crate) fn encapsulated(
    value: Option<&[u8]>,
    rules: Rules,
) -> Result<Option<Encapsulated>, Error> {
    value.map(|v| Encapsulated::parse(v, rules)).transpose()
}

/// Reads the encapsulated HTTP heads after an ICAP head of `head_len` bytes.
///
/// Returns the sections and the length of the whole message head (ICAP head
/// plus HTTP heads), or `None` while bytes are missing. A head that visibly
/// ends before its next offset is refused without waiting for bytes that
/// will never come.
pub(crate) fn read_sections(
    buf: &[u8],
    head_len: usize,
    encapsulated: &Encapsulated,
    limits: &Limits,
) -> Result<Option<(Sections, usize)>, Error> {
    let heads_len = encapsulated.heads_len();
    if heads_len > limits.max_http_head {
        return Err(Error::HttpHeadTooLarge);
    }
    let available = &buf[head_len..];
    if available.len() >= heads_len {
        let sections = encapsulated.parse_sections(&available[..heads_len], limits)?;
        return Ok(Some((sections, head_len + heads_len)));
    }
    for pair in encapsulated.entries().windows(2) {
        let [(section, start), (_, end)] = [pair[0], pair[1]];
        if available.len() >= end {
            parse_one(section, &available[start..end], limits)?;
            continue;
        }
        let partial = &available[start.min(available.len())..];
        if http_head::head_end(section == Section::ReqHdr, partial, limits)?.is_some() {
            // The HTTP head is complete, yet its section goes on past the
            // bytes that have arrived: the offset is past the data.
            return Err(Error::EncapsulatedOffsetMismatch);
        }
        break;
    }
    Ok(None)
}

fn parse_one(section: Section, bytes: &[u8], limits: &Limits) -> Result<(), Error> {
    match section {
        Section::ReqHdr => http_head::parse_request_head(bytes, limits).map(drop),
        _ => http_head::parse_response_head(bytes, limits).map(drop),
    }
}
