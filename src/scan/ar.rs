//! ar archives (a `.deb`, whose members are `debian-binary`,
//! `control.tar.*` and `data.tar.*`; a static library), taken apart as
//! they arrive so that each member is scanned as a file of its own.
//!
//! clamd 1.4.6 does not unpack ar: a `.deb` with EICAR in its
//! `data.tar.gz` was OK, since clamd finds in the archive's own bytes only
//! what shows as it is. A member scanned alone is a `.tar.gz` or `.tar.xz`
//! to clamd, which it unpacks. The other bytes (the magic, the headers,
//! padding) go to a scan of their own, as a form's do, so that no byte
//! goes unscanned and a body holds one clamd scan slot at a time.
//!
//! An archive is `!<arch>\n`, then members: a 60-byte header (name 16,
//! date 12, owner 6, group 6, mode 8, size 10 in decimal, then `` `\n``)
//! and that many bytes, padded with a `\n` to an even offset. A BSD long
//! name (`#1/LEN`) takes the first LEN bytes of the data; they are scanned
//! with the member. The split stops at a header that is not one: the
//! bytes from there on go to the scan of the other bytes.

/// What an ar archive begins with.
pub(super) const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER: usize = 60;
const SIZE: std::ops::Range<usize> = 48..58;
const END: &[u8; 2] = b"`\n";

/// What the splitter found, in body order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
    /// Bytes outside any member's data.
    Rest(Vec<u8>),
    /// A member's data begins.
    Start,
    Data(Vec<u8>),
    /// The member's data has ended.
    End,
}

#[derive(Debug)]
enum State {
    /// The magic, `buf` holding what of it has come.
    Magic,
    /// A member's header, `buf` holding what of it has come.
    Header,
    /// A member's data, this many bytes still to come, then `pad` bytes.
    Data { left: u64, pad: bool },
    /// The padding byte after odd-length data.
    Pad,
    /// Not an ar archive, or nothing more to split.
    Done,
}

/// Splits an ar archive into its members, in pieces of any size.
#[derive(Debug)]
pub(super) struct Splitter {
    state: State,
    buf: Vec<u8>,
}

impl Default for Splitter {
    fn default() -> Splitter {
        Splitter {
            state: State::Magic,
            buf: Vec::new(),
        }
    }
}

impl Splitter {
    /// Whether the bytes so far may still be an ar archive.
    pub(super) fn is_archive(&self) -> bool {
        !matches!(self.state, State::Magic | State::Done)
            || matches!(self.state, State::Magic) && MAGIC.starts_with(&self.buf)
    }

    /// Splits the next bytes; what they hold goes to `events`. Returns how
    /// many of them it took: once it is done (not an archive, or a header
    /// that is not one), the rest of `data` is the caller's, as it is.
    pub(super) fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) -> usize {
        let mut rest = data;
        while !rest.is_empty() {
            let data = rest;
            match &mut self.state {
                State::Done => break,
                State::Magic => {
                    let n = (MAGIC.len() - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    rest = &data[n..];
                    if !MAGIC.starts_with(&self.buf) {
                        // Not an archive: what was held back goes on
                        // first, then `data` from where it was.
                        let held = self.buf.len() - n;
                        self.buf.truncate(held);
                        if held > 0 {
                            events.push(Event::Rest(std::mem::take(&mut self.buf)));
                        }
                        self.state = State::Done;
                        rest = data;
                        break;
                    } else if self.buf.len() == MAGIC.len() {
                        events.push(Event::Rest(std::mem::take(&mut self.buf)));
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    let n = (HEADER - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    rest = &data[n..];
                    if self.buf.len() == HEADER {
                        let size = member_size(&self.buf);
                        events.push(Event::Rest(std::mem::take(&mut self.buf)));
                        self.state = match size {
                            Some(0) => State::Header,
                            Some(size) => {
                                events.push(Event::Start);
                                State::Data {
                                    left: size,
                                    pad: size % 2 == 1,
                                }
                            }
                            None => State::Done,
                        };
                    }
                }
                State::Data { left, pad } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    events.push(Event::Data(data[..n].to_vec()));
                    rest = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        events.push(Event::End);
                        self.state = if *pad { State::Pad } else { State::Header };
                    }
                }
                State::Pad => {
                    events.push(Event::Rest(data[..1].to_vec()));
                    rest = &data[1..];
                    self.state = State::Header;
                }
            }
        }
        data.len() - rest.len()
    }

    /// Ends the body: a member cut short ends where the bytes did, and
    /// bytes held back go on.
    pub(super) fn finish(&mut self, events: &mut Vec<Event>) {
        match self.state {
            State::Data { .. } => events.push(Event::End),
            _ if !self.buf.is_empty() => events.push(Event::Rest(std::mem::take(&mut self.buf))),
            _ => {}
        }
        self.state = State::Done;
    }
}

/// Walks an ar archive that clamd meets inside another file (a `.deb` in
/// a zip, a tar or a `.gz`), where its members are not scanned each: clamd
/// sees the archive as it is, so what a packed member holds (gzip, bzip2,
/// xz or zstd: a `.deb`'s `data.tar.*`) is out of its sight, and so are
/// the packed files of a tar member. A static library's members (object
/// files) show as they are, and are left to clamd.
#[derive(Debug, Default)]
pub(super) struct ArWalk {
    splitter: Splitter,
    events: Vec<Event>,
    /// The first bytes of the member being read, until judged.
    head: Option<Vec<u8>>,
    found: bool,
}

