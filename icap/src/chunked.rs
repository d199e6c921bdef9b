//! Chunked bodies (RFC 7230 section 4.1) as ICAP uses them.
//!
//! Every ICAP body is chunked. ICAP adds meaning to the last chunk's
//! extensions: `0; ieof` ends a preview that already holds the whole body,
//! plain `0` ends a preview (or a body), and `0; use-original-body=N` in a 206
//! answer tells the client to send the rest of its own copy from offset N.
//!
//! [`ChunkedDecoder`] is an explicit state machine. It hands out slices of its
//! input, copies nothing, and keeps no input of its own: a caller keeps the
//! bytes it did not consume, and the decoder says "too long" before those could
//! grow past [`Limits`].

use http::header::HeaderMap;
use nom::bytes::complete::{tag, take_while, take_while1};
use nom::character::complete::char;
use nom::combinator::opt;
use nom::multi::many0;
use nom::sequence::preceded;
use nom::{IResult, Parser};

use crate::syntax::{decimal, is_field_byte, is_ows, memchr, push_header, token};
use crate::{Error, Limits};

/// How a chunked body ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LastChunk {
    /// `ieof`: the preview holds the whole body; nothing more will be sent.
    pub ieof: bool,
    /// `use-original-body=N` (in a 206 answer): the rest of the body is the
    /// client's own copy, from offset N.
    pub use_original_body: Option<u64>,
    /// Trailer fields after the last chunk (only when `Allow: trailers`).
    pub trailers: HeaderMap,
}

/// What one call to [`ChunkedDecoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// Body bytes: a slice of the input.
    Data(&'a [u8]),
    /// The last chunk and the trailers: this body is complete.
    End(LastChunk),
}

/// The result of one call to [`ChunkedDecoder::decode`].
#[derive(Debug, PartialEq, Eq)]
pub struct Step<'a> {
    /// Input bytes used; the caller drops them before the next call.
    pub consumed: usize,
    /// `None` when more input is needed to go on.
    pub event: Option<Event<'a>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Expecting a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes still to come.
    Data(u64),
    /// Expecting the CRLF after a chunk's data.
    DataEnd,
    /// After the last chunk's size line: trailer fields up to an empty line.
    Trailers {
        ieof: bool,
        use_original_body: Option<u64>,
    },
    /// The body ended; [`ChunkedDecoder::reset`] starts another.
    Done,
}

/// An incremental decoder for one chunked body.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    limits: Limits,
    /// For a preview: how many more data bytes the `Preview` header allows.
    preview_left: Option<u64>,
    /// Data bytes decoded so far.
    total: u64,
}

impl ChunkedDecoder {
    /// A decoder for a whole body.
    pub fn new(limits: Limits) -> Self {
        ChunkedDecoder {
            state: State::Size,
            limits,
            preview_left: None,
            total: 0,
        }
    }

    /// A decoder for a preview of at most `size` bytes: more data than that is
    /// [`Error::PreviewExceeded`].
    pub fn preview(limits: Limits, size: u64) -> Self {
        ChunkedDecoder {
            preview_left: Some(size),
            ..ChunkedDecoder::new(limits)
        }
    }

    /// Starts on the next chunked stream: after a preview ended with `0` and
    /// the server answered `100 Continue`, the rest of the body follows as
    /// chunks of their own. The byte count goes on.
    pub fn reset(&mut self) {
        self.state = State::Size;
        self.preview_left = None;
    }

    /// True once the last chunk and the trailers have been decoded.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Data bytes decoded so far, across [`reset`](Self::reset)s.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Call when the input has ended: an unfinished body is [`Error::Truncated`].
    pub fn finish(&self) -> Result<(), Error> {
        if self.is_done() {
            Ok(())
        } else {
            Err(Error::Truncated)
        }
    }

