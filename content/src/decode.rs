//! Content-Encoding, undone before the scan: clamd scans what the browser
//! gets.
//!
//! clamd does not open HTTP's `deflate` (a zlib stream, or a raw deflate one
//! from some servers), brotli (`br`) nor zstd: EICAR sent with any of them
//! passes clamd as OK (zstd's only when it is compressed: a short body is
//! stored as it is), while browsers decode all three. clamd opens gzip, but
//! what it finds inside is then out of the scanner's sight: a zip clamd
//! does not open (see [`super::zip_watch`]) would pass unseen. So every
//! coding a browser decodes is undone here as the body arrives, as c-icap's
//! virus_scan does.
//!
//! Decoding is step by step with bounded buffers, so a small body that
//! expands enormously (a decompression bomb) costs no more memory than any
//! other; the scan limit then applies to the decoded size.

use std::sync::atomic::{AtomicUsize, Ordering};

use brotli_decompressor::{
    BrotliDecoderIsFinished, BrotliDecompressStream, BrotliResult, BrotliState, StandardAlloc,
};
use miniz_oxide::inflate::stream::{inflate, InflateState};
use miniz_oxide::{DataFormat, MZError, MZFlush, MZStatus};

/// Decoded bytes handed on at a time, and the most held between layers.
pub(crate) const PIECE: usize = 64 * 1024;

/// One content coding, as named in the header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Coding {
    Gzip,
    Deflate,
    Brotli,
    Zstd,
    /// `dcb` or `dcz` (RFC 9842): brotli or zstd against a dictionary, an
    /// earlier response the browser kept, which this scanner does not have.
    Dictionary(String),
    /// A coding no browser decodes (`compress`, a private name): what a
    /// client gets is the bytes as they are.
    Other(String),
}

impl Coding {
    fn parse(name: &str) -> Option<Coding> {
        let name = name.trim().to_ascii_lowercase();
        Some(match name.as_str() {
            "" | "identity" => return None,
            "gzip" | "x-gzip" => Coding::Gzip,
            "deflate" => Coding::Deflate,
            "br" => Coding::Brotli,
            "zstd" => Coding::Zstd,
            "dcb" | "dcz" => Coding::Dictionary(name),
            _ => Coding::Other(name),
        })
    }

    /// Nothing to undo here: no client decodes it, so the bytes as they are
    /// are what anyone gets.
    fn nobody_decodes(&self) -> bool {
        matches!(self, Coding::Other(_))
    }
}

/// The request header that offers a server a compression dictionary (RFC
/// 9842), and the one naming it. The frontends take both off requests, so
/// that no server answers with `dcb` or `dcz`, which the scan cannot undo.
pub const DICTIONARY_HEADERS: [&str; 2] = ["available-dictionary", "dictionary-id"];

/// What a message's Content-Encoding asks of the scan.
#[derive(Debug)]
pub enum Plan {
    /// Nothing: no coding, or only ones no client decodes.
    AsIs,
    /// Decode these layers, outermost first.
    Decode(Decoder),
    /// A layer that must come off cannot be decoded here: the scan cannot
    /// see the body.
    Cannot(String),
}

/// Reads a Content-Encoding value (`br`, `gzip, br`: codings in the order
/// they were applied).
pub fn plan(content_encoding: &str) -> Plan {
    let codings: Vec<Coding> = content_encoding
        .split(',')
        .filter_map(Coding::parse)
        .collect();
    // Everything from the innermost layer a client decodes outwards comes off
    // here.
    let Some(innermost) = codings.iter().position(|c| !c.nobody_decodes()) else {
        return Plan::AsIs;
    };
    let mut layers = Vec::new();
    for coding in codings[innermost..].iter().rev() {
        layers.push(match coding {
            Coding::Gzip => Layer::Gzip(Gzip::default()),
            Coding::Deflate => Layer::Deflate(Deflate::default()),
            Coding::Brotli => Layer::Brotli(Brotli::default()),
            Coding::Zstd => match Zstd::new() {
                Ok(z) => Layer::Zstd(z),
                Err(e) => return Plan::Cannot(format!("cannot start a zstd decoder: {e}")),
            },
            Coding::Dictionary(name) => {
                return Plan::Cannot(format!(
                    "{name}: compressed against a dictionary the scanner does not have"
                ))
            }
            // No client decodes it, so none gets past it either: what is
            // under it reaches nobody.
            Coding::Other(_) => break,
        });
    }
    if layers.is_empty() {
        return Plan::AsIs;
    }
    let between = layers.len() - 1;
    Plan::Decode(Decoder {
        layers,
        between: vec![Held::default(); between],
        out: Vec::new(),
        started: false,
    })
}

/// A packed file that clamd unpacks itself, unpacked for the zip watch,
/// which looks at what clamd then sees as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packing {
    Gzip,
    Xz,
    Bzip2,
}

/// A decoder of one packed file: a gzip file's members, an xz file's
/// streams, a bzip2 file's streams.
pub(crate) fn unpacking(packing: Packing) -> Option<Decoder> {
    let layer = match packing {
        Packing::Gzip => Layer::Gzip(Gzip::default()),
        Packing::Xz => Layer::Xz(Unpack::new(xz_decoder()?)),
        Packing::Bzip2 => Layer::Bzip2(Unpack::new(bzip2::Decompress::new(false))),
    };
    Some(Decoder {
        layers: vec![layer],
        between: Vec::new(),
        out: Vec::new(),
        started: false,
    })
}

/// What one step of a layer did.
pub(crate) struct Step {
    pub(crate) consumed: usize,
    pub(crate) produced: usize,
}

/// One coding being undone.
enum Layer {
    Gzip(Gzip),
    Deflate(Deflate),
    Brotli(Brotli),
    Zstd(Zstd),
    Xz(Xz),
    Bzip2(Bzip2),
}

impl Layer {
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        match self {
            Layer::Gzip(g) => g.step(input, output),
            Layer::Deflate(d) => d.step(input, output),
            Layer::Brotli(b) => b.step(input, output),
            Layer::Zstd(z) => z.step(input, output),
            Layer::Xz(x) => x.step(input, output),
            Layer::Bzip2(b) => b.step(input, output),
        }
    }

    /// Its stream has ended; bytes after it are not part of the body.
    fn is_finished(&self) -> bool {
        match self {
            Layer::Gzip(g) => {
                g.members > 0 && matches!(g.at, GzipAt::Start | GzipAt::Fixed(..) | GzipAt::After)
            }
            Layer::Deflate(d) => d.ended,
            Layer::Brotli(b) => BrotliDecoderIsFinished(&b.state),
            Layer::Zstd(z) => z.frames > 0 && z.between_frames,
            Layer::Xz(x) => x.is_finished(),
            Layer::Bzip2(b) => b.is_finished(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Layer::Gzip(_) => "gzip",
            Layer::Deflate(_) => "deflate",
            Layer::Brotli(_) => "br",
            Layer::Zstd(_) => "zstd",
            Layer::Xz(_) => "xz",
            Layer::Bzip2(_) => "bzip2",
        }
    }
}

/// A zip entry's bzip2 data (method 12, one stream), unpacked by
/// libbz2-rs as clamd unpacks it.
pub(crate) struct Bunzip(Unpack<OneBzip2Stream>);

