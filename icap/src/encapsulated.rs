//! The `Encapsulated` header (RFC 3507 section 4.4) and the sections it lays out.
//!
//! `Encapsulated: req-hdr=0, res-hdr=137, res-body=296` says where each
//! encapsulated HTTP head starts, relative to the end of the ICAP head, and
//! which kind of body (if any) follows. This module parses and checks that
//! list, parses the heads it points at, and computes it again when encoding.

use nom::bytes::complete::take_while1;
use nom::character::complete::char;
use nom::sequence::{delimited, preceded};
use nom::{IResult, Parser};

use crate::http_head::{self, HttpRequestHead, HttpResponseHead};
use crate::syntax::{decimal, is_ows};
use crate::{Error, Limits};

/// One entry of the `Encapsulated` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Section {
    /// `req-hdr`: an HTTP request head.
    ReqHdr,
    /// `res-hdr`: an HTTP response head.
    ResHdr,
    /// `req-body`: the chunked body of the HTTP request.
    ReqBody,
    /// `res-body`: the chunked body of the HTTP response.
    ResBody,
    /// `opt-body`: the chunked body of an OPTIONS message.
    OptBody,
    /// `null-body`: no body follows.
    NullBody,
}

impl Section {
    /// The name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Section::ReqHdr => "req-hdr",
            Section::ResHdr => "res-hdr",
            Section::ReqBody => "req-body",
            Section::ResBody => "res-body",
            Section::OptBody => "opt-body",
            Section::NullBody => "null-body",
        }
    }

    fn from_name(name: &[u8]) -> Option<Section> {
        Some(match name {
            b"req-hdr" => Section::ReqHdr,
            b"res-hdr" => Section::ResHdr,
            b"req-body" => Section::ReqBody,
            b"res-body" => Section::ResBody,
            b"opt-body" => Section::OptBody,
            b"null-body" => Section::NullBody,
            _ => return None,
        })
    }

    /// Heads come first (request before response), the body last.
    fn rank(self) -> u8 {
        match self {
            Section::ReqHdr => 0,
            Section::ResHdr => 1,
            _ => 2,
        }
    }
}

/// Which body follows the encapsulated heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Body {
    /// `null-body`: there is none, and no chunk follows.
    Null,
    /// `req-body`.
    Request,
    /// `res-body`.
    Response,
    /// `opt-body`.
    Options,
}

impl Body {
    fn section(self) -> Section {
        match self {
            Body::Null => Section::NullBody,
            Body::Request => Section::ReqBody,
            Body::Response => Section::ResBody,
            Body::Options => Section::OptBody,
        }
    }
}

/// What an ICAP message carries after its own head: the HTTP heads and the
/// kind of body, as the `Encapsulated` header described them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sections {
    /// `req-hdr`, when present.
    pub request: Option<HttpRequestHead>,
    /// `res-hdr`, when present.
    pub response: Option<HttpResponseHead>,
    /// The body section that ends the list.
    pub body: Body,
}

impl Sections {
    /// No heads and no body: `Encapsulated: null-body=0`.
    pub const NULL: Sections = Sections {
        request: None,
        response: None,
        body: Body::Null,
    };

    /// True when chunks follow the heads.
    pub fn has_body(&self) -> bool {
        self.body != Body::Null
    }

    /// Writes the heads, and returns the `Encapsulated` value describing them.
    pub(crate) fn encode(&self, heads: &mut Vec<u8>) -> String {
        let mut value = String::with_capacity(48);
        let start = heads.len();
        let entry = |section: Section, offset: usize, value: &mut String| {
            if !value.is_empty() {
                value.push_str(", ");
            }
            value.push_str(section.as_str());
            value.push('=');
            value.push_str(&offset.to_string());
        };
        if let Some(req) = &self.request {
            entry(Section::ReqHdr, heads.len() - start, &mut value);
            http_head::encode_request_head(req, heads);
        }
        if let Some(res) = &self.response {
            entry(Section::ResHdr, heads.len() - start, &mut value);
            http_head::encode_response_head(res, heads);
        }
        entry(self.body.section(), heads.len() - start, &mut value);
        value
    }
}

