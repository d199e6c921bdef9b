//! The load generator behind `virus-scanner bench`: the same unique bodies,
//! over persistent connections, against any ICAP server and against clamd
//! itself, in one run, with the ratios printed.
//!
//! Each body is unique (its first bytes carry a counter), so that clamd's
//! cache of clean results flatters nobody. A request that does not end in a
//! clean verdict counts as an error, not as a result.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use icap::{
    encode_chunk, encode_last_chunk, encode_request, Allow, Body, ChunkedDecoder, Event,
    HttpRequestHead, HttpResponseHead, IcapUri, LastChunk, Limits, Method, Request, Sections,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::model::Verdict;
use crate::scan::clamd::{Clamd, ClamdAddr, ClamdOptions};

/// What is measured.
#[derive(Debug, Clone)]
pub enum Target {
    /// An ICAP server: RESPMOD with a preview and `Allow: 204`.
    Icap {
        /// Where.
        addr: SocketAddr,
        /// The service path.
        service: String,
        /// The URL sent in the encapsulated request (its host matters for
        /// trusted-host policies).
        url: String,
    },
    /// clamd's INSTREAM; in clamd sessions when the flag is set, else one
    /// connection per body.
    Instream(ClamdAddr, bool),
    /// clamd's FILDES over a unix socket; sessions as for INSTREAM.
    Fildes(ClamdAddr, bool),
}

impl FromStr for Target {
    type Err = String;

    /// `icap://host:port/service[?url]`, `instream+tcp://host:port`,
    /// `instream+unix:///path`, `fildes+unix:///path`; `instream-session+`
    /// and `fildes-session+` reuse clamd sessions.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        for (prefix, fildes, session) in [
            ("instream+", false, false),
            ("instream-session+", false, true),
            ("fildes+", true, false),
            ("fildes-session+", true, true),
        ] {
            let Some(rest) = s.strip_prefix(prefix) else {
                continue;
            };
            let addr: ClamdAddr = rest.parse()?;
            if !fildes {
                return Ok(Target::Instream(addr, session));
            }
            if !matches!(addr, ClamdAddr::Unix(_)) {
                return Err("FILDES needs a unix socket: fildes+unix:///path".into());
            }
            return Ok(Target::Fildes(addr, session));
        }
        let (uri, url) = s
            .split_once('?')
            .unwrap_or((s, "http://bench.test/file.bin"));
        let parsed = IcapUri::parse(uri.as_bytes()).map_err(|e| format!("{s:?}: {e}"))?;
        let addr = format!("{}:{}", parsed.host, parsed.port_or_default())
            .parse()
            .map_err(|_| format!("{s:?}: the host must be an IP address"))?;
        Ok(Target::Icap {
            addr,
            service: parsed.service,
            url: url.to_owned(),
        })
    }
}

/// The outcome of one measurement.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Requests that ended in a clean verdict.
    pub ok: u64,
    /// Requests that did not.
    pub errors: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Sorted latencies of the successful requests.
    pub latencies: Vec<Duration>,
    /// The first error seen, to say what went wrong.
    pub first_error: Option<String>,
    /// CPU time the server-side processes used meanwhile, when watched.
    pub cpu: Option<Duration>,
}

impl Stats {
    /// One result: `Ok` with its latency, or the error.
    pub fn record(&mut self, result: Result<(), String>, latency: Duration) {
        match result {
            Ok(()) => {
                self.ok += 1;
                self.latencies.push(latency);
            }
            Err(e) => {
                self.errors += 1;
                self.first_error.get_or_insert(e);
            }
        }
    }

    /// The workers' figures as one, over `elapsed`.
    pub fn merge(parts: Vec<Stats>, elapsed: Duration) -> Stats {
        let mut total = Stats::default();
        for s in parts {
            total.ok += s.ok;
            total.errors += s.errors;
            total.latencies.extend(s.latencies);
            if total.first_error.is_none() {
                total.first_error = s.first_error;
            }
            if let Some(cpu) = s.cpu {
                total.cpu = Some(total.cpu.unwrap_or_default() + cpu);
            }
        }
        total.elapsed = elapsed;
        total.latencies.sort();
        total
    }