/// libbz2-rs for one stream, and not those that may follow it.
struct OneBzip2Stream(bzip2::Decompress);

impl Library for OneBzip2Stream {
    fn totals(&self) -> (u64, u64) {
        self.0.totals()
    }

    fn run(&mut self, input: &[u8], output: &mut [u8]) -> Result<bool, String> {
        self.0.run(input, output)
    }

    const STREAMS: bool = false;

    fn next_stream(_: u8) -> Option<Self> {
        None
    }

    const TRAILING_AFTER_A_STREAM: bool = false;
    const HEAD: u64 = <bzip2::Decompress as Library>::HEAD;
}

impl Bunzip {
    pub(crate) fn new() -> Bunzip {
        Bunzip(Unpack::new(OneBzip2Stream(bzip2::Decompress::new(false))))
    }

    /// Unpacks what it can of `input`; true at the stream's end.
    pub(crate) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<(Step, bool), String> {
        let step = self.0.step(input, output)?;
        Ok((step, self.0.ended))
    }
}

/// A zip entry's Deflate64 data (method 9), unpacked by the deflate64
/// crate (a port of .NET's), as clamd unpacks it.
pub(crate) struct Inflate64 {
    library: Box<deflate64::InflaterManaged>,
    failed: bool,
}

impl Inflate64 {
    pub(crate) fn new() -> Inflate64 {
        Inflate64 {
            library: Box::new(deflate64::InflaterManaged::new()),
            failed: false,
        }
    }

    /// Unpacks what it can of `input`; true at the stream's end. It may
    /// take a few bytes past the end, into its bit buffer.
    pub(crate) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<(Step, bool), String> {
        let input = if self.failed { &[][..] } else { input };
        let run = self.library.inflate(input, output);
        let mut step = Step {
            consumed: run.bytes_consumed,
            produced: run.bytes_written,
        };
        self.failed |= run.data_error;
        if !self.failed {
            return Ok((step, self.library.finished()));
        }
        // What the library had unpacked before the bad data is still in
        // its window, and goes on first (it gives it out again when asked
        // with no input): in one large output it would be lost, in small
        // ones it would not, and the pieces would change what is seen.
        if step.produced == 0 {
            step.produced = self.library.inflate(&[], output).bytes_written;
        }
        match step.produced {
            0 => Err("bad Deflate64 data".into()),
            _ => Ok((step, false)),
        }
    }
}

/// Runs miniz_oxide's inflate over `input`.
pub(crate) fn inflate_step(
    state: &mut InflateState,
    input: &[u8],
    output: &mut [u8],
) -> Result<(Step, bool), String> {
    let r = inflate(state, input, output, MZFlush::None);
    let step = Step {
        consumed: r.bytes_consumed,
        produced: r.bytes_written,
    };
    match r.status {
        Ok(MZStatus::StreamEnd) => Ok((step, true)),
        Ok(_) | Err(MZError::Buf) => Ok((step, false)),
        // What came out before the data went bad is handed on first: the
        // state keeps the error, and the next call gives it with nothing.
        Err(_) if step.produced > 0 => Ok((step, false)),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// `deflate`: a zlib stream as RFC 9110 says, or raw deflate, which some
/// servers send and browsers accept; told apart by the first two bytes.
#[derive(Default)]
struct Deflate {
    first: Option<u8>,
    state: Option<Box<InflateState>>,
    ended: bool,
}

impl Deflate {
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        if self.ended {
            return Ok(Step {
                consumed: 0,
                produced: 0,
            });
        }
        if let Some(state) = self.state.as_mut() {
            let (step, end) = inflate_step(state, input, output)?;
            self.ended = end;
            return Ok(step);
        }
        let Some(&b) = input.first() else {
            return Ok(Step {
                consumed: 0,
                produced: 0,
            });
        };
        let Some(first) = self.first else {
            self.first = Some(b);
            return Ok(Step {
                consumed: 1,
                produced: 0,
            });
        };
        let zlib = first & 0x0f == 8
            && first >> 4 <= 7
            && (u16::from(first) << 8 | u16::from(b)) % 31 == 0;
        let format = if zlib {
            DataFormat::Zlib
        } else {
            DataFormat::Raw
        };
        let mut state = InflateState::new_boxed(format);
        let (step, end) = inflate_step(&mut state, &[first, b], output)?;
        if step.consumed != 2 {
            return Err("cannot start".into());
        }
        self.state = Some(state);
        self.ended = end;
        Ok(Step {
            consumed: 1,
            produced: step.produced,
        })
    }
}

/// Where a gzip member stands; each part is read as it comes, once.
#[derive(Default)]
enum GzipAt {
    /// The fixed ten bytes: how many have come, and the flags (byte 3).
    #[default]
    Start,
    Fixed(u8, u8),
    /// FEXTRA's two length bytes (the first, once it has come).
    ExtraLen(u8, Option<u8>),
    /// FEXTRA's bytes still to skip.
    Extra(u8, usize),
    /// FNAME, then FCOMMENT: up to their zero byte.
    Name(u8),
    Comment(u8),
    /// FHCRC's bytes still to skip.
    HeaderCrc(usize),
    Body,
    /// The CRC and length: bytes still to skip.
    Trailer(usize),
    /// Bytes after the last member that do not start another: ignored, as
    /// browsers and gunzip ignore them.
    After,
}

/// `gzip` (RFC 1952), member after member, as Firefox decodes it (Chrome
/// stops after the first).
#[derive(Default)]
struct Gzip {
    at: GzipAt,
    state: Option<Box<InflateState>>,
    members: u64,
}

/// The gzip header flags.
const FHCRC: u8 = 2;
const FEXTRA: u8 = 4;
const FNAME: u8 = 8;
const FCOMMENT: u8 = 16;

impl Gzip {
    /// Where the header goes after the part that `flags` said was there
    /// (`done` holds the flags already passed).
    fn after(flags: u8, done: u8) -> GzipAt {
        let next = flags & !done;
        if next & FEXTRA != 0 {
            GzipAt::ExtraLen(flags, None)
        } else if next & FNAME != 0 {
            GzipAt::Name(flags)
        } else if next & FCOMMENT != 0 {
            GzipAt::Comment(flags)
        } else if next & FHCRC != 0 {
            GzipAt::HeaderCrc(2)
        } else {
            GzipAt::Body
        }
    }

    /// The member's deflate stream; at its end, the trailer.
    fn body(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        let state = self
            .state
            .get_or_insert_with(|| InflateState::new_boxed(DataFormat::Raw));
        let (step, end) = inflate_step(state, input, output)?;
        if end {
            self.state = None;
            self.at = GzipAt::Trailer(8);
        }
        Ok(step)
    }

    fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        let header = |consumed| {
            Ok(Step {
                consumed,
                produced: 0,
            })
        };
        let Some(&b) = input.first() else {
            // In the body the inflater may still have output to give.
            return match self.at {
                GzipAt::Body => self.body(input, output),
                _ => header(0),
            };
        };
        match self.at {
            GzipAt::After => header(input.len()),
            GzipAt::Start | GzipAt::Fixed(1..=2, _)
                if self.members > 0 && !starts_member(&self.at, b) =>
            {
                self.at = GzipAt::After;
                header(input.len())
            }
            GzipAt::Start => {
                if b != 0x1f {
                    return Err("not a gzip member".into());
                }
                self.at = GzipAt::Fixed(1, 0);
                header(1)
            }
            GzipAt::Fixed(n, flags) => {
                let expected = match n {
                    1 => Some(0x8b),
                    2 => Some(8),
                    _ => None,
                };
                if expected.is_some_and(|e| e != b) {
                    return Err("not a gzip member".into());
                }
                let flags = if n == 3 { b } else { flags };
                self.at = if n + 1 == 10 {
                    Gzip::after(flags, 0)
                } else {
                    GzipAt::Fixed(n + 1, flags)
                };
                header(1)
            }
            GzipAt::ExtraLen(flags, None) => {
                self.at = GzipAt::ExtraLen(flags, Some(b));
                header(1)
            }
            GzipAt::ExtraLen(flags, Some(low)) => {
                let len = usize::from(u16::from_le_bytes([low, b]));
                self.at = if len == 0 {
                    Gzip::after(flags, FEXTRA)
                } else {
                    GzipAt::Extra(flags, len)
                };
                header(1)
            }
            GzipAt::Extra(flags, left) => {
                let n = left.min(input.len());
                self.at = if n == left {
                    Gzip::after(flags, FEXTRA)
                } else {
                    GzipAt::Extra(flags, left - n)
                };
                header(n)
            }
            GzipAt::Name(flags) | GzipAt::Comment(flags) => {
                let done = match self.at {
                    GzipAt::Name(_) => FEXTRA | FNAME,
                    _ => FEXTRA | FNAME | FCOMMENT,
                };
                match input.iter().position(|&c| c == 0) {
                    Some(end) => {
                        self.at = Gzip::after(flags, done);
                        header(end + 1)
                    }
                    None => header(input.len()),
                }
            }
            GzipAt::HeaderCrc(left) => {
                let n = left.min(input.len());
                self.at = if n == left {
                    GzipAt::Body
                } else {
                    GzipAt::HeaderCrc(left - n)
                };
                header(n)
            }
            GzipAt::Body => self.body(input, output),
            GzipAt::Trailer(left) => {
                let n = left.min(input.len());
                self.at = if n == left {
                    self.members += 1;
                    GzipAt::Start
                } else {
                    GzipAt::Trailer(left - n)
                };
                header(n)
            }
        }
    }
}

