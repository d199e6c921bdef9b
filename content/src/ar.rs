//! ar archives (a `.deb`, whose members are `debian-binary`,
//! `control.tar.*` and `data.tar.*`; a static library), taken apart as
//! they arrive so that each member is scanned as a file of its own; and
//! rpm packages, whose payload is ([`super::rpm`]).
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

use super::rpm;

/// What an ar archive begins with.
pub const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER: usize = 60;
const SIZE: std::ops::Range<usize> = 48..58;
const END: &[u8; 2] = b"`\n";

/// What the splitter found, in body order.
#[derive(Debug, PartialEq, Eq)]
pub enum Event {
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
    /// An rpm package ([`super::rpm`]).
    Rpm(rpm::Walk),
    /// Not an ar archive, or nothing more to split.
    Done,
}

/// Splits an ar archive into its members, in pieces of any size.
#[derive(Debug)]
pub struct Splitter {
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
    /// Whether the bytes so far may still be an ar archive or an rpm
    /// package.
    pub fn is_archive(&self) -> bool {
        match &self.state {
            State::Magic => self.magic().starts_with(&self.buf),
            State::Done => false,
            _ => true,
        }
    }

    /// Whether the bytes are an ar archive or an rpm package, being split.
    pub fn has_begun(&self) -> bool {
        !matches!(self.state, State::Magic | State::Done)
    }

    /// The magic the bytes so far may begin.
    fn magic(&self) -> &'static [u8] {
        self.buf.first().map_or(MAGIC, |&first| magic_from(first))
    }

    /// Splits the next bytes; what they hold goes to `events`. Returns how
    /// many of them it took: once it is done (not an archive, or a header
    /// that is not one), the rest of `data` is the caller's, as it is.
    pub fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) -> usize {
        let mut rest = data;
        while !rest.is_empty() {
            let data = rest;
            match &mut self.state {
                State::Done => break,
                State::Magic => {
                    let magic = magic_from(*self.buf.first().unwrap_or(&data[0]));
                    let n = (magic.len() - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    rest = &data[n..];
                    if !magic.starts_with(&self.buf) {
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
                    } else if self.buf.len() == magic.len() {
                        events.push(Event::Rest(std::mem::take(&mut self.buf)));
                        self.state = match magic == rpm::MAGIC {
                            true => State::Rpm(rpm::Walk::after_magic()),
                            false => State::Header,
                        };
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
                State::Rpm(walk) => {
                    rest = &data[walk.feed(data, events)..];
                    if walk.is_done() {
                        self.state = State::Done;
                        break;
                    }
                }
            }
        }
        data.len() - rest.len()
    }

    /// Ends the body: a member cut short ends where the bytes did, and
    /// bytes held back go on.
    pub fn finish(&mut self, events: &mut Vec<Event>) {
        match &mut self.state {
            State::Data { .. } => events.push(Event::End),
            State::Rpm(walk) => walk.finish(events),
            _ if !self.buf.is_empty() => events.push(Event::Rest(std::mem::take(&mut self.buf))),
            _ => {}
        }
        self.state = State::Done;
    }
}

/// Walks an ar archive or an rpm package that clamd meets inside another
/// file (a `.deb` in a zip, a tar or a `.gz`), where its members are not
/// scanned each: clamd sees it as it is, so what a packed member holds
/// (gzip, bzip2, xz or zstd: a `.deb`'s `data.tar.*`, an rpm's payload)
/// is out of its sight, and so are the packed files of a tar member. A
/// static library's members (object files) show as they are, and are left
/// to clamd.
#[derive(Debug, Default)]
pub(crate) struct ArWalk {
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
    pub(crate) fn feed(&mut self, data: &[u8]) -> bool {
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

/// The magic bytes beginning with `first` may begin: an rpm package's or
/// an ar archive's.
fn magic_from(first: u8) -> &'static [u8] {
    match first == rpm::MAGIC[0] {
        true => &rpm::MAGIC,
        false => MAGIC,
    }
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
pub(crate) mod tests {
    use super::*;

    /// An archive of members named `m` holding `contents`.
    pub(crate) fn archive(contents: &[&[u8]]) -> Vec<u8> {
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

    /// An rpm package: the lead, a signature header of `sig` (index
    /// entries, data length) and its padding, a header of `header`, then
    /// `payload`.
    fn rpm(sig: (u32, u32), header: (u32, u32), payload: &[u8]) -> Vec<u8> {
        let mut p = rpm::MAGIC.to_vec();
        p.resize(96, 0);
        for (n, len) in [sig, header] {
            p.extend_from_slice(&[0x8e, 0xad, 0xe8, 0x01, 0, 0, 0, 0]);
            p.extend_from_slice(&n.to_be_bytes());
            p.extend_from_slice(&len.to_be_bytes());
            p.resize(p.len() + 16 * n as usize + len as usize, 0xaa);
            if (n, len) == sig {
                p.resize(p.len().next_multiple_of(8), 0);
            }
        }
        p.extend_from_slice(payload);
        p
    }

    #[test]
    fn an_rpm_package_s_payload_is_split_out() {
        let payload = [0x1f, 0x8b, 8, 0].repeat(500);
        for sig in [(1, 5), (2, 8), (0, 0)] {
            let p = rpm(sig, (3, 100), &payload);
            for piece in [1, 3, 16, 97, 4096] {
                let found = split(&p, piece);
                assert_eq!(found, vec![payload.clone()], "{sig:?}, pieces of {piece}");
            }
        }
        // A header that is not one ends the split, as does the end of the
        // bytes before the payload: every byte goes to the rest.
        let mut bad = rpm((1, 5), (3, 100), &payload);
        bad[136] = 0;
        assert!(split(&bad, 7).is_empty());
        let p = rpm((1, 5), (3, 100), &payload);
        assert!(split(&p[..150], 5).is_empty());
    }

    #[test]
    fn any_bytes_after_rpm_s_magic_are_split_whole() {
        // Headers of any sizes, cut anywhere, damaged anywhere: every byte
        // goes somewhere once, and there is one payload at the most.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |below: u64| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed % below
        };
        for _ in 0..300 {
            let sig = (next(4) as u32, next(40) as u32);
            let mut p = rpm(sig, (next(4) as u32, next(40) as u32), &[9; 50]);
            let at = next(p.len() as u64) as usize;
            p[at] ^= next(256) as u8;
            p.truncate(next(p.len() as u64 + 1) as usize);
            let piece = 1 + next(40) as usize;
            assert!(split(&p, piece).len() <= 1);
        }
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
