//! ar archives (a `.deb`, whose members are `debian-binary`,
//! `control.tar.*` and `data.tar.*`; a static library), taken apart as
//! they arrive so that each member is scanned as a file of its own.
//!
//! clamd 1.4.6 does not unpack ar: a `.deb` with EICAR in its
//! `data.tar.gz` was OK, since clamd finds in the archive's own bytes only
//! what shows as it is. A member scanned alone is a `.tar.gz` or `.tar.xz`
//! to clamd, which it unpacks. The archive's bytes are still scanned
//! whole as well.
//!
//! An archive is `!<arch>\n`, then members: a 60-byte header (name 16,
//! date 12, owner 6, group 6, mode 8, size 10 in decimal, then `` `\n``)
//! and that many bytes, padded with a `\n` to an even offset. A BSD long
//! name (`#1/LEN`) takes the first LEN bytes of the data; they are scanned
//! with the rest. The split stops at a header that is not one: the whole
//! scan still sees those bytes.

/// What an ar archive begins with.
pub(super) const MAGIC: &[u8; 8] = b"!<arch>\n";
const HEADER: usize = 60;
const SIZE: std::ops::Range<usize> = 48..58;
const END: &[u8; 2] = b"`\n";

/// What the splitter found, in body order.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Event {
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

    /// Splits the next bytes; what they hold goes to `events`.
    pub(super) fn feed(&mut self, mut data: &[u8], events: &mut Vec<Event>) {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return,
                State::Magic => {
                    let n = (MAGIC.len() - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if !MAGIC.starts_with(&self.buf) {
                        self.state = State::Done;
                    } else if self.buf.len() == MAGIC.len() {
                        self.buf.clear();
                        self.state = State::Header;
                    }
                }
                State::Header => {
                    let n = (HEADER - self.buf.len()).min(data.len());
                    self.buf.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.buf.len() == HEADER {
                        self.state = match member_size(&self.buf) {
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
                        self.buf.clear();
                    }
                }
                State::Data { left, pad } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    events.push(Event::Data(data[..n].to_vec()));
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        events.push(Event::End);
                        self.state = if *pad { State::Pad } else { State::Header };
                    }
                }
                State::Pad => {
                    data = &data[1..];
                    self.state = State::Header;
                }
            }
        }
    }

    /// Ends the body: a member cut short ends where the bytes did.
    pub(super) fn finish(&mut self, events: &mut Vec<Event>) {
        if let State::Data { .. } = self.state {
            events.push(Event::End);
        }
        self.state = State::Done;
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
mod tests {
    use super::*;

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
    /// `piece` bytes.
    fn split(bytes: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut s = Splitter::default();
        let mut events = Vec::new();
        for p in bytes.chunks(piece) {
            s.feed(p, &mut events);
        }
        s.finish(&mut events);
        let mut members = Vec::new();
        for e in events {
            match e {
                Event::Start => members.push(Vec::new()),
                Event::Data(d) => members.last_mut().unwrap().extend_from_slice(&d),
                Event::End => {}
            }
        }
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
        assert!(split(b"PK\x03\x04 and more bytes than a header", 3).is_empty());
        let mut s = Splitter::default();
        s.feed(b"!<ar", &mut Vec::new());
        assert!(s.is_archive());
        s.feed(b"ch>\n", &mut Vec::new());
        assert!(s.is_archive());
        let mut s = Splitter::default();
        s.feed(b"!<ax", &mut Vec::new());
        assert!(!s.is_archive());
        // A bad header stops the split; a member cut short ends there.
        let mut bad = member("a", b"xy");
        bad[58] = b'!';
        let a = [MAGIC.to_vec(), member("one", b"1"), bad].concat();
        assert_eq!(split(&a, 5), vec![b"1".to_vec()]);
        let a = [MAGIC.to_vec(), member("one", b"12345")].concat();
        assert_eq!(split(&a[..a.len() - 3], 5), vec![b"123".to_vec()]);
    }
}
