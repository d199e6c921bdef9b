//! Finds the files of an ISO 9660 image (a CD or DVD image, `.iso`) as
//! its bytes pass, so that each is watched from its start, as a tar's
//! members are. clamd opens the image and scans each file in it, but a
//! Debian package or an rpm there is not opened in turn: clamd 1.4.6
//! answered OK for EICAR in a `.deb` on an image genisoimage made. The
//! watch hands such files out to be scanned on their own.
//!
//! An image begins with 16 sectors of 2,048 bytes for the system; the
//! primary volume descriptor follows, and gives the root directory's
//! extent (where its records lie, and their length). Each directory's
//! records give the extents of its files and subdirectories. Image makers
//! put the directories first and the files after them, so the walk reads
//! each directory as the bytes reach it and learns where the files ahead
//! begin; a file whose extent lies behind the bytes already passed, which
//! no image maker writes, is not seen here (clamd still scans it).
//!
//! Only the primary volume descriptor's tree is walked: a Joliet or Rock
//! Ridge tree names the same extents otherwise. An image whose sectors are
//! not 2,048 bytes, and UDF without ISO 9660, are not walked.

use std::collections::BTreeMap;

/// The sector, and the logical block, of every image walked.
const SECTOR: u64 = 2048;
/// Where the primary volume descriptor lies: after the system area.
const DESCRIPTOR_AT: u64 = 16 * SECTOR;
const DESCRIPTOR_END: u64 = DESCRIPTOR_AT + SECTOR;
/// The descriptor's first bytes: its type (primary) and identifier.
const PRIMARY: &[u8; 6] = b"\x01CD001";
/// Where the descriptor keeps the logical block size, and the root
/// directory's record.
const BLOCK_SIZE: usize = 128;
const ROOT: usize = 156;
/// A directory record's fields: its length, the sectors of extended
/// attributes before the data, the extent's first sector and length
/// (little-endian halves of both-endian numbers), flags, name length,
/// name.
const EXTENDED: usize = 1;
const EXTENT: usize = 2;
const LENGTH: usize = 10;
const FLAGS: usize = 25;
const DIRECTORY: u8 = 2;
const NAME_LEN: usize = 32;
const NAME: usize = 33;
/// The shortest record: one with a name of one byte.
const RECORD_MIN: usize = NAME + 1;
/// The longest directory read (a few thousand files); a longer one's
/// files are not seen.
const DIRECTORY_MAX: u64 = 1 << 20;
/// The most extents known ahead at once (a few dozen bytes each); the
/// files of a directory read past that many are not seen.
const AHEAD_MAX: usize = 1 << 14;

/// A directory's or a file's extent, ahead of the bytes passed.
#[derive(Debug, Clone, Copy)]
struct Extent {
    len: u64,
    directory: bool,
}

/// Walks the directories of the ISO 9660 image a body may be, in pieces
/// of any size.
#[derive(Debug, Default)]
pub(super) struct IsoWalk {
    /// Bytes walked: the offset of the next one.
    at: u64,
    /// The primary volume descriptor, while it comes.
    descriptor: Vec<u8>,
    /// No image, or nothing more ahead in it.
    done: bool,
    /// The extents ahead, by the offset of their first byte.
    ahead: BTreeMap<u64, Extent>,
    /// The directory being read, and where its extent ends.
    reading: Option<(Vec<u8>, u64)>,
}