    /// Decodes from `input` until it has an event, or needs more bytes.
    ///
    /// `consumed` may be non-zero with no event (a size line was read); the
    /// event is `None` only when the rest of `input` is not enough to go on.
    pub fn decode<'a>(&mut self, input: &'a [u8]) -> Result<Step<'a>, Error> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                State::Done => {
                    return Ok(Step {
                        consumed: pos,
                        event: None,
                    })
                }
                State::Size => {
                    let Some((line, used)) = self.line(rest, self.limits.max_chunk_line)? else {
                        return Ok(Step {
                            consumed: pos,
                            event: None,
                        });
                    };
                    let (size, ext) = chunk_line(line)?;
                    pos += used;
                    if size == 0 {
                        self.state = State::Trailers {
                            ieof: ext.ieof,
                            use_original_body: ext.use_original_body,
                        };
                        continue;
                    }
                    if ext.ieof {
                        return Err(Error::InvalidChunkExtension);
                    }
                    if let Some(left) = self.preview_left.as_mut() {
                        *left = left.checked_sub(size).ok_or(Error::PreviewExceeded)?;
                    }
                    self.state = State::Data(size);
                }
                State::Data(left) => {
                    if rest.is_empty() {
                        return Ok(Step {
                            consumed: pos,
                            event: None,
                        });
                    }
                    let n = rest.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let left = left - n as u64;
                    self.total += n as u64;
                    self.state = if left == 0 {
                        State::DataEnd
                    } else {
                        State::Data(left)
                    };
                    return Ok(Step {
                        consumed: pos + n,
                        event: Some(Event::Data(&rest[..n])),
                    });
                }
                State::DataEnd => match rest {
                    [b'\r', b'\n', ..] => {
                        pos += 2;
                        self.state = State::Size;
                    }
                    [] | [b'\r'] => {
                        return Ok(Step {
                            consumed: pos,
                            event: None,
                        })
                    }
                    _ => return Err(Error::MissingChunkCrlf),
                },
                State::Trailers {
                    ieof,
                    use_original_body,
                } => {
                    let mut trailers = HeaderMap::new();
                    let max = self.limits.max_headers;
                    let scan = trailer_section(rest, self.limits.max_trailers, |line| {
                        push_header(&mut trailers, line, max).map_err(|_| Error::InvalidTrailer)
                    })?;
                    let Some(used) = scan else {
                        return Ok(Step {
                            consumed: pos,
                            event: None,
                        });
                    };
                    self.state = State::Done;
                    let last = LastChunk {
                        ieof,
                        use_original_body,
                        trailers,
                    };
                    return Ok(Step {
                        consumed: pos + used,
                        event: Some(Event::End(last)),
                    });
                }
            }
        }
    }

    /// One CRLF line of at most `limit` bytes, CRLF included.
    fn line<'a>(&self, input: &'a [u8], limit: usize) -> Result<Option<(&'a [u8], usize)>, Error> {
        let window = &input[..input.len().min(limit)];
        match memchr(b'\n', window) {
            Some(lf) if lf > 0 && window[lf - 1] == b'\r' => Ok(Some((&window[..lf - 1], lf + 1))),
            Some(_) => Err(Error::BareLineFeed),
            None if input.len() >= limit => Err(Error::ChunkLineTooLong),
            None => Ok(None),
        }
    }
}

/// Trailer lines up to the empty line; `Ok(None)` while incomplete.
fn trailer_section(
    input: &[u8],
    limit: usize,
    mut on_line: impl FnMut(&[u8]) -> Result<(), Error>,
) -> Result<Option<usize>, Error> {
    let window = &input[..input.len().min(limit)];
    let mut pos = 0;
    // Find the end first, so that a partial section is not parsed twice over.
    let end = loop {
        match memchr(b'\n', &window[pos..]) {
            Some(lf) => {
                let at = pos + lf;
                if at == 0 || window[at - 1] != b'\r' {
                    return Err(Error::BareLineFeed);
                }
                if at == pos + 1 {
                    break at + 1;
                }
                pos = at + 1;
            }
            None if input.len() >= limit => return Err(Error::TrailerTooLarge),
            None => return Ok(None),
        }
    };
    let mut pos = 0;
    while pos + 2 < end {
        let lf = pos + memchr(b'\n', &window[pos..end]).unwrap_or(0);
        on_line(&window[pos..lf - 1])?;
        pos = lf + 1;
    }
    Ok(Some(end))
}

/// The ICAP meaning of a chunk's extensions.
#[derive(Debug, Default)]
struct Extensions {
    ieof: bool,
    use_original_body: Option<u64>,
}

