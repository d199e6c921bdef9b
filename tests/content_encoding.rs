//! Bodies sent with a Content-Encoding clamd cannot see through (`br`,
//! `deflate`, `zstd`) are decoded before the scan: EICAR inside them is
//! found, over ICAP, through a real Squid, in split mode and over ext_proc
//! (the last in tests/extproc.rs). Without decoding, clamd answers OK for
//! all of them. So it does for a zip it does not open (ZIP64, or packed
//! with LZMA and the like): such a body is not called clean. And for a
//! gzip file uploaded by a form: a form's parts are scanned one by one, as
//! an ar archive's (a `.deb`) members are.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use support::{
    brotli_stored, eicar, fixture, gzip, icap_respmod_with, ClamdProcess, Origin, RedisProcess,
    Service, Squid, TestServer, EICAR_NAME,
};
use tokio::io::AsyncWriteExt;
use virus_scanner::model::Verdict;

/// EICAR as brotli, cut in two meta-blocks so that the encoded bytes do
/// not hold it whole.
fn eicar_br() -> Vec<u8> {
    let e = eicar();
    brotli_stored(&[&e[..30], &e[30..]])
}

fn zlib(data: &[u8]) -> Vec<u8> {
    miniz_oxide::deflate::compress_to_vec_zlib(data, 6)
}

fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 19).unwrap()
}

/// `data` packed by a program that reads it from standard input: `xz`
/// (with its default preset, 6, or another: `xz -9`) or `bzip2`.
fn packed_by(program: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut words = program.split_whitespace();
    let mut child = Command::new(words.next().unwrap())
        .args(words)
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{program}: {e} (scripts/test.sh installs it)"));
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "{program}");
    out.stdout
}

/// EICAR amid random letters, as zstd: the letters make zstd code its
/// literals (EICAR's among them) with Huffman, so the encoded bytes do not
/// hold it. (zstd stores a body as short as EICAR alone as it is, where
/// clamd would find it undecoded.)
fn eicar_zstd() -> Vec<u8> {
    zstd_hiding(&eicar_amid_letters())
}

fn eicar_amid_letters() -> Vec<u8> {
    let mut rng = support::Rng(7);
    let mut letters = || -> Vec<u8> { (0..20_000).map(|_| b'a' + rng.below(26) as u8).collect() };
    let mut plain = letters();
    plain.extend_from_slice(&eicar());
    plain.extend_from_slice(&letters());
    plain
}

/// `plain`, which holds EICAR, as zstd whose bytes do not show it.
fn zstd_hiding(plain: &[u8]) -> Vec<u8> {
    let encoded = zstd(plain);
    let e = eicar();
    assert!(
        !encoded.windows(e.len()).any(|w| w == e),
        "EICAR shows in the zstd bytes"
    );
    encoded
}

/// Bodies encoded so that clamd alone cannot see EICAR in them, with their
/// Content-Encoding.
fn hidden_eicar() -> Vec<(&'static str, Vec<u8>)> {
    let e = eicar();
    vec![
        ("br", eicar_br()),
        ("deflate", zlib(&e)),
        // Raw deflate, which some servers send as `deflate`.
        ("deflate", miniz_oxide::deflate::compress_to_vec(&e, 6)),
        // Two codings: deflate, then gzip over it.
        ("deflate, gzip", gzip(&zlib(&e))),
        ("zstd", eicar_zstd()),
        ("br, zstd", zstd(&eicar_br())),
    ]
}

async fn respmod(port: u16, content_encoding: &str, body: &[u8]) -> support::IcapAnswer {
    let header = format!("Content-Encoding: {content_encoding}\r\n");
    icap_respmod_with(port, "http://origin.test/f", body, "", &header)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_bodies_are_decoded_before_the_scan() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let port = server.port();
    for (coding, body) in hidden_eicar() {
        let answer = respmod(port, coding, &body).await;
        assert!(answer.is_infected(), "{coding}: {answer:?}");
    }
    // Clean bodies, encoded, still pass.
    let clean = b"nothing to see here\n".repeat(50);
    for (coding, body) in [
        ("br", brotli_stored(&[&clean])),
        ("deflate", zlib(&clean)),
        ("gzip", gzip(&clean)),
        ("zstd", zstd(&clean)),
    ] {
        let answer = respmod(port, coding, &body).await;
        assert!(answer.is_clean(), "{coding}: {answer:?}");
    }
    assert!(respmod(port, "gzip", &gzip(&eicar())).await.is_infected());
    // A stream cut short, or not what its coding says: the scan did not
    // see the whole body, so the failure mode applies (closed: a page that
    // says the file could not be checked, not that the scanner is down).
    for (coding, body) in undecodable() {
        let answer = respmod(port, coding, &body).await;
        assert!(answer.is_undecodable(), "{coding}: {answer:?}");
    }
    // Cut after EICAR is complete: what was decoded is still found.
    let br = eicar_br();
    let cut_after = &br[..br.len() - 1];
    assert!(respmod(port, "br", cut_after).await.is_infected());
}

/// Clean bodies whose Content-Encoding does not decode.
fn undecodable() -> Vec<(&'static str, Vec<u8>)> {
    let cut = brotli_stored(&[b"the start of a body"]);
    let deflate = zlib(
        &b"the start of a body
"
        .repeat(100),
    );
    let z = zstd(&b"the start of a body\n".repeat(100));
    vec![
        ("br", cut[..cut.len() - 1].to_vec()),
        ("br", b"plainly not brotli".to_vec()),
        ("deflate", deflate[..deflate.len() / 2].to_vec()),
        ("zstd", z[..z.len() - 2].to_vec()),
    ]
}

/// With the failure mode open, a body that does not decode passes, marked
/// and counted as not scanned for that reason; it is no scan error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn undecodable_bodies_pass_marked_when_the_failure_mode_is_open() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--fail-mode", "open"]).await;
    for (coding, body) in undecodable() {
        let answer = respmod(server.port(), coding, &body).await;
        assert!(answer.is_undecodable_let_through(), "{coding}: {answer:?}");
    }
    // Infected wins over undecodable whatever the mode.
    let br = eicar_br();
    assert!(respmod(server.port(), "br", &br[..br.len() - 1])
        .await
        .is_infected());
}

/// An upload: REQMOD with the request's own Content-Encoding.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encoded_uploads_are_decoded_too() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    for (coding, body) in hidden_eicar() {
        let header = format!("Content-Encoding: {coding}");
        let answer = upload(server.port(), &header, &body).await;
        assert!(answer.is_infected(), "{coding}: {answer:?}");
    }
}