impl IsoWalk {
    /// Walks on through the next bytes. Where each file begins, and its
    /// length, goes to `members` once the bytes reach it.
    pub(super) fn feed(&mut self, mut data: &[u8], members: &mut Vec<(u64, u64)>) {
        while !self.done {
            self.arrive(members);
            if data.is_empty() {
                return;
            }
            // Up to the next place where something begins or ends.
            let mut until = self.at + data.len() as u64;
            if self.at < DESCRIPTOR_END {
                until = until.min(if self.at < DESCRIPTOR_AT {
                    DESCRIPTOR_AT
                } else {
                    DESCRIPTOR_END
                });
            }
            if let Some((&next, _)) = self.ahead.first_key_value() {
                until = until.min(next);
            }
            if let Some((_, end)) = &self.reading {
                until = until.min(*end);
            }
            let (taken, rest) = data.split_at((until - self.at) as usize);
            if (DESCRIPTOR_AT..DESCRIPTOR_END).contains(&self.at) {
                self.descriptor.extend_from_slice(taken);
            }
            if let Some((directory, _)) = &mut self.reading {
                directory.extend_from_slice(taken);
            }
            self.at = until;
            data = rest;
            if self.at == DESCRIPTOR_END {
                self.begin();
            }
            if self
                .reading
                .as_ref()
                .is_some_and(|(_, end)| *end == self.at)
            {
                let (directory, _) = self.reading.take().expect("being read");
                self.read_directory(&directory);
            }
        }
    }

    /// Takes the extents that begin here: a file goes to `members`, a
    /// directory is read.
    fn arrive(&mut self, members: &mut Vec<(u64, u64)>) {
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.at {
                break;
            }
            let extent = entry.remove();
            if !extent.directory {
                members.push((self.at, extent.len));
            } else if self.reading.is_none() && extent.len <= DIRECTORY_MAX {
                // One inside another's extent, as no image maker writes
                // them, is not read.
                self.reading = Some((Vec::new(), self.at + extent.len));
            }
        }
        self.done |= self.at >= DESCRIPTOR_END && self.ahead.is_empty() && self.reading.is_none();
    }

    /// Reads the primary volume descriptor, once whole: the root
    /// directory is the first extent ahead.
    fn begin(&mut self) {
        let d = std::mem::take(&mut self.descriptor);
        let block_size = d.get(BLOCK_SIZE..BLOCK_SIZE + 2);
        if !d.starts_with(PRIMARY) || block_size != Some(&(SECTOR as u16).to_le_bytes()[..]) {
            return;
        }
        if let Some((at, extent)) = record(&d[ROOT..]).filter(|(_, e)| e.directory) {
            self.expect(at, extent);
        }
    }

    /// Keeps an extent to take when the bytes reach it: one behind them,
    /// or empty, is passed over; so is one past the most kept at once.
    fn expect(&mut self, at: u64, extent: Extent) {
        if at >= self.at && extent.len > 0 && self.ahead.len() < AHEAD_MAX {
            self.ahead.entry(at).or_insert(extent);
        }
    }

    /// Reads a directory's records: the extents ahead of the bytes passed
    /// become known. A record does not cross a sector's end; the bytes
    /// after the last one of a sector are zero.
    fn read_directory(&mut self, directory: &[u8]) {
        for sector in directory.chunks(SECTOR as usize) {
            let mut rest = sector;
            while let Some(&len) = rest.first() {
                let len = len as usize;
                if len < RECORD_MIN || len > rest.len() {
                    // The sector's padding, or a damaged record.
                    break;
                }
                let (r, after) = rest.split_at(len);
                rest = after;
                let itself_or_parent = r[NAME_LEN] == 1 && r[NAME] <= 1;
                if let Some((at, extent)) = record(r).filter(|_| !itself_or_parent) {
                    self.expect(at, extent);
                }
            }
        }
    }
}

