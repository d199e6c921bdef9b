//! Squid 5 (Debian's squid-openssl) as a forward proxy, sending REQMOD and
//! RESPMOD to the server, which scans with a real clamd; curl fetches from a
//! local origin through it.

mod support;

use std::collections::HashMap;

use bytes::Bytes;
use support::{eicar, fixture, project_dir, ClamdProcess, Origin, Squid, TestServer, EICAR_NAME};

/// A 50 MiB body that compresses poorly and repeats nowhere.
fn big_body() -> Bytes {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(50 << 20);
    while v.len() < 50 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    Bytes::from(v)
}

/// The downloads the origin serves, and the bodies behind them.
struct Files {
    clean: Bytes,
    medium: Bytes,
    big: Bytes,
    /// The first 5 MiB of `big`, then EICAR.
    infected_big: Bytes,
    by_path: HashMap<String, Bytes>,
}

/// Clean files small, `medium` and big (50 MiB), an empty one, EICAR
/// plain and zipped, and a large infected one; those ending in `.chunked`
/// are sent chunked, their length not known until the end.
fn files(medium: Bytes) -> Files {
    let clean = Bytes::from(b"Nothing to see here, just text.\n".repeat(100));
    let big = big_body();
    let mut infected_big = big.slice(..5 << 20).to_vec();
    infected_big.extend_from_slice(&eicar());
    let infected_big = Bytes::from(infected_big);
    let by_path = HashMap::from([
        ("/clean.txt".to_owned(), clean.clone()),
        ("/medium.bin".to_owned(), medium.clone()),
        ("/big.bin".to_owned(), big.clone()),
        ("/empty".to_owned(), Bytes::new()),
        ("/eicar.com".to_owned(), Bytes::from(eicar())),
        ("/eicar.zip".to_owned(), Bytes::from(fixture("eicar.zip"))),
        ("/infected-big.bin".to_owned(), infected_big.clone()),
        ("/medium.chunked".to_owned(), medium.clone()),
        ("/big.chunked".to_owned(), big.clone()),
        ("/eicar.chunked".to_owned(), Bytes::from(eicar())),
    ]);
    Files {
        clean,
        medium,
        big,
        infected_big,
        by_path,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_downloads_and_uploads_are_scanned() {
    let clamd = ClamdProcess::start();
    let server =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--max-scan-size", "100M"]).await;
    let Files {
        clean,
        medium,
        big,
        infected_big,
        by_path,
    } = files(Bytes::from(
        (0..200_000u32)
            .map(|i| (i * 7 % 256) as u8)
            .collect::<Vec<_>>(),
    ));
    let origin = Origin::start(by_path).await;
    let squid = Squid::start("forward.conf", server.port());

    for (path, want) in [
        ("/clean.txt", &clean),
        ("/medium.bin", &medium),
        ("/empty", &Bytes::new()),
        ("/big.bin", &big),
        ("/medium.chunked", &medium),
        ("/big.chunked", &big),
    ] {
        squid
            .assert_arrives_whole(&origin.url(path), want, path, "")
            .await;
    }
    // HEAD: the response has no body, whatever its Content-Length says.
    for path in ["/big.bin", "/eicar.com"] {
        let (status, head) = squid.fetch_with(&origin.url(path), None, &["-I"]).await;
        let head = String::from_utf8_lossy(&head);
        assert_eq!(status, 200, "HEAD {path}: {head}");
    }
    for path in ["/eicar.com", "/eicar.zip", "/eicar.chunked"] {
        let (status, body) = squid.fetch(&origin.url(path), None).await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{path}: {page}");
        assert!(
            page.contains(EICAR_NAME) && page.contains(path),
            "{path}: {page}"
        );
    }
    // A large infected download: the answer has started before the scan
    // ends, so it is cut off, never completed.
    let (_, body) = squid.fetch(&origin.url("/infected-big.bin"), None).await;
    assert!(
        body.len() < (5 << 20) + eicar().len(),
        "the infected download arrived whole"
    );
    assert!(
        !body.windows(eicar().len()).any(|w| w == eicar()),
        "the test string reached the client"
    );

    let (status, body) = squid.fetch(&origin.url("/upload"), Some(&eicar())).await;
    assert_eq!(status, 403, "{}", String::from_utf8_lossy(&body));
    assert!(String::from_utf8_lossy(&body).contains(EICAR_NAME));
    let (status, _) = squid.fetch(&origin.url("/upload"), Some(&clean)).await;
    assert_eq!(status, 201);
    // Uploads of unknown length: the client sends them chunked, and so does
    // Squid in its REQMOD.
    let chunked = ["-H", "Transfer-Encoding: chunked"];
    let mut infected_upload = medium.to_vec();
    infected_upload.extend_from_slice(&eicar());
    let (status, body) = squid
        .fetch_with(&origin.url("/upload"), Some(&infected_upload), &chunked)
        .await;
    assert_eq!(status, 403, "chunked: {}", String::from_utf8_lossy(&body));
    let (status, body) = squid
        .fetch_with(&origin.url("/upload"), Some(&medium), &chunked)
        .await;
    assert_eq!(status, 201, "chunked clean upload");
    assert_eq!(body, support::stored(&medium).into_bytes());
    // Uploads are kept whole until the verdict (past ECHO_HOLD in a
    // temporary file), so a large infected one gets the block page too,
    // and a clean one reaches the origin unchanged.
    for headers in [&[][..], &chunked[..]] {
        let (status, body) = squid
            .fetch_with(&origin.url("/upload"), Some(&infected_big), headers)
            .await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{headers:?}: {page}");
        assert!(page.contains(EICAR_NAME), "{headers:?}: {page}");
        let (status, body) = squid
            .fetch_with(&origin.url("/upload"), Some(&big), headers)
            .await;
        assert_eq!(
            status,
            201,
            "{headers:?}\ncache.log:\n{}\naccess.log:\n{}",
            squid.cache_log(),
            squid.access_log()
        );
        assert_eq!(body, support::stored(&big).into_bytes(), "{headers:?}");
    }

    squid.assert_no_icap_errors();
}

/// A file fetched in ranges, each too short to hold EICAR whole: with
/// RANGE_REQUESTS=whole the Range header is removed in REQMOD, the origin
/// sends the whole file, and RESPMOD scans all of it. (Squid's own
/// `range_offset_limit` does not help here: Squid only fetches whole files
/// it may cache.) With the default, each range is scanned on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranges_of_a_file_are_scanned_whole_when_configured() {
    let clamd = ClamdProcess::start();
    let clean = Bytes::from(b"Nothing to see here, just text.\n".repeat(100));
    let files = HashMap::from([
        ("/eicar.com".to_owned(), Bytes::from(eicar())),
        ("/clean.txt".to_owned(), clean.clone()),
    ]);
    let origin = Origin::start(files).await;
    let whole =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--range-requests", "whole"]).await;
    let squid = Squid::start("forward.conf", whole.port());
    // Both halves of the test file: neither alone matches the signature.
    for range in ["0-29", "30-67"] {
        let (status, body) = squid
            .fetch_with(&origin.url("/eicar.com"), None, &["-r", range])
            .await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(status, 403, "{range}: {page}");
        assert!(page.contains(EICAR_NAME), "{range}: {page}");
    }
    // A range of a clean file: the whole file comes back, as HTTP allows.
    let (status, body) = squid
        .fetch_with(&origin.url("/clean.txt"), None, &["-r", "10-19"])
        .await;
    assert_eq!(status, 200);
    assert_eq!(body, clean);
    squid.assert_no_icap_errors();
    drop(squid);

    // The default passes ranges on: each part alone is clean.
    let parts = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let squid = Squid::start("forward.conf", parts.port());
    let (status, body) = squid
        .fetch_with(&origin.url("/eicar.com"), None, &["-r", "0-29"])
        .await;
    assert_eq!(status, 206);
    assert_eq!(body, eicar()[..30]);
}

/// The shipped forward.conf with one ICAP setting changed, for each
/// setting an operator might change: downloads (one trickled back while it
/// is scanned) and uploads are still scanned, with no ICAP error.
/// - `icap_persistent_connections off`: a connection per transaction, each
///   request saying `Connection: close`, which the server answers and then
///   closes;
/// - `icap_preview_enable off`: no preview; Squid sends `Allow: 204` only
///   where it could keep the body, so larger clean bodies are echoed back;
/// - `icap_206_enable off`: Squid offers no `Allow: 206`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_with_other_icap_settings() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let clean = Bytes::from(b"Nothing to see here, just text.\n".repeat(100));
    let medium = support::patterned(300_000);
    let files = HashMap::from([
        ("/clean.txt".to_owned(), clean.clone()),
        ("/medium.bin".to_owned(), medium.clone()),
        ("/eicar.com".to_owned(), Bytes::from(eicar())),
    ]);
    let origin = Origin::start(files).await;
    let shipped = std::fs::read_to_string(project_dir().join("squid/forward.conf")).unwrap();
    for (line, changed) in [
        (
            "icap_persistent_connections on",
            "icap_persistent_connections off",
        ),
        ("icap_preview_enable on", "icap_preview_enable off"),
        ("icap_enable on", "icap_enable on\nicap_206_enable off"),
    ] {
        assert!(shipped.contains(&format!("\n{line}\n")), "{line}");
        let squid = Squid::start_with("forward.conf", server.port(), &[(line, changed.to_owned())]);
        for _ in 0..2 {
            for (path, want) in [("/clean.txt", &clean), ("/medium.bin", &medium)] {
                let (status, body) = squid.fetch(&origin.url(path), None).await;
                assert_eq!(status, 200, "{changed}: {path}");
                assert!(
                    body == want.as_ref(),
                    "{changed}: {path}: {} bytes",
                    body.len()
                );
            }
            let (status, body) = squid.fetch(&origin.url("/eicar.com"), None).await;
            assert_eq!(status, 403, "{changed}");
            assert!(
                String::from_utf8_lossy(&body).contains(EICAR_NAME),
                "{changed}"
            );
            let (status, _) = squid.fetch(&origin.url("/upload"), Some(&eicar())).await;
            assert_eq!(status, 403, "{changed}: upload");
            let (status, _) = squid.fetch(&origin.url("/upload"), Some(&medium)).await;
            assert_eq!(status, 201, "{changed}: clean upload");
        }
        squid.assert_no_icap_errors();
    }
}

