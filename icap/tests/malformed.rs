//! Malformed input: each kind of defect gives its own error and the ICAP
//! status a server answers with, whether the bytes arrive whole or one by one.

mod support;

use icap::{Error, Limits, Request, StatusCode};
use support::{bytewise, read_stream};

const REQ_HEAD: &str = "GET http://example.com/file HTTP/1.1\r\nHost: example.com\r\n\r\n";
const RES_HEAD: &str = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n";

/// A well-formed RESPMOD with a 4-byte body, with `extra` ICAP header lines
/// and `body` in place of the usual chunks.
fn respmod(extra: &str, body: &str) -> Vec<u8> {
    let res_at = REQ_HEAD.len();
    let body_at = res_at + RES_HEAD.len();
    format!(
        "RESPMOD icap://127.0.0.1:1344/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\n{extra}\
         Encapsulated: req-hdr=0, res-hdr={res_at}, res-body={body_at}\r\n\r\n{REQ_HEAD}{RES_HEAD}{body}"
    )
    .into_bytes()
}

/// A RESPMOD head with the given `Encapsulated` value and raw HTTP heads.
fn with_encapsulated(value: &str, heads: &str) -> Vec<u8> {
    format!("RESPMOD icap://h/avscan ICAP/1.0\r\nHost: h\r\nEncapsulated: {value}\r\n\r\n{heads}")
        .into_bytes()
}

fn reqmod_line(line: &str) -> Vec<u8> {
    format!("{line}\r\nHost: h\r\nEncapsulated: null-body=0\r\n\r\n").into_bytes()
}

const GOOD_BODY: &str = "4\r\nbody\r\n0\r\n\r\n";

