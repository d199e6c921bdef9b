//! multipart/form-data (RFC 7578), the body of a browser's file upload,
//! taken apart as it arrives so that each part is scanned as a file of its
//! own.
//!
//! clamd scans a whole upload as one stream, and finds inside it only what
//! it spots embedded (a zip): EICAR in a `.tar.gz`, `.xz` or `.bz2` sent by a
//! form passes clamd as OK, while the server stores the file whole. So the
//! parts' contents go to clamd one by one; everything else (preamble, part
//! headers, epilogue, or the rest of a body that stops parsing) goes to a
//! scan of its own, so that no byte goes unscanned.
//!
//! Servers' parsers differ where a body strays from RFC 2046: PHP's ends a
//! part at any line feed followed by the boundary, whatever follows it;
//! Go's takes bare line feeds. A part that one of them splits where this
//! parser does not would reach clamd in pieces, or not from its start. So
//! such a body is ambiguous: the boundary where no delimiter may stand, a
//! delimiter followed by more than white space, no closing delimiter, or
//! headers past their limit. Browsers never send one; the scan cannot call
//! it clean.

use memchr::memmem;

/// The longest part header block read; past it the body is not parsed
/// further.
const MAX_HEADERS: usize = 16 * 1024;

/// Why a body is ambiguous (see the module's doc).
const STRAY: &str = "the boundary where no delimiter stands";
const TRAILED: &str = "a delimiter followed by more than white space";
const LONG: &str = "part headers over 16 KiB";
const UNCLOSED: &str = "no closing delimiter";

/// The boundary of a `multipart/form-data` Content-Type, if it is one.
pub fn boundary(content_type: &str) -> Option<String> {
    let (mime, params) = content_type.split_once(';')?;
    if !mime.trim().eq_ignore_ascii_case("multipart/form-data") {
        return None;
    }
    params.split(';').find_map(|p| {
        let (name, value) = p.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim();
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        // RFC 2046: 1 to 70 characters.
        (1..=70).contains(&value.len()).then(|| value.to_owned())
    })
}

/// What the parser found, in body order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
    /// Bytes outside any part's content.
    Rest(Vec<u8>),
    /// A part's content begins.
    Start,
    /// Bytes of the part's content.
    Data(Vec<u8>),
    /// The part's content has ended.
    End,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum At {
    /// Before the first delimiter.
    Preamble,
    /// Just after a delimiter: `--` ends the body, else the line's end.
    Delimiter,
    /// A part's header lines, up to an empty one.
    Headers(usize),
    Content,
    /// After the close delimiter, or after what could not be parsed.
    Rest,
}

/// Takes a multipart body apart, in pieces of any size.
#[derive(Debug)]
pub struct FormParser {
    /// CRLF, `--`, the boundary.
    delimiter: Vec<u8>,
    at: At,
    /// Bytes not yet given out: where a delimiter or a line may be
    /// incomplete.
    pending: Vec<u8>,
    /// How many of the line break put before the body, to find a first
    /// delimiter that opens it, are still to be taken out of what is given
    /// out: the rest is the body's own bytes, so that a body that is no form
    /// after all goes to clamd exactly as it came.
    added: usize,
    /// Why another parser might take the body apart otherwise, if it might.
    ambiguous: Option<&'static str>,
    /// Whether the closing delimiter has come.
    closed: bool,
}

impl FormParser {
    pub fn new(boundary: &str) -> FormParser {
        let mut delimiter = b"\r\n--".to_vec();
        delimiter.extend_from_slice(boundary.as_bytes());
        FormParser {
            delimiter,
            at: At::Preamble,
            // The first delimiter may open the body, without the line
            // break before it.
            pending: b"\r\n".to_vec(),
            added: 2,
            ambiguous: None,
            closed: false,
        }
    }

