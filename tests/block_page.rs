//! A block page of the operator's own (`BLOCK_PAGE`), through the real
//! binary: c-icap-client gets it for an EICAR download, and a page with a
//! mistake stops the server at start with the setting named.

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use support::{
    c_icap_text, eicar, project_dir, write_file, ClamdProcess, Service, TempDir, EICAR_NAME,
};

const BIN: &str = env!("CARGO_BIN_EXE_virus-scanner");

/// Sends EICAR to the server on `port` with c-icap-client as a download
/// of `url`; returns what c-icap-client printed and the page it got.
async fn download_eicar(port: u16, dir: &TempDir, url: &str) -> (String, String) {
    let infected = write_file(dir, "eicar.com", &eicar());
    let page_file = dir.path().join("page.html").display().to_string();
    let _ = std::fs::remove_file(&page_file);
    let args = [
        "-s", "avscan", "-v", "-f", &infected, "-o", &page_file, "-resp", url,
    ];
    let printed = c_icap_text(port, &args).await;
    let page = std::fs::read_to_string(&page_file).unwrap_or_default();
    (printed, page)
}

/// `virus-scanner all` on `port` with BLOCK_PAGE set to `page`.
fn start_with_page(clamd: &ClamdProcess, port: u16, page: &Path) -> Service {
    let server = Service::start_with(
        BIN,
        &["all"],
        &[
            ("CLAMD_URL", clamd.tcp_url()),
            ("ICAP_PORT", port.to_string()),
            ("BLOCK_PAGE", page.display().to_string()),
        ],
    );
    server.wait_port(port, Duration::from_secs(20));
    server
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infected_download_gets_the_operators_page() {
    let clamd = ClamdProcess::start();
    let example = project_dir().join("docs/examples/block-page.html");
    let port = support::free_port();
    let _server = start_with_page(&clamd, port, &example);
    let dir = TempDir::new("blockpage");
    let (t, page) = download_eicar(port, &dir, "http://origin.test/files/eicar.com?a=1&b=2").await;
    assert!(t.contains("HTTP/1.1 403 Forbidden"), "{t}");
    assert!(t.contains(&format!("X-Virus-ID: {EICAR_NAME}")), "{t}");
    // The example's own words, with every field filled in and escaped.
    assert!(page.contains("Example Corp help desk"), "{page}");
    assert!(page.contains("<body class=\"reason-infected\">"), "{page}");
    assert!(page.contains(&format!("<b>{EICAR_NAME}</b>")), "{page}");
    assert!(
        page.contains("<code>http://origin.test/files/eicar.com?a=1&amp;b=2</code>"),
        "{page}"
    );
    assert!(!page.contains("{{"), "{page}");
    // The reference on the page is the one in the answer's header.
    let reference = t
        .lines()
        .find_map(|l| l.trim().strip_prefix("X-Virus-Scanner-Reference: "))
        .unwrap_or_else(|| panic!("no reference header: {t}"));
    assert!(
        page.contains(&format!("<code>{}</code>", reference.trim())),
        "{page}"
    );
    // The Content-Length the page went out with is its length.
    let length = t
        .lines()
        .find_map(|l| l.trim().strip_prefix("Content-Length: "))
        .unwrap_or_else(|| panic!("no Content-Length: {t}"));
    assert_eq!(length.trim().parse::<usize>().unwrap(), page.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_read_again_on_sighup() {
    let clamd = ClamdProcess::start();
    let dir = TempDir::new("blockpage-hup");
    let file = dir.path().join("page.tmpl");
    std::fs::write(&file, "<p>first: {{signatures}}</p>").unwrap();
    let port = support::free_port();
    let server = start_with_page(&clamd, port, &file);
    let url = "http://origin.test/eicar.com";
    assert_eq!(
        download_eicar(port, &dir, url).await.1,
        format!("<p>first: {EICAR_NAME}</p>")
    );
    // Writes the page anew, sends SIGHUP and waits for the log to say
    // `outcome`; then the next block shows `shown`.
    let rewrite = |text: &'static str, outcome: &'static str, shown: &'static str| {
        let (server, dir, file) = (&server, &dir, &file);
        async move {
            std::fs::write(file, text).unwrap();
            server.hangup();
            server.wait_log(outcome, 1, Duration::from_secs(10)).await;
            let page = download_eicar(port, dir, url).await.1;
            assert_eq!(page, format!("<p>{shown}: {EICAR_NAME}</p>"));
        }
    };
    rewrite(
        "<p>second: {{signatures}}</p>",
        "SIGHUP: block page reloaded",
        "second",
    )
    .await;
    // A page gone wrong is refused and the last good one stays.
    rewrite(
        "<p>third: {{signature}}</p>",
        "block page not reloaded",
        "second",
    )
    .await;
    assert!(
        server.log().contains("unknown field {{signature}}"),
        "{}",
        server.log()
    );
}

#[test]
fn a_page_with_a_mistake_stops_the_start() {
    let dir = TempDir::new("blockpage-bad");
    let typo = write_file(&dir, "typo.html", b"<p>Found: {{virus}}</p>");
    let missing = dir.path().join("missing.html").display().to_string();
    for (page, said) in [
        (typo.as_str(), "unknown field {{virus}}"),
        (missing.as_str(), "missing.html"),
    ] {
        let out = Command::new(BIN)
            .args(["all", "--check-config"])
            .env("BLOCK_PAGE", page)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{page}: {err}");
        assert!(err.contains("BLOCK_PAGE") && err.contains(said), "{err}");
    }
    // The shipped example passes, for the producer too.
    let example = project_dir().join("docs/examples/block-page.html");
    for command in ["all", "producer"] {
        let out = Command::new(BIN)
            .args([command, "--check-config"])
            .env("BLOCK_PAGE", &example)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{command}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
