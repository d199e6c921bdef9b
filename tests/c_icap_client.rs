//! Debian's c-icap-client, an ICAP client nobody here wrote, against the
//! server and a real clamd.

mod support;

use support::{c_icap_text, eicar, write_file, ClamdProcess, TempDir, TestServer, EICAR_NAME};

struct Setup {
    _clamd: ClamdProcess,
    server: TestServer,
    dir: TempDir,
    clean: String,
    infected: String,
}

async fn setup() -> Setup {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let dir = TempDir::new("cicap");
    let clean = write_file(
        &dir,
        "clean.txt",
        &b"An ordinary, harmless text file.\n".repeat(200),
    );
    let mut bad = b"Some text before the test string.\n".to_vec();
    bad.extend_from_slice(&eicar());
    let infected = write_file(&dir, "eicar.com", &bad);
    Setup {
        _clamd: clamd,
        server,
        dir,
        clean,
        infected,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn options_advertise_what_squid_needs() {
    let s = setup().await;
    for service in ["avscan", "virus_scan", "srv_clamav", "squidclamav"] {
        let t = c_icap_text(s.server.port(), &["-s", service]).await;
        for want in [
            "ICAP/1.0 200 OK",
            "Methods: RESPMOD, REQMOD",
            "Preview: 32768",
            "Allow 204: Yes",
            "ISTag: \"VS-",
            "Options-TTL: 300",
            "Max-Connections: 500",
            "Transfer-Preview: *",
        ] {
            assert!(t.contains(want), "{service}: {want:?} missing in:\n{t}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn respmod_clean_and_infected_with_and_without_preview() {
    let s = setup().await;
    for (i, preview) in [None, Some("-nopreview")].into_iter().enumerate() {
        let out_file = s.dir.path().join(format!("out{i}")).display().to_string();
        let mut args = vec![
            "-s",
            "avscan",
            "-v",
            "-f",
            &s.clean,
            "-resp",
            "http://origin.test/clean.txt",
        ];
        args.extend(preview);
        let t = c_icap_text(s.server.port(), &args).await;
        assert!(t.contains("ICAP/1.0 204"), "{preview:?}: {t}");

        let mut args = vec![
            "-s",
            "avscan",
            "-v",
            "-f",
            &s.infected,
            "-o",
            &out_file,
            "-resp",
            "http://origin.test/eicar.com",
        ];
        args.extend(preview);
        let t = c_icap_text(s.server.port(), &args).await;
        assert!(t.contains("ICAP/1.0 200 OK"), "{preview:?}: {t}");
        assert!(t.contains("HTTP/1.1 403 Forbidden"), "{preview:?}: {t}");
        assert!(
            t.contains(&format!(
                "X-Infection-Found: Type=0; Resolution=2; Threat={EICAR_NAME};"
            )),
            "{t}"
        );
        assert!(t.contains(&format!("X-Virus-ID: {EICAR_NAME}")), "{t}");
        let page = std::fs::read_to_string(&out_file).unwrap();
        assert!(
            page.contains(EICAR_NAME) && page.contains("http://origin.test/eicar.com"),
            "{page}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no204_echoes_clean_bodies_byte_for_byte() {
    let s = setup().await;
    let out = |n: usize| s.dir.path().join(format!("echo{n}")).display().to_string();
    let mut n = 0;
    // Small (fits the hold) and large (the answer starts before the scan ends).
    let big = write_file(
        &s.dir,
        "big.bin",
        &(0..600_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    );
    for file in [&s.clean, &big] {
        for preview in [None, Some("-nopreview")] {
            n += 1;
            let out_file = out(n);
            let mut args = vec![
                "-s",
                "avscan",
                "-v",
                "-no204",
                "-f",
                file,
                "-o",
                &out_file,
                "-resp",
                "http://origin.test/f",
            ];
            args.extend(preview);
            let t = c_icap_text(s.server.port(), &args).await;
            if preview.is_none() && file == &s.clean {
                // The whole file fits the preview (ieof): 204 answers a
                // preview even without Allow: 204.
                assert!(t.contains("ICAP/1.0 204"), "{t}");
                continue;
            }
            assert!(t.contains("ICAP/1.0 200 OK"), "{t}");
            assert_eq!(
                std::fs::read(&out_file).unwrap(),
                std::fs::read(file).unwrap(),
                "{file} {preview:?}"
            );
        }
    }
    let out_file = out(0);
    let args = [
        "-s",
        "avscan",
        "-v",
        "-no204",
        "-f",
        &s.infected,
        "-o",
        &out_file,
        "-resp",
        "http://origin.test/eicar.com",
    ];
    let t = c_icap_text(s.server.port(), &args).await;
    assert!(t.contains("HTTP/1.1 403 Forbidden"), "{t}");
}

/// An upload that must be sent back (no `Allow: 204`) is kept whole until
/// the verdict, past `ECHO_HOLD` in a temporary file: a large clean one
/// comes back byte for byte, a large infected one gets the block page
/// (a download that large would be cut off instead). Where no temporary
/// file can be made, it is sent back as a download is, and that is logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_uploads_are_kept_whole_until_the_verdict() {
    let s = setup().await;
    let data: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let big = write_file(&s.dir, "big-upload.bin", &data);
    let mut bad = data.clone();
    bad.extend_from_slice(&eicar());
    let big_infected = write_file(&s.dir, "big-upload.com", &bad);
    let upload = |port: u16, file: String, out: String, preview: bool| async move {
        let mut args = vec![
            "-s",
            "avscan",
            "-v",
            "-no204",
            "-f",
            &file,
            "-o",
            &out,
            "-req",
            "http://origin.test/upload",
            "-method",
            "POST",
        ];
        if !preview {
            args.push("-nopreview");
        }
        let t = c_icap_text(port, &args).await;
        (t, std::fs::read(&out).unwrap_or_default())
    };
    let out = |name: &str| s.dir.path().join(name).display().to_string();
    let port = s.server.port();
    for preview in [true, false] {
        let clean_out = out(&format!("clean-{preview}"));
        let (t, echoed) = upload(port, big.clone(), clean_out, preview).await;
        assert!(t.contains("ICAP/1.0 200 OK"), "{t}");
        assert_eq!(echoed, data, "{preview}");
        let bad_out = out(&format!("bad-{preview}"));
        let (t, page) = upload(port, big_infected.clone(), bad_out, preview).await;
        assert!(t.contains("HTTP/1.1 403 Forbidden"), "{preview}: {t}");
        assert!(String::from_utf8_lossy(&page).contains(EICAR_NAME), "{t}");
    }

    // No temporary directory: sent back as it arrives, the infected upload
    // is cut off before its end instead, never completed.
    let port = support::free_port();
    let server = support::Service::start_with(
        env!("CARGO_BIN_EXE_virus-scanner"),
        &["all"],
        &[
            ("ICAP_PORT", port.to_string()),
            ("CLAMD_URL", s._clamd.tcp_url()),
            ("TMPDIR", "/nonexistent/virus-scanner-test".into()),
        ],
    );
    server.wait_port(port, std::time::Duration::from_secs(20));
    let (t, echoed) = upload(port, big_infected, out("cut"), true).await;
    assert!(!t.contains("HTTP/1.1 403 Forbidden"), "{t}");
    assert!(
        echoed.len() < bad.len(),
        "the infected upload came back whole"
    );
    server
        .wait_log(
            "no temporary file for the upload",
            1,
            std::time::Duration::from_secs(10),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reqmod_uploads_clean_and_infected() {
    let s = setup().await;
    let out_file = s.dir.path().join("upload-out").display().to_string();
    let args = [
        "-s",
        "avscan",
        "-v",
        "-f",
        &s.clean,
        "-req",
        "http://origin.test/upload",
        "-method",
        "POST",
    ];
    let t = c_icap_text(s.server.port(), &args).await;
    assert!(t.contains("ICAP/1.0 204"), "{t}");
    let args = [
        "-s",
        "avscan",
        "-v",
        "-f",
        &s.infected,
        "-o",
        &out_file,
        "-req",
        "http://origin.test/upload",
        "-method",
        "POST",
    ];
    let t = c_icap_text(s.server.port(), &args).await;
    assert!(t.contains("HTTP/1.1 403 Forbidden"), "{t}");
    assert!(std::fs::read_to_string(&out_file)
        .unwrap()
        .contains(EICAR_NAME));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_service_is_404() {
    let s = setup().await;
    let t = c_icap_text(
        s.server.port(),
        &[
            "-s",
            "nosuchservice",
            "-v",
            "-f",
            &s.clean,
            "-resp",
            "http://x/",
        ],
    )
    .await;
    assert!(t.contains("404"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_method_the_service_does_not_offer_is_405() {
    let s = setup().await;
    let server = TestServer::start(&[
        "--clamd-url",
        &s._clamd.tcp_url(),
        "--icap-methods",
        "respmod",
    ])
    .await;
    // c-icap-client prints no headers for an error answer to a preview; its
    // debug output names the status.
    let t = c_icap_text(
        server.port(),
        &[
            "-s",
            "avscan",
            "-d",
            "10",
            "-f",
            &s.clean,
            "-req",
            "http://x/up",
            "-method",
            "POST",
        ],
    )
    .await;
    assert!(t.contains("Preview response was with status: 405"), "{t}");
    let t = c_icap_text(
        server.port(),
        &["-s", "avscan", "-v", "-f", &s.clean, "-resp", "http://x/"],
    )
    .await;
    assert!(t.contains("ICAP/1.0 204"), "{t}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clamd_over_a_unix_socket_with_fildes_and_instream() {
    let clamd = ClamdProcess::start();
    // Pooled clamd sessions (the default) and a connection per scan.
    for sessions in ["true", "false"] {
        let server = TestServer::start(&[
            "--clamd-url",
            &clamd.unix_url(),
            "--fildes-max",
            "4K",
            "--clamd-sessions",
            sessions,
        ])
        .await;
        let dir = TempDir::new("unix");
        // Under FILDES_MAX: passed as a descriptor; over it: streamed.
        for size in [100usize, 200_000] {
            let mut bad = vec![b'.'; size];
            bad.extend_from_slice(&eicar());
            let infected = write_file(&dir, &format!("bad{size}"), &bad);
            let clean = write_file(&dir, &format!("clean{size}"), &vec![b'.'; size]);
            for _ in 0..3 {
                // Repeated, so that pooled clamd sessions are reused.
                let t = c_icap_text(
                    server.port(),
                    &["-s", "avscan", "-v", "-f", &clean, "-resp", "http://x/c"],
                )
                .await;
                assert!(t.contains("ICAP/1.0 204"), "{sessions} {size}: {t}");
                let t = c_icap_text(
                    server.port(),
                    &["-s", "avscan", "-v", "-f", &infected, "-resp", "http://x/b"],
                )
                .await;
                assert!(t.contains(EICAR_NAME), "{sessions} {size}: {t}");
            }
        }
    }
}