/// Whether `b`, coming at `at`, goes on as a gzip member's first bytes.
fn starts_member(at: &GzipAt, b: u8) -> bool {
    match at {
        GzipAt::Start => b == 0x1f,
        GzipAt::Fixed(1, _) => b == 0x8b,
        GzipAt::Fixed(2, _) => b == 8,
        _ => true,
    }
}

/// `br` (RFC 7932). What the library has decoded but not yet written out
/// when it meets bad data (up to a window) is lost: it gives nothing after
/// an error. So, of a stream that goes bad, how much comes out before the
/// error depends on where the pieces fell; the error comes all the same.
struct Brotli {
    state: Box<BrotliState<StandardAlloc, StandardAlloc, StandardAlloc>>,
    /// Bad data met by a call that gave bytes, which went on first.
    failed: bool,
}

impl Default for Brotli {
    fn default() -> Self {
        Brotli {
            state: Box::new(BrotliState::new(
                StandardAlloc::default(),
                StandardAlloc::default(),
                StandardAlloc::default(),
            )),
            failed: false,
        }
    }
}

impl Brotli {
    fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        if BrotliDecoderIsFinished(&self.state) {
            return Ok(Step {
                consumed: 0,
                produced: 0,
            });
        }
        let (mut available_in, mut in_at) = (input.len(), 0);
        let (mut available_out, mut out_at, mut total) = (output.len(), 0, 0);
        let result = BrotliDecompressStream(
            &mut available_in,
            &mut in_at,
            input,
            &mut available_out,
            &mut out_at,
            output,
            &mut total,
            &mut self.state,
        );
        match result {
            // What came out before the bad data goes on first.
            BrotliResult::ResultFailure if out_at > 0 && !self.failed => {
                self.failed = true;
                Ok(Step {
                    consumed: in_at,
                    produced: out_at,
                })
            }
            BrotliResult::ResultFailure => Err("not a valid brotli stream".into()),
            _ if self.failed => Err("not a valid brotli stream".into()),
            _ => Ok(Step {
                consumed: in_at,
                produced: out_at,
            }),
        }
    }
}

/// The largest zstd window decoded, as a power of two: 8 MiB, the limit
/// RFC 9659 sets for `Content-Encoding: zstd`, which browsers keep to. A
/// frame that asks for more does not decode; the limit also bounds the
/// memory one body's decoder takes.
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

/// `zstd` (RFC 8878): frame after frame, skippable frames skipped, by the
/// reference library.
struct Zstd {
    decoder: zstd::stream::raw::Decoder<'static>,
    /// Frames decoded to their end.
    frames: u64,
    /// Whether the last frame has ended and no byte of another has come.
    between_frames: bool,
    /// The bytes the library asked for next (the hint its last call
    /// returned), 0 at a frame's start.
    asked: usize,
}

/// The size of a zstd block's header, which the library's hint includes
/// for the block after the one it asks for.
const ZSTD_BLOCK_HEADER: usize = 3;

impl Zstd {
    fn new() -> std::io::Result<Zstd> {
        let mut decoder = zstd::stream::raw::Decoder::new()?;
        decoder.set_parameter(zstd::stream::raw::DParameter::WindowLogMax(
            ZSTD_WINDOW_LOG_MAX,
        ))?;
        Ok(Zstd {
            decoder,
            frames: 0,
            between_frames: true,
            asked: 0,
        })
    }

    fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
        // A call that fails reports nothing of what it took and gave (the
        // library, 1.6, writes no positions back then), so what it had
        // written out before the bad data would be lost. Each
        // call is given input up to the end of what the library asked for,
        // short of the next block's header that its hint adds (and one
        // byte where it asks for that header alone): a call decodes at most
        // one block, and a bad block, or a bad header, is met by a call
        // that has given nothing.
        let want = self.asked.saturating_sub(ZSTD_BLOCK_HEADER).max(1);
        let input = &input[..input.len().min(want)];
        let mut src = InBuffer::around(input);
        let mut dst = OutBuffer::around(output);
        let run = self.decoder.run(&mut src, &mut dst);
        let step = Step {
            consumed: src.pos(),
            produced: dst.pos(),
        };
        let remaining = run.map_err(|e| e.to_string())?;
        self.asked = remaining;
        if step.consumed > 0 || step.produced > 0 {
            // 0 left to read: a frame has ended and all of it is out. The
            // library stops at each frame's end, so this is once a frame.
            self.between_frames = remaining == 0;
            self.frames += u64::from(self.between_frames);
        }
        Ok(step)
    }
}

/// A decoder of one xz stream, within [`XZ_MEMORY_MAX`] until a stream
/// needs more.
fn xz_decoder() -> Option<XzLibrary> {
    Some(XzLibrary {
        stream: xz2::stream::Stream::new_stream_decoder(XZ_MEMORY_MAX, 0).ok()?,
        big: None,
        head: Some(Vec::new()),
    })
}

