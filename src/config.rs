//! Every setting, with its default, its flag and its environment variable.
//!
//! clap reads each from a flag or the environment (flags win); `validate()`
//! checks what clap cannot, and a bad setting exits with code 64 (EX_USAGE)
//! and a message that names it.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;

use crate::blockpage::BlockPages;
use crate::model::Priority;
use crate::policy::{
    ClientNet, FailureMode, HostPattern, HostRule, Policy, RangeRequests, Route, TooLargeAction,
};
use crate::scan::clamd::{ClamdAddr, ClamdOptions};

/// Parses `25M`, `32K`, `1G` or a plain byte count (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 25M, 512K, 1048576)"))?;
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("{s:?}: unknown unit (use K, M or G)")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Parses `500ms`, `10s`, `2m`, `1h` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (digits, unit) = match s.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    Ok(match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(format!("{s:?}: unknown unit (use ms, s, m or h)")),
    })
}

/// A comma-separated list; empty items (a trailing comma, say) are skipped.
fn parse_list<T: std::str::FromStr<Err = String>>(s: &str) -> Result<Vec<T>, String> {
    s.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(str::parse)
        .collect()
}

fn parse_hosts(s: &str) -> Result<HostList, String> {
    parse_list(s).map(HostList)
}

fn parse_clients(s: &str) -> Result<ClientList, String> {
    parse_list(s).map(ClientList)
}

fn parse_rules(s: &str) -> Result<RuleList, String> {
    parse_list(s).map(RuleList)
}

/// A comma-separated list of client addresses and networks.
#[derive(Debug, Clone, Default)]
pub struct ClientList(pub Vec<ClientNet>);

/// A comma-separated list of host rules.
#[derive(Debug, Clone, Default)]
pub struct RuleList(pub Vec<HostRule>);

/// A comma-separated host list.
#[derive(Debug, Clone, Default)]
pub struct HostList(pub Vec<HostPattern>);

/// Which ICAP methods the scanning services accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Methods {
    /// REQMOD (uploads) and RESPMOD (downloads).
    Both,
    /// Only REQMOD: RESPMOD gets 405.
    Reqmod,
    /// Only RESPMOD: REQMOD gets 405.
    Respmod,
}

/// Settings of the scanning: clamd and policy.
#[derive(Debug, Clone, Args)]
pub struct ScanConfig {
    /// clamd's address: tcp://host:port or unix:///path/to/clamd.sock.
    #[arg(long, env = "CLAMD_URL", default_value = "tcp://127.0.0.1:3310", value_parser = str::parse::<ClamdAddr>)]
    pub clamd_url: ClamdAddr,

    /// Scans at once; keep at or below clamd's MaxThreads.
    #[arg(long, env = "CLAMD_MAX_CONCURRENCY", default_value_t = 10)]
    pub clamd_max_concurrency: usize,

    /// Timeout for connecting to clamd and for each write to it.
    #[arg(long, env = "CLAMD_CONNECT_TIMEOUT", default_value = "2s", value_parser = parse_duration)]
    pub clamd_connect_timeout: Duration,

    /// Timeout for clamd's verdict once the body is sent.
    #[arg(long, env = "CLAMD_SCAN_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub clamd_scan_timeout: Duration,

    /// On a unix socket, complete bodies up to this size go to clamd as a
    /// file descriptor (FILDES); larger ones stream (INSTREAM).
    #[arg(long, env = "FILDES_MAX", default_value = "2M", value_parser = parse_size)]
    pub fildes_max: u64,

    /// Reuse clamd connections across scans (IDSESSION) instead of opening
    /// one per scan: no connect, accept and close per scan on either side.
    /// At most CLAMD_MAX_CONCURRENCY sessions are open, each with one
    /// command at a time; used only when clamd's MaxThreads is at least
    /// that many (clamd's STATS says), else a connection per scan.
    #[arg(long, env = "CLAMD_SESSIONS", default_value_t = true, action = clap::ArgAction::Set)]
    pub clamd_sessions: bool,

