//! The internal model both frontends translate into: what is to be scanned,
//! what the scanner found, and what the proxy is told to do.
//!
//! Nothing here knows ICAP or ext_proc. Preview, `Allow: 204`, ISTag and
//! processing modes stay in the frontends; a body reaches the scanner as a
//! stream of `Bytes` pushed into a [`crate::scan::ScanSession`], never as one
//! buffer.

use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, StatusCode};

/// Which HTTP message is being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The client's request (an upload): ICAP REQMOD.
    Request,
    /// The origin's response (a download): ICAP RESPMOD.
    Response,
}

impl Direction {
    /// `request` or `response`, for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

/// A scan's id: unique across processes and hosts (it names the task on the
/// queue), sortable by the producer's start time, and printed on block pages
/// so that a user's report can be found in the logs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ScanId(String);

impl ScanId {
    /// The next id: the process's start time, a random tag drawn once per
    /// process, and a counter.
    pub fn next() -> ScanId {
        use std::hash::{BuildHasher, Hasher};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static PREFIX: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        let prefix = PREFIX.get_or_init(|| {
            let start = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            // RandomState is seeded from the operating system's randomness.
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            format!("{start:x}-{:08x}", h.finish() as u32)
        });
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(prefix.len() + 17);
        id.push_str(prefix);
        id.push('-');
        push_hex(&mut id, n, 6);
        ScanId(id)
    }

    /// An id received from elsewhere (a task on the queue).
    pub fn from_wire(id: String) -> ScanId {
        ScanId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Appends `n` in lower-case hex, at least `min_digits` long: what
/// `{n:0min_digits$x}` writes, without the formatting machinery (about a
/// thousand instructions per id, made for every transaction).
fn push_hex(out: &mut String, n: u64, min_digits: u32) {
    let digits = (64 - n.leading_zeros()).div_ceil(4).max(min_digits).max(1);
    for shift in (0..digits).rev() {
        let nibble = n.checked_shr(shift * 4).unwrap_or(0) & 0xf;
        out.push(char::from(b"0123456789abcdef"[nibble as usize]));
    }
}

impl fmt::Display for ScanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What the frontend knows about a message before its body arrives.
#[derive(Debug, Clone)]
pub struct ScanRequest {
    /// This scan's id.
    pub id: ScanId,
    /// Upload or download.
    pub direction: Direction,
    /// The HTTP method of the request (also for responses: the request that
    /// caused them), when known.
    pub method: Option<Method>,
    /// The URL, as absolute as the frontend could make it.
    pub url: String,
    /// The host the request went to, lower-cased, without port.
    pub host: Option<String>,
    /// The HTTP response's status, for downloads.
    pub response_status: Option<StatusCode>,
    /// The body length the message declares (`Content-Length`), if any.
    pub declared_length: Option<u64>,
    /// The end user's address, as the proxy reported it.
    pub client_ip: Option<IpAddr>,
    /// The end user's name, as the proxy reported it.
    pub user: Option<String>,
    /// The message's `Content-Encoding`, all its values in order: the scan
    /// decodes the codings clamd cannot see through.
    pub content_encoding: Option<String>,
    /// An upload's multipart/form-data boundary: the scan takes the parts
    /// apart and scans each file alone.
    pub form_boundary: Option<String>,
}

/// A message's `Content-Encoding` as one value: fields that repeat it are
/// joined in order, as RFC 9110 reads them.
pub fn content_encoding(headers: &http::HeaderMap) -> Option<String> {
    let mut values = headers.get_all(http::header::CONTENT_ENCODING).iter();
    let first = values.next()?;
    let mut joined = String::from_utf8_lossy(first.as_bytes()).into_owned();
    for v in values {
        joined.push_str(", ");
        joined.push_str(&String::from_utf8_lossy(v.as_bytes()));
    }
    Some(joined)
}

/// The multipart/form-data boundary of a request's body, if it is a form.
pub fn form_boundary(direction: Direction, headers: &http::HeaderMap) -> Option<String> {
    if direction != Direction::Request {
        return None;
    }
    let value = headers.get(http::header::CONTENT_TYPE)?.to_str().ok()?;
    crate::scan::form::boundary(value)
}

/// How urgently a message is scanned: the queue has one lane for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Priority {
    /// Scanned first (interactive traffic, say).
    High,
    /// The default.
    Normal,
    /// Scanned when the other lanes leave room, but never starved.
    Low,
}

impl Priority {
    /// Every priority, most urgent first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    /// `high`, `normal` or `low`.
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::High => "high",
            Priority::Normal => "normal",
            Priority::Low => "low",
        }
    }
}

impl std::str::FromStr for Priority {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "high" => Ok(Priority::High),
            "normal" => Ok(Priority::Normal),
            "low" => Ok(Priority::Low),
            _ => Err(format!("{s:?} is not high, normal or low")),
        }
    }
}

/// Why a message was let through without a scan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The host is on the trusted list.
    Trusted,
    /// The client is on the trusted list (`TRUSTED_CLIENTS`).
    TrustedClient,
    /// The message has no body.
    NoBody,
    /// The body is larger than the scan limit, and policy lets it through.
    TooLarge,
    /// The scanner failed, and the failure mode is open.
    ScannerFailed,
    /// The body's `Content-Encoding` could not be undone, or it is a zip
    /// that clamd does not open, so the scan did not see it whole, and the
    /// failure mode is open.
    Undecodable,
}