/// An upload of unknown length that outgrows the scan limit, with
/// `TOO_LARGE=allow`: what was kept goes on, the rest streams after it, and
/// the origin gets it whole; one of known length is let through from the
/// start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_past_the_scan_limit_passes_when_allowed() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&[
        "--clamd-url",
        &clamd.tcp_url(),
        "--max-scan-size",
        "1M",
        "--too-large",
        "allow",
    ])
    .await;
    let origin = Origin::start(HashMap::new()).await;
    let squid = Squid::start("forward.conf", server.port());
    let upload = support::patterned(3_000_000);
    for headers in [&[][..], &["-H", "Transfer-Encoding: chunked"][..]] {
        let (status, body) = squid
            .fetch_with(&origin.url("/upload"), Some(&upload), headers)
            .await;
        assert_eq!(status, 201, "{headers:?}");
        assert_eq!(body, support::stored(&upload).into_bytes(), "{headers:?}");
    }
    squid.assert_no_icap_errors();
}

/// Large uploads sent at once, faster than the scanner takes them, all
/// arrive. With Squid 5.7's default request buffer (512 KB) some clients
/// had their connection reset (Squid bug 5405: 6 of 24 such uploads here);
/// the shipped configurations raise it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_large_uploads_all_arrive() {
    let clamd = ClamdProcess::start();
    let server =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--max-scan-size", "100M"]).await;
    let origin = Origin::start(HashMap::new()).await;
    let squid = std::sync::Arc::new(Squid::start("forward.conf", server.port()));
    let big = big_body();
    let url = origin.url("/upload");
    let mut uploads = Vec::new();
    for _ in 0..4 {
        let (squid, big, url) = (squid.clone(), big.clone(), url.clone());
        uploads.push(tokio::spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..2 {
                answers.push(squid.fetch(&url, Some(&big)).await);
            }
            answers
        }));
    }
    let stored = support::stored(&big).into_bytes();
    for upload in uploads {
        for (status, body) in upload.await.unwrap() {
            assert_eq!(status, 201, "access.log:\n{}", squid.access_log());
            assert_eq!(body, stored);
        }
    }
    squid.assert_no_icap_errors();
}