    /// The largest body scanned. Keep it at or below clamd's StreamMaxLength,
    /// MaxFileSize and MaxScanSize: past MaxFileSize clamd answers OK
    /// without scanning (unless AlertExceedsMax is on).
    #[arg(long, env = "MAX_SCAN_SIZE", default_value = "25M", value_parser = parse_size)]
    pub max_scan_size: u64,

    /// What to do with a body over MAX_SCAN_SIZE, or one clamd refuses as
    /// over its StreamMaxLength: block it with a page that says why, or
    /// allow it unscanned (marked with a header and logged).
    #[arg(long, env = "TOO_LARGE", value_enum, default_value = "block")]
    pub too_large: TooLargeAction,

    /// Requests for part of a file (Range): allow passes them, and each part
    /// is scanned on its own; whole removes Range and If-Range, so that the
    /// origin sends the whole file and it is scanned whole.
    #[arg(long, env = "RANGE_REQUESTS", value_enum, default_value = "allow")]
    pub range_requests: RangeRequests,

    /// When clamd is down, slow or failing: closed blocks with a "scanner
    /// unavailable" page; open lets the message through, marked and logged.
    #[arg(long, env = "FAIL_MODE", value_enum, default_value = "closed")]
    pub fail_mode: FailureMode,

    /// Hosts not scanned, comma-separated: exact names or .suffix (for a
    /// domain and all below it).
    #[arg(long, env = "TRUSTED_HOSTS", default_value = "", value_parser = parse_hosts)]
    pub trusted_hosts: HostList,

    /// Clients whose messages are not scanned, comma-separated addresses or
    /// networks (10.0.0.5, 10.1.0.0/16, fd00::/8): the address Squid sends
    /// in X-Client-IP (icap_send_client_ip on), or Envoy's source.address
    /// attribute. Logged and counted as not scanned (trusted-client).
    #[arg(long, env = "TRUSTED_CLIENTS", default_value = "", value_parser = parse_clients)]
    pub trusted_clients: ClientList,

    /// Host rules, comma-separated, tried in order after TRUSTED_HOSTS:
    /// `pattern=skip|low|normal|high`, where pattern is an exact name or
    /// .suffix. `skip` is the same as a trusted host; the others pick the
    /// queue lane.
    #[arg(long, env = "PRIORITY_RULES", default_value = "", value_parser = parse_rules)]
    pub priority_rules: RuleList,

    /// The lane of a message no rule matches: high, normal or low.
    #[arg(long, env = "DEFAULT_PRIORITY", default_value = "normal")]
    pub default_priority: Priority,

    /// Let the request's X-Priority header (high, normal, low) choose the
    /// lane. Off by default: clients could otherwise jump the queue.
    #[arg(long, env = "PRIORITY_HEADER", default_value_t = false)]
    pub priority_header: bool,
}

impl ScanConfig {
    /// The clamd client options.
    pub fn clamd_options(&self) -> ClamdOptions {
        ClamdOptions {
            connect_timeout: self.clamd_connect_timeout,
            scan_timeout: self.clamd_scan_timeout,
            max_concurrency: self.clamd_max_concurrency,
            fildes_max: self.fildes_max as usize,
            sessions: self.clamd_sessions,
        }
    }

    /// The policy.
    pub fn policy(&self) -> Policy {
        Policy {
            rules: self
                .trusted_hosts
                .0
                .iter()
                .map(|pattern| HostRule {
                    pattern: pattern.clone(),
                    route: Route::Skip,
                })
                .chain(self.priority_rules.0.iter().cloned())
                .collect(),
            default_priority: self.default_priority,
            priority_header: self.priority_header,
            failure_mode: self.fail_mode,
            too_large: self.too_large,
            max_scan_size: self.max_scan_size,
            range_requests: self.range_requests,
            trusted_clients: self.trusted_clients.0.clone(),
            pages: Default::default(),
        }
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_scan_size == 0 {
            return Err("MAX_SCAN_SIZE must be more than 0".into());
        }
        if self.clamd_max_concurrency == 0 {
            return Err("CLAMD_MAX_CONCURRENCY must be at least 1".into());
        }
        if self.fildes_max > 64 << 20 {
            return Err("FILDES_MAX must be at most 64M (the body is held in memory)".into());
        }
        Ok(())
    }
}

