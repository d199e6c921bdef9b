//! ICAPS: ICAP over TLS on ICAPS_PORT. Squid (squid-openssl) connects with
//! `icaps://` and checks the certificate against its `tls-cafile`;
//! c-icap-client -tls scans over it too; openssl s_client checks the
//! certificate reload on SIGHUP and the client-certificate requirement.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use support::{eicar, make_certs, ClamdProcess, Origin, Service, Squid, TempDir, EICAR_NAME};

/// Starts `virus-scanner all` with ICAPS on a free port; returns it and the
/// ICAPS port.
fn start(clamd: &ClamdProcess, dir: &TempDir, client_ca: bool) -> (Service, u16) {
    let icaps = support::free_port();
    let file = |n: &str| dir.path().join(n).display().to_string();
    let mut env = vec![
        ("ICAP_PORT", "0".to_owned()),
        ("ICAPS_PORT", icaps.to_string()),
        ("ICAPS_CERT", file("server.crt")),
        ("ICAPS_KEY", file("server.key")),
        ("CLAMD_URL", clamd.tcp_url()),
    ];
    if client_ca {
        env.push(("ICAPS_CLIENT_CA", file("ca.crt")));
    }
    let server = Service::start_with(env!("CARGO_BIN_EXE_virus-scanner"), &["all"], &env);
    server.wait_port(icaps, Duration::from_secs(20));
    (server, icaps)
}

/// An OPTIONS request over TLS with openssl s_client; returns what it
/// printed (the certificate's details and the ICAP answer).
fn s_client(port: u16, dir: &TempDir, args: &[&str]) -> String {
    let mut cmd = std::process::Command::new("openssl");
    cmd.args([
        "s_client",
        "-connect",
        &format!("127.0.0.1:{port}"),
        "-quiet",
        "-no_ign_eof",
        "-verify_return_error",
    ])
    .arg("-CAfile")
    .arg(dir.path().join("ca.crt"))
    .args(args)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().expect("openssl is installed");
    use std::io::Write;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(b"OPTIONS icap://127.0.0.1/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\nEncapsulated: null-body=0\r\nConnection: close\r\n\r\n")
        .unwrap();
    // Keep stdin open until the server has answered and closed.
    let out = {
        let handle = std::thread::spawn(move || child.wait_with_output().unwrap());
        std::thread::sleep(Duration::from_millis(1500));
        drop(stdin);
        handle.join().unwrap()
    };
    support::output_text(&out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_over_icaps_scans_downloads_and_uploads() {
    let clamd = ClamdProcess::start();
    let dir = TempDir::new("icaps");
    make_certs(dir.path(), &["server"]);
    let (server, icaps) = start(&clamd, &dir, false);
    let clean = Bytes::from(b"Nothing to see here, just text.\n".repeat(3000));
    let files = HashMap::from([
        ("/clean.txt".to_owned(), clean.clone()),
        ("/eicar.com".to_owned(), Bytes::from(eicar())),
    ]);
    let origin = Origin::start(files.clone()).await;
    let https = Origin::start_tls(
        files,
        &dir.path().join("server.crt"),
        &dir.path().join("server.key"),
    )
    .await;
    let bump = support::bump_ca();
    let ca = dir.path().join("ca.crt").display().to_string();
    let squid = Squid::start_with(
        "icaps.conf",
        icaps,
        &[
            ("@TLS_CA@", ca.clone()),
            ("@BUMP_DIR@", bump.path().display().to_string()),
            ("@ORIGIN_CA@", ca),
        ],
    );
    let bump_ca = bump.path().join("bump-ca.crt").display().to_string();
    let curl = ["--cacert", bump_ca.as_str()];

    // Plain HTTP and bumped HTTPS, both scanned over ICAPS.
    for (url, args) in [
        (origin.url("/clean.txt"), &[][..]),
        (https.https_url("/clean.txt"), &curl[..]),
    ] {
        let (code, body) = squid.fetch_with(&url, None, args).await;
        assert_eq!(code, 200, "{url}: {}\n{}", squid.cache_log(), server.log());
        assert_eq!(body, clean, "{url}: the clean file arrives byte for byte");
    }
    for (url, args) in [
        (origin.url("/eicar.com"), &[][..]),
        (https.https_url("/eicar.com"), &curl[..]),
        (https.https_url("/upload"), &curl[..]),
    ] {
        let upload = url.ends_with("/upload").then(eicar);
        let (code, body) = squid.fetch_with(&url, upload.as_deref(), args).await;
        assert_eq!(code, 403, "{url}: {}", squid.cache_log());
        assert!(String::from_utf8_lossy(&body).contains(EICAR_NAME), "{url}");
    }
    assert!(server.log().contains("frontend=\"icap\"") || server.log().contains("frontend=icap"));
    squid.assert_cert_cache_works();
    squid.assert_no_icap_errors();

    // c-icap-client over TLS too.
    let file = dir.path().join("eicar.com");
    std::fs::write(&file, eicar()).unwrap();
    let out = tokio::process::Command::new("c-icap-client")
        .args([
            "-i",
            "127.0.0.1",
            "-p",
            &icaps.to_string(),
            "-s",
            "avscan",
            "-tls",
            "-tls-no-verify",
            "-v",
            "-f",
        ])
        .arg(&file)
        .args(["-resp", "http://origin.test/eicar.com"])
        .output()
        .await
        .unwrap();
    let text = support::output_text(&out);
    assert!(
        text.contains("HTTP/1.1 403 Forbidden") && text.contains(EICAR_NAME),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_on_sighup_and_client_certificates_are_checked() {
    let clamd = ClamdProcess::start();
    let dir = TempDir::new("icaps-reload");
    make_certs(dir.path(), &["server", "client"]);
    let (server, icaps) = start(&clamd, &dir, true);

    // With a client certificate from the CA: the ICAP answer comes.
    let client = |n: &str| dir.path().join(n).display().to_string();
    let (cert, key) = (client("client.crt"), client("client.key"));
    let with_cert = s_client(icaps, &dir, &["-cert", &cert, "-key", &key]);
    assert!(with_cert.contains("ICAP/1.0 200 OK"), "{with_cert}");
    // Without: no ICAP answer.
    let without = s_client(icaps, &dir, &[]);
    assert!(!without.contains("ICAP/1.0 200"), "{without}");

    // A new server certificate, then SIGHUP: new handshakes present it.
    let new = support::renew_server_cert(dir.path(), &server, "ICAPS certificate reloaded").await;
    let served = support::tls_handshake(icaps, &format!("-cert {cert} -key {key}")).1;
    assert_eq!(served, new, "the reloaded certificate is served");
}
