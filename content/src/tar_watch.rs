//! Walks a tar archive's headers for the ones that end clamd's reading of
//! it while tar, Python's tarfile and libarchive read on (seen with clamd
//! 1.4.6; libclamav's untar.c). Past such a header clamd unpacks no
//! member, so a gzip, bzip2 or zip member there is never opened, and clamd
//! answers OK for EICAR in it:
//!
//! - A header whose name begins with a NUL byte: clamd takes it for the
//!   zero block that ends an archive. tar substitutes `.` for the name,
//!   Python lists it as `''`, libarchive skips it, and all three read on.
//! - A member whose pax header (`x`, or a global `g`) gives another size
//!   than its own header: clamd goes by the header's and reads the next
//!   header where there is none, tar, Python and libarchive by the pax
//!   one.
//! - In an archive whose first header carries the `ustar` magic, a later
//!   header without it: clamd gives the archive up, the others read on.
//! - A volume header with a size: tar and Python's tarfile skip that much
//!   data, clamd reads the next header right after it, where the data can
//!   hold one that leads it past the members that follow.
//!
//! Each member clamd unpacks (a file) is handed on, so that its bytes are
//! watched from their start as well, as clamd sees them.
//!
//! Like clamd and tar, the walk reads on at the next block after a header
//! whose checksum fails or whose size tar cannot read, and reads the data
//! of a link, directory, device or fifo header as headers (tar and Python
//! extract so too, though `tar -t` lists as if tar skipped it). It stops
//! at the archive's end, a zero block.

use super::zip_watch::Unopened;

/// Tar's block: headers take one, and members' data is padded to whole
/// blocks.
const BLOCK: usize = 512;
/// Where a header keeps its fields.
const SIZE: std::ops::Range<usize> = 124..136;
const CHECKSUM: std::ops::Range<usize> = 148..156;
const TYPE: usize = 156;
const MAGIC: std::ops::Range<usize> = 257..262;
/// The longest pax header read; a longer one (real ones hold a few
/// records of a few hundred bytes) is reported, since its size record
/// could not be read.
const PAX_MAX: u64 = 64 << 10;

/// Where the walk is.
#[derive(Debug)]
enum State {
    /// At a header block (the first one decides whether this is a tar at
    /// all), `block` holding what of it has come.
    Header,
    /// Passing a member's data and padding.
    Skip(u64),
    /// Reading a pax header's records, then passing `pad` bytes.
    Pax { left: u64, pad: u64, global: bool },
    /// Not a tar, or nothing more to read in it.
    Done,
}

/// Walks the headers of the tar archive a body may be, in pieces of any
/// size.
#[derive(Debug)]
pub(super) struct TarWalk {
    state: State,
    /// The header block being gathered, or the pax records.
    block: Vec<u8>,
    /// Whether a header has been read: the first decides.
    begun: bool,
    /// Whether the first header carries the `ustar` magic, as clamd then
    /// asks of every other.
    posix: bool,
    /// The size the last pax header gives the next member.
    pax_size: Option<u64>,
    /// Bytes walked: the offset of the next one.
    at: u64,
    /// The data length of the member whose header was just read, while
    /// not yet handed on.
    member: Option<u64>,
}

impl Default for TarWalk {
    fn default() -> TarWalk {
        TarWalk {
            state: State::Header,
            block: Vec::new(),
            begun: false,
            posix: false,
            pax_size: None,
            at: 0,
            member: None,
        }
    }
}

impl TarWalk {
    /// Walks on through the next bytes; what keeps clamd out, once found.
    /// Where the data of each member clamd unpacks begins, and its length,
    /// goes to `members`.
    pub(super) fn feed(&mut self, data: &[u8], members: &mut Vec<(u64, u64)>) -> Option<Unopened> {
        let start = self.at;
        self.at += data.len() as u64;
        self.walk(data, start, members)
    }