/// Settings of the ICAP server.
#[derive(Debug, Clone, Args)]
pub struct IcapConfig {
    /// Address to listen on.
    #[arg(long, env = "LISTEN_ADDR", default_value = "0.0.0.0")]
    pub listen_addr: IpAddr,

    /// ICAP port.
    #[arg(long, env = "ICAP_PORT", default_value_t = 1344)]
    pub icap_port: u16,

    /// ICAPS (ICAP over TLS) port; served when ICAPS_CERT and ICAPS_KEY are
    /// set.
    #[arg(long, env = "ICAPS_PORT", default_value_t = 11344)]
    pub icaps_port: u16,

    /// PEM certificate chain for ICAPS; read again on SIGHUP. Empty: no
    /// ICAPS.
    #[arg(long, env = "ICAPS_CERT", default_value = "")]
    pub icaps_cert: String,

    /// PEM private key for ICAPS_CERT; read again on SIGHUP.
    #[arg(long, env = "ICAPS_KEY", default_value = "")]
    pub icaps_key: String,

    /// PEM CA: when set, ICAPS clients must present a certificate it signed.
    #[arg(long, env = "ICAPS_CLIENT_CA", default_value = "")]
    pub icaps_client_ca: String,

    /// Which methods the services accept (the other gets 405).
    #[arg(long, env = "ICAP_METHODS", value_enum, default_value = "both")]
    pub icap_methods: Methods,

    /// Connections at once; beyond, the answer is 503. Advertised as
    /// Max-Connections.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 500)]
    pub max_connections: usize,

    /// Preview size advertised in OPTIONS. A body that fits is sent whole
    /// at once (`ieof`): no `100 Continue` round trip, and a clean verdict is
    /// a 204 even without `Allow: 204`. Keep it well under 64K: Squid 5
    /// cannot gather a 64K preview in its 64K body buffer and stalls.
    #[arg(long, env = "PREVIEW_SIZE", default_value = "32K", value_parser = parse_size)]
    pub preview_size: u64,

    /// Options-TTL advertised in OPTIONS: how long Squid trusts the answer
    /// (and the ISTag in it).
    #[arg(long, env = "OPTIONS_TTL", default_value = "5m", value_parser = parse_duration)]
    pub options_ttl: Duration,

    /// For a download that must be sent back whole (no Allow: 204), how
    /// many bytes are held before the answer starts; that many of the newest
    /// bytes stay held back until the verdict. Smaller keeps Squid's
    /// downloads flowing (Squid 5 stalls a server that waits for the whole
    /// response body); a body that ends within it can still get a block
    /// page, a larger one is cut off before its end if infected. An upload
    /// is kept whole until the verdict: this much of it in memory, the rest
    /// in a temporary file.
    #[arg(long, env = "ECHO_HOLD", default_value = "32K", value_parser = parse_size)]
    pub echo_hold: u64,

    /// Time allowed for a request head once its first byte has arrived.
    #[arg(long, env = "HEAD_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub head_timeout: Duration,

    /// Time allowed between two reads of a body.
    #[arg(long, env = "BODY_TIMEOUT", default_value = "60s", value_parser = parse_duration)]
    pub body_timeout: Duration,

    /// How long an idle connection is kept open.
    #[arg(long, env = "IDLE_TIMEOUT", default_value = "10m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// On SIGTERM, how long transactions in flight may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How often clamd's version is asked for (the ISTag follows it).
    #[arg(long, env = "VERSION_REFRESH", default_value = "60s", value_parser = parse_duration)]
    pub version_refresh: Duration,
}

