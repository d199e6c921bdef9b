//! Real traffic, captured byte for byte from Squid 5 and c-icap-client talking
//! to c-icap (see `fixtures/capture.py`), parsed whole, split in two at every
//! byte boundary, and fed one byte at a time: the transcript is the same.

mod support;

use std::path::PathBuf;

use http::Version;
use icap::{encode_request, parse_request, Body, Limits, Method, Request, Response, StatusCode};
use support::{bytewise, read_stream, Head, Seen};

fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_names(suffix: &str) -> Vec<String> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(suffix))
        .collect();
    names.sort();
    assert!(names.len() >= 9, "fixtures missing: {names:?}");
    names
}

fn whole<H: Head>(input: &[u8]) -> Vec<Seen<H>> {
    read_stream(&[input], &Limits::DEFAULT).unwrap()
}

/// Every two-piece split, at every byte boundary; for the one large capture,
/// every boundary in its heads and first and last 8 KiB, and every 61st byte
/// in between (the bytewise feed covers every boundary of it).
fn assert_splits_agree<H: Head>(name: &str, input: &[u8]) {
    let want: Vec<Seen<H>> = whole(input);
    let got = read_stream(&bytewise(input), &Limits::DEFAULT).unwrap();
    assert_eq!(got, want, "{name}: byte by byte");
    for at in 0..=input.len() {
        let dense = input.len() < 32 * 1024 || at < 8192 || input.len() - at < 8192;
        if !dense && at % 61 != 0 {
            continue;
        }
        let got = read_stream(&[&input[..at], &input[at..]], &Limits::DEFAULT).unwrap();
        assert_eq!(got, want, "{name}: split at {at}");
    }
}

#[test]
fn client_captures_parse_the_same_however_split() {
    for name in fixture_names(".client") {
        assert_splits_agree::<Request>(&name, &fixture(&name));
    }
}

#[test]
fn server_captures_parse_the_same_however_split() {
    for name in fixture_names(".server") {
        assert_splits_agree::<Response>(&name, &fixture(&name));
    }
}

fn heads(seen: &[Seen<Request>]) -> Vec<&Request> {
    seen.iter()
        .filter_map(|s| match s {
            Seen::Head(h) => Some(h),
            _ => None,
        })
        .collect()
}

fn body_len(seen: &[Seen<Request>]) -> usize {
    seen.iter()
        .map(|s| if let Seen::Data(d) = s { d.len() } else { 0 })
        .sum()
}

#[test]
fn squid_options_has_no_encapsulated() {
    let seen = whole::<Request>(&fixture("squid-0.client"));
    let options = heads(&seen)[0];
    assert_eq!(options.method, Method::Options);
    assert_eq!(options.sections, None);
    assert!(options.allow.partial && options.allow.trailers && !options.allow.no_content);
}

#[test]
fn squid_reqmod_null_body_with_preview_zero_has_no_chunk() {
    let seen = whole::<Request>(&fixture("squid-0.client"));
    let reqmods: Vec<_> = heads(&seen)
        .into_iter()
        .filter(|r| r.method == Method::Reqmod)
        .collect();
    assert_eq!(reqmods.len(), 6);
    let first = reqmods[0];
    assert_eq!(first.preview, Some(0));
    assert!(!first.has_body());
    assert!(first.allow.no_content);
    assert_eq!(first.client_ip(), Some("127.0.0.1".parse().unwrap()));
    let http = first.sections.as_ref().unwrap().request.as_ref().unwrap();
    assert_eq!(http.method, http::Method::GET);
    assert!(http.target.starts_with("http://127.0.0.1:") && http.target.ends_with("/small.txt"));
    assert_eq!(http.version, Version::HTTP_11);
    // The long Cookie header arrives whole.
    let long = reqmods[4]
        .sections
        .as_ref()
        .unwrap()
        .request
        .as_ref()
        .unwrap();
    assert_eq!(long.headers["cookie"].len(), 5002);
    // The upload carries its body, ended by `0; ieof` within the preview.
    let upload = reqmods[5];
    assert_eq!(upload.sections.as_ref().unwrap().body, Body::Request);
    assert_eq!(upload.preview, Some(750));
    assert_eq!(body_len(&seen), 750);
    match seen.last().unwrap() {
        Seen::End(end) => assert!(end.ieof),
        other => panic!("expected the end of the upload, got {other:?}"),
    }
}