/// Sends `body` as an upload (REQMOD) with one more request `header`, and
/// reads the answer.
async fn upload(port: u16, header: &str, body: &[u8]) -> support::IcapAnswer {
    let req = format!(
        "POST http://origin.test/upload HTTP/1.1\r\nHost: origin.test\r\n\
         {header}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut msg = format!(
        "REQMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\n\
         Encapsulated: req-hdr=0, req-body={}\r\n\r\n{req}",
        req.len()
    )
    .into_bytes();
    msg.extend_from_slice(&support::chunked(body, true));
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&msg).await.unwrap();
    support::read_icap_answer(&mut s).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_body_that_decodes_large_is_too_large_to_scan() {
    let clamd = ClamdProcess::start();
    let server =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--max-scan-size", "1M"]).await;
    // 64 MiB of zeros in about 64 KiB, and EICAR after them.
    let mut plain = vec![0u8; 64 << 20];
    plain.extend_from_slice(&eicar());
    let bomb = zlib(&plain);
    assert!(bomb.len() < 1 << 20, "{}", bomb.len());
    let answer = respmod(server.port(), "deflate", &bomb).await;
    // Blocked (TOO_LARGE=block) as too large, not scanned as clean.
    assert_eq!(answer.http_status, Some(403), "{answer:?}");
    assert!(!answer.is_infected(), "{answer:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_downloads_with_br_deflate_or_zstd_are_scanned_decoded() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let clean = b"Nothing to see here, just text.\n".repeat(100);
    let files = HashMap::from([
        ("/eicar.br".to_owned(), Bytes::from(eicar_br())),
        ("/eicar.deflate".to_owned(), Bytes::from(zlib(&eicar()))),
        ("/eicar.zstd".to_owned(), Bytes::from(eicar_zstd())),
        (
            "/clean.br".to_owned(),
            Bytes::from(brotli_stored(&[&clean])),
        ),
    ]);
    let origin = Origin::start(files).await;
    let squid = Squid::start("forward.conf", server.port());
    for path in ["/eicar.br", "/eicar.deflate", "/eicar.zstd"] {
        let (status, body) = squid.fetch(&origin.url(path), None).await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{path}: {page}");
        assert!(page.contains(EICAR_NAME), "{path}: {page}");
    }
    // The clean one arrives as the origin sent it, still encoded.
    let (status, body) = squid.fetch(&origin.url("/clean.br"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, brotli_stored(&[&clean]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_mode_handlers_decode_too() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let mount = support::TempDir::new("mount");
    let padding = vec![b'a'; 4000];
    let mut padded = padding.clone();
    padded.extend_from_slice(&eicar());
    // Bodies inline or streamed through Redis (handler on TCP), then on
    // the disk provider (handler on the unix socket, where a body file
    // would go to clamd by descriptor, undecoded, if nothing took care).
    let setups = [
        (clamd.tcp_url(), vec![("INLINE_MAX", "1K".to_owned())]),
        (
            clamd.unix_url(),
            vec![
                ("INLINE_MAX", "0".to_owned()),
                ("DISK_MIN", "0".to_owned()),
                ("SCAN_MOUNT", mount.path().display().to_string()),
            ],
        ),
    ];
    for (clamd_url, extra) in setups {
        let port = support::free_port();
        let mut env = vec![
            ("REDIS_PORT", redis.port.to_string()),
            ("CLAMD_URL", clamd_url),
            ("ICAP_PORT", port.to_string()),
        ];
        env.extend(extra);
        let _handler = Service::start(env!("CARGO_BIN_EXE_virus-scanner-handler"), &env);
        let producer = Service::start(env!("CARGO_BIN_EXE_virus-scanner-producer"), &env);
        producer.wait_port(port, Duration::from_secs(20));
        for (coding, body) in [
            ("br", eicar_br()),
            ("deflate", zlib(&eicar())),
            ("zstd", eicar_zstd()),
            // EICAR cut between two meta-blocks, after 4000 bytes.
            ("br", brotli_stored(&[&padded[..4030], &padded[4030..]])),
        ] {
            let answer = respmod(port, coding, &body).await;
            assert!(answer.is_infected(), "{env:?} {coding}: {answer:?}");
        }
        // A zstd file sent as it is, whose content clamd would not see.
        let url = "http://origin.test/f.zst";
        let answer = icap_respmod_with(port, url, &eicar_zstd(), "", "").await;
        assert!(answer.unwrap().is_infected(), "{env:?} .zst");
        // The handler's verdict on a body that does not decode crosses
        // the queue as such.
        let (coding, body) = &undecodable()[0];
        let answer = respmod(port, coding, body).await;
        assert!(answer.is_undecodable(), "{env:?}: {answer:?}");
    }
    redis.assert_keys_expire().await;
}

/// Compression against a dictionary (RFC 9842's `dcb` and `dcz`): the
/// dictionary is an earlier response the browser kept, so the scan cannot
/// undo it. Requests go on without `Available-Dictionary`, so that no
/// server uses one; a response that does anyway is undecodable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dictionary_compression_is_kept_out() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    for coding in ["dcb", "dcz"] {
        let answer = respmod(server.port(), coding, b"\xff\x44\x43\x42 and then anything").await;
        assert!(answer.is_undecodable(), "{coding}: {answer:?}");
    }
    let reqmod = |extra: &str| {
        let req = format!(
            "GET http://origin.test/app.js HTTP/1.1\r\nHost: origin.test\r\n\
             Accept-Encoding: gzip, br, zstd, dcb, dcz\r\n{extra}\r\n"
        );
        format!(
            "REQMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\n\
             Encapsulated: req-hdr=0, null-body={}\r\n\r\n{req}",
            req.len()
        )
    };
    let port = server.port();
    let send = |msg: String| async move {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(msg.as_bytes()).await.unwrap();
        support::read_icap_answer(&mut s).await.unwrap()
    };
    let answer = send(reqmod(
        "Available-Dictionary: :pZGm1Av0IEBKARczz7exkNYsZb8LzaMrV7J32a2fFG4=:\r\n\
         Dictionary-ID: \"app-v1\"\r\n",
    ))
    .await;
    assert_eq!(answer.icap_status, 200, "{answer:?}");
    let head = answer.head.to_ascii_lowercase();
    assert!(!head.contains("available-dictionary"), "{head}");
    assert!(!head.contains("dictionary-id"), "{head}");
    assert!(
        head.contains("get http://origin.test/app.js http/1.1")
            && head.contains("accept-encoding: gzip, br, zstd, dcb, dcz"),
        "{head}"
    );
    assert!(send(reqmod("")).await.is_clean());
}

/// Zip archives of readme.txt (2,000 bytes of text, then EICAR, packed so
/// that EICAR does not show) that clamd answers OK for without opening
/// them. ZIP64 ones (ClamAV issue 1527): made by Info-ZIP's `zip -fz` (every
/// record ZIP64), by Python's zipfile with `force_zip64` (the local header
/// only), and the first with its local header's real sizes put back (the
/// end record only). One packed with LZMA by Python's zipfile. The first
/// inside another zip, deflated there by Python's zipfile, so that its
/// records show only unpacked. unzip or 7-Zip opens each. And a zip by
/// Python's zipfile whose central directory was cut to list readme.txt
/// only: unzip extracts that, but an unzipper that reads the entries in
/// order (`bsdtar -x` from a pipe) extracts eicar.com too, which clamd
/// never unpacks; the same with readme.txt's length in the directory
/// reaching over eicar.com (unzip does not complain); and a whole zip of
/// both whose comment holds a second directory and end record listing
/// readme.txt only (clamd and unzip go by that one). Last, three zips
/// whose eicar.com local header alone says it is encrypted, or packed with
/// bzip2, or 0 bytes long: clamd goes by the local header and skips it or
/// fails to unpack it, while Python's zipfile goes by the directory and
/// extracts it (unzip too, for the encryption flag). And two zips one
/// after the other, readme.txt's then eicar.com's: unzip and Python's
/// zipfile extract eicar.com. And three tar archives (made by Python's
/// tarfile, then one header edited) that tar, Python's tarfile and bsdtar
/// read to the end while clamd stops early: a header with an empty name
/// before a zip of EICAR; a pax size of 512 for a member whose header says
/// 4096, before a gzip file of EICAR; a header without the ustar magic,
/// the gzip file's, after one with it; a volume header whose data holds
/// a header that, read as clamd reads it, covers the gzip file (tar and
/// Python's tarfile skip the data and extract it).
fn unopened_eicar() -> Vec<(&'static str, Vec<u8>)> {
    [
        "eicar-zip64.zip",
        "eicar-zip64-local.zip",
        "eicar-zip64-end.zip",
        "eicar-lzma.zip",
        "eicar-zip64-in-zip.zip",
        "eicar-unlisted.zip",
        "eicar-unlisted-covered.zip",
        "eicar-unlisted-comment.zip",
        "eicar-local-encrypted.zip",
        "eicar-local-bzip2.zip",
        "eicar-local-length.zip",
        "eicar-second-zip.zip",
        // Tar archives whose reading clamd ends early, with a zip or a
        // gzip file of EICAR after that point.
        "eicar-tar-empty-name.tar",
        "eicar-tar-pax-size.tar",
        "eicar-tar-magic.tar",
        "eicar-tar-volume-data.tar",
        // eicar-zip64.zip packed by 7-Zip with Deflate64, which clamd
        // unpacks; and the same with each entry's sizes in a data
        // descriptor after its data, as streaming writers lay them out.
        "eicar-zip64-in-deflate64.zip",
        "eicar-zip64-in-deflate64-streamed.zip",
        // A ZIP64 zip of EICAR (made by `zip -fz`) imploded by hwzip 2.3
        // (hanshq.net): PKZIP 1's method, which clamd and unzip unpack.
        "eicar-zip64-in-implode.zip",
    ]
    .into_iter()
    .map(|name| (name, fixture(name)))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archives_clamd_does_not_open_are_not_called_clean() {
    let clamd = ClamdProcess::start();
    let e = eicar();
    for (name, zip) in unopened_eicar() {
        assert!(!zip.windows(e.len()).any(|w| w == e), "{name}");
        assert_eq!(clamd.verdict(&zip).await, Verdict::Clean, "clamd on {name}");
    }
    let mut zips = unopened_eicar();
    zips.push(("clean-zip64.zip", fixture("clean-zip64.zip")));
    let url = "http://origin.test/f.zip";
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    for (name, zip) in &zips {
        let answer = icap_respmod_with(server.port(), url, zip, "", "")
            .await
            .unwrap();
        assert!(answer.is_undecodable(), "{name}: {answer:?}");
    }
    // Sent gzip-encoded, which clamd would open by itself, and find the
    // same zip in, unopened; or as a gzip file (`.zip.gz`), which clamd
    // unpacks too.
    for (name, zip) in unopened_eicar() {
        let answer = respmod(server.port(), "gzip", &gzip(&zip)).await;
        assert!(answer.is_undecodable(), "{name} as gzip: {answer:?}");
        // And a gzip file in a gzip file, which clamd unpacks both of,
        // and a zstd file.
        let gz = gzip(&zip);
        for (suffix, file) in [
            (".gz", gzip(&zip)),
            (".gz.gz", gzip(&gz)),
            (".zst", zstd(&zip)),
        ] {
            let what = format!("{name}{suffix}");
            unopened_by_both(&clamd, server.port(), &file, &what).await;
        }
    }
    // Each stored in a zip, or packed in one by bzip2 (`zip -Z bzip2`), or
    // in a tar, as it is or gzipped, which clamd unpacks and judges the
    // file in from its start, as the watch does.
    let dir = support::TempDir::new("stored");
    for (name, file) in unopened_eicar() {
        let gz = format!("{name}.gz");
        for (how, archive) in [
            ("a zip", packed_by_python(&dir, name, &file, false)),
            (
                "a zip, by bzip2",
                archived_by_python(&dir, name, &file, "ZIP_BZIP2"),
            ),
            ("a tar", packed_by_python(&dir, name, &file, true)),
            (
                "a tar, gzipped",
                packed_by_python(&dir, &gz, &gzip(&file), true),
            ),
        ] {
            let what = format!("{name} in {how}");
            unopened_by_both(&clamd, server.port(), &archive, &what).await;
        }
    }
    // A gzip file of EICAR whose header sets a reserved flag: clamd does
    // not unpack it, Python's gzip module does.
    let mut odd = gzip(&[&[b'x'; 2000][..], &e].concat());
    odd[3] |= 0x20;
    assert_eq!(
        clamd.verdict(&odd).await,
        Verdict::Clean,
        "clamd on the odd gzip"
    );
    let answer = icap_respmod_with(server.port(), url, &odd, "", "")
        .await
        .unwrap();
    assert!(answer.is_undecodable(), "{answer:?}");
    // A plain zip has clamd's verdict.
    let plain = fixture("eicar.zip");
    let answer = icap_respmod_with(server.port(), url, &plain, "", "")
        .await
        .unwrap();
    assert!(answer.is_infected(), "{answer:?}");

    // Failure mode open: let through, marked.
    let open = TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--fail-mode", "open"]).await;
    for (name, zip) in &zips {
        let answer = icap_respmod_with(open.port(), url, zip, "", "")
            .await
            .unwrap();
        assert!(answer.is_undecodable_let_through(), "{name}: {answer:?}");
    }

    // A body file handed to clamd by descriptor, as split mode's disk
    // provider does on a unix socket.
    let scanner = file_scanner(&clamd);
    let dir = support::TempDir::new("unopened");
    for (name, zip) in zips.iter().chain([&("eicar.zip", plain)]) {
        let path = support::write_file(&dir, name, zip);
        let file = std::fs::File::open(path).unwrap();
        let (verdict, _) = scanner.scan_file(file, zip.len() as u64, None, None).await;
        if *name == "eicar.zip" {
            assert!(matches!(verdict, Verdict::Infected { .. }), "{verdict:?}");
        } else {
            assert!(
                matches!(&verdict, Verdict::Undecodable { reason } if reason.contains("clamd")),
                "{name}: {verdict:?}"
            );
        }
    }

    // Through Squid: the download is blocked with the page that says so.
    let files = zips
        .iter()
        .map(|(name, zip)| (format!("/{name}"), Bytes::from(zip.clone())))
        .collect();
    let origin = Origin::start(files).await;
    let squid = Squid::start("forward.conf", server.port());
    for (name, _) in &zips {
        let (status, body) = squid.fetch(&origin.url(&format!("/{name}")), None).await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{name}: {page}");
        assert!(page.contains("could not be checked"), "{name}: {page}");
    }
    squid.assert_no_icap_errors();
}

/// A zip record whose fields a piece cuts, with a shorter record's
/// signature inside them, through the scan pipeline with real clamd: the
/// watch took the header for one already judged, and the body passed
/// clean (found by the fuzzer, `fuzz/README.md`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zip_record_cut_between_pieces_is_still_judged() {
    let clamd = ClamdProcess::start();
    // EICAR deflated behind a ZIP64 local header, whose checksum field
    // holds a ZIP64 locator's signature.
    let mut zip = fixture("eicar-zip64-local.zip");
    zip[14..18].copy_from_slice(b"PK\x06\x07");
    assert_eq!(clamd.verdict(&zip).await, Verdict::Clean, "clamd");
    let scanner = scanner(&clamd.tcp_url(), 2, 1 << 20);
    for cut in [0, 20, 29, zip.len()] {
        let mut session = scanner.session();
        session.write(&zip[..cut]).await;
        session.write(&zip[cut..]).await;
        let verdict = session.finish().await;
        assert!(
            matches!(&verdict, Verdict::Undecodable { reason } if reason.contains("ZIP64")),
            "cut at {cut}: {verdict:?}"
        );
    }
}

/// Checks that clamd answers OK for `body`, and this server (on `port`)
/// undecodable.
async fn unopened_by_both(clamd: &ClamdProcess, port: u16, body: &[u8], what: &str) {
    assert_eq!(clamd.verdict(body).await, Verdict::Clean, "clamd on {what}");
    let answer = icap_respmod_with(port, "http://origin.test/f.zip", body, "", "")
        .await
        .unwrap();
    assert!(answer.is_undecodable(), "{what}: {answer:?}");
}

/// An archive holding `data` as `name`, after a small text file: a zip
/// that stores it (Python's zipfile), or a tar (Python's tarfile).
fn packed_by_python(dir: &support::TempDir, name: &str, data: &[u8], tar: bool) -> Vec<u8> {
    match tar {
        true => archived_by_python(dir, name, data, "tar"),
        false => archived_by_python(dir, name, data, "ZIP_STORED"),
    }
}

/// The same archive: a tar (`how` "tar"), or a zip whose entries are
/// packed by one of Python's zipfile methods (`ZIP_STORED`, `ZIP_BZIP2`).
fn archived_by_python(dir: &support::TempDir, name: &str, data: &[u8], how: &str) -> Vec<u8> {
    let input = support::write_file(dir, name, data);
    let tar = how == "tar";
    let path = dir.path().join(format!("{name}.{how}"));
    let script = if tar {
        "import io, sys, tarfile\n\
         with tarfile.open(sys.argv[1], 'w') as t:\n\
         \x20   r = tarfile.TarInfo('readme.txt')\n\
         \x20   r.size = 19\n\
         \x20   t.addfile(r, io.BytesIO(b'nothing to see here'))\n\
         \x20   t.add(sys.argv[2], sys.argv[3])\n"
    } else {
        "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w', getattr(zipfile, sys.argv[4])) as z:\n\
         \x20   z.writestr('readme.txt', 'nothing to see here')\n\
         \x20   z.write(sys.argv[2], sys.argv[3])\n"
    };
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(&input)
        .arg(name)
        .arg(how)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", support::output_text(&out));
    std::fs::read(path).unwrap()
}

/// A tar of `n` copies of `data`, named `0-name`, `1-name` and so on
/// (Python's tarfile).
fn copies_in_tar(dir: &support::TempDir, name: &str, data: &[u8], n: usize) -> Vec<u8> {
    let input = support::write_file(dir, name, data);
    let path = dir.path().join(format!("{n}-{name}.tar"));
    let script = "import sys, tarfile\n\
         with tarfile.open(sys.argv[1], 'w') as t:\n\
         \x20   for i in range(int(sys.argv[4])):\n\
         \x20       t.add(sys.argv[2], f'{i}-{sys.argv[3]}')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(&input)
        .arg(name)
        .arg(n.to_string())
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", support::output_text(&out));
    std::fs::read(path).unwrap()
}

/// A conda package as conda writes one: a zip that stores its metadata,
/// then `info` and `pkg` as `.tar.zst` files (Python's zipfile).
fn conda_by_python(dir: &support::TempDir, info: &[u8], pkg: &[u8]) -> Vec<u8> {
    let info = support::write_file(dir, "info.tar.zst", info);
    let pkg = support::write_file(dir, "pkg.tar.zst", pkg);
    let path = dir.path().join("p.conda");
    let script = "import sys, zipfile\n\
         with zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_STORED) as z:\n\
         \x20   z.writestr('metadata.json', '{\"conda_pkg_format_version\": 2}')\n\
         \x20   z.write(sys.argv[2], 'info-x-1.0-0.tar.zst')\n\
         \x20   z.write(sys.argv[3], 'pkg-x-1.0-0.tar.zst')\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(&info)
        .arg(&pkg)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", support::output_text(&out));
    std::fs::read(path).unwrap()
}

/// A scanner on clamd's unix socket, for body files handed to clamd by
/// descriptor, as split mode's disk provider does.
fn file_scanner(clamd: &ClamdProcess) -> virus_scanner::scan::Scanner {
    scanner(&clamd.unix_url(), 2, 1 << 20)
}

/// A scanner with one clamd scan slot, on clamd's TCP port.
fn one_slot_scanner(clamd: &ClamdProcess) -> virus_scanner::scan::Scanner {
    scanner(&clamd.tcp_url(), 1, 1 << 30)
}

/// A scanner on clamd at `url` with `slots` scan slots and a scan limit.
fn scanner(url: &str, slots: usize, limit: u64) -> virus_scanner::scan::Scanner {
    let options = virus_scanner::scan::clamd::ClamdOptions {
        connect_timeout: Duration::from_secs(5),
        scan_timeout: Duration::from_secs(30),
        max_concurrency: slots,
        fildes_max: 1 << 20,
        sessions: false,
    };
    let clamd = virus_scanner::scan::clamd::Clamd::new(url.parse().unwrap(), options);
    virus_scanner::scan::Scanner::new(clamd, limit)
}

/// An ar archive of `members` (name, content), as `ar rcD` writes one.
fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut a = b"!<arch>\n".to_vec();
    for (name, content) in members {
        let header = format!(
            "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
            0,
            0,
            0,
            644,
            content.len()
        );
        a.extend_from_slice(header.as_bytes());
        a.extend_from_slice(content);
        if content.len() % 2 == 1 {
            a.push(b'\n');
        }
    }
    a
}

/// clamd does not unpack ar archives: `eicar.deb` (made by `ar rcD` of
/// debian-binary, control.tar.gz and a data.tar.gz holding EICAR; dpkg-deb
/// lists it) is OK to it. Each member is scanned as a file of its own, so
/// the package is found infected: over ICAP, gzip-encoded, and as a body
/// file handed to clamd on its unix socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ar_archive_s_members_are_scanned_each() {
    let clamd = ClamdProcess::start();
    let deb = fixture("eicar.deb");
    assert_eq!(
        clamd.verdict(&deb).await,
        Verdict::Clean,
        "clamd on eicar.deb"
    );
    let clean = ar(&[
        ("debian-binary", b"2.0\n"),
        ("data.tar.gz", &gzip(&b"nothing to see here\n".repeat(40))),
        ("odd", b"odd"),
    ]);
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let url = "http://origin.test/eicar.deb";
    let answer = icap_respmod_with(server.port(), url, &deb, "", "")
        .await
        .unwrap();
    assert!(answer.is_infected(), "{answer:?}");
    assert!(respmod(server.port(), "gzip", &gzip(&deb))
        .await
        .is_infected());
    let answer = icap_respmod_with(server.port(), url, &clean, "", "")
        .await
        .unwrap();
    assert!(answer.is_clean(), "{answer:?}");

    let scanner = file_scanner(&clamd);
    let dir = support::TempDir::new("ar");
    // One clamd scan slot is enough: the archive's own bytes, scanned
    // apart from its members, wait for them (over TCP, both would stream).
    let one_slot = one_slot_scanner(&clamd);
    let big = ar(&[
        ("debian-binary", b"2.0\n"),
        ("data.tar", &vec![0x55u8; 300_000]),
        ("eicar.com", &eicar()),
    ]);
    let path = support::write_file(&dir, "big.deb", &big);
    let scan = one_slot.scan_file(
        std::fs::File::open(path).unwrap(),
        big.len() as u64,
        None,
        None,
    );
    let (verdict, _) = tokio::time::timeout(Duration::from_secs(60), scan)
        .await
        .expect("an ar archive's scans take one clamd slot at a time");
    assert!(matches!(verdict, Verdict::Infected { .. }), "{verdict:?}");
    for (name, body, infected) in [("eicar.deb", &deb, true), ("clean.deb", &clean, false)] {
        let path = support::write_file(&dir, name, body);
        let file = std::fs::File::open(path).unwrap();
        let (verdict, _) = scanner.scan_file(file, body.len() as u64, None, None).await;
        match infected {
            true => assert!(matches!(verdict, Verdict::Infected { .. }), "{verdict:?}"),
            false => assert_eq!(verdict, Verdict::Clean),
        }
    }
}

