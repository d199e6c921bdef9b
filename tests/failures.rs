//! What happens when things go wrong: clamd stopped and started again,
//! malformed ICAP, slow and too many clients, oversized bodies, shutdown.

mod support;

use std::time::Duration;

use support::{
    c_icap_text, eicar, raw_exchange, write_file, ClamdProcess, TempDir, TestServer, EICAR_NAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A server started before its clamd answers OPTIONS with `VS-unknown`,
/// and with clamd's ISTag a few seconds after clamd comes up, not a
/// VERSION_REFRESH (a minute) later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_istag_follows_a_clamd_that_starts_late() {
    let mut clamd = ClamdProcess::start();
    let expected = {
        let reference = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
        support::istag(reference.port()).await
    };
    clamd.stop();
    let port = support::free_port();
    let server = support::Service::start_with(
        env!("CARGO_BIN_EXE_virus-scanner"),
        &["all"],
        &[
            ("ICAP_PORT", port.to_string()),
            ("CLAMD_URL", clamd.tcp_url()),
            ("CLAMD_CONNECT_TIMEOUT", "1s".into()),
        ],
    );
    server.wait_port(port, Duration::from_secs(20));
    assert_eq!(support::istag(port).await, "\"VS-unknown\"");
    clamd.restart();
    assert_eq!(
        support::known_istag(port, Duration::from_secs(20)).await,
        expected
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_down_fails_closed_and_recovery_is_automatic() {
    let mut clamd = ClamdProcess::start();
    let server = TestServer::start(&[
        "--clamd-url",
        &clamd.tcp_url(),
        "--clamd-connect-timeout",
        "1s",
    ])
    .await;
    let dir = TempDir::new("down");
    let clean = write_file(&dir, "clean.txt", &b"plain text\n".repeat(300));
    let args = |out: &str| {
        vec![
            "-s".to_owned(),
            "avscan".into(),
            "-v".into(),
            "-f".into(),
            clean.clone(),
            "-o".into(),
            out.to_owned(),
            "-resp".into(),
            "http://origin.test/f".into(),
        ]
    };
    let port = server.port();
    let run = |n: u32| {
        let out = dir.path().join(format!("out{n}")).display().to_string();
        let a = args(&out);
        async move {
            let refs: Vec<&str> = a.iter().map(String::as_str).collect();
            (
                c_icap_text(port, &refs).await,
                std::fs::read_to_string(&out).unwrap_or_default(),
            )
        }
    };
    let (t, _) = run(1).await;
    assert!(t.contains("ICAP/1.0 204"), "{t}");

    clamd.stop();
    let (t, page) = run(2).await;
    assert!(
        t.contains("HTTP/1.1 503 Service Unavailable"),
        "clamd down must fail closed:\n{t}"
    );
    assert!(page.contains("virus scanner unavailable"), "{page}");

    clamd.restart();
    let (t, _) = run(3).await;
    assert!(
        t.contains("ICAP/1.0 204"),
        "no recovery after clamd came back:\n{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_passes_marked() {
    let mut clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--fail-mode", "open"]).await;
    clamd.stop();
    let dir = TempDir::new("open");
    let bad = write_file(&dir, "eicar.com", &eicar());
    let t = c_icap_text(
        server.port(),
        &["-s", "avscan", "-v", "-f", &bad, "-resp", "http://x/e"],
    )
    .await;
    assert!(t.contains("ICAP/1.0 204"), "{t}");
    assert!(
        t.contains("X-Virus-Scanner-Warning: not scanned; reason=scanner-failed"),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_bodies_are_blocked_or_marked() {
    let clamd = ClamdProcess::start();
    let dir = TempDir::new("size");
    let big = write_file(&dir, "big.bin", &vec![b'x'; 8192]);
    let blocking =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--max-scan-size", "4K"]).await;
    // Content-Length says too large: the preview is answered at once with the
    // page (c-icap-client only reports the status of an answer to a preview).
    let t = c_icap_text(
        blocking.port(),
        &[
            "-s",
            "avscan",
            "-d",
            "10",
            "-f",
            &big,
            "-resp",
            "http://x/big.bin",
        ],
    )
    .await;
    assert!(t.contains("Preview response was with status: 200"), "{t}");
    let out = dir.path().join("page").display().to_string();
    let t = c_icap_text(
        blocking.port(),
        &[
            "-s",
            "avscan",
            "-v",
            "-nopreview",
            "-f",
            &big,
            "-o",
            &out,
            "-resp",
            "http://x/big.bin",
        ],
    )
    .await;
    assert!(t.contains("HTTP/1.1 403 Forbidden"), "{t}");
    assert!(std::fs::read_to_string(&out)
        .unwrap()
        .contains("too large to scan"));
    let allowing = TestServer::start(&[
        "--clamd-url",
        &clamd.tcp_url(),
        "--max-scan-size",
        "4K",
        "--too-large",
        "allow",
    ])
    .await;
    let t = c_icap_text(
        allowing.port(),
        &[
            "-s",
            "avscan",
            "-v",
            "-f",
            &big,
            "-resp",
            "http://x/big.bin",
        ],
    )
    .await;
    assert!(t.contains("ICAP/1.0 204"), "{t}");
    assert!(
        t.contains("X-Virus-Scanner-Warning: not scanned; reason=too-large"),
        "{t}"
    );
}

/// A body clamd itself refuses as over its StreamMaxLength (MAX_SCAN_SIZE
/// set above it) is too large to scan, not a scanner failure: the
/// too-large policy decides, even with the failure mode open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_clamd_refuses_as_too_large_follows_the_too_large_policy() {
    let clamd = ClamdProcess::start_with_stream_max("1M");
    let url = clamd.tcp_url();
    let dir = TempDir::new("refused");
    let big = write_file(&dir, "big.bin", &vec![b'x'; 3 << 20]);
    let out = dir.path().join("page").display().to_string();
    let server = |too_large| {
        let args = [
            "--clamd-url",
            &url,
            "--max-scan-size",
            "300M",
            "--fail-mode",
            "open",
            "--too-large",
            too_large,
        ];
        async move { TestServer::start(&args).await }
    };
    // Whole bodies without preview: c-icap-client sends `Allow: 204`, so
    // the answer waits for the verdict.
    let respmod = |port, save_page: bool| {
        let mut args = vec!["-s", "avscan", "-v", "-nopreview", "-f", &big];
        if save_page {
            args.extend(["-o", &out]);
        }
        args.extend(["-resp", "http://x/big.bin"]);
        async move { c_icap_text(port, &args).await }
    };
    let blocking = server("block").await;
    let t = respmod(blocking.port(), true).await;
    assert!(t.contains("HTTP/1.1 403 Forbidden"), "{t}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.contains("too large to scan"), "{page}");
    assert!(page.contains("the virus scanner can take"), "{page}");
    let allowing = server("allow").await;
    let t = respmod(allowing.port(), false).await;
    assert!(t.contains("ICAP/1.0 204"), "{t}");
    assert!(
        t.contains("X-Virus-Scanner-Warning: not scanned; reason=too-large"),
        "{t}"
    );
}

/// A small zip whose one file (20 MiB of zeros, then EICAR) is past
/// clamd's own MaxFileSize: clamd does not scan it, and by default answers
/// OK, so the file passes, as with any ICAP server on that clamd. clamd
/// 1.4 says so only with AlertExceedsMax and its MaxScanSize no larger than
/// MaxFileSize (the README says so); then the body is too large to scan:
/// blocked, not called clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_past_clamds_own_limits_is_too_large_when_clamd_says_so() {
    let dir = TempDir::new("limits");
    let zip = support::fixture("eicar-after-20m.zip");
    assert!(zip.len() < 64 << 10, "{}", zip.len());
    let zip = write_file(&dir, "setup.zip", &zip);
    let out = dir.path().join("page").display().to_string();
    let respmod = |port, save_page: bool| {
        let mut args = vec!["-s", "avscan", "-v", "-f", &zip];
        if save_page {
            args.extend(["-o", &out]);
        }
        args.extend(["-resp", "http://x/setup.zip"]);
        async move { c_icap_text(port, &args).await }
    };
    // Under MaxFileSize, EICAR at the end of the file is found.
    let roomy = ClamdProcess::start_with_limits("30M", "30M", "");
    let server = TestServer::start(&["--clamd-url", &roomy.tcp_url()]).await;
    let t = respmod(server.port(), false).await;
    assert!(t.contains(EICAR_NAME), "{t}");
    // Past it, clamd's default: OK, which nobody here can tell from clean;
    // AlertExceedsMax alone changes nothing while MaxScanSize is larger.
    let silent = ClamdProcess::start_with_limits("10M", "15M", "AlertExceedsMax yes\n");
    let server = TestServer::start(&["--clamd-url", &silent.tcp_url()]).await;
    let t = respmod(server.port(), false).await;
    assert!(
        t.contains("No modification needed (Allow 204 response)"),
        "{t}"
    );
    // With AlertExceedsMax and MaxScanSize at MaxFileSize: too large to
    // scan.
    let alerting = ClamdProcess::start_with_limits("10M", "10M", "AlertExceedsMax yes\n");
    let server = TestServer::start(&["--clamd-url", &alerting.tcp_url()]).await;
    let t = respmod(server.port(), true).await;
    assert!(t.contains("HTTP/1.1 403 Forbidden"), "{t}");
    let page = std::fs::read_to_string(&out).unwrap();
    assert!(page.contains("too large to scan"), "{page}");
}

/// A server on a real clamd with a trusted list, and an EICAR file to send
/// it.
struct Trusting {
    _clamd: ClamdProcess,
    server: TestServer,
    _dir: TempDir,
    bad: String,
}

impl Trusting {
    /// The server with `setting` (a trusted-list flag) set to `value`.
    async fn start(setting: &str, value: &str) -> Trusting {
        let clamd = ClamdProcess::start();
        let server = TestServer::start(&["--clamd-url", &clamd.tcp_url(), setting, value]).await;
        let dir = TempDir::new("trusted");
        let bad = write_file(&dir, "eicar.com", &eicar());
        Trusting {
            _clamd: clamd,
            server,
            _dir: dir,
            bad,
        }
    }

    /// Sends EICAR as a download of `url`, with `X-Client-IP: client` when
    /// given; returns what c-icap-client printed.
    async fn eicar(&self, url: &str, client: Option<&str>) -> String {
        let header = client.map(|c| format!("X-Client-IP: {c}"));
        let mut args = vec!["-s", "avscan", "-v", "-f", &self.bad, "-resp", url];
        if let Some(h) = &header {
            args.extend(["-x", h]);
        }
        c_icap_text(self.server.port(), &args).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_hosts_skip_the_scan() {
    let t = Trusting::start("--trusted-hosts", ".updates.example, cdn.test").await;
    for url in ["http://dl.updates.example/e", "http://cdn.test/e"] {
        let out = t.eicar(url, None).await;
        assert!(out.contains("ICAP/1.0 204"), "{url}: {out}");
    }
    let out = t.eicar("http://notcdn.test/e", None).await;
    assert!(out.contains(EICAR_NAME), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_clients_skip_the_scan() {
    let t = Trusting::start("--trusted-clients", "10.1.0.0/16, 192.0.2.7, fd00::/8").await;
    // The client as Squid reports it (icap_send_client_ip on), here from
    // c-icap-client; IPv4 written as IPv6 counts as IPv4.
    for client in ["10.1.2.3", "192.0.2.7", "fd00::1", "::ffff:10.1.200.9"] {
        let out = t.eicar("http://files.test/e", Some(client)).await;
        assert!(out.contains("ICAP/1.0 204"), "{client}: {out}");
    }
    for client in [Some("10.2.0.1"), Some("192.0.2.8"), Some("fe80::1"), None] {
        let out = t.eicar("http://files.test/e", client).await;
        assert!(out.contains(EICAR_NAME), "{client:?}: {out}");
    }
}

/// The status line of a raw answer.
fn status_of(answer: &[u8]) -> String {
    String::from_utf8_lossy(answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_icap_gets_its_status_while_others_are_served() {
    let clamd = ClamdProcess::start();
    let server =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--head-timeout", "1s"]).await;
    // A slow client holds a connection with half a head...
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"RESPMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: x\r\n")
        .await
        .unwrap();
    // ...while the malformed ones get their answers...
    let cases: &[(&[u8], &str)] = &[
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "ICAP/1.0 501"),
        (b"REQMOD icap://h/avscan ICAP/2.0\r\nEncapsulated: null-body=0\r\n\r\n", "ICAP/1.0 505"),
        (b"RESPMOD icap://h/avscan ICAP/1.0\r\nHost: h\r\n\r\n", "ICAP/1.0 400"),
        (b"RESPMOD icap://h/avscan ICAP/1.0\r\nEncapsulated: res-hdr=0, res-body=9999999\r\n\r\n", "ICAP/1.0 400"),
        (b"REQMOD icap://h/avscan ICAP/1.0\r\nEncapsulated: req-hdr=0, req-body=40\r\n\r\nPOST / HTTP/1.1\r\nHost: x\r\nA: b\r\n\r\nZZZ\r\n", "ICAP/1.0 400"),
        (b"OPTIONS icap://h/avscan ICAP/1.0\nHost: x\n\n", "ICAP/1.0 400"),
        (&[0xff; 64], "ICAP/1.0 400"),
        // ICAP's methods are case-sensitive, and its URIs absolute.
        (b"options icap://h/avscan ICAP/1.0\r\nHost: x\r\n\r\n", "ICAP/1.0 501"),
        (b"OPTIONS /avscan ICAP/1.0\r\nHost: x\r\n\r\n", "ICAP/1.0 400"),
        // A chunk size beyond any integer, and one that is negative.
        (b"RESPMOD icap://h/avscan ICAP/1.0\r\nHost: h\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\nFFFFFFFFFFFFFFFFFFFF\r\nabc", "ICAP/1.0 400"),
        (b"RESPMOD icap://h/avscan ICAP/1.0\r\nHost: h\r\nEncapsulated: res-hdr=0, res-body=19\r\n\r\nHTTP/1.1 200 OK\r\n\r\n-5\r\nabc", "ICAP/1.0 400"),
    ];
    for (bytes, want) in cases {
        let answer = raw_exchange(server.addr, bytes, Duration::from_secs(5)).await;
        assert!(
            status_of(&answer).starts_with(want),
            "{:?} got {:?}",
            String::from_utf8_lossy(bytes),
            status_of(&answer)
        );
        assert!(String::from_utf8_lossy(&answer).contains("Connection: close"));
    }
    // ...and a well-behaved client is served meanwhile.
    let t = c_icap_text(server.port(), &["-s", "avscan"]).await;
    assert!(t.contains("ICAP/1.0 200 OK"), "{t}");
    // The slow one gets 408 once its head time is up.
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), slow.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        status_of(&answer).starts_with("ICAP/1.0 408"),
        "{:?}",
        status_of(&answer)
    );
}

/// A client that sends its next request before the answer to the last
/// (nothing in RFC 3507 forbids it, though Squid waits) gets its answers in
/// order, each to its own request; `Connection: close` on the last one
/// ends the connection after its answer, which says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order_until_connection_close() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let respmod = |body: &[u8], last: bool| {
        let res = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\r\n";
        let mut msg = format!(
            "RESPMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\n{}\
             Encapsulated: res-hdr=0, res-body={}\r\n\r\n{res}{:x}\r\n",
            if last { "Connection: close\r\n" } else { "" },
            res.len(),
            body.len()
        )
        .into_bytes();
        msg.extend_from_slice(body);
        msg.extend_from_slice(b"\r\n0\r\n\r\n");
        msg
    };
    let mut both = respmod(b"a clean body", false);
    both.extend(respmod(&eicar(), true));
    let mut conn = TcpStream::connect(server.addr).await.unwrap();
    conn.write_all(&both).await.unwrap();
    let mut answer = Vec::new();
    // The idle timeout is 10 minutes: only the close ends this read.
    tokio::time::timeout(Duration::from_secs(30), conn.read_to_end(&mut answer))
        .await
        .expect("the connection ends after the answer to `Connection: close`")
        .unwrap();
    let text = String::from_utf8_lossy(&answer);
    let clean = text.find("ICAP/1.0 204").expect("the clean body's 204");
    let blocked = text
        .find("ICAP/1.0 200")
        .expect("the infected body's answer");
    assert!(clean < blocked, "{text}");
    assert_eq!(text.matches("ICAP/1.0 ").count(), 2, "{text}");
    let (first, last) = text.split_at(blocked);
    assert!(!first.contains("Connection: close"), "{text}");
    let last_head = &last[..last.find("\r\n\r\n").unwrap()];
    assert!(last_head.contains("Connection: close"), "{text}");
    assert!(last.contains(EICAR_NAME), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_maximum_get_503() {
    let clamd = ClamdProcess::start();
    let server =
        TestServer::start(&["--clamd-url", &clamd.tcp_url(), "--max-connections", "2"]).await;
    let _a = TcpStream::connect(server.addr).await.unwrap();
    let _b = TcpStream::connect(server.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw_exchange(
        server.addr,
        b"OPTIONS icap://h/avscan ICAP/1.0\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(
        status_of(&answer).starts_with("ICAP/1.0 503"),
        "{:?}",
        status_of(&answer)
    );
    drop(_a);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let answer = raw_exchange(
        server.addr,
        b"OPTIONS icap://h/avscan ICAP/1.0\r\n\r\n",
        Duration::from_millis(500),
    )
    .await;
    assert!(
        status_of(&answer).starts_with("ICAP/1.0 200"),
        "{:?}",
        status_of(&answer)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_the_transaction_in_flight() {
    let clamd = ClamdProcess::start();
    let port = support::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_virus-scanner"))
        .arg("all")
        .env("CLAMD_URL", clamd.tcp_url())
        .env("ICAP_PORT", port.to_string())
        .env("PRODUCER_PORT", "0")
        .env("METRICS_PORT", "0")
        .env("LISTEN_ADDR", "127.0.0.1")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    support::wait_port(port, Duration::from_secs(10));
    let head = b"RESPMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: x\r\nAllow: 204\r\n\
Encapsulated: res-hdr=0, res-body=38\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\n";
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(head).await.unwrap();
    s.write_all(b"4\r\nbody\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // New connections are refused once draining has begun...
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    // ...but the transaction in flight completes.
    s.write_all(b"4\r\nmore\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(
        status_of(&answer).starts_with("ICAP/1.0 204"),
        "{:?}",
        String::from_utf8_lossy(&answer)
    );
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status:?}");
}
