//! The ext_proc server driven by a client nobody here wrote the generated
//! code for: Python grpcio with the `envoy-data-plane` package
//! (`tests/python/extproc_client.py`), against the real binaries: `virus-scanner
//! all`, and the producer with a handler behind Redis.
//!
//! The Python environment is `target/py` (made by `scripts/test.sh`), or the
//! interpreter named by `VS_PYTHON`.

mod support;

use std::time::Duration;

use support::{ClamdProcess, RedisProcess, Service};

fn python() -> String {
    if let Ok(p) = std::env::var("VS_PYTHON") {
        return p;
    }
    let venv = support::project_dir().join("target/py/bin/python");
    assert!(
        venv.exists(),
        "no {}: run scripts/test.sh, which makes it (pip install grpcio envoy-data-plane), or set VS_PYTHON",
        venv.display()
    );
    venv.display().to_string()
}

/// Runs the Python client against `port`; panics with its output on failure.
fn run_client(port: u16) -> String {
    let script = support::project_dir().join("tests/python/extproc_client.py");
    let out = std::process::Command::new(python())
        .arg(script)
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    let text = support::output_text(&out);
    assert!(
        out.status.success(),
        "the Python ext_proc client failed:\n{text}"
    );
    assert!(text.contains("all ext_proc cases passed"), "{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_against_virus_scanner_all() {
    let clamd = ClamdProcess::start();
    let grpc = support::free_port();
    let server = Service::start_with(
        env!("CARGO_BIN_EXE_virus-scanner"),
        &["all"],
        &[
            ("ICAP_PORT", "0".to_owned()),
            ("PRODUCER_PORT", grpc.to_string()),
            ("CLAMD_URL", clamd.tcp_url()),
        ],
    );
    server.wait_port(grpc, Duration::from_secs(20));
    run_client(grpc);
    let log = server.log();
    assert!(log.contains("Envoy ext_proc server listening"), "{log}");
    assert!(
        log.contains("frontend=\"ext_proc\"") || log.contains("frontend=ext_proc"),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_client_through_the_queue() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let common = vec![
        ("REDIS_HOST", "127.0.0.1".to_owned()),
        ("REDIS_PORT", redis.port.to_string()),
        ("CLAMD_URL", clamd.tcp_url()),
    ];
    let grpc = support::free_port();
    let mut env = common.clone();
    env.push(("ICAP_PORT", "0".to_owned()));
    env.push(("PRODUCER_PORT", grpc.to_string()));
    let producer = Service::start(env!("CARGO_BIN_EXE_virus-scanner-producer"), &env);
    let handler = Service::start(env!("CARGO_BIN_EXE_virus-scanner-handler"), &common);
    producer.wait_port(grpc, Duration::from_secs(20));
    run_client(grpc);
    // The verdicts came from the handler, through Redis.
    assert!(handler.log().contains("scanned"), "{}", handler.log());
    let log = producer.log();
    assert!(
        log.contains("frontend=\"ext_proc\"") || log.contains("frontend=ext_proc"),
        "{log}"
    );
}
