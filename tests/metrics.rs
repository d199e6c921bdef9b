//! `/metrics`, `/healthz` and `/readyz` of the real binary: counters that
//! equal what was sent (read by Prometheus' own Python parser), and
//! readiness that follows clamd.

mod support;

use std::time::{Duration, Instant};

use support::{eicar, http_get as get, icap_respmod, ClamdProcess, Service};

/// One BUFFERED upload over ext_proc, as Envoy sends it; true when it was
/// blocked.
async fn extproc_upload(port: u16, body: &[u8]) -> bool {
    use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
    use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
    use envoy_types::pb::envoy::service::ext_proc::v3::{
        processing_request::Request as Req, processing_response::Response as Res, HttpBody,
        HttpHeaders, ProcessingRequest,
    };
    /// Sends one message of Envoy's on the stream.
    async fn send(tx: &tokio::sync::mpsc::Sender<ProcessingRequest>, request: Req) {
        tx.send(ProcessingRequest {
            request: Some(request),
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let mut client = ExternalProcessorClient::connect(format!("http://127.0.0.1:{port}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let header = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    };
    let headers = HttpHeaders {
        headers: Some(HeaderMap {
            headers: vec![
                header(":method", "POST"),
                header(":authority", "up.test"),
                header(":path", "/f"),
            ],
        }),
        end_of_stream: false,
        ..Default::default()
    };
    send(&tx, Req::RequestHeaders(headers)).await;
    let mut replies = client
        .process(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    assert!(matches!(
        replies.message().await.unwrap().unwrap().response,
        Some(Res::RequestHeaders(_))
    ));
    let body = HttpBody {
        body: body.to_vec(),
        end_of_stream: true,
        ..Default::default()
    };
    send(&tx, Req::RequestBody(body)).await;
    loop {
        match replies.message().await.unwrap().unwrap().response {
            None => continue,
            Some(Res::ImmediateResponse(_)) => return true,
            Some(Res::RequestBody(_)) => return false,
            Some(other) => panic!("{other:?}"),
        }
    }
}

/// Parses the exposition with prometheus_client's parser and prints
/// `name{labels} value` lines, sorted: a malformed exposition fails here.
fn parse_with_prometheus(text: &str) -> String {
    let python = std::env::var("VS_PYTHON").unwrap_or_else(|_| {
        support::project_dir()
            .join("target/py/bin/python")
            .display()
            .to_string()
    });
    let script = r#"
import sys
from prometheus_client.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(sys.stdin.read()):
    for s in fam.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
        out.append(f"{s.name}{{{labels}}} {s.value:g}")
print("\n".join(sorted(out)))
"#;
    let mut child = std::process::Command::new(python)
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("target/py (made by scripts/test.sh) or VS_PYTHON");
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "not Prometheus text:\n{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn value(samples: &str, sample: &str) -> f64 {
    samples
        .lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_sent_and_readiness_follows_clamd() {
    let mut clamd = ClamdProcess::start();
    let (icap, metrics, grpc) = (
        support::free_port(),
        support::free_port(),
        support::free_port(),
    );
    let server = Service::start_with(
        env!("CARGO_BIN_EXE_virus-scanner"),
        &["all"],
        &[
            ("ICAP_PORT", icap.to_string()),
            ("METRICS_PORT", metrics.to_string()),
            ("PRODUCER_PORT", grpc.to_string()),
            ("METRICS_ADDR", "127.0.0.1".into()),
            ("CLAMD_URL", clamd.tcp_url()),
            ("CLAMD_CONNECT_TIMEOUT", "1s".into()),
            ("TRUSTED_HOSTS", ".trusted.test".into()),
        ],
    );
    server.wait_port(metrics, Duration::from_secs(20));
    assert_eq!(get(metrics, "/healthz").await.0, 200);
    assert_eq!(get(metrics, "/readyz").await.0, 200);

    // A mixed run: 7 clean, 3 infected downloads over ICAP...
    let mut infected = b"payload ".to_vec();
    infected.extend_from_slice(&eicar());
    for n in 0..10 {
        let body: &[u8] = if n % 10 < 7 {
            b"clean content here"
        } else {
            &infected
        };
        let answer = icap_respmod(
            icap,
            &format!("http://origin.test/{n}"),
            body,
            "Allow: 204\r\n",
        )
        .await
        .unwrap();
        assert_eq!(answer.is_infected(), n >= 7, "{answer:?}");
    }
    // And 2 uploads through Envoy's ext_proc: one clean, one EICAR.
    server.wait_port(grpc, Duration::from_secs(10));
    assert!(!extproc_upload(grpc, b"clean upload").await);
    assert!(extproc_upload(grpc, &infected).await);
    let (status, text) = get(metrics, "/metrics").await;
    assert_eq!(status, 200);
    let samples = parse_with_prometheus(&text);
    let requests = |decision: &str| {
        value(
            &samples,
            &format!("virus_scanner_requests_total{{decision=\"{decision}\",direction=\"response\",frontend=\"icap\"}}"),
        )
    };
    assert_eq!(requests("allow"), 7.0, "{samples}");
    assert_eq!(requests("block"), 3.0, "{samples}");
    let verdicts = |r: &str| {
        value(
            &samples,
            &format!("virus_scanner_verdicts_total{{result=\"{r}\",source=\"frontend\"}}"),
        )
    };
    assert_eq!(
        (verdicts("clean"), verdicts("infected")),
        (8.0, 4.0),
        "{samples}"
    );
    let ext_proc = |decision: &str| {
        value(
            &samples,
            &format!("virus_scanner_requests_total{{decision=\"{decision}\",direction=\"request\",frontend=\"ext_proc\"}}"),
        )
    };
    assert_eq!(
        (ext_proc("allow"), ext_proc("block")),
        (1.0, 1.0),
        "{samples}"
    );
    assert_eq!(
        value(
            &samples,
            "virus_scanner_icap_requests_total{method=\"RESPMOD\"}"
        ),
        10.0
    );
    assert_eq!(
        value(&samples, "virus_scanner_scan_seconds_count{}"),
        12.0,
        "{samples}"
    );
    assert_eq!(
        value(&samples, "virus_scanner_body_bytes_count{}"),
        12.0,
        "{samples}"
    );
    assert_eq!(
        value(&samples, "virus_scanner_connections_total{}"),
        10.0,
        "{samples}"
    );

    // Trusted hosts: let through unscanned, counted and logged with the
    // reason.
    for n in 0..2 {
        let answer = icap_respmod(
            icap,
            &format!("http://updates.trusted.test/{n}"),
            &infected,
            "Allow: 204\r\n",
        )
        .await
        .unwrap();
        assert!(!answer.is_infected(), "{answer:?}");
    }
    let samples = parse_with_prometheus(&get(metrics, "/metrics").await.1);
    assert_eq!(
        value(
            &samples,
            "virus_scanner_not_scanned_total{frontend=\"icap\",reason=\"trusted\"}"
        ),
        2.0,
        "{samples}"
    );
    assert_eq!(
        server.log().matches("unscanned=\"trusted\"").count(),
        2,
        "{}",
        server.log()
    );

    // clamd goes down: unready within a second; a scan now fails closed and
    // is counted as such.
    clamd.stop();
    let down = Instant::now();
    loop {
        if get(metrics, "/readyz").await.0 == 503 {
            break;
        }
        assert!(
            down.elapsed() < Duration::from_secs(1),
            "still ready 1 s after clamd stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = icap_respmod(icap, "http://origin.test/x", b"data", "Allow: 204\r\n")
        .await
        .unwrap();
    assert!(answer.is_unavailable(), "{answer:?}");
    let samples = parse_with_prometheus(&get(metrics, "/metrics").await.1);
    assert_eq!(
        value(
            &samples,
            "virus_scanner_failure_mode_total{mode=\"closed\"}"
        ),
        1.0,
        "{samples}"
    );
    assert_eq!(
        value(
            &samples,
            "virus_scanner_scan_errors_total{kind=\"connect\"}"
        ),
        1.0,
        "{samples}"
    );

    // And ready again once it is back.
    clamd.restart();
    let up = Instant::now();
    while get(metrics, "/readyz").await.0 != 200 {
        assert!(up.elapsed() < Duration::from_secs(5), "not ready again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server);
}

/// What the kernel says about a process's transparent huge pages.
fn thp_enabled(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| Some(l.strip_prefix("THP_enabled:")?.trim().to_owned()))
}

#[test]
fn binaries_run_without_huge_pages_unless_the_allocator_is_told_otherwise() {
    if thp_enabled(std::process::id()).is_none() {
        eprintln!("skipped: this kernel does not report THP_enabled");
        return;
    }
    let wait_for = |server: &Service, want: &str| {
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            let got = thp_enabled(server.pid());
            if got.as_deref() == Some(want) {
                return;
            }
            assert!(Instant::now() < end, "THP_enabled is {got:?}, not {want}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let env = |more: Option<(&'static str, String)>| {
        let mut env = vec![
            ("ICAP_PORT", "0".to_owned()),
            ("CLAMD_URL", "tcp://127.0.0.1:9".to_owned()),
        ];
        env.extend(more);
        env
    };
    for bin in [
        env!("CARGO_BIN_EXE_virus-scanner-producer"),
        env!("CARGO_BIN_EXE_virus-scanner-handler"),
    ] {
        let server = Service::start(bin, &env(None));
        wait_for(&server, "0");
    }
    let server = Service::start_with(env!("CARGO_BIN_EXE_virus-scanner"), &["all"], &env(None));
    wait_for(&server, "0");
    let server = Service::start_with(
        env!("CARGO_BIN_EXE_virus-scanner"),
        &["all"],
        &env(Some(("MIMALLOC_ALLOW_THP", "1".into()))),
    );
    wait_for(&server, "1");
}
