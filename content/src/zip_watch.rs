//! Spots the zip records that clamd answers OK for without opening what
//! they hold, while unzip, 7-Zip or WinZip open it (seen with clamd 1.4.6;
//! libclamav's unzip.c):
//!
//! - ZIP64 (ClamAV issue 1527): a local file header whose sizes are in a
//!   ZIP64 extra field (0xFFFFFFFF in the header), or an
//!   end-of-central-directory record whose directory offset or size is.
//!   Info-ZIP writes these with `zip -fz` or from a pipe, Python with
//!   `force_zip64`. clamd then opens nothing in the archive.
//! - An entry packed with a method clamd does not unpack: LZMA, PPMd, XZ or
//!   Zstandard (7-Zip and WinZip offer them), and the older or rarer ones.
//!   clamd unpacks stored, deflate, deflate64, bzip2 and implode entries.
//! - A packed entry that the archive's central directory does not list,
//!   and that lies inside no listed entry: clamd unpacks what the
//!   directory lists, while an unzipper that reads the entries in order
//!   (`bsdtar -x` from a pipe, Java's `ZipInputStream`) extracts it too.
//! - An entry whose local header gives another method or packed length
//!   than its directory entry, or alone claims encryption: clamd unpacks
//!   by the local header and skips it or fails, Python's zipfile goes by
//!   the directory and extracts it (unzip too, for the encryption flag).
//! - Two zip archives one after the other (not the one inside the other's
//!   entry): clamd answers OK for EICAR in either, unzip and Python's
//!   zipfile extract the last, a streaming unzipper the first.
//! - A gzip file whose header sets a reserved flag: clamd does not unpack
//!   it, Python's gzip module does (gunzip and libarchive refuse it).
//!
//! - A tar archive clamd stops reading early (`tar_watch`).
//! - A bzip2 file of more than one stream, of which clamd unpacks the
//!   first only (`bzip2_watch`), unless its content is handed out: the
//!   file these bytes begin with, once its second stream shows, if its
//!   first one's content was kept (up to `FIRST_STREAM_KEPT`).
//! - A zstd file inside another: clamd 1.4 does not unpack zstd.
//! - An ar archive or an rpm package inside another, whose members clamd
//!   does not see into (`ar::ArWalk`).
//!
//! The last two are reported only where the scan does not take them
//! apart itself: as the body (or an ar member), or as a tar member, a
//! cpio member (`cpio_walk`), a file on an ISO 9660 image
//! (`iso_walk`), a zip entry or a
//! gzip, xz or bzip2 file's content that the watch hands out
//! ([`ZipWatch::take_extracted`]) to be scanned on its own.
//!
//! A body with such a record is reported, and the scan cannot call it
//! clean. Encrypted entries are left to clamd's `AlertEncryptedArchive`.
//! In bytes that do not begin as a zip, a record counts only where
//! unzippers would find a zip (a self-extractor's): with an end record in
//! the last 64 KiB whose directory begins where it says. Elsewhere it is
//! most likely a program's code that looks for the signature.
//!
//! The body's own bytes are watched, and what clamd unpacks from them in
//! the ways most archives are packed: a gzip, xz or bzip2 file (`.gz`,
//! `.tar.gz`, `.tar.xz`, `.tar.bz2`; a tar keeps its files' bytes as they
//! are; all of a bzip2 file's streams, and an xz file only if its
//! dictionary is at most 8 MiB, or at most 64 MiB while one of the
//! server's `BIG_XZ_MAX` slots for those is free) and a zip's deflated,
//! Deflate64, bzip2 and imploded entries (implode: when the header gives
//! the sizes, as PKZIP 1 wrote them); and a
//! zip's stored entries, a tar's or a cpio archive's members and an ISO
//! image's files, from their start. Each is
//! unpacked here, as it passes, into a watch of its own, down to `DEPTH`
//! levels (a zip in a zip in a `.tar.gz`), and up to `WATCHED` unpacked
//! bytes in all. An archive inside another that is packed any other way (a
//! 7z or rar file) is out of sight here,
//! as the zips in it are out of clamd's.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use memchr::memmem;
use miniz_oxide::inflate::stream::InflateState;
use miniz_oxide::DataFormat;

use super::ar::{self, ArWalk};
use super::bzip2_watch::{self, Bzip2Watch};
use super::cpio_walk::CpioWalk;
use super::decode;
use super::explode::Explode;
use super::iso_walk::IsoWalk;
use super::rpm;
use super::tar_watch::TarWalk;

/// A local file header: signature, flags at 6, method at 8, sizes at 18
/// and 22, the lengths of the name and the extra field at 26 and 28; the
/// entry's data follows them.
const LOCAL: &[u8; 4] = b"PK\x03\x04";
const LOCAL_LEN: usize = 30;
/// A central directory entry: signature, the compressed size at 20, the
/// local header's offset at 42.
const CENTRAL: &[u8; 4] = b"PK\x01\x02";
const CENTRAL_LEN: usize = 46;
/// An end-of-central-directory record: signature, then the count of entries
/// at 10, the directory's size at 12 and its offset at 16.
const END: &[u8; 4] = b"PK\x05\x06";
const END_LEN: usize = 20;
/// A ZIP64 end record's locator, which unzippers read right before the
/// end record.
const LOCATOR: &[u8; 4] = b"PK\x06\x07";
/// A data descriptor, after an entry's data when its local header leaves
/// the sizes out: the signature, the CRC, and the packed and unpacked
/// lengths (32 bits each; ZIP64's 64-bit ones are not read).
const DESCRIPTOR: &[u8; 4] = b"PK\x07\x08";
const DESCRIPTOR_LEN: usize = 16;
const LOCATOR_LEN: u64 = 20;
/// Each record's signature and the bytes it needs whole to be judged.
const SIGNATURES: [(&[u8; 4], usize); 5] = [
    (LOCAL, LOCAL_LEN),
    (CENTRAL, CENTRAL_LEN),
    (END, END_LEN),
    (LOCATOR, 4),
    (DESCRIPTOR, DESCRIPTOR_LEN),
];
/// What a record may need of the bytes after its signature's start.
const LONGEST: usize = CENTRAL_LEN;
/// ZIP64's "see the extra field" value.
const IN_ZIP64: u32 = u32::MAX;
/// General purpose flag bit 0: the entry is encrypted.
const ENCRYPTED: u16 = 1;
/// General purpose flag bit 3: the sizes follow the data (the header's may
/// be 0).
const SIZES_AFTER: u16 = 8;
/// The packing methods clamd unpacks.
const STORED: u16 = 0;
const IMPLODED: u16 = 6;
const DEFLATED: u16 = 8;
const DEFLATE64: u16 = 9;
const BZIP2: u16 = 12;
/// How a gzip file begins: magic, then deflate; then the flags, of which
/// these must be 0.
const GZIP: [u8; 3] = [0x1f, 0x8b, 8];
const GZIP_RESERVED: u8 = 0xe0;
/// How a zstd file begins: a frame's magic (clamd 1.4 does not unpack
/// zstd).
const ZSTD: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
/// How an xz file begins.
const XZ: [u8; 6] = [0xfd, b'7', b'z', b'X', b'Z', 0];
/// How a bzip2 file begins; then its block size, '1' to '9'.
const BZIP2_MAGIC: &[u8; 3] = b"BZh";
/// The first bytes that tell any of them: gzip's magic and flags, zstd's
/// magic, xz's, bzip2's and its block size.
const PACKED_HEAD: usize = 6;
/// How far from the end of the bytes an end record may begin and still be
/// found by unzip and Python's zipfile, which look for it backwards over
/// its 22 bytes and the longest comment it may have.
const END_REACH: u64 = 22 + 65_535;
/// The most unpacked bytes watched for one body, at all levels together
/// (about a second of CPU); clamd's own limits (with `AlertExceedsMax`)
/// speak for what lies beyond.
const WATCHED: u64 = 256 << 20;
/// Levels of unpacking: the body, then up to three archives deep.
const DEPTH: u8 = 3;
/// Deflated entries unpacked at once for one body, at all levels together
/// (each holds about 75 KB). Entries follow one another, and a zip in a zip
/// in a zip has three open; but an entry header may also show in another's
/// data: an inner zip that deflate kept as it was (it does with packed
/// data), or one put there to be skipped. More than this at once is no
/// archive a tool writes.
const OPEN_MAX: usize = 16;
/// Unpacked bytes handed on at a time.
const PIECE: usize = 32 * 1024;
/// The most deflated bytes unpacked on the runtime's own thread: deflate
/// makes at most 1,032 bytes of one, so these make up to 16 MiB, some
/// milliseconds of work. More, and xz or bzip2 data of any length, are
/// unpacked with the runtime's other tasks moved to another thread.
const UNPACKED_IN_PLACE: usize = 16 * 1024;
/// Local headers and central directory entries kept by one watch to find
/// unlisted entries (32 to 40 bytes each); an archive with more is not
/// checked for them.
const LAYOUT_MAX: usize = 1 << 14;
/// End records checked by one watch.
const ENDS_MAX: usize = 16;

/// A zip record that keeps clamd out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unopened {
    /// A local file header with its sizes in ZIP64 fields.
    Zip64Local,
    /// An end-of-central-directory record with its directory in ZIP64
    /// fields.
    Zip64End,
    /// An entry packed with this method (APPNOTE 4.4.5).
    Method(u16),
    /// More than `OPEN_MAX` entries open at once, or `BUNZIP_MAX`
    /// packed with bzip2, overlapping one another.
    Overlapping,
    /// A zip file followed or preceded by another whole archive that is not
    /// inside one of its entries.
    Concatenated,
    /// A gzip file whose header sets these flags, reserved ones among them.
    GzipFlags(u8),
    /// A compressed entry that the archive's central directory does not
    /// list, nor lies inside a listed one.
    Unlisted,
    /// An entry whose local header and directory entry name another
    /// method or length, or only one of them encryption.
    Disagreeing,
    /// A tar header whose name begins with a NUL byte (`tar_watch`).
    TarEmptyName,
    /// A tar member whose pax header gives another size than its own
    /// header, or a pax header too long to read.
    TarPaxSize,
    /// A tar header without the `ustar` magic after one with it.
    TarMagic,
    /// A tar volume header with data.
    TarVolumeData,
    /// A bzip2 stream right after another (`bzip2_watch`).
    Bzip2Streams,
    /// A zstd file inside another.
    Zstd,
    /// An ar archive or an rpm package inside another, with a packed or
    /// tar member (`ar::ArWalk`).
    ArPacked,
}

impl fmt::Display for Unopened {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unopened::Zip64Local => {
                f.write_str("a ZIP64 local file header: clamd does not open ZIP64 archives")
            }
            Unopened::Zip64End => {
                f.write_str("a ZIP64 end of central directory: clamd does not open ZIP64 archives")
            }
            Unopened::Method(m) => write!(
                f,
                "a zip entry packed with {} (method {m}), which clamd does not unpack",
                method_name(*m)
            ),
            Unopened::Disagreeing => f.write_str(
                "a zip entry whose local header gives another method, length or encryption \
                 than the central directory: clamd does not unpack it by the local header, \
                 Python's zipfile does by the directory",
            ),
            Unopened::GzipFlags(flags) => write!(
                f,
                "a gzip file whose header sets reserved flags ({flags:#04x}): clamd does not \
                 unpack it, Python's gzip module does"
            ),
            Unopened::Concatenated => f.write_str(
                "two zip archives one after the other: clamd answers OK for what either holds, \
                 unzip and Python's zipfile extract the last one, streaming unzippers the first",
            ),
            Unopened::Unlisted => f.write_str(
                "a packed zip entry the central directory does not list: clamd does not unpack \
                 it, unzippers that read the entries in order (streaming ones) do",
            ),
            Unopened::TarEmptyName => f.write_str(
                "a tar header with an empty name: clamd takes it for the archive's end and \
                 unpacks nothing after it, tar and Python's tarfile read on",
            ),
            Unopened::TarPaxSize => f.write_str(
                "a tar member whose pax header gives another size than its own header: clamd \
                 goes by the header's and unpacks nothing after it, tar and Python's tarfile \
                 by the pax one",
            ),
            Unopened::TarMagic => f.write_str(
                "a tar header without the ustar magic in a ustar archive: clamd gives the \
                 archive up, tar and Python's tarfile read on",
            ),
            Unopened::TarVolumeData => f.write_str(
                "a tar volume header with data: clamd reads headers in the data, tar and \
                 Python's tarfile skip it",
            ),
            Unopened::Bzip2Streams => f.write_str(
                "a bzip2 file of more than one stream: clamd unpacks the first only, bzip2 \
                 and Python's bz2 module all of them",
            ),
            Unopened::Zstd => f.write_str(
                "a zstd file inside another archive: clamd does not unpack zstd, zstd and \
                 tar --zstd do",
            ),
            Unopened::ArPacked => f.write_str(
                "a .deb (ar) or an rpm package inside another archive, with a packed or tar \
                 member: clamd unpacks neither, dpkg and rpm do",
            ),
            Unopened::Overlapping => write!(
                f,
                "more than {OPEN_MAX} zip entries open at once ({BUNZIP_MAX} packed with bzip2), inside one another's data, which no archiver writes"
            ),
        }
    }
}

/// The methods unzip, 7-Zip or WinZip unpack and clamd does not.
fn method_name(method: u16) -> &'static str {
    match method {
        1 => "Shrink",
        2..=5 => "Reduce",
        7 => "Tokenize",
        10 => "PKWARE DCL Implode",
        14 => "LZMA",
        16 => "IBM CMPSC",
        18 => "IBM TERSE",
        19 => "IBM LZ77",
        20 | 93 => "Zstandard",
        94 => "MP3",
        95 => "XZ",
        96 => "JPEG",
        97 => "WavPack",
        98 => "PPMd",
        _ => "",
    }
}

/// Watches a body, in pieces of any size, for a record that keeps clamd
/// out.
#[derive(Debug)]
pub struct ZipWatch {
    /// The last bytes seen, where a record may have begun whose fields are
    /// still to come.
    carry: Vec<u8>,
    /// Bytes seen so far: the offset of the next one.
    at: u64,
    /// The offset of the last record acted on (one whose fields were whole
    /// in the carried bytes is found again with the next piece).
    last_record: Option<u64>,
    found: Option<Unopened>,
    /// Whether the bytes are a packed file, and what it unpacks to.
    packed: Packed,
    /// Deflated entries being unpacked.
    entries: Vec<Entry>,
    /// The zip records seen, to find entries a directory does not list.
    layout: Layout,
    /// Where entries unpack to, taken piece by piece.
    piece: Vec<u8>,
    /// Levels of unpacking above this watch.
    depth: u8,
    /// For the body's own watch: what is left for all levels.
    budget: Budget,
    /// The headers of the tar archive the bytes may be.
    tar: TarWalk,
    /// The directories of the ISO 9660 image the bytes may be.
    iso: IsoWalk,
    /// The headers of the cpio archive the bytes may be.
    cpio: CpioWalk,
    /// Bzip2 streams in the bytes.
    bzip2: Bzip2Watch,
    /// Where the entries closed had their data (as far as their header
    /// says, when it does), while bytes still to come may end a bzip2
    /// stream's head in it.
    closed: Vec<(u64, u64)>,
    /// The ar archive the bytes may be, unless the scan takes it apart.
    ar: Option<ArWalk>,
    /// Whether a zstd file here is unpacked into a scan of its own.
    zstd_scanned: bool,
    /// The first record that keeps clamd out, found where no zip begins
    /// at the start of the bytes: it counts only if an end record lies
    /// where unzippers look for one.
    unanchored: Option<Unopened>,
    /// The offset of the last end record seen whose directory begins
    /// with an entry, as unzippers ask of it.
    last_end: Option<u64>,
    /// The offset of the last ZIP64 end record locator seen.
    last_locator: Option<u64>,
    /// Whether records in the carried bytes wait behind one whose fields
    /// are still to come.
    held_up: bool,
}