/// A bzip2 file of several streams: pbzip2 writes one per 900 kB of input,
/// Python's bz2 module one per call when asked (`eicar-bzip2-streams.bz2`:
/// a harmless text, then EICAR). bzip2 and Python unpack them all, clamd
/// 1.4.6 the first only, and answered OK for EICAR in a later one. Its
/// content, all its streams, is scanned as a file of its own: EICAR is
/// found in the last of pbzip2's three streams over ICAP, as the body, as
/// a `.gz` or a `.zst`, gzip-encoded, in a tar (gzipped too) or a zip; a
/// clean one passes, where it used to be undecodable. A first stream over
/// a MiB before another is still undecodable: its content is not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bzip2_files_of_several_streams_are_scanned_whole() {
    let clamd = ClamdProcess::start();
    let noise = support::Rng(11).bytes(2_000_000);
    let infected = packed_by("pbzip2", &[&noise[..], &eicar()].concat());
    let clean = packed_by("pbzip2", &noise);
    let python = fixture("eicar-bzip2-streams.bz2");
    for (what, body) in [("pbzip2", &infected), ("Python", &python)] {
        assert_eq!(clamd.verdict(body).await, Verdict::Clean, "clamd on {what}");
    }
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let dir = support::TempDir::new("bzip2-streams");
    let url = "http://origin.test/f.bz2";
    let wrapped = |body: &[u8]| {
        [
            ("as it is", body.to_vec()),
            ("as a .gz", gzip(body)),
            ("as a .zst", zstd(body)),
            ("in a tar", packed_by_python(&dir, "f.bz2", body, true)),
            ("in a zip", packed_by_python(&dir, "f.bz2", body, false)),
            (
                "in a tar, gzipped",
                gzip(&packed_by_python(&dir, "f.bz2", body, true)),
            ),
        ]
    };
    for (what, body) in [("pbzip2", &infected), ("Python", &python)] {
        for (how, body) in wrapped(body) {
            let answer = icap_respmod_with(server.port(), url, &body, "", "")
                .await
                .unwrap();
            assert!(answer.is_infected(), "{what} {how}: {answer:?}");
        }
        let answer = respmod(server.port(), "gzip", &gzip(body)).await;
        assert!(answer.is_infected(), "{what} gzip-encoded: {answer:?}");
    }
    for (how, body) in wrapped(&clean) {
        let answer = icap_respmod_with(server.port(), url, &body, "", "")
            .await
            .unwrap();
        assert!(answer.is_clean(), "clean {how}: {answer:?}");
    }
    let long_first = [
        packed_by("bzip2", &support::Rng(12).bytes(1_200_000)),
        packed_by("bzip2", &eicar()),
    ]
    .concat();
    assert_eq!(clamd.verdict(&long_first).await, Verdict::Clean);
    let answer = icap_respmod_with(server.port(), url, &long_first, "", "")
        .await
        .unwrap();
    assert!(answer.is_undecodable(), "{answer:?}");

    // The same as body files: on clamd's unix socket, and over TCP with
    // one scan slot, which the content's scan takes after the file's own.
    let on_unix = scanner(&clamd.unix_url(), 2, 1 << 30);
    for scanner in [on_unix, one_slot_scanner(&clamd)] {
        let files = [
            ("infected.bz2", &infected, true),
            ("clean.bz2", &clean, false),
        ];
        body_files_found(&scanner, &dir, &files).await;
    }
}