/// Where a directory record's extent begins (after its extended
/// attributes), and the extent.
fn record(r: &[u8]) -> Option<(u64, Extent)> {
    if r.len() < RECORD_MIN {
        return None;
    }
    let number = |at: usize| u64::from(u32::from_le_bytes(r[at..at + 4].try_into().unwrap()));
    let first = number(EXTENT) + u64::from(r[EXTENDED]);
    Some((
        first * SECTOR,
        Extent {
            len: number(LENGTH),
            directory: r[FLAGS] & DIRECTORY != 0,
        },
    ))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// An image genisoimage made (`-J -R`, without padding) of
    /// `pool/main/eicar.deb` (580 bytes) and `README.txt` (6 bytes).
    pub(crate) const IMAGE: &[u8] = include_bytes!("../../tests/fixtures/eicar-deb.iso");
    /// Its files: where each begins, and its length.
    const FILES: [(u64, u64); 2] = [(35 * SECTOR, 6), (36 * SECTOR, 580)];

    fn members(image: &[u8], piece: usize) -> Vec<(u64, u64)> {
        let mut walk = IsoWalk::default();
        crate::tests::members_walked(|p, m| walk.feed(p, m), image, piece)
    }

    #[test]
    fn finds_each_file_in_pieces_of_any_size() {
        for piece in [1, 7, 2048, 2049, 40_000, IMAGE.len()] {
            assert_eq!(members(IMAGE, piece), FILES, "pieces of {piece}");
        }
        let deb = &IMAGE[FILES[1].0 as usize..][..580];
        assert_eq!(deb, include_bytes!("../../tests/fixtures/eicar.deb"));
    }

    #[test]
    fn other_bytes_have_no_files() {
        assert!(members(&[0; 80_000], 4096).is_empty());
        let mut other = IMAGE.to_vec();
        other[DESCRIPTOR_AT as usize + 1] = b'X';
        assert!(members(&other, 4096).is_empty(), "not CD001");
        let mut small = IMAGE.to_vec();
        small[DESCRIPTOR_AT as usize + BLOCK_SIZE + 1] = 2;
        assert!(members(&small, 4096).is_empty(), "512-byte blocks");
        // A root directory at or behind the descriptor, or empty.
        for (lba, len) in [(0u32, 2048u32), (16, 2048), (17, 0)] {
            let mut image = IMAGE.to_vec();
            let root = DESCRIPTOR_AT as usize + ROOT;
            image[root + EXTENT..][..4].copy_from_slice(&lba.to_le_bytes());
            image[root + LENGTH..][..4].copy_from_slice(&len.to_le_bytes());
            for piece in [1, 2048, IMAGE.len()] {
                assert!(members(&image, piece).is_empty(), "root at {lba}");
            }
        }
    }

    #[test]
    fn damaged_directories_end_in_what_they_give() {
        // Every byte of the directories (sectors 28 to 33) set to each of
        // a few values, in turn: the walk ends, giving files that lie
        // ahead of it or none, and never more than the image holds.
        let directories = 28 * SECTOR as usize..34 * SECTOR as usize;
        for i in directories {
            for value in [0, 1, 0x22, 0x80, 0xff] {
                let mut image = IMAGE.to_vec();
                image[i] = value;
                let found = members(&image, 3000);
                assert!(found.len() <= 2, "byte {i} = {value}: {found:?}");
            }
        }
        // Bytes damaged anywhere, in pieces of any size: never a panic,
        // never a file beyond the image's end.
        let mut next = crate::tests::numbers(0x5eed_1509);
        for _ in 0..300 {
            let mut image = IMAGE.to_vec();
            for _ in 0..1 + next(20) {
                let at = match next(2) {
                    0 => DESCRIPTOR_AT as usize + next(SECTOR as usize),
                    _ => next(image.len()),
                };
                image[at] = next(256) as u8;
            }
            let found = members(&image, 1 + next(5000));
            assert!(
                found.iter().all(|&(at, _)| at <= image.len() as u64),
                "{found:?}"
            );
        }
        // A file the root lists behind the bytes passed is not seen.
        let mut behind = IMAGE.to_vec();
        let readme = 28 * SECTOR as usize + 136 + 102 + 114;
        assert_eq!(behind[readme + NAME], b'R');
        behind[readme + EXTENT..readme + EXTENT + 4].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(members(&behind, 1000), FILES[1..]);
    }
}
