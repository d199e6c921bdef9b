//! virus-scanner: scans web traffic for malware while it flows.
//!
//! Squid hands HTTP messages over ICAP, Envoy over ext_proc; the
//! frontends translate them into one internal model, the body streams to
//! ClamAV's daemon, and the verdict comes back as "let it through" or a block
//! page. When the scanner fails, the failure mode decides, closed by default.
//!
//! # Layout
//!
//! - [`icap`] (the `icap/` crate): the ICAP/1.0 codec, sans-IO.
//! - [`model`]: `ScanRequest`, `Verdict`, `Decision`: what frontends produce
//!   and consume, knowing neither protocol.
//! - [`policy`]: trusted hosts and priority lanes, the scan limit, the
//!   failure mode.
//! - [`scan`]: the scan pipeline ([`scan::Scanner`], [`scan::ScanSession`])
//!   and the clamd client ([`scan::clamd`]).
//! - [`pipeline`]: where a frontend sends a body: scanned in-process, or
//!   queued through Redis.
//! - [`queue`]: the Redis Streams queue: lanes, the task schema, the
//!   producer side, bodies on the shared volume.
//! - [`worker`]: the handler: dequeue, scan with clamd, publish, acknowledge.
//! - [`frontend::icap`]: the ICAP server: connections, preview, streaming,
//!   answers.
//! - [`frontend::extproc`]: the Envoy ext_proc frontend's service side: the
//!   `grpc/` crate (`virus_scanner_grpc`) speaks ext_proc and asks this
//!   module to start scans and turn verdicts into Envoy's answers.
//! - [`blockpage`]: the page users see instead of a blocked message, built in
//!   or the operator's own.
//! - [`config`]: every setting, as flags and environment variables.
//! - [`error`]: scan errors, with their origin and retryability.
//! - [`telemetry`]: logging, one audit line per verdict.
//! - [`metrics`]: Prometheus counters, `/metrics`, `/healthz`, `/readyz`.
//! - [`tls`]: the ICAPS certificate, reloaded on SIGHUP.
//! - [`mod@bench`]: the load generator behind `virus-scanner bench`.
//! - `src/bin/`: the command line: `virus-scanner` (`all`, `producer`,
//!   `handler`, `queue-status`, `bench`), and `virus-scanner-producer` and
//!   `virus-scanner-handler`, the same commands under the original's names.

#![forbid(unsafe_code)]

pub use icap;

pub mod bench;
pub mod blockpage;
pub mod cli;
pub mod config;
pub mod error;
pub mod frontend;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod policy;
pub mod queue;
pub mod scan;
pub mod telemetry;
pub mod tls;
pub mod worker;