/// Which sections a message may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rules {
    /// OPTIONS request or response: only `opt-body` or `null-body`.
    Options,
    /// REQMOD request: `[req-hdr] (req-body | null-body)`.
    Reqmod,
    /// RESPMOD request: `[req-hdr] [res-hdr] (res-body | null-body)`.
    Respmod,
    /// A response, whose method the parser does not know: any heads in order,
    /// any one body.
    Response,
}

impl Rules {
    fn allows(self, section: Section) -> bool {
        use Section::*;
        match self {
            Rules::Options => matches!(section, OptBody | NullBody),
            Rules::Reqmod => matches!(section, ReqHdr | ReqBody | NullBody),
            Rules::Respmod => matches!(section, ReqHdr | ResHdr | ResBody | NullBody),
            Rules::Response => true,
        }
    }
}

/// A checked `Encapsulated` list: heads in order, one body last, offsets
/// strictly increasing from 0. A valid list has at most three entries
/// (`req-hdr`, `res-hdr`, a body), so they are kept inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encapsulated {
    entries: [(Section, usize); 3],
    len: usize,
}

/// More raw entries than this cannot be valid (six section names exist).
const MAX_RAW_ENTRIES: usize = 8;

fn entry(i: &[u8]) -> IResult<&[u8], RawEntry<'_>> {
    let name = take_while1(|b: u8| b.is_ascii_alphabetic() || b == b'-');
    let offset = take_while1(|b: u8| b.is_ascii_digit());
    (name, char('='), offset).map(|(n, _, o)| (n, o)).parse(i)
}

/// A raw `name=offset` pair.
type RawEntry<'a> = (&'a [u8], &'a [u8]);

fn separator(i: &[u8]) -> IResult<&[u8], char> {
    delimited(take_while_ows, char(','), take_while_ows).parse(i)
}

fn take_while_ows(i: &[u8]) -> IResult<&[u8], &[u8]> {
    nom::bytes::complete::take_while(is_ows).parse(i)
}

impl Encapsulated {
    /// Parses and checks an `Encapsulated` value against the method's rules.
    pub(crate) fn parse(value: &[u8], rules: Rules) -> Result<Encapsulated, Error> {
        const SYNTAX: Error = Error::InvalidEncapsulated("not a list of section=offset");
        let mut raw = [(&b""[..], &b""[..]); MAX_RAW_ENTRIES];
        let (mut rest, first) = entry(value).map_err(|_| SYNTAX)?;
        raw[0] = first;
        let mut count = 1;
        while let Ok((after, next)) = preceded(separator, entry).parse(rest) {
            if count == MAX_RAW_ENTRIES {
                return Err(Error::InvalidEncapsulated("too many sections"));
            }
            raw[count] = next;
            count += 1;
            rest = after;
        }
        if !rest.is_empty() {
            return Err(SYNTAX);
        }
        let mut entries = [(Section::NullBody, 0); MAX_RAW_ENTRIES];
        for (slot, (name, offset)) in entries.iter_mut().zip(&raw[..count]) {
            let section = Section::from_name(name)
                .ok_or(Error::InvalidEncapsulated("unknown section name"))?;
            let offset = decimal(offset)
                .and_then(|o| usize::try_from(o).ok())
                .ok_or(Error::InvalidEncapsulated("offset too large"))?;
            *slot = (section, offset);
        }
        Self::check(&entries[..count], rules)
    }

    fn check(entries: &[(Section, usize)], rules: Rules) -> Result<Encapsulated, Error> {
        let mut previous: Option<(Section, usize)> = None;
        for &(section, offset) in entries {
            if entries.iter().filter(|(s, _)| *s == section).count() > 1 {
                return Err(Error::InvalidEncapsulated("section repeated"));
            }
            match previous {
                None if offset != 0 => return Err(Error::EncapsulatedFirstOffset),
                Some((prev, _)) if prev.rank() >= section.rank() => {
                    return Err(Error::EncapsulatedSectionOrder)
                }
                Some((_, prev_offset)) if offset <= prev_offset => {
                    return Err(Error::EncapsulatedOutOfOrder)
                }
                _ => {}
            }
            if !rules.allows(section) {
                return Err(Error::EncapsulatedSectionNotAllowed);
            }
            previous = Some((section, offset));
        }
        match previous {
            // Ranks strictly increase and end at a body: at most three entries.
            Some((last, _)) if last.rank() == 2 => {
                let mut kept = [(Section::NullBody, 0); 3];
                kept[..entries.len()].copy_from_slice(entries);
                Ok(Encapsulated {
                    entries: kept,
                    len: entries.len(),
                })
            }
            _ => Err(Error::EncapsulatedNoBody),
        }
    }

