//! Entry points for the fuzz targets in `fuzz/` (feature `fuzzing`): the
//! parsers a scan runs over a body's bytes, driven as a scan drives them,
//! without clamd.
//!
//! Each takes the fuzzer's bytes as a body, cut into pieces whose sizes
//! come from its first eight bytes, and checks what must hold whatever the
//! bytes: nothing panics, what is handed out is well formed, and the
//! pieces never change whether something is found.

use crate::{ar, decode, form, zip_watch};

/// Splits `input` into a seed for the piece sizes and the body.
fn seeded(input: &[u8]) -> (u64, &[u8]) {
    let (seed, body) = input.split_at(input.len().min(8));
    let mut bytes = [0; 8];
    bytes[..seed.len()].copy_from_slice(seed);
    // xorshift never leaves zero.
    (u64::from_le_bytes(bytes) | 1, body)
}

/// The body in pieces of 1 to 4,096 bytes, their sizes drawn from `seed`.
fn pieces(mut seed: u64, body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = body;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        // Mostly small pieces, where records are cut, sometimes large ones.
        let most = if seed & 0x100 == 0 { 16 } else { 4096 };
        let n = (((seed >> 16) % most) as usize + 1).min(rest.len());
        out.push(&rest[..n]);
        rest = &rest[n..];
    }
    out
}

/// The files the watch handed out, checked to be well formed: each starts,
/// has its data, and ends, one at a time.
fn files(
    events: Vec<zip_watch::Handed>,
    open: &mut Option<Vec<u8>>,
    out: &mut Vec<(Vec<u8>, bool)>,
) {
    for event in events {
        match event {
            zip_watch::Handed::Start => {
                assert!(open.is_none(), "a file starts inside another");
                *open = Some(Vec::new());
            }
            zip_watch::Handed::Data(data) => {
                assert!(!data.is_empty(), "empty data handed out");
                open.as_mut().expect("data outside a file").extend(data);
            }
            zip_watch::Handed::End { whole } => {
                out.push((open.take().expect("an end outside a file"), whole));
            }
        }
    }
}

/// What the body's watch finds and hands out, fed in `pieces`.
fn watched(pieces: &[&[u8]]) -> (Option<zip_watch::Unopened>, Vec<(Vec<u8>, bool)>) {
    let mut watch = zip_watch::ZipWatch::of_scan(zip_watch::TakenApart::BODY, None);
    let mut open = None;
    let mut handed = Vec::new();
    for piece in pieces {
        watch.observe(piece);
        files(watch.take_extracted(), &mut open, &mut handed);
    }
    watch.end();
    files(watch.take_extracted(), &mut open, &mut handed);
    assert!(open.is_none(), "a file handed out never ends");
    (watch.found(), handed)
}

/// The zip watch, with everything it walks (zip, tar, cpio, ISO 9660, ar,
/// gzip, xz, bzip2, zstd): whether it finds something, and while it does
/// not, what it hands out, are the same in random pieces as whole.
pub fn watch(input: &[u8]) {
    let (seed, body) = seeded(input);
    let whole = watched(&[body]);
    let cut = watched(&pieces(seed, body));
    // Whatever is found, the verdict is the same (not clean); which of two
    // things is found first may depend on where the pieces fall. So may
    // reaching the limit of entries open at once, whose count at a moment
    // counts those inside entries, unpacked as far as the pieces let the
    // inflater go: on one side, the limit; on the other, the whole watched.
    let limit = |f: Option<zip_watch::Unopened>| f == Some(zip_watch::Unopened::Overlapping);
    if limit(whole.0) || limit(cut.0) {
        return;
    }
    assert_eq!(
        whole.0.is_some(),
        cut.0.is_some(),
        "the pieces changed whether something was found: {whole:?} against {cut:?}",
        whole = whole.0,
        cut = cut.0
    );
    // Once something is found, the body is not called clean whatever the
    // files handed out come to; the watch stops where it found it, which
    // may be before or after a file began, as the pieces fall.
    if whole.0.is_none() {
        let sizes = |files: &[(Vec<u8>, bool)]| -> Vec<(usize, bool)> {
            files
                .iter()
                .map(|(bytes, whole)| (bytes.len(), *whole))
                .collect()
        };
        assert!(
            whole.1 == cut.1,
            "the pieces changed what was handed out: {:?} against {:?}",
            sizes(&whole.1),
            sizes(&cut.1)
        );
    }
}

