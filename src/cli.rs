//! The command line, shared by the three binaries: `virus-scanner all` runs
//! the frontends (ICAP, Envoy ext_proc) and scans in-process; `producer` runs
//! them and queues to Redis; `handler` scans what is queued; `queue-status` shows the
//! lanes; `bench` measures. `virus-scanner-producer` and
//! `virus-scanner-handler` are `producer` and `handler` under the original
//! project's names.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use crate::bench::{cpu_time, measure, size_label, IcapConn, RespmodTemplate, Rounds, Target};
use crate::config::{ExtProcConfig, IcapConfig, MetricsConfig, PageConfig, ScanConfig};
use crate::frontend::extproc::ExtProcScanning;
use crate::frontend::icap::{run, IcapService};
use crate::pipeline::Pipeline;
use crate::queue::producer::{Producer, ProducerConfig};
use crate::queue::RedisConfig;
use crate::scan::clamd::Clamd;
use crate::scan::Scanner;
use crate::telemetry;
use crate::worker::HandlerConfig;
use anyhow::Context;
use clap::{Parser, Subcommand};

/// Scans web traffic for malware: an ICAP server for Squid and an ext_proc
/// server for Envoy, in front of clamd.
#[derive(Parser)]
#[command(name = "virus-scanner", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the ICAP and Envoy ext_proc servers and scans in the same
    /// process (no Redis).
    All(FrontendArgs),
    /// Runs the ICAP and Envoy ext_proc servers and queues every scan to the
    /// handlers through Redis (also installed as virus-scanner-producer).
    Producer(ProducerArgs),
    /// Scans what producers queue (also installed as
    /// virus-scanner-handler).
    Handler(HandlerArgs),
    /// Prints each lane's depth, pending count and the dead-letter count.
    QueueStatus(StatusArgs),
    /// Measures ICAP servers and clamd side by side and prints the ratios.
    Bench(BenchArgs),
    /// GETs an http:// URL and exits 0 on status 200, 1 otherwise: a
    /// health check for images without curl
    /// (`virus-scanner probe http://127.0.0.1:8080/readyz`).
    Probe {
        /// The URL (http only).
        url: String,
    },
}