    /// One row of the benchmark table: size, connections, name, rate, p50,
    /// p99, errors, the server-side CPU time per request (`-` when not
    /// watched) and the ratio column as given. Says on standard error what
    /// went wrong, if anything did.
    pub fn row(&self, size: usize, conns: usize, name: &str, ratio: &str) -> String {
        if let Some(e) = &self.first_error {
            eprintln!(
                "{name} ({} x{conns}): {} errors, first: {e}",
                size_label(size),
                self.errors
            );
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let cpu = match self.cpu {
            Some(cpu) if self.ok > 0 => format!("{:.0}", cpu.as_secs_f64() * 1e6 / self.ok as f64),
            _ => "-".to_owned(),
        };
        format!(
            "| {} | {conns} | {name} | {:.0} | {:.2} | {:.2} | {} | {cpu} | {ratio} |",
            size_label(size),
            self.rate(),
            ms(self.quantile(0.5)),
            ms(self.quantile(0.99)),
            self.errors,
        )
    }

    /// Successful requests per second.
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// The latency at quantile `q` (0.5, 0.99).
    pub fn quantile(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() as f64 - 1.0) * q).round() as usize;
        self.latencies[i]
    }
}

/// The rounds of one benchmark cell. Each round measures every target once,
/// the order rotating from round to round, so that a slow spell of a shared
/// machine falls on all of them alike; ratios are taken within a round.
#[derive(Debug, Default)]
pub struct Rounds {
    /// Per target, its stats in each round.
    runs: Vec<Vec<Stats>>,
}

impl Rounds {
    pub fn new(targets: usize) -> Rounds {
        Rounds {
            runs: (0..targets).map(|_| Vec::new()).collect(),
        }
    }

    /// The order in which round `round` visits `targets` targets.
    pub fn order(round: usize, targets: usize) -> impl Iterator<Item = usize> {
        (0..targets).map(move |i| (i + round) % targets)
    }

    pub fn add(&mut self, target: usize, stats: Stats) {
        self.runs[target].push(stats);
    }

    /// Target `i` over all rounds: counts and time summed, latencies merged.
    pub fn total(&self, i: usize) -> Stats {
        let elapsed = self.runs[i].iter().map(|s| s.elapsed).sum();
        Stats::merge(self.runs[i].clone(), elapsed)
    }

    /// Rate of `a` over rate of `b` in each round: the median, the lowest
    /// and the highest.
    pub fn ratio(&self, a: usize, b: usize) -> (f64, f64, f64) {
        let mut r: Vec<f64> = self.runs[a]
            .iter()
            .zip(&self.runs[b])
            .map(|(x, y)| x.rate() / y.rate().max(f64::MIN_POSITIVE))
            .collect();
        if r.is_empty() {
            return (0.0, 0.0, 0.0);
        }
        r.sort_by(f64::total_cmp);
        let n = r.len();
        let median = if n % 2 == 1 {
            r[n / 2]
        } else {
            (r[n / 2 - 1] + r[n / 2]) / 2.0
        };
        (median, r[0], r[n - 1])
    }

    /// The ratio column: the median, with the range when there are rounds
    /// to disagree.
    pub fn ratio_text(&self, a: usize, b: usize) -> String {
        let (median, low, high) = self.ratio(a, b);
        if self.runs[a].len() > 1 {
            format!("{median:.2} ({low:.2}-{high:.2})")
        } else {
            format!("{median:.2}")
        }
    }
}

/// CPU time (user and system) the processes `pids` have used so far, from
/// /proc; a process that is gone counts nothing. Taken before and after a
/// run, it gives the servers' cost per request whatever the load generator
/// costs.
pub fn cpu_time(pids: &[u32]) -> Duration {
    let hz = rustix::param::clock_ticks_per_second().max(1);
    let ticks: u64 = pids
        .iter()
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // The command name, in parentheses, may hold spaces: the fields
            // are counted after it (the state is field 3; utime 14, stime 15).
            let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
            let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
            Some(field(14)? + field(15)?)
        })
        .sum();
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// A body of `size` bytes that compresses poorly; a stamped counter makes
/// each request's copy different.
pub fn base_body(size: usize) -> Vec<u8> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D ^ size as u64;
    (0..size)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Stamps a counter into the start of the body, making it unique.
pub fn stamp(body: &mut [u8], n: u64) {
    let bytes = n.to_le_bytes();
    let k = bytes.len().min(body.len());
    body[..k].copy_from_slice(&bytes[..k]);
}

