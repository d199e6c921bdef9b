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
//!
//! A body with such a record is reported, and the scan cannot call it
//! clean. Encrypted entries are left to clamd's `AlertEncryptedArchive`.
//!
//! The body's own bytes are watched, and, when the body is a gzip file
//! (`.gz`, `.tar.gz`, `.tgz`: clamd unpacks those), what it unpacks to: a
//! tar keeps its files' bytes as they are. An archive packed inside another
//! archive's compressed entry is out of sight here, as it is out of
//! clamd's.

use std::fmt;

use memchr::memmem;

use super::decode;

/// A local file header: signature, flags at 6, method at 8, sizes at 18
/// and 22.
const LOCAL: &[u8; 4] = b"PK\x03\x04";
const LOCAL_LEN: usize = 26;
/// An end-of-central-directory record: signature, then the directory's size
/// at 12 and its offset at 16.
const END: &[u8; 4] = b"PK\x05\x06";
const END_LEN: usize = 20;
/// What a record may need of the bytes after its signature's start.
const LONGEST: usize = LOCAL_LEN;
/// ZIP64's "see the extra field" value.
const IN_ZIP64: u32 = u32::MAX;
/// General purpose flag bit 0: the entry is encrypted.
const ENCRYPTED: u16 = 1;
/// How a gzip file begins: magic, then deflate.
const GZIP: [u8; 3] = [0x1f, 0x8b, 8];
/// The most of a gzip file's unpacked bytes watched; clamd's own limits
/// (with `AlertExceedsMax`) speak for what lies beyond.
const GZIP_WATCHED: u64 = 256 << 20;

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
#[derive(Debug, Default)]
pub struct ZipWatch {
    /// The last bytes seen, where a record may have begun whose fields are
    /// still to come.
    carry: Vec<u8>,
    found: Option<Unopened>,
    /// Whether the body is a gzip file, and what it unpacks to.
    gzip: Gzip,
}

/// A body's first bytes, as far as they tell whether it is a gzip file.
#[derive(Debug, Default)]
enum Gzip {
    /// Nothing seen yet.
    #[default]
    Undecided,
    /// The first bytes so far, which may begin a gzip file.
    Head(Vec<u8>),
    Inside(Box<Inside>),
    /// Not a gzip file, or no longer watched inside.
    No,
}

/// A gzip file being unpacked for the watch (clamd gets the body as it
/// came, and unpacks it itself).
struct Inside {
    decoder: decode::Decoder,
    piece: Vec<u8>,
    /// A watch of the unpacked bytes; it does not look further inside.
    watch: Box<ZipWatch>,
    unpacked: u64,
}

impl fmt::Debug for Inside {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Inside({} bytes)", self.unpacked)
    }
}

impl Inside {
    fn start() -> Option<Box<Inside>> {
        let decode::Plan::Decode(decoder) = decode::plan("gzip") else {
            return None;
        };
        Some(Box::new(Inside {
            decoder,
            piece: Vec::new(),
            watch: Box::new(ZipWatch {
                gzip: Gzip::No,
                ..ZipWatch::default()
            }),
            unpacked: 0,
        }))
    }

    /// Unpacks `data` into the watch; false once there is nothing more to
    /// watch (the stream is damaged, or past [`GZIP_WATCHED`]).
    fn feed(&mut self, mut data: &[u8]) -> bool {
        loop {
            match self.decoder.decode(&mut data, &mut self.piece) {
                Ok(true) => {
                    self.unpacked += self.piece.len() as u64;
                    self.watch.observe(&self.piece);
                    if self.watch.found.is_some() || self.unpacked > GZIP_WATCHED {
                        return false;
                    }
                }
                Ok(false) => return true,
                Err(_) => return false,
            }
        }
    }
}

impl ZipWatch {
    /// Looks at the next bytes of the body.
    pub fn observe(&mut self, data: &[u8]) {
        if self.found.is_some() || data.is_empty() {
            return;
        }
        self.look_inside(data);
        if self.found.is_some() {
            return;
        }
        if !self.carry.is_empty() {
            // Records that began in the carried bytes, read on into `data`.
            let mut joined = std::mem::take(&mut self.carry);
            let starts = joined.len();
            joined.extend_from_slice(&data[..data.len().min(LONGEST - 1)]);
            self.found = find(&joined, starts);
            self.carry = joined;
            self.carry.truncate(starts);
        }
        if self.found.is_none() {
            self.found = find(data, data.len());
        }
        // Keep what a record still to be judged may have begun in.
        self.carry
            .extend_from_slice(&data[data.len().saturating_sub(LONGEST - 1)..]);
        let extra = self.carry.len().saturating_sub(LONGEST - 1);
        self.carry.drain(..extra);
    }

    /// What was found, if anything.
    pub fn found(&self) -> Option<Unopened> {
        self.found
    }