/// The environment variables a subcommand (`all`, `producer`, `handler`,
/// ...) reads: deployment files are checked against these.
pub fn settings(subcommand: &str) -> Vec<String> {
    use clap::CommandFactory;
    Cli::command()
        .find_subcommand(subcommand)
        .map(|c| {
            c.get_arguments()
                .filter_map(|a| a.get_env())
                .map(|e| e.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A target as NAME=SPEC; SPEC is icap://IP:PORT/SERVICE[?URL],
    /// instream+tcp://HOST:PORT, instream+unix:///PATH or fildes+unix:///PATH.
    /// Ratios are of the first target's rate to each other's.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    targets: Vec<(String, Target)>,
    /// Body sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1K,64K,1M", value_parser = crate::config::parse_size)]
    sizes: Vec<u64>,
    /// Concurrent connections, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    connections: Vec<usize>,
    /// How long each measurement runs.
    #[arg(long, default_value = "10s", value_parser = crate::config::parse_duration)]
    duration: std::time::Duration,
    /// Instead of a rate: send one body of this size to each ICAP target,
    /// without Allow: 204 (the server must send it all back), and report the
    /// time. Watch the server's memory meanwhile.
    #[arg(long, value_parser = crate::config::parse_size)]
    once: Option<u64>,
    /// Rounds per cell: each round runs every target for DURATION, in a
    /// rotating order; ratios are the median over rounds of the ratio within
    /// a round (with the lowest and highest), which a noisy machine moves
    /// less than single runs.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    rounds: u64,
    /// Processes on the server side (servers, clamd), comma-separated PIDs:
    /// their CPU time per request is printed for each target, a figure the
    /// load generator's own cost does not move. Only the target being
    /// measured should be busy.
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
}

fn parse_target(s: &str) -> Result<(String, Target), String> {
    let (name, spec) = s.split_once('=').ok_or("a target is NAME=SPEC")?;
    Ok((name.to_owned(), spec.parse()?))
}

/// What every command that serves takes besides its own settings.
#[derive(clap::Args)]
struct RunArgs {
    #[command(flatten)]
    metrics: MetricsConfig,
    /// Log format: text (for people) or json (one object per line).
    #[arg(long, env = "LOG_FORMAT", default_value = "text")]
    log_format: crate::telemetry::LogFormat,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Check the settings and exit.
    #[arg(long)]
    check_config: bool,
}

/// The settings of `all`, which `producer` takes too: the two frontends,
/// scanning and running.
#[derive(clap::Args)]
struct FrontendArgs {
    #[command(flatten)]
    icap: IcapConfig,
    #[command(flatten)]
    extproc: ExtProcConfig,
    #[command(flatten)]
    scan: ScanConfig,
    #[command(flatten)]
    page: PageConfig,
    #[command(flatten)]
    run: RunArgs,
}

impl FrontendArgs {
    fn checks(&self) -> [Result<(), String>; 4] {
        [
            self.icap.validate(),
            self.extproc.validate(),
            self.scan.validate(),
            self.page.validate(),
        ]
    }
}

#[derive(clap::Args)]
struct ProducerArgs {
    #[command(flatten)]
    front: FrontendArgs,
    #[command(flatten)]
    redis: RedisConfig,
    #[command(flatten)]
    producer: ProducerConfig,
}

#[derive(clap::Args)]
struct HandlerArgs {
    #[command(flatten)]
    scan: ScanConfig,
    #[command(flatten)]
    redis: RedisConfig,
    #[command(flatten)]
    handler: HandlerConfig,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(clap::Args)]
struct StatusArgs {
    #[command(flatten)]
    redis: RedisConfig,
}

/// Turns transparent huge pages off for this process, unless
/// `MIMALLOC_ALLOW_THP` is set. The allocator is built not to ask for them
/// (mimalloc's `no_thp`), but a kernel whose THP mode is `always` hands
/// them out anyway. Each is zeroed whole when first touched, again after
/// every purge: with 1 MiB bodies in split mode, producer and handlers
/// spent a fifth of their CPU on that, and the p99 rose from 160 to
/// 210-290 ms. A process also takes about 4-7 MB more at rest.
fn small_pages() {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_none() {
        if let Err(e) = rustix::thread::disable_transparent_huge_pages(true) {
            eprintln!("virus-scanner: could not turn transparent huge pages off: {e}");
        }
    }
}

/// BSD's EX_USAGE: the command was used wrongly (a bad setting).
const EX_USAGE: u8 = 64;

/// Runs the command line; `subcommand`, when given, is put in front of the
/// arguments (how `virus-scanner-producer` becomes `virus-scanner producer`).
pub fn main(subcommand: Option<&str>) -> ExitCode {
    small_pages();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(sub) = subcommand {
        // Help and errors then show the equivalent `virus-scanner <sub>`.
        if let Some(name) = args.first_mut() {
            *name = "virus-scanner".into();
        }
        args.insert(1.min(args.len()), sub.into());
    }
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EX_USAGE);
        }
    };
    match cli.command {
        Command::Probe { url } => finished(
            &format!("virus-scanner probe {url}"),
            probe(&url).map_err(anyhow::Error::msg),
        ),
        Command::Bench(args) => finished("virus-scanner bench", bench(args)),
        Command::All(args) => match args.run.prepare(valid(args.checks())) {
            Some(exit) => exit,
            None => serve(|| all(args)),
        },
        Command::Producer(args) => {
            let checked = valid(args.front.checks())
                .and_then(|_| valid([args.redis.validate(), args.producer.validate()]));
            match args.front.run.prepare(checked) {
                Some(exit) => exit,
                None => serve(|| producer(args)),
            }
        }
        Command::Handler(args) => {
            let checked = valid([
                args.scan.validate(),
                args.redis.validate(),
                args.handler.validate(),
            ]);
            match args.run.prepare(checked) {
                Some(exit) => exit,
                None => serve(|| handler(args)),
            }
        }
        Command::QueueStatus(args) => match args.redis.validate() {
            Err(e) => {
                eprintln!("virus-scanner: {e}");
                ExitCode::from(EX_USAGE)
            }
            Ok(()) => finished("virus-scanner queue-status", queue_status(args)),
        },
    }
}

/// The first failed check of a command's settings, if any.
fn valid<const N: usize>(checks: [Result<(), String>; N]) -> Result<(), String> {
    checks.into_iter().collect()
}