/// Scans each of `files` (a name, its bytes, whether it is infected) as a
/// body file, within a minute: parts of a body that clamd scans in turn
/// never wait for one another's slot.
async fn body_files_found(
    scanner: &virus_scanner::scan::Scanner,
    dir: &support::TempDir,
    files: &[(&str, &Vec<u8>, bool)],
) {
    for &(name, body, found) in files {
        let path = support::write_file(dir, name, body);
        let file = std::fs::File::open(path).unwrap();
        let scan = scanner.scan_file(file, body.len() as u64, None, None);
        let (verdict, _) = tokio::time::timeout(Duration::from_secs(60), scan)
            .await
            .expect("a body's parts take one clamd slot at a time");
        match found {
            true => assert!(
                matches!(verdict, Verdict::Infected { .. }),
                "{name}: {verdict:?}"
            ),
            false => assert_eq!(verdict, Verdict::Clean, "{name}"),
        }
    }
}

/// An ar archive stored in an ar archive (a `.deb` in a static library's
/// archive, or in another package) is taken apart too, up to three levels:
/// EICAR in a gzip member two levels down is found, and a clean one with a
/// packed member passes instead of being undecodable. A fourth level is
/// scanned as it is, so that its packed member, unseen by clamd, leaves the
/// body undecodable rather than clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ar_archives_in_ar_archives_are_taken_apart() {
    let clamd = ClamdProcess::start();
    let deb = |payload: &[u8]| ar(&[("debian-binary", b"2.0\n"), ("data.tar.gz", &gzip(payload))]);
    // eicar.deb's data.tar.gz holds EICAR in a tar, which clamd finds
    // only once it is given that member on its own.
    let infected = ar(&[
        ("README", b"bundled\n"),
        ("eicar.deb", &fixture("eicar.deb")),
    ]);
    let clean = ar(&[
        ("README", b"bundled\n"),
        ("inner.deb", &deb(&b"nothing to see here\n".repeat(40))),
    ]);
    let three = ar(&[("middle.a", &infected)]);
    let four = ar(&[("outer.a", &ar(&[("middle.a", &clean)]))]);
    assert_eq!(
        clamd.verdict(&infected).await,
        Verdict::Clean,
        "clamd alone"
    );
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let url = "http://origin.test/bundle.a";
    for (what, body) in [("two levels", &infected), ("three levels", &three)] {
        let answer = icap_respmod_with(server.port(), url, body, "", "")
            .await
            .unwrap();
        assert!(answer.is_infected(), "{what}: {answer:?}");
    }
    let answer = icap_respmod_with(server.port(), url, &clean, "", "")
        .await
        .unwrap();
    assert!(answer.is_clean(), "{answer:?}");
    let answer = icap_respmod_with(server.port(), url, &four, "", "")
        .await
        .unwrap();
    assert!(answer.is_undecodable(), "four levels: {answer:?}");

    // The same as body files: on clamd's unix socket, and over TCP with
    // one scan slot, which the levels' scans take in turn.
    let dir = support::TempDir::new("ar-in-ar");
    for scanner in [file_scanner(&clamd), one_slot_scanner(&clamd)] {
        let files = [("infected.a", &three, true), ("clean.a", &clean, false)];
        body_files_found(&scanner, &dir, &files).await;
    }
}