/// What a scan takes apart itself when the body (or an ar member) begins
/// with it, before the bytes reach clamd and the watch.
#[derive(Debug, Clone, Copy, Default)]
pub struct TakenApart {
    /// An ar archive: each member is scanned as a file of its own.
    pub ar: bool,
    /// A zstd file: what it unpacks to is scanned too.
    pub zstd: bool,
    /// A zstd file, an ar archive or an rpm package that is a tar member,
    /// a zip entry or a gzip, xz or bzip2 file's content, at any level (a
    /// conda package's `.tar.zst`, a `.deb` in a zip, a `.deb.gz`): handed
    /// out by [`ZipWatch::take_extracted`], to be scanned on its own. The
    /// levels of such files handed out: none at 0; at 1 the ones in these
    /// bytes, which hand out none; at 2 those in them too.
    pub extract: u8,
}

impl TakenApart {
    /// What a body's scan takes apart itself.
    pub const BODY: TakenApart = TakenApart {
        ar: true,
        zstd: true,
        extract: HAND_OUT_LEVELS,
    };
}

/// Levels of files handed out of a body ([`TakenApart::extract`]):
/// the packages and zstd files in its tars and zips, and those in them (a
/// `.deb` in a `.tar.zst` in a tar). The ones below are reported. Together
/// they are at most 1,000 per body.
const HAND_OUT_LEVELS: u8 = 2;

/// The files handed out for one body, at all levels of its scan.
pub type HandedCount = Arc<AtomicUsize>;

/// What the watch hands out of a file it found in the body, in order.
#[derive(Debug, PartialEq, Eq)]
pub enum Handed {
    Start,
    Data(Vec<u8>),
    /// The file ends: `whole` unless its entry was cut short, or the watch
    /// stopped before its end.
    End {
        whole: bool,
    },
}

/// The files handed out, one at a time, for the body at all levels.
#[derive(Debug, Default)]
struct Extraction {
    /// The levels of files handed out ([`TakenApart::extract`]): none at 0.
    levels: u8,
    events: Vec<Handed>,
    /// Whether one is being handed out.
    open: bool,
    /// How many were, for the body and the files handed out of it: made
    /// when the first is, or when a part's scan is to share it.
    handed: Option<HandedCount>,
}

impl Extraction {
    fn on(&self) -> bool {
        self.levels > 0
    }

    /// Whether as many files were handed out for the body as may be.
    fn is_full(&self) -> bool {
        self.handed
            .as_ref()
            .is_some_and(|n| n.load(Ordering::Relaxed) >= HANDED_MAX)
    }

    /// Hands out a file that begins with `head`.
    fn start(&mut self, head: Vec<u8>) {
        self.open = true;
        let handed = self.handed.get_or_insert_with(Default::default);
        handed.fetch_add(1, Ordering::Relaxed);
        self.events.push(Handed::Start);
        self.events.push(Handed::Data(head));
    }
}

/// The most files handed out for one body: each costs a scan of its own
/// (a clamd round trip or more), and a tar of thousands of tiny ones
/// should not cost seconds. The ones past it are reported.
const HANDED_MAX: usize = 1_000;

/// Whether an entry's bytes are handed out.
#[derive(Debug)]
enum Extract {
    No,
    /// Its first bytes, while they may begin a file to hand out.
    Head(Vec<u8>),
    Yes,
}

/// What unpacking may still take, for one body at all levels together,
/// and the files handed out.
#[derive(Debug)]
struct Budget {
    /// Unpacked bytes still to be watched.
    bytes: u64,
    /// Deflated entries being unpacked.
    open: usize,
    /// bzip2 entries being unpacked, counted by their slots.
    bunzips: Arc<AtomicUsize>,
    extraction: Extraction,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget {
            bytes: WATCHED,
            open: 0,
            bunzips: Arc::default(),
            extraction: Extraction::default(),
        }
    }
}

impl Default for ZipWatch {
    fn default() -> ZipWatch {
        ZipWatch::at_depth(0)
    }
}

impl ZipWatch {
    fn at_depth(depth: u8) -> ZipWatch {
        ZipWatch {
            carry: Vec::new(),
            at: 0,
            last_record: None,
            found: None,
            packed: Packed::Undecided,
            entries: Vec::new(),
            layout: Layout::default(),
            piece: Vec::new(),
            depth,
            budget: Budget::default(),
            tar: TarWalk::default(),
            iso: IsoWalk::default(),
            cpio: CpioWalk::default(),
            bzip2: Bzip2Watch::default(),
            closed: Vec::new(),
            ar: Some(ArWalk::default()),
            zstd_scanned: false,
            unanchored: None,
            last_end: None,
            last_locator: None,
            held_up: false,
        }
    }

    /// The watch of a scan that takes `apart` what the body begins with,
    /// counting what it hands out in `handed` (the body's count, if this
    /// is the scan of a part of it).
    pub fn of_scan(apart: TakenApart, handed: Option<HandedCount>) -> ZipWatch {
        ZipWatch {
            ar: (!apart.ar).then(ArWalk::default),
            zstd_scanned: apart.zstd,
            budget: Budget {
                extraction: Extraction {
                    levels: apart.extract,
                    handed,
                    ..Extraction::default()
                },
                ..Budget::default()
            },
            ..ZipWatch::default()
        }
    }
}

/// A body's first bytes, as far as they tell whether it is a gzip, xz,
/// bzip2 or zstd file, and the content of one of the first three.
#[derive(Debug, Default)]
enum Packed {
    /// Nothing seen yet.
    #[default]
    Undecided,
    /// The first bytes so far, which may begin one.
    Head(Vec<u8>),
    Inside(Box<Inside>),
    /// A zstd file whose content the scan unpacks into a scan of its own,
    /// which watches it.
    Zstd,
    /// Neither, or no longer watched inside.
    No,
}

/// A gzip, xz or bzip2 file being unpacked for the watch (clamd gets the
/// body as it came, and unpacks it itself).
struct Inside {
    decoder: decode::Decoder,
    packing: decode::Packing,
    /// A watch of the unpacked bytes, until they are handed out to be
    /// scanned on their own.
    watch: Box<ZipWatch>,
    /// Whether what it unpacks to is handed out (a `.deb.gz`, `.deb.xz`).
    extract: Extract,
    /// What a bzip2 file's first stream unpacks to, while it is not handed
    /// out, up to [`FIRST_STREAM_KEPT`] bytes: handed out with the rest if
    /// another stream follows, which clamd does not unpack.
    kept: Option<Vec<u8>>,
    /// Whether `watch` watches the unpacked bytes.
    watched: bool,
}

/// The most bytes kept of what a bzip2 file's first stream unpacks to, in
/// case another follows: pbzip2 writes a stream per 900 kB of input. A
/// longer first stream with another after it is reported.
const FIRST_STREAM_KEPT: usize = 1 << 20;

impl fmt::Debug for Inside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Inside({} bytes)", self.watch.at)
    }
}

impl Inside {
    fn start(depth: u8, packing: decode::Packing, extraction: &Extraction) -> Option<Box<Inside>> {
        let decoder = decode::unpacking(packing)?;
        let bzip2 = packing == decode::Packing::Bzip2;
        Some(Box::new(Inside {
            decoder,
            packing,
            watch: Box::new(ZipWatch::at_depth(depth + 1)),
            extract: Extract::new(extraction),
            kept: (bzip2 && extraction.on()).then(Vec::new),
            watched: true,
        }))
    }

    /// Unpacks `data` into the watch; false once there is nothing more to
    /// watch (the stream is damaged, or the budget spent).
    fn feed(&mut self, data: &[u8], budget: &mut Budget) -> bool {
        // A few hundred bytes of xz or bzip2 may unpack to the whole
        // budget; gzip is deflate.
        let long = match self.packing {
            decode::Packing::Xz | decode::Packing::Bzip2 => true,
            decode::Packing::Gzip => data.len() >= UNPACKED_IN_PLACE,
        };
        match long {
            true => crate::off_the_runtime(|| self.unpack(data, budget)),
            false => self.unpack(data, budget),
        }
    }

    fn unpack(&mut self, mut data: &[u8], budget: &mut Budget) -> bool {
        let Inside {
            decoder,
            watch,
            extract,
            kept,
            watched,
            ..
        } = self;
        loop {
            let (piece, later) = match decoder.unpack(&mut data) {
                Ok(next) => next,
                Err(_) => return false,
            };
            // Once a bzip2 file's second stream begins, which clamd does
            // not unpack, its content is handed out to be scanned on its
            // own, from what its first stream unpacked to.
            let first = kept.take_if(|_| later);
            if let Some(first) = first {
                if extract.hand_out_all(first, &mut budget.extraction) {
                    budget.open -= watch.open_entries();
                    **watch = ZipWatch::default();
                    *watched = false;
                }
            }
            if piece.is_empty() {
                return true;
            }
            extract.hand_out(piece, &mut budget.extraction, watch);
            match (&*extract, &mut *kept) {
                (Extract::Yes, kept) => *kept = None,
                (_, Some(kept)) if kept.len() + piece.len() <= FIRST_STREAM_KEPT => {
                    kept.extend_from_slice(piece)
                }
                (_, kept) => *kept = None,
            }
            if !*watched {
                // Still within the budget, for the work.
                budget.bytes = budget.bytes.saturating_sub(piece.len() as u64);
                if budget.bytes == 0 {
                    return false;
                }
            } else if !watch.take_unpacked(piece, budget) {
                return false;
            }
        }
    }

    /// Whether the stream of a bzip2 file that begins at `at` is handed
    /// out with its content: when all of it is (a `.deb.bz2`, or since its
    /// second stream began), unless bytes that ended the file came first.
    fn hands_out_stream(&self, at: u64) -> bool {
        // The stream where the file ended (one damaged before it gave a
        // byte) is not after it: judged before its damage shows, in the
        // piece its head ends in, it is the file's own.
        let after_the_file = self.decoder.trailing_from().is_some_and(|end| end < at);
        matches!(self.extract, Extract::Yes) && !after_the_file
    }

    /// Ends what its watch hands out, and what was handed out of its own
    /// content: whole if its stream came to its end.
    fn close(&mut self, extraction: &mut Extraction) {
        self.watch.end_within(extraction);
        let whole = self.decoder.finish().is_ok();
        self.extract.close(whole, extraction);
    }
}

/// A zip entry's data, deflated and being unpacked, or stored, or a tar
/// member's, as it is, into a watch of its own (clamd unpacks each
/// itself).
struct Entry {
    /// How its data reaches the watch.
    unpacker: Unpacker,
    /// The offset of its data's first byte, and of the next one.
    start: u64,
    next: u64,
    /// Where its data ends, when its header says.
    end: Option<u64>,
    /// Whether its deflate stream came to its end.
    ended: bool,
    /// Its header among [`Layout::locals`], if kept there.
    local: Option<usize>,
    watch: Box<ZipWatch>,
    extract: Extract,
    /// A stored entry of no known length keeps its last bytes back, where
    /// its descriptor may have begun, until more come: as many as a record
    /// that holds up the descriptor's judging may have begun in.
    held: Vec<u8>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Entry(at {}, {} bytes out)", self.next, self.watch.at)
    }
}

/// How an entry's data reaches its watch.
enum Unpacker {
    /// As it is: a stored entry's, a tar member's.
    Stored,
    Inflate(Box<InflateState>),
    Inflate64(Box<decode::Inflate64>),
    Explode(Box<Explode>),
    /// Packed with bzip2 (method 12), holding one of the body's
    /// [`BUNZIP_MAX`] slots while it is.
    Bunzip {
        bunzip: Box<decode::Bunzip>,
        _slot: BunzipSlot,
    },
}

/// A zip entry's bzip2 data being unpacked, counted for the body: each
/// decoder holds up to 3.7 MB (a block of 900 kB and its index).
#[derive(Debug)]
struct BunzipSlot(Arc<AtomicUsize>);

impl BunzipSlot {
    /// One of the body's slots, counted in `open`, if one is free.
    fn take(open: &Arc<AtomicUsize>) -> Option<BunzipSlot> {
        let taken = open.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            (n < BUNZIP_MAX).then_some(n + 1)
        });
        taken.ok().map(|_| BunzipSlot(open.clone()))
    }
}

impl Drop for BunzipSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The most bzip2 entries unpacked at once for one body. A zip stored in
/// zips stored in a zip shows its bzip2 entry's header to the watches of
/// the stored entries at each level: four unpack it three levels down
/// (those of entries around it leave it to them). Twice that is more than
/// such archives need, and bounds what one body's decoders hold to 30 MB.
const BUNZIP_MAX: usize = 8;

impl Entry {
    /// Unpacks `data`, the entry's next bytes, into the watch; false once
    /// there is nothing more to watch (the entry's data ended or is
    /// damaged, or the budget is spent).
    fn feed(&mut self, data: &[u8], piece: &mut [u8], budget: &mut Budget) -> bool {
        // A few hundred bytes of bzip2 may unpack to the whole budget.
        let long = match self.unpacker {
            Unpacker::Stored => false,
            Unpacker::Inflate(_) | Unpacker::Inflate64(_) | Unpacker::Explode(_) => {
                data.len() >= UNPACKED_IN_PLACE
            }
            Unpacker::Bunzip { .. } => true,
        };
        match long {
            true => crate::off_the_runtime(|| self.unpack(data, piece, budget)),
            false => self.unpack(data, piece, budget),
        }
    }

    /// Where its data ends: as far as its header says when it does
    /// (whether its decoder got there or failed first), else as far as it
    /// was unpacked.
    fn data_end(&self) -> u64 {
        self.end.map_or(self.next, |end| end.max(self.next))
    }

    /// Whether its data is watched as it is.
    fn is_stored(&self) -> bool {
        matches!(self.unpacker, Unpacker::Stored)
    }

    fn unpack(&mut self, mut data: &[u8], piece: &mut [u8], budget: &mut Budget) -> bool {
        if self.is_stored() {
            self.next += data.len() as u64;
            if self.end.is_some() {
                self.watch_stored(data, budget);
            } else {
                // All but the last bytes of what was held and `data`.
                let ready = (self.held.len() + data.len()).saturating_sub(LONGEST - 1);
                let from_held = ready.min(self.held.len());
                let held = std::mem::take(&mut self.held);
                self.watch_stored(&held[..from_held], budget);
                self.watch_stored(&data[..ready - from_held], budget);
                self.held = [&held[from_held..], &data[ready - from_held..]].concat();
            }
            self.ended = self.end == Some(self.next);
            return self.watch.found.is_none() && !self.ended;
        }
        loop {
            let step = match &mut self.unpacker {
                Unpacker::Inflate(inflate) => decode::inflate_step(inflate, data, piece),
                Unpacker::Inflate64(inflate) => inflate.step(data, piece),
                Unpacker::Explode(explode) => explode.step(data, piece),
                Unpacker::Bunzip { bunzip, .. } => bunzip.step(data, piece),
                Unpacker::Stored => return false,
            };
            let Ok((step, ended)) = step else {
                return false;
            };
            data = &data[step.consumed..];
            self.next += step.consumed as u64;
            let unpacked = &piece[..step.produced];
            self.extract
                .hand_out(unpacked, &mut budget.extraction, &mut self.watch);
            if !self.watch.take_unpacked(unpacked, budget) {
                return false;
            }
            if ended {
                self.ended = true;
                return false;
            }
            if step.consumed == 0 && step.produced == 0 {
                // No progress: the data so far is used up.
                return self.end != Some(self.next);
            }
        }
    }
}

impl Extract {
    /// Hands out a file whose bytes so far are `head`, unless it already
    /// is, or another is: true if it now is. The content's own scan then
    /// watches what the watch of these bytes did: that watch is to stop,
    /// and report nothing of what it has not found yet (a `.deb` in a
    /// `.tar.bz2`, which the content's scan hands out in turn).
    fn hand_out_all(&mut self, head: Vec<u8>, extraction: &mut Extraction) -> bool {
        if matches!(self, Extract::Yes) || extraction.open || extraction.is_full() {
            return false;
        }
        extraction.start(head);
        *self = Extract::Yes;
        true
    }

    /// Whether bytes that begin a file are looked at to hand it out.
    fn new(extraction: &Extraction) -> Extract {
        match extraction.on() {
            true => Extract::Head(Vec::new()),
            false => Extract::No,
        }
    }

    /// Ends the file handed out, if any: `whole` unless cut short.
    fn close(&mut self, whole: bool, extraction: &mut Extraction) {
        if matches!(self, Extract::Yes) {
            extraction.events.push(Handed::End { whole });
            extraction.open = false;
        }
        *self = Extract::No;
    }