/// The exit status of a command that runs once: 0, or 1 with the error on
/// standard error.
fn finished(what: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{what}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl RunArgs {
    /// Once the command's own settings are `checked`, starts logging. The
    /// exit status when the command ends here: 64 on a bad setting, 0 after
    /// `--check-config`; None when it goes on to serve.
    fn prepare(&self, checked: Result<(), String>) -> Option<ExitCode> {
        if let Err(e) = checked.and_then(|_| telemetry::init(&self.log_level, self.log_format)) {
            eprintln!("virus-scanner: {e}");
            return Some(ExitCode::from(EX_USAGE));
        }
        if self.check_config {
            println!("configuration OK");
            return Some(ExitCode::SUCCESS);
        }
        None
    }
}

/// Serves until the end, then exits 0, or 1 with the error logged.
fn serve(serve: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match serve() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The clamd client and scanner the settings describe; says whether clamd
/// answers yet, and `meanwhile` what happens until it does.
async fn scanner(scan: &ScanConfig, meanwhile: &str) -> Scanner {
    let scanner = scanner_of(scan);
    match scanner.refresh_version().await {
        Ok(v) => tracing::info!(clamd = %scan.clamd_url, version = %v, "clamd reachable"),
        Err(e) => {
            tracing::warn!(clamd = %scan.clamd_url, error = %e, "clamd not reachable yet; {meanwhile}")
        }
    }
    scanner
}

/// The clamd client and scanner the settings describe.
fn scanner_of(scan: &ScanConfig) -> Scanner {
    let clamd = Clamd::new(scan.clamd_url.clone(), scan.clamd_options());
    Scanner::new(clamd, scan.max_scan_size)
}

/// Starts /metrics, /healthz and /readyz, unless METRICS_PORT is 0. They
/// go on until the process exits.
async fn start_metrics(
    config: &MetricsConfig,
    probes: crate::metrics::Probes,
) -> anyhow::Result<()> {
    let Some(addr) = crate::metrics::address(config.metrics_addr, config.metrics_port) else {
        return Ok(());
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (METRICS_PORT)"))?;
    tracing::info!(%addr, "metrics and health listening");
    tokio::spawn(async move {
        if let Err(e) = crate::metrics::serve(listener, probes, std::future::pending()).await {
            tracing::error!(error = %e, "metrics server failed");
        }
    });
    Ok(())
}

/// Serves ICAP and Envoy ext_proc through `pipeline` until SIGTERM or
/// SIGINT, then drains both.
async fn serve_frontends(args: FrontendArgs, pipeline: Pipeline) -> anyhow::Result<()> {
    let FrontendArgs {
        icap,
        extproc,
        scan,
        page,
        ..
    } = args;
    let policy = crate::policy::Policy {
        pages: page.pages().map_err(anyhow::Error::msg)?,
        ..scan.policy()
    };
    let grpc_tls = extproc.grpc_tls().map_err(anyhow::Error::msg)?;
    // Listening for SIGHUP before the ports open, when something can be
    // read again: from then on a SIGHUP reloads rather than ends the process.
    let hup = if policy.pages.is_custom() || icap.icaps_paths().is_some() || grpc_tls.is_some() {
        let hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
            .context("cannot listen for SIGHUP")?;
        Some(hup)
    } else {
        None
    };
    let addr = SocketAddr::new(icap.listen_addr, icap.icap_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (ICAP_PORT)"))?;
    let grpc_addr = SocketAddr::new(icap.listen_addr, extproc.producer_port);
    let grpc_listener = tokio::net::TcpListener::bind(grpc_addr)
        .await
        .with_context(|| format!("cannot listen on {grpc_addr} (PRODUCER_PORT)"))?;
    let server = extproc.server(grpc_tls.as_ref());
    let shown = |l: &tokio::net::TcpListener, wanted: SocketAddr| l.local_addr().unwrap_or(wanted);
    tracing::info!(addr = %shown(&listener, addr), services = ?crate::frontend::icap::SERVICES, "ICAP server listening");
    tracing::info!(addr = %shown(&grpc_listener, grpc_addr), tls = server.tls.is_some(), "Envoy ext_proc server listening");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let grace = icap.shutdown_grace;
    let grpc = tokio::spawn(virus_scanner_grpc::serve(
        grpc_listener,
        ExtProcScanning::new(pipeline.clone(), policy.clone()),
        extproc.settings(),
        server,
        stopped(stop_rx.clone()),
    ));
    let icaps = match icap.icaps_paths() {
        None => None,
        Some(paths) => {
            let tls = crate::tls::Reloadable::load(paths).map_err(anyhow::Error::msg)?;
            let addr = SocketAddr::new(icap.listen_addr, icap.icaps_port);
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("cannot listen on {addr} (ICAPS_PORT)"))?;
            tracing::info!(%addr, "ICAPS server listening");
            Some((listener, tls))
        }
    };
    if let Some(hup) = hup {
        let tls = [
            ("ICAPS", icaps.as_ref().map(|(_, tls)| tls.clone())),
            ("gRPC", grpc_tls),
        ];
        tokio::spawn(reload_on_sighup(hup, tls, policy.pages.clone()));
    }
    let service = Arc::new(IcapService::new(icap, pipeline, policy));
    let icaps = icaps.map(|(listener, tls)| {
        let (service, stop) = (service.clone(), stopped(stop_rx.clone()));
        tokio::spawn(async move {
            if let Err(e) = crate::frontend::icap::run_tls(listener, service, tls, stop).await {
                tracing::error!(error = %e, "ICAPS server failed");
            }
        })
    });
    let icap = run(listener, service, stopped(stop_rx.clone()));
    tokio::pin!(icap);
    let mut grpc = grpc;
    let grpc_ended = tokio::select! {
        done = &mut icap => {
            done?;
            None
        }
        done = &mut grpc => Some(done),
    };
    let grpc_result = match grpc_ended {
        // Before shutdown, the gRPC server ends by itself only when it
        // cannot serve (a bad certificate, say).
        Some(done) if !*stop_rx.borrow() => {
            let e = match done {
                Ok(Ok(())) => anyhow::anyhow!("stopped unexpectedly"),
                Ok(Err(e)) => anyhow::Error::new(e),
                Err(e) => anyhow::Error::new(e),
            };
            return Err(e.context("ext_proc server (PRODUCER_PORT, GRPC_TLS_*)"));
        }
        // Drained first: wait for ICAP's transactions too.
        Some(done) => {
            icap.await?;
            Ok(done)
        }
        None => tokio::time::timeout(grace, grpc).await,
    };
    if let Some(icaps) = icaps {
        // It drains in parallel with ICAP, within the same grace.
        let _ = tokio::time::timeout(grace, icaps).await;
    }
    match grpc_result {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => return Err(anyhow::Error::new(e).context("ext_proc server")),
        Ok(Err(e)) => return Err(anyhow::Error::new(e).context("ext_proc server")),
        Err(_) => tracing::warn!("shutdown grace over with ext_proc streams still open"),
    }
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn all(args: FrontendArgs) -> anyhow::Result<()> {
    let until = format!("scans fail {:?} until it answers", args.scan.fail_mode);
    let scanner = scanner(&args.scan, &until).await;
    start_metrics(
        &args.run.metrics,
        crate::metrics::Probes {
            clamd: Some(scanner.clamd().clone()),
            redis: None,
        },
    )
    .await?;
    tokio::spawn(scanner.clone().watch_version(args.icap.version_refresh));
    serve_frontends(args, Pipeline::Local(scanner)).await
}

#[tokio::main]
async fn producer(args: ProducerArgs) -> anyhow::Result<()> {
    let front = args.front;
    let producer = Producer::start(
        &args.redis,
        args.producer,
        front.scan.max_scan_size,
        front.icap.version_refresh,
    )
    .context("Redis settings")?;
    start_metrics(
        &front.run.metrics,
        crate::metrics::Probes {
            clamd: None,
            redis: Some((args.redis.clone(), args.redis.keys())),
        },
    )
    .await?;
    match producer.ensure_groups().await {
        Ok(()) => tracing::info!(redis = %args.redis.display_url(), "Redis reachable"),
        Err(e) => {
            tracing::warn!(redis = %args.redis.display_url(), error = %e, "Redis not reachable yet; scans fail {:?} until it is", front.scan.fail_mode)
        }
    }
    serve_frontends(front, Pipeline::Queue(producer)).await
}

#[tokio::main]
async fn handler(args: HandlerArgs) -> anyhow::Result<()> {
    // The handler watches clamd itself (worker::run): it says once whether
    // clamd answers, and which version it is.
    let scanner = scanner_of(&args.scan);
    start_metrics(
        &args.run.metrics,
        crate::metrics::Probes {
            clamd: Some(scanner.clamd().clone()),
            redis: Some((args.redis.clone(), args.redis.keys())),
        },
    )
    .await?;
    crate::worker::run(args.redis, args.handler, scanner, shutdown_signal())
        .await
        .context("Redis settings")?;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn queue_status(args: StatusArgs) -> anyhow::Result<()> {
    let mut conn = args.redis.connect(std::time::Duration::ZERO)?;
    let keys = args.redis.keys();
    let (lanes, dead) = crate::queue::depths(&mut conn, &keys)
        .await
        .with_context(|| format!("Redis at {}", args.redis.display_url()))?;
    println!("lane\tstream\tlength\twaiting\tpending");
    for (p, d) in lanes {
        println!(
            "{}\t{}\t{}\t{}\t{}",
            p.as_str(),
            keys.lane(p),
            d.length,
            d.waiting,
            d.pending
        );
    }
    println!("dead\t{}\t{dead}\t-\t-", keys.dead());
    Ok(())
}

#[tokio::main]
async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(size) = args.once {
        let body = crate::bench::base_body(size as usize);
        for (name, target) in &args.targets {
            let Target::Icap { addr, service, url } = target else {
                continue;
            };
            let start = std::time::Instant::now();
            let mut conn = IcapConn::connect(*addr).await.map_err(anyhow::Error::msg)?;
            let preview = IcapConn::preview_size(*addr, service)
                .await
                .map_err(anyhow::Error::msg)?;
            let template = RespmodTemplate::new(*addr, service, url, &body, false, preview);
            conn.send(&template, 0).await.map_err(anyhow::Error::msg)?;
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{name}: {} through in {secs:.2} s ({:.0} MB/s)",
                size_label(size as usize),
                size as f64 / secs / 1e6
            );
        }
        return Ok(());
    }
    let reference = &args.targets[0].0;
    let spread = if args.rounds > 1 {
        format!(" (median of {} rounds, lowest-highest)", args.rounds)
    } else {
        String::new()
    };
    println!("| size | conns | target | req/s | p50 ms | p99 ms | errors | server CPU us/req | {reference} / target{spread} |");
    println!("|---|---|---|---|---|---|---|---|---|");
    let n = args.targets.len();
    for &size in &args.sizes {
        for &conns in &args.connections {
            let mut rounds = Rounds::new(n);
            for round in 0..args.rounds as usize {
                for i in Rounds::order(round, n) {
                    let before = cpu_time(&args.server_pids);
                    let mut stats =
                        measure(&args.targets[i].1, size as usize, conns, args.duration).await;
                    if !args.server_pids.is_empty() {
                        stats.cpu = Some(cpu_time(&args.server_pids).saturating_sub(before));
                    }
                    rounds.add(i, stats);
                }
            }
            for (i, (name, _)) in args.targets.iter().enumerate() {
                let row = rounds
                    .total(i)
                    .row(size as usize, conns, name, &rounds.ratio_text(0, i));
                println!("{row}");
            }
        }
    }
    Ok(())
}

/// On each SIGHUP, reads again what can be: the ICAPS certificate and key,
/// and the operator's block page (BLOCK_PAGE). What fails to load is
/// logged, and the old one stays.
async fn reload_on_sighup(
    mut hup: tokio::signal::unix::Signal,
    tls: [(&'static str, Option<crate::tls::Reloadable>); 2],
    pages: crate::blockpage::BlockPages,
) {
    while hup.recv().await.is_some() {
        for (port, tls) in &tls {
            let Some(tls) = tls else { continue };
            match tls.reload() {
                Ok(()) => tracing::info!("SIGHUP: {port} certificate reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: {port} certificate not reloaded; the old one stays")
                }
            }
        }
        if pages.is_custom() {
            match pages.reload() {
                Ok(()) => tracing::info!("SIGHUP: block page reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: block page not reloaded; the old one stays")
                }
            }
        }
    }
}

/// `GET url`; Ok on 200.
fn probe(url: &str) -> Result<(), String> {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| e.to_string())?
        .next()
        .ok_or("no address")?;
    let timeout = std::time::Duration::from_secs(3);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    let status = answer.lines().next().unwrap_or("no answer");
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(status.to_owned())
    }
}

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_line_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