/// The stamp of the next body: unique across the measurements of a run,
/// and across runs too (it starts from the clock), so that bodies an
/// earlier run sent are not in clamd's cache of clean results.
pub fn next_stamp() -> u64 {
    static START: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let start = *START.get_or_init(|| {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    start.wrapping_add(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Runs `connections` workers against `target` for `duration`.
pub async fn measure(
    target: &Target,
    size: usize,
    connections: usize,
    duration: Duration,
) -> Stats {
    let base = Arc::new(base_body(size));
    let clamd = match target {
        Target::Instream(a, sessions) | Target::Fildes(a, sessions) => Some(Clamd::new(
            a.clone(),
            ClamdOptions {
                connect_timeout: Duration::from_secs(5),
                scan_timeout: Duration::from_secs(120),
                max_concurrency: connections,
                fildes_max: usize::MAX,
                sessions: *sessions,
            },
        )),
        Target::Icap { .. } => None,
    };
    let start = Instant::now();
    let end = start + duration;
    let mut workers = Vec::new();
    for _ in 0..connections {
        let (target, base, clamd) = (target.clone(), base.clone(), clamd.clone());
        workers.push(tokio::spawn(async move {
            let mut stats = Stats::default();
            let mut body = base.to_vec();
            let template = match &target {
                Target::Icap { addr, service, url } => {
                    match IcapConn::preview_size(*addr, service).await {
                        Ok(preview) => Some(RespmodTemplate::new(
                            *addr, service, url, &base, true, preview,
                        )),
                        Err(e) => {
                            stats.errors += 1;
                            stats.first_error = Some(format!("OPTIONS: {e}"));
                            return stats;
                        }
                    }
                }
                _ => None,
            };
            let mut conn: Option<IcapConn> = None;
            while Instant::now() < end {
                let n = next_stamp();
                let t0 = Instant::now();
                let result = match (&target, &clamd, &template) {
                    (Target::Icap { addr, .. }, _, Some(t)) => {
                        if conn.is_none() {
                            conn = IcapConn::connect(*addr).await.ok();
                        }
                        match conn.as_mut() {
                            Some(c) => {
                                let r = c.send(t, n).await;
                                if r.is_err() {
                                    conn = None;
                                }
                                r
                            }
                            None => Err("cannot connect".to_owned()),
                        }
                    }
                    (Target::Instream(..), Some(c), _) => {
                        stamp(&mut body, n);
                        scan_instream(c, &body).await
                    }
                    (Target::Fildes(..), Some(c), _) => {
                        stamp(&mut body, n);
                        c.fildes(&body)
                            .await
                            .map_err(|e| e.to_string())
                            .and_then(clean)
                    }
                    _ => unreachable!("each target has its client"),
                };
                stats.record(result, t0.elapsed());
            }
            stats
        }));
    }
    let mut parts = Vec::new();
    for w in workers {
        parts.push(w.await.expect("worker"));
    }
    Stats::merge(parts, start.elapsed())
}

fn clean(v: Verdict) -> Result<(), String> {
    match v {
        Verdict::Clean => Ok(()),
        other => Err(format!("verdict {other:?}")),
    }
}

/// INSTREAM as a client at its best sends a body it holds whole: in one
/// write up to 1 MiB.
async fn scan_instream(clamd: &Clamd, body: &[u8]) -> Result<(), String> {
    clamd
        .instream_all(body)
        .await
        .map_err(|e| e.to_string())
        .and_then(clean)
}

/// A RESPMOD encoded once, the way Squid sends it: the head and a preview
/// of the size the server asked for in OPTIONS (`ieof` when that is all, no
/// preview when it asked for none), then the rest of the body in 64 KiB
/// chunks after `100 Continue`.
pub struct RespmodTemplate {
    /// The head and the preview.
    head: Vec<u8>,
    /// Where the body's first byte is in `head`.
    body_at: usize,
    /// The rest of the body and the last chunk, when the preview is not all.
    rest: Option<Vec<u8>>,
}

impl RespmodTemplate {
    /// Encodes a RESPMOD of `body` for `service` at `addr`, with a preview
    /// of `preview` bytes (`None`: no preview, the whole body at once);
    /// without `Allow: 204` when `allow_204` is false (the server must send
    /// the body back).
    pub fn new(
        addr: SocketAddr,
        service: &str,
        url: &str,
        body: &[u8],
        allow_204: bool,
        preview: Option<usize>,
    ) -> RespmodTemplate {
        let preview = preview.map(|p| p.min(body.len()));
        let mut res_headers = http::HeaderMap::new();
        res_headers.insert(
            "content-type",
            http::HeaderValue::from_static("application/octet-stream"),
        );
        res_headers.insert("content-length", http::HeaderValue::from(body.len()));
        let mut req_headers = http::HeaderMap::new();
        let host = url.split('/').nth(2).unwrap_or("bench.test");
        req_headers.insert(
            "host",
            http::HeaderValue::from_str(host)
                .unwrap_or(http::HeaderValue::from_static("bench.test")),
        );
        let uri = IcapUri::parse(format!("icap://{addr}/{service}").as_bytes())
            .expect("a valid ICAP URI");
        let req = Request {
            method: Method::Respmod,
            uri,
            headers: http::HeaderMap::new(),
            preview: preview.map(|p| p as u64),
            allow: Allow {
                no_content: allow_204,
                partial: false,
                trailers: false,
            },
            sections: Some(Sections {
                request: Some(HttpRequestHead {
                    method: http::Method::GET,
                    target: url.to_owned(),
                    version: http::Version::HTTP_11,
                    headers: req_headers,
                }),
                response: Some(HttpResponseHead {
                    version: http::Version::HTTP_11,
                    status: http::StatusCode::OK,
                    reason: "OK".into(),
                    headers: res_headers,
                }),
                body: Body::Response,
            }),
        };
        let first = preview.unwrap_or(body.len());
        let mut head = Vec::with_capacity(1024 + first + first / 8192 * 8);
        encode_request(&req, &mut head);
        let first_chunk = first.min(64 * 1024);
        let body_at = head.len()
            + if first > 0 {
                format!("{first_chunk:x}\r\n").len()
            } else {
                0
            };
        for piece in body[..first].chunks(64 * 1024) {
            encode_chunk(piece, &mut head);
        }
        let whole = first == body.len();
        let ieof = whole && preview.is_some();
        encode_last_chunk(
            &LastChunk {
                ieof,
                ..LastChunk::default()
            },
            &mut head,
        );
        let rest = (!whole).then(|| {
            let rest = &body[first..];
            let mut out = Vec::with_capacity(rest.len() + rest.len() / 8192 + 16);
            for piece in rest.chunks(64 * 1024) {
                encode_chunk(piece, &mut out);
            }
            encode_last_chunk(&LastChunk::default(), &mut out);
            out
        });
        RespmodTemplate {
            head,
            body_at,
            rest,
        }
    }
}

/// A persistent ICAP connection that sends RESPMOD the way Squid does.
pub struct IcapConn {
    stream: TcpStream,
    buf: BytesMut,
}

impl IcapConn {
    /// Asks the service at `addr` for its OPTIONS, as Squid does, and
    /// returns the preview size it wants (`None`: no preview).
    pub async fn preview_size(addr: SocketAddr, service: &str) -> Result<Option<usize>, String> {
        let mut conn = IcapConn::connect(addr).await?;
        let req = format!("OPTIONS icap://{addr}/{service} ICAP/1.0\r\nHost: {addr}\r\n\r\n");
        conn.stream
            .write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let limits = Limits::DEFAULT;
        let res = loop {
            if let Some((res, _)) =
                icap::parse_response(&conn.buf, &limits).map_err(|e| e.to_string())?
            {
                break res;
            }
            if conn
                .stream
                .read_buf(&mut conn.buf)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("connection closed during OPTIONS".into());
            }
        };
        if res.status.0 != 200 {
            return Err(format!("OPTIONS answered {}", res.status));
        }
        Ok(res
            .headers
            .get("preview")
            .and_then(|v| v.to_str().ok()?.trim().parse().ok()))
    }

    /// Connects.
    pub async fn connect(addr: SocketAddr) -> Result<IcapConn, String> {
        let stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        Ok(IcapConn {
            stream,
            buf: BytesMut::with_capacity(64 * 1024),
        })
    }

    /// Sends the template's RESPMOD with `n` stamped into its body, and
    /// reads the answer to its end. Ok only for a clean answer (204 or 200).
    pub async fn send(&mut self, t: &RespmodTemplate, n: u64) -> Result<(), String> {
        let mut out = t.head.clone();
        stamp(&mut out[t.body_at..], n);
        self.stream
            .write_all(&out)
            .await
            .map_err(|e| e.to_string())?;
        let mut status = self.read_answer().await?;
        if status == 100 {
            let Some(rest) = &t.rest else {
                return Err("100 Continue after ieof".into());
            };
            // The answer may start before the rest is sent: write and read
            // together.
            let (mut rd, mut wr) = self.stream.split();
            let write = async { wr.write_all(rest).await.map_err(|e| e.to_string()) };
            let read = read_answer_from(&mut rd, &mut self.buf);
            let (w, r) = tokio::join!(write, read);
            w?;
            status = r?;
        }
        match status {
            204 | 200 => Ok(()),
            s => Err(format!("ICAP status {s}")),
        }
    }

    async fn read_answer(&mut self) -> Result<u16, String> {
        read_answer_from(&mut self.stream, &mut self.buf).await
    }
}

/// Reads one ICAP answer (head and, for 200, the whole body); returns its
/// status. A 403 block page inside a 200 counts as an error.
async fn read_answer_from<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    buf: &mut BytesMut,
) -> Result<u16, String> {
    let limits = Limits::DEFAULT;
    let (res, used) = loop {
        // 100 and 204 carry no encapsulated message: their status line and
        // the end of the head are all the load generator needs, which keeps
        // its own CPU time (taken from the servers it measures) small.
        if let Some(status) = bodyless_answer(buf) {
            return Ok(status);
        }
        if let Some(parsed) = icap::parse_response(buf, &limits).map_err(|e| e.to_string())? {
            break parsed;
        }
        if rd.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed".into());
        }
    };
    let _ = buf.split_to(used);
    let sections = res.sections.as_ref();
    if let Some(head) = sections.and_then(|s| s.response.as_ref()) {
        if head.status != http::StatusCode::OK {
            return Err(format!("blocked: HTTP {}", head.status));
        }
    }
    if sections.is_some_and(Sections::has_body) {
        let mut dec = ChunkedDecoder::new(limits);
        loop {
            let step = dec.decode(buf).map_err(|e| e.to_string())?;
            let (consumed, end) = (step.consumed, matches!(step.event, Some(Event::End(_))));
            let more = step.event.is_none();
            let _ = buf.split_to(consumed);
            if end {
                break;
            }
            if more && rd.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed mid-body".into());
            }
        }
    }
    Ok(res.status.0)
}