    /// Hands out an entry's next bytes (as they are, or unpacked) once
    /// they begin a file to hand out, one at a time; the entry's `watch`
    /// then reports nothing of what the file's own scan takes apart.
    /// Another one's watch reports what it finds in it instead.
    fn hand_out(&mut self, data: &[u8], extraction: &mut Extraction, watch: &mut ZipWatch) {
        match self {
            Extract::No => {}
            Extract::Yes if data.is_empty() => {}
            Extract::Yes => extraction.events.push(Handed::Data(data.to_vec())),
            Extract::Head(head) => {
                // Byte by byte until it tells, so that the rest of `data`
                // follows what it was told by.
                let mut take = 0;
                let told = loop {
                    match to_hand_out(head) {
                        None if take < data.len() => {
                            head.push(data[take]);
                            take += 1;
                        }
                        told => break told,
                    }
                };
                match told {
                    None => {}
                    Some(false) => *self = Extract::No,
                    Some(true) if extraction.open || extraction.is_full() => *self = Extract::No,
                    Some(true) => {
                        extraction.start(std::mem::take(head));
                        if take < data.len() {
                            extraction.events.push(Handed::Data(data[take..].to_vec()));
                        }
                        // What is scanned on its own is not reported.
                        watch.zstd_scanned = true;
                        watch.ar = None;
                        *self = Extract::Yes;
                    }
                }
            }
        }
    }
}

impl Entry {
    /// Bytes that are in the body as they are: watched again, not
    /// unpacked, so not counted against the budget.
    fn watch_stored(&mut self, data: &[u8], budget: &mut Budget) {
        if data.is_empty() {
            return;
        }
        self.extract
            .hand_out(data, &mut budget.extraction, &mut self.watch);
        self.watch.observe_within(data, budget);
    }

    /// A stored entry of no known length that its descriptor at `at` ends:
    /// the bytes held back up to there are its last.
    fn end_at(&mut self, at: u64, budget: &mut Budget) {
        let held = std::mem::take(&mut self.held);
        let held_from = self.next - held.len() as u64;
        let last = at.saturating_sub(held_from).min(held.len() as u64) as usize;
        self.watch_stored(&held[..last], budget);
        (self.end, self.next, self.ended) = (Some(at), at, true);
    }

    /// Ends what its watch hands out, and what was handed out of its own
    /// bytes.
    fn close(&mut self, extraction: &mut Extraction) {
        self.watch.end_within(extraction);
        self.extract.close(self.ended, extraction);
    }
}

/// Whether a file beginning with `head` is handed out to be scanned on its
/// own (a zstd file, an ar archive, an rpm package); `None` while it may
/// still be one.
fn to_hand_out(head: &[u8]) -> Option<bool> {
    let magics: [&[u8]; 3] = [&ZSTD, &rpm::MAGIC, ar::MAGIC];
    if magics.iter().any(|m| head.starts_with(m)) {
        Some(true)
    } else if magics.iter().any(|m| m.starts_with(head)) {
        None
    } else {
        Some(false)
    }
}

/// A record that matters, found at some offset.
enum Record {
    Unopened(Unopened),
    /// A local file header whose entry's data begins this many bytes after
    /// the record's start, and is this long when the header says.
    Local {
        data_from: u64,
        len: Option<u64>,
        /// Its unpacked length, when the header says, and its general
        /// purpose flags (an imploded entry's window and codes).
        unpacked: Option<u64>,
        flags: u16,
        how: Packing,
    },
    /// A central directory entry naming the local header at this offset
    /// from the archive's start, its data's length, and how it is packed.
    Listed {
        local: u64,
        len: u64,
        how: Packing,
    },
    /// An end-of-central-directory record.
    End {
        entries: u16,
        size: u64,
        offset: u64,
    },
    /// A ZIP64 end record's locator.
    Locator,
    /// A data descriptor giving its entry's packed length.
    Descriptor {
        len: u64,
    },
}

/// How an entry's data reaches its watch: as it is, or unpacked.
#[derive(Debug, Clone, Copy)]
enum Method {
    Stored,
    Deflated,
    Deflate64,
    Bzip2,
    /// PKZIP 1's Implode, with the entry's flags (its window and codes)
    /// and unpacked length, where its data ends.
    Imploded {
        flags: u16,
        unpacked: u64,
    },
}

/// How an entry is packed, as a local header or directory entry says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Packing {
    method: u16,
    encrypted: bool,
}

/// The local headers and central directory entries one watch has seen.
/// An archive's end record says where its directory is; an entry the
/// directory does not list, and that lies inside no listed entry's data,
/// is hidden from clamd, which unpacks what the directory lists. Unzippers
/// that read the entries in order extract it.
#[derive(Debug, Default)]
struct Layout {
    locals: Vec<Local>,
    listed: Vec<Listed>,
    /// More records than [`LAYOUT_MAX`]: no longer kept.
    full: bool,
    /// Whether the bytes begin with a local header: clamd then takes them
    /// for one zip file.
    zip_at_start: bool,
    /// The end records of the archives seen whole, and the extents of the
    /// last one's entries (from each header to its data's end, sorted).
    archives: Vec<u64>,
    last_extents: Extents,
    /// End records checked.
    ends: usize,
}

/// A central directory entry, as [`Layout`] keeps it.
#[derive(Debug)]
struct Listed {
    /// Where it is, and the offset of the local header it names.
    at: u64,
    local: u64,
    /// The data's length.
    len: u64,
    how: Packing,
}

/// A local file header, as [`Layout`] keeps it.
#[derive(Debug)]
struct Local {
    /// Where it begins, and where its entry's data begins.
    at: u64,
    data_at: u64,
    /// How it is packed: clamd goes by this, Python's zipfile by the
    /// directory. A stored entry's bytes are clamd's to see anyway.
    how: Packing,
    /// The data's length as the header says it (clamd goes by this too;
    /// Python's zipfile by the directory's).
    declared: Option<u64>,
    /// Whether its data was seen to be a whole deflate (or bzip2) stream.
    inflated: bool,
    /// The data's length as the header says it, or as the deflate stream
    /// was seen to end, whichever is shorter. A streaming unzipper goes by
    /// these, and the next entry header it reads is past them, whatever
    /// the directory says.
    len: Option<u64>,
}

impl Local {
    /// Whether this is a packed entry that clamd would not see unlisted:
    /// a deflated one only once its data proved a whole deflate stream
    /// (the signature turns up in other data too: a self-extractor's code
    /// looks for it), or one packed the other ways clamd unpacks.
    fn hideable(&self) -> bool {
        match self.how.method {
            DEFLATED => self.inflated,
            IMPLODED | DEFLATE64 | BZIP2 => true,
            _ => false,
        }
    }
}

impl Layout {
    /// Whether a directory entry begins at `at`.
    fn lists_at(&self, at: u64) -> bool {
        self.listed.binary_search_by_key(&at, |l| l.at).is_ok()
    }

    fn keep(&mut self) -> bool {
        self.full |= self.locals.len() + self.listed.len() >= LAYOUT_MAX;
        !self.full
    }

    /// What keeps clamd out of the archive whose end record is at `at`: an
    /// entry its directory describes otherwise than its local header does,
    /// or a packed entry its directory does not list.
    fn check(&mut self, at: u64, entries: u16, size: u64, offset: u64) -> Option<Unopened> {
        if self.full || self.ends == ENDS_MAX {
            return None;
        }
        self.ends += 1;
        let dir = at.checked_sub(size)?;
        let start = dir.checked_sub(offset)?;
        let listed: Vec<&Listed> = self
            .listed
            .iter()
            .filter(|l| (dir..at).contains(&l.at))
            .collect();
        // Otherwise this is no end record of an archive seen whole.
        if listed.len() != usize::from(entries) {
            return None;
        }
        // Each listed entry, from its header to its data's end (the
        // shorter of the directory's length and the header's).
        let mut extents = Vec::with_capacity(listed.len());
        for entry in listed {
            let begin = start + entry.local;
            let Ok(i) = self.locals.binary_search_by_key(&begin, |l| l.at) else {
                continue;
            };
            let local = &self.locals[i];
            if local.how != entry.how || local.declared.is_some_and(|own| own != entry.len) {
                return Some(Unopened::Disagreeing);
            }
            let len = local.len.map_or(entry.len, |own| own.min(entry.len));
            extents.push((begin, local.data_at + len));
        }
        let extents = Extents::new(extents);
        let hidden = self
            .locals
            .iter()
            .any(|l| l.hideable() && (start..dir).contains(&l.at) && !extents.contain(l.at));
        self.archives.push(at);
        self.last_extents = extents;
        hidden.then_some(Unopened::Unlisted)
    }

    /// Whether a zip file holds another whole archive beside the last one,
    /// not inside the last one's entries. clamd answers OK for EICAR in
    /// either of two zips one after the other, while unzip and Python's
    /// zipfile extract the last one's entries and a streaming unzipper the
    /// first one's. Judged only for bytes that begin as a zip: a tar of
    /// zips is unpacked by clamd member by member.
    fn concatenated(&self) -> bool {
        let Some((_, earlier)) = self.archives.split_last() else {
            return false;
        };
        self.zip_at_start && earlier.iter().any(|&at| !self.last_extents.contain(at))
    }
}

/// The extents of an archive's entries, from each header to its data's
/// end.
#[derive(Debug, Default)]
struct Extents {
    /// Sorted by start.
    spans: Vec<(u64, u64)>,
    /// The furthest end among the spans up to each.
    furthest: Vec<u64>,
}

impl Extents {
    fn new(mut spans: Vec<(u64, u64)>) -> Extents {
        spans.sort_unstable();
        let furthest = spans
            .iter()
            .scan(0, |end, &(_, e)| {
                *end = e.max(*end);
                Some(*end)
            })
            .collect();
        Extents { spans, furthest }
    }

    /// Whether offset `a` lies within one of the spans.
    fn contain(&self, a: u64) -> bool {
        let n = self.spans.partition_point(|&(begin, _)| begin <= a);
        n > 0 && a < self.furthest[n - 1]
    }
}

impl ZipWatch {
    /// Looks at the next bytes of the body.
    pub fn observe(&mut self, data: &[u8]) {
        let mut budget = std::mem::take(&mut self.budget);
        self.observe_within(data, &mut budget);
        self.budget = budget;
    }

    /// What was found in the body, once it has all been observed: in its
    /// bytes, and of what they make as a whole (which is judged only here:
    /// halfway, two zips may yet turn out to lie inside a third).
    pub fn found(&self) -> Option<Unopened> {
        let near_end = |end: u64| end + END_REACH >= self.at;
        self.found
            .or_else(|| self.layout.concatenated().then_some(Unopened::Concatenated))
            .or_else(|| match &self.packed {
                Packed::Inside(inside) => inside.watch.found(),
                _ => None,
            })
            .or_else(|| {
                self.unanchored
                    .filter(|_| self.last_end.is_some_and(near_end))
            })
    }

    /// Hands on bytes unpacked below this watch, within `budget`; false
    /// once there is nothing more to watch there.
    fn take_unpacked(&mut self, bytes: &[u8], budget: &mut Budget) -> bool {
        let n = bytes.len().min(budget.bytes as usize);
        budget.bytes -= n as u64;
        self.observe_within(&bytes[..n], budget);
        self.found.is_none() && budget.bytes > 0
    }

    /// Looks at the next bytes, unpacking what is in them while `budget`
    /// lasts.
    fn observe_within(&mut self, data: &[u8], budget: &mut Budget) {
        if self.found.is_some() || data.is_empty() {
            return;
        }
        let start = self.at;
        self.closed.retain(|&(_, end)| end > start);
        let mut members = Vec::new();
        if let Some(what) = self.tar.feed(data, &mut members) {
            self.found = Some(what);
            return;
        }
        self.iso.feed(data, &mut members);
        self.cpio.feed(data, &mut members);
        members.sort_unstable();
        // Each member of a tar or a cpio archive, or file of an ISO image,
        // is watched from its start, as clamd unpacks it; the one before
        // has had its bytes (and is closed) by then.
        for (at, len) in members {
            self.unpack(data, start, at, true, budget);
            self.open(at, Some(len), None, Method::Stored, true, budget);
        }
        if self.found.is_some() {
            return;
        }
        let streams = self.bzip2.feed(data);
        if self.ar.as_mut().is_some_and(|ar| ar.feed(data)) {
            self.found = Some(Unopened::ArPacked);
            return;
        }
        self.look_inside(data, budget);
        if self.found.is_some() {
            return;
        }
        self.at += data.len() as u64;
        // Records are judged in their order, as when the bytes come in one
        // piece: one whose fields are still to come holds up those after
        // it (a shorter one may begin inside it), all of them in the last
        // LONGEST - 1 bytes, which are kept.
        let mut seen = Vec::new();
        let mut cut = false;
        // Records held up last time may open entries whose data began in
        // the carried bytes: those go to them too.
        let mut carried = Vec::new();
        if !self.carry.is_empty() {
            // Records that began in the carried bytes, read on into `data`.
            let mut joined = std::mem::take(&mut self.carry);
            let starts = joined.len();
            joined.extend_from_slice(&data[..data.len().min(LONGEST - 1)]);
            let joined_at = start - starts as u64;
            cut = whole_records(records(&joined, starts), joined_at, &mut seen);
            joined.truncate(starts);
            if self.held_up {
                carried.clone_from(&joined);
            }
            self.carry = joined;
        }
        if !cut {
            cut = whole_records(records(data, data.len()), start, &mut seen);
        }
        self.held_up = cut;
        // Keep what a record still to be judged may have begun in.
        self.carry
            .extend_from_slice(&data[data.len().saturating_sub(LONGEST - 1)..]);
        let extra = self.carry.len().saturating_sub(LONGEST - 1);
        self.carry.drain(..extra);
        if carried.is_empty() {
            self.judge(data, start, seen, budget);
        } else {
            let from = start - carried.len() as u64;
            carried.extend_from_slice(data);
            self.judge(&carried, from, seen, budget);
        }
        self.judge_streams(streams);
    }

    /// Reports a bzip2 stream found right after another, at each offset of
    /// `streams`, unless it is one of the streams of the bzip2 file these
    /// bytes begin with, now handed out, or lies in the packed data of the
    /// gzip, xz or zstd file they begin with or in an entry's data, whose
    /// own watch judges it (the entries open, or closed meanwhile, have
    /// had the bytes these offsets are in).
    fn judge_streams(&mut self, streams: Vec<u64>) {
        let (before, head) = (bzip2_watch::BEFORE as u64, bzip2_watch::HEAD as u64);
        for at in streams {
            if self.found.is_some() {
                return;
            }
            // The streams of the bzip2 file; or bytes in a gzip, xz or
            // zstd file's packed data (stored blocks keep them as they
            // are), which its content's watch sees unpacked.
            let own = match &mut self.packed {
                Packed::Inside(inside) => {
                    inside.packing != decode::Packing::Bzip2 || inside.hands_out_stream(at)
                }
                Packed::Zstd => true,
                _ => false,
            };
            if own {
                continue;
            }
            let in_data = |start: u64, end: u64| start + before <= at && at + head <= end;
            let entries = self.entries.iter().map(|e| (e.start, e.data_end()));
            if entries
                .chain(self.closed.iter().copied())
                .any(|(s, e)| in_data(s, e))
            {
                continue;
            }
            self.found = Some(Unopened::Bzip2Streams);
        }
    }

    /// At the end of the bytes: the records held up behind one whose
    /// fields never came are judged without it, here, in the content of a
    /// packed file, and in the entries still open (cut short: what their
    /// watches find counts, as when they close).
    fn settle(&mut self, budget: &mut Budget) {
        if let Packed::Inside(inside) = &mut self.packed {
            inside.watch.settle(budget);
        }
        if self.found.is_none() && self.held_up {
            self.held_up = false;
            let carry = std::mem::take(&mut self.carry);
            let carry_at = self.at - carry.len() as u64;
            let seen = records(&carry, carry.len())
                .filter_map(|(at, record)| Some((carry_at + at as u64, record?)))
                .collect();
            self.judge(&carry, carry_at, seen, budget);
        }
        for entry in &mut self.entries {
            if self.found.is_some() {
                break;
            }
            // A stored entry that no descriptor ended runs to the end of
            // the bytes: what it held back for one is its own.
            let held = std::mem::take(&mut entry.held);
            entry.watch_stored(&held, budget);
            entry.watch.settle(budget);
            self.found = entry.watch.found;
        }
    }

