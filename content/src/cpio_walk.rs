//! Walks a cpio archive's headers (`.cpio`, an initramfs, an rpm's
//! payload), so that each member is watched from its start, as a tar's
//! members are. clamd unpacks cpio and scans each member, but a Debian
//! package there is not opened in turn: clamd 1.4.6 answered OK for
//! `eicar.deb` in an archive GNU cpio made, in either format below, and
//! packed by gzip. The watch hands such members out to be scanned on
//! their own.
//!
//! The two formats cpio writes today are read: `newc` (magic `070701`, or
//! `070702` with checksums), whose header gives its numbers in hex and
//! whose name and data are padded to 4 bytes, and `odc` (`070707`), in
//! octal, unpadded. The old binary format is not. The walk stops at the
//! `TRAILER!!!` member, or at a header that is not one.

/// A header's first bytes, which decide the format.
const MAGIC: usize = 6;
/// `newc`: 13 numbers of 8 hex digits after the magic; the member's size
/// is the 7th, its name's length (with its NUL) the 12th.
const NEWC: usize = MAGIC + 13 * 8;
const NEWC_SIZE: usize = MAGIC + 6 * 8;
const NEWC_NAME: usize = MAGIC + 11 * 8;
/// `odc`: 7 numbers of 6 octal digits, the time of 11, the name's length
/// of 6 and the size of 11.
const ODC: usize = MAGIC + 7 * 6 + 11 + 6 + 11;
const ODC_NAME: usize = MAGIC + 7 * 6 + 11;
const ODC_SIZE: usize = ODC_NAME + 6;
/// The last member's name.
const TRAILER: &[u8] = b"TRAILER!!!\0";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Newc,
    Odc,
}

impl Format {
    fn of(magic: &[u8]) -> Option<Format> {
        match magic {
            b"070701" | b"070702" => Some(Format::Newc),
            b"070707" => Some(Format::Odc),
            _ => None,
        }
    }

    fn header_len(self) -> usize {
        match self {
            Format::Newc => NEWC,
            Format::Odc => ODC,
        }
    }

    /// What `newc` pads its names and data to.
    fn align(self) -> u64 {
        match self {
            Format::Newc => 4,
            Format::Odc => 1,
        }
    }
}

/// Where the walk is.
#[derive(Debug)]
enum State {
    /// At a header, `block` holding what of it has come.
    Header,
    /// Reading a member's name, then its data of `size` bytes.
    Name { left: u64, size: u64 },
    /// Passing a member's data and padding.
    Skip(u64),
    /// Not a cpio archive, or nothing more to read in it.
    Done,
}

/// Walks the cpio archive a body may be, in pieces of any size.
#[derive(Debug)]
pub(super) struct CpioWalk {
    state: State,
    /// The format, from the first header.
    format: Option<Format>,
    /// The header, or the name, being gathered.
    block: Vec<u8>,
    /// Bytes walked: the offset of the next one.
    at: u64,
}

impl Default for CpioWalk {
    fn default() -> CpioWalk {
        CpioWalk {
            state: State::Header,
            format: None,
            block: Vec::new(),
            at: 0,
        }
    }
}

