//! rpm packages, whose payload is taken apart from the rest as it arrives
//! (by [`super::ar::Splitter`], which tells the two kinds by their magic)
//! so that it is scanned as a file of its own.
//!
//! clamd 1.4.6 does not open rpm: a package built by rpmbuild with EICAR
//! in its payload was OK, whether the payload was packed by gzip, xz,
//! bzip2 or zstd (Fedora and RHEL pack with zstd and xz). The payload alone
//! is a packed cpio archive, which clamd unpacks (zstd is unpacked by the
//! scan itself).
//!
//! A package is a 96-byte lead, then a signature header padded to a
//! multiple of 8 bytes, then the header, then the payload to the end. Each
//! header is a 16-byte intro (magic `8e ad e8 01`, 4 reserved bytes, the
//! count of index entries and the length of the data, both big-endian),
//! 16 bytes per index entry, and the data. A header that is not one stops
//! the split: the bytes from there on are scanned with the rest.

use super::ar::Event;

/// What a package begins with: the lead's magic.
pub const MAGIC: [u8; 4] = [0xed, 0xab, 0xee, 0xdb];
const LEAD: u64 = 96;
const HEADER_MAGIC: [u8; 4] = [0x8e, 0xad, 0xe8, 0x01];
const INTRO: usize = 16;

#[derive(Debug)]
enum State {
    /// The rest of the lead, or of a header's index and data: this many
    /// bytes, then `next`.
    Skip { left: u64, next: Next },
    /// A header's intro, `intro` holding what of it has come.
    Intro { signature: bool },
    /// The payload, to the end.
    Payload,
    /// A header that is not one: nothing more to split.
    Done,
}

#[derive(Debug, Clone, Copy)]
enum Next {
    Intro { signature: bool },
    Payload,
}

/// Walks a package from just after its magic.
#[derive(Debug)]
pub(super) struct Walk {
    state: State,
    intro: Vec<u8>,
    /// Bytes of the package walked, its magic among them.
    at: u64,
}

impl Walk {
    /// A walk that has seen the magic.
    pub(super) fn after_magic() -> Walk {
        Walk {
            state: State::Skip {
                left: LEAD - MAGIC.len() as u64,
                next: Next::Intro { signature: true },
            },
            intro: Vec::new(),
            at: MAGIC.len() as u64,
        }
    }

    /// Whether the split has stopped at a header that is not one.
    pub(super) fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Splits the next bytes; what they hold goes to `events`. Returns how
    /// many it took: once done, the rest of `data` is the caller's.
    pub(super) fn feed(&mut self, data: &[u8], events: &mut Vec<Event>) -> usize {
        let mut rest = data;
        while !rest.is_empty() {
            let data = rest;
            let n = match &mut self.state {
                State::Done => break,
                State::Payload => {
                    events.push(Event::Data(data.to_vec()));
                    data.len()
                }
                State::Skip { left, next } => {
                    let n = (*left).min(data.len() as u64) as usize;
                    events.push(Event::Rest(data[..n].to_vec()));
                    *left -= n as u64;
                    if *left == 0 {
                        self.state = match *next {
                            Next::Intro { signature } => State::Intro { signature },
                            Next::Payload => {
                                events.push(Event::Start);
                                State::Payload
                            }
                        };
                    }
                    n
                }
                State::Intro { signature } => {
                    let signature = *signature;
                    let n = (INTRO - self.intro.len()).min(data.len());
                    self.intro.extend_from_slice(&data[..n]);
                    if self.intro.len() == INTRO {
                        self.state = self.header(signature, self.at + n as u64);
                        if matches!(self.state, State::Done) {
                            // Not a header: it goes on with what follows.
                            let held = self.intro.len() - n;
                            self.intro.truncate(held);
                            if held > 0 {
                                events.push(Event::Rest(std::mem::take(&mut self.intro)));
                            }
                            break;
                        }
                        events.push(Event::Rest(std::mem::take(&mut self.intro)));
                    }
                    n
                }
            };
            self.at += n as u64;
            rest = &data[n..];
        }
        data.len() - rest.len()
    }

    /// What follows a whole intro, which ends at offset `end`: the
    /// header's index and data, then the signature header's padding.
    fn header(&self, signature: bool, end: u64) -> State {
        if self.intro[..4] != HEADER_MAGIC {
            return State::Done;
        }
        let word = |at: usize| {
            u64::from(u32::from_be_bytes(
                self.intro[at..at + 4].try_into().unwrap(),
            ))
        };
        let mut left = 16 * word(8) + word(12);
        if signature {
            let end = end + left;
            left += end.next_multiple_of(8) - end;
        }
        let next = match signature {
            true => Next::Intro { signature: false },
            false => Next::Payload,
        };
        match left {
            0 => match next {
                Next::Intro { signature } => State::Intro { signature },
                // A header with nothing in it: no package.
                Next::Payload => State::Done,
            },
            left => State::Skip { left, next },
        }
    }

    /// Ends the body: the payload ends where the bytes did, and bytes held
    /// back go on.
    pub(super) fn finish(&mut self, events: &mut Vec<Event>) {
        if matches!(self.state, State::Payload) {
            events.push(Event::End);
        } else if !self.intro.is_empty() {
            events.push(Event::Rest(std::mem::take(&mut self.intro)));
        }
        self.state = State::Done;
    }
}