/// clamd 1.4.6 does not open rpm packages: `eicar.rpm` (built by
/// rpmbuild, its payload packed by zstd as Fedora's are, EICAR among 1,500
/// files, so that its header is over 200 KB) and `eicar-xz.rpm` (xz, as
/// RHEL's) are OK to it. The payload is scanned as a file of its own: over
/// ICAP, gzip-encoded, as a body file on clamd's unix socket and with one
/// clamd slot over TCP. `clean.rpm` (gzip) passes; an rpm in a tar, which
/// clamd sees as it is, is scanned on its own too. So is a `.deb` in a
/// payload (a cpio archive, which clamd unpacks, but not the `.deb`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpm_package_s_payload_is_scanned() {
    let clamd = ClamdProcess::start();
    let infected = [fixture("eicar.rpm"), fixture("eicar-xz.rpm")];
    let clean = fixture("clean.rpm");
    let dir = support::TempDir::new("rpm");
    let in_tar = packed_by_python(&dir, "eicar-xz.rpm", &infected[1], true);
    let deb_in_payload = with_payload(&clean, &gzip(&fixture("eicar-deb.cpio")));
    for body in infected.iter().chain([&in_tar, &deb_in_payload]) {
        assert_eq!(clamd.verdict(body).await, Verdict::Clean, "clamd");
    }
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let url = "http://origin.test/p.rpm";
    for body in &infected {
        let answer = icap_respmod_with(server.port(), url, body, "", "").await;
        assert!(answer.unwrap().is_infected());
        assert!(respmod(server.port(), "gzip", &gzip(body))
            .await
            .is_infected());
    }
    let answer = icap_respmod_with(server.port(), url, &clean, "", "").await;
    assert!(answer.unwrap().is_clean());
    let answer = icap_respmod_with(server.port(), url, &in_tar, "", "").await;
    assert!(answer.unwrap().is_infected());
    let answer = icap_respmod_with(server.port(), url, &deb_in_payload, "", "").await;
    assert!(answer.unwrap().is_infected(), "a .deb in the payload");

    let scanner = file_scanner(&clamd);
    let one_slot = one_slot_scanner(&clamd);
    for (name, body) in
        ["eicar.rpm", "eicar-xz.rpm", "clean.rpm"]
            .iter()
            .zip([&infected[0], &infected[1], &clean])
    {
        let path = support::write_file(&dir, name, body);
        for s in [&scanner, &one_slot] {
            let file = std::fs::File::open(&path).unwrap();
            let scan = s.scan_file(file, body.len() as u64, None, None);
            let (verdict, _) = tokio::time::timeout(Duration::from_secs(60), scan)
                .await
                .expect("a package's scans take one clamd slot at a time");
            match *name {
                "clean.rpm" => assert_eq!(verdict, Verdict::Clean),
                _ => assert!(
                    matches!(verdict, Verdict::Infected { .. }),
                    "{name}: {verdict:?}"
                ),
            }
        }
    }
}