impl CpioWalk {
    /// Walks on through the next bytes. Where each member's data begins,
    /// and its length, goes to `members` once the bytes reach it.
    pub(super) fn feed(&mut self, mut data: &[u8], members: &mut Vec<(u64, u64)>) {
        while !data.is_empty() {
            let n = match &mut self.state {
                State::Done => return,
                State::Skip(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    if *left == 0 {
                        self.state = State::Header;
                    }
                    n as usize
                }
                State::Header => {
                    let want = match self.format {
                        Some(format) => format.header_len(),
                        None if self.block.len() < MAGIC => MAGIC,
                        None => match Format::of(&self.block[..MAGIC]) {
                            Some(format) => {
                                self.format = Some(format);
                                continue;
                            }
                            None => {
                                self.state = State::Done;
                                return;
                            }
                        },
                    };
                    let n = (want - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..n]);
                    if self.block.len() == want && self.format.is_some() {
                        self.header();
                    }
                    n
                }
                State::Name { left, size } => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    let size = *size;
                    // Only as much of it as tells the trailer.
                    let keep = TRAILER
                        .len()
                        .saturating_sub(self.block.len())
                        .min(n as usize);
                    self.block.extend_from_slice(&data[..keep]);
                    if *left == 0 {
                        self.named(size, self.at + n, members);
                    }
                    n as usize
                }
            };
            self.at += n as u64;
            data = &data[n..];
        }
    }

    /// Reads a whole header: its name comes next, unless it is none.
    fn header(&mut self) {
        let format = self.format.expect("known by the first header");
        let h = std::mem::take(&mut self.block);
        let (size, name) = match format {
            Format::Newc => (
                number(&h[NEWC_SIZE..][..8], 16),
                number(&h[NEWC_NAME..][..8], 16),
            ),
            Format::Odc => (
                number(&h[ODC_SIZE..][..11], 8),
                number(&h[ODC_NAME..][..6], 8),
            ),
        };
        self.state = match (Format::of(&h[..MAGIC]) == Some(format), size, name) {
            (true, Some(size), Some(name)) if name > 0 => {
                // The name, and newc's padding of the header and name.
                let padded = (format.header_len() as u64 + name).next_multiple_of(format.align());
                State::Name {
                    left: padded - format.header_len() as u64,
                    size,
                }
            }
            _ => State::Done,
        };
    }

    /// Once a member's name has passed (its data begins at `data_at`):
    /// the member goes to `members`, unless it is the trailer.
    fn named(&mut self, size: u64, data_at: u64, members: &mut Vec<(u64, u64)>) {
        let name = std::mem::take(&mut self.block);
        if name == TRAILER {
            self.state = State::Done;
            return;
        }
        if size > 0 {
            members.push((data_at, size));
        }
        let format = self.format.expect("known by the first header");
        self.state = match size.next_multiple_of(format.align()) {
            0 => State::Header,
            padded => State::Skip(padded),
        };
    }
}

/// A header's number in `radix` digits, all of them digits.
fn number(digits: &[u8], radix: u32) -> Option<u64> {
    let text = std::str::from_utf8(digits).ok()?;
    if !text.chars().all(|c| c.is_digit(radix)) {
        return None;
    }
    u64::from_str_radix(text, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `eicar.deb` (580 bytes) in archives GNU cpio made: `-H newc` and
    /// `-H odc`.
    const NEWC_DEB: &[u8] = include_bytes!("../../tests/fixtures/eicar-deb.cpio");
    const ODC_DEB: &[u8] = include_bytes!("../../tests/fixtures/eicar-deb-odc.cpio");

    fn members(archive: &[u8], piece: usize) -> Vec<(u64, u64)> {
        let mut walk = CpioWalk::default();
        crate::tests::members_walked(|p, m| walk.feed(p, m), archive, piece)
    }

    /// A `newc` member.
    fn newc(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            1,
            0o100644,
            0,
            0,
            1,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        )
        .into_bytes();
        m.extend_from_slice(name);
        m.push(0);
        m.resize(m.len().next_multiple_of(4), 0);
        m.extend_from_slice(data);
        m.resize(m.len().next_multiple_of(4), 0);
        m
    }

    #[test]
    fn finds_each_member_in_pieces_of_any_size() {
        let deb = include_bytes!("../../tests/fixtures/eicar.deb");
        for (archive, at) in [(NEWC_DEB, 120), (ODC_DEB, 86)] {
            for piece in [1, 3, 110, archive.len()] {
                assert_eq!(members(archive, piece), [(at, 580)], "pieces of {piece}");
            }
            assert_eq!(&archive[at as usize..][..580], deb);
        }
        // Odd lengths of names and data, an empty member, the trailer.
        let archive = [
            newc(b"a", b"xyz"),
            newc(b"empty", b""),
            newc(b"dir/bb", &[7; 1001]),
            newc(b"TRAILER!!!", b""),
            newc(b"after", b"not read"),
        ]
        .concat();
        for piece in [1, 2, 5, 64, archive.len()] {
            assert_eq!(members(&archive, piece), [(112, 3), (352, 1001)]);
        }
    }

    #[test]
    fn other_bytes_end_the_walk() {
        assert!(members(b"070703 not a header, nor a cpio archive", 4).is_empty());
        assert!(members(&[0; 1000], 7).is_empty());
        // A size that is no number: what came before stands.
        let mut archive = [newc(b"a", b"xyz"), newc(b"b", b"data")].concat();
        archive[116 + NEWC_SIZE] = b'g';
        assert_eq!(members(&archive, 9), [(112, 3)]);
        // Every byte of a member's header set to each of a few values:
        // never a panic, never more members than there are.
        let archive = [newc(b"a", b"xyz"), newc(b"bb", &[1; 40]), newc(b"c", b"z")].concat();
        for i in 0..archive.len() {
            for value in [0, b'0', b'f', b'7', 0xff] {
                let mut damaged = archive.clone();
                damaged[i] = value;
                assert!(members(&damaged, 13).len() <= 3);
            }
        }
    }
}
