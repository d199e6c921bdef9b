//! Property tests: arbitrary valid messages survive encode and parse; arbitrary
//! bytes never panic; the parser never asks a caller to hold more than
//! [`Limits`] allows.

mod support;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use icap::{
    encode_chunk, encode_last_chunk, encode_request, encode_response, parse_request,
    parse_response, Allow, Body, ChunkedDecoder, Event, HttpRequestHead, HttpResponseHead, IcapUri,
    LastChunk, Limits, Method, Request, Response, Scheme, Sections, StatusCode,
};
use proptest::prelude::*;
use support::read_stream;

fn header_map(reserved: &'static [&'static str]) -> impl Strategy<Value = HeaderMap> {
    let name = "[A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]{0,15}";
    let value = "([!-~]([ !-~]{0,20}[!-~])?)?";
    prop::collection::vec((name, value), 0..8).prop_map(move |pairs| {
        let mut map = HeaderMap::new();
        for (n, v) in pairs {
            let name = HeaderName::from_bytes(n.as_bytes()).unwrap();
            if !reserved.contains(&name.as_str()) {
                map.append(name, HeaderValue::from_str(&v).unwrap());
            }
        }
        map
    })
}

fn version() -> impl Strategy<Value = http::Version> {
    prop_oneof![Just(http::Version::HTTP_10), Just(http::Version::HTTP_11)]
}

fn http_request() -> impl Strategy<Value = HttpRequestHead> {
    (
        "[A-Z]{1,8}",
        "(http://[a-z]{1,8}(:[0-9]{2,4})?)?/[A-Za-z0-9/._~%?=&-]{0,30}",
        version(),
        header_map(&[]),
    )
        .prop_map(|(m, target, version, headers)| HttpRequestHead {
            method: http::Method::from_bytes(m.as_bytes()).unwrap(),
            target,
            version,
            headers,
        })
}

fn http_response() -> impl Strategy<Value = HttpResponseHead> {
    (
        100u16..600,
        "([A-Za-z]([A-Za-z ]{0,15}[A-Za-z])?)?",
        version(),
        header_map(&[]),
    )
        .prop_map(|(status, reason, version, headers)| HttpResponseHead {
            version,
            status: http::StatusCode::from_u16(status).unwrap(),
            reason,
            headers,
        })
}

fn sections(method: Method) -> BoxedStrategy<Option<Sections>> {
    match method {
        Method::Options => prop_oneof![
            Just(None),
            Just(Some(Sections::NULL)),
            Just(Some(Sections {
                body: Body::Options,
                ..Sections::NULL
            })),
        ]
        .boxed(),
        Method::Reqmod => (prop::option::of(http_request()), any::<bool>())
            .prop_map(|(request, body)| {
                let body = if body { Body::Request } else { Body::Null };
                Some(Sections {
                    request,
                    response: None,
                    body,
                })
            })
            .boxed(),
        Method::Respmod => (
            prop::option::of(http_request()),
            prop::option::of(http_response()),
            any::<bool>(),
        )
            .prop_map(|(request, response, body)| {
                let body = if body { Body::Response } else { Body::Null };
                Some(Sections {
                    request,
                    response,
                    body,
                })
            })
            .boxed(),
    }
}

fn icap_uri() -> impl Strategy<Value = IcapUri> {
    (
        any::<bool>(),
        "[a-z][a-z0-9.-]{0,15}",
        prop::option::of(1u16..),
        "[a-z_/]{0,12}",
        prop::option::of("[a-z=&]{0,10}"),
    )
        .prop_map(|(tls, host, port, service, query)| IcapUri {
            scheme: if tls { Scheme::Icaps } else { Scheme::Icap },
            host,
            port,
            service,
            query,
        })
}

fn request() -> impl Strategy<Value = Request> {
    let method = prop_oneof![
        Just(Method::Options),
        Just(Method::Reqmod),
        Just(Method::Respmod)
    ];
    method.prop_flat_map(|method| {
        (
            icap_uri(),
            header_map(&["encapsulated", "preview", "allow"]),
            prop::option::of(0u64..=Limits::DEFAULT.max_preview),
            any::<(bool, bool, bool)>(),
            sections(method),
        )
            .prop_map(
                move |(uri, headers, preview, (a, b, c), sections)| Request {
                    method,
                    uri,
                    headers,
                    preview,
                    allow: Allow {
                        no_content: a,
                        partial: b,
                        trailers: c,
                    },
                    sections,
                },
            )
    })
}

fn response() -> impl Strategy<Value = Response> {
    let sections = prop_oneof![
        Just(None),
        Just(Some(Sections::NULL)),
        (
            prop::option::of(http_request()),
            prop::option::of(http_response()),
            prop_oneof![
                Just(Body::Null),
                Just(Body::Request),
                Just(Body::Response),
                Just(Body::Options)
            ]
        )
            .prop_map(|(request, response, body)| Some(Sections {
                request,
                response,
                body
            })),
    ];
    (
        100u16..600,
        "([A-Za-z]([A-Za-z ]{0,15}[A-Za-z])?)?",
        header_map(&["encapsulated"]),
        sections,
    )
        .prop_map(|(status, reason, headers, sections)| Response {
            status: StatusCode(status),
            reason,
            headers,
            sections,
        })
}