/// liblzma's decoder of one xz stream, and the big-dictionary slot it
/// holds, if its stream needs one.
struct XzLibrary {
    stream: xz2::stream::Stream,
    big: Option<BigXzSlot>,
    /// The stream's bytes taken so far, until its first block begins (its
    /// header ends at most [`XZ_HEAD_MAX`] bytes in): a block that needs a
    /// higher limit stops liblzma (5.2) past its header for good, and
    /// they are given again to a decoder with the higher limit.
    head: Option<Vec<u8>>,
}

/// The stream header's 12 bytes and the longest block header.
const XZ_HEAD_MAX: usize = 12 + 1024;

/// One of the server's [`BIG_XZ_MAX`] slots for an xz stream whose
/// dictionary is over 8 MiB (`xz -7` to `-9`), taken when its decoder first
/// needs more than [`XZ_MEMORY_MAX`] and held until the decoder is dropped.
pub(crate) struct BigXzSlot;

/// The big-dictionary slots taken, for all bodies together.
static BIG_XZ_TAKEN: AtomicUsize = AtomicUsize::new(0);

impl BigXzSlot {
    pub(crate) fn take() -> Option<BigXzSlot> {
        BIG_XZ_TAKEN
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < BIG_XZ_MAX).then_some(n + 1)
            })
            .ok()
            .map(|_| BigXzSlot)
    }
}

impl Drop for BigXzSlot {
    fn drop(&mut self) {
        BIG_XZ_TAKEN.fetch_sub(1, Ordering::Relaxed);
    }
}

impl XzLibrary {
    /// The same stream's decoder again, with the limit of a big-dictionary
    /// slot, given the bytes the first took.
    fn with_big_dictionary(&mut self) -> Result<(), String> {
        let head = self
            .head
            .take()
            .ok_or("an xz block over the limit, past the first")?;
        let slot = BigXzSlot::take().ok_or("an xz dictionary over 8 MiB, and no slot free")?;
        let mut stream = xz2::stream::Stream::new_stream_decoder(XZ_BIG_MEMORY_MAX, 0)
            .map_err(|e| e.to_string())?;
        let mut none = [0; 16];
        stream
            .process(&head, &mut none, xz2::stream::Action::Run)
            .map_err(|e| e.to_string())?;
        if stream.total_in() != head.len() as u64 || stream.total_out() != 0 {
            return Err("an xz stream that did not restart where it stopped".into());
        }
        (self.stream, self.big) = (stream, Some(slot));
        Ok(())
    }
}

/// How many xz streams with a dictionary over 8 MiB are unpacked at once,
/// server-wide. liblzma reserves the dictionary whole, but the pages hold
/// memory only as they are written: at most the stream's unpacked size,
/// up to 64 MiB each.
pub(crate) const BIG_XZ_MAX: usize = 4;

/// The most memory a stream in a big-dictionary slot may take: `xz -9`'s
/// 64 MiB dictionary and the decoder's own state (`xz -lvv` says 65 MiB).
/// A larger dictionary (`--lzma2=dict=` over 64 MiB) does not unpack here.
const XZ_BIG_MEMORY_MAX: u64 = 65 << 20;

/// How an xz stream begins (its magic's first byte).
const XZ_MAGIC_FIRST: u8 = 0xfd;

/// The most memory an xz file's decoder may take without a big-dictionary
/// slot ([`BIG_XZ_MAX`]): enough for a dictionary of 8 MiB, which `xz` uses
/// up to its default preset (`-6`).
const XZ_MEMORY_MAX: u64 = 16 << 20;

/// A packed file's streams, by a library that counts the bytes it took
/// and gave: liblzma for `.xz`, libbz2-rs for `.bz2` (clamd unpacks a
/// bzip2 file's first stream only; the zip watch hands out the content of
/// a file of several, or reports it).
struct Unpack<L> {
    library: L,
    ended: bool,
    /// Whether the stream being unpacked follows another.
    later: bool,
    /// Packed bytes taken so far, and where the stream being unpacked
    /// began among them.
    taken: u64,
    stream_at: u64,
    /// The error of a call that gave bytes, which went on first.
    failed: Option<String>,
    /// Where bytes that begin no stream came after the last one's end:
    /// they and all that follows are not unpacked.
    trailing: Option<u64>,
}

/// What [`Unpack`] asks of its library.
trait Library: Sized {
    /// Bytes taken and given so far.
    fn totals(&self) -> (u64, u64);
    /// Unpacks what it can; true at the stream's end.
    fn run(&mut self, input: &[u8], output: &mut [u8]) -> Result<bool, String>;
    /// Whether streams may follow one another, with zero bytes between
    /// them (xz's: clamd and `xz -d` unpack `cat a.xz b.xz`).
    const STREAMS: bool;
    /// A decoder for the stream that begins with `first`, if it may be
    /// one.
    fn next_stream(first: u8) -> Option<Self>;
    /// Whether a stream after the first that fails before it gives a byte
    /// is taken for trailing bytes, which end the file (`bzip2 -d` warns
    /// of them, Python's bz2 module ignores them), rather than for damage.
    const TRAILING_AFTER_A_STREAM: bool;
    /// How many bytes begin a stream (its magic): a stream after the first
    /// that ends with the file before it took as many is taken for
    /// trailing bytes too; one that did is cut short.
    const HEAD: u64;
}

type Xz = Unpack<XzLibrary>;
type Bzip2 = Unpack<bzip2::Decompress>;

impl Library for XzLibrary {
    fn totals(&self) -> (u64, u64) {
        (self.stream.total_in(), self.stream.total_out())
    }