/// `rpm` with its payload replaced by `payload`: after the lead (96
/// bytes), the signature header (padded to 8 bytes) and the header.
fn with_payload(rpm: &[u8], payload: &[u8]) -> Vec<u8> {
    let number = |at: usize| u32::from_be_bytes(rpm[at..at + 4].try_into().unwrap()) as usize;
    // A header: its magic and 4 reserved bytes, its index's entries (16
    // bytes each) and its data's length, then both.
    let end = |at: usize| at + 16 + number(at + 8) * 16 + number(at + 12);
    let at = end(end(96).next_multiple_of(8));
    [&rpm[..at], payload].concat()
}

/// clamd 1.4 does not unpack zstd: EICAR in a `.zst` file, in a
/// `.tar.zst`, and in a `.deb` whose `data.tar.zst` holds it (Ubuntu's
/// packages are made so) is OK to it. A body, a form's file or an ar
/// member that is a zstd file has its content scanned too: over ICAP with
/// clamd on TCP or its unix socket, with one clamd slot, in a form, as a
/// body file, and through Squid. So has one that is a tar's member or a
/// zip's entry, as clamd would see it (a conda package, `.conda`, stores
/// its `.tar.zst` files in a zip), and a `.deb` there (in a zip stored,
/// or packed by bzip2 or Deflate64, which clamd unpacks too). A zstd file that
/// does not unpack is undecodable, one that unpacks past the limit too
/// large. So is a `.deb.gz`'s package, which clamd sees as an ar archive,
/// and one in a `.tar.xz` (by `xz -6` or `-9`) or a `.tar.bz2`, or a
/// `.deb.xz`. A zstd file in a `.tar.zst` in a tar is scanned too (the
/// files handed out of a file handed out); one a level further (in a
/// `.tar.zst` in a `.tar.zst` in a tar) is undecodable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zstd_file_s_content_is_scanned() {
    let clamd = ClamdProcess::start();
    let dir = support::TempDir::new("zstd");
    let zst = eicar_zstd();
    let tar_zst = zstd_hiding(&packed_by_python(
        &dir,
        "notes.txt",
        &eicar_amid_letters(),
        true,
    ));
    let deb = ar(&[
        ("debian-binary", b"2.0\n"),
        ("control.tar.zst", &zstd(b"Package: x\n")),
        ("data.tar.zst", &tar_zst),
    ]);
    let in_tar = packed_by_python(&dir, "e.zst", &zst, true);
    let in_zip = packed_by_python(&dir, "e.zst", &zst, false);
    let in_tgz = gzip(&in_tar);
    let in_tar_zst = zstd(&in_tar);
    let info = zstd_hiding(&packed_by_python(&dir, "index.json", b"{}", true));
    let conda = conda_by_python(&dir, &info, &tar_zst);
    let plain_deb = fixture("eicar.deb");
    let deb_in_tar = packed_by_python(&dir, "e.deb", &plain_deb, true);
    let deb_in_zip = packed_by_python(&dir, "e.deb", &plain_deb, false);
    let deb_bzipped = archived_by_python(&dir, "e.deb", &plain_deb, "ZIP_BZIP2");
    // Made by 7-Zip: `7zz a -tzip -mm=Deflate64`; and the same with each
    // entry's sizes in a data descriptor (without its signature) after
    // its data.
    let deb_deflate64 = fixture("eicar-deb-deflate64.zip");
    let deb_deflate64_streamed = fixture("eicar-deb-deflate64-streamed.zip");
    // Made by hwzip 2.3: a tar of eicar.deb and a text, imploded.
    let deb_imploded = fixture("eicar-deb-implode.zip");
    let deb_gz = gzip(&plain_deb);
    let deb_gz_in_tar = packed_by_python(&dir, "e.deb.gz", &deb_gz, true);
    let two_levels = packed_by_python(&dir, "x.tar.zst", &in_tar_zst, true);
    // Made by genisoimage (-J -R): pool/main/eicar.deb, and
    // Packages/clean.rpm.
    let iso = fixture("eicar-deb.iso");
    let clean_iso = fixture("clean-rpm.iso");
    // Made by GNU cpio: eicar.deb, -H newc and -H odc.
    let cpio = fixture("eicar-deb.cpio");
    let odc = fixture("eicar-deb-odc.cpio");
    // Made by Python's zipfile writing to a pipe: eicar.deb stored, its
    // sizes in a descriptor after its data.
    let streamed = fixture("eicar-deb-streamed.zip");
    let infected = [
        ("eicar.zst", &zst),
        ("eicar.tar.zst", &tar_zst),
        ("eicar-zst.deb", &deb),
        ("a .zst in a .tar.gz", &in_tgz),
        ("a .zst in a .tar.zst", &in_tar_zst),
        ("a .deb in a tar", &deb_in_tar),
        ("a .deb in a zip", &deb_in_zip),
        ("a .deb packed by bzip2 in a zip", &deb_bzipped),
        ("a .deb packed by Deflate64 in a zip", &deb_deflate64),
        (
            "a .deb packed by Deflate64 in a zip, sizes after the data",
            &deb_deflate64_streamed,
        ),
        ("a .deb in a tar imploded in a zip", &deb_imploded),
        ("a .zst in a tar", &in_tar),
        ("a .zst in a zip", &in_zip),
        ("eicar.conda", &conda),
        ("a .deb.gz", &deb_gz),
        ("a .deb.gz in a tar", &deb_gz_in_tar),
        ("a .deb in a .tar.xz", &packed_by("xz", &deb_in_tar)),
        (
            "a .deb in a .tar.xz by xz -9",
            &packed_by("xz -9", &deb_in_tar),
        ),
        ("a .deb in a .tar.bz2", &packed_by("bzip2", &deb_in_tar)),
        ("a .deb.xz", &packed_by("xz", &plain_deb)),
        ("a .zst in a .tar.zst in a tar", &two_levels),
        ("a .deb on an ISO image", &iso),
        ("a .deb on an ISO image in a .xz", &packed_by("xz", &iso)),
        ("a .deb in a cpio archive", &cpio),
        ("a .deb in a cpio archive (odc) in a .gz", &gzip(&odc)),
        ("a .deb stored in a zip written to a pipe", &streamed),
    ];
    let clean = zstd(&b"Nothing to see here.\n".repeat(5000));
    let clean_conda = conda_by_python(&dir, &info, &info);
    let clean_deb_gz = gzip(&ar(&[("debian-binary", b"2.0\n"), ("data.tar.zst", &info)]));
    let cut = zst[..zst.len() - 8].to_vec();
    let nested = [(
        "a .zst in a .tar.zst in a .tar.zst in a tar",
        packed_by_python(&dir, "y.tar.zst", &zstd(&two_levels), true),
    )];
    for (name, body) in infected
        .iter()
        .copied()
        .chain(nested.iter().map(|(n, b)| (*n, b)))
    {
        assert_eq!(clamd.verdict(body).await, Verdict::Clean, "clamd on {name}");
    }

    let url = "http://origin.test/f";
    let tcp = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let unix = TestServer::start(&["--clamd-url", &clamd.unix_url()]).await;
    for server in [&tcp, &unix] {
        let port = server.port();
        for (name, body) in infected {
            let answer = icap_respmod_with(port, url, body, "", "").await.unwrap();
            assert!(answer.is_infected(), "{name}: {answer:?}");
        }
        for body in [&clean, &clean_conda, &clean_deb_gz, &clean_iso] {
            let answer = icap_respmod_with(port, url, body, "", "").await.unwrap();
            assert!(answer.is_clean(), "{answer:?}");
        }
        let answer = icap_respmod_with(port, url, &cut, "", "").await.unwrap();
        assert!(answer.is_undecodable(), "cut short: {answer:?}");
        for (name, body) in &nested {
            let answer = icap_respmod_with(port, url, body, "", "").await.unwrap();
            assert!(answer.is_undecodable(), "{name}: {answer:?}");
        }
        let answer = upload_form(port, &form(&[("a.txt", b"hi"), ("e.zst", &zst)])).await;
        assert!(answer.is_infected(), "in a form: {answer:?}");
    }

    // At most 1,000 files are handed out per body, at all levels together:
    // two .tar.zst files of 600 .zst files each, in a tar, pass clamd as
    // OK and this server as undecodable (the ones past the 1,000th are
    // reported); one of them alone is clean.
    let tiny = zstd(b"tiny");
    let six_hundred = zstd(&copies_in_tar(&dir, "t.zst", &tiny, 600));
    let one = packed_by_python(&dir, "a.tar.zst", &six_hundred, true);
    let two = copies_in_tar(&dir, "a.tar.zst", &six_hundred, 2);
    assert_eq!(clamd.verdict(&two).await, Verdict::Clean, "clamd");
    let answer = icap_respmod_with(tcp.port(), url, &one, "", "")
        .await
        .unwrap();
    assert!(answer.is_clean(), "{answer:?}");
    let answer = icap_respmod_with(tcp.port(), url, &two, "", "")
        .await
        .unwrap();
    assert!(answer.is_undecodable(), "{answer:?}");

    // Content past the scan limit: too large (TOO_LARGE=block), not clean.
    let small =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--max-scan-size", "1M"]).await;
    let answer = icap_respmod_with(small.port(), url, &zstd(&vec![0u8; 4 << 20]), "", "")
        .await
        .unwrap();
    assert_eq!(answer.http_status, Some(403), "{answer:?}");
    assert!(answer.head.contains("too-large"), "{answer:?}");

    // Body files: by descriptor on the unix socket, unless taken apart;
    // and with one clamd slot over TCP, where the content streams while
    // the file's own bytes wait.
    let scanner = file_scanner(&clamd);
    let one_slot = one_slot_scanner(&clamd);
    let mut big = support::Rng(3).bytes(3 << 20);
    big.extend_from_slice(&eicar());
    let big_tar = zstd(&packed_by_python(&dir, "big.bin", &big, true));
    let big_conda = conda_by_python(&dir, &info, &big_tar);
    let big = zstd(&big);
    let bigs = [("big.zst", &big), ("big.conda", &big_conda)];
    for (name, body) in infected.into_iter().chain(bigs) {
        let path = support::write_file(&dir, name, body);
        // (The descriptor scanner's limit is 1 MiB.)
        let scanners = match body.len() < 1 << 20 {
            true => vec![&scanner, &one_slot],
            false => vec![&one_slot],
        };
        for s in scanners {
            let file = std::fs::File::open(&path).unwrap();
            let scan = s.scan_file(file, body.len() as u64, None, None);
            let (verdict, _) = tokio::time::timeout(Duration::from_secs(60), scan)
                .await
                .expect("a zstd file's scans take one clamd slot at a time");
            assert!(
                matches!(verdict, Verdict::Infected { .. }),
                "{name}: {verdict:?}"
            );
        }
    }

    // Through Squid: blocked with the page, and a clean one arrives whole.
    let files = HashMap::from([
        ("/eicar.tar.zst".to_owned(), Bytes::from(tar_zst.clone())),
        ("/clean.zst".to_owned(), Bytes::from(clean.clone())),
    ]);
    let origin = Origin::start(files).await;
    let squid = Squid::start("forward.conf", tcp.port());
    let (status, page) = squid.fetch(&origin.url("/eicar.tar.zst"), None).await;
    let page = String::from_utf8_lossy(&page);
    assert_eq!(status, 403, "{page}");
    assert!(page.contains(EICAR_NAME), "{page}");
    let (status, body) = squid.fetch(&origin.url("/clean.zst"), None).await;
    assert_eq!(status, 200);
    assert_eq!(body, clean);
    squid.assert_no_icap_errors();
}

