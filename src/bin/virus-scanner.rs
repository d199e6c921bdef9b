//! The `virus-scanner` command: `all` runs the ICAP server and scans
//! in-process.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
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

/// Completes on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
}