    /// Unpacks a gzip file into an inner watch.
    fn look_inside(&mut self, data: &[u8]) {
        match &mut self.gzip {
            Gzip::No => {}
            Gzip::Undecided | Gzip::Head(_) => {
                let mut head = match std::mem::take(&mut self.gzip) {
                    Gzip::Head(head) => head,
                    _ => Vec::new(),
                };
                let take = (GZIP.len() - head.len()).min(data.len());
                head.extend_from_slice(&data[..take]);
                self.gzip = if !GZIP.starts_with(&head) {
                    Gzip::No
                } else if head.len() < GZIP.len() {
                    Gzip::Head(head)
                } else {
                    match Inside::start() {
                        Some(mut inside) => {
                            if inside.feed(&head) && inside.feed(&data[take..]) {
                                Gzip::Inside(inside)
                            } else {
                                self.found = inside.watch.found;
                                Gzip::No
                            }
                        }
                        None => Gzip::No,
                    }
                };
            }
            Gzip::Inside(inside) => {
                if !inside.feed(data) {
                    self.found = inside.watch.found;
                    self.gzip = Gzip::No;
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
    while watch.found().is_none() {
        let n = file.read_at(&mut buf, at)?;
        if n == 0 {
            break;
        }
        watch.observe(&buf[..n]);
        at += n as u64;
    }
    Ok(watch.found())
}

/// The first record in `bytes` that keeps clamd out, among those whose
/// signature starts before `starts` and whose fields `bytes` holds whole.
fn find(bytes: &[u8], starts: usize) -> Option<Unopened> {
    let u16_at = |at: usize| u16::from_le_bytes(bytes[at..at + 2].try_into().unwrap());
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap());
    for at in memmem::find_iter(bytes, b"PK") {
        if at >= starts {
            break;
        }
        let rest = &bytes[at..];
        if rest.starts_with(LOCAL) && rest.len() >= LOCAL_LEN {
            if u32_at(at + 18) == IN_ZIP64 || u32_at(at + 22) == IN_ZIP64 {
                return Some(Unopened::Zip64Local);
            }
            let method = u16_at(at + 8);
            if u16_at(at + 6) & ENCRYPTED == 0 && !method_name(method).is_empty() {
                return Some(Unopened::Method(method));
            }
        } else if rest.starts_with(END)
            && rest.len() >= END_LEN
            && (u32_at(at + 12) == IN_ZIP64 || u32_at(at + 16) == IN_ZIP64)
        {
            return Some(Unopened::Zip64End);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn body(records: &[Vec<u8>]) -> Vec<u8> {
        let mut b = b"some bytes before PK and between ".to_vec();
        for r in records {
            b.extend_from_slice(r);
            b.extend_from_slice(b"PK\x03 data data PK");
        }
        b
    }

    /// What the watch finds in `body`, fed `piece` bytes at a time.
    fn watch(body: &[u8], piece: usize) -> Option<Unopened> {
        let mut w = ZipWatch::default();
        for p in body.chunks(piece) {
            w.observe(p);
        }
        w.found()
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
    fn a_record_at_the_very_end_is_found() {
        // An end record is 22 bytes: its last field is not needed.
        let mut b = body(&[local(10, 20)]);
        b.extend_from_slice(&end(46, IN_ZIP64));
        for piece in 1..=b.len() {
            assert!(watch(&b, piece).is_some(), "pieces of {piece}");
        }
    }

    #[test]
    fn pieces_never_change_whether_something_is_found() {
        // Bodies made of the fragments that matter, cut at random places.
        let fragments: [&[u8]; 7] = [b"PK", LOCAL, END, &[0xff; 4], &[0; 9], &[14, 0], b"xyz"];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let mut found = 0;
        for _ in 0..2000 {
            let body: Vec<u8> = (0..next(40))
                .flat_map(|_| fragments[next(fragments.len())].to_vec())
                .collect();
            let whole = watch(&body, body.len().max(1));
            let mut w = ZipWatch::default();
            let mut rest = &body[..];
            while !rest.is_empty() {
                let n = 1 + next(rest.len().min(30));
                w.observe(&rest[..n]);
                rest = &rest[n..];
            }
            // Which record is named may differ: one whose fields are
            // still to come is judged after a later one.
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
        let mut tar = vec![0u8; 512];
        tar.extend_from_slice(&body(&[local(IN_ZIP64, IN_ZIP64)]));
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
        // Plain archives inside, a damaged stream, gzip only past the
        // start, or a gzip inside the gzip: nothing.
        let plain = gzip(&body(&[local(10, 20), end(46, 1000)]));
        let mut damaged = gzip(&body(&[local(IN_ZIP64, IN_ZIP64)]));
        damaged[12] ^= 0xff;
        let mut late = b"x".to_vec();
        late.extend_from_slice(&tgz);
        let twice = gzip(&tgz);
        for b in [&plain, &damaged, &late, &twice] {
            for piece in [1, 3, 1000] {
                assert_eq!(watch(b, piece), None, "pieces of {piece}");
            }
        }
    }

    #[test]
    fn the_reason_names_what_keeps_clamd_out() {
        assert_eq!(
            Unopened::Method(14).to_string(),
            "a zip entry packed with LZMA (method 14), which clamd does not unpack"
        );
        assert!(Unopened::Zip64End.to_string().contains("ZIP64"));
    }
}