/// A whole `100` or `204` answer at the start of `buf`: consumed, and its
/// status returned. Anything else is left for the full parser.
fn bodyless_answer(buf: &mut BytesMut) -> Option<u16> {
    let status = match buf.get(..12)? {
        b"ICAP/1.0 204" => 204,
        b"ICAP/1.0 100" => 100,
        _ => return None,
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let _ = buf.split_to(end);
    Some(status)
}

/// Formats a size as `1K`, `64K`, `1M`.
pub fn size_label(n: usize) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}M", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}K", n >> 10),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_counts_this_process_and_nothing_for_a_gone_one() {
        let me = std::process::id();
        let before = cpu_time(&[me]);
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let spent = cpu_time(&[me]) - before;
        assert!(spent >= Duration::from_millis(100), "{spent:?}");
        assert_eq!(cpu_time(&[u32::MAX]), Duration::ZERO);
    }

    #[test]
    fn rows_show_cpu_per_request_when_watched() {
        let mut stats = run(1000, 1);
        assert!(stats.row(1024, 8, "x", "1.00").contains("| 0 | - | 1.00 |"));
        stats.cpu = Some(Duration::from_millis(50));
        assert!(stats
            .row(1024, 8, "x", "1.00")
            .contains("| 0 | 50 | 1.00 |"));
    }

    fn run(ok: u64, secs: u64) -> Stats {
        Stats {
            ok,
            elapsed: Duration::from_secs(secs),
            ..Stats::default()
        }
    }

    #[test]
    fn bodyless_answers_are_read_to_their_end_only() {
        let mut buf = BytesMut::from(&b"ICAP/1.0 204 No Content\r\nISTag: \"x\"\r\nEncapsulated: null-body=0\r\n\r\nICAP/1.0 100"[..]);
        assert_eq!(bodyless_answer(&mut buf), Some(204));
        assert_eq!(&buf[..], b"ICAP/1.0 100");
        // Not whole yet, or not bodyless: left alone.
        assert_eq!(bodyless_answer(&mut buf), None);
        let mut ok = BytesMut::from(&b"ICAP/1.0 200 OK\r\n\r\n"[..]);
        assert_eq!(bodyless_answer(&mut ok), None);
        assert_eq!(ok.len(), 19);
    }

    #[test]
    fn each_round_starts_with_the_next_target() {
        let firsts: Vec<usize> = (0..4)
            .map(|r| Rounds::order(r, 3).next().unwrap())
            .collect();
        assert_eq!(firsts, [0, 1, 2, 0]);
        let mut all: Vec<usize> = Rounds::order(2, 3).collect();
        all.sort();
        assert_eq!(all, [0, 1, 2]);
    }

    #[test]
    fn ratios_are_paired_within_rounds() {
        let mut r = Rounds::new(2);
        // A slow spell in round 2 hits both targets: the paired ratio stays.
        for (a, b) in [(100, 50), (40, 20), (90, 60)] {
            r.add(0, run(a, 1));
            r.add(1, run(b, 1));
        }
        assert_eq!(r.ratio(0, 1), (2.0, 1.5, 2.0));
        assert_eq!(r.ratio_text(0, 1), "2.00 (1.50-2.00)");
        let total = r.total(0);
        assert_eq!((total.ok, total.elapsed), (230, Duration::from_secs(3)));
    }
}
