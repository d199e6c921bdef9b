//! Logging: one line per verdict (the audit trail) and one per failure,
//! through `tracing`.

use std::time::Duration;

use tracing_subscriber::filter::LevelFilter;

use crate::model::{Decision, Priority, ScanRequest, SkipReason, Verdict};

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Starts logging to standard error at `level` (error, warn, info, debug,
/// trace). Returns an error naming the setting when the level is unknown.
pub fn init(level: &str, format: LogFormat) -> Result<(), String> {
    let level: LevelFilter = level.parse().map_err(|_| {
        format!("LOG_LEVEL {level:?} is not one of error, warn, info, debug, trace")
    })?;
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    Ok(())
}

/// The audit line of one verdict: who, what, the verdict and what was done;
/// a warning when a message passes unscanned; and the decision counted in
/// the metrics (both frontends report every decision here).
/// `bytes` is the body received; `lane` the queue lane, when the scan was
/// queued.
pub fn audit(
    frontend: &'static str,
    scan: &ScanRequest,
    verdict: &Verdict,
    decision: &Decision,
    elapsed: Duration,
    bytes: u64,
    lane: Option<Priority>,
) {
    let signature = match verdict {
        Verdict::Infected { signatures } => signatures.join(","),
        _ => String::new(),
    };
    let error = verdict.problem().unwrap_or_default();
    crate::metrics::METRICS.decided(
        frontend,
        scan.direction.as_str(),
        verdict,
        decision,
        elapsed,
    );
    let action = match decision {
        Decision::Allow { unscanned: None } => "allow",
        Decision::Allow { unscanned: Some(_) } => "allow-unscanned",
        Decision::Block(_) => "block",
    };
    tracing::info!(
        id = %scan.id,
        frontend,
        direction = scan.direction.as_str(),
        client = %scan.client_ip.map(|i| i.to_string()).unwrap_or_default(),
        user = scan.user.as_deref().unwrap_or(""),
        url = %scan.url,
        verdict = verdict.label(),
        signature = %signature,
        action,
        unscanned = decision.unscanned(verdict).map_or("", SkipReason::as_str),
        error,
        bytes,
        lane = lane.map_or("", Priority::as_str),
        ms = elapsed.as_millis() as u64,
        "verdict"
    );
    if let Decision::Allow {
        unscanned: Some(reason),
    } = decision
    {
        tracing::warn!(id = %scan.id, url = %scan.url, reason = reason.as_str(), "passed without a scan");
    }
}
