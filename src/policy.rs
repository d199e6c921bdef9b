//! Policy: which messages are scanned, how urgently, and what a verdict means
//! for the user.
//!
//! Host rules send a message to a priority lane or let it skip the scan
//! (trusted hosts are skip rules); the first rule that matches wins. Trusted
//! clients, by the address the proxy reports, skip it too. An oversized body is blocked unless policy
//! lets it through (marked). A scanner failure follows the failure mode:
//! closed by default, so nothing passes unscanned in silence.

use std::net::IpAddr;
use std::str::FromStr;

use crate::model::{BlockReason, Decision, Priority, SkipReason, Verdict};

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

/// What happens to a request for part of a file (a `Range` header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RangeRequests {
    /// Passed as they are: each part is scanned on its own, so malware cut
    /// across two parts is found in neither (the default, as with c-icap).
    Allow,
    /// The `Range` and `If-Range` headers are removed: the origin sends the
    /// whole file, which is scanned whole, and the client gets all of it.
    Whole,
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

/// A client address or network: `10.0.0.5`, `10.1.0.0/16`, `fd00::/8`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientNet {
    addr: IpAddr,
    prefix: u8,
}

impl FromStr for ClientNet {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || format!("{s:?} is not an IP address or address/prefix");
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        let bits = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= bits)
                .ok_or_else(bad)?,
        };
        let net = ClientNet { addr, prefix };
        if net.masked(addr) != addr {
            return Err(format!(
                "{s:?} has bits set past its /{prefix}: write the network's first address"
            ));
        }
        Ok(net)
    }
}

impl ClientNet {
    /// Whether `client` is this address or in this network. IPv4 addresses
    /// written as IPv6 (`::ffff:10.0.0.1`) count as IPv4.
    pub fn contains(&self, client: IpAddr) -> bool {
        let client = client.to_canonical();
        client.is_ipv4() == self.addr.is_ipv4() && self.masked(client) == self.addr
    }

    /// `addr` with the bits past the prefix cleared.
    fn masked(&self, addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V4(a) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V4((u32::from(a) & mask).into())
            }
            IpAddr::V6(a) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                IpAddr::V6((u128::from(a) & mask).into())
            }
        }
    }
}

/// Where a host rule sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Not scanned: logged and counted as trusted.
    Skip,
    /// Scanned in this lane.
    Scan(Priority),
}

impl FromStr for Route {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "skip" => Ok(Route::Skip),
            other => other
                .parse()
                .map(Route::Scan)
                .map_err(|_| format!("{s:?} is not skip, low, normal or high")),
        }
    }
}

/// A host rule: `pattern=route`, e.g. `.windowsupdate.com=low`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRule {
    /// The hosts it applies to.
    pub pattern: HostPattern,
    /// Where they go.
    pub route: Route,
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (pattern, route) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?} is not host=skip|low|normal|high"))?;
        Ok(HostRule {
            pattern: pattern.parse()?,
            route: route.parse()?,
        })
    }
}

/// The header a request may choose its lane with, when the configuration
/// allows it. A constant: looking a header up by a string parses the string.
pub const PRIORITY_HEADER: http::HeaderName = http::HeaderName::from_static("x-priority");

/// The policy in force.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Host rules, tried in order; trusted hosts come first, as skip rules.
    pub rules: Vec<HostRule>,
    /// The lane of a message no rule matches.
    pub default_priority: Priority,
    /// Whether the request's `X-Priority` header (high, normal or low) may
    /// choose the lane of a message that is scanned.
    pub priority_header: bool,
    /// Failure mode.
    pub failure_mode: FailureMode,
    /// Oversized bodies.
    pub too_large: TooLargeAction,
    /// The scan limit, in bytes.
    pub max_scan_size: u64,
    /// Requests for part of a file.
    pub range_requests: RangeRequests,
    /// Clients whose messages are not scanned (their address as the proxy
    /// reports it).
    pub trusted_clients: Vec<ClientNet>,
    /// The HTML page a blocked message is answered with.
    pub pages: crate::blockpage::BlockPages,
}

