//! PKZIP's Implode (zip method 6, PKZIP 1.x), undone as the bytes arrive,
//! for the zip watch: clamd unpacks such entries, and sees what is in them
//! as it is.
//!
//! APPNOTE.TXT 5.3 describes it: an LZ77 window of 4 or 8 KiB (bit 1 of
//! the entry's flags), and two or three Shannon-Fano codes (bit 2: one for
//! literals, else they are 8 bits as they are), for the lengths and for the
//! high 6 bits of the distances. The data has no end of its own: it ends
//! when the entry's unpacked size has come out, so only entries whose
//! header gives their sizes can be undone.

use crate::decode::Step;

/// The most bits one literal or match takes: its flag bit, the low
/// distance bits, two codes of up to 16 bits and the extra length byte.
const SYMBOL_BITS: usize = 1 + 7 + 16 + 16 + 8;

/// The most packed bytes held at once, not yet decoded.
const HELD_MAX: usize = 16 << 10;

/// The window, whose bytes before the start are zeros, as APPNOTE says.
const WINDOW: usize = 8 << 10;

/// One Implode stream being undone.
pub(crate) struct Explode {
    big_window: bool,
    literals: bool,
    /// Packed bytes still to come, and unpacked bytes still to give.
    packed_left: u64,
    unpacked_left: u64,
    /// Packed bytes taken and not yet all decoded, and the bit of them
    /// that decoding has reached.
    held: Vec<u8>,
    bit: usize,
    codes: Option<Codes>,
    window: Box<[u8; WINDOW]>,
    /// Where the next byte goes in `window`.
    at: usize,
    /// A match not all given out yet: its distance and the bytes left.
    copying: Option<(usize, usize)>,
    failed: bool,
}

/// The stream's codes, read from its start.
struct Codes {
    literal: Option<Code>,
    length: Code,
    distance: Code,
}

/// A Shannon-Fano code as APPNOTE builds it: a canonical code whose bits
/// are stored inverted, so it decodes as Deflate's Huffman codes do from
/// the inverted bits.
struct Code {
    /// How many symbols have codes of each length, 1 to 16.
    counts: [u16; 17],
    /// The symbols by code length, then by value.
    symbols: Vec<u8>,
}

impl Code {
    /// Reads a code of `n` symbols from `bytes`: a byte giving how many
    /// more bytes follow (less one), each giving a code length (its low 4
    /// bits, plus one) and how many symbols in a row have it (its high 4
    /// bits, plus one). `None` when `bytes` does not hold it all; an error
    /// when it is no code.
    fn read(bytes: &[u8], n: usize) -> Result<Option<(Code, usize)>, String> {
        let Some(&first) = bytes.first() else {
            return Ok(None);
        };
        let len = 1 + usize::from(first) + 1;
        let Some(runs) = bytes.get(1..len) else {
            return Ok(None);
        };
        let mut lengths = Vec::with_capacity(n);
        for &run in runs {
            let (length, times) = ((run & 0xf) + 1, usize::from(run >> 4) + 1);
            lengths.extend(std::iter::repeat_n(length, times));
        }
        if lengths.len() != n {
            return Err(format!(
                "an Implode code of {} lengths where {n} belong",
                lengths.len()
            ));
        }
        let mut counts = [0u16; 17];
        for &l in &lengths {
            counts[usize::from(l)] += 1;
        }
        // Not more codes of a length than the shorter ones leave room for.
        let mut room: i32 = 1;
        for &count in &counts[1..] {
            room = room * 2 - i32::from(count);
            if room < 0 {
                return Err("an Implode code with more codes than fit".into());
            }
        }
        let mut symbols: Vec<u8> = (0..=255).take(n).collect();
        symbols.sort_by_key(|&s| lengths[usize::from(s)]);
        Ok(Some((Code { counts, symbols }, len)))
    }
}

/// A reader of the held bits, least significant first, that can be turned
/// back to where a symbol began.
struct Bits<'a> {
    bytes: &'a [u8],
    bit: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Option<usize> {
        let mut value = 0;
        for i in 0..n {
            let byte = self.bytes.get((self.bit + i) / 8)?;
            value |= usize::from(byte >> ((self.bit + i) % 8) & 1) << i;
        }
        self.bit += n;
        Some(value)
    }

    /// The next symbol of `code`; `Ok(None)` when the bits run out first.
    fn symbol(&mut self, code: &Code) -> Result<Option<u8>, String> {
        // Canonical decoding, as zlib's puff does it, on inverted bits.
        let (mut value, mut first, mut index) = (0usize, 0usize, 0usize);
        for &count in &code.counts[1..] {
            let Some(bit) = self.take(1) else {
                return Ok(None);
            };
            value |= bit ^ 1;
            let count = usize::from(count);
            if value < first + count {
                return Ok(Some(code.symbols[index + value - first]));
            }
            index += count;
            first = (first + count) << 1;
            value <<= 1;
        }
        Err("bits that are no Implode code".into())
    }
}

