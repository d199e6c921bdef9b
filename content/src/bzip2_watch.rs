//! Finds a bzip2 stream that follows another in the same file. bzip2,
//! Python's bz2 module and libarchive unpack every stream of a `.bz2`
//! file one after the other (pbzip2 writes one per 900 kB of input;
//! lbzip2 writes one stream), while clamd 1.4.6 unpacks the first only:
//! EICAR in a second stream, even after an empty first one, was OK.
//!
//! A stream begins, on a byte boundary, with `BZh`, the block size digit,
//! and a block's 48-bit magic; it ends with the 48-bit end-of-stream
//! magic and a 32-bit checksum, at any bit, padded with up to seven bits
//! to the next byte. So a stream begins right after another when the 80
//! bits that end before it, less its padding, start with that magic. Two
//! separate files never touch so: a tar or a zip puts a header between
//! its members. The packed data itself is not unpacked here.

/// A stream's first bytes after the block size digit: a block's magic.
const BLOCK_MAGIC: [u8; 6] = [0x31, 0x41, 0x59, 0x26, 0x53, 0x59];
/// The end-of-stream magic, 48 bits.
const END_MAGIC: u64 = 0x1772_4538_5090;
/// A stream's beginning: `BZh`, the size digit, the block magic.
pub(super) const HEAD: usize = 10;
/// The bytes before a stream's beginning that hold the end of the one
/// before: 80 bits and up to 7 of padding.
pub(super) const BEFORE: usize = 11;
/// What is kept of the bytes seen, for a beginning that a piece's edge
/// cuts.
const KEEP: usize = BEFORE + HEAD;

/// Watches a body, in pieces of any size, for a bzip2 stream that begins
/// where another ends.
#[derive(Debug, Default)]
pub(super) struct Bzip2Watch {
    /// The last bytes seen, `kept` of them, up to [`KEEP`]: kept in place,
    /// since every body's every piece passes here.
    tail: [u8; KEEP],
    kept: usize,
    /// Bytes seen so far.
    seen: u64,
}

impl Bzip2Watch {
    /// Looks at the next bytes: the offsets, among all the bytes seen, of
    /// the streams found in them that begin right after another.
    pub(super) fn feed(&mut self, data: &[u8]) -> Vec<u64> {
        // Beginnings that end in `data` but start within its first BEFORE
        // bytes: judged on the kept bytes joined to data's first ones.
        let kept = self.kept;
        let mut seam = [0u8; 2 * KEEP];
        let joined = kept + data.len().min(KEEP);
        seam[..kept].copy_from_slice(&self.tail[..kept]);
        seam[kept..joined].copy_from_slice(&data[..joined - kept]);
        let seam = &seam[..joined];
        let seam_at = self.seen - kept as u64;
        let mut found: Vec<u64> = (0..joined.saturating_sub(HEAD - 1))
            .filter(|&at| at + HEAD > kept && at < kept + BEFORE)
            .filter(|&at| follows_a_stream(seam, at))
            .map(|at| seam_at + at as u64)
            .collect();
        // The rest, within `data` alone.
        found.extend(
            memchr::memmem::find_iter(data, b"BZh")
                .filter(|&at| at >= BEFORE)
                .filter(|&at| follows_a_stream(data, at))
                .map(|at| self.seen + at as u64),
        );
        self.seen += data.len() as u64;
        // The last KEEP bytes of the kept ones and `data` together.
        let last = if data.len() >= KEEP { data } else { seam };
        let last = &last[last.len().saturating_sub(KEEP)..];
        self.tail[..last.len()].copy_from_slice(last);
        self.kept = last.len();
        found
    }
}

/// Whether a stream begins at `at` in `bytes`, right after the end of
/// another.
fn follows_a_stream(bytes: &[u8], at: usize) -> bool {
    let Some(head) = bytes.get(at..at + HEAD) else {
        return false;
    };
    if &head[..3] != b"BZh" || !(b'1'..=b'9').contains(&head[3]) || head[4..] != BLOCK_MAGIC {
        return false;
    }
    if at < BEFORE {
        return false;
    }
    let before = &bytes[at - BEFORE..at];
    let bits = before.iter().fold(0u128, |n, &b| n << 8 | u128::from(b));
    // The end magic, then 32 bits of checksum, then `pad` bits.
    (0..8).any(|pad| (bits >> (pad + 32)) as u64 & ((1 << 48) - 1) == END_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bzip2 streams as `bzip2` writes them, of `data` (from Python's bz2
    /// module): one of "readme\n" ten times, and an empty one.
    const README: &[u8] = &[
        0x42, 0x5a, 0x68, 0x39, 0x31, 0x41, 0x59, 0x26, 0x53, 0x59, 0x48, 0xad, 0xc0, 0x38, 0x00,
        0x00, 0x22, 0xc1, 0x80, 0x00, 0x10, 0x26, 0x02, 0x10, 0x00, 0x20, 0x00, 0x20, 0xa5, 0x43,
        0x20, 0xc0, 0x3c, 0x4e, 0xa6, 0x26, 0xa6, 0xa6, 0xa7, 0xc5, 0xdc, 0x91, 0x4e, 0x14, 0x24,
        0x12, 0x2b, 0x70, 0x0e, 0x00,
    ];
    const EMPTY: &[u8] = &[
        0x42, 0x5a, 0x68, 0x39, 0x17, 0x72, 0x45, 0x38, 0x50, 0x90, 0x00, 0x00, 0x00, 0x00,
    ];

    /// Where streams that follow another begin in `bytes`, the same in
    /// pieces of any size.
    fn watch(bytes: &[u8]) -> Vec<u64> {
        let mut seen = None;
        for piece in [1, 2, 5, 10, 11, 21, 22, 64, bytes.len().max(1)] {
            let mut w = Bzip2Watch::default();
            let found: Vec<u64> = bytes.chunks(piece).flat_map(|p| w.feed(p)).collect();
            if let Some(seen) = &seen {
                assert_eq!(&found, seen, "pieces of {piece}");
            }
            seen = Some(found);
        }
        seen.unwrap()
    }

    #[test]
    fn a_stream_after_another_is_found() {
        let (r, e) = (README.len() as u64, EMPTY.len() as u64);
        assert_eq!(watch(&[README, README].concat()), [r]);
        assert_eq!(watch(&[EMPTY, README].concat()), [e]);
        assert_eq!(
            watch(&[b"prefix".as_slice(), README, EMPTY, README].concat()),
            [6 + r + e]
        );
        assert_eq!(watch(&[README, README, README].concat()), [r, 2 * r]);
    }

    #[test]
    fn one_stream_or_separate_files_are_not() {
        let none: [u64; 0] = [];
        assert_eq!(watch(README), none);
        assert_eq!(watch(&[README, EMPTY].concat()), none);
        // Two files with anything between them, as in a tar or a zip.
        assert_eq!(watch(&[README, b"\0".as_slice(), README].concat()), none);
        assert_eq!(watch(&[README, &[0u8; 512], README].concat()), none);
        assert_eq!(watch(b"BZh91AY&SY"), none);
        assert_eq!(
            watch(&[b"BZh91AY&SY".repeat(3), b"x".repeat(30)].concat()),
            none
        );
    }
}