impl IcapConfig {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 {
            return Err("MAX_CONNECTIONS must be at least 1".into());
        }
        if self.echo_hold == 0 || self.echo_hold > 16 << 20 {
            return Err("ECHO_HOLD must be between 1 byte and 16M".into());
        }
        if self.preview_size > icap::Limits::DEFAULT.max_preview {
            return Err("PREVIEW_SIZE must be at most 1M".into());
        }
        if self.icaps_cert.is_empty() != self.icaps_key.is_empty() {
            return Err("ICAPS_CERT and ICAPS_KEY go together: set both or neither".into());
        }
        if !self.icaps_client_ca.is_empty() && self.icaps_cert.is_empty() {
            return Err("ICAPS_CLIENT_CA needs ICAPS_CERT and ICAPS_KEY".into());
        }
        if let Some(paths) = self.icaps_paths() {
            crate::tls::Reloadable::load(paths)?;
        }
        Ok(())
    }

    /// The ICAPS files, when ICAPS is on.
    pub fn icaps_paths(&self) -> Option<crate::tls::TlsPaths> {
        (!self.icaps_cert.is_empty()).then(|| crate::tls::TlsPaths {
            cert: self.icaps_cert.clone(),
            key: self.icaps_key.clone(),
            client_ca: (!self.icaps_client_ca.is_empty()).then(|| self.icaps_client_ca.clone()),
            settings: "ICAPS",
            alpn: &[],
        })
    }
}

/// What the frontends answer a blocked message with.
#[derive(Debug, Clone, Args)]
pub struct PageConfig {
    /// An HTML file shown instead of the built-in block page, with the
    /// fields {{title}}, {{message}}, {{reason}}, {{signatures}}, {{url}}
    /// and {{reference}} filled in (escaped for HTML). Read at start and on
    /// SIGHUP. Empty: the built-in page.
    #[arg(long, env = "BLOCK_PAGE", default_value = "")]
    pub block_page: String,
}

impl PageConfig {
    /// The block pages: the file's, or the built-in one.
    pub fn pages(&self) -> Result<BlockPages, String> {
        if self.block_page.is_empty() {
            return Ok(BlockPages::default());
        }
        BlockPages::from_file(std::path::Path::new(&self.block_page))
    }

    /// Checks that the file can be read and its fields are known.
    pub fn validate(&self) -> Result<(), String> {
        self.pages().map(drop)
    }
}

/// Settings of the metrics and health endpoints.
#[derive(Debug, Clone, Args)]
pub struct MetricsConfig {
    /// Port of /metrics (Prometheus), /healthz and /readyz; 0 turns them
    /// off.
    #[arg(long, env = "METRICS_PORT", default_value_t = 8080)]
    pub metrics_port: u16,

    /// Address the metrics port listens on.
    #[arg(long, env = "METRICS_ADDR", default_value = "0.0.0.0")]
    pub metrics_addr: IpAddr,
}

/// Settings of the Envoy ext_proc (gRPC) server.
#[derive(Debug, Clone, Args)]
pub struct ExtProcConfig {
    /// gRPC port of the ext_proc server (and of grpc.health.v1), on
    /// LISTEN_ADDR.
    #[arg(long, env = "PRODUCER_PORT", default_value_t = 50051)]
    pub producer_port: u16,

    /// The largest gRPC message taken or sent. A BUFFERED body comes as one
    /// message, so keep it above MAX_SCAN_SIZE (gRPC libraries usually take 4M).
    #[arg(long, env = "GRPC_MAX_MESSAGE_SIZE", default_value = "32M", value_parser = parse_size)]
    pub grpc_max_message_size: u64,

    /// The body mode assumed when Envoy does not say which it uses (Envoy
    /// before 1.34): buffered, buffered-partial, streamed or
    /// full-duplex-streamed.
    #[arg(long, env = "EXTPROC_BODY_MODE", default_value = "buffered")]
    pub extproc_body_mode: virus_scanner_grpc::BodyMode,

    /// STREAMED mode: `hold` answers no chunk before the verdict, so nothing
    /// reaches the destination unscanned (the body must fit Envoy's buffer
    /// limit); `early` releases every chunk but the last at once, so an
    /// infected body is cut off before its end rather than held back.
    #[arg(long, env = "EXTPROC_STREAMED", default_value = "hold")]
    pub extproc_streamed: virus_scanner_grpc::StreamedRelease,