/// What one literal or match stands for.
enum Symbol {
    Literal(u8),
    Match { distance: usize, length: usize },
}

impl Explode {
    /// An entry of `packed` bytes, `unpacked` when undone, imploded as
    /// `flags` (its general purpose flags) say.
    pub(crate) fn new(flags: u16, packed: u64, unpacked: u64) -> Explode {
        Explode {
            big_window: flags & 2 != 0,
            literals: flags & 4 != 0,
            packed_left: packed,
            unpacked_left: unpacked,
            held: Vec::new(),
            bit: 0,
            codes: None,
            window: Box::new([0; WINDOW]),
            at: 0,
            copying: None,
            failed: false,
        }
    }

    /// Takes what it can of `input` and undoes what it can into `output`;
    /// true once the entry's unpacked size has come out.
    pub(crate) fn step(&mut self, input: &[u8], output: &mut [u8]) -> Result<(Step, bool), String> {
        if self.failed {
            return Err("bad Implode data".into());
        }
        let room = HELD_MAX.saturating_sub(self.held.len() - self.bit / 8);
        let consumed = input.len().min(room).min(self.packed_left as usize);
        self.held.extend_from_slice(&input[..consumed]);
        self.packed_left -= consumed as u64;
        let mut produced = 0;
        if let Err(e) = self.run(output, &mut produced) {
            self.failed = true;
            // What came out before the bad data goes on first; the error
            // comes with the next call. So the pieces the data comes in
            // never change what comes out of it.
            if produced == 0 {
                return Err(e);
            }
        }
        // The bytes decoded are let go, a few at a time.
        if self.bit / 8 > HELD_MAX / 2 {
            self.held.drain(..self.bit / 8);
            self.bit %= 8;
        }
        let step = Step { consumed, produced };
        Ok((step, self.unpacked_left == 0 && self.copying.is_none()))
    }

    /// Undoes what it can into `output`, counting in `produced` what it
    /// put there, also when it then meets bad data.
    fn run(&mut self, output: &mut [u8], produced: &mut usize) -> Result<(), String> {
        let whole = self.packed_left == 0;
        if self.codes.is_none() && !self.read_codes(whole)? {
            return Ok(());
        }
        loop {
            if let Some((distance, left)) = self.copying {
                let n = left.min(output.len() - *produced);
                for out in &mut output[*produced..*produced + n] {
                    let byte = self.window[(self.at + WINDOW - distance) % WINDOW];
                    *out = byte;
                    self.put(byte);
                }
                *produced += n;
                self.copying = (left > n).then_some((distance, left - n));
                if left > n {
                    return Ok(());
                }
            }
            if self.unpacked_left == 0 || *produced == output.len() {
                return Ok(());
            }
            let held_bits = self.held.len() * 8 - self.bit;
            if held_bits < SYMBOL_BITS && !whole {
                return Ok(());
            }
            match self.symbol()? {
                None if whole => return Err("Implode data cut short".into()),
                None => return Ok(()),
                Some(Symbol::Literal(byte)) => {
                    output[*produced] = byte;
                    *produced += 1;
                    self.put(byte);
                }
                Some(Symbol::Match { distance, length }) => {
                    let length = length.min(self.unpacked_left as usize);
                    self.copying = Some((distance, length));
                }
            }
        }
    }

    /// Puts one byte out: into the window, and off what is still to give.
    fn put(&mut self, byte: u8) {
        self.window[self.at] = byte;
        self.at = (self.at + 1) % WINDOW;
        self.unpacked_left -= 1;
    }

