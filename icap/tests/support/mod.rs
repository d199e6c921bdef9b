//! A reader that drives the codec the way a server's read loop does, and
//! records what it saw as a transcript that tests can compare.
//!
//! Input arrives in pieces (whole, split in two, byte by byte); bytes the
//! parser did not use stay in the buffer for the next call, as in a server.

#![allow(dead_code)]

use icap::{
    parse_request, parse_response, ChunkedDecoder, Error, Event, LastChunk, Limits, Request,
    Response,
};

/// One thing the reader saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen<H> {
    /// A message head.
    Head(H),
    /// Body bytes, joined across chunks and reads.
    Data(Vec<u8>),
    /// The end of a chunked stream (a preview's or a body's).
    End(LastChunk),
}

/// Parses heads of type `H` from a byte stream.
pub trait Head: Sized + Clone + PartialEq + std::fmt::Debug {
    fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Self, usize)>, Error>;
    fn has_body(&self) -> bool;
    fn preview(&self) -> Option<u64>;
}

impl Head for Request {
    fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Self, usize)>, Error> {
        parse_request(buf, limits)
    }
    fn has_body(&self) -> bool {
        Request::has_body(self)
    }
    fn preview(&self) -> Option<u64> {
        self.preview
    }
}

impl Head for Response {
    fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Self, usize)>, Error> {
        parse_response(buf, limits)
    }
    fn has_body(&self) -> bool {
        self.sections.as_ref().is_some_and(|s| s.has_body())
    }
    fn preview(&self) -> Option<u64> {
        None
    }
}

enum State {
    Head,
    Body(ChunkedDecoder),
    /// A preview ended without `ieof`: either the rest of the body follows
    /// (after the server's 100 Continue) or the next message does.
    AfterPreview(ChunkedDecoder),
}

/// Feeds `pieces` in order and returns what was seen, or the first error.
/// At the end of input, a message cut short is [`Error::Truncated`].
pub fn read_stream<H: Head>(pieces: &[&[u8]], limits: &Limits) -> Result<Vec<Seen<H>>, Error> {
    let mut seen = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut state = State::Head;
    let mut peak = 0usize;
    for (n, piece) in pieces.iter().enumerate() {
        buf.extend_from_slice(piece);
        let last = n + 1 == pieces.len();
        loop {
            match &mut state {
                State::Head => match H::parse(&buf, limits)? {
                    None => break,
                    Some((head, used)) => {
                        buf.drain(..used);
                        state = match (head.has_body(), head.preview()) {
                            (false, _) => State::Head,
                            (true, Some(p)) => State::Body(ChunkedDecoder::preview(*limits, p)),
                            (true, None) => State::Body(ChunkedDecoder::new(*limits)),
                        };
                        seen.push(Seen::Head(head));
                    }
                },
                State::Body(dec) => {
                    let step = dec.decode(&buf)?;
                    let used = step.consumed;
                    match step.event {
                        Some(Event::Data(d)) => push_data(&mut seen, d),
                        Some(Event::End(end)) => {
                            let more = dec.is_done() && !end.ieof && is_preview(&seen);
                            seen.push(Seen::End(end));
                            let dec = dec.clone();
                            state = if more {
                                State::AfterPreview(dec)
                            } else {
                                State::Head
                            };
                        }
                        None => {
                            buf.drain(..used);
                            break;
                        }
                    }
                    buf.drain(..used);
                }
                State::AfterPreview(dec) => match buf.first() {
                    None => break,
                    Some(b) if b.is_ascii_hexdigit() => {
                        let mut dec = dec.clone();
                        dec.reset();
                        state = State::Body(dec);
                    }
                    Some(_) => state = State::Head,
                },
            }
        }
        peak = peak.max(buf.len());
        if last {
            match state {
                State::Body(_) => return Err(Error::Truncated),
                State::Head if !buf.is_empty() => return Err(Error::Truncated),
                _ => {}
            }
        }
    }
    assert!(
        peak <= limits
            .max_message_head()
            .max(limits.max_chunk_line)
            .max(limits.max_trailers),
        "the reader had to keep {peak} bytes"
    );
    Ok(seen)
}

/// True if the message whose body is being read announced a preview.
fn is_preview<H: Head>(seen: &[Seen<H>]) -> bool {
    let Some(head) = seen.iter().rev().find_map(|s| match s {
        Seen::Head(h) => Some(h),
        _ => None,
    }) else {
        return false;
    };
    // Only the first End after the head can end a preview.
    let ends = seen
        .iter()
        .rev()
        .take_while(|s| !matches!(s, Seen::Head(_)))
        .filter(|s| matches!(s, Seen::End(_)))
        .count();
    head.preview().is_some() && ends == 0
}

fn push_data<H>(seen: &mut Vec<Seen<H>>, d: &[u8]) {
    if let Some(Seen::Data(prev)) = seen.last_mut() {
        prev.extend_from_slice(d);
    } else {
        seen.push(Seen::Data(d.to_vec()));
    }
}

/// The input fed one byte at a time: every byte boundary is a read boundary.
pub fn bytewise(input: &[u8]) -> Vec<&[u8]> {
    input.chunks(1).collect()
}