/// A splitter's or a parser's events with adjacent bytes of one kind
/// together, as the scans they go to see them.
#[derive(PartialEq, Eq)]
enum Split {
    Rest(Vec<u8>),
    Start,
    Data(Vec<u8>),
    End,
}

impl std::fmt::Debug for Split {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Split::Rest(b) => write!(f, "Rest({} bytes)", b.len()),
            Split::Start => write!(f, "Start"),
            Split::Data(b) => write!(f, "Data({} bytes)", b.len()),
            Split::End => write!(f, "End"),
        }
    }
}

fn merged(events: impl IntoIterator<Item = Split>) -> Vec<Split> {
    let mut out: Vec<Split> = Vec::new();
    for event in events {
        match (out.last_mut(), event) {
            (_, Split::Rest(b) | Split::Data(b)) if b.is_empty() => {}
            (Some(Split::Rest(a)), Split::Rest(b)) | (Some(Split::Data(a)), Split::Data(b)) => {
                a.extend(b)
            }
            (_, event) => out.push(event),
        }
    }
    out
}

/// Checks split events: members (parts) one at a time, data only inside
/// one, and every byte of the body in them or in the rest, in order.
fn check_split(events: &[Split], body: &[u8]) {
    let mut open = false;
    let mut bytes = Vec::new();
    for event in events {
        match event {
            Split::Start => {
                assert!(!open, "a member starts inside another");
                open = true;
            }
            Split::Data(data) => {
                assert!(open, "data outside a member");
                bytes.extend_from_slice(data);
            }
            Split::End => {
                assert!(open, "an end outside a member");
                open = false;
            }
            Split::Rest(data) => bytes.extend_from_slice(data),
        }
    }
    assert!(!open, "a member never ends");
    assert!(bytes == body, "the split lost, added or moved bytes");
}

/// The ar splitter's events, with the bytes it left to the caller as rest
/// where it left them: the scan sends both to the same place, and which of
/// the two a byte is depends on the pieces (the first bytes of a magic that
/// turns out not to be one are rest when a piece ended inside them, and
/// left to the caller when not).
fn ar_split(pieces: &[&[u8]]) -> Vec<Split> {
    let mut splitter = ar::Splitter::default();
    let mut events = Vec::new();
    let mut left = false;
    for piece in pieces {
        let taken = splitter.feed(piece, &mut events);
        assert!(taken <= piece.len());
        assert!(
            !left || taken == 0,
            "the splitter took bytes after leaving some"
        );
        if taken < piece.len() {
            left = true;
            events.push(ar::Event::Rest(piece[taken..].to_vec()));
        }
    }
    splitter.finish(&mut events);
    let events = events.into_iter().map(|e| match e {
        ar::Event::Rest(b) => Split::Rest(b),
        ar::Event::Start => Split::Start,
        ar::Event::Data(b) => Split::Data(b),
        ar::Event::End => Split::End,
    });
    merged(events)
}

/// The ar splitter, rpm packages included: every byte goes to a member or
/// to the rest, members come one at a time, and the pieces change nothing.
pub fn ar(input: &[u8]) {
    let (seed, body) = seeded(input);
    let whole = ar_split(&[body]);
    check_split(&whole, body);
    let cut = ar_split(&pieces(seed, body));
    check_split(&cut, body);
    assert_eq!(whole, cut, "the pieces changed the split");
}

/// The form parser's events.
fn form_split(boundary: &str, pieces: &[&[u8]]) -> Vec<Split> {
    let mut parser = form::FormParser::new(boundary);
    let mut events = Vec::new();
    for piece in pieces {
        parser.feed(piece, &mut events);
    }
    parser.finish(&mut events);
    let _ = parser.ambiguous();
    merged(events.into_iter().map(|e| match e {
        form::Event::Rest(b) => Split::Rest(b),
        form::Event::Start => Split::Start,
        form::Event::Data(b) => Split::Data(b),
        form::Event::End => Split::End,
    }))
}