    /// Acts on the records `seen`, in order, in the bytes `data` that
    /// begin at offset `start` and end where the watch is; then gives the
    /// entries open their part of `data`. (Entries open when a record is
    /// held up take their data past it before it is judged: an entry that
    /// ends in between may then be closed when it is, which changes only
    /// the count of entries open at once. Holding their data back instead
    /// would have every path that feeds them start from the carried bytes.)
    fn judge(&mut self, data: &[u8], start: u64, seen: Vec<(u64, Record)>, budget: &mut Budget) {
        self.judge_records(data, start, seen, budget);
        if self.found.is_none() {
            self.unpack(data, start, self.at, false, budget);
        }
    }

    /// The records' part of [`ZipWatch::judge`]: each acted on once, in
    /// order, until something is found.
    fn judge_records(
        &mut self,
        data: &[u8],
        start: u64,
        seen: Vec<(u64, Record)>,
        budget: &mut Budget,
    ) {
        for (at, record) in seen {
            if self.last_record.is_some_and(|last| at <= last) {
                continue;
            }
            self.last_record = Some(at);
            // The entries open so far take their data up to the record, so
            // that one that ends before it is closed first.
            self.unpack(data, start, at, false, budget);
            if self.found.is_some() {
                return;
            }
            match record {
                // In bytes that begin as a zip, clamd takes the record for
                // the archive's. Elsewhere it may be a zip after other
                // bytes (a self-extractor), which unzippers find by its end
                // record; or a program's own code, which looks for the
                // signature (Python's zipimport): judged at the end.
                // A stored entry's own: its watch judges it from the
                // entry's start.
                Record::Unopened(_) if self.in_stored_entry(at) => {}
                Record::Unopened(what) if at > 0 && !self.layout.zip_at_start => {
                    if what == Unopened::Zip64End {
                        // Unless its locator is right before it,
                        // unzippers do not read it.
                        if self.last_locator != at.checked_sub(LOCATOR_LEN) {
                            continue;
                        }
                        self.last_end = Some(at);
                    }
                    self.unanchored = self.unanchored.or(Some(what));
                }
                Record::Locator => self.last_locator = Some(at),
                Record::Descriptor { len } => {
                    // The open-ended stored entry ends here, if this is
                    // its descriptor: the bytes since its start are as
                    // many as it says.
                    let ending = self.entries.iter_mut().find(|e| {
                        let held_from = e.next - e.held.len() as u64;
                        e.is_stored()
                            && e.end.is_none()
                            && (held_from..=e.next).contains(&at)
                            && at - e.start == len
                    });
                    if let Some(entry) = ending {
                        entry.end_at(at, budget);
                        self.unpack(data, start, at, false, budget);
                        if self.found.is_some() {
                            return;
                        }
                    }
                }
                Record::Unopened(what) => {
                    self.found = Some(what);
                    return;
                }
                Record::Local {
                    data_from,
                    len,
                    unpacked,
                    flags,
                    how,
                } => {
                    self.layout.zip_at_start |= at == 0;
                    let local = self.layout.keep().then(|| {
                        self.layout.locals.push(Local {
                            at,
                            data_at: at + data_from,
                            how,
                            declared: len,
                            inflated: false,
                            len,
                        });
                        self.layout.locals.len() - 1
                    });
                    // A stored entry's bytes are in sight here already, but
                    // not from their start, as clamd sees them unpacked: a
                    // gzip file or a tar there is judged from its start in
                    // a watch of its own.
                    // An entry whose header is in another entry's data is
                    // also watched by that entry's watch, from the entry's
                    // start. Its files are handed out there only: handed
                    // out here too, they would go out twice, or once where
                    // the pieces fall so that the second finds the first
                    // still going out. A bzip2 entry there is not
                    // unpacked here at all: each holds megabytes.
                    let inside = self.depth + 1 < DEPTH
                        && self
                            .entries
                            .iter()
                            .any(|e| e.start <= at && e.end.is_none_or(|end| at < end));
                    let below = how.method == BZIP2 && inside;
                    if matches!(how.method, DEFLATED | BZIP2) && !how.encrypted && !below {
                        let method = match how.method {
                            DEFLATED => Method::Deflated,
                            _ => Method::Bzip2,
                        };
                        self.open(at + data_from, len, local, method, !inside, budget);
                    } else if how.method == DEFLATE64 && !how.encrypted {
                        // Watched to the length its header gives, or, when
                        // its sizes follow its data in a descriptor (as
                        // streaming writers lay entries out), to the
                        // stream's end. Its decoder may take a few
                        // bytes past that end into its bit buffer, so what
                        // it took is not kept as the entry's length.
                        self.open(
                            at + data_from,
                            len,
                            None,
                            Method::Deflate64,
                            !inside,
                            budget,
                        );
                    } else if let (IMPLODED, false, Some(_), Some(unpacked)) =
                        (how.method, how.encrypted, len, unpacked)
                    {
                        // Its data ends where its unpacked size has come
                        // out, so only one whose header gives it is
                        // watched, to the length its header gives.
                        let method = Method::Imploded { flags, unpacked };
                        self.open(at + data_from, len, None, method, !inside, budget);
                    } else if how.method == STORED && !how.encrypted && len.is_some() {
                        self.open(at + data_from, len, None, Method::Stored, !inside, budget);
                    } else if how.method == STORED && !how.encrypted && !self.open_ended() {
                        // Its sizes come after its data (Python's zipfile
                        // writes so to a pipe): watched
                        // until a descriptor gives its length, one at a
                        // time, or to the end of the body.
                        self.open(at + data_from, None, None, Method::Stored, !inside, budget);
                    }
                }
                Record::Listed { local, len, how } => {
                    if self.layout.keep() {
                        self.layout.listed.push(Listed {
                            at,
                            local,
                            len,
                            how,
                        });
                    }
                }
                // An end record inside a deflated entry's data is an inner
                // archive's, seen here in the stored blocks deflate keeps
                // packed data in: each block's 5-byte header shifts what
                // follows, so its offsets do not hold here. The entry's own
                // watch sees it whole. (In a stored entry's data it is seen
                // as it is, and judged here too.)
                Record::End { .. }
                    if self.entries.iter().any(|e| !e.is_stored() && e.start < at) => {}
                Record::End {
                    entries,
                    size,
                    offset,
                } => {
                    // Unzippers read the directory where this says: one
                    // that begins with no entry is no end of a zip.
                    let dir = at.checked_sub(size);
                    if self.layout.full || dir.is_some_and(|dir| self.layout.lists_at(dir)) {
                        self.last_end = Some(at);
                    }
                    if let Some(what) = self.layout.check(at, entries, size, offset) {
                        self.found = Some(what);
                        return;
                    }
                }
            }
        }
    }

    /// Starts unpacking an entry whose data begins at `at`, packed as
    /// `method` says, or watching a stored one or a tar member; the files
    /// it holds are handed out from it if `hands_out`.
    fn open(
        &mut self,
        at: u64,
        len: Option<u64>,
        local: Option<usize>,
        method: Method,
        hands_out: bool,
        budget: &mut Budget,
    ) {
        if self.depth >= DEPTH || budget.bytes == 0 || len == Some(0) {
            return;
        }
        if budget.open == OPEN_MAX {
            self.found = Some(Unopened::Overlapping);
            return;
        }
        let unpacker = match method {
            Method::Stored => Unpacker::Stored,
            Method::Deflated => Unpacker::Inflate(InflateState::new_boxed(DataFormat::Raw)),
            Method::Deflate64 => Unpacker::Inflate64(Box::new(decode::Inflate64::new())),
            Method::Imploded { flags, unpacked } => {
                Unpacker::Explode(Box::new(Explode::new(flags, len.unwrap_or(0), unpacked)))
            }
            Method::Bzip2 => match BunzipSlot::take(&budget.bunzips) {
                Some(slot) => Unpacker::Bunzip {
                    bunzip: Box::new(decode::Bunzip::new()),
                    _slot: slot,
                },
                None => {
                    self.found = Some(Unopened::Overlapping);
                    return;
                }
            },
        };
        budget.open += 1;
        let mut watch = Box::new(ZipWatch::at_depth(self.depth + 1));
        if !hands_out {
            // What it would hand out is handed out by the watch that
            // sees it from its own start, and not reported here.
            watch.zstd_scanned = true;
            watch.ar = None;
        }
        self.entries.push(Entry {
            unpacker,
            start: at,
            next: at,
            end: len.map(|len| at + len),
            ended: false,
            local,
            watch,
            extract: match hands_out {
                true => Extract::new(&budget.extraction),
                false => Extract::No,
            },
            held: Vec::new(),
        });
    }

    /// Gives the open entries their data in `data` (which begins at
    /// `start`) up to offset `until`, and closes those that are done.
    /// Only the entries whose bytes are watched as they are, with `raw`:
    /// those have no part in judging the records.
    fn unpack(&mut self, data: &[u8], start: u64, until: u64, raw: bool, budget: &mut Budget) {
        if self.entries.is_empty() {
            return;
        }
        self.piece.resize(PIECE, 0);
        let piece = &mut self.piece;
        let found = &mut self.found;
        let locals = &mut self.layout.locals;
        let closed = &mut self.closed;
        self.entries.retain_mut(|entry| {
            if raw && !entry.is_stored() {
                return true;
            }
            let from = entry.next.max(start);
            let to = until.min(entry.end.unwrap_or(u64::MAX));
            let open = if found.is_some() || from >= to {
                found.is_none() && entry.end != Some(entry.next)
            } else {
                let bytes = &data[(from - start) as usize..(to - start) as usize];
                entry.feed(bytes, piece, budget)
            };
            if !open {
                if entry.ended {
                    entry.watch.settle(budget);
                }
                entry.close(&mut budget.extraction);
                // What its watch found; and, once its data is whole, what
                // that makes.
                let what = match entry.ended {
                    true => entry.watch.found(),
                    false => entry.watch.found,
                };
                *found = found.or(what);
                // An entry whose unpacking failed early still had its
                // data as far as its header says: how far its decoder got
                // before it told depends on the pieces.
                closed.push((entry.start, entry.data_end()));
                budget.open -= 1 + entry.watch.open_entries();
                if let Some(local) = entry.local.filter(|_| entry.ended) {
                    let seen = entry.next - entry.start;
                    let local = &mut locals[local];
                    local.inflated = true;
                    local.len = Some(local.len.map_or(seen, |said| said.min(seen)));
                }
            }
            open
        });
    }

    /// At the end of the body: ends what is being handed out (a gzip
    /// file's content, which may have more members until then; or a file
    /// whose entry was cut short).
    pub fn end(&mut self) {
        let mut budget = std::mem::take(&mut self.budget);
        self.settle(&mut budget);
        self.end_within(&mut budget.extraction);
        self.budget = budget;
    }

    /// Ends what this watch and the ones below hand out.
    fn end_within(&mut self, extraction: &mut Extraction) {
        if let Packed::Inside(inside) = &mut self.packed {
            inside.close(extraction);
        }
        for entry in &mut self.entries {
            entry.close(extraction);
        }
    }

    /// The levels of files this watch hands out ([`TakenApart::extract`]).
    pub fn extracts(&self) -> u8 {
        self.budget.extraction.levels
    }

    /// The count of files handed out for the body, which the scans of
    /// its parts and of the files handed out share.
    pub fn handed_count(&mut self) -> HandedCount {
        let handed = &mut self.budget.extraction.handed;
        handed.get_or_insert_with(Default::default).clone()
    }

    /// The files handed out since the last call, as their bytes passed:
    /// each starts, has its data, and ends (when its entry is whole, or cut
    /// short, or the watch stops with it).
    pub fn take_extracted(&mut self) -> Vec<Handed> {
        std::mem::take(&mut self.budget.extraction.events)
    }

    /// Whether offset `at` lies in the data of a stored entry or a tar
    /// member being watched on its own.
    /// Whether a stored entry whose sizes come after its data is being
    /// watched.
    fn open_ended(&self) -> bool {
        self.entries
            .iter()
            .any(|e| e.is_stored() && e.end.is_none())
    }

    fn in_stored_entry(&self, at: u64) -> bool {
        self.entries
            .iter()
            .any(|e| e.is_stored() && e.start <= at && e.end.is_some_and(|end| at < end))
    }

    /// Deflated entries being unpacked by this watch and the ones below.
    fn open_entries(&self) -> usize {
        let below = match &self.packed {
            Packed::Inside(inside) => inside.watch.open_entries(),
            _ => 0,
        };
        self.entries
            .iter()
            .map(|entry| 1 + entry.watch.open_entries())
            .sum::<usize>()
            + below
    }

    /// Unpacks a gzip, xz or bzip2 file into an inner watch; reports a
    /// zstd file that the scan does not unpack itself.
    fn look_inside(&mut self, data: &[u8], budget: &mut Budget) {
        match &mut self.packed {
            Packed::No | Packed::Zstd => {}
            Packed::Undecided | Packed::Head(_) => {
                let mut head = match std::mem::take(&mut self.packed) {
                    Packed::Head(head) => head,
                    _ => Vec::new(),
                };
                let take = (PACKED_HEAD - head.len()).min(data.len());
                head.extend_from_slice(&data[..take]);
                let may_be = |magic: &[u8]| {
                    let n = head.len().min(magic.len());
                    head[..n] == magic[..n]
                };
                let (gzip, zstd, xz) = (may_be(&GZIP), may_be(&ZSTD), may_be(&XZ));
                let bzip2 = may_be(BZIP2_MAGIC)
                    && head
                        .get(BZIP2_MAGIC.len())
                        .is_none_or(|n| (b'1'..=b'9').contains(n));
                let packing = if gzip {
                    decode::Packing::Gzip
                } else if xz {
                    decode::Packing::Xz
                } else {
                    decode::Packing::Bzip2
                };
                self.packed = if !gzip && !zstd && !xz && !bzip2 {
                    Packed::No
                } else if head.len() < PACKED_HEAD {
                    Packed::Head(head)
                } else if zstd {
                    // Scanned unpacked by the scan itself, or out of
                    // clamd's sight.
                    if !self.zstd_scanned {
                        self.found = Some(Unopened::Zstd);
                        Packed::No
                    } else {
                        Packed::Zstd
                    }
                } else if gzip && head[GZIP.len()] & GZIP_RESERVED != 0 {
                    self.found = Some(Unopened::GzipFlags(head[GZIP.len()]));
                    Packed::No
                } else if self.depth >= DEPTH {
                    Packed::No
                } else {
                    match Inside::start(self.depth, packing, &budget.extraction) {
                        Some(mut inside) => {
                            if inside.feed(&head, budget) && inside.feed(&data[take..], budget) {
                                Packed::Inside(inside)
                            } else {
                                inside.close(&mut budget.extraction);
                                budget.open -= inside.watch.open_entries();
                                self.found = inside.watch.found;
                                Packed::No
                            }
                        }
                        None => Packed::No,
                    }
                };
            }
            Packed::Inside(inside) => {
                if !inside.feed(data, budget) {
                    inside.close(&mut budget.extraction);
                    budget.open -= inside.watch.open_entries();
                    self.found = inside.watch.found;
                    self.packed = Packed::No;
                }
            }
        }
    }
}

/// What the watch finds in a whole file, read from its start.
pub fn watch_file(file: &std::fs::File) -> std::io::Result<Option<Unopened>> {
    use std::os::unix::fs::FileExt;
    let mut watch = ZipWatch::default();
    let mut buf = vec![0u8; 256 * 1024];
    let mut at = 0;
    while watch.found.is_none() {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        watch.observe(&buf[..n]);
        at += n as u64;
    }
    watch.end();
    Ok(watch.found())
}