fn mutated_fixture() -> impl Strategy<Value = Vec<u8>> {
    let fixtures: Vec<Vec<u8>> = [
        "squid-0.client",
        "c-icap-client-respmod-preview.client",
        "c-icap-client-long-headers.client",
    ]
    .iter()
    .map(|n| std::fs::read(format!("{}/tests/fixtures/{n}", env!("CARGO_MANIFEST_DIR"))).unwrap())
    .collect();
    (
        0..fixtures.len(),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    )
        .prop_map(move |(which, edits)| {
            let mut bytes = fixtures[which].clone();
            for (at, byte, kind) in edits {
                let i = at.index(bytes.len().max(1));
                match kind {
                    0 if i < bytes.len() => bytes[i] = byte,
                    1 => bytes.insert(i.min(bytes.len()), byte),
                    _ if i < bytes.len() => {
                        bytes.remove(i);
                    }
                    _ => {}
                }
            }
            bytes
        })
}

fn small_limits() -> impl Strategy<Value = Limits> {
    (
        16usize..2048,
        0usize..4096,
        1usize..40,
        3usize..64,
        0u64..4096,
        2usize..256,
    )
        .prop_map(
            |(icap, http, headers, chunk_line, preview, trailers)| Limits {
                max_icap_head: icap,
                max_http_head: http,
                max_headers: headers,
                max_chunk_line: chunk_line,
                max_preview: preview,
                max_trailers: trailers,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn requests_encode_and_parse_back_equal(req in request()) {
        let mut out = Vec::new();
        encode_request(&req, &mut out);
        let parsed = parse_request(&out, &Limits::DEFAULT);
        prop_assert_eq!(parsed, Ok(Some((req, out.len()))));
    }

    #[test]
    fn responses_encode_and_parse_back_equal(res in response()) {
        let mut out = Vec::new();
        encode_response(&res, &mut out);
        prop_assert_eq!(parse_response(&out, &Limits::DEFAULT), Ok(Some((res, out.len()))));
    }

    #[test]
    fn chunked_bodies_encode_and_decode_back(
        chunks in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..8),
        ieof in any::<bool>(),
        original in prop::option::of(any::<u64>()),
        split in any::<prop::sample::Index>(),
    ) {
        let last = LastChunk { ieof, use_original_body: original, trailers: HeaderMap::new() };
        let mut wire = Vec::new();
        for c in &chunks {
            encode_chunk(c, &mut wire);
        }
        encode_last_chunk(&last, &mut wire);
        let at = split.index(wire.len() + 1);
        let mut dec = ChunkedDecoder::new(Limits::DEFAULT);
        let (mut data, mut end, mut buf) = (Vec::new(), None, Vec::new());
        for piece in [&wire[..at], &wire[at..]] {
            buf.extend_from_slice(piece);
            loop {
                let step = dec.decode(&buf).unwrap();
                let used = step.consumed;
                match step.event {
                    Some(Event::Data(d)) => data.extend_from_slice(d),
                    Some(Event::End(l)) => end = Some(l),
                    None => { buf.drain(..used); break; }
                }
                buf.drain(..used);
            }
        }
        prop_assert_eq!(data, chunks.concat());
        prop_assert_eq!(end, Some(last));
        prop_assert!(buf.is_empty());
    }

    #[test]
    fn arbitrary_bytes_never_panic_nor_overstay(bytes in prop::collection::vec(any::<u8>(), 0..4096), limits in small_limits()) {
        if let Ok(None) = parse_request(&bytes, &limits) {
            prop_assert!(bytes.len() <= limits.max_message_head());
        }
        if let Ok(None) = parse_response(&bytes, &limits) {
            prop_assert!(bytes.len() <= limits.max_message_head());
        }
        let mut dec = ChunkedDecoder::new(limits);
        let mut rest = &bytes[..];
        while let Ok(step) = dec.decode(rest) {
            rest = &rest[step.consumed..];
            if step.event.is_none() {
                prop_assert!(rest.len() <= limits.max_chunk_line.max(limits.max_trailers));
                break;
            }
        }
    }

    #[test]
    fn mutated_captures_never_panic(bytes in mutated_fixture(), limits in small_limits()) {
        // read_stream asserts that what it keeps between reads stays within limits.
        let _ = read_stream::<Request>(&[&bytes], &Limits::DEFAULT);
        let _ = read_stream::<Request>(&[&bytes], &limits);
        let _ = read_stream::<Response>(&[&bytes], &limits);
    }

    #[test]
    fn valid_prefixes_wait_within_limits(req in request(), limits in small_limits(), cut in any::<prop::sample::Index>()) {
        let mut out = Vec::new();
        encode_request(&req, &mut out);
        let prefix = &out[..cut.index(out.len() + 1)];
        if let Ok(None) = parse_request(prefix, &limits) {
            prop_assert!(prefix.len() <= limits.max_message_head());
        }
    }
}