    fn walk(
        &mut self,
        mut data: &[u8],
        start: u64,
        members: &mut Vec<(u64, u64)>,
    ) -> Option<Unopened> {
        let end = start + data.len() as u64;
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return None,
                State::Skip(left) => {
                    let n = (*left).min(data.len() as u64);
                    *left -= n;
                    data = &data[n as usize..];
                    if *left == 0 {
                        self.state = State::Header;
                    }
                }
                State::Pax { left, pad, global } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    self.block.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    *left -= n as u64;
                    if *left == 0 {
                        let size = pax_size(&self.block);
                        if *global && size.is_some() {
                            return Some(Unopened::TarPaxSize);
                        }
                        self.pax_size = size;
                        self.block.clear();
                        self.state = match *pad {
                            0 => State::Header,
                            pad => State::Skip(pad),
                        };
                    }
                }
                State::Header => {
                    let n = (BLOCK - self.block.len()).min(data.len());
                    self.block.extend_from_slice(&data[..n]);
                    data = &data[n..];
                    if self.block.len() == BLOCK {
                        let header = std::mem::take(&mut self.block);
                        if let Some(what) = self.header(&header) {
                            self.state = State::Done;
                            return Some(what);
                        }
                        if let Some(len) = self.member.take() {
                            members.push((end - data.len() as u64, len));
                        }
                    }
                }
            }
        }
        None
    }

    /// Reads a whole header block and sets the state after it.
    fn header(&mut self, h: &[u8]) -> Option<Unopened> {
        self.state = State::Done;
        if h.iter().all(|&b| b == 0) {
            return None;
        }
        if !checksum_holds(h) {
            // Not a tar, or a damaged block, which clamd and tar both pass
            // to try the next.
            if self.begun {
                self.state = State::Header;
            }
            return None;
        }
        let magic = &h[MAGIC] == b"ustar";
        if !self.begun {
            self.begun = true;
            self.posix = magic;
        } else if self.posix && !magic {
            return Some(Unopened::TarMagic);
        }
        if h[0] == 0 {
            return Some(Unopened::TarEmptyName);
        }
        // A size tar cannot read: it and clamd read on at the next block.
        self.state = State::Header;
        let size = read_size(&h[SIZE])?;
        let padded = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        match h[TYPE] {
            b'x' | b'g' | b'X' => {
                if size > PAX_MAX {
                    return Some(Unopened::TarPaxSize);
                }
                self.state = if size == 0 {
                    State::Header
                } else {
                    State::Pax {
                        left: size,
                        pad: padded - size,
                        global: h[TYPE] == b'g',
                    }
                };
                return None;
            }
            // clamd reads no data after a volume header, tar skips it.
            b'V' if size > 0 => return Some(Unopened::TarVolumeData),
            // Nor after these, and nor do tar and Python when they extract:
            // such data is read as headers.
            b'1'..=b'6' => return None,
            _ => {}
        }
        if self.pax_size.take().is_some_and(|said| said != size) {
            return Some(Unopened::TarPaxSize);
        }
        // A file, or a long name or other record clamd passes over.
        if size > 0 && !matches!(h[TYPE], b'K' | b'L' | b'N' | b'A' | b'E' | b'I') {
            self.member = Some(size);
        }
        self.state = if padded == 0 {
            State::Header
        } else {
            State::Skip(padded)
        };
        None
    }
}

/// Whether a header's checksum field holds the sum of its bytes (the
/// field counted as spaces), taken unsigned as POSIX has it or signed as
/// some old tars wrote it; tar, Python and clamd accept either.
fn checksum_holds(h: &[u8]) -> bool {
    let Some(said) = octal(&h[CHECKSUM]) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (i, &b) in h.iter().enumerate() {
        let b = if CHECKSUM.contains(&i) { b' ' } else { b };
        unsigned += i64::from(b);
        signed += i64::from(b as i8);
    }
    said as i64 == unsigned || said as i64 == signed
}

/// A member's size as tar reads it: octal digits between leading spaces
/// and a trailing space or NUL, or GNU's base-256 with the top bit set.
fn read_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        if field[0] != 0x80 {
            return None;
        }
        return field[1..]
            .iter()
            .try_fold(0u64, |n, &b| n.checked_mul(256).map(|n| n + u64::from(b)));
    }
    octal(field)
}

/// An octal number between leading spaces and trailing spaces or NULs.
fn octal(field: &[u8]) -> Option<u64> {
    let digits = field.iter().skip_while(|&&b| b == b' ');
    let mut n: Option<u64> = None;
    let mut ended = false;
    for &b in digits {
        match b {
            b'0'..=b'7' if !ended => {
                n = Some(n.unwrap_or(0).checked_mul(8)? + u64::from(b - b'0'));
            }
            b' ' | 0 => ended = true,
            _ => return None,
        }
    }
    n
}