/// The form parser, with a boundary from the body's first line: every
/// byte goes to a part or to the rest, and the pieces change nothing.
pub fn form(input: &[u8]) {
    let (seed, body) = seeded(input);
    let line = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let boundary = String::from_utf8_lossy(&body[..line]);
    let body = body.get(line + 1..).unwrap_or_default();
    let whole = form_split(&boundary, &[body]);
    check_split(&whole, body);
    let cut = form_split(&boundary, &pieces(seed, body));
    assert_eq!(whole, cut, "the pieces changed the split");
}

/// What a decoder gives of `pieces` before an error or the cap, and
/// whether an error came (`None` when the cap was reached first).
fn decoded(coding: &str, pieces: &[&[u8]]) -> Option<(Vec<u8>, bool)> {
    let decode::Plan::Decode(mut decoder) = decode::plan(coding) else {
        return Some((Vec::new(), false));
    };
    // A bomb stops the fuzzer no sooner than the scan limit would.
    const CAP: usize = 16 << 20;
    let mut out = Vec::new();
    for piece in pieces {
        let mut piece = *piece;
        loop {
            match decoder.decode(&mut piece) {
                Ok([]) => break,
                Ok(bytes) => {
                    assert!(bytes.len() <= decode::PIECE);
                    out.extend_from_slice(bytes);
                    if out.len() > CAP {
                        return None;
                    }
                }
                Err(_) => return Some((out, true)),
            }
        }
    }
    let failed = decoder.finish().is_err();
    Some((out, failed))
}

/// Content-Encoding decoding, with the codings named on the body's first
/// line: every call returns within its piece size, and the pieces change
/// neither what comes out nor whether the body decodes (after a brotli
/// error, what came out one way begins what came out the other).
pub fn decode(input: &[u8]) {
    let (seed, body) = seeded(input);
    let line = body.iter().position(|&b| b == b'\n').unwrap_or(body.len());
    let coding = String::from_utf8_lossy(&body[..line]);
    let body = body.get(line + 1..).unwrap_or_default();
    let (Some(whole), Some(cut)) = (
        decoded(&coding, &[body]),
        decoded(&coding, &pieces(seed, body)),
    ) else {
        return;
    };
    assert_eq!(
        whole.1, cut.1,
        "the pieces changed whether {coding} decodes"
    );
    // Brotli gives nothing of what it had decoded but not yet written out
    // when it meets bad data (see `decode`), so that, after an error, what
    // came out may stop at a place that depends on the pieces.
    let brotli = coding
        .split(',')
        .any(|c| c.trim().eq_ignore_ascii_case("br"));
    if whole.1 && brotli {
        assert!(
            whole.0.starts_with(&cut.0) || cut.0.starts_with(&whole.0),
            "the pieces changed what {coding} decodes to before its error"
        );
        return;
    }
    assert!(
        whole.0 == cut.0,
        "the pieces changed what {coding} decodes to: {} against {} bytes",
        whole.0.len(),
        cut.0.len()
    );
}

/// One of the above, picked by the first byte.
pub fn content(input: &[u8]) {
    let Some((&pick, rest)) = input.split_first() else {
        return;
    };
    match pick % 4 {
        0 => watch(rest),
        1 => ar(rest),
        2 => form(rest),
        _ => decode(rest),
    }
}

#[cfg(test)]
mod tests {
    /// What the fuzzer found, kept in `fuzz/regressions/content/`, holds
    /// now.
    #[test]
    fn what_the_fuzzer_found_holds() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/regressions/content");
        let mut n = 0;
        let extra = std::env::var("FUZZ_REPLAY").unwrap_or_default();
        let dirs = [dir]
            .into_iter()
            .chain(extra.split(':').filter(|d| !d.is_empty()));
        for entry in dirs.flat_map(|d| std::fs::read_dir(d).unwrap()) {
            let path = entry.unwrap().path();
            eprintln!("{}", path.display());
            super::content(&std::fs::read(&path).unwrap());
            n += 1;
        }
        assert!(n > 0, "no inputs in {dir}");
    }
}
