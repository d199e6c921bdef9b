//! The `virus-scanner` command: `all` runs the ICAP server and scans
//! in-process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use virus_scanner::bench::{measure, size_label, IcapConn, RespmodTemplate, Target};
use virus_scanner::config::{IcapConfig, ScanConfig};
use virus_scanner::frontend::icap::{run, IcapService};
use virus_scanner::scan::clamd::Clamd;
use virus_scanner::scan::Scanner;
use virus_scanner::telemetry;

/// Scans web traffic for malware: an ICAP server for Squid in front of clamd.
#[derive(Parser)]
#[command(name = "virus-scanner", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the ICAP server and scans in the same process.
    All(AllArgs),
    /// Measures ICAP servers and clamd side by side and prints the ratios.
    Bench(BenchArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// A target as NAME=SPEC; SPEC is icap://IP:PORT/SERVICE[?URL],
    /// instream+tcp://HOST:PORT, instream+unix:///PATH or fildes+unix:///PATH.
    /// Ratios are of the first target's rate to each other's.
    #[arg(long = "target", required = true, value_parser = parse_target)]
    targets: Vec<(String, Target)>,
    /// Body sizes, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1K,64K,1M", value_parser = virus_scanner::config::parse_size)]
    sizes: Vec<u64>,
    /// Concurrent connections, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "8,64")]
    connections: Vec<usize>,
    /// How long each measurement runs.
    #[arg(long, default_value = "10s", value_parser = virus_scanner::config::parse_duration)]
    duration: std::time::Duration,
    /// Instead of a rate: send one body of this size to each ICAP target,
    /// without Allow: 204 (the server must send it all back), and report the
    /// time. Watch the server's memory meanwhile.
    #[arg(long, value_parser = virus_scanner::config::parse_size)]
    once: Option<u64>,
}

fn parse_target(s: &str) -> Result<(String, Target), String> {
    let (name, spec) = s.split_once('=').ok_or("a target is NAME=SPEC")?;
    Ok((name.to_owned(), spec.parse()?))
}

#[derive(clap::Args)]
struct AllArgs {
    #[command(flatten)]
    icap: IcapConfig,
    #[command(flatten)]
    scan: ScanConfig,
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Check the settings and exit.
    #[arg(long)]
    check_config: bool,
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// BSD's EX_USAGE: the command was used wrongly (a bad setting).
const EX_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
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
        Command::Bench(args) => match bench(args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("virus-scanner bench: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::All(args) => {
            if let Err(e) = args
                .icap
                .validate()
                .and_then(|_| args.scan.validate())
                .and_then(|_| telemetry::init(&args.log_level))
            {
                eprintln!("virus-scanner: {e}");
                return ExitCode::from(EX_USAGE);
            }
            if args.check_config {
                println!("configuration OK");
                return ExitCode::SUCCESS;
            }
            match all(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

#[tokio::main]
async fn all(args: AllArgs) -> anyhow::Result<()> {
    let clamd = Clamd::new(args.scan.clamd_url.clone(), args.scan.clamd_options());
    let scanner = Scanner::new(clamd, args.scan.max_scan_size);
    match scanner.refresh_version().await {
        Ok(v) => tracing::info!(clamd = %args.scan.clamd_url, version = %v, "clamd reachable"),
        Err(e) => {
            tracing::warn!(clamd = %args.scan.clamd_url, error = %e, "clamd not reachable yet; scans fail {:?} until it is", args.scan.fail_mode)
        }
    }
    tokio::spawn(scanner.clone().watch_version(args.icap.version_refresh));
    let addr = SocketAddr::new(args.icap.listen_addr, args.icap.icap_port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (ICAP_PORT)"))?;
    tracing::info!(%addr, services = ?virus_scanner::frontend::icap::SERVICES, "ICAP server listening");
    let service = Arc::new(IcapService::new(args.icap, scanner, args.scan.policy()));
    run(listener, service, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

#[tokio::main]
async fn bench(args: BenchArgs) -> anyhow::Result<()> {
    if let Some(size) = args.once {
        let body = virus_scanner::bench::base_body(size as usize);
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
    println!("| size | conns | target | req/s | p50 ms | p99 ms | errors | {reference} / target |");
    println!("|---|---|---|---|---|---|---|---|");
    for &size in &args.sizes {
        for &conns in &args.connections {
            let mut rates = Vec::new();
            for (name, target) in &args.targets {
                let stats = measure(target, size as usize, conns, args.duration).await;
                if let Some(e) = &stats.first_error {
                    eprintln!(
                        "{name} ({} x{conns}): {} errors, first: {e}",
                        size_label(size as usize),
                        stats.errors
                    );
                }
                rates.push((name.clone(), stats));
            }
            let first = rates[0].1.rate();
            for (name, s) in &rates {
                let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
                println!(
                    "| {} | {conns} | {name} | {:.0} | {:.2} | {:.2} | {} | {:.2} |",
                    size_label(size as usize),
                    s.rate(),
                    ms(s.quantile(0.5)),
                    ms(s.quantile(0.99)),
                    s.errors,
                    first / s.rate().max(f64::MIN_POSITIVE),
                );
            }
        }
    }
    Ok(())
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
