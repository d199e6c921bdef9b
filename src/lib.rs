//! virus-scanner: scans web traffic for malware while it flows.
//!
//! Squid hands HTTP messages over ICAP (Envoy over ext_proc, later); the
//! frontends translate them into one internal model, the body streams to
//! ClamAV's daemon, and the verdict comes back as "let it through" or a block
//! page. When the scanner fails, the failure mode decides, closed by default.
//!
//! # Layout
//!
//! - [`icap`] (the `icap/` crate): the ICAP/1.0 codec, sans-IO.
//! - [`model`]: `ScanRequest`, `Verdict`, `Decision`: what frontends produce
//!   and consume, knowing neither protocol.
//! - [`policy`]: trusted hosts, the scan limit, the failure mode.
//! - [`scan`]: the scan pipeline ([`scan::Scanner`], [`scan::ScanSession`])
//!   and the clamd client ([`scan::clamd`]).
//! - [`frontend::icap`]: the ICAP server: connections, preview, streaming,
//!   answers.
//! - [`blockpage`]: the page users see instead of a blocked message.
//! - [`config`]: every setting, as flags and environment variables.
//! - [`error`]: scan errors, with their origin and retryability.
//! - [`telemetry`]: logging, one audit line per verdict.
//! - [`bench`]: the load generator behind `virus-scanner bench`.
//! - `src/bin/virus-scanner.rs`: the command line.

#![forbid(unsafe_code)]

pub use icap;

pub mod bench;
pub mod blockpage;
pub mod config;
pub mod error;
pub mod frontend;
pub mod model;
pub mod policy;
pub mod scan;
pub mod telemetry;