impl SkipReason {
    /// A short label for logs, headers and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::Trusted => "trusted",
            SkipReason::TrustedClient => "trusted-client",
            SkipReason::NoBody => "no-body",
            SkipReason::TooLarge => "too-large",
            SkipReason::ScannerFailed => "scanner-failed",
            SkipReason::Undecodable => "undecodable",
        }
    }
}

/// What the scanner found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Scanned, nothing found.
    Clean,
    /// Scanned, and these signatures matched.
    Infected {
        /// The signature names, as clamd reports them.
        signatures: Vec<String>,
    },
    /// The body exceeded the scan limit, or clamd refused it as over a
    /// limit of its own.
    TooLarge {
        /// The limit, in bytes; `None` when it was clamd's, whose size is
        /// not known here.
        limit: Option<u64>,
    },
    /// Not scanned, on purpose.
    NotScanned(SkipReason),
    /// The body's `Content-Encoding` could not be undone (it is cut short,
    /// damaged, or a layering this build cannot undo), or the body is a zip
    /// that clamd answers OK for without opening it; and what clamd saw
    /// was clean: the scan did not see the body whole. The content's fault
    /// or ours, not the scanner's: it is not counted as a scan error.
    Undecodable {
        /// Why the scan did not see it whole.
        reason: String,
    },
    /// The scan failed: no verdict.
    Error {
        /// A short label (`connect`, `timeout`, ...).
        kind: &'static str,
        /// What went wrong.
        message: String,
    },
}

impl Verdict {
    /// A short label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Verdict::Clean => "clean",
            Verdict::Infected { .. } => "infected",
            Verdict::TooLarge { .. } => "too-large",
            Verdict::NotScanned(_) => "not-scanned",
            Verdict::Undecodable { .. } => "undecodable",
            Verdict::Error { .. } => "error",
        }
    }

    /// What went wrong, for logs: why the scan failed, or why the body did
    /// not decode.
    pub fn problem(&self) -> Option<&str> {
        match self {
            Verdict::Error { message, .. } => Some(message),
            Verdict::Undecodable { reason } => Some(reason),
            _ => None,
        }
    }
}

/// Why the user sees a block page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BlockReason {
    /// Malware was found.
    Infected(Vec<String>),
    /// The body was too large to scan, and policy blocks what it cannot scan.
    TooLarge {
        /// The limit, in bytes; `None` for clamd's own, whose size is not
        /// known here.
        limit: Option<u64>,
    },
    /// The scanner failed, and the failure mode is closed.
    ScannerUnavailable,
    /// The body's `Content-Encoding` could not be undone, or it is a zip
    /// that clamd does not open, and the failure mode is closed.
    Undecodable,
}

impl BlockReason {
    /// `infected`, `too-large`, `scanner-unavailable` or `undecodable`: for
    /// headers, JSON answers and the block page's `{{reason}}`.
    pub fn as_str(&self) -> &'static str {
        match self {
            BlockReason::Infected(_) => "infected",
            BlockReason::TooLarge { .. } => "too-large",
            BlockReason::ScannerUnavailable => "scanner-unavailable",
            BlockReason::Undecodable => "undecodable",
        }
    }
}

/// What the proxy is told to do with the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Let the message through unchanged. `warning` is set when it passes
    /// without a clean scan (a failure with the failure mode open, an
    /// oversized body allowed by policy): the frontend marks the answer.
    Allow {
        /// Why the message passes unscanned, if it does.
        unscanned: Option<SkipReason>,
    },
    /// Replace the message with a block page.
    Block(BlockReason),
}

impl Decision {
    /// Why a message was let through without a clean scan, if it was: a
    /// skip the verdict says (a trusted host, no body), or one the decision
    /// made (too large, the scanner failed with the failure mode open).
    pub fn unscanned(&self, verdict: &Verdict) -> Option<SkipReason> {
        match (verdict, self) {
            (Verdict::NotScanned(reason), _) => Some(*reason),
            (_, Decision::Allow { unscanned }) => *unscanned,
            (_, Decision::Block(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_written_as_format_writes_it() {
        for n in [
            0,
            1,
            0xf,
            0x10,
            0xabcdef,
            0x1234567,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            for min in [0, 1, 6, 20] {
                let mut out = String::new();
                push_hex(&mut out, n, min);
                assert_eq!(
                    out,
                    format!("{n:0width$x}", width = min as usize),
                    "{n:x} {min}"
                );
            }
        }
    }

    #[test]
    fn ids_count_up_after_one_prefix() {
        let a = ScanId::next();
        let b = ScanId::next();
        let (pa, na) = a.as_str().rsplit_once('-').unwrap();
        let (pb, nb) = b.as_str().rsplit_once('-').unwrap();
        assert_eq!(pa, pb);
        assert!(na.len() >= 6 && nb.len() >= 6, "{a:?} {b:?}");
        let (na, nb) = (
            u64::from_str_radix(na, 16).unwrap(),
            u64::from_str_radix(nb, 16).unwrap(),
        );
        assert!(nb > na, "{a:?} {b:?}");
    }
}
