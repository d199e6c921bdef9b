//! Squid's SSL-bump (squid-openssl) in front of an HTTPS origin with a CA of
//! its own: Squid decrypts, the server scans what travels inside, and curl
//! (trusting the bump CA made by `squid/make-bump-ca.sh`) sees the clean file
//! unchanged and the block page for EICAR, downloaded or uploaded.

mod support;

use support::{
    bump_ca, downloads, eicar, make_certs, ClamdProcess, Origin, Squid, TempDir, TestServer,
    EICAR_NAME,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bumped_https_is_scanned() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;

    // The origin, with a certificate for localhost from its own CA.
    let certs = TempDir::new("bump-origin");
    make_certs(certs.path(), &["origin"]);
    let (clean, files) = downloads();
    let origin = Origin::start_tls(
        files,
        &certs.path().join("origin.crt"),
        &certs.path().join("origin.key"),
    )
    .await;

    // The bump CA and certificate cache, made by the project's script.
    let bump = bump_ca();
    let squid = Squid::start_with(
        "bump.conf",
        server.port(),
        &[
            ("@BUMP_DIR@", bump.path().display().to_string()),
            (
                "@ORIGIN_CA@",
                certs.path().join("ca.crt").display().to_string(),
            ),
        ],
    );
    let ca = bump.path().join("bump-ca.crt").display().to_string();
    let curl = ["--cacert", ca.as_str()];

    let (code, body) = squid
        .fetch_with(&origin.https_url("/clean.bin"), None, &curl)
        .await;
    assert_eq!(code, 200, "{}", squid.cache_log());
    assert!(body == clean, "the clean file arrives byte for byte");

    let (code, body) = squid
        .fetch_with(&origin.https_url("/eicar.pdf"), None, &curl)
        .await;
    assert_eq!(code, 403, "{}", squid.cache_log());
    let page = String::from_utf8_lossy(&body);
    assert!(page.contains(EICAR_NAME), "{page}");
    assert!(
        page.contains("https://localhost"),
        "the page names the HTTPS URL: {page}"
    );

    let (code, body) = squid
        .fetch_with(&origin.https_url("/upload"), Some(&eicar()), &curl)
        .await;
    assert_eq!(code, 403, "{}", squid.cache_log());
    assert!(String::from_utf8_lossy(&body).contains(EICAR_NAME));

    // A large one too, kept whole until the verdict: the block page.
    let mut large = clean.to_vec();
    large.extend_from_slice(&eicar());
    let (code, body) = squid
        .fetch_with(&origin.https_url("/upload"), Some(&large), &curl)
        .await;
    assert_eq!(code, 403, "{}", squid.cache_log());
    assert!(String::from_utf8_lossy(&body).contains(EICAR_NAME));

    // Clean uploads reach the origin whole.
    for upload in [&b"hello"[..], &clean[..]] {
        let (code, body) = squid
            .fetch_with(&origin.https_url("/upload"), Some(upload), &curl)
            .await;
        assert_eq!(code, 201);
        assert_eq!(body, support::stored(upload).into_bytes());
    }
    squid.assert_cert_cache_works();
    squid.assert_no_icap_errors();
    server.stop().await;
}