/// The value of the last `size` record of a pax header (records are
/// `LEN key=value\n`, LEN counting the whole record), when it has one.
fn pax_size(mut records: &[u8]) -> Option<u64> {
    let mut size = None;
    while !records.is_empty() {
        let space = records.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&records[..space]).ok()?.parse().ok()?;
        if len <= space + 1 || len > records.len() {
            return size;
        }
        let record = &records[space + 1..len];
        if let Some(value) = record.strip_prefix(b"size=") {
            let value = value.strip_suffix(b"\n").unwrap_or(value);
            size = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        }
        records = &records[len..];
    }
    size
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// A ustar header block (or a v7 one, without `magic`).
    fn header(name: &[u8], size: u64, kind: u8, magic: bool) -> Vec<u8> {
        let mut h = vec![0u8; BLOCK];
        h[..name.len()].copy_from_slice(name);
        h[100..108].copy_from_slice(b"0000644\0");
        h[SIZE].copy_from_slice(format!("{size:011o}\0").as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[TYPE] = kind;
        if magic {
            h[257..265].copy_from_slice(b"ustar\x0000");
        }
        seal(&mut h);
        h
    }

    fn seal(h: &mut [u8]) {
        h[CHECKSUM].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[CHECKSUM].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    }

    /// A ustar member holding `data`, padded to whole blocks.
    pub(crate) fn member(name: &[u8], data: &[u8]) -> Vec<u8> {
        let mut m = header(name, data.len() as u64, b'0', true);
        m.extend_from_slice(data);
        m.resize(m.len().div_ceil(BLOCK) * BLOCK, 0);
        m
    }

    fn pax(records: &[(&str, &str)], kind: u8) -> Vec<u8> {
        let mut body = Vec::new();
        for (k, v) in records {
            let rest = format!(" {k}={v}\n");
            let mut len = rest.len() + 1;
            while len != rest.len() + len.to_string().len() {
                len = rest.len() + len.to_string().len();
            }
            body.extend_from_slice(format!("{len}{rest}").as_bytes());
        }
        let mut m = header(b"PaxHeaders/x", body.len() as u64, kind, true);
        m.extend_from_slice(&body);
        m.resize(m.len().div_ceil(BLOCK) * BLOCK, 0);
        m
    }

    fn archive(parts: &[Vec<u8>]) -> Vec<u8> {
        let mut a = parts.concat();
        a.extend_from_slice(&[0u8; 2 * BLOCK]);
        a
    }

    /// What the walk finds with `bytes` fed in pieces of each size.
    fn walk(bytes: &[u8]) -> Option<Unopened> {
        let mut seen = None;
        for piece in [1, 7, 511, 512, 513, 4096, bytes.len().max(1)] {
            let mut w = TarWalk::default();
            let found = bytes.chunks(piece).find_map(|p| w.feed(p, &mut Vec::new()));
            if piece > 1 {
                assert_eq!(found, seen, "pieces of {piece}");
            }
            seen = found;
        }
        seen
    }

    fn gz_member() -> Vec<u8> {
        member(b"eicar.gz", &[0x1f, 0x8b, 8, 0, 1, 2, 3])
    }

    #[test]
    fn archives_as_tar_writes_them_are_left_alone() {
        let long = "d/".repeat(80) + "file";
        let a = archive(&[
            member(b"readme.txt", b"hello\n"),
            pax(&[("path", &long), ("mtime", "1.5")], b'x'),
            member(b"d/d/file", &[7u8; 1500]),
            pax(&[("size", "600")], b'x'),
            member(b"big", &[1u8; 600]),
            header(b"dir/", 0, b'5', true),
            header(b"link", 0, b'2', true),
            gz_member(),
        ]);
        assert_eq!(walk(&a), None);
        // v7 archives, and what is not a tar at all.
        let v7 = [header(b"a", 3, b'0', false), vec![0; BLOCK]].concat();
        assert_eq!(walk(&v7), None);
        assert_eq!(walk(&[b'x'; 5000]), None);
        assert_eq!(walk(b"PK\x03\x04"), None);
    }

    #[test]
    fn a_header_with_an_empty_name_is_found() {
        let a = archive(&[
            member(b"readme.txt", b"hello\n"),
            header(b"", 0, b'0', true),
            gz_member(),
        ]);
        assert_eq!(walk(&a), Some(Unopened::TarEmptyName));
        let a = archive(&[header(b"\0x", 0, b'5', true), gz_member()]);
        assert_eq!(walk(&a), Some(Unopened::TarEmptyName));
    }

    #[test]
    fn a_pax_size_other_than_the_headers_is_found() {
        let mut readme = member(b"readme.txt", &[b'A'; 512]);
        readme[SIZE].copy_from_slice(b"00000010000\0");
        seal(&mut readme[..BLOCK]);
        let a = archive(&[pax(&[("size", "512")], b'x'), readme, gz_member()]);
        assert_eq!(walk(&a), Some(Unopened::TarPaxSize));
        // In a global header, which tar applies to every member after it.
        let a = archive(&[pax(&[("size", "512")], b'g'), member(b"a", &[0; 512])]);
        assert_eq!(walk(&a), Some(Unopened::TarPaxSize));
        // A pax header too long to read through.
        let filler = "z".repeat(PAX_MAX as usize);
        let a = archive(&[pax(&[("comment", &filler)], b'x'), gz_member()]);
        assert_eq!(walk(&a), Some(Unopened::TarPaxSize));
    }

    #[test]
    fn a_later_header_without_the_ustar_magic_is_found() {
        let a = archive(&[
            member(b"a.txt", &[b'A'; 512]),
            header(b"b.txt", 0, b'0', false),
            gz_member(),
        ]);
        assert_eq!(walk(&a), Some(Unopened::TarMagic));
        // A v7 archive throughout is clamd's to read.
        let a = archive(&[header(b"a", 0, b'0', false), header(b"b", 0, b'0', false)]);
        assert_eq!(walk(&a), None);
    }

    #[test]
    fn a_volume_header_with_data_is_found() {
        let mut a = archive(&[member(b"vol", &[b'J'; 1024]), gz_member()]);
        a[TYPE] = b'V';
        seal(&mut a[..BLOCK]);
        assert_eq!(walk(&a), Some(Unopened::TarVolumeData));
        // Without data, as tar writes it.
        let a = archive(&[header(b"vol", 0, b'V', true), gz_member()]);
        assert_eq!(walk(&a), None);
    }

    #[test]
    fn the_walk_reads_on_where_clamd_and_tar_do() {
        // Past a damaged header, or one whose size tar cannot read, to the
        // next block.
        let mut bad = member(b"a.txt", b"x");
        bad[0] = b'b';
        let a = archive(&[member(b"readme", b"r"), bad, header(b"", 0, b'0', true)]);
        assert_eq!(walk(&a), Some(Unopened::TarEmptyName));
        let mut odd = header(b"a.txt", 0, b'0', true);
        odd[SIZE].copy_from_slice(b"00000009000\0");
        seal(&mut odd);
        let a = archive(&[odd, header(b"", 0, b'0', true)]);
        assert_eq!(walk(&a), Some(Unopened::TarEmptyName));
        // Into a link's, a directory's or a device's data, as the readers
        // extract.
        for kind in b'1'..=b'6' {
            let mut a = archive(&[member(b"d", &header(b"", 0, b'0', true))]);
            a[TYPE] = kind;
            seal(&mut a[..BLOCK]);
            assert_eq!(walk(&a), Some(Unopened::TarEmptyName), "{}", kind as char);
        }
        // Not past the end.
        let a = [archive(&[member(b"a", b"x")]), header(b"", 0, b'0', true)].concat();
        assert_eq!(walk(&a), None);
    }

    #[test]
    fn the_members_clamd_unpacks_are_handed_on() {
        let long = "d/".repeat(80) + "file";
        let a = archive(&[
            member(b"readme.txt", b"hello\n"),
            pax(&[("path", &long)], b'x'),
            member(b"d/d/file", &[7u8; 1500]),
            header(b"dir/", 0, b'5', true),
            member(b"empty", b""),
            gz_member(),
        ]);
        for piece in [1, 100, 512, a.len()] {
            let mut w = TarWalk::default();
            let mut members = Vec::new();
            for p in a.chunks(piece) {
                assert_eq!(w.feed(p, &mut members), None);
            }
            // The pax header takes a header and a block of records.
            assert_eq!(
                members,
                [(512, 6), (5 * 512, 1500), (11 * 512, 7)],
                "pieces of {piece}"
            );
        }
    }

    #[test]
    fn each_member_is_watched_from_its_start() {
        use crate::zip_watch::ZipWatch;
        // Many members in one piece: each closes before the next opens.
        let many: Vec<Vec<u8>> = (0..40)
            .map(|i| member(format!("f{i}").as_bytes(), &[b'x'; 100]))
            .collect();
        let mut w = ZipWatch::default();
        w.observe(&archive(&many));
        assert_eq!(w.found(), None);
        // A member that is a tar clamd stops reading early.
        let inner = archive(&[member(b"a", b"a"), header(b"", 0, b'0', true), gz_member()]);
        let a = archive(&[member(b"readme", b"r"), member(b"inner.tar", &inner)]);
        for piece in [1, 512, a.len()] {
            let mut w = ZipWatch::default();
            a.chunks(piece).for_each(|p| w.observe(p));
            assert_eq!(w.found(), Some(Unopened::TarEmptyName), "pieces of {piece}");
        }
    }

    #[test]
    fn sizes_are_read_as_tar_reads_them() {
        assert_eq!(read_size(b"00000001000\0"), Some(512));
        assert_eq!(read_size(b"   00001000 "), Some(512));
        assert_eq!(read_size(b"\x80\0\0\0\0\0\0\0\0\0\x02\0"), Some(512));
        assert_eq!(read_size(b"0x000001000\0"), None);
        assert_eq!(read_size(b"00000009000\0"), None);
        assert_eq!(read_size(b"0000 0001000"), None);
        assert_eq!(pax_size(b"12 size=512\n20 path=a/b/c/d/e/f\n"), Some(512));
        assert_eq!(pax_size(b"9 path=a\n"), None);
    }
}