/// `chunk-size *( BWS ";" BWS ext-name [ BWS "=" BWS ext-value ] )`
fn chunk_line(line: &[u8]) -> Result<(u64, Extensions), Error> {
    let (rest, digits) = take_while1::<_, _, ()>(|b: u8| b.is_ascii_hexdigit())
        .parse(line)
        .map_err(|_| Error::InvalidChunkSize)?;
    let digits = trim_zeros(digits);
    if digits.len() > 16 {
        return Err(Error::ChunkSizeOverflow);
    }
    let size = digits.iter().fold(0u64, |n, b| {
        n << 4 | (*b as char).to_digit(16).unwrap_or(0) as u64
    });
    // "1x": a size that goes on with something other than hex digits.
    if rest.first().is_some_and(|b| b.is_ascii_alphanumeric()) {
        return Err(Error::InvalidChunkSize);
    }
    let (rest, exts) = many0(extension)
        .parse(rest)
        .map_err(|_| Error::InvalidChunkExtension)?;
    if !rest.iter().all(|b| is_ows(*b)) {
        return Err(Error::InvalidChunkExtension);
    }
    let mut ext = Extensions::default();
    for (name, value) in exts {
        if name.eq_ignore_ascii_case(b"ieof") {
            ext.ieof = true;
        } else if name.eq_ignore_ascii_case(b"use-original-body") {
            let value = value.map(unquote).ok_or(Error::InvalidUseOriginalBody)?;
            ext.use_original_body = Some(decimal(value).ok_or(Error::InvalidUseOriginalBody)?);
        }
    }
    Ok((size, ext))
}

fn trim_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|b| **b == b'0').count();
    &digits[zeros.min(digits.len() - 1)..]
}

fn unquote(v: &[u8]) -> &[u8] {
    match v {
        [b'"', inner @ .., b'"'] => inner,
        _ => v,
    }
}

type ExtPair<'a> = (&'a [u8], Option<&'a [u8]>);

fn extension(i: &[u8]) -> IResult<&[u8], ExtPair<'_>, ()> {
    let ows = || take_while(is_ows);
    let value = preceded((ows(), char('='), ows()), ext_value);
    preceded((ows(), char(';'), ows()), (token, opt(value))).parse(i)
}

fn ext_value(i: &[u8]) -> IResult<&[u8], &[u8], ()> {
    let quoted = (
        tag("\""),
        take_while(|b: u8| b != b'"' && b != b'\\' && is_field_byte(b)),
        tag("\""),
    );
    nom::branch::alt((quoted.map(|(_, v, _): (&[u8], &[u8], &[u8])| v), token)).parse(i)
}