const FORM_BOUNDARY: &str = "----WebKitFormBoundaryx7GZrC3sQ0Lk2pYe";

/// A multipart/form-data body as a browser sends it: a text field, then
/// each file.
fn form(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut body = format!(
        "--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\nmy files\r\n"
    )
    .into_bytes();
    for (name, content) in files {
        body.extend_from_slice(
            format!(
                "--{FORM_BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; \
                 filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{FORM_BOUNDARY}--\r\n").as_bytes());
    body
}

/// Sends `body` as a form upload (REQMOD) and reads the answer.
async fn upload_form(port: u16, body: &[u8]) -> support::IcapAnswer {
    let header = format!("Content-Type: multipart/form-data; boundary={FORM_BOUNDARY}");
    upload(port, &header, body).await
}

/// readme.txt of the zip fixtures (text, then EICAR) as a gzip file.
fn readme_gz() -> Vec<u8> {
    let mut readme = b"Nothing to see here.\n".repeat(100);
    readme.extend_from_slice(&eicar());
    let gz = gzip(&readme);
    let e = eicar();
    assert!(!gz.windows(e.len()).any(|w| w == e));
    gz
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn form_uploads_are_scanned_part_by_part() {
    let clamd = ClamdProcess::start();
    let gz = readme_gz();
    let clean_gz = gzip(&b"Nothing to see here.\n".repeat(100));
    let infected = form(&[("notes.txt", b"hello"), ("readme.txt.gz", &gz)]);
    // clamd alone finds the file alone, not in the form.
    assert!(matches!(clamd.verdict(&gz).await, Verdict::Infected { .. }));
    assert_eq!(clamd.verdict(&infected).await, Verdict::Clean);

    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let port = server.port();
    let answer = upload_form(port, &infected).await;
    assert!(answer.is_infected(), "{answer:?}");
    // A clean form passes; a zip clamd does not open is found in its part;
    // EICAR as a plain file still is.
    assert!(
        upload_form(port, &form(&[("a.gz", &clean_gz), ("b.txt", b"x")]))
            .await
            .is_clean()
    );
    let zip64 = form(&[("a.zip", &fixture("eicar-zip64.zip"))]);
    assert!(upload_form(port, &zip64).await.is_undecodable());
    assert!(upload_form(port, &form(&[("eicar.com", &eicar())]))
        .await
        .is_infected());
    // A form a server's parser may split otherwise than the scan did (Go's
    // takes bare line feeds): it could not be checked.
    let bare: Vec<u8> = form(&[("a.gz", &clean_gz)])
        .into_iter()
        .filter(|&b| b != b'\r')
        .collect();
    assert!(upload_form(port, &bare).await.is_undecodable());

    // Split mode, the body on the disk provider and clamd on its unix
    // socket, where a whole body file would otherwise go by descriptor.
    let redis = RedisProcess::start();
    let mount = support::TempDir::new("mount");
    let icap = support::free_port();
    let env = [
        ("REDIS_PORT", redis.port.to_string()),
        ("CLAMD_URL", clamd.unix_url()),
        ("ICAP_PORT", icap.to_string()),
        ("INLINE_MAX", "0".to_owned()),
        ("DISK_MIN", "0".to_owned()),
        ("SCAN_MOUNT", mount.path().display().to_string()),
    ];
    let _handler = Service::start(env!("CARGO_BIN_EXE_virus-scanner-handler"), &env);
    let producer = Service::start(env!("CARGO_BIN_EXE_virus-scanner-producer"), &env);
    producer.wait_port(icap, Duration::from_secs(20));
    assert!(upload_form(icap, &infected).await.is_infected());
    assert!(upload_form(icap, &form(&[("a.gz", &clean_gz)]))
        .await
        .is_clean());

    // Through Squid, from curl's own form encoding.
    let origin = Origin::start(HashMap::new()).await;
    let squid = Squid::start("forward.conf", port);
    let dir = support::TempDir::new("form");
    let bad = support::write_file(&dir, "readme.txt.gz", &gz);
    let good = support::write_file(&dir, "clean.txt.gz", &clean_gz);
    let url = origin.url("/upload");
    for (file, expected) in [(bad, 403), (good, 201)] {
        let field = format!("file=@{file}");
        let (status, page) = squid
            .fetch_with(&url, None, &["-F", "title=x", "-F", &field])
            .await;
        let page = String::from_utf8_lossy(&page);
        assert_eq!(status, expected, "{file}: {page}");
        if expected == 403 {
            assert!(page.contains(EICAR_NAME), "{page}");
        }
    }
    squid.assert_no_icap_errors();
}