/// The records in `bytes` that matter, with their offsets, in order: those
/// whose signature starts before `starts`; `None` for one whose fields
/// `bytes` does not hold whole.
fn records(bytes: &[u8], starts: usize) -> impl Iterator<Item = (usize, Option<Record>)> + '_ {
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    memmem::find_iter(bytes, b"PK")
        .take_while(move |&at| at < starts)
        .filter_map(move |at| {
            let rest = &bytes[at..];
            let signed = SIGNATURES
                .iter()
                .find(|(signature, _)| rest.starts_with(*signature));
            if signed.is_some_and(|&(_, len)| rest.len() < len) {
                return Some((at, None));
            }
            // From here on, a record's fields are whole.
            let record = if rest.starts_with(LOCAL) {
                let (flags, method) = (u16_at(at + 6), u16_at(at + 8));
                let compressed = u32_at(at + 18);
                if compressed == IN_ZIP64 || u32_at(at + 22) == IN_ZIP64 {
                    Record::Unopened(Unopened::Zip64Local)
                } else if flags & ENCRYPTED == 0 && !method_name(method).is_empty() {
                    Record::Unopened(Unopened::Method(method))
                } else {
                    let names = u64::from(u16_at(at + 26)) + u64::from(u16_at(at + 28));
                    let sized = flags & SIZES_AFTER == 0;
                    Record::Local {
                        data_from: LOCAL_LEN as u64 + names,
                        len: sized.then_some(u64::from(compressed)),
                        unpacked: sized.then_some(u64::from(u32_at(at + 22))),
                        flags,
                        how: Packing {
                            method,
                            encrypted: flags & ENCRYPTED != 0,
                        },
                    }
                }
            } else if rest.starts_with(CENTRAL) {
                Record::Listed {
                    local: u64::from(u32_at(at + 42)),
                    len: u64::from(u32_at(at + 20)),
                    how: Packing {
                        method: u16_at(at + 10),
                        encrypted: u16_at(at + 8) & ENCRYPTED != 0,
                    },
                }
            } else if rest.starts_with(END) {
                let (size, offset) = (u32_at(at + 12), u32_at(at + 16));
                if size == IN_ZIP64 || offset == IN_ZIP64 {
                    Record::Unopened(Unopened::Zip64End)
                } else {
                    Record::End {
                        entries: u16_at(at + 10),
                        size: u64::from(size),
                        offset: u64::from(offset),
                    }
                }
            } else if rest.starts_with(LOCATOR) {
                Record::Locator
            } else if rest.starts_with(DESCRIPTOR) {
                Record::Descriptor {
                    len: u64::from(u32_at(at + 8)),
                }
            } else {
                return None;
            };
            Some((at, Some(record)))
        })
}

/// Pushes the `records` found in bytes beginning at offset `from` onto
/// `seen`, in order, up to the first whose fields are still to come:
/// judged in their order once it is whole, or without it at the end.
/// Returns whether one does.
fn whole_records(
    records: impl Iterator<Item = (usize, Option<Record>)>,
    from: u64,
    seen: &mut Vec<(u64, Record)>,
) -> bool {
    for (at, record) in records {
        match record {
            Some(record) => seen.push((from + at as u64, record)),
            None => return true,
        }
    }
    false
}

