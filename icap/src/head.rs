//! What requests and responses share: reading the ICAP head, taking the typed
//! headers out of it, and reading the encapsulated HTTP heads that follow.
//!
//! Parsing is done in two passes. The first walks the lines only to find the
//! end of the head, refusing bare LFs and checking the start line as soon as
//! it is complete, so that garbage is answered at once. The second pass, run
//! once the head is complete, builds the header map. Every check is made in
//! the same order whatever part of the message has arrived, so feeding a
//! message in pieces gives the same answer as feeding it whole.

use http::header::{HeaderMap, HeaderName};

use crate::encapsulated::{Encapsulated, Rules, Sections, Section};
use crate::syntax::{decimal, push_header, scan_head, Scan};
use crate::{http_head, Error, Limits};

/// A complete ICAP head: the parsed start line and the header fields.
pub(crate) struct Head<S> {
    pub start: S,
    pub headers: HeaderMap,
    pub len: usize,
}

/// Reads the ICAP head at the start of `buf`.
pub(crate) fn parse_head<S>(
    buf: &[u8],
    limits: &Limits,
    start_line_error: Error,
    parse_start: impl Fn(&[u8]) -> Result<S, Error>,
) -> Result<Option<Head<S>>, Error> {
    let mut start = None;
    let mut first = 0;
    let scan = scan_head(buf, limits.max_icap_head, start_line_error, Error::HeadTooLarge, |i, line| {
        if i == 0 {
            start = Some(parse_start(line)?);
            // Remember where the start line ended (leading empty lines skipped).
            first = line.as_ptr() as usize - buf.as_ptr() as usize + line.len() + 2;
        }
        Ok(())
    })?;
    let (Scan::Complete(len), Some(start)) = (scan, start) else {
        return Ok(None);
    };
    let mut headers = HeaderMap::new();
    let mut pos = first;
    while pos + 2 < len {
        let end = pos + crate::syntax::memchr(b'\n', &buf[pos..len]).unwrap_or(0);
        push_header(&mut headers, &buf[pos..end - 1], limits.max_headers)?;
        pos = end + 1;
    }
    Ok(Some(Head { start, headers, len }))
}

/// Takes `Encapsulated` out of the headers and checks it. `None` when absent.
pub(crate) fn take_encapsulated(
    headers: &mut HeaderMap,
    rules: Rules,
) -> Result<Option<Encapsulated>, Error> {
    let name = HeaderName::from_static("encapsulated");
    let mut values = headers.get_all(&name).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Error::DuplicateEncapsulated);
    }
    let encapsulated = Encapsulated::parse(value.as_bytes(), rules)?;
    headers.remove(&name);
    Ok(Some(encapsulated))
}

/// Takes `Preview` out of the headers: its size, checked against the limit.
pub(crate) fn take_preview(headers: &mut HeaderMap, limits: &Limits) -> Result<Option<u64>, Error> {
    let mut size = None;
    for value in headers.get_all("preview") {
        let n = decimal(value.as_bytes()).ok_or(Error::InvalidPreview)?;
        if size.is_some_and(|s| s != n) {
            return Err(Error::InvalidPreview);
        }
        size = Some(n);
    }
    if size.is_some_and(|n| n > limits.max_preview) {
        return Err(Error::PreviewTooLarge);
    }
    headers.remove("preview");
    Ok(size)
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