    /// The entries in order, with their offsets.
    pub fn entries(&self) -> &[(Section, usize)] {
        &self.entries[..self.len]
    }

    /// Where the body (or null-body) starts: the total length of the heads.
    pub fn heads_len(&self) -> usize {
        self.entries().last().map_or(0, |(_, offset)| *offset)
    }

    /// Parses the heads this list points at. `heads` must be exactly
    /// [`heads_len`](Self::heads_len) bytes long.
    pub(crate) fn parse_sections(&self, heads: &[u8], limits: &Limits) -> Result<Sections, Error> {
        let mut sections = Sections {
            request: None,
            response: None,
            body: Body::Null,
        };
        for pair in self.entries().windows(2) {
            let [(section, start), (_, end)] = [pair[0], pair[1]];
            let bytes = &heads[start..end];
            match section {
                Section::ReqHdr => {
                    sections.request = Some(http_head::parse_request_head(bytes, limits)?)
                }
                Section::ResHdr => {
                    sections.response = Some(http_head::parse_response_head(bytes, limits)?)
                }
                _ => unreachable!("check() puts the one body section last"),
            }
        }
        sections.body = match self.entries().last().map(|(s, _)| *s) {
            Some(Section::ReqBody) => Body::Request,
            Some(Section::ResBody) => Body::Response,
            Some(Section::OptBody) => Body::Options,
            _ => Body::Null,
        };
        Ok(sections)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str, rules: Rules) -> Result<Vec<(Section, usize)>, Error> {
        Encapsulated::parse(v.as_bytes(), rules).map(|e| e.entries().to_vec())
    }

    #[test]
    fn accepts_the_rfc_examples() {
        assert_eq!(
            parse("req-hdr=0, res-hdr=137, res-body=296", Rules::Respmod),
            Ok(vec![
                (Section::ReqHdr, 0),
                (Section::ResHdr, 137),
                (Section::ResBody, 296)
            ])
        );
        assert_eq!(
            parse("req-hdr=0,null-body=170", Rules::Reqmod)
                .unwrap()
                .len(),
            2
        );
        assert_eq!(parse("null-body=0", Rules::Options).unwrap().len(), 1);
        assert_eq!(
            parse("res-hdr=0, res-body=50", Rules::Response)
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn rejects_each_defect_with_its_own_error() {
        use Error::*;
        let r = Rules::Respmod;
        assert_eq!(
            parse("", r),
            Err(InvalidEncapsulated("not a list of section=offset"))
        );
        assert_eq!(
            parse("req-hdr=0 res-body=9", r),
            Err(InvalidEncapsulated("not a list of section=offset"))
        );
        assert_eq!(
            parse("foo-hdr=0, null-body=5", r),
            Err(InvalidEncapsulated("unknown section name"))
        );
        assert_eq!(
            parse("req-hdr=0, res-body=99999999999999999999999", r),
            Err(InvalidEncapsulated("offset too large"))
        );
        assert_eq!(
            parse("req-hdr=0, req-hdr=5, null-body=9", r),
            Err(InvalidEncapsulated("section repeated"))
        );
        assert_eq!(
            parse("req-hdr=3, null-body=9", r),
            Err(EncapsulatedFirstOffset)
        );
        assert_eq!(
            parse("req-hdr=0, res-hdr=50, res-body=40", r),
            Err(EncapsulatedOutOfOrder)
        );
        assert_eq!(
            parse("res-hdr=0, req-hdr=50, res-body=90", r),
            Err(EncapsulatedSectionOrder)
        );
        assert_eq!(
            parse("res-body=0, res-hdr=10", r),
            Err(EncapsulatedSectionOrder)
        );
        assert_eq!(parse("req-hdr=0, res-hdr=50", r), Err(EncapsulatedNoBody));
        assert_eq!(
            parse("req-hdr=0, res-hdr=50, null-body=90", Rules::Reqmod),
            Err(EncapsulatedSectionNotAllowed)
        );
        assert_eq!(
            parse("opt-body=0", Rules::Respmod),
            Err(EncapsulatedSectionNotAllowed)
        );
    }
}