/// The first record in `bytes` that keeps clamd out, as [`records`] finds
/// them, without unpacking anything.
#[cfg(test)]
fn find(bytes: &[u8], starts: usize) -> Option<Unopened> {
    records(bytes, starts).find_map(|(_, r)| match r {
        Some(Record::Unopened(what)) => Some(what),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ar::tests::archive as ar;
    use crate::tar_watch::tests::member as tar_member;
    use crate::tests::numbers;

    /// A local file header with these flags, method and sizes.
    fn local_with(flags: u16, method: u16, compressed: u32, size: u32) -> Vec<u8> {
        let mut h = LOCAL.to_vec();
        h.extend_from_slice(&[45, 0]);
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&method.to_le_bytes());
        h.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
        h.extend_from_slice(&compressed.to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes());
        h.extend_from_slice(&[1, 0, 0, 0, b'a']);
        h
    }

    /// A local file header of a deflated file with these sizes.
    fn local(compressed: u32, size: u32) -> Vec<u8> {
        local_with(0, 8, compressed, size)
    }

    /// An end-of-central-directory record, without a comment.
    fn end(size: u32, offset: u32) -> Vec<u8> {
        let mut e = END.to_vec();
        e.extend_from_slice(&[0, 0, 0, 0, 1, 0, 1, 0]);
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(&offset.to_le_bytes());
        e.extend_from_slice(&[0, 0]);
        e
    }

    /// `records` amid other bytes, in bytes that begin as a zip (with an
    /// empty stored entry).
    fn body(records: &[Vec<u8>]) -> Vec<u8> {
        let mut b = local_with(0, 0, 0, 0);
        b.extend_from_slice(b"some bytes before PK and between ");
        for r in records {
            b.extend_from_slice(r);
            b.extend_from_slice(b"PK\x03 data data PK");
        }
        b
    }

    /// What the watch finds in `body`, fed `piece` bytes at a time.
    fn watch(body: &[u8], piece: usize) -> Option<Unopened> {
        watch_apart(TakenApart::default(), body, piece)
    }

    /// What the watch of a scan that takes `apart` finds.
    fn watch_apart(apart: TakenApart, body: &[u8], piece: usize) -> Option<Unopened> {
        let mut w = ZipWatch::of_scan(apart, None);
        for p in body.chunks(piece) {
            observe_counted(&mut w, p);
        }
        w.end();
        w.found()
    }

    /// Observes `data`, and checks that the count of open entries kept for
    /// the budget is the count there is.
    fn observe_counted(w: &mut ZipWatch, data: &[u8]) {
        w.observe(data);
        if w.found().is_none() {
            assert_eq!(w.budget.open, w.open_entries());
        }
    }

    #[test]
    fn finds_each_record_in_pieces_of_any_size() {
        let cases = [
            (body(&[local(IN_ZIP64, IN_ZIP64)]), Unopened::Zip64Local),
            (body(&[local(100, IN_ZIP64)]), Unopened::Zip64Local),
            (body(&[local(IN_ZIP64, 100)]), Unopened::Zip64Local),
            (
                body(&[local(10, 20), end(46, IN_ZIP64)]),
                Unopened::Zip64End,
            ),
            (
                body(&[local(10, 20), end(IN_ZIP64, 100)]),
                Unopened::Zip64End,
            ),
            (
                body(&[local(10, 20), local_with(8, 14, 10, 20)]),
                Unopened::Method(14),
            ),
            (body(&[local_with(0, 98, 10, 20)]), Unopened::Method(98)),
            (body(&[local_with(0, 93, 10, 20)]), Unopened::Method(93)),
        ];
        for (body, what) in &cases {
            for piece in 1..=body.len() {
                assert_eq!(watch(body, piece), Some(*what), "pieces of {piece}");
            }
        }
    }

    #[test]
    fn records_amid_other_bytes_count_where_unzippers_find_them() {
        // A program that reads zips holds their signatures in its code
        // (Python's zipimport compares with the local header's, and the
        // next bytes can read as a ZIP64 size); unzippers find a zip there
        // by an end record near the end whose directory they can read.
        let code = [
            b"\x7fELF code ".to_vec(),
            local(100, IN_ZIP64),
            local_with(0, 14, 10, 10),
            end(IN_ZIP64, 5),
            end(46, 0),
            LOCATOR.to_vec(),
            b" more code".to_vec(),
        ]
        .concat();
        // A self-extractor: its directory, then its end record; or, for a
        // ZIP64 one, the locator right before the end record.
        let mut directory = CENTRAL.to_vec();
        directory.resize(CENTRAL_LEN, 0);
        let mut locator = LOCATOR.to_vec();
        locator.resize(LOCATOR_LEN as usize, 0);
        let sfx = [code.clone(), directory, end(46, 0)].concat();
        let sfx64 = [code.clone(), locator, end(IN_ZIP64, IN_ZIP64)].concat();
        let filler = vec![0x90; END_REACH as usize];
        for piece in [1, 7, 1000] {
            assert_eq!(watch(&code, piece), None, "{piece}");
            for zip in [&sfx, &sfx64] {
                assert_eq!(watch(zip, piece), Some(Unopened::Zip64Local), "{piece}");
                let far = [zip, &filler[..]].concat();
                assert_eq!(watch(&far, piece), None, "{piece}");
            }
        }
        // Bytes that begin as a zip need no end record.
        let zip = [local(100, IN_ZIP64), filler].concat();
        assert_eq!(watch(&zip, 1000), Some(Unopened::Zip64Local));
        // The program stored in a zip is judged as it is, from its start;
        // a ZIP64 zip stored in one is found there.
        let stored = archive(b"", &[(&code, None, false, true)]);
        assert_eq!(watch(&stored, 7), None);
        let stored = archive(b"", &[(&zip, None, false, true)]);
        assert_eq!(watch(&stored, 7), Some(Unopened::Zip64Local));
    }

    #[test]
    fn a_record_at_the_very_end_is_found() {
        // An end record is 22 bytes: its last field is not needed.
        let mut b = body(&[local(10, 20)]);
        b.extend_from_slice(&end(46, IN_ZIP64));
        for piece in 1..=b.len() {
            assert!(watch(&b, piece).is_some(), "pieces of {piece}");
        }
    }

    /// Whether the watch finds something in `body` cut in two at each
    /// place, after the end of the body.
    fn found_at_each_cut(body: &[u8]) -> Vec<usize> {
        (1..body.len())
            .filter(|&n| {
                let mut w = ZipWatch::default();
                w.observe(&body[..n]);
                w.observe(&body[n..]);
                w.end();
                w.found().is_none()
            })
            .collect()
    }

    #[test]
    fn a_record_inside_another_waits_for_it() {
        // Found by the fuzzer. A ZIP64 local header at the start, with a
        // locator's signature in its checksum field: cut before its sizes,
        // the locator was judged first, and the header, whole with the next
        // piece, was then taken for one already judged.
        let mut zip64 = local(IN_ZIP64, IN_ZIP64);
        zip64[14..18].copy_from_slice(LOCATOR);
        assert_eq!(watch(&zip64, zip64.len()), Some(Unopened::Zip64Local));
        assert_eq!(
            found_at_each_cut(&zip64),
            Vec::<usize>::new(),
            "clean when cut there"
        );

        // A central directory signature right before a deflated entry that
        // holds a ZIP64 zip: judged behind it, the entry's data, begun
        // before the cut, still reaches its watch from its first byte.
        let inner = body(&[local(IN_ZIP64, IN_ZIP64)]);
        let mut b = local_with(0, 0, 0, 0);
        b.extend_from_slice(CENTRAL);
        b.extend_from_slice(&zip_of(&inner, 6, false));
        assert_eq!(watch(&b, b.len()), Some(Unopened::Zip64Local));
        assert_eq!(
            found_at_each_cut(&b),
            Vec::<usize>::new(),
            "clean when cut there"
        );

        // An end record behind a central directory signature whose fields
        // never come is judged at the end of the body.
        let mut b = body(&[local(10, 20)]);
        b.extend_from_slice(CENTRAL);
        b.extend_from_slice(&end(46, IN_ZIP64));
        assert_eq!(watch(&b, b.len()), Some(Unopened::Zip64End));
        assert_eq!(
            found_at_each_cut(&b),
            Vec::<usize>::new(),
            "clean when cut there"
        );
    }

    #[test]
    fn pieces_never_change_whether_something_is_found() {
        // Bodies made of the fragments that matter, cut at random places:
        // signatures, fields, entry headers, deflated data and whole zips.
        let zip64 = body(&[local(IN_ZIP64, IN_ZIP64)]);
        let fragments: Vec<Vec<u8>> = vec![
            b"PK".to_vec(),
            LOCAL.to_vec(),
            END.to_vec(),
            vec![0xff; 4],
            vec![0; 9],
            vec![14, 0],
            b"xyz".to_vec(),
            local_with(0, DEFLATED, 40, 50),
            local_with(SIZES_AFTER, DEFLATED, 0, 0),
            miniz_oxide::deflate::compress_to_vec(&zip64, 6),
            miniz_oxide::deflate::compress_to_vec(&zip64, 0),
            zip_of(&zip64, 6, true),
            zip_of(b"text", 1, false),
            archive(
                b"",
                &[
                    (b"text", Some(1), true, false),
                    (b"more", None, false, true),
                ],
            ),
            CENTRAL.to_vec(),
            vec![1, 0],
        ];
        let mut next = numbers(0x9e37_79b9_7f4a_7c15);
        let mut found = 0;
        for _ in 0..2000 {
            let body: Vec<u8> = (0..next(40))
                .flat_map(|_| fragments[next(fragments.len())].clone())
                .collect();
            let whole = watch(&body, body.len().max(1));
            let mut w = ZipWatch::default();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = 1 + next(rest.len().min(30));
                observe_counted(&mut w, &rest[..n]);
                rest = &rest[n..];
            }
            w.end();
            // Which record is named may differ: an entry's own watch sees
            // its data in other pieces than the records around it.
            assert_eq!(w.found().is_some(), whole.is_some(), "{body:?}");
            found += usize::from(whole.is_some());
        }
        assert!(found > 100, "{found} of the bodies hold such a record");
    }

    #[test]
    fn what_clamd_opens_is_left_to_it() {
        let plain = body(&[
            local(10, 20),
            local(0, 0),
            // Stored, deflate64, bzip2, implode.
            local_with(0, 0, 10, 10),
            local_with(8, 9, 10, 20),
            local_with(0, 12, 10, 20),
            local_with(0, 6, 10, 20),
            // Encrypted (PPMd; AES's marker, 99): clamd's own setting.
            local_with(1, 98, 10, 20),
            local_with(1, 99, 10, 20),
            // No tool unpacks an unknown method.
            local_with(0, 300, 10, 20),
            end(46, 1000),
        ]);
        // A signature whose fields the body does not hold whole.
        let mut cut = body(&[local(10, 20)]);
        cut.extend_from_slice(&local(IN_ZIP64, IN_ZIP64)[..LOCAL_LEN - 1]);
        let ones = vec![0xff; 4096];
        for b in [&plain, &cut, &ones] {
            for piece in [1, 2, 3, 7, 25, 26, 27, 100, b.len()] {
                assert_eq!(watch(b, piece), None, "pieces of {piece}");
            }
        }
    }

    /// `data` as a gzip file.
    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut out = GZIP.to_vec();
        out.extend_from_slice(&[0; 7]);
        out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out
    }

    #[test]
    fn a_gzip_file_is_watched_unpacked() {
        // A tar keeps its files as they are: a .tar.gz holding a ZIP64 zip
        // shows the zip's records once unpacked.
        let tar = tar_member(b"a.zip", &body(&[local(IN_ZIP64, IN_ZIP64)]));
        let tgz = gzip(&tar);
        assert_eq!(
            find(&tgz, tgz.len()),
            None,
            "the records show only unpacked"
        );
        for piece in [1, 2, 3, 4, 7, 100, tgz.len()] {
            assert_eq!(
                watch(&tgz, piece),
                Some(Unopened::Zip64Local),
                "pieces of {piece}"
            );
        }
        assert_eq!(
            watch(&gzip(&body(&[local_with(0, 14, 1, 2)])), 5),
            Some(Unopened::Method(14))
        );
        // A gzip file inside the gzip file is unpacked too.
        assert_eq!(watch(&gzip(&tgz), 7), Some(Unopened::Zip64Local));
        // Plain archives inside, a damaged stream, or gzip only past the
        // start: nothing.
        let plain = gzip(&body(&[local(10, 20), end(46, 1000)]));
        let mut damaged = gzip(&body(&[local(IN_ZIP64, IN_ZIP64)]));
        damaged[12] ^= 0xff;
        let mut late = b"x".to_vec();
        late.extend_from_slice(&tgz);
        for b in [&plain, &damaged, &late] {
            for piece in [1, 3, 1000] {
                assert_eq!(watch(b, piece), None, "pieces of {piece}");
            }
        }
    }

    /// `data` as an xz file, packed with `preset` (6 is xz's default).
    fn xz(data: &[u8], preset: u32) -> Vec<u8> {
        use std::io::Write;
        let mut e = xz2::write::XzEncoder::new(Vec::new(), preset);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// The only test that unpacks xz dictionaries over 8 MiB, as it takes
    /// the server-wide slots for them itself.
    #[test]
    fn xz_dictionaries_over_8_mib_take_one_of_the_big_slots() {
        let tar = tar_member(b"a.zip", &body(&[local(IN_ZIP64, IN_ZIP64)]));
        // xz -7, -8 and -9: dictionaries of 16, 32 and 64 MiB.
        for preset in [7, 8, 9] {
            let packed = xz(&tar, preset);
            for piece in [1, 100, packed.len()] {
                assert_eq!(watch(&packed, piece), Some(Unopened::Zip64Local));
            }
            // A tar's member.
            let member = tar_member(b"t.tar.xz", &packed);
            assert_eq!(watch(&member, 9), Some(Unopened::Zip64Local));
        }
        // With every slot taken, such a file is out of sight; once one is
        // free again, it is not.
        let packed = xz(&tar, 9);
        let slots: Vec<_> = std::iter::from_fn(decode::BigXzSlot::take).collect();
        assert_eq!(slots.len(), decode::BIG_XZ_MAX);
        assert_eq!(watch(&packed, 100), None);
        assert_eq!(watch(&xz(&tar, 6), 100), Some(Unopened::Zip64Local));
        drop(slots);
        assert_eq!(watch(&packed, 100), Some(Unopened::Zip64Local));
        // A dictionary over 64 MiB is out of sight: xz -9's block header
        // with its LZMA2 dictionary raised from 64 to 128 MiB.
        assert_eq!(watch(&larger_dictionary(packed), 100), None);
    }

    /// An xz file of one block, as xz2 writes it (no sizes in the block
    /// header), with the dictionary its LZMA2 filter names doubled.
    fn larger_dictionary(mut xz: Vec<u8>) -> Vec<u8> {
        const BLOCK: usize = 12;
        let header_len = (usize::from(xz[BLOCK]) + 1) * 4;
        assert_eq!(xz[BLOCK + 1], 0, "one filter, no sizes");
        assert_eq!(xz[BLOCK + 2..BLOCK + 4], [0x21, 1], "LZMA2");
        xz[BLOCK + 4] += 2;
        let crc_at = BLOCK + header_len - 4;
        let crc = crate::tests::crc32(&xz[BLOCK..crc_at]);
        xz[crc_at..crc_at + 4].copy_from_slice(&crc.to_le_bytes());
        xz
    }

    /// `data` as a bzip2 file.
    fn bz2(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn unpacking_that_may_take_long_is_done_off_the_runtime() {
        use crate::tests::counting_moves;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        // How many times watching `body` in pieces of `piece` moved the
        // runtime's other tasks away.
        let moves = |body: &[u8], piece: usize| {
            rt.block_on(async { counting_moves(|| watch(body, piece)).1 })
        };
        let tar = tar_member(b"a.txt", &[7; 40_000]);
        for packed in [xz(&tar, 0), bz2(&tar)] {
            // Each piece (the first in two: the head, then the rest).
            assert_eq!(moves(&packed, 100), packed.len().div_ceil(100) + 1);
        }
        // Deflated data in small pieces makes a few MiB at most.
        let mut next = numbers(7);
        let noise: Vec<u8> = (0..40_000).map(|_| next(256) as u8).collect();
        let tar = tar_member(b"a.bin", &noise);
        let (gz, zip) = (gzip(&tar), zip_of(&tar, 1, false));
        assert_eq!(moves(&gz, UNPACKED_IN_PLACE - 1), 0);
        assert_eq!(moves(&zip, UNPACKED_IN_PLACE - 1), 0);
        assert!(moves(&gz, UNPACKED_IN_PLACE) > 0);
        assert!(moves(&zip, UNPACKED_IN_PLACE) > 0);
        // Nothing unpacked, nothing moved.
        assert_eq!(moves(&tar, tar.len()), 0);
    }

    #[test]
    fn xz_and_bzip2_files_are_watched_unpacked() {
        // clamd unpacks them, and sees a tar's files as they are.
        let tar = tar_member(b"a.zip", &body(&[local(IN_ZIP64, IN_ZIP64)]));
        let deb = ar(&[b"2.0\n", &gzip(b"data")]);
        for packed in [xz(&tar, 6), bz2(&tar), xz(&tar, 0)] {
            assert_eq!(find(&packed, packed.len()), None);
            for piece in [1, 5, 100, packed.len()] {
                assert_eq!(
                    watch(&packed, piece),
                    Some(Unopened::Zip64Local),
                    "pieces of {piece}"
                );
            }
        }
        for packed in [xz(&deb, 6), bz2(&deb), xz(&tar_member(b"a.deb", &deb), 6)] {
            assert_eq!(watch(&packed, 9), Some(Unopened::ArPacked));
            for piece in [1, 7, packed.len()] {
                assert_eq!(
                    handed_out(&packed, piece),
                    (vec![(deb.clone(), true)], None)
                );
            }
        }
        // An xz file's streams one after the other, with padding between
        // them: all of it is unpacked, as clamd and `xz -d` do.
        let plain = tar_member(b"a.txt", b"text");
        let streams = [xz(&plain, 6), vec![0; 8], xz(&tar, 6)].concat();
        assert_eq!(watch(&streams, 7), Some(Unopened::Zip64Local));
        let two = [xz(&deb[..20], 6), vec![0; 4], xz(&deb[20..], 6)].concat();
        for piece in [1, 9, two.len()] {
            assert_eq!(handed_out(&two, piece), (vec![(deb.clone(), true)], None));
        }
        assert!(!handed_out(&two[..two.len() - 3], 9).0[0].1, "not whole");
        // Bytes that begin no stream end it all, whatever follows them.
        let trailed = [xz(&deb, 6), b"x\0".to_vec(), xz(&deb, 6)].concat();
        for piece in [1, 2, trailed.len()] {
            assert_eq!(
                handed_out(&trailed, piece),
                (vec![(deb.clone(), true)], None)
            );
        }
        // Cut short before its stream's end.
        for packed in [xz(&deb, 6), bz2(&deb)] {
            let cut = &packed[..packed.len() - 5];
            assert!(!handed_out(cut, 100).0[0].1, "not whole");
        }
        // Damaged streams and bytes that only begin like one are out of
        // sight here.
        let mut damaged = xz(&tar, 6);
        damaged[20] ^= 0xff;
        for other in [damaged, b"BZh0".to_vec(), b"BZh9 no bzip2".to_vec()] {
            assert_eq!(watch(&other, 3), None);
        }
        // Inside a tar, as clamd unpacks them too.
        assert_eq!(
            watch(&tar_member(b"t.tar.xz", &xz(&tar, 6)), 100),
            Some(Unopened::Zip64Local)
        );
    }

    #[test]
    fn a_zstd_file_is_found_where_the_scan_does_not_unpack_it() {
        let zst = zstd::bulk::compress(&[b'x'; 5000], 3).unwrap();
        let unpacked = TakenApart {
            ar: false,
            zstd: true,
            extract: 0,
        };
        for piece in [1, 2, 3, 5, 100, zst.len()] {
            assert_eq!(
                watch(&zst, piece),
                Some(Unopened::Zstd),
                "pieces of {piece}"
            );
            assert_eq!(
                watch_apart(unpacked, &zst, piece),
                None,
                "pieces of {piece}"
            );
        }
        // In a gzip file, or as a tar's member: clamd sees it as it is.
        for inner in [gzip(&zst), tar_member(b"a.zst", &zst)] {
            assert_eq!(watch_apart(unpacked, &inner, 7), Some(Unopened::Zstd));
        }
        // Only at the start.
        let late = [b"x".as_slice(), &zst].concat();
        assert_eq!(watch(&late, 7), None);
    }

    /// What a watch that hands files out hands out of `body`, fed in
    /// pieces of `piece` bytes: each file, and whether it came whole.
    fn handed_out(body: &[u8], piece: usize) -> (Vec<(Vec<u8>, bool)>, Option<Unopened>) {
        let apart = TakenApart {
            ar: true,
            zstd: true,
            extract: 1,
        };
        let mut w = ZipWatch::of_scan(apart, None);
        let mut files: Vec<(Vec<u8>, bool)> = Vec::new();
        let mut open = false;
        // The body's pieces, then its end, which ends what is still open.
        for p in body.chunks(piece).map(Some).chain([None]) {
            match p {
                Some(p) => w.observe(p),
                None => w.end(),
            }
            for event in w.take_extracted() {
                match event {
                    Handed::Start => {
                        assert!(!open, "one at a time");
                        open = true;
                        files.push((Vec::new(), false));
                    }
                    Handed::Data(d) => files.last_mut().unwrap().0.extend_from_slice(&d),
                    Handed::End { whole } => {
                        assert!(open, "ends what started");
                        open = false;
                        files.last_mut().unwrap().1 = whole;
                    }
                }
            }
        }
        assert!(!open, "all ended with the body");
        (files, w.found())
    }

    #[test]
    fn packages_on_an_iso_image_are_handed_out() {
        // clamd opens the image, not the .deb on it.
        let image = crate::iso_walk::tests::IMAGE;
        let deb = include_bytes!("../../tests/fixtures/eicar.deb").to_vec();
        let tar = tar_member(b"disc.iso", image);
        for body in [image.to_vec(), xz(image, 6), gzip(image), tar] {
            assert_eq!(find(&body, body.len()), None);
            for piece in [1, 9, 2048, body.len()] {
                assert_eq!(
                    handed_out(&body, piece),
                    (vec![(deb.clone(), true)], None),
                    "pieces of {piece}"
                );
            }
        }
        // A file on it cut short with the body is not whole.
        let cut = &image[..36 * 2048 + 100];
        assert_eq!(
            handed_out(cut, 500),
            (vec![(deb[..100].to_vec(), false)], None)
        );
    }

    #[test]
    fn a_stored_entry_whose_sizes_come_after_it_is_watched() {
        // As Python's zipfile writes to a pipe: a .deb there was out of
        // sight (clamd unpacks the zip by its
        // directory, then sees the .deb as it is).
        let deb = include_bytes!("../../tests/fixtures/eicar.deb").to_vec();
        let text: &[u8] = b"some text";
        let zip = archive(b"", &[(text, None, true, true), (&deb, None, true, true)]);
        for piece in [1, 7, 100, zip.len()] {
            assert_eq!(
                handed_out(&zip, piece),
                (vec![(deb.clone(), true)], None),
                "pieces of {piece}"
            );
        }
        // Without its descriptor it is watched to the body's end: what it
        // handed out is not whole.
        let at = memmem::find(&zip, DESCRIPTOR).unwrap();
        let second = at + DESCRIPTOR_LEN;
        let cut = [&zip[..second], &zip[second..second + 40 + deb.len()]].concat();
        let (files, found) = handed_out(&cut, 50);
        assert_eq!((files.len(), files[0].1, found), (1, false, None));
        // A descriptor that gives another length does not end it.
        let mut wrong = zip.clone();
        let last = memmem::rfind(&wrong, DESCRIPTOR).unwrap();
        wrong[last + 8] ^= 1;
        assert!(!handed_out(&wrong, 64).0[0].1, "not whole");
        // Entries of all kinds after one another: whatever the pieces,
        // the same is found.
        let many = archive(
            b"",
            &[
                (text, None, true, true),
                (&body(&[local(IN_ZIP64, IN_ZIP64)]), None, true, true),
                (text, Some(6), true, true),
            ],
        );
        for piece in [1, 5, many.len()] {
            assert_eq!(watch(&many, piece), Some(Unopened::Zip64Local));
        }
    }

    #[test]
    fn packages_in_a_cpio_archive_are_handed_out() {
        // clamd unpacks cpio, not the .deb in it.
        let deb = include_bytes!("../../tests/fixtures/eicar.deb").to_vec();
        let newc = include_bytes!("../../tests/fixtures/eicar-deb.cpio");
        let odc = include_bytes!("../../tests/fixtures/eicar-deb-odc.cpio");
        for body in [newc.to_vec(), odc.to_vec(), gzip(newc), xz(odc, 6)] {
            assert_eq!(find(&body, body.len()), None);
            for piece in [1, 9, body.len()] {
                assert_eq!(
                    handed_out(&body, piece),
                    (vec![(deb.clone(), true)], None),
                    "pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn files_clamd_does_not_open_are_handed_out() {
        let noise: Vec<u8> = (0..3000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let zst = zstd::bulk::compress(&noise, 3).unwrap();
        let deb = ar(&[b"2.0\n", &gzip(b"data")]);
        let mut rpm = rpm::MAGIC.to_vec();
        rpm.resize(300, 7);
        let tar = [
            tar_member(b"a.zst", &zst),
            tar_member(b"b.txt", b"text"),
            tar_member(b"c.deb", &deb),
            tar_member(b"d.rpm", &rpm),
        ]
        .concat();
        let zip = archive(
            b"",
            &[
                (b"{}", None, false, true),
                (&zst, None, false, true),
                (&deb, Some(6), false, true),
                (&rpm, Some(0), false, true),
            ],
        );
        let files = vec![
            (zst.clone(), true),
            (deb.clone(), true),
            (rpm.clone(), true),
        ];
        for body in [&tar, &zip, &gzip(&tar)] {
            for piece in [1, 5, 700, body.len()] {
                assert_eq!(
                    handed_out(body, piece),
                    (files.clone(), None),
                    "pieces of {piece}"
                );
            }
            // A watch that does not hand them out reports them.
            assert_eq!(watch(body, 100), Some(Unopened::Zstd));
        }
        // Past the most handed out, they are reported.
        let many: Vec<u8> = (0..=HANDED_MAX)
            .flat_map(|_| tar_member(b"a.zst", &zst))
            .collect();
        let (files, found) = handed_out(&many, 64 * 1024);
        assert_eq!((files.len(), found), (HANDED_MAX, Some(Unopened::Zstd)));
        // One cut short is handed out as such.
        let cut = &tar[..512 + 100];
        assert_eq!(
            handed_out(cut, 50),
            (vec![(zst[..100].to_vec(), false)], None)
        );
        // A gzip file's content (a `.deb.gz`), as the body or a tar's
        // member; of two gzip members, both.
        let deb_gz = gzip(&deb);
        let two = [gzip(&deb[..20]), gzip(&deb[20..])].concat();
        for body in [
            deb_gz.clone(),
            tar_member(b"a.deb.gz", &deb_gz),
            two.clone(),
            gzip(&rpm),
            gzip(&zst),
        ] {
            let (files, found) = handed_out(&body, 3);
            assert_eq!(found, None);
            assert_eq!(files.len(), 1);
            assert!(files[0].1, "whole");
            assert_eq!(handed_out(&body, body.len()), (files, None));
        }
        assert_eq!(handed_out(&two, 9).0, vec![(deb.clone(), true)]);
        // Cut short, or damaged after the file: not whole.
        let mut damaged = deb_gz.clone();
        damaged.extend_from_slice(b"\x1f\x8b\x08 not deflate");
        for body in [&deb_gz[..deb_gz.len() - 4], &damaged] {
            assert_eq!(handed_out(body, 11), (vec![(deb.clone(), false)], None));
        }
        let big = ar(&[b"2.0\n", &noise]);
        let big_gz = gzip(&big);
        let (files, _) = handed_out(&big_gz[..big_gz.len() / 2], 11);
        assert!(files.len() == 1 && !files[0].1 && big.starts_with(&files[0].0));
        // A watch that does not hand it out reports it.
        assert_eq!(watch(&deb_gz, 100), Some(Unopened::ArPacked));
    }

    #[test]
    fn pieces_never_change_what_is_handed_out() {
        // Bodies made of tar members and zip entries holding files to hand
        // out, their magics alone, and damage, in any order.
        let zst = zstd::bulk::compress(&[7u8; 300], 1).unwrap();
        let deb = ar(&[b"2.0\n", &gzip(b"data")]);
        let mut rpm = rpm::MAGIC.to_vec();
        rpm.resize(100, 1);
        let fragments: Vec<Vec<u8>> = vec![
            tar_member(b"a.zst", &zst),
            tar_member(b"b.deb", &deb),
            tar_member(b"c.rpm", &rpm),
            tar_member(b"d.txt", &zst[..10]),
            archive(
                b"",
                &[(&zst, None, false, true), (&deb, Some(6), false, true)],
            ),
            gzip(&tar_member(b"e.deb", &deb)),
            // In a zip stored in a zip, whose entry both watches see: the
            // zip's own, and the stored entry's.
            archive(
                b"",
                &[(
                    &archive(b"", &[(&deb, None, false, true)]),
                    None,
                    false,
                    true,
                )],
            ),
            archive(
                b"",
                &[(
                    &archive(b"", &[(&deb, Some(6), false, true)]),
                    None,
                    true,
                    true,
                )],
            ),
            gzip(&deb),
            xz(&deb, 1),
            bz2(&tar_member(b"f.deb", &deb)),
            ZSTD.to_vec(),
            ar::MAGIC.to_vec(),
            rpm::MAGIC.to_vec(),
            LOCAL.to_vec(),
            vec![0; 512],
            vec![0xff; 3],
        ];
        let mut next = numbers(0x2545_f491_4f6c_dd1d);
        let mut handed = 0;
        for _ in 0..300 {
            let picks: Vec<usize> = (0..1 + next(6)).map(|_| next(fragments.len())).collect();
            let body: Vec<u8> = picks.iter().flat_map(|&i| fragments[i].clone()).collect();
            let whole = handed_out(&body, body.len());
            for piece in [1, 7, 100] {
                let cut = handed_out(&body, piece);
                // Once something is found (two bzip2 files one after the
                // other, say), the watch stops where it found it, which
                // may be before or after a file began, as the pieces fall;
                // the body is not clean either way.
                match whole.1 {
                    None => assert_eq!(cut, whole, "pieces of {piece}: {picks:?}"),
                    Some(_) => assert!(cut.1.is_some(), "pieces of {piece}: {picks:?}"),
                }
            }
            handed += whole.0.len();
        }
        assert!(handed > 100, "{handed} files handed out");
    }

    #[test]
    fn an_ar_archive_inside_another_is_found_by_its_members() {
        let mut ustar = vec![0u8; 1024];
        ustar[257..262].copy_from_slice(b"ustar");
        let objects = ar(&[b"\x7fELF object", b"another"]);
        let split = TakenApart {
            ar: true,
            zstd: true,
            extract: 0,
        };
        for packed in [
            gzip(b"data"),
            b"BZh91AY&SY".to_vec(),
            b"\xfd7zXZ\0\0".to_vec(),
            ustar,
        ] {
            let deb = ar(&[b"2.0\n", &packed]);
            for piece in [1, 7, 100, deb.len()] {
                assert_eq!(
                    watch(&deb, piece),
                    Some(Unopened::ArPacked),
                    "pieces of {piece}"
                );
                // The scan splits the body's own.
                assert_eq!(watch_apart(split, &deb, piece), None, "pieces of {piece}");
            }
            let tar = tar_member(b"a.deb", &deb);
            assert_eq!(watch_apart(split, &tar, 100), Some(Unopened::ArPacked));
            assert_eq!(
                watch_apart(split, &gzip(&deb), 100),
                Some(Unopened::ArPacked)
            );
        }
        // A static library's objects show as they are.
        assert_eq!(watch(&objects, 3), None);
        assert_eq!(watch(&gzip(&objects), 3), None);
    }

    /// A zip of one deflated entry holding `data`, deflated at `level`
    /// (0 keeps the data as it is, in stored blocks), with its sizes in
    /// the header or after the data.
    fn zip_of(data: &[u8], level: u8, sizes_after: bool) -> Vec<u8> {
        archive(b"", &[(data, Some(level), sizes_after, true)])
    }

    /// A zip after `prefix`, of entries holding their data deflated at a
    /// level (or stored: `None`; packed with bzip2: `BZIP2_LEVEL`), with
    /// their sizes in the header or after the data, listed in the central
    /// directory or not.
    fn archive(prefix: &[u8], entries: &[(&[u8], Option<u8>, bool, bool)]) -> Vec<u8> {
        let mut zip = prefix.to_vec();
        let mut directory = Vec::new();
        let mut listed = 0u16;
        for &(data, level, sizes_after, list) in entries {
            let (method, packed) = match level {
                Some(BZIP2_LEVEL) => (BZIP2, bz2(data)),
                Some(level) => (DEFLATED, miniz_oxide::deflate::compress_to_vec(data, level)),
                None => (STORED, data.to_vec()),
            };
            let (flags, header_len) = if sizes_after {
                (SIZES_AFTER, 0)
            } else {
                (0, packed.len() as u32)
            };
            let at = (zip.len() - prefix.len()) as u32;
            zip.extend_from_slice(&local_with(flags, method, header_len, data.len() as u32));
            zip.extend_from_slice(&packed);
            if sizes_after {
                zip.extend_from_slice(b"PK\x07\x08\0\0\0\0");
                zip.extend_from_slice(&(packed.len() as u32).to_le_bytes());
                zip.extend_from_slice(&(data.len() as u32).to_le_bytes());
            }
            if list {
                listed += 1;
                directory.extend_from_slice(CENTRAL);
                directory.extend_from_slice(&[20, 0, 20, 0]);
                directory.extend_from_slice(&flags.to_le_bytes());
                directory.extend_from_slice(&method.to_le_bytes());
                directory.extend_from_slice(&[0; 8]);
                directory.extend_from_slice(&(packed.len() as u32).to_le_bytes());
                directory.extend_from_slice(&(data.len() as u32).to_le_bytes());
                directory.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
                directory.extend_from_slice(&at.to_le_bytes());
                directory.push(b'a');
            }
        }
        let offset = (zip.len() - prefix.len()) as u32;
        zip.extend_from_slice(&directory);
        zip.extend_from_slice(END);
        zip.extend_from_slice(&[0, 0, 0, 0]);
        zip.extend_from_slice(&listed.to_le_bytes());
        zip.extend_from_slice(&listed.to_le_bytes());
        zip.extend_from_slice(&(directory.len() as u32).to_le_bytes());
        zip.extend_from_slice(&offset.to_le_bytes());
        zip.extend_from_slice(&[0, 0]);
        zip
    }

    #[test]
    fn a_stored_entry_is_watched_from_its_start() {
        // A tar whose second header has an empty name, and a gzip file of
        // a ZIP64 zip: clamd judges each from the stored entry's start.
        let mut tar = vec![0u8; 1024];
        tar[..5].copy_from_slice(b"a.txt");
        tar[124..136].copy_from_slice(b"00000000000\0");
        tar[512 + 124..512 + 136].copy_from_slice(b"00000000000\0");
        for h in [0, 512] {
            tar[h + 257..h + 262].copy_from_slice(b"ustar");
            tar[h + 148..h + 156].copy_from_slice(b"        ");
            let sum: u32 = tar[h..h + 512].iter().map(|&b| u32::from(b)).sum();
            tar[h + 148..h + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        }
        let gz = gzip(&body(&[local(IN_ZIP64, IN_ZIP64)]));
        for (inner, what) in [(&tar, Unopened::TarEmptyName), (&gz, Unopened::Zip64Local)] {
            let zip = archive(
                b"",
                &[(b"readme", None, false, true), (inner, None, false, true)],
            );
            assert_eq!(find(&zip, zip.len()), None);
            for piece in [1, 3, 100, zip.len()] {
                assert_eq!(watch(&zip, piece), Some(what), "pieces of {piece}");
            }
            // So is one whose sizes come after its data, up to its
            // descriptor.
            let zip = archive(b"", &[(inner, None, true, true)]);
            for piece in [1, 3, 100, zip.len()] {
                assert_eq!(watch(&zip, piece), Some(what), "pieces of {piece}");
            }
        }
    }

    #[test]
    fn an_entry_the_directory_does_not_list_is_found() {
        let text = b"a text that deflate packs, a text that deflate packs";
        let mut hidden = b"MZ".to_vec();
        hidden.extend_from_slice(&[7; 300]);
        let hidden = &hidden[..];
        let at = |i: usize, n: usize| {
            let mut e = vec![(&text[..], Some(6), false, true); n];
            e.insert(i, (hidden, Some(6), i.is_multiple_of(2), false));
            e
        };
        for (i, n) in [(0, 1), (1, 1), (1, 2), (2, 2)] {
            for prefix in [&b""[..], b"MZ self-extracting stub"] {
                let zip = archive(prefix, &at(i, n));
                for piece in [1, 7, 64, zip.len()] {
                    assert_eq!(
                        watch(&zip, piece),
                        Some(Unopened::Unlisted),
                        "hidden at {i} of {n}, prefix {prefix:?}, pieces of {piece}"
                    );
                }
            }
        }
        // The directory gives the listed entry a length that reaches over
        // the hidden one: clamd unpacks the listed one, whose deflate
        // stream ends before, and unzip is content; a streaming unzipper
        // goes by the header's length, or the stream's end, and reads the
        // hidden one next. With a length in the header, the two lengths
        // disagree; without, the stream's end shows the hidden entry.
        for (sizes_after, what) in [(false, Unopened::Disagreeing), (true, Unopened::Unlisted)] {
            let mut zip = archive(
                b"",
                &[
                    (text, Some(6), sizes_after, true),
                    (hidden, Some(6), false, false),
                ],
            );
            let dir = memmem::rfind(&zip, CENTRAL).unwrap();
            let data_at = LOCAL_LEN as u32 + 1;
            zip[dir + 20..dir + 24].copy_from_slice(&(dir as u32 - data_at).to_le_bytes());
            for piece in [1, 13, zip.len()] {
                assert_eq!(watch(&zip, piece), Some(what), "{sizes_after}");
            }
        }
        // The directory names an offset where no header begins.
        let mut zip = archive(b"", &[(text, Some(6), false, true)]);
        let dir = memmem::rfind(&zip, CENTRAL).unwrap();
        zip[dir + 42..dir + 46].copy_from_slice(&5u32.to_le_bytes());
        assert_eq!(watch(&zip, 3), Some(Unopened::Unlisted));
        // In a zip in a zip.
        let inner = archive(b"", &at(1, 1));
        assert_eq!(
            watch(&zip_of(&inner, 6, false), 5),
            Some(Unopened::Unlisted)
        );
    }

    #[test]
    fn an_entry_its_directory_describes_otherwise_is_found() {
        // clamd unpacks by the local header, Python's zipfile by the
        // directory (unzip too, for the encryption flag): a local header
        // that claims encryption, another method or another length has
        // clamd skip an entry that zipfile extracts.
        let text = b"a text that deflate packs, a text that deflate packs";
        let zip = archive(
            b"",
            &[(text, Some(6), false, true), (text, Some(6), true, true)],
        );
        let second = memmem::rfind(&zip, LOCAL).unwrap();
        assert!(second > 0);
        let edits: [(usize, &[u8]); 5] = [
            (6, &[1 | SIZES_AFTER as u8, 0]),
            (8, &[12, 0]),
            (8, &[99, 0]),
            (8, &[0x2c, 1]),
            (8, &[0, 0]),
        ];
        // The first entry's packed length, shorter or none (without the
        // flag that puts it after the data).
        for len in [10u32, 0] {
            let mut edited = zip.clone();
            edited[18..22].copy_from_slice(&len.to_le_bytes());
            assert_eq!(watch(&edited, 7), Some(Unopened::Disagreeing), "{len}");
        }
        for (field, value) in edits {
            let mut edited = zip.clone();
            edited[second + field..second + field + 2].copy_from_slice(value);
            for piece in [1, 10, edited.len()] {
                assert_eq!(
                    watch(&edited, piece),
                    Some(Unopened::Disagreeing),
                    "{field}: {value:?}, pieces of {piece}"
                );
            }
        }
        assert_eq!(watch(&zip, 10), None);
    }

    #[test]
    fn an_archive_seen_through_stored_blocks_is_judged_unpacked() {
        // A zip of incompressible entries, larger than a stored block
        // (65,535 bytes), deflated into another zip at level 0: its records
        // show in the outer data, shifted by the blocks' headers.
        // Incompressible bytes.
        let noise = crate::tests::noise(40_000);
        let inner = archive(
            b"",
            &[
                (&noise, Some(6), false, true),
                (&noise, Some(6), true, true),
                (&noise, Some(6), false, true),
            ],
        );
        assert!(inner.len() > 100_000);
        let outer = archive(b"", &[(&inner, Some(0), false, true)]);
        for piece in [1000, outer.len()] {
            assert_eq!(watch(&outer, piece), None, "pieces of {piece}");
        }
        // Unpacked, the inner archive is still judged.
        let mut hiding = inner.clone();
        let dir = memmem::rfind(&hiding, CENTRAL).unwrap();
        hiding[dir + 8] |= ENCRYPTED as u8;
        let outer = archive(b"", &[(&hiding, Some(0), false, true)]);
        assert_eq!(watch(&outer, 1000), Some(Unopened::Disagreeing));
    }

    #[test]
    fn two_zips_one_after_the_other_are_found() {
        let eicar = archive(b"", &[(b"EICAR, say, packed", Some(6), false, true)]);
        let readme = archive(b"", &[(b"a harmless text, packed", Some(6), true, true)]);
        for two in [[&eicar[..], &readme[..]], [&readme[..], &eicar[..]]] {
            let zip = two.concat();
            for piece in [1, 17, zip.len()] {
                assert_eq!(
                    watch(&zip, piece),
                    Some(Unopened::Concatenated),
                    "pieces of {piece}"
                );
            }
            // Inside a zip's deflated entry, or a gzip file.
            assert_eq!(
                watch(&zip_of(&zip, 6, false), 9),
                Some(Unopened::Concatenated)
            );
            assert_eq!(watch(&gzip(&zip), 9), Some(Unopened::Concatenated));
        }
    }

    #[test]
    fn a_body_file_is_judged_as_a_whole() {
        // Two stored zips in a zip, then more data: read 256 KiB at a time,
        // the two inner zips are seen before the outer one's directory.
        let noise = crate::tests::noise;
        let (a, b, c) = (noise(200_000), noise(200_001), noise(200_002));
        let inner_a = archive(b"", &[(&a, None, false, true)]);
        let inner_b = archive(b"", &[(&b, None, false, true)]);
        let outer = archive(
            b"",
            &[
                (&inner_a, None, false, true),
                (&inner_b, None, false, true),
                (&c, None, false, true),
            ],
        );
        let path = std::env::temp_dir().join(format!("zip-watch-{}.zip", std::process::id()));
        std::fs::write(&path, &outer).unwrap();
        let found = watch_file(&std::fs::File::open(&path).unwrap());
        std::fs::remove_file(&path).unwrap();
        assert_eq!(found.unwrap(), None);
        assert_eq!(watch(&outer, 256 * 1024), None);
    }

    #[test]
    fn archives_as_archivers_write_them_hide_nothing() {
        let text = b"a text that deflate packs, a text that deflate packs";
        let plain = archive(
            b"",
            &[(text, Some(6), false, true), (text, None, true, true)],
        );
        // A stored zip in a zip: its records lie inside the outer entry.
        let stored_in = archive(
            b"stub",
            &[(text, Some(1), true, true), (&plain, None, false, true)],
        );
        // Deflate keeps packed data as it is: inner records show too.
        let kept_in = archive(b"", &[(&zip_of(&plain, 6, false), Some(0), false, true)]);
        // A stored entry is not listed: clamd sees its bytes anyway.
        let stored_unlisted = archive(
            b"",
            &[(text, None, false, false), (text, None, false, true)],
        );
        // Stored zips in a zip, as a fat jar holds its libraries.
        let jars = archive(
            b"",
            &[(&plain, None, false, true), (&stored_in, None, false, true)],
        );
        // Two archives one after the other in a tar: clamd unpacks each.
        let mut tar = vec![0u8; 512];
        tar.extend_from_slice(&plain);
        tar.extend_from_slice(&[0u8; 100]);
        tar.extend_from_slice(&stored_in);
        // A self-extractor whose code holds the local header signature,
        // with the archive's offsets counted from the file's start (as
        // `zip -A` makes them).
        let mut stub = b"MZ code: cmp eax, ".to_vec();
        stub.extend_from_slice(&local_with(0, DEFLATED, 0x0c75_3b00, 0x8b48_fff0));
        stub.extend_from_slice(&[0x90; 200]);
        let mut sfx = stub.clone();
        sfx.extend_from_slice(&plain);
        let shift = stub.len() as u32;
        let end_at = sfx.len() - 22;
        for at in memmem::find_iter(&sfx.clone(), CENTRAL) {
            let offset = u32::from_le_bytes(sfx[at + 42..at + 46].try_into().unwrap());
            sfx[at + 42..at + 46].copy_from_slice(&(offset + shift).to_le_bytes());
        }
        let offset = u32::from_le_bytes(sfx[end_at + 16..end_at + 20].try_into().unwrap());
        sfx[end_at + 16..end_at + 20].copy_from_slice(&(offset + shift).to_le_bytes());
        for zip in [
            &plain,
            &stored_in,
            &kept_in,
            &stored_unlisted,
            &jars,
            &tar,
            &sfx,
        ] {
            for piece in [1, 9, zip.len()] {
                assert_eq!(watch(zip, piece), None, "pieces of {piece}");
            }
        }
    }

    #[test]
    fn a_zip_in_a_deflated_entry_is_watched_unpacked() {
        let zip64 = body(&[local(IN_ZIP64, IN_ZIP64)]);
        let lzma = body(&[local_with(0, 14, 1, 2)]);
        for sizes_after in [false, true] {
            let outer = zip_of(&zip64, 6, sizes_after);
            assert_eq!(
                find(&outer, outer.len()),
                None,
                "the record shows only unpacked"
            );
            for piece in [1, 2, 5, 29, 30, 31, 64, outer.len()] {
                assert_eq!(
                    watch(&outer, piece),
                    Some(Unopened::Zip64Local),
                    "sizes after the data: {sizes_after}, pieces of {piece}"
                );
            }
            // Behind other entries, and packed twice.
            let mut two = zip_of(b"readme, readme, readme", 6, sizes_after);
            two.extend_from_slice(&zip_of(&lzma, 9, sizes_after));
            assert_eq!(watch(&two, 3), Some(Unopened::Method(14)));
            let twice = zip_of(&zip_of(&zip64, 6, sizes_after), 6, !sizes_after);
            assert_eq!(watch(&twice, 11), Some(Unopened::Zip64Local));
            // In a .tar.gz.
            let mut tar = vec![0u8; 512];
            tar.extend_from_slice(&outer);
            assert_eq!(watch(&gzip(&tar), 100), Some(Unopened::Zip64Local));
        }
        // Deflate keeps packed data in stored blocks, so an inner zip's
        // records show in the outer entry's data too: found once unpacked.
        let stored = zip_of(&zip_of(&lzma, 6, true), 0, false);
        assert_eq!(watch(&stored, 13), Some(Unopened::Method(14)));
    }

    #[test]
    fn unpacking_stops_three_archives_deep() {
        // Each level packs some text too, so that deflate never keeps the
        // level below as it is (then its records would show unpacked one
        // level higher).
        let pack = |zip: &[u8]| zip_of(&[zip, &[b'a'; 1000]].concat(), 6, false);
        let mut zip = body(&[local(IN_ZIP64, IN_ZIP64)]);
        for _ in 0..DEPTH {
            zip = pack(&zip);
        }
        assert_eq!(watch(&zip, 1000), Some(Unopened::Zip64Local));
        assert_eq!(watch(&pack(&zip), 1000), None);
        assert_eq!(
            watch(&gzip(&[&zip[..], &[b'a'; 1000]].concat()), 1000),
            None
        );
    }

    #[test]
    fn plain_entries_and_damaged_data_find_nothing() {
        let text: Vec<u8> = (0..50_000u32).flat_map(|i| i.to_le_bytes()).collect();
        let mut damaged = zip_of(&body(&[local(IN_ZIP64, IN_ZIP64)]), 6, false);
        damaged[40] ^= 0xff;
        for zip in [zip_of(&text, 6, false), zip_of(&text, 1, true), damaged] {
            for piece in [1, 100, zip.len()] {
                assert_eq!(watch(&zip, piece), None, "pieces of {piece}");
            }
        }
    }

    #[test]
    fn entries_overlapping_beyond_any_archiver_are_reported() {
        // Each entry's data, kept in a stored block, holds the next entry:
        // every header shows in the body, and all are open at once.
        let nested = |n: usize| {
            let mut zip = b"hello".to_vec();
            for _ in 0..n {
                let packed = miniz_oxide::deflate::compress_to_vec(&zip, 0);
                zip = local_with(SIZES_AFTER, DEFLATED, 0, 0);
                zip.extend_from_slice(&packed);
            }
            zip
        };
        // Three in a chain open seven at most: three in the body, and each
        // one's unpacked data shows those after it again (2 + 1 + 1).
        let mut w = ZipWatch::default();
        let mut most = 0;
        for piece in nested(3).chunks(9) {
            observe_counted(&mut w, piece);
            most = most.max(w.open_entries());
        }
        assert_eq!((w.found(), most, w.open_entries()), (None, 7, 0));
        assert_eq!(watch(&nested(OPEN_MAX + 1), 9), Some(Unopened::Overlapping));
        assert_eq!(watch(&nested(6), 9), Some(Unopened::Overlapping));
    }

    #[test]
    fn a_gzip_file_with_reserved_flags_is_found() {
        let mut odd = gzip(b"any data at all");
        for flag in [0x20, 0x40, 0x80] {
            odd[3] = flag | 1;
            for piece in [1, 2, 3, 4, odd.len()] {
                assert_eq!(
                    watch(&odd, piece),
                    Some(Unopened::GzipFlags(flag | 1)),
                    "pieces of {piece}"
                );
            }
            // Inside archives too, at the deepest level.
            let mut zip = odd.clone();
            for _ in 0..DEPTH {
                zip = zip_of(&[&zip[..], &[b'a'; 1000]].concat(), 6, false);
            }
            assert_eq!(watch(&zip, 100), Some(Unopened::GzipFlags(flag | 1)));
        }
        // The flags gzip files use: text, and a name.
        let mut text = gzip(b"any data at all");
        text[3] = 1;
        assert_eq!(watch(&text, 1), None);
        let mut named = GZIP.to_vec();
        named.extend_from_slice(&[8, 0, 0, 0, 0, 0, 3]);
        named.extend_from_slice(b"a.txt\0");
        named.extend_from_slice(&gzip(b"x")[10..]);
        assert_eq!(watch(&named, 1), None);
    }

    #[test]
    fn the_reason_names_what_keeps_clamd_out() {
        assert_eq!(
            Unopened::Method(14).to_string(),
            "a zip entry packed with LZMA (method 14), which clamd does not unpack"
        );
        assert!(Unopened::Zip64End.to_string().contains("ZIP64"));
        assert!(Unopened::Zstd.to_string().contains("does not unpack zstd"));
        assert!(Unopened::ArPacked
            .to_string()
            .contains("clamd unpacks neither"));
    }

    #[test]
    fn a_bzip2_file_of_several_streams_is_handed_out_whole() {
        // As pbzip2 writes one: a stream per piece of a tar, the second
        // holding what clamd does not see, and an empty one between.
        let tar = [
            tar_member(b"a.txt", &[b'a'; 3000]),
            tar_member(b"b.txt", b"in the second stream"),
        ]
        .concat();
        let (first, second) = tar.split_at(2000);
        let streams = [bz2(first), bz2(b""), bz2(second)].concat();
        let stored = tar_member(b"f.tar.bz2", &streams);
        let zip = archive(
            b"",
            &[(b"{}", None, false, true), (&streams, None, false, true)],
        );
        // Compared by what was handed out, without printing it all.
        let handed = |body: &[u8], piece: usize| {
            let (files, found) = handed_out(body, piece);
            let files: Vec<(usize, bool)> = files
                .iter()
                .map(|(data, whole)| match data == &tar {
                    true => (tar.len(), *whole),
                    false => (usize::MAX - data.len(), *whole),
                })
                .collect();
            (files, found)
        };
        for (what, body) in [
            ("the body", streams.clone()),
            ("a .tar.bz2.gz", gzip(&streams)),
            ("a tar member", stored.clone()),
            ("a tar member, gzipped", gzip(&stored)),
            ("a zip's stored entry", zip),
            ("bytes after it", [&streams[..], b"trailing bytes"].concat()),
        ] {
            for piece in [1, 7, 100, 4096, body.len()] {
                assert_eq!(
                    handed(&body, piece),
                    (vec![(tar.len(), true)], None),
                    "{what} in pieces of {piece}"
                );
            }
            // Without a scan to hand it to, it is reported.
            assert_eq!(watch(&body, 7), Some(Unopened::Bzip2Streams), "{what}");
        }
        // One stream is left to clamd.
        assert_eq!(handed_out(&bz2(&tar), 7), (vec![], None));
        // A .deb.bz2 of several streams is handed out as it is: whole.
        let deb = ar(&[b"2.0\n", &gzip(b"data")]);
        let (first, second) = deb.split_at(30);
        let streams = [bz2(first), bz2(second)].concat();
        assert_eq!(handed_out(&streams, 7), (vec![(deb, true)], None));
        // A first stream longer than is kept, or cut short after another
        // began.
        let long = vec![b'x'; FIRST_STREAM_KEPT + 1];
        let body = [bz2(&long), bz2(b"more")].concat();
        for piece in [4096, body.len()] {
            assert_eq!(
                handed_out(&body, piece),
                (vec![], Some(Unopened::Bzip2Streams))
            );
        }
        // What the streams after it unpack to is not kept: in any pieces.
        let body = [bz2(&long[1..]), bz2(&long)].concat();
        for piece in [4096, body.len()] {
            let (files, found) = handed_out(&body, piece);
            let sizes: Vec<(usize, bool)> = files.iter().map(|(f, w)| (f.len(), *w)).collect();
            assert_eq!((sizes, found), (vec![(2 * long.len() - 1, true)], None));
        }
        let body = [bz2(b"first"), bz2(&tar)].concat();
        let cut = &body[..body.len() - 20];
        let content = [b"first".as_slice(), &tar].concat();
        let (files, found) = handed_out(cut, 7);
        assert_eq!((files.len(), found), (1, None));
        assert!(
            !files[0].1 && content.starts_with(&files[0].0),
            "{} of {}, whole: {}",
            files[0].0.len(),
            content.len(),
            files[0].1
        );
        // Streams that follow other bytes than a stream's end, or that
        // follow bytes that end the file, are reported.
        for body in [
            [b"x".as_slice(), &bz2(b"a"), &bz2(b"b")].concat(),
            [&bz2(b"a")[..], b"junk", &bz2(b"b"), &bz2(b"c")].concat(),
        ] {
            assert_eq!(handed_out(&body, 7), (vec![], Some(Unopened::Bzip2Streams)));
        }
    }

    /// The level that has [`archive`] pack an entry with bzip2.
    const BZIP2_LEVEL: u8 = 0xb2;

    #[test]
    fn a_zip_s_bzip2_entries_are_watched_unpacked() {
        // clamd unpacks a bzip2 entry (`zip -Z bzip2`), and then does not
        // open a ZIP64 zip in it.
        let zip64 = body(&[local(IN_ZIP64, IN_ZIP64)]);
        let deb = ar(&[b"2.0\n", &gzip(b"data")]);
        for sizes_after in [false, true] {
            let bzipped = |data: &[u8]| {
                archive(
                    b"",
                    &[
                        (b"{}", Some(BZIP2_LEVEL), sizes_after, true),
                        (data, Some(BZIP2_LEVEL), sizes_after, true),
                    ],
                )
            };
            let inner = bzipped(&zip64);
            for piece in [1, 7, 100, inner.len()] {
                assert_eq!(watch(&inner, piece), Some(Unopened::Zip64Local));
            }
            // Two levels down, and inside a deflated entry.
            let outer = archive(b"", &[(&inner, Some(BZIP2_LEVEL), false, true)]);
            assert_eq!(watch(&outer, 9), Some(Unopened::Zip64Local));
            assert_eq!(
                watch(&zip_of(&inner, 6, false), 9),
                Some(Unopened::Zip64Local)
            );
            // A .deb in one is handed out; plain data finds nothing.
            let with_deb = bzipped(&deb);
            for piece in [1, 7, with_deb.len()] {
                assert_eq!(
                    handed_out(&with_deb, piece),
                    (vec![(deb.clone(), true)], None)
                );
            }
            let plain = bzipped(&[7u8; 5000]);
            assert_eq!(watch(&plain, 7), None);
        }
        // A zip stored in zips stored in a zip: each level sees the bzip2
        // entry's header, and unpacks it, within the body's slots.
        let mut nested = archive(b"", &[(&zip64, Some(BZIP2_LEVEL), false, true)]);
        for _ in 0..3 {
            nested = archive(b"", &[(&nested, None, false, true)]);
        }
        assert_eq!(watch(&nested, 9), Some(Unopened::Zip64Local));
        let mut w = ZipWatch::default();
        let mut most = 0;
        for piece in nested.chunks(9) {
            observe_counted(&mut w, piece);
            most = most.max(w.budget.bunzips.load(Ordering::Relaxed));
        }
        assert_eq!(most, 4);
        // Damaged bzip2 data ends the entry's watch, nothing more.
        let mut damaged = archive(b"", &[(&[9u8; 3000], Some(BZIP2_LEVEL), false, true)]);
        damaged[LOCAL_LEN + 20..LOCAL_LEN + 40].fill(0xff);
        assert_eq!(watch(&damaged, 7), None);
    }

    #[test]
    fn bzip2_slots_are_counted_for_the_body() {
        let open = Arc::new(AtomicUsize::new(0));
        let slots: Vec<BunzipSlot> = (0..BUNZIP_MAX)
            .map(|_| BunzipSlot::take(&open).expect("a free slot"))
            .collect();
        assert!(BunzipSlot::take(&open).is_none());
        drop(slots);
        assert_eq!(open.load(Ordering::Relaxed), 0);
        assert!(BunzipSlot::take(&open).is_some());
    }

    #[test]
    fn a_zip_s_imploded_entries_are_watched_unpacked() {
        // Made by hwzip 2.3 (`hwzip create -m implode`): clamd unpacks the
        // entries, and then does not open the ZIP64 zip, nor the .deb in
        // the tar.
        let zip64 = include_bytes!("../../tests/fixtures/eicar-zip64-in-implode.zip");
        let with_deb = include_bytes!("../../tests/fixtures/eicar-deb-implode.zip");
        let deb = include_bytes!("../../tests/fixtures/eicar.deb");
        for piece in [1, 2, 7, 100, zip64.len()] {
            assert_eq!(watch(zip64, piece), Some(Unopened::Zip64Local));
        }
        for piece in [1, 7, with_deb.len()] {
            assert_eq!(
                handed_out(with_deb, piece),
                (vec![(deb.to_vec(), true)], None),
                "pieces of {piece}"
            );
        }
        // Every way of imploding, clean: nothing to report.
        let variants = include_bytes!("../../tests/fixtures/implode-variants.zip");
        for piece in [1, 5, variants.len()] {
            assert_eq!(watch(variants, piece), None);
        }
        // Damaged data ends the entry's watch, nothing more.
        let mut damaged = zip64.to_vec();
        let from = LOCAL_LEN + b"inner.zip".len() + 40;
        damaged[from..from + 40].fill(0xff);
        assert_eq!(watch(&damaged, 7), None);
    }

    #[test]
    fn a_zip_s_deflate64_entries_are_watched_unpacked() {
        // Made by 7-Zip (`7zz a -tzip -mm=Deflate64`): clamd unpacks the
        // entries, and then does not open the ZIP64 zip, nor the .deb.
        let zip64 = include_bytes!("../../tests/fixtures/eicar-zip64-in-deflate64.zip");
        let with_deb = include_bytes!("../../tests/fixtures/eicar-deb-deflate64.zip");
        // The same as a streaming writer lays them out: each entry's
        // sizes in a data descriptor after its data, with the
        // descriptor's signature (the ZIP64 one) or without.
        let zip64_streamed =
            include_bytes!("../../tests/fixtures/eicar-zip64-in-deflate64-streamed.zip");
        let with_deb_streamed =
            include_bytes!("../../tests/fixtures/eicar-deb-deflate64-streamed.zip");
        let deb = include_bytes!("../../tests/fixtures/eicar.deb");
        for zip in [&zip64[..], zip64_streamed] {
            for piece in [1, 2, 7, 100, zip.len()] {
                assert_eq!(watch(zip, piece), Some(Unopened::Zip64Local));
            }
        }
        for zip in [&with_deb[..], with_deb_streamed] {
            for piece in [1, 2, 7, zip.len()] {
                assert_eq!(
                    handed_out(zip, piece),
                    (vec![(deb.to_vec(), true)], None),
                    "pieces of {piece}"
                );
            }
        }
        // Damaged data ends the entry's watch, nothing more.
        let mut damaged = with_deb.to_vec();
        let from = LOCAL_LEN + b"eicar.deb".len() + 10;
        damaged[from..from + 40].fill(0xff);
        assert_eq!(watch(&damaged, 7), None);
    }
}