/// Writes one data chunk. An empty `data` writes nothing: a zero-size chunk
/// would end the body.
pub fn encode_chunk(data: &[u8], out: &mut Vec<u8>) {
    if data.is_empty() {
        return;
    }
    write_hex(data.len() as u64, out);
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Writes the last chunk, its ICAP extensions and the trailers.
pub fn encode_last_chunk(last: &LastChunk, out: &mut Vec<u8>) {
    out.push(b'0');
    if last.ieof {
        out.extend_from_slice(b"; ieof");
    }
    if let Some(offset) = last.use_original_body {
        out.extend_from_slice(b"; use-original-body=");
        out.extend_from_slice(offset.to_string().as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    crate::http_head::write_headers(&last.trailers, out);
}

fn write_hex(mut n: u64, out: &mut Vec<u8>) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

impl<'a> Step<'a> {
    /// The data slice, if this step produced one.
    pub fn data(&self) -> Option<&'a [u8]> {
        match self.event {
            Some(Event::Data(d)) => Some(d),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in one piece and collects data and the end.
    fn decode_all(
        dec: &mut ChunkedDecoder,
        input: &[u8],
    ) -> Result<(Vec<u8>, Option<LastChunk>, usize), Error> {
        let mut pos = 0;
        let mut data = Vec::new();
        loop {
            let step = dec.decode(&input[pos..])?;
            pos += step.consumed;
            match step.event {
                Some(Event::Data(d)) => data.extend_from_slice(d),
                Some(Event::End(last)) => return Ok((data, Some(last), pos)),
                None => return Ok((data, None, pos)),
            }
        }
    }

    #[test]
    fn decodes_preview_ends() {
        let mut dec = ChunkedDecoder::preview(Limits::DEFAULT, 4);
        let (data, last, used) = decode_all(&mut dec, b"4\r\nabcd\r\n0; ieof\r\n\r\nNEXT").unwrap();
        assert_eq!(data, b"abcd");
        assert!(last.unwrap().ieof);
        assert_eq!(used, 20);

        let mut dec = ChunkedDecoder::preview(Limits::DEFAULT, 4);
        let (_, last, _) = decode_all(&mut dec, b"4\r\nabcd\r\n0\r\n\r\n").unwrap();
        assert!(!last.unwrap().ieof);
        dec.reset();
        let (data, last, _) = decode_all(&mut dec, b"2\r\nef\r\n0\r\n\r\n").unwrap();
        assert_eq!(data, b"ef");
        assert!(last.is_some());
        assert_eq!(dec.total(), 6);
    }

    #[test]
    fn keeps_use_original_body_and_trailers() {
        let mut dec = ChunkedDecoder::new(Limits::DEFAULT);
        let (_, last, _) = decode_all(
            &mut dec,
            b"0; use-original-body=512\r\nX-Infection: yes\r\n\r\n",
        )
        .unwrap();
        let last = last.unwrap();
        assert_eq!(last.use_original_body, Some(512));
        assert_eq!(last.trailers["x-infection"], "yes");
    }

    #[test]
    fn errors() {
        let cases: &[(&[u8], Error)] = &[
            (b"zz\r\n", Error::InvalidChunkSize),
            (b"\r\n", Error::InvalidChunkSize),
            (b"1x\r\n", Error::InvalidChunkSize),
            (b"11112222333344445\r\n", Error::ChunkSizeOverflow),
            (b"3\r\nabcX", Error::MissingChunkCrlf),
            (b"3\nabc", Error::BareLineFeed),
            (b"3;\r\nabc", Error::InvalidChunkExtension),
            (b"3; ieof\r\nabc\r\n", Error::InvalidChunkExtension),
            (
                b"0; use-original-body=x\r\n\r\n",
                Error::InvalidUseOriginalBody,
            ),
            (
                b"0; use-original-body\r\n\r\n",
                Error::InvalidUseOriginalBody,
            ),
            (b"0\r\nbad trailer\r\n\r\n", Error::InvalidTrailer),
        ];
        for (input, want) in cases {
            let mut dec = ChunkedDecoder::new(Limits::DEFAULT);
            assert_eq!(
                decode_all(&mut dec, input).map(|_| ()),
                Err(*want),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn limits_hold() {
        let limits = Limits {
            max_chunk_line: 8,
            max_trailers: 16,
            ..Limits::DEFAULT
        };
        let mut dec = ChunkedDecoder::new(limits);
        assert_eq!(dec.decode(b"1; a=bcdefgh"), Err(Error::ChunkLineTooLong));
        let mut dec = ChunkedDecoder::new(limits);
        assert_eq!(
            decode_all(&mut dec, b"0\r\nX-Long: 0123456789").map(|_| ()),
            Err(Error::TrailerTooLarge)
        );
        let mut dec = ChunkedDecoder::preview(limits, 3);
        assert_eq!(dec.decode(b"4\r\nabcd\r\n"), Err(Error::PreviewExceeded));
    }

    #[test]
    fn encodes_what_it_decodes() {
        let mut out = Vec::new();
        encode_chunk(b"hello", &mut out);
        encode_chunk(b"", &mut out);
        encode_chunk(&[7u8; 300], &mut out);
        encode_last_chunk(
            &LastChunk {
                ieof: true,
                ..LastChunk::default()
            },
            &mut out,
        );
        assert!(out.starts_with(b"5\r\nhello\r\n12c\r\n"));
        let mut dec = ChunkedDecoder::new(Limits::DEFAULT);
        let (data, last, used) = decode_all(&mut dec, &out).unwrap();
        assert_eq!(data.len(), 305);
        assert!(last.unwrap().ieof);
        assert_eq!(used, out.len());
        assert!(dec.finish().is_ok());
        assert_eq!(
            ChunkedDecoder::new(Limits::DEFAULT).finish(),
            Err(Error::Truncated)
        );
    }
}