    fn run(&mut self, input: &[u8], output: &mut [u8]) -> Result<bool, String> {
        let was = self.totals();
        loop {
            let (taken, given) = self.totals();
            let input = &input[(taken - was.0) as usize..];
            let status = self.stream.process(
                input,
                &mut output[(given - was.1) as usize..],
                xz2::stream::Action::Run,
            );
            if let Some(head) = &mut self.head {
                head.extend_from_slice(&input[..(self.stream.total_in() - taken) as usize]);
                if head.len() > XZ_HEAD_MAX || self.stream.total_out() > 0 {
                    self.head = None;
                }
            }
            match status {
                Ok(status) => return Ok(matches!(status, xz2::stream::Status::StreamEnd)),
                // A block whose dictionary is over 8 MiB.
                Err(xz2::stream::Error::MemLimit) if self.big.is_none() => {
                    self.with_big_dictionary()?
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    const STREAMS: bool = true;

    fn next_stream(first: u8) -> Option<Self> {
        (first == XZ_MAGIC_FIRST).then(xz_decoder)?
    }

    const TRAILING_AFTER_A_STREAM: bool = false;
    const HEAD: u64 = 12;
}

impl Library for bzip2::Decompress {
    fn totals(&self) -> (u64, u64) {
        (self.total_in(), self.total_out())
    }

    fn run(&mut self, input: &[u8], output: &mut [u8]) -> Result<bool, String> {
        let status = self.decompress(input, output).map_err(|e| e.to_string())?;
        Ok(matches!(status, bzip2::Status::StreamEnd))
    }

    // pbzip2 writes a stream per 900 kB of input, and `cat a.bz2 b.bz2`
    // unpacks as one file.
    const STREAMS: bool = true;

    fn next_stream(first: u8) -> Option<Self> {
        (first == BZIP2_MAGIC_FIRST).then(|| bzip2::Decompress::new(false))
    }

    const TRAILING_AFTER_A_STREAM: bool = true;
    // `BZh`, the block size, and a block's or the end's 48-bit magic.
    const HEAD: u64 = 10;
}

/// How a bzip2 stream begins (`BZh`'s first byte).
const BZIP2_MAGIC_FIRST: u8 = b'B';

impl<L: Library> Unpack<L> {
    fn new(library: L) -> Unpack<L> {
        Unpack {
            library,
            ended: false,
            later: false,
            taken: 0,
            stream_at: 0,
            failed: None,
            trailing: None,
        }
    }

    /// Whether the file may end here: after a stream's end, or after
    /// bytes that only began like one more, taken for trailing bytes.
    fn is_finished(&self) -> bool {
        let (taken, given) = self.library.totals();
        self.ended || (L::TRAILING_AFTER_A_STREAM && self.later && given == 0 && taken < L::HEAD)
    }

    fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        let step = self.unpack(input, output)?;
        self.taken += step.consumed as u64;
        Ok(step)
    }

    fn unpack(&mut self, input: &[u8], output: &mut [u8]) -> Result<Step, String> {
        if L::STREAMS && self.ended && !input.is_empty() {
            // The padding after a stream, then the next one, if any;
            // whatever else follows is not unpacked.
            let zeros = input.iter().take_while(|&&b| b == 0).count();
            if self.trailing.is_none() && zeros == 0 {
                match L::next_stream(input[0]) {
                    Some(next) => {
                        self.library = next;
                        self.ended = false;
                        self.later = true;
                        self.stream_at = self.taken;
                    }
                    None => self.trailing = Some(self.taken),
                }
            }
            if self.ended {
                return Ok(Step {
                    consumed: if self.trailing.is_some() {
                        input.len()
                    } else {
                        zeros
                    },
                    produced: 0,
                });
            }
        }
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let was = self.library.totals();
        let run = match self.ended {
            false => self.library.run(input, output),
            true => Ok(true),
        };
        let now = self.library.totals();
        let step = Step {
            consumed: (now.0 - was.0) as usize,
            produced: (now.1 - was.1) as usize,
        };
        match run {
            Ok(ended) => self.ended = ended,
            // What came out before the bad data goes on first.
            Err(e) if step.produced > 0 => self.failed = Some(e),
            // Bytes after the last stream that only begin like one: the
            // file ended with that stream, and they are not unpacked.
            Err(_) if L::TRAILING_AFTER_A_STREAM && self.later && now.1 == 0 => {
                self.ended = true;
                self.trailing = Some(self.stream_at);
                return Ok(Step {
                    consumed: input.len(),
                    produced: 0,
                });
            }
            Err(e) => return Err(e),
        }
        Ok(step)
    }
}

/// The layers of one body's Content-Encoding being undone.
pub struct Decoder {
    /// Outermost first.
    layers: Vec<Layer>,
    /// What layer `i` decoded and layer `i + 1` has not taken yet.
    between: Vec<Held>,
    /// Where the last layer decodes to.
    out: Vec<u8>,
    /// Whether any encoded byte arrived.
    started: bool,
}

/// Bytes one layer decoded for the next, in a buffer of [`PIECE`] bytes
/// (zeroed once, when first used): `data[at..end]` are still to be taken.
#[derive(Debug, Clone, Default)]
struct Held {
    data: Vec<u8>,
    at: usize,
    end: usize,
}

impl std::fmt::Debug for Decoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.layers.iter().map(Layer::name).collect();
        write!(f, "Decoder({})", names.join(" then "))
    }
}

impl Decoder {
    /// Decodes what it can of `input` (advanced past what was used): at
    /// most `PIECE` bytes, none when nothing more comes out without more
    /// input.
    pub fn decode(&mut self, input: &mut &[u8]) -> Result<&[u8], String> {
        self.started |= !input.is_empty();
        let mut out = std::mem::take(&mut self.out);
        out.resize(PIECE, 0);
        let last = self.layers.len() - 1;
        let n = self.pull(last, input, &mut out);
        self.out = out;
        Ok(&self.out[..n?])
    }

    /// Where, among a packed file's bytes ([`unpacking`]), bytes that
    /// begin no stream came after its last stream, ending it: what follows
    /// is not unpacked.
    pub(crate) fn trailing_from(&self) -> Option<u64> {
        match self.layers.first() {
            Some(Layer::Xz(x)) => x.trailing,
            Some(Layer::Bzip2(b)) => b.trailing,
            _ => None,
        }
    }

    /// Unpacks a packed file ([`unpacking`]) as [`Decoder::decode`] does,
    /// and tells whether a stream after its first has begun.
    pub(crate) fn unpack(&mut self, input: &mut &[u8]) -> Result<(&[u8], bool), String> {
        let n = self.decode(input)?.len();
        let later = match self.layers.first() {
            Some(Layer::Xz(x)) => x.later,
            Some(Layer::Bzip2(b)) => b.later,
            _ => false,
        };
        Ok((&self.out[..n], later))
    }

    /// At the end of the body: every layer must have reached its end, or
    /// the body is cut short (and a browser would not get it whole either).
    pub fn finish(&self) -> Result<(), String> {
        if !self.started {
            // Nothing arrived: nothing to decode.
            return Ok(());
        }
        match self.layers.iter().find(|l| !l.is_finished()) {
            Some(layer) => Err(format!("the {} stream ends before its end", layer.name())),
            None => Ok(()),
        }
    }