    /// When a verdict takes longer than this, Envoy is asked for more time
    /// (override_message_timeout; Envoy's own message_timeout is 200ms by
    /// default). 0 never asks.
    #[arg(long, env = "EXTPROC_OVERRIDE_AFTER", default_value = "100ms", value_parser = parse_duration)]
    pub extproc_override_after: Duration,

    /// The time asked for. Envoy grants it only up to its
    /// max_message_timeout, which must be set for this to work.
    #[arg(long, env = "EXTPROC_OVERRIDE_TIMEOUT", default_value = "120s", value_parser = parse_duration)]
    pub extproc_override_timeout: Duration,

    /// PEM certificate chain for TLS on the gRPC port; with GRPC_TLS_KEY.
    /// Read again on SIGHUP. Empty: plaintext (h2c).
    #[arg(long, env = "GRPC_TLS_CERT", default_value = "")]
    pub grpc_tls_cert: String,

    /// PEM private key for GRPC_TLS_CERT.
    #[arg(long, env = "GRPC_TLS_KEY", default_value = "")]
    pub grpc_tls_key: String,

    /// PEM CA: when set, clients (Envoy) must present a certificate it
    /// signed (mTLS).
    #[arg(long, env = "GRPC_TLS_CLIENT_CA", default_value = "")]
    pub grpc_tls_client_ca: String,
}

impl ExtProcConfig {
    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.grpc_max_message_size < 64 << 10 || self.grpc_max_message_size > 1 << 30 {
            return Err("GRPC_MAX_MESSAGE_SIZE must be between 64K and 1G".into());
        }
        if self.grpc_tls_cert.is_empty() != self.grpc_tls_key.is_empty() {
            return Err("GRPC_TLS_CERT and GRPC_TLS_KEY go together: set both or neither".into());
        }
        if !self.grpc_tls_client_ca.is_empty() && self.grpc_tls_cert.is_empty() {
            return Err("GRPC_TLS_CLIENT_CA needs GRPC_TLS_CERT and GRPC_TLS_KEY".into());
        }
        if self.extproc_override_timeout < Duration::from_millis(1) {
            return Err("EXTPROC_OVERRIDE_TIMEOUT must be at least 1ms".into());
        }
        self.grpc_tls().map(|_| ())
    }

    /// How bodies and timeouts are handled.
    pub fn settings(&self) -> virus_scanner_grpc::Settings {
        virus_scanner_grpc::Settings {
            assumed_mode: self.extproc_body_mode,
            streamed: self.extproc_streamed,
            override_after: (!self.extproc_override_after.is_zero())
                .then_some(self.extproc_override_after),
            override_timeout: self.extproc_override_timeout,
        }
    }

    /// The gRPC port's TLS, when it is on: the files read, and read again
    /// on SIGHUP.
    pub fn grpc_tls(&self) -> Result<Option<crate::tls::Reloadable>, String> {
        if self.grpc_tls_cert.is_empty() {
            return Ok(None);
        }
        crate::tls::Reloadable::load(crate::tls::TlsPaths {
            cert: self.grpc_tls_cert.clone(),
            key: self.grpc_tls_key.clone(),
            client_ca: (!self.grpc_tls_client_ca.is_empty())
                .then(|| self.grpc_tls_client_ca.clone()),
            settings: "GRPC_TLS",
            alpn: &[b"h2"],
        })
        .map(Some)
    }

    /// How the server serves, with `tls` from [`ExtProcConfig::grpc_tls`].
    pub fn server(
        &self,
        tls: Option<&crate::tls::Reloadable>,
    ) -> virus_scanner_grpc::ServerSettings {
        virus_scanner_grpc::ServerSettings {
            max_message_size: self.grpc_max_message_size as usize,
            tls: tls.map(|tls| {
                let tls = tls.clone();
                std::sync::Arc::new(move || tls.acceptor()) as virus_scanner_grpc::TlsSource
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("25M"), Ok(25 << 20));
        assert_eq!(parse_size("32KiB"), Ok(32 << 10));
        assert_eq!(parse_size("100"), Ok(100));
        assert!(parse_size("12X").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("soon").is_err());
    }
}