/// How many of a member's first bytes are looked at: a tar's magic ends
/// at 262.
const HEAD: usize = 262;

/// What packed files begin with: gzip, bzip2, xz, zstd.
const PACKED: [&[u8]; 4] = [b"\x1f\x8b", b"BZh", b"\xfd7zXZ\0", b"\x28\xb5\x2f\xfd"];

impl ArWalk {
    /// Reads on; true once a member was found whose content clamd does not
    /// see.
    pub(super) fn feed(&mut self, data: &[u8]) -> bool {
        if self.found || !self.splitter.is_archive() {
            return self.found;
        }
        self.splitter.feed(data, &mut self.events);
        for event in self.events.drain(..) {
            match event {
                Event::Start => self.head = Some(Vec::new()),
                Event::Data(bytes) => {
                    if let Some(head) = self.head.as_mut() {
                        head.extend_from_slice(&bytes[..bytes.len().min(HEAD - head.len())]);
                        self.found |= hides(head);
                        if head.len() == HEAD {
                            self.head = None;
                        }
                    }
                }
                Event::End => self.head = None,
                Event::Rest(_) => {}
            }
        }
        self.found
    }
}

/// Whether a member beginning with `head` is packed, or a tar.
fn hides(head: &[u8]) -> bool {
    PACKED.iter().any(|magic| head.starts_with(magic)) || head.get(257..262) == Some(b"ustar")
}

/// A member header's data length, when it is a header.
fn member_size(h: &[u8]) -> Option<u64> {
    if &h[HEADER - 2..] != END {
        return None;
    }
    let size = std::str::from_utf8(&h[SIZE]).ok()?.trim_end_matches(' ');
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    size.parse().ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An archive of members named `m` holding `contents`.
    pub(in crate::scan) fn archive(contents: &[&[u8]]) -> Vec<u8> {
        let members = contents.iter().map(|data| member("m", data));
        [MAGIC.to_vec()]
            .into_iter()
            .chain(members)
            .collect::<Vec<_>>()
            .concat()
    }

    fn member(name: &str, data: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            100644,
            data.len()
        )
        .into_bytes();
        m.extend_from_slice(data);
        if data.len() % 2 == 1 {
            m.push(b'\n');
        }
        m
    }

    /// The members' contents, found with the archive fed in pieces of
    /// `piece` bytes; and every byte, members' or not, goes somewhere once.
    fn split(bytes: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut s = Splitter::default();
        let mut members = Vec::new();
        let mut every = Vec::new();
        let mut events = Vec::new();
        let mut take = |events: &mut Vec<Event>, every: &mut Vec<u8>| {
            for e in events.drain(..) {
                match e {
                    Event::Rest(d) => every.extend_from_slice(&d),
                    Event::Start => members.push(Vec::new()),
                    Event::Data(d) => {
                        every.extend_from_slice(&d);
                        members.last_mut().unwrap().extend_from_slice(&d);
                    }
                    Event::End => {}
                }
            }
        };
        for p in bytes.chunks(piece) {
            let taken = s.feed(p, &mut events);
            take(&mut events, &mut every);
            every.extend_from_slice(&p[taken..]);
        }
        s.finish(&mut events);
        take(&mut events, &mut every);
        assert_eq!(every, bytes, "pieces of {piece}");
        members
    }

    #[test]
    fn members_are_split_out_in_pieces_of_any_size() {
        let a = [
            MAGIC.to_vec(),
            member("debian-binary", b"2.0\n"),
            member("control.tar.gz/", b"odd"),
            member("empty", b""),
            member("data.tar.xz", &[7u8; 3000]),
        ]
        .concat();
        for piece in [1, 2, 7, 59, 60, 61, 4096] {
            let members = split(&a, piece);
            assert_eq!(
                members,
                vec![b"2.0\n".to_vec(), b"odd".to_vec(), vec![7u8; 3000]],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn what_is_not_an_archive_is_left_whole() {
        assert!(split(b"!<arch>", 1).is_empty());
        assert!(split(b"!<ar", 3).is_empty());
        assert!(split(b"!<arXX and more", 3).is_empty());
        assert!(split(b"PK\x03\x04 and more bytes than a header", 3).is_empty());
        let mut s = Splitter::default();
        assert_eq!(s.feed(b"!<ar", &mut Vec::new()), 4);
        assert!(s.is_archive());
        assert_eq!(s.feed(b"ch>\n", &mut Vec::new()), 4);
        assert!(s.is_archive());
        let mut s = Splitter::default();
        assert_eq!(s.feed(b"!<ax", &mut Vec::new()), 0);
        assert!(!s.is_archive());
        // A bad header stops the split; a member cut short ends there.
        let mut bad = member("a", b"xy");
        bad[58] = b'!';
        let a = [MAGIC.to_vec(), member("one", b"1"), bad, b"more".to_vec()].concat();
        assert_eq!(split(&a, 5), vec![b"1".to_vec()]);
        assert_eq!(split(&a, 1), vec![b"1".to_vec()]);
        let a = [MAGIC.to_vec(), member("one", b"12345")].concat();
        assert_eq!(split(&a[..a.len() - 3], 5), vec![b"123".to_vec()]);
    }
}