    /// Reads the codes at the stream's start once they are all held
    /// (`whole`: all the packed bytes are); false while they are not.
    fn read_codes(&mut self, whole: bool) -> Result<bool, String> {
        let mut from = 0;
        let mut next = |n: usize| -> Result<Option<Code>, String> {
            match Code::read(&self.held[from..], n)? {
                Some((code, len)) => {
                    from += len;
                    Ok(Some(code))
                }
                None if whole => Err("Implode data cut short in its codes".into()),
                None => Ok(None),
            }
        };
        let literal = match self.literals {
            true => match next(256)? {
                Some(code) => Some(code),
                None => return Ok(false),
            },
            false => None,
        };
        let (Some(length), Some(distance)) = (next(64)?, next(64)?) else {
            return Ok(false);
        };
        self.codes = Some(Codes {
            literal,
            length,
            distance,
        });
        self.bit = from * 8;
        Ok(true)
    }

    /// The next literal or match; `Ok(None)` when the held bits end
    /// inside it (they are then read again from its start).
    fn symbol(&mut self) -> Result<Option<Symbol>, String> {
        let codes = self.codes.as_ref().expect("read before any symbol");
        let mut bits = Bits {
            bytes: &self.held,
            bit: self.bit,
        };
        let symbol = bits.implode_symbol(codes, self.big_window)?;
        if symbol.is_some() {
            self.bit = bits.bit;
        }
        Ok(symbol)
    }
}