fn cases() -> Vec<(&'static str, Vec<u8>, Error)> {
    use Error::*;
    let both = format!("{REQ_HEAD}{RES_HEAD}");
    let mut bomb = String::new();
    for i in 0..300 {
        bomb.push_str(&format!("X-H{i}: v\r\n"));
    }
    vec![
        (
            "request line with one word",
            reqmod_line("REQMOD"),
            InvalidRequestLine("expected METHOD URI VERSION"),
        ),
        (
            "request line with two spaces",
            reqmod_line("REQMOD  icap://h/s ICAP/1.0"),
            InvalidRequestLine("expected METHOD URI VERSION"),
        ),
        (
            "unknown method",
            reqmod_line("GET icap://h/s ICAP/1.0"),
            UnknownMethod,
        ),
        (
            "method in lower case",
            reqmod_line("reqmod icap://h/s ICAP/1.0"),
            UnknownMethod,
        ),
        (
            "ICAP version 2.0",
            reqmod_line("REQMOD icap://h/s ICAP/2.0"),
            UnsupportedVersion,
        ),
        (
            "HTTP instead of ICAP",
            reqmod_line("REQMOD icap://h/s HTTP/1.1"),
            InvalidVersion,
        ),
        (
            "http:// URI",
            reqmod_line("REQMOD http://h/s ICAP/1.0"),
            InvalidUri("scheme is not icap or icaps"),
        ),
        (
            "port out of range",
            reqmod_line("REQMOD icap://h:70000/s ICAP/1.0"),
            InvalidUri("invalid port"),
        ),
        (
            "userinfo in URI",
            reqmod_line("REQMOD icap://me@h/s ICAP/1.0"),
            InvalidUri("userinfo"),
        ),
        ("endless request line", vec![b'A'; 20_000], StartLineTooLong),
        (
            "binary junk",
            vec![0xff; 64],
            InvalidRequestLine("character not allowed in a request line"),
        ),
        (
            "control character in the URI",
            reqmod_line("REQMOD icap://h/s\x01 ICAP/1.0"),
            InvalidRequestLine("character not allowed in a request line"),
        ),
        (
            "bare LF",
            b"OPTIONS icap://h/s ICAP/1.0\nHost: h\n\n".to_vec(),
            BareLineFeed,
        ),
        (
            "obsolete line folding",
            respmod("X-A: one\r\n  two\r\n", GOOD_BODY),
            ObsoleteLineFolding,
        ),
        (
            "header without colon",
            respmod("NoColonHere\r\n", GOOD_BODY),
            InvalidHeaderLine,
        ),
        (
            "space in header name",
            respmod("X Bad: v\r\n", GOOD_BODY),
            InvalidHeaderName,
        ),
        (
            "control character in value",
            respmod("X-A: a\x07b\r\n", GOOD_BODY),
            InvalidHeaderValue,
        ),
        ("header bomb", respmod(&bomb, GOOD_BODY), TooManyHeaders),
        (
            "head over 16 KiB",
            respmod(&format!("X-Big: {}\r\n", "b".repeat(17_000)), GOOD_BODY),
            HeadTooLarge,
        ),
        (
            "RESPMOD without Encapsulated",
            b"RESPMOD icap://h/s ICAP/1.0\r\nHost: h\r\n\r\n".to_vec(),
            MissingEncapsulated,
        ),
        (
            "Encapsulated twice",
            respmod("Encapsulated: null-body=0\r\n", GOOD_BODY),
            DuplicateEncapsulated,
        ),
        (
            "Encapsulated garbled",
            with_encapsulated("req-hdr:0", ""),
            InvalidEncapsulated("not a list of section=offset"),
        ),
        (
            "unknown section",
            with_encapsulated("req-hdr=0, body=60", REQ_HEAD),
            InvalidEncapsulated("unknown section name"),
        ),
        (
            "offset overflows",
            with_encapsulated("req-hdr=0, null-body=999999999999999999999", REQ_HEAD),
            InvalidEncapsulated("offset too large"),
        ),
        (
            "section repeated",
            with_encapsulated("req-hdr=0, req-hdr=60, null-body=90", REQ_HEAD),
            InvalidEncapsulated("section repeated"),
        ),
        (
            "offsets out of order",
            with_encapsulated("req-hdr=0, res-hdr=60, res-body=50", &both),
            EncapsulatedOutOfOrder,
        ),
        (
            "first offset not 0",
            with_encapsulated("req-hdr=5, null-body=65", REQ_HEAD),
            EncapsulatedFirstOffset,
        ),
        (
            "res-hdr before req-hdr",
            with_encapsulated("res-hdr=0, req-hdr=40, null-body=100", &both),
            EncapsulatedSectionOrder,
        ),
        (
            "res-hdr in REQMOD",
            b"REQMOD icap://h/s ICAP/1.0\r\nEncapsulated: res-hdr=0, null-body=38\r\n\r\n".to_vec(),
            EncapsulatedSectionNotAllowed,
        ),
        (
            "no body section",
            with_encapsulated("req-hdr=0, res-hdr=58", &both),
            EncapsulatedNoBody,
        ),
        (
            "offset past the data",
            with_encapsulated(
                &format!("req-hdr=0, null-body={}", REQ_HEAD.len() + 40),
                REQ_HEAD,
            ),
            EncapsulatedOffsetMismatch,
        ),
        (
            "offset inside the head",
            with_encapsulated("req-hdr=0, null-body=20", REQ_HEAD),
            EncapsulatedOffsetMismatch,
        ),
        (
            "HTTP heads too large",
            with_encapsulated("req-hdr=0, null-body=300000", REQ_HEAD),
            HttpHeadTooLarge,
        ),
        (
            "garbage HTTP head",
            with_encapsulated("req-hdr=0, null-body=10", "GET \x01\x02 HTTP/1.1\r\n\r\n"),
            InvalidHttpHead("token"),
        ),
        (
            "Preview not a number",
            respmod("Preview: many\r\n", GOOD_BODY),
            InvalidPreview,
        ),
        (
            "Preview given twice, differently",
            respmod("Preview: 4\r\nPreview: 8\r\n", GOOD_BODY),
            InvalidPreview,
        ),
        (
            "Preview too large",
            respmod("Preview: 99999999\r\n", GOOD_BODY),
            PreviewTooLarge,
        ),
        (
            "chunk size not hex",
            respmod("", "zz\r\nbody\r\n0\r\n\r\n"),
            InvalidChunkSize,
        ),
        (
            "chunk size overflows",
            respmod("", "10000000000000000\r\nbody\r\n0\r\n\r\n"),
            ChunkSizeOverflow,
        ),
        (
            "endless chunk-size line",
            respmod("", &format!("4;x={}", "y".repeat(5000))),
            ChunkLineTooLong,
        ),
        (
            "chunk data without CRLF",
            respmod("", "4\r\nbodyX0\r\n\r\n"),
            MissingChunkCrlf,
        ),
        (
            "malformed chunk extension",
            respmod("", "4;=x\r\nbody\r\n0\r\n\r\n"),
            InvalidChunkExtension,
        ),
        (
            "ieof on a data chunk",
            respmod("Preview: 4\r\n", "4; ieof\r\nbody\r\n0\r\n\r\n"),
            InvalidChunkExtension,
        ),
        (
            "preview longer than announced",
            respmod("Preview: 2\r\n", GOOD_BODY),
            PreviewExceeded,
        ),
        (
            "use-original-body not a number",
            respmod("", "4\r\nbody\r\n0; use-original-body=x\r\n\r\n"),
            InvalidUseOriginalBody,
        ),
        (
            "malformed trailer",
            respmod("", "4\r\nbody\r\n0\r\nno colon\r\n\r\n"),
            InvalidTrailer,
        ),
        ("body cut short", respmod("", "4\r\nbo"), Truncated),
        (
            "head cut short",
            respmod("", GOOD_BODY)[..60].to_vec(),
            Truncated,
        ),
    ]
}

#[test]
fn each_defect_has_its_own_error_and_status() {
    let cases = cases();
    assert!(cases.len() >= 30);
    let mut kinds = std::collections::HashSet::new();
    for (what, input, want) in &cases {
        let whole = read_stream::<Request>(&[input], &Limits::DEFAULT);
        assert_eq!(whole.as_ref().err(), Some(want), "{what}: whole");
        let split = read_stream::<Request>(&bytewise(input), &Limits::DEFAULT);
        assert_eq!(split.err(), Some(*want), "{what}: byte by byte");
        let status = want.status();
        let expected = match want {
            Error::UnknownMethod => StatusCode::NOT_IMPLEMENTED,
            Error::UnsupportedVersion => StatusCode::VERSION_NOT_SUPPORTED,
            _ => StatusCode::BAD_REQUEST,
        };
        assert_eq!(status, expected, "{what}");
        assert!(!want.to_string().is_empty());
        kinds.insert(*want);
    }
    assert!(kinds.len() >= 30, "only {} distinct errors", kinds.len());
}

#[test]
fn the_well_formed_base_parses() {
    let seen = read_stream::<Request>(&[&respmod("", GOOD_BODY)], &Limits::DEFAULT).unwrap();
    assert_eq!(seen.len(), 3);
    let seen = read_stream::<Request>(
        &[&respmod("Preview: 4\r\n", "4\r\nbody\r\n0; ieof\r\n\r\n")],
        &Limits::DEFAULT,
    )
    .unwrap();
    assert_eq!(seen.len(), 3);
}