/// Squid in front of the split mode: a producer queueing to Redis, two
/// handlers scanning with clamd. Bodies of each data provider (inline,
/// streamed through Redis, on disk) go through as with `all`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_through_a_producer_and_two_handlers() {
    const PRODUCER: &str = env!("CARGO_BIN_EXE_virus-scanner-producer");
    const HANDLER: &str = env!("CARGO_BIN_EXE_virus-scanner-handler");
    let redis = support::RedisProcess::start();
    let clamd = ClamdProcess::start();
    // Past INLINE_MAX (256K): streamed through Redis, or on the mount.
    let f = files(support::patterned(1_000_000));
    let origin = Origin::start(f.by_path.clone()).await;
    let mount = support::TempDir::new("mount");
    for disk in [false, true] {
        let mut env = vec![
            ("REDIS_HOST", "127.0.0.1".to_owned()),
            ("REDIS_PORT", redis.port.to_string()),
            ("CLAMD_URL", clamd.tcp_url()),
            ("MAX_SCAN_SIZE", "100M".to_owned()),
        ];
        if disk {
            env.push(("SCAN_MOUNT", mount.path().display().to_string()));
        }
        let port = support::free_port();
        let mut producer_env = env.clone();
        producer_env.push(("ICAP_PORT", port.to_string()));
        let producer = support::Service::start(PRODUCER, &producer_env);
        producer.wait_port(port, std::time::Duration::from_secs(20));
        let handlers = [
            support::Service::start(HANDLER, &env),
            support::Service::start(HANDLER, &env),
        ];
        let squid = Squid::start("forward.conf", port);
        for (path, want) in [
            ("/clean.txt", &f.clean),
            ("/medium.bin", &f.medium),
            ("/empty", &Bytes::new()),
            ("/big.bin", &f.big),
            ("/big.chunked", &f.big),
        ] {
            let context = format!("disk {disk}: {path}");
            squid
                .assert_arrives_whole(&origin.url(path), want, &context, &producer.log())
                .await;
        }
        for path in ["/eicar.com", "/eicar.zip"] {
            let (status, body) = squid.fetch(&origin.url(path), None).await;
            let page = String::from_utf8_lossy(&body);
            assert_eq!(status, 403, "disk {disk}: {path}: {page}");
            assert!(page.contains(EICAR_NAME), "disk {disk}: {path}: {page}");
        }
        let (_, body) = squid.fetch(&origin.url("/infected-big.bin"), None).await;
        assert!(
            !body.windows(eicar().len()).any(|w| w == eicar()),
            "disk {disk}: the test string reached the client"
        );
        for (upload, want) in [
            (Bytes::from(eicar()), 403),
            (f.clean.clone(), 201),
            (f.big.clone(), 201),
            (f.infected_big.clone(), 403),
        ] {
            let (status, body) = squid.fetch(&origin.url("/upload"), Some(&upload)).await;
            assert_eq!(
                status,
                want,
                "disk {disk}: upload of {} bytes: {}",
                upload.len(),
                String::from_utf8_lossy(&body[..body.len().min(500)])
            );
        }
        squid.assert_no_icap_errors();
        // Each provider was used, by both handlers between them.
        let logs = handlers.iter().map(|h| h.log()).collect::<String>();
        let large = if disk { "disk" } else { "stream" };
        for provider in ["inline", large] {
            assert!(
                logs.contains(&format!("provider=\"{provider}\"")),
                "disk {disk}: no {provider} body scanned:\n{logs}"
            );
        }
        assert!(!producer.log().contains("ERROR"), "{}", producer.log());
    }
    let left: Vec<_> = std::fs::read_dir(mount.path()).unwrap().collect();
    assert!(left.is_empty(), "body files left on the mount: {left:?}");
}
