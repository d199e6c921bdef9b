//! virus-scanner: scans web traffic for malware while it flows.
//!
//! Squid hands HTTP messages over ICAP, Envoy over ext_proc; both frontends
//! translate into one internal model, and bodies are scanned by ClamAV's
//! daemon before the proxy lets them through.
//!
//! # Layout
//!
//! - [`icap`] (the `icap/` crate): the ICAP/1.0 codec, sans-IO.
//!
//! The service itself (the ICAP server, the scan pipeline, the clamd client,
//! the Redis queue and the ext_proc frontend) grows here issue by issue.

#![forbid(unsafe_code)]

pub use icap;