    /// Why another parser might take the body apart otherwise (see the
    /// module's doc), once the body has ended; `None` for a body as
    /// browsers send it.
    pub fn ambiguous(&self) -> Option<&'static str> {
        self.ambiguous
    }

    /// Takes the next bytes of the body.
    pub fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) {
        let first = events.len();
        self.parse(data, events);
        self.take_out_added(events, first);
    }

    fn parse(&mut self, data: &[u8], events: &mut Vec<Event>) {
        self.pending.extend_from_slice(data);
        let mut from = 0;
        loop {
            let buf = &self.pending[from..];
            let used = match self.at {
                At::Preamble | At::Content => {
                    let content = self.at == At::Content;
                    match memmem::find(buf, &self.delimiter) {
                        Some(i) => {
                            let stray = memmem::find(&buf[..i], &self.delimiter[2..]).is_some();
                            if stray {
                                self.ambiguous.get_or_insert(STRAY);
                            }
                            out(events, content, &buf[..i]);
                            if content {
                                events.push(Event::End);
                            }
                            events.push(Event::Rest(self.delimiter.clone()));
                            self.at = At::Delimiter;
                            i + self.delimiter.len()
                        }
                        None => {
                            // Keep what may begin a delimiter.
                            let keep = (self.delimiter.len() - 1).min(buf.len());
                            let end = buf.len() - keep;
                            let stray =
                                memmem::find_iter(buf, &self.delimiter[2..]).any(|at| at < end);
                            if stray {
                                self.ambiguous.get_or_insert(STRAY);
                            }
                            out(events, content, &buf[..end]);
                            from += buf.len() - keep;
                            break;
                        }
                    }
                }
                At::Delimiter => {
                    if buf.len() < 2 {
                        break;
                    }
                    if buf.starts_with(b"--") {
                        self.closed = true;
                        self.at = At::Rest;
                        0
                    } else {
                        // A line that does not end within MAX_HEADERS is
                        // too long however its bytes came: found whole in
                        // one piece as when it comes a byte at a time.
                        match memmem::find(buf, b"\r\n") {
                            Some(i) if i + 2 > MAX_HEADERS => {
                                self.ambiguous.get_or_insert(LONG);
                                self.at = At::Rest;
                                0
                            }
                            Some(i) => {
                                if !buf[..i].iter().all(|&b| b == b' ' || b == b'\t') {
                                    self.ambiguous.get_or_insert(TRAILED);
                                }
                                events.push(Event::Rest(buf[..i + 2].to_vec()));
                                self.at = At::Headers(0);
                                i + 2
                            }
                            None if buf.len() >= MAX_HEADERS => {
                                self.ambiguous.get_or_insert(LONG);
                                self.at = At::Rest;
                                0
                            }
                            None => break,
                        }
                    }
                }
                At::Headers(read) => match memmem::find(buf, b"\r\n") {
                    Some(i) => {
                        events.push(Event::Rest(buf[..i + 2].to_vec()));
                        if i == 0 {
                            events.push(Event::Start);
                            self.at = At::Content;
                        } else if read + i + 2 > MAX_HEADERS {
                            self.ambiguous.get_or_insert(LONG);
                            self.at = At::Rest;
                        } else {
                            self.at = At::Headers(read + i + 2);
                        }
                        i + 2
                    }
                    None if read + buf.len() > MAX_HEADERS => {
                        self.ambiguous.get_or_insert(LONG);
                        self.at = At::Rest;
                        0
                    }
                    None => break,
                },
                At::Rest => {
                    if !buf.is_empty() {
                        events.push(Event::Rest(buf.to_vec()));
                    }
                    buf.len()
                }
            };
            from += used;
            if self.at == At::Rest && from == self.pending.len() {
                break;
            }
        }
        self.pending.drain(..from);
    }

    /// The body has ended: what is held back goes out, and a part still
    /// open ends (its content is scanned as far as it came).
    pub fn finish(&mut self, events: &mut Vec<Event>) {
        let first = events.len();
        let pending = std::mem::take(&mut self.pending);
        let content = self.at == At::Content;
        out(events, content, &pending);
        if content {
            events.push(Event::End);
        }
        if !self.closed {
            self.ambiguous.get_or_insert(UNCLOSED);
        }
        self.at = At::Rest;
        self.take_out_added(events, first);
    }

    /// Takes the added line break out of the first bytes given out: they
    /// are always outside any part.
    fn take_out_added(&mut self, events: &mut Vec<Event>, first: usize) {
        let mut i = first;
        while self.added > 0 && i < events.len() {
            if let Event::Rest(bytes) = &mut events[i] {
                let n = self.added.min(bytes.len());
                bytes.drain(..n);
                self.added -= n;
                if bytes.is_empty() {
                    events.remove(i);
                    continue;
                }
            }
            i += 1;
        }
    }
}