impl Policy {
    /// Where a message to `host` goes; `header` is its `X-Priority` value,
    /// heeded only when the configuration allows it, and never to skip.
    pub fn route(&self, host: Option<&str>, header: Option<&str>) -> Route {
        let matched = host.and_then(|h| self.rules.iter().find(|r| r.pattern.matches(h)));
        match matched.map(|r| r.route) {
            Some(Route::Skip) => Route::Skip,
            by_rule => {
                let by_header = header
                    .filter(|_| self.priority_header)
                    .and_then(|v| v.parse::<Priority>().ok());
                let by_rule = by_rule.map(|r| match r {
                    Route::Scan(p) => p,
                    Route::Skip => unreachable!("handled above"),
                });
                Route::Scan(by_header.or(by_rule).unwrap_or(self.default_priority))
            }
        }
    }

    /// Where a message goes: scanned in a lane (see [`Policy::route`]), or
    /// not scanned and why. A trusted host is tried first, then a trusted
    /// client; `client` is the address the proxy reported, and only one it
    /// vouches for (not one a client could have written itself).
    pub fn triage(
        &self,
        host: Option<&str>,
        client: Option<IpAddr>,
        header: Option<&str>,
    ) -> Result<Priority, SkipReason> {
        match self.route(host, header) {
            Route::Skip => Err(SkipReason::Trusted),
            Route::Scan(_)
                if client.is_some_and(|c| self.trusted_clients.iter().any(|n| n.contains(c))) =>
            {
                Err(SkipReason::TrustedClient)
            }
            Route::Scan(priority) => Ok(priority),
        }
    }

