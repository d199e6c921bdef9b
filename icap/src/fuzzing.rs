//! Entry points for the fuzz targets in `fuzz/`, built only with
//! `--cfg fuzzing` (cargo fuzz sets it). Each target is one call into here, so
//! the properties live beside the code they check.
//!
//! Every entry point panics when an invariant breaks: the parser asked for
//! more than its limits, or decode, encode, decode did not agree.

use crate::{
    encode_chunk, encode_last_chunk, encode_request, encode_response, parse_request,
    parse_response, ChunkedDecoder, Error, Event, LastChunk, Limits, Request,
};

/// Limits for parsing again what was encoded: encoding may add a byte per
/// field (`Name: value` where `Name:value` came in), so a head that just fit
/// may grow past the default bounds.
const ROOMY: Limits = Limits {
    max_icap_head: 4 * Limits::DEFAULT.max_icap_head,
    max_http_head: 4 * Limits::DEFAULT.max_http_head,
    ..Limits::DEFAULT
};

/// Limits drawn from one byte, so that the fuzzer also reaches every bound.
fn limits_from(seed: u8) -> Limits {
    if seed < 128 {
        return Limits::DEFAULT;
    }
    let s = usize::from(seed);
    Limits {
        max_icap_head: 64 + s,
        max_http_head: 2 * s,
        max_headers: 1 + s % 16,
        max_chunk_line: 3 + s % 32,
        max_preview: u64::from(seed),
        max_trailers: 2 + s % 64,
    }
}

/// The request and response head parsers on arbitrary bytes.
pub fn head(data: &[u8]) {
    let Some((&seed, data)) = data.split_first() else {
        return;
    };
    let limits = limits_from(seed);
    match parse_request(data, &limits) {
        Ok(None) => assert!(data.len() <= limits.max_message_head()),
        Ok(Some((req, used))) => {
            assert!(used <= data.len());
            let mut out = Vec::new();
            encode_request(&req, &mut out);
            // What was accepted once is accepted again, and means the same.
            match parse_request(&out, &ROOMY) {
                Ok(Some((again, n))) => {
                    assert_eq!(again, req);
                    assert_eq!(n, out.len());
                }
                other => panic!("a parsed request did not parse again after encoding: {other:?}"),
            }
        }
        Err(e) => {
            let _ = e.status();
        }
    }
    match parse_response(data, &limits) {
        Ok(None) => assert!(data.len() <= limits.max_message_head()),
        Ok(Some((res, _))) => {
            let mut out = Vec::new();
            encode_response(&res, &mut out);
            assert_eq!(parse_response(&out, &ROOMY), Ok(Some((res, out.len()))));
        }
        Err(_) => {}
    }
}

/// Decodes `input` fed in the given pieces; returns the data, the ends seen
/// and the error, if any.
fn decode_pieces(limits: Limits, pieces: &[&[u8]]) -> (Vec<u8>, Vec<LastChunk>, Option<Error>) {
    let mut dec = ChunkedDecoder::new(limits);
    let (mut data, mut ends, mut buf) = (Vec::new(), Vec::new(), Vec::new());
    for piece in pieces {
        buf.extend_from_slice(piece);
        loop {
            let step = match dec.decode(&buf) {
                Ok(step) => step,
                Err(e) => return (data, ends, Some(e)),
            };
            let used = step.consumed;
            let more = match step.event {
                Some(Event::Data(d)) => {
                    data.extend_from_slice(d);
                    true
                }
                Some(Event::End(last)) => {
                    ends.push(last);
                    dec.reset();
                    true
                }
                None => false,
            };
            buf.drain(..used);
            if !more {
                break;
            }
        }
        assert!(buf.len() <= limits.max_chunk_line.max(limits.max_trailers));
    }
    (data, ends, None)
}

/// The chunked decoder: fed whole and split in three, it says the same.
pub fn chunked(data: &[u8]) {
    let [seed, a, b, data @ ..] = data else {
        return;
    };
    let limits = limits_from(*seed);
    let whole = decode_pieces(limits, &[data]);
    let i = usize::from(*a).min(data.len());
    let j = (i + usize::from(*b)).min(data.len());
    let split = decode_pieces(limits, &[&data[..i], &data[i..j], &data[j..]]);
    assert_eq!(whole, split);
}

/// A whole message, head and body: decode, encode, decode gives the same.
pub fn round_trip(data: &[u8]) {
    let Some(first) = read_message(data, Limits::DEFAULT) else {
        return;
    };
    let mut out = Vec::new();
    encode_request(&first.0, &mut out);
    for part in &first.1 {
        for piece in part.0.chunks(1000) {
            encode_chunk(piece, &mut out);
        }
        encode_last_chunk(&part.1, &mut out);
    }
    let again = read_message(&out, ROOMY).expect("an encoded message parses");
    assert_eq!(again, first);
}

type Message = (Request, Vec<(Vec<u8>, LastChunk)>);

/// One request and its body: the preview, then (when it ended without
/// `ieof` and more chunks follow) the rest.
fn read_message(data: &[u8], limits: Limits) -> Option<Message> {
    let (req, used) = parse_request(data, &limits).ok()??;
    let mut rest = &data[used..];
    let mut parts = Vec::new();
    if req.has_body() {
        let mut dec = match req.preview {
            Some(p) => ChunkedDecoder::preview(limits, p),
            None => ChunkedDecoder::new(limits),
        };
        loop {
            let mut body = Vec::new();
            let last = loop {
                let step = dec.decode(rest).ok()?;
                rest = &rest[step.consumed..];
                match step.event {
                    Some(Event::Data(d)) => body.extend_from_slice(d),
                    Some(Event::End(last)) => break last,
                    None => return None,
                }
            };
            let go_on = req.preview.is_some() && parts.is_empty() && !last.ieof;
            parts.push((body, last));
            if !(go_on && rest.first().is_some_and(u8::is_ascii_hexdigit)) {
                break;
            }
            dec.reset();
        }
    }
    Some((req, parts))
}