fn out(events: &mut Vec<Event>, content: bool, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    events.push(if content {
        Event::Data(bytes.to_vec())
    } else {
        Event::Rest(bytes.to_vec())
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOUNDARY: &str = "----WebKitFormBoundary7MA4YWxkTrZu0gW";

    fn form(parts: &[(&str, &[u8])]) -> Vec<u8> {
        let mut body = Vec::new();
        for (name, content) in parts {
            body.extend_from_slice(
                format!(
                    "--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"{name}\"; \
                     filename=\"{name}.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            );
            body.extend_from_slice(content);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(format!("--{BOUNDARY}--\r\n").as_bytes());
        body
    }

    /// The parts' contents, and all other bytes, from `body` fed `piece`
    /// bytes at a time.
    fn parse(body: &[u8], piece: usize) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut p = FormParser::new(BOUNDARY);
        let mut events = Vec::new();
        for chunk in body.chunks(piece) {
            p.feed(chunk, &mut events);
        }
        p.finish(&mut events);
        let (mut parts, mut rest) = (Vec::new(), Vec::new());
        let mut open = None;
        for e in events {
            match e {
                Event::Rest(b) => rest.extend_from_slice(&b),
                Event::Start => {
                    assert!(open.is_none());
                    open = Some(Vec::new());
                }
                Event::Data(b) => open.as_mut().expect("inside a part").extend_from_slice(&b),
                Event::End => parts.push(open.take().expect("a part to end")),
            }
        }
        assert!(open.is_none());
        (parts, rest)
    }

    #[test]
    fn parts_come_out_whole_in_pieces_of_any_size() {
        // Contents that look like delimiters, or nearly.
        let tricky = format!("a\r\n--{}x\r\n--\r\n-", &BOUNDARY[..20]);
        let body = form(&[
            ("a", b"first file"),
            ("b", b""),
            ("c", tricky.as_bytes()),
            ("d", &[0u8; 3000]),
        ]);
        for piece in [1, 2, 3, 5, 40, 41, 42, 43, 1000, body.len()] {
            let (parts, rest) = parse(&body, piece);
            assert_eq!(parts.len(), 4, "pieces of {piece}");
            assert_eq!(parts[0], b"first file");
            assert_eq!(parts[1], b"");
            assert_eq!(parts[2], tricky.as_bytes());
            assert_eq!(parts[3], vec![0u8; 3000]);
            // Every byte of the body is either in a part or in the rest.
            let inside: usize = parts.iter().map(Vec::len).sum();
            assert_eq!(inside + rest.len(), body.len(), "pieces of {piece}");
            assert!(String::from_utf8_lossy(&rest).contains("filename=\"d.bin\""));
        }
    }

    #[test]
    fn a_preamble_and_an_epilogue_are_rest() {
        let mut body = b"preamble text\r\n".to_vec();
        body.extend_from_slice(&form(&[("a", b"content")]));
        body.extend_from_slice(b"epilogue");
        let (parts, rest) = parse(&body, 7);
        assert_eq!(parts, vec![b"content".to_vec()]);
        let rest = String::from_utf8_lossy(&rest).into_owned();
        assert!(
            rest.contains("preamble text") && rest.ends_with("epilogue"),
            "{rest}"
        );
    }

    #[test]
    fn what_does_not_parse_is_rest_and_an_open_part_ends_with_the_body() {
        // No delimiter at all: the body as it came, all rest.
        for piece in [1, 2, 3, 100] {
            let (parts, rest) = parse(b"MZ just some bytes", piece);
            assert!(parts.is_empty());
            assert_eq!(rest, b"MZ just some bytes");
        }
        // Cut inside a part: its content so far is a part.
        let body = form(&[("a", b"0123456789")]);
        let cut = &body[..body.len() - 30];
        let (parts, _) = parse(cut, 3);
        assert_eq!(parts.len(), 1);
        assert!(parts[0].starts_with(b"0123456789"), "{:?}", parts[0]);
        // Headers that never end: the rest of the body is rest.
        let mut endless = format!("--{BOUNDARY}\r\n").into_bytes();
        endless.extend(std::iter::repeat_n(b'h', MAX_HEADERS + 10));
        endless.extend_from_slice(b"\r\n\r\nnot a part");
        let (parts, rest) = parse(&endless, 100);
        assert!(parts.is_empty());
        assert!(rest.ends_with(b"not a part"));
    }

    #[test]
    fn a_delimiter_line_too_long_is_rest_however_it_comes() {
        // Bytes after a delimiter, its line ending only past MAX_HEADERS,
        // then what looks like a part. Found by the fuzzer: whole, the line
        // was taken and the part scanned alone; in pieces, it was too long.
        for len in [MAX_HEADERS - 3, MAX_HEADERS - 2, MAX_HEADERS + 10] {
            let mut body = format!("--{BOUNDARY}").into_bytes();
            body.extend(std::iter::repeat_n(b'x', len));
            body.extend_from_slice(b"\r\n\r\ncontent\r\n--");
            body.extend_from_slice(BOUNDARY.as_bytes());
            body.extend_from_slice(b"--\r\n");
            let whole = parse(&body, body.len());
            for piece in [1, 7, 4096] {
                assert_eq!(parse(&body, piece), whole, "{len} in pieces of {piece}");
            }
            // The line ends at MAX_HEADERS at most: a part.
            assert_eq!(whole.0.len(), usize::from(len + 2 <= MAX_HEADERS), "{len}");
        }
    }

    /// Why the parser finds `body`, fed `piece` bytes at a time, ambiguous.
    fn ambiguous(body: &[u8], piece: usize) -> Option<&'static str> {
        let mut p = FormParser::new(BOUNDARY);
        let mut events = Vec::new();
        for chunk in body.chunks(piece) {
            p.feed(chunk, &mut events);
        }
        p.finish(&mut events);
        p.ambiguous()
    }

    #[test]
    fn a_body_another_parser_may_split_otherwise_is_ambiguous() {
        let tricky = format!("a\r\n--{}x\r\n--\r\n-", &BOUNDARY[..20]);
        let browser = form(&[("a", b"x"), ("b", tricky.as_bytes())]);
        let mut padded = form(&[("a", b"x")]);
        let at = BOUNDARY.len() + 2;
        padded.splice(at..at, *b" \t");
        let mut epilogue = b"preamble\r\n".to_vec();
        epilogue.extend_from_slice(&form(&[("a", b"x")]));
        epilogue.extend_from_slice(b"epilogue");
        for body in [&browser, &padded, &epilogue] {
            for piece in [1, 2, 3, 41, 42, 1000] {
                assert_eq!(ambiguous(body, piece), None, "pieces of {piece}");
            }
        }
        // A line that starts with the boundary (PHP takes it as one).
        let trailed = form(&[("a", format!("x\r\n--{BOUNDARY}X\r\n\r\ny").as_bytes())]);
        // The boundary after a bare line feed (Go takes it as one).
        let stray = form(&[(
            "a",
            format!("x\n--{BOUNDARY}\nContent-Type: a/b\n\ny").as_bytes(),
        )]);
        let bare = form(&[("a", b"x")])
            .iter()
            .filter(|&&b| b != b'\r')
            .copied()
            .collect();
        let cut = form(&[("a", b"0123456789")])[..60].to_vec();
        let mut long = format!("--{BOUNDARY}\r\n").into_bytes();
        long.extend(std::iter::repeat_n(b'h', MAX_HEADERS + 10));
        long.extend_from_slice(format!("\r\n\r\nx\r\n--{BOUNDARY}--\r\n").as_bytes());
        let cases: [(&Vec<u8>, &[&str]); 5] = [
            (&trailed, &[TRAILED]),
            (&stray, &[STRAY]),
            (&bare, &[LONG, UNCLOSED, STRAY]),
            (&cut, &[UNCLOSED]),
            (&long, &[LONG]),
        ];
        for (body, why) in cases {
            for piece in [1, 2, 3, 41, 42, 1000] {
                let got = ambiguous(body, piece);
                assert!(
                    got.is_some_and(|g| why.contains(&g)),
                    "{why:?} in pieces of {piece}: {got:?}"
                );
            }
        }
        assert_eq!(ambiguous(b"no form at all", 3), Some(UNCLOSED));
    }

    #[test]
    fn the_boundary_comes_from_the_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=abc").as_deref(),
            Some("abc")
        );
        assert_eq!(
            boundary("Multipart/Form-Data;charset=utf-8; BOUNDARY=\"a b:c\"").as_deref(),
            Some("a b:c")
        );
        assert_eq!(boundary("multipart/form-data"), None);
        assert_eq!(boundary("multipart/mixed; boundary=abc"), None);
        assert_eq!(boundary("application/x-www-form-urlencoded"), None);
        assert_eq!(boundary("multipart/form-data; boundary="), None);
        assert_eq!(
            boundary(&format!("multipart/form-data; boundary={}", "x".repeat(71))),
            None
        );
    }
}