impl Bits<'_> {
    /// A literal (its flag bit 1, then the byte, coded or as it is) or a
    /// match (flag 0, the distance's low 6 or 7 bits as they are, its high
    /// 6 coded, the length coded, and a byte more at the longest code).
    fn implode_symbol(
        &mut self,
        codes: &Codes,
        big_window: bool,
    ) -> Result<Option<Symbol>, String> {
        let Some(flag) = self.take(1) else {
            return Ok(None);
        };
        if flag == 1 {
            let byte = match &codes.literal {
                Some(code) => self.symbol(code)?,
                None => self.take(8).map(|b| b as u8),
            };
            return Ok(byte.map(Symbol::Literal));
        }
        let low_bits = if big_window { 7 } else { 6 };
        let Some(low) = self.take(low_bits) else {
            return Ok(None);
        };
        let Some(high) = self.symbol(&codes.distance)? else {
            return Ok(None);
        };
        let Some(mut length) = self.symbol(&codes.length)?.map(usize::from) else {
            return Ok(None);
        };
        if length == 63 {
            let Some(extra) = self.take(8) else {
                return Ok(None);
            };
            length += extra;
        }
        // The shortest match: 3 bytes with a literal code, else 2.
        length += if codes.literal.is_some() { 3 } else { 2 };
        let distance = (usize::from(high) << low_bits | low) + 1;
        Ok(Some(Symbol::Match { distance, length }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Undoes `packed` fed `piece` bytes at a time into outputs of
    /// `out` bytes: what came out, and whether the data came to its end
    /// or why not.
    fn exploded(
        packed: &[u8],
        flags: u16,
        size: u64,
        piece: usize,
        out: usize,
    ) -> (Vec<u8>, Result<(), String>) {
        let mut e = Explode::new(flags, packed.len() as u64, size);
        let mut unpacked = Vec::new();
        let mut buf = vec![0; out];
        let mut rest = packed;
        loop {
            let n = rest.len().min(piece);
            let (step, ended) = match e.step(&rest[..n], &mut buf) {
                Ok(next) => next,
                Err(e) => return (unpacked, Err(e)),
            };
            unpacked.extend_from_slice(&buf[..step.produced]);
            rest = &rest[step.consumed..];
            if ended {
                return (unpacked, Ok(()));
            }
            if step.consumed == 0 && step.produced == 0 {
                let stuck = format!("stuck after {} bytes", unpacked.len());
                return (unpacked, Err(stuck));
            }
        }
    }

    /// What `packed` undoes to, when it comes to its end.
    fn explode(
        packed: &[u8],
        flags: u16,
        size: u64,
        piece: usize,
        out: usize,
    ) -> Result<Vec<u8>, String> {
        let (unpacked, end) = exploded(packed, flags, size, piece, out);
        end.map(|()| unpacked)
    }

    /// The entries of a zip whose local headers give their sizes: name,
    /// flags, packed data, size and CRC-32.
    fn entries(zip: &[u8]) -> Vec<(String, u16, &[u8], u64, u32)> {
        let u16_at = |at: usize| u16::from_le_bytes(zip[at..at + 2].try_into().unwrap());
        let u32_at = |at: usize| u32::from_le_bytes(zip[at..at + 4].try_into().unwrap());
        let mut found = Vec::new();
        let mut at = 0;
        while zip[at..].starts_with(b"PK\x03\x04") {
            let (packed, size) = (u32_at(at + 18) as usize, u32_at(at + 22));
            let name_at = at + 30;
            let data_at = name_at + usize::from(u16_at(at + 26)) + usize::from(u16_at(at + 28));
            let name =
                String::from_utf8_lossy(&zip[name_at..name_at + usize::from(u16_at(at + 26))]);
            found.push((
                name.into_owned(),
                u16_at(at + 6),
                &zip[data_at..data_at + packed],
                u64::from(size),
                u32_at(at + 14),
            ));
            at = data_at + packed;
        }
        found
    }

    #[test]
    fn imploded_entries_come_out_whole_in_any_pieces() {
        // Made by hwzip 2.3's implode (hanshq.net), in all four ways: a
        // window of 4 or 8 KiB, literals coded or not; the data has a run
        // of 700 bytes (lengths past the longest code) and a repeat over
        // 6,000 bytes back. unzip -t and 7-Zip find them sound. And the
        // imploded entries of two zips hwzip wrote itself.
        let zips: [&[u8]; 3] = [
            include_bytes!("../../tests/fixtures/implode-variants.zip"),
            include_bytes!("../../tests/fixtures/eicar-zip64-in-implode.zip"),
            include_bytes!("../../tests/fixtures/eicar-deb-implode.zip"),
        ];
        let mut flags_seen = Vec::new();
        for zip in zips {
            for (name, flags, packed, size, crc) in entries(zip) {
                flags_seen.push(flags & 6);
                for (piece, out) in [(1, 1), (3, 7), (64, 100), (packed.len(), 64 << 10)] {
                    let unpacked = explode(packed, flags, size, piece, out)
                        .unwrap_or_else(|e| panic!("{name} in pieces of {piece}: {e}"));
                    assert_eq!(unpacked.len() as u64, size, "{name}");
                    assert_eq!(crate::tests::crc32(&unpacked), crc, "{name}");
                }
                // Cut short, or damaged in its codes.
                assert!(explode(&packed[..packed.len() / 2], flags, size, 50, 50).is_err());
                let mut damaged = packed.to_vec();
                damaged[0] = 0;
                assert!(explode(&damaged, flags, size, 50, 50).is_err(), "{name}");
            }
        }
        flags_seen.sort_unstable();
        flags_seen.dedup();
        assert_eq!(flags_seen, [0, 2, 4, 6]);
    }

    #[test]
    fn what_comes_out_before_bad_data_does_not_depend_on_the_pieces() {
        // A byte of eicar-zip64-in-implode.zip's first entry changed, as
        // the fuzzer changed it: the output up to the bad code went out in
        // small pieces and was lost in one large one.
        let zip = include_bytes!("../../tests/fixtures/eicar-zip64-in-implode.zip");
        let (_, flags, packed, size, _) = entries(zip).remove(0);
        let mut damaged = packed.to_vec();
        damaged[499 - 39] = 165;
        let (whole, end) = exploded(&damaged, flags, size, damaged.len(), 64 << 10);
        assert!(end.is_err());
        assert!(!whole.is_empty() && (whole.len() as u64) < size);
        for (piece, out) in [(1, 1), (7, 100), (64, 64 << 10)] {
            assert_eq!(exploded(&damaged, flags, size, piece, out).0, whole);
        }
    }

    #[test]
    fn codes_are_read_as_appnote_lays_them_out() {
        // 64 lengths of 6 bits: one byte of runs is not enough (16 at
        // most), four are.
        let code = [3, 0xf5, 0xf5, 0xf5, 0xf5];
        let (read, len) = Code::read(&code, 64).unwrap().unwrap();
        assert_eq!((read.counts[6], len), (64, 5));
        assert!(Code::read(&code[..3], 64).unwrap().is_none());
        // Too few lengths, too many, and more codes of a length than fit.
        assert!(Code::read(&[0, 0xf5], 64).is_err());
        assert!(Code::read(&[4, 0xf5, 0xf5, 0xf5, 0xf5, 0xf5], 64).is_err());
        assert!(Code::read(&[3, 0xf4, 0xf5, 0xf5, 0xf5], 64).is_err());
    }

    #[test]
    fn damaged_or_cut_data_is_an_error() {
        // Codes that are not whole when the data ends.
        assert!(explode(&[3, 0xf5], 0, 10, 100, 100).is_err());
        let mut e = Explode::new(0, 2, 10);
        let mut out = [0; 10];
        assert!(e.step(&[3, 0xf5], &mut out).is_err());
        assert!(e.step(&[], &mut out).is_err(), "stays failed");
    }
}