    /// What the user gets for a verdict.
    pub fn decide(&self, verdict: &Verdict) -> Decision {
        match verdict {
            Verdict::Clean => Decision::Allow { unscanned: None },
            Verdict::Infected { signatures } => {
                Decision::Block(BlockReason::Infected(signatures.clone()))
            }
            Verdict::NotScanned(
                SkipReason::Trusted | SkipReason::TrustedClient | SkipReason::NoBody,
            ) => Decision::Allow { unscanned: None },
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
            // Not the scanner's failure, but a scan that did not see the
            // whole body all the same: the failure mode decides.
            Verdict::Undecodable { .. } => match self.failure_mode {
                FailureMode::Closed => Decision::Block(BlockReason::Undecodable),
                FailureMode::Open => Decision::Allow {
                    unscanned: Some(SkipReason::Undecodable),
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

    /// A policy with `rules` and `trusted_clients`, the rest as defaults
    /// and a 10-byte scan limit.
    fn test_policy(rules: Vec<HostRule>, trusted_clients: Vec<ClientNet>) -> Policy {
        Policy {
            rules,
            default_priority: Priority::Normal,
            priority_header: false,
            failure_mode: FailureMode::Closed,
            too_large: TooLargeAction::Block,
            max_scan_size: 10,
            range_requests: RangeRequests::Allow,
            trusted_clients,
            pages: Default::default(),
        }
    }

    #[test]
    fn failure_and_size_modes() {
        let mut p = test_policy(vec![], Vec::new());
        let err = Verdict::Error {
            kind: "connect",
            message: "down".into(),
        };
        assert_eq!(
            p.decide(&err),
            Decision::Block(BlockReason::ScannerUnavailable)
        );
        assert_eq!(
            p.decide(&Verdict::TooLarge { limit: Some(10) }),
            Decision::Block(BlockReason::TooLarge { limit: Some(10) })
        );
        let undecodable = Verdict::Undecodable {
            reason: "cut short".into(),
        };
        assert_eq!(
            p.decide(&undecodable),
            Decision::Block(BlockReason::Undecodable)
        );
        p.failure_mode = FailureMode::Open;
        assert_eq!(
            p.decide(&undecodable),
            Decision::Allow {
                unscanned: Some(SkipReason::Undecodable)
            }
        );
        p.too_large = TooLargeAction::Allow;
        assert_eq!(
            p.decide(&err),
            Decision::Allow {
                unscanned: Some(SkipReason::ScannerFailed)
            }
        );
        assert_eq!(
            p.decide(&Verdict::TooLarge { limit: Some(10) }),
            Decision::Allow {
                unscanned: Some(SkipReason::TooLarge)
            }
        );
        assert_eq!(
            p.decide(&Verdict::Clean),
            Decision::Allow { unscanned: None }
        );
    }

    #[test]
    fn rules_route_to_lanes_first_match_wins() {
        let mut p = test_policy(
            [
                "updates.example.com=skip",
                ".example.com=low",
                ".bank.test=high",
            ]
            .iter()
            .map(|r| r.parse().unwrap())
            .collect(),
            Vec::new(),
        );
        assert_eq!(p.route(Some("updates.example.com"), None), Route::Skip);
        assert_eq!(
            p.route(Some("www.example.com"), None),
            Route::Scan(Priority::Low)
        );
        assert_eq!(
            p.route(Some("a.bank.test"), None),
            Route::Scan(Priority::High)
        );
        assert_eq!(
            p.route(Some("other.org"), None),
            Route::Scan(Priority::Normal)
        );
        assert_eq!(p.route(None, None), Route::Scan(Priority::Normal));
        // The header is ignored unless allowed, and never turns into a skip.
        assert_eq!(
            p.route(Some("other.org"), Some("high")),
            Route::Scan(Priority::Normal)
        );
        p.priority_header = true;
        assert_eq!(
            p.route(Some("other.org"), Some("High")),
            Route::Scan(Priority::High)
        );
        assert_eq!(
            p.route(Some("www.example.com"), Some("high")),
            Route::Scan(Priority::High)
        );
        assert_eq!(
            p.route(Some("other.org"), Some("skip")),
            Route::Scan(Priority::Normal)
        );
        assert_eq!(
            p.route(Some("updates.example.com"), Some("high")),
            Route::Skip
        );
        assert!("example.com".parse::<HostRule>().is_err());
        assert!("example.com=urgent".parse::<HostRule>().is_err());
    }

    #[test]
    fn client_networks_parse_and_match() {
        let net = |s: &str| s.parse::<ClientNet>();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let v4 = net("10.1.0.0/16").unwrap();
        assert!(v4.contains(ip("10.1.255.255")) && v4.contains(ip("::ffff:10.1.0.1")));
        assert!(!v4.contains(ip("10.2.0.0")) && !v4.contains(ip("::a01:1")));
        let one = net(" 192.0.2.7 ").unwrap();
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.6")));
        let v6 = net("fd00::/8").unwrap();
        assert!(v6.contains(ip("fdff::1")) && !v6.contains(ip("fe00::1")));
        assert!(!v6.contains(ip("10.0.0.1")));
        let all = net("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")) && !all.contains(ip("2001:db8::1")));
        for bad in [
            "",
            "10.1.0.0/33",
            "10.1.0.0/",
            "host.test",
            "fd00::/129",
            "10.1.0.0/-1",
        ] {
            assert!(net(bad).is_err(), "{bad:?}");
        }
        let e = net("10.1.2.3/16").unwrap_err();
        assert!(e.contains("first address"), "{e}");
    }

    #[test]
    fn trusted_hosts_come_before_trusted_clients() {
        let mut p = test_policy(
            vec![
                "cdn.test=skip".parse().unwrap(),
                ".bank.test=high".parse().unwrap(),
            ],
            vec!["10.0.0.0/8".parse().unwrap()],
        );
        let inside: Option<IpAddr> = Some("10.9.9.9".parse().unwrap());
        let outside: Option<IpAddr> = Some("11.0.0.1".parse().unwrap());
        assert_eq!(
            p.triage(Some("cdn.test"), inside, None),
            Err(SkipReason::Trusted)
        );
        assert_eq!(
            p.triage(Some("a.bank.test"), inside, None),
            Err(SkipReason::TrustedClient)
        );
        assert_eq!(
            p.triage(Some("a.bank.test"), outside, None),
            Ok(Priority::High)
        );
        assert_eq!(p.triage(Some("x.test"), None, None), Ok(Priority::Normal));
        p.trusted_clients.clear();
        assert_eq!(
            p.triage(Some("a.bank.test"), inside, None),
            Ok(Priority::High)
        );
        let d = p.decide(&Verdict::NotScanned(SkipReason::TrustedClient));
        assert_eq!(d, Decision::Allow { unscanned: None });
        assert_eq!(
            d.unscanned(&Verdict::NotScanned(SkipReason::TrustedClient)),
            Some(SkipReason::TrustedClient)
        );
    }
}
