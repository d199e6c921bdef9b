//! Policy: which messages are scanned, and what a verdict means for the user.
//!
//! Trusted hosts skip the scan. An oversized body is blocked unless policy
//! lets it through (marked). A scanner failure follows the failure mode:
//! closed by default, so nothing passes unscanned in silence.

use std::str::FromStr;

use crate::model::{BlockReason, Decision, SkipReason, Verdict};

/// What happens when the scanner cannot give a verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailureMode {
    /// Block with a "scanner unavailable" page (the default).
    Closed,
    /// Let the message through, marked with a warning header and logged.
    Open,
}

/// What happens to a body larger than the scan limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TooLargeAction {
    /// Block with a page that says why (the default).
    Block,
    /// Let it through unscanned, marked with a header and logged.
    Allow,
}

/// A host pattern: an exact name, or `.suffix` for a domain and everything
/// below it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostPattern {
    /// `example.com` matches only `example.com`.
    Exact(String),
    /// `.example.com` matches `example.com` and `a.b.example.com`.
    Suffix(String),
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        let valid = |h: &str| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b':')
        };
        match s.strip_prefix('.') {
            Some(rest) if valid(rest) => Ok(HostPattern::Suffix(rest.to_owned())),
            None if valid(&s) => Ok(HostPattern::Exact(s)),
            _ => Err(format!("{s:?} is not a host name or .suffix")),
        }
    }
}

impl HostPattern {
    /// Whether `host` (lower-case, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => host == h,
            HostPattern::Suffix(s) => {
                host == s
                    || (host.ends_with(s.as_str()) && host[..host.len() - s.len()].ends_with('.'))
            }
        }
    }
}

/// The policy in force.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Hosts whose messages are not scanned.
    pub trusted_hosts: Vec<HostPattern>,
    /// Failure mode.
    pub failure_mode: FailureMode,
    /// Oversized bodies.
    pub too_large: TooLargeAction,
    /// The scan limit, in bytes.
    pub max_scan_size: u64,
}

impl Policy {
    /// Whether a message to `host` skips the scan.
    pub fn is_trusted(&self, host: Option<&str>) -> bool {
        host.is_some_and(|h| self.trusted_hosts.iter().any(|p| p.matches(h)))
    }

    /// What the user gets for a verdict.
    pub fn decide(&self, verdict: &Verdict) -> Decision {
        match verdict {
            Verdict::Clean => Decision::Allow { unscanned: None },
            Verdict::Infected { signatures } => {
                Decision::Block(BlockReason::Infected(signatures.clone()))
            }
            Verdict::NotScanned(SkipReason::Trusted | SkipReason::NoBody) => {
                Decision::Allow { unscanned: None }
            }
            Verdict::NotScanned(reason) => Decision::Allow {
                unscanned: Some(*reason),
            },
            Verdict::TooLarge { limit } => match self.too_large {
                TooLargeAction::Block => Decision::Block(BlockReason::TooLarge { limit: *limit }),
                TooLargeAction::Allow => Decision::Allow {
                    unscanned: Some(SkipReason::TooLarge),
                },
            },
            Verdict::Error { .. } => match self.failure_mode {
                FailureMode::Closed => Decision::Block(BlockReason::ScannerUnavailable),
                FailureMode::Open => Decision::Allow {
                    unscanned: Some(SkipReason::ScannerFailed),
                },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_patterns() {
        let exact: HostPattern = "Example.com".parse().unwrap();
        assert!(exact.matches("example.com") && !exact.matches("a.example.com"));
        let suffix: HostPattern = ".example.com".parse().unwrap();
        assert!(suffix.matches("example.com") && suffix.matches("a.b.example.com"));
        assert!(!suffix.matches("badexample.com"));
        assert!("".parse::<HostPattern>().is_err());
        assert!("a b".parse::<HostPattern>().is_err());
    }

    #[test]
    fn failure_and_size_modes() {
        let mut p = Policy {
            trusted_hosts: vec![],
            failure_mode: FailureMode::Closed,
            too_large: TooLargeAction::Block,
            max_scan_size: 10,
        };
        let err = Verdict::Error {
            kind: "connect",
            message: "down".into(),
        };
        assert_eq!(
            p.decide(&err),
            Decision::Block(BlockReason::ScannerUnavailable)
        );
        assert_eq!(
            p.decide(&Verdict::TooLarge { limit: 10 }),
            Decision::Block(BlockReason::TooLarge { limit: 10 })
        );
        p.failure_mode = FailureMode::Open;
        p.too_large = TooLargeAction::Allow;
        assert_eq!(
            p.decide(&err),
            Decision::Allow {
                unscanned: Some(SkipReason::ScannerFailed)
            }
        );
        assert_eq!(
            p.decide(&Verdict::TooLarge { limit: 10 }),
            Decision::Allow {
                unscanned: Some(SkipReason::TooLarge)
            }
        );
        assert_eq!(
            p.decide(&Verdict::Clean),
            Decision::Allow { unscanned: None }
        );
    }
}