#[test]
fn squid_respmod_covers_preview_continue_and_empty_bodies() {
    let seen = whole::<Request>(&fixture("squid-1.client"));
    let respmods: Vec<_> = heads(&seen)
        .into_iter()
        .filter(|r| r.method == Method::Respmod)
        .collect();
    assert_eq!(respmods.len(), 6);
    // The empty file: null-body after res-hdr, Preview: 0, no chunk.
    let empty = respmods[1];
    assert_eq!(empty.preview, Some(0));
    assert_eq!(empty.sections.as_ref().unwrap().body, Body::Null);
    assert!(empty.sections.as_ref().unwrap().response.is_some());
    // The 200 KiB file: too big for Squid to buffer, so no Allow: 204;
    // a 1024-byte preview, then the rest after 100 Continue.
    let big = respmods[2];
    assert!(!big.allow.no_content && big.allow.trailers);
    assert_eq!(big.preview, Some(1024));
    let res = big.sections.as_ref().unwrap().response.as_ref().unwrap();
    assert_eq!(res.headers["content-length"], "204800");
    let start = seen
        .iter()
        .position(|s| matches!(s, Seen::Head(h) if h == big))
        .unwrap();
    let body: usize = seen[start + 1..]
        .iter()
        .take_while(|s| !matches!(s, Seen::Head(_)))
        .map(|s| if let Seen::Data(d) = s { d.len() } else { 0 })
        .sum();
    assert_eq!(body, 204_800);
}

#[test]
fn c_icap_client_variants() {
    let preview = whole::<Request>(&fixture("c-icap-client-respmod-preview.client"));
    let req = heads(&preview)[1];
    assert_eq!(
        (req.method, req.preview, req.allow.no_content),
        (Method::Respmod, Some(1024), true)
    );
    assert_eq!(body_len(&preview), 3400);

    let nopreview = whole::<Request>(&fixture("c-icap-client-respmod-nopreview.client"));
    assert_eq!(heads(&nopreview)[1].preview, None);
    assert_eq!(body_len(&nopreview), 3400);

    let no204 = whole::<Request>(&fixture("c-icap-client-respmod-no204.client"));
    assert!(!heads(&no204)[1].allow.no_content);

    let ieof = whole::<Request>(&fixture("c-icap-client-respmod-ieof.client"));
    assert!(matches!(ieof.last(), Some(Seen::End(e)) if e.ieof));

    let reqmod = whole::<Request>(&fixture("c-icap-client-reqmod.client"));
    let r = heads(&reqmod)[1];
    assert_eq!(r.method, Method::Reqmod);
    assert_eq!(
        r.sections
            .as_ref()
            .unwrap()
            .request
            .as_ref()
            .unwrap()
            .method,
        http::Method::POST
    );

    let long = whole::<Request>(&fixture("c-icap-client-long-headers.client"));
    let r = heads(&long)[1];
    assert_eq!(r.client_ip(), Some("192.0.2.7".parse().unwrap()));
    let res = r.sections.as_ref().unwrap().response.as_ref().unwrap();
    assert_eq!(res.headers.get_all("set-cookie").iter().count(), 2);
}

#[test]
fn c_icap_answers_parse_as_responses() {
    let seen = whole::<Response>(&fixture("squid-1.server"));
    let statuses: Vec<u16> = seen
        .iter()
        .filter_map(|s| {
            if let Seen::Head(h) = s {
                Some(h.status.0)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(statuses, [200, 204, 204, 100, 200, 204, 200, 204]);
    let Seen::Head(options) = &seen[0] else {
        panic!()
    };
    assert_eq!(options.headers["methods"], "RESPMOD, REQMOD");
    assert!(options.istag().is_some());
    let continued = seen
        .iter()
        .filter(|s| matches!(s, Seen::Head(h) if h.status == StatusCode::CONTINUE))
        .count();
    assert_eq!(continued, 1);
}

#[test]
fn captured_requests_survive_encode_and_parse_again() {
    for name in fixture_names(".client") {
        for seen in whole::<Request>(&fixture(&name)) {
            let Seen::Head(req) = seen else { continue };
            let mut out = Vec::new();
            encode_request(&req, &mut out);
            let (again, used) = parse_request(&out, &Limits::DEFAULT).unwrap().unwrap();
            assert_eq!(used, out.len(), "{name}");
            assert_eq!(again, req, "{name}");
        }
    }
}