    /// Output of layer `i` into `buf`, pulling input through the layers
    /// before it as needed; 0 when it needs more encoded input.
    fn pull(&mut self, i: usize, input: &mut &[u8], buf: &mut [u8]) -> Result<usize, String> {
        let name = self.layers[i].name();
        loop {
            let (step, left) = if i == 0 {
                let step = self.layers[0].step(input, buf);
                let step = step.map_err(|e| format!("cannot decode {name}: {e}"))?;
                *input = &input[step.consumed..];
                (step, input.len())
            } else {
                let held = &mut self.between[i - 1];
                let step = self.layers[i].step(&held.data[held.at..held.end], buf);
                let step = step.map_err(|e| format!("cannot decode {name}: {e}"))?;
                held.at += step.consumed;
                (step, held.end - held.at)
            };
            if step.produced > 0 {
                return Ok(step.produced);
            }
            if step.consumed > 0 {
                continue;
            }
            if left > 0 {
                // Input it does not take: the stream has ended, and a
                // browser ignores what follows it too.
                if !self.layers[i].is_finished() {
                    return Err(format!("cannot decode {name}: no progress"));
                }
                if i == 0 {
                    *input = &[];
                } else {
                    let held = &mut self.between[i - 1];
                    held.at = held.end;
                }
                return Ok(0);
            }
            if i == 0 {
                return Ok(0);
            }
            // Its input is used up: more from the layer before.
            let mut held = std::mem::take(&mut self.between[i - 1]);
            held.data.resize(PIECE, 0);
            let n = self.pull(i - 1, input, &mut held.data);
            held.at = 0;
            held.end = *n.as_ref().unwrap_or(&0);
            self.between[i - 1] = held;
            if n? == 0 {
                return Ok(0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &[u8] =
        b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$ not the test file, only a body with a shape";

    /// Decodes `encoded` fed `piece` bytes at a time, as it would arrive.
    fn decode_all(content_encoding: &str, encoded: &[u8], piece: usize) -> Result<Vec<u8>, String> {
        let Plan::Decode(d) = plan(content_encoding) else {
            panic!("{content_encoding} needs decoding");
        };
        unpack_all(d, encoded, piece.max(1))
    }

    /// What `decoder` unpacks of `packed` fed `piece` bytes at a time.
    fn unpack_all(mut decoder: Decoder, packed: &[u8], piece: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        for mut rest in packed.chunks(piece) {
            loop {
                let piece = decoder.decode(&mut rest)?;
                if piece.is_empty() {
                    break;
                }
                out.extend_from_slice(piece);
            }
            assert!(rest.is_empty(), "all input taken");
        }
        decoder.finish()?;
        Ok(out)
    }

    fn bzip2(data: &[u8]) -> Vec<u8> {
        let mut bz2 = Vec::new();
        let mut encoder = bzip2::write::BzEncoder::new(&mut bz2, bzip2::Compression::fast());
        std::io::Write::write_all(&mut encoder, data).unwrap();
        encoder.finish().unwrap();
        bz2
    }

    #[test]
    fn bzip2_streams_unpack_one_after_another() {
        // As pbzip2 writes them (a stream per 900 kB of input), or as
        // `cat a.bz2 b.bz2` makes them: `bzip2 -d` and Python's bz2
        // module unpack them all, an empty one too.
        let file = [bzip2(b"first, "), bzip2(b""), bzip2(TEXT)].concat();
        let content = [b"first, ".as_slice(), TEXT].concat();
        let bz2 = || unpacking(Packing::Bzip2).unwrap();
        for piece in [1, 3, 10, 1000] {
            assert_eq!(unpack_all(bz2(), &file, piece).unwrap(), content);
            // Bytes after the last stream end the file, those that begin
            // like one too: `bzip2 -d` warns of trailing garbage.
            for trailing in [&b"B"[..], b"BZ", b"Bogus", b"BZh9 not a block", b"junk"] {
                let with = [&file[..], trailing].concat();
                assert_eq!(
                    unpack_all(bz2(), &with, piece).unwrap(),
                    content,
                    "{trailing:?} in pieces of {piece}"
                );
            }
            // A later stream cut short, or damaged after it gave bytes,
            // is not.
            let cut = &file[..file.len() - 4];
            assert!(unpack_all(bz2(), cut, piece).is_err(), "pieces of {piece}");
            let last = bzip2(TEXT).len();
            let cut = &file[..file.len() - last + 12];
            assert!(unpack_all(bz2(), cut, piece).is_err(), "pieces of {piece}");
            let mut damaged = [file.clone(), bzip2(&TEXT.repeat(50))].concat();
            let n = damaged.len();
            damaged[n - 8..n - 4].fill(0);
            assert!(
                unpack_all(bz2(), &damaged, piece).is_err(),
                "pieces of {piece}"
            );
        }
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        miniz_oxide::deflate::compress_to_vec_zlib(data, 6)
    }

    /// What inflate gives of raw deflate data `packed`, fed `piece` bytes
    /// at a time, before it meets bad data.
    fn inflated_until_error(packed: &[u8], piece: usize) -> Vec<u8> {
        let mut state = InflateState::new_boxed(DataFormat::Raw);
        let mut out = Vec::new();
        let mut buf = vec![0; PIECE];
        for mut chunk in packed.chunks(piece) {
            loop {
                let Ok((step, _)) = inflate_step(&mut state, chunk, &mut buf) else {
                    return out;
                };
                out.extend_from_slice(&buf[..step.produced]);
                chunk = &chunk[step.consumed..];
                if step.consumed == 0 && step.produced == 0 {
                    break;
                }
            }
        }
        out
    }

    #[test]
    fn what_comes_out_before_bad_data_is_handed_on() {
        // Found by the fuzzer in a zip entry (a ZIP64 zip deflated, its
        // stream going bad after the local header): the output of the call
        // that met the bad data was dropped, so that the data whole gave
        // nothing and in pieces the header.
        const PACKED: [u8; 52] = [
            0x0b, 0xf0, 0x66, 0x66, 0xd1, 0x65, 0x60, 0x60, 0xe0, 0x00, 0x62, 0xc5, 0x98, 0xc5,
            0x0b, 0x16, 0x5b, 0xfc, 0x87, 0x02, 0x06, 0x11, 0x86, 0xa2, 0xd4, 0xc4, 0x94, 0xdc,
            0x54, 0xbd, 0x92, 0x8a, 0x12, 0x46, 0x20, 0xc8, 0x85, 0x50, 0x64, 0xb8, 0x86, 0x6f,
            0xe8, 0x09, 0x0f, 0x5d, 0xaf, 0xab, 0x8f, 0x3f, 0x49, 0x8b,
        ];
        let whole = inflated_until_error(&PACKED, PACKED.len());
        assert!(whole.starts_with(b"PK\x03\x04"), "{whole:?}");
        for piece in [1, 7, 24, 40] {
            let cut = inflated_until_error(&PACKED, piece);
            assert_eq!(cut, whole, "pieces of {piece}");
        }
    }

    fn raw_deflate(data: &[u8]) -> Vec<u8> {
        miniz_oxide::deflate::compress_to_vec(data, 6)
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        // Header with a file name, as gzip(1) writes it.
        let mut v = vec![0x1f, 0x8b, 8, 8, 0, 0, 0, 0, 0, 3];
        v.extend_from_slice(b"body.txt\0");
        v.extend_from_slice(&raw_deflate(data));
        v.extend_from_slice(&[0; 8]);
        v
    }

    /// `TEXT` eight times over, as `brotli -q 5` writes it (the crate here
    /// only decodes).
    const BROTLI_TEXT_8: &[u8] = &[
        0x1b, 0x3f, 0x02, 0x00, 0xe4, 0xff, 0xe6, 0xa5, 0x7a, 0xe7, 0x29, 0xaa, 0xea, 0xf5, 0xfd,
        0x38, 0xb1, 0x52, 0xb0, 0x01, 0x27, 0xe0, 0xe9, 0x80, 0x83, 0xad, 0x34, 0xe1, 0xa0, 0x30,
        0x38, 0xe4, 0x2e, 0x56, 0x3b, 0x48, 0xd0, 0x1c, 0x59, 0x21, 0x06, 0xee, 0x7a, 0x90, 0x9a,
        0x19, 0x24, 0x91, 0x65, 0x2a, 0x50, 0xa8, 0x4e, 0x10, 0x50, 0x7f, 0x86, 0x86, 0x71, 0x7b,
        0xc1, 0xe8, 0xad, 0x5f, 0x37, 0x34, 0x7a, 0xc0, 0x40, 0xe1, 0x40, 0x35, 0x6a, 0xc6, 0xee,
        0x46, 0x26, 0x42, 0x35, 0x72, 0xbe, 0x6c, 0x17,
    ];

    #[test]
    fn plans_follow_what_clamd_opens() {
        assert!(matches!(plan(""), Plan::AsIs));
        assert!(matches!(plan("identity"), Plan::AsIs));
        assert!(matches!(plan("gzip"), Plan::Decode(_)));
        assert!(matches!(plan("x-gzip"), Plan::Decode(_)));
        assert!(matches!(plan("gzip, compress"), Plan::AsIs));
        assert!(matches!(plan("compress"), Plan::AsIs));
        assert!(matches!(plan("BR"), Plan::Decode(_)));
        assert!(matches!(plan(" deflate "), Plan::Decode(_)));
        assert!(matches!(plan("zstd"), Plan::Decode(_)));
        assert!(matches!(plan("dcb"), Plan::Cannot(_)));
        assert!(matches!(plan("DCZ, gzip"), Plan::Cannot(_)));
        let Plan::Decode(d) = plan("br, zstd") else {
            panic!()
        };
        assert_eq!(format!("{d:?}"), "Decoder(zstd then br)");
        let Plan::Decode(d) = plan("gzip, deflate, gzip") else {
            panic!()
        };
        assert_eq!(format!("{d:?}"), "Decoder(gzip then deflate then gzip)");
    }

    #[test]
    fn deflate_is_zlib_or_raw_in_any_pieces() {
        for piece in [1, 2, 3, 7, 1000] {
            assert_eq!(decode_all("deflate", &zlib(TEXT), piece).unwrap(), TEXT);
            assert_eq!(
                decode_all("deflate", &raw_deflate(TEXT), piece).unwrap(),
                TEXT
            );
        }
    }

    #[test]
    fn brotli_in_any_pieces() {
        for piece in [1, 5, 1000] {
            assert_eq!(
                decode_all("br", BROTLI_TEXT_8, piece).unwrap(),
                TEXT.repeat(8)
            );
        }
    }

    fn zstd(data: &[u8], level: i32) -> Vec<u8> {
        zstd::encode_all(data, level).unwrap()
    }

    /// What `decoder` gives of `encoded`, fed `piece` bytes at a time,
    /// before an error; and whether one came.
    fn decoded_until_error(mut decoder: Decoder, encoded: &[u8], piece: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for chunk in encoded.chunks(piece) {
            let mut rest = chunk;
            loop {
                match decoder.decode(&mut rest) {
                    Ok([]) => break,
                    Ok(piece) => out.extend_from_slice(piece),
                    Err(_) => return (out, true),
                }
            }
        }
        (out, decoder.finish().is_err())
    }

    /// A brotli stream (RFC 7932) with a window of 1 KiB: `data` stored in
    /// one meta-block, then a meta-block header with its reserved bit set,
    /// which is bad data.
    fn brotli_stored_then_bad(data: &[u8]) -> Vec<u8> {
        assert!(!data.is_empty() && data.len() <= 1 << 16);
        // (value, bits), lowest bit first: the window's size (1, 000, then
        // 2: 8 + 2 bits); not the last meta-block (0); four nibbles of
        // length (00); the length less one; stored (1).
        let fields = [
            (1, 1),
            (0, 3),
            (2, 3),
            (0, 1),
            (0, 2),
            (data.len() as u32 - 1, 16),
            (1, 1),
        ];
        let (mut word, mut at) = (0u32, 0usize);
        for (value, bits) in fields {
            word |= value << at;
            at += bits;
        }
        let mut v = word.to_le_bytes()[..at.div_ceil(8)].to_vec();
        v.extend_from_slice(data);
        // Not the last (0); no length, so metadata (11); reserved (1).
        v.push(0b1110);
        v
    }

    #[test]
    fn what_comes_out_before_bad_data_goes_on_first() {
        // As for deflate (above): a call that met bad data gave nothing of
        // what it had decoded before it, so that a body whole showed less
        // of its content before the bad bytes than in pieces (an xz file
        // whole: none of it). Each case gives bytes in the call that meets
        // the bad data: xz the blocks before the bad bytes; bzip2, with
        // blocks of 100 KiB, the end of its first block, then its bad
        // second one; zstd, with a window of 1 KiB, a block at a time (the
        // library reports nothing of a call that fails, so each call is
        // given one block).
        let text: Vec<u8> = (0..20_000u32)
            .flat_map(|i| format!("line {i} {}\n", i * 7919 % 10007).into_bytes())
            .collect();
        let spoiled = |mut packed: Vec<u8>| {
            let n = packed.len();
            packed[n * 3 / 4..n - 2].fill(0xff);
            packed
        };
        let mut xz = Vec::new();
        let mut encoder = xz2::write::XzEncoder::new(&mut xz, 6);
        std::io::Write::write_all(&mut encoder, &text).unwrap();
        encoder.finish().unwrap();
        let mut bz2 = Vec::new();
        let mut encoder = bzip2::write::BzEncoder::new(&mut bz2, bzip2::Compression::fast());
        std::io::Write::write_all(&mut encoder, &text).unwrap();
        encoder.finish().unwrap();
        let mut zst = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        zst.window_log(10).unwrap();
        std::io::Write::write_all(&mut zst, &text).unwrap();
        let zst = zst.finish().unwrap();
        type Case = (&'static str, Vec<u8>, fn() -> Decoder);
        let cases: [Case; 3] = [
            ("xz", spoiled(xz), || unpacking(Packing::Xz).unwrap()),
            ("bzip2", spoiled(bz2), || unpacking(Packing::Bzip2).unwrap()),
            ("zstd", spoiled(zst), || match plan("zstd") {
                Plan::Decode(d) => d,
                _ => unreachable!(),
            }),
        ];
        for (name, packed, decoder) in cases {
            let whole = decoded_until_error(decoder(), &packed, packed.len());
            assert!(whole.1, "{name}: bad data is an error");
            assert!(!whole.0.is_empty(), "{name}: bytes before the bad data");
            for piece in [1, 7, 100] {
                let cut = decoded_until_error(decoder(), &packed, piece);
                assert!(
                    cut == whole,
                    "{name} in pieces of {piece}: {} against {}",
                    cut.0.len(),
                    whole.0.len()
                );
            }
        }
        // Brotli writes out its window when it is full, and what it has
        // written goes on first; what it has decoded but not written out
        // when it meets bad data is lost (the library gives nothing after
        // an error), so how much comes out depends on the pieces: here its
        // first KiB whole, up to all 2,000 bytes in pieces.
        let stored = &text[..2000];
        let br = brotli_stored_then_bad(stored);
        let decoder = || match plan("br") {
            Plan::Decode(d) => d,
            _ => unreachable!(),
        };
        let whole = decoded_until_error(decoder(), &br, br.len());
        assert!(whole.1, "br: bad data is an error");
        assert!(
            !whole.0.is_empty() && stored.starts_with(&whole.0),
            "br: {}",
            whole.0.len()
        );
        for piece in [1, 7, 100] {
            let cut = decoded_until_error(decoder(), &br, piece);
            assert!(
                cut.1 && stored.starts_with(&cut.0),
                "br in pieces of {piece}"
            );
        }
    }

    #[test]
    fn zstd_in_any_pieces_frame_after_frame() {
        let body = TEXT.repeat(5000);
        let one = zstd(&body, 19);
        assert!(one.len() < body.len() / 10, "compressed: {}", one.len());
        for piece in [1, 7, 1000, 1 << 20] {
            assert_eq!(decode_all("zstd", &one, piece).unwrap(), body);
        }
        // Frames one after the other, a skippable one (RFC 8878 3.1.2)
        // between them, make one body.
        let mut frames = zstd(&body[..1000], 3);
        frames.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 1, 2, 3]);
        frames.extend_from_slice(&zstd(&body[1000..], 3));
        for piece in [1, 13, 1 << 20] {
            assert_eq!(decode_all("zstd", &frames, piece).unwrap(), body);
        }
        // An empty body encoded is a frame too.
        assert_eq!(decode_all("zstd", &zstd(b"", 3), 1).unwrap(), b"");
    }

    #[test]
    fn a_zstd_window_past_rfc_9659_does_not_decode() {
        let body: Vec<u8> = (0..(9u32 << 20)).map(|i| (i % 251) as u8).collect();
        for (window_log, decodes) in [(23, true), (24, false)] {
            let mut big = zstd::stream::write::Encoder::new(Vec::new(), 3).unwrap();
            big.window_log(window_log).unwrap();
            std::io::Write::write_all(&mut big, &body).unwrap();
            let encoded = big.finish().unwrap();
            let got = decode_all("zstd", &encoded, 1 << 16);
            assert_eq!(got.is_ok(), decodes, "window 2^{window_log}: {got:?}");
            if let Err(e) = got {
                assert!(e.contains("cannot decode zstd"), "{e}");
            }
        }
    }

    #[test]
    fn layers_come_off_outermost_first() {
        // deflate applied first, then gzip: gzip comes off, then deflate.
        let encoded = gzip(&zlib(TEXT));
        for piece in [1, 4, 1000] {
            assert_eq!(decode_all("deflate, gzip", &encoded, piece).unwrap(), TEXT);
        }
        // Two gzip members make one body.
        let z = zlib(TEXT);
        let mut two = gzip(&z[..10]);
        two.extend_from_slice(&gzip(&z[10..]));
        assert_eq!(decode_all("deflate, gzip", &two, 3).unwrap(), TEXT);
        assert_eq!(
            decode_all("br, gzip", &gzip(BROTLI_TEXT_8), 3).unwrap(),
            TEXT.repeat(8)
        );
    }

    #[test]
    fn bytes_after_the_last_gzip_member_are_ignored() {
        // As browsers and gunzip do: some servers send a newline or zeros
        // after the stream.
        for tail in [
            &b"\n"[..],
            b"\0\0\0\0",
            b"\x1f",
            b"\x1f\x8b",
            b"\x1f\x00 junk",
        ] {
            let mut body = gzip(TEXT);
            body.extend_from_slice(tail);
            for piece in [1, 3, 1000] {
                assert_eq!(decode_all("gzip", &body, piece).unwrap(), TEXT, "{tail:?}");
            }
        }
        // Not a gzip member at all, or one cut short: an error.
        assert!(decode_all("gzip", b"plain text", 4).is_err());
        let whole = gzip(TEXT);
        let cut = decode_all("gzip", &whole[..whole.len() - 12], 4).unwrap_err();
        assert!(cut.contains("gzip stream ends before its end"), "{cut}");
    }

    #[test]
    fn a_cut_or_broken_stream_is_an_error() {
        let z = zlib(TEXT);
        let cut = decode_all("deflate", &z[..z.len() - 6], 100).unwrap_err();
        assert!(cut.contains("ends before its end"), "{cut}");
        let cut = decode_all("br", &BROTLI_TEXT_8[..BROTLI_TEXT_8.len() - 3], 100).unwrap_err();
        assert!(cut.contains("br"), "{cut}");
        let broken = decode_all("br", b"\xff\xff\xff\xff not brotli", 100).unwrap_err();
        assert!(broken.contains("cannot decode br"), "{broken}");
        let z = zstd(&TEXT.repeat(100), 3);
        let cut = decode_all("zstd", &z[..z.len() - 3], 100).unwrap_err();
        assert!(cut.contains("zstd stream ends before its end"), "{cut}");
        let broken = decode_all("zstd", b"not zstd at all", 100).unwrap_err();
        assert!(broken.contains("cannot decode zstd"), "{broken}");
        // Nothing at all is an empty body, not a cut one.
        assert_eq!(decode_all("br", b"", 100).unwrap(), b"");
        assert_eq!(decode_all("zstd", b"", 100).unwrap(), b"");
    }

    /// Garbage, and valid streams with bytes changed, in pieces of any
    /// size: every call returns, nothing panics, no piece is too big.
    #[test]
    fn damaged_streams_end_in_output_or_an_error() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let valid: Vec<(&str, Vec<u8>)> = vec![
            ("br", BROTLI_TEXT_8.to_vec()),
            ("deflate", zlib(TEXT)),
            ("deflate", raw_deflate(TEXT)),
            ("deflate, gzip", gzip(&zlib(TEXT))),
            ("br, gzip", gzip(BROTLI_TEXT_8)),
            ("gzip", gzip(TEXT)),
            ("zstd", zstd(&TEXT.repeat(20), 3)),
            ("br, zstd", zstd(BROTLI_TEXT_8, 1)),
        ];
        for case in 0..600 {
            let (coding, mut data) = valid[case % valid.len()].clone();
            if case % 7 == 0 {
                data = (0..next() % 300).map(|_| next() as u8).collect();
            } else {
                for _ in 0..1 + next() % 3 {
                    let at = (next() as usize) % data.len().max(1);
                    match next() % 3 {
                        0 if !data.is_empty() => data[at] = next() as u8,
                        1 => data.truncate(at),
                        _ => data.insert(at.min(data.len()), next() as u8),
                    }
                }
            }
            let Plan::Decode(mut d) = plan(coding) else {
                panic!()
            };
            let piece = 1 + (next() as usize) % 50;
            let mut failed = false;
            for chunk in data.chunks(piece) {
                let mut rest = chunk;
                loop {
                    match d.decode(&mut rest) {
                        Ok(out) if !out.is_empty() => assert!(out.len() <= PIECE),
                        Ok(_) => break,
                        Err(_) => {
                            failed = true;
                            break;
                        }
                    }
                }
                if failed {
                    break;
                }
            }
            if !failed {
                let _ = d.finish();
            }
        }
    }

    #[test]
    fn a_bomb_comes_out_a_piece_at_a_time() {
        let zeros = vec![0u8; 20 << 20];
        for (coding, bomb) in [("deflate", zlib(&zeros)), ("zstd", zstd(&zeros, 19))] {
            assert!(bomb.len() < 64 << 10, "{coding}: {}", bomb.len());
            let Plan::Decode(mut d) = plan(coding) else {
                panic!()
            };
            let (mut rest, mut total) = (&bomb[..], 0);
            loop {
                let out = d.decode(&mut rest).unwrap();
                if out.is_empty() {
                    break;
                }
                assert!(out.len() <= PIECE);
                total += out.len();
            }
            assert_eq!(total, zeros.len(), "{coding}");
        }
    }
}
