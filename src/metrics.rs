//! What the service has done, for Prometheus, and whether it can work, for
//! probes: `/metrics`, `/healthz` and `/readyz` on `METRICS_PORT`.
//!
//! Counters live in one process-wide [`Metrics`] ([`METRICS`]); the places
//! that know an event record it (the audit line, the scan pipeline, the
//! handler, the ICAP accept loop). Queue depths are read from Redis when
//! scraped. Readiness asks clamd (PING) and Redis (PING) at the time of the
//! probe, each within a short timeout, so it turns within a second.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::Duration;

use crate::model::{BlockReason, Decision, SkipReason, Verdict};
use crate::queue::Keys;
use crate::scan::clamd::Clamd;

/// How long a readiness probe waits for clamd or Redis.
const PROBE_TIMEOUT: Duration = Duration::from_millis(800);

/// Upper bounds of the latency buckets, in seconds.
const SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Upper bounds of the body-size buckets, in bytes.
const BYTES: [f64; 11] = [
    1024.0,
    4096.0,
    16384.0,
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
];

/// A Prometheus histogram with fixed buckets.
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    /// The sum, in millionths (of a second or a byte).
    sum_micro: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Histogram {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micro: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, value: f64) {
        if let Some(i) = self.bounds.iter().position(|b| value <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micro
            .fetch_add((value * 1e6) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in self.bounds.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micro.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Counters keyed by their label values.
struct Family<const N: usize>(Mutex<BTreeMap<[&'static str; N], u64>>);

impl<const N: usize> Family<N> {
    fn new() -> Self {
        Family(Mutex::new(BTreeMap::new()))
    }

    fn inc(&self, labels: [&'static str; N]) {
        *self
            .0
            .lock()
            .expect("metrics lock")
            .entry(labels)
            .or_default() += 1;
    }

    fn render(&self, out: &mut String, name: &str, help: &str, label_names: [&str; N]) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (values, n) in self.0.lock().expect("metrics lock").iter() {
            let labels: Vec<String> = label_names
                .iter()
                .zip(values)
                .map(|(k, v)| format!("{k}=\"{v}\""))
                .collect();
            let _ = writeln!(out, "{name}{{{}}} {n}", labels.join(","));
        }
    }
}

/// Everything counted in this process.
pub struct Metrics {
    requests: Family<3>,
    verdicts: Family<2>,
    not_scanned: Family<2>,
    scan_errors: Family<1>,
    failure_mode: Family<1>,
    icap_requests: Family<1>,
    scan_seconds: Histogram,
    body_bytes: Histogram,
    connections_open: AtomicI64,
    connections_total: AtomicU64,
    body_files_left: AtomicU64,
    handed_back: AtomicU64,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    /// Nothing counted yet.
    fn new() -> Metrics {
        Metrics {
            requests: Family::new(),
            verdicts: Family::new(),
            not_scanned: Family::new(),
            scan_errors: Family::new(),
            failure_mode: Family::new(),
            icap_requests: Family::new(),
            scan_seconds: Histogram::new(&SECONDS),
            body_bytes: Histogram::new(&BYTES),
            connections_open: AtomicI64::new(0),
            connections_total: AtomicU64::new(0),
            body_files_left: AtomicU64::new(0),
            handed_back: AtomicU64::new(0),
        }
    }

    /// A frontend's decision on one message (what the audit line says).
    pub fn decided(
        &self,
        frontend: &'static str,
        direction: &'static str,
        verdict: &Verdict,
        decision: &Decision,
        elapsed: Duration,
    ) {
        let action = match decision {
            Decision::Allow { unscanned: None } => "allow",
            Decision::Allow { unscanned: Some(_) } => "allow-unscanned",
            Decision::Block(_) => "block",
        };
        self.requests.inc([frontend, direction, action]);
        self.verdict("frontend", verdict);
        if let Some(reason) = decision.unscanned(verdict) {
            self.not_scanned.inc([frontend, reason.as_str()]);
        }
        if !matches!(verdict, Verdict::NotScanned(_)) {
            self.scan_seconds.observe(elapsed.as_secs_f64());
        }
        match decision {
            Decision::Block(BlockReason::ScannerUnavailable) => self.failure_mode.inc(["closed"]),
            Decision::Allow {
                unscanned: Some(SkipReason::ScannerFailed),
            } => self.failure_mode.inc(["open"]),
            _ => {}
        }
    }

    /// A verdict reached by `source` (`frontend`, `handler`).
    pub fn verdict(&self, source: &'static str, verdict: &Verdict) {
        self.verdicts.inc([source, verdict.label()]);
        if let Verdict::Error { kind, .. } = verdict {
            self.scan_errors.inc([kind]);
        }
    }

    /// A handler's scan time (the frontends' is counted by `decided`).
    pub fn scanned(&self, elapsed: Duration) {
        self.scan_seconds.observe(elapsed.as_secs_f64());
    }

    /// The size of a body that was scanned (or was to be).
    pub fn body(&self, bytes: u64) {
        self.body_bytes.observe(bytes as f64);
    }

    /// An ICAP request, by method (`OPTIONS`, `REQMOD`, `RESPMOD`, ...).
    pub fn icap_request(&self, method: &'static str) {
        self.icap_requests.inc([method]);
    }

    /// An ICAP connection opened; [`Metrics::disconnected`] when it closes.
    pub fn connected(&self) {
        self.connections_open.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// An ICAP connection closed.
    pub fn disconnected(&self) {
        self.connections_open.fetch_sub(1, Ordering::Relaxed);
    }

    /// A body file left behind on the mount was removed (`ORPHAN_AGE`).
    pub fn body_file_left_removed(&self) {
        self.body_files_left.fetch_add(1, Ordering::Relaxed);
    }

    /// A handler gave a task back to its lane, unscanned, because its
    /// clamd does not answer: after a scan that `failed` with that kind of
    /// error, or without trying once clamd was known to be gone.
    pub fn handed_back(&self, failed: Option<&'static str>) {
        if let Some(kind) = failed {
            self.scan_errors.inc([kind]);
        }
        self.handed_back.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of everything in this process.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        self.requests.render(
            &mut out,
            "virus_scanner_requests_total",
            "Messages decided, by frontend (icap, ext_proc), direction (request = REQMOD, response = RESPMOD) and decision.",
            ["frontend", "direction", "decision"],
        );
        self.verdicts.render(
            &mut out,
            "virus_scanner_verdicts_total",
            "Verdicts, by where they were reached and result (clean, infected, too-large, not-scanned, undecodable, error).",
            ["source", "result"],
        );
        self.not_scanned.render(
            &mut out,
            "virus_scanner_not_scanned_total",
            "Messages let through without a clean scan, by frontend and reason (trusted, trusted-client, no-body, too-large, scanner-failed, undecodable).",
            ["frontend", "reason"],
        );
        self.scan_errors.render(
            &mut out,
            "virus_scanner_scan_errors_total",
            "Scans that failed, by kind (connect, timeout, io, clamd_error, protocol, queue, ...).",
            ["kind"],
        );
        self.failure_mode.render(
            &mut out,
            "virus_scanner_failure_mode_total",
            "Messages the failure mode decided (closed: blocked, open: passed unscanned).",
            ["mode"],
        );
        self.icap_requests.render(
            &mut out,
            "virus_scanner_icap_requests_total",
            "ICAP requests, by method.",
            ["method"],
        );
        self.scan_seconds.render(
            &mut out,
            "virus_scanner_scan_seconds",
            "Time from a message's arrival to its verdict (in a handler: the scan).",
        );
        self.body_bytes.render(
            &mut out,
            "virus_scanner_body_bytes",
            "Sizes of the bodies scanned.",
        );
        let _ = writeln!(
            out,
            "# HELP virus_scanner_connections Open ICAP connections.\n# TYPE virus_scanner_connections gauge\n\
             virus_scanner_connections {}\n\
             # HELP virus_scanner_connections_total ICAP connections accepted.\n# TYPE virus_scanner_connections_total counter\n\
             virus_scanner_connections_total {}\n\
             # HELP virus_scanner_extproc_streams Open Envoy ext_proc streams.\n# TYPE virus_scanner_extproc_streams gauge\n\
             virus_scanner_extproc_streams {}\n\
             # HELP virus_scanner_body_files_left_removed_total Body files left behind on SCAN_MOUNT that a handler removed (ORPHAN_AGE).\n\
             # TYPE virus_scanner_body_files_left_removed_total counter\n\
             virus_scanner_body_files_left_removed_total {}\n\
             # HELP virus_scanner_tasks_handed_back_total Tasks a handler gave back to their lane unscanned, its clamd unreachable.\n\
             # TYPE virus_scanner_tasks_handed_back_total counter\n\
             virus_scanner_tasks_handed_back_total {}",
            self.connections_open.load(Ordering::Relaxed),
            self.connections_total.load(Ordering::Relaxed),
            virus_scanner_grpc::server::open_streams(),
            self.body_files_left.load(Ordering::Relaxed),
            self.handed_back.load(Ordering::Relaxed),
        );
        out
    }
}

/// What the probes check, and where queue depths come from.
#[derive(Clone, Default)]
pub struct Probes {
    /// clamd, in processes that scan.
    pub clamd: Option<Clamd>,
    /// Redis, in processes on the queue.
    pub redis: Option<(crate::queue::RedisConfig, Keys)>,
}

/// Serves `/metrics`, `/healthz` and `/readyz` on `listener` until
/// `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    probes: Probes,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::routing::get;

    let redis = match &probes.redis {
        Some((config, _)) => config.connect(Duration::ZERO).ok(),
        None => None,
    };
    let keys = probes.redis.as_ref().map(|(_, k)| k.clone());
    let metrics = {
        let (redis, keys) = (redis.clone(), keys.clone());
        move || {
            let (mut redis, keys) = (redis.clone(), keys.clone());
            async move {
                let mut text = METRICS.render();
                if let (Some(conn), Some(keys)) = (redis.as_mut(), keys.as_ref()) {
                    queue_depths(&mut text, conn, keys).await;
                }
                (
                    [(
                        header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }
    };
    let ready = move || {
        let (clamd, mut redis) = (probes.clamd.clone(), redis.clone());
        async move {
            let mut problems = Vec::new();
            if let Some(clamd) = &clamd {
                match tokio::time::timeout(PROBE_TIMEOUT, clamd.ping()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => problems.push(format!("clamd: {e}")),
                    Err(_) => problems.push("clamd: no PONG in time".to_owned()),
                }
            }
            if let Some(conn) = redis.as_mut() {
                let cmd = redis::cmd("PING");
                match tokio::time::timeout(PROBE_TIMEOUT, cmd.query_async::<String>(conn)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => problems.push(format!("redis: {e}")),
                    Err(_) => problems.push("redis: no PONG in time".to_owned()),
                }
            }
            if problems.is_empty() {
                (StatusCode::OK, "ready\n".to_owned())
            } else {
                (StatusCode::SERVICE_UNAVAILABLE, problems.join("\n") + "\n")
            }
        }
    };
    let app = axum::Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Appends each lane's length, waiting and pending counts and the
/// dead-letter count; on a Redis error, says so in a gauge.
async fn queue_depths(out: &mut String, conn: &mut redis::aio::ConnectionManager, keys: &Keys) {
    let read = tokio::time::timeout(PROBE_TIMEOUT, crate::queue::depths(conn, keys)).await;
    let up = matches!(read, Ok(Ok(_)));
    let _ = writeln!(
        out,
        "# HELP virus_scanner_queue_up Whether Redis answered this scrape.\n# TYPE virus_scanner_queue_up gauge\nvirus_scanner_queue_up {}",
        u8::from(up)
    );
    let Ok(Ok((lanes, dead))) = read else {
        return;
    };
    for (name, help, pick) in [
        (
            "virus_scanner_queue_length",
            "Entries in a lane's stream.",
            0,
        ),
        (
            "virus_scanner_queue_waiting",
            "Entries not yet delivered to a handler.",
            1,
        ),
        (
            "virus_scanner_queue_pending",
            "Entries delivered and not yet acknowledged.",
            2,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (lane, depth) in &lanes {
            let value = [depth.length, depth.waiting, depth.pending][pick];
            let _ = writeln!(out, "{name}{{lane=\"{}\"}} {value}", lane.as_str());
        }
    }
    let _ = writeln!(
        out,
        "# HELP virus_scanner_dead_letters Entries in the dead-letter stream.\n# TYPE virus_scanner_dead_letters gauge\nvirus_scanner_dead_letters {dead}"
    );
}

/// The address the metrics server listens on, or `None` when `port` is 0.
pub fn address(ip: std::net::IpAddr, port: u16) -> Option<SocketAddr> {
    (port != 0).then(|| SocketAddr::new(ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.decided(
            "icap",
            "response",
            &Verdict::Clean,
            &Decision::Allow { unscanned: None },
            Duration::from_millis(3),
        );
        let failed = Verdict::Error {
            kind: "connect",
            message: "refused".into(),
        };
        m.decided(
            "ext_proc",
            "request",
            &failed,
            &Decision::Block(BlockReason::ScannerUnavailable),
            Duration::from_millis(1),
        );
        m.body(5000);
        let text = m.render();
        assert!(text.contains("virus_scanner_requests_total{frontend=\"icap\",direction=\"response\",decision=\"allow\"} 1"));
        assert!(text.contains("virus_scanner_scan_errors_total{kind=\"connect\"} 1"));
        assert!(text.contains("virus_scanner_failure_mode_total{mode=\"closed\"} 1"));
        assert!(text.contains("virus_scanner_scan_seconds_bucket{le=\"0.005\"} 2"));
        assert!(text.contains("virus_scanner_body_bytes_bucket{le=\"4096\"} 0"));
        assert!(text.contains("virus_scanner_body_bytes_bucket{le=\"16384\"} 1"));
        assert!(text.contains("virus_scanner_scan_seconds_count 2"));
    }

    #[test]
    fn an_undecodable_body_is_neither_a_scan_error_nor_a_failure_mode() {
        let m = Metrics::new();
        let undecodable = Verdict::Undecodable {
            reason: "cannot decode br".into(),
        };
        m.decided(
            "icap",
            "response",
            &undecodable,
            &Decision::Block(BlockReason::Undecodable),
            Duration::from_millis(1),
        );
        m.decided(
            "icap",
            "response",
            &undecodable,
            &Decision::Allow {
                unscanned: Some(SkipReason::Undecodable),
            },
            Duration::from_millis(1),
        );
        let text = m.render();
        assert!(text.contains(
            "virus_scanner_verdicts_total{source=\"frontend\",result=\"undecodable\"} 2"
        ));
        assert!(text.contains(
            "virus_scanner_not_scanned_total{frontend=\"icap\",reason=\"undecodable\"} 1"
        ));
        assert!(!text.contains("virus_scanner_scan_errors_total{"), "{text}");
        assert!(
            !text.contains("virus_scanner_failure_mode_total{"),
            "{text}"
        );
    }
}
