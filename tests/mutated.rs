//! Malformed ICAP beyond the hand-picked cases of failures.rs: well-formed
//! requests of every kind Squid and c-icap-client send, each damaged a few
//! bytes at a time, sent to the real binary. The codec is fuzzed on its own
//! (`fuzz/`); this drives the server around it (previews, `100 Continue`,
//! echoes, timeouts) with what the codec lets through or refuses.
//!
//! Every connection must end in an ICAP answer or a close, within the
//! server's timeouts; nothing may panic; the server must still scan
//! afterwards. The cases come from a fixed seed, so a failure names one that
//! can be sent again.

mod support;

use std::time::Duration;

use support::{
    brotli_stored, c_icap_text, eicar, ClamdProcess, RedisProcess, Rng, Service, EICAR_NAME,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn chunked(body: &[u8], ieof: bool, out: &mut Vec<u8>) {
    if !body.is_empty() {
        out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(if ieof {
        b"0; ieof\r\n\r\n"
    } else {
        b"0\r\n\r\n"
    });
}

/// One well-formed request: OPTIONS, a null-body REQMOD, a REQMOD upload,
/// or a RESPMOD with or without a preview and `Allow: 204`, its body plain,
/// br or deflate; and whether it carries EICAR.
fn well_formed(rng: &mut Rng) -> (Vec<u8>, bool) {
    let infected_body = rng.below(5);
    let body = match infected_body {
        0 => Vec::new(),
        1 => b"hello".to_vec(),
        2 => eicar(),
        3 => {
            let mut b = rng.bytes(100);
            b.extend_from_slice(&eicar());
            b
        }
        _ => {
            let n = 1 + rng.below(3000);
            rng.bytes(n)
        }
    };
    let mut out = Vec::new();
    let kind = rng.below(6);
    match kind {
        0 => out.extend_from_slice(b"OPTIONS icap://127.0.0.1/avscan ICAP/1.0\r\nHost: x\r\n\r\n"),
        1 => {
            let req = b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n";
            out.extend_from_slice(
                format!(
                    "REQMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: x\r\nPreview: 0\r\n\
                     Allow: 204\r\nEncapsulated: req-hdr=0, null-body={}\r\n\r\n",
                    req.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(req);
        }
        2 => {
            let req = format!(
                "POST http://example.com/up HTTP/1.1\r\nHost: example.com\r\n\
                 Content-Length: {}\r\n\r\n",
                body.len()
            );
            out.extend_from_slice(
                format!(
                    "REQMOD icap://127.0.0.1/virus_scan ICAP/1.0\r\nHost: x\r\nAllow: 204\r\n\
                     Encapsulated: req-hdr=0, req-body={}\r\n\r\n",
                    req.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(req.as_bytes());
            chunked(&body, false, &mut out);
        }
        _ => {
            let req = b"GET http://example.com/f HTTP/1.1\r\nHost: example.com\r\n\r\n";
            // Some downloads come compressed, as a server would send them:
            // the scan decodes them, damaged or not.
            let (body, encoding) = match rng.below(4) {
                0 if !body.is_empty() => {
                    let half = body.len() / 2;
                    let br = brotli_stored(&[&body[..half.max(1)], &body[half.max(1)..]]);
                    (br, "Content-Encoding: br\r\n")
                }
                1 => (
                    miniz_oxide::deflate::compress_to_vec_zlib(&body, 6),
                    "Content-Encoding: deflate\r\n",
                ),
                _ => (body, ""),
            };
            let res = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\n{encoding}\r\n",
                body.len()
            );
            let preview = [None, Some(0), Some(4), Some(1024)][rng.below(4)];
            out.extend_from_slice(b"RESPMOD icap://127.0.0.1/avscan ICAP/1.0\r\nHost: x\r\n");
            if rng.below(10) < 7 {
                out.extend_from_slice(b"Allow: 204\r\n");
            }
            if let Some(p) = preview {
                out.extend_from_slice(format!("Preview: {p}\r\n").as_bytes());
            }
            out.extend_from_slice(
                format!(
                    "Encapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n",
                    req.len(),
                    req.len() + res.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(req);
            out.extend_from_slice(res.as_bytes());
            match preview {
                Some(p) if p < body.len() => {
                    chunked(&body[..p], false, &mut out);
                    chunked(&body[p..], false, &mut out);
                }
                Some(_) => chunked(&body, true, &mut out),
                None => chunked(&body, false, &mut out),
            }
        }
    }
    (out, kind >= 2 && matches!(infected_body, 2 | 3))
}

/// One to four edits: a byte changed, a span cut or inserted, the end cut
/// off, a delimiter or an extreme number put in, a number changed, a line
/// doubled, the message sent twice over.
fn damage(rng: &mut Rng, mut m: Vec<u8>) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"\r\n",
        b"\n",
        b"\r",
        b"\0",
        b":",
        b";",
        b",",
        b" ",
        b"ffffffffffffffff",
        b"-1",
        b"99999999999999999999",
    ];
    for _ in 0..1 + rng.below(4) {
        if m.is_empty() {
            break;
        }
        let i = rng.below(m.len());
        match rng.below(8) {
            0 => m[i] = rng.next() as u8,
            1 => {
                let end = (i + 1 + rng.below(20)).min(m.len());
                m.drain(i..end);
            }
            2 => {
                let n = 1 + rng.below(20);
                let b = rng.bytes(n);
                m.splice(i..i, b);
            }
            3 => m.truncate(i),
            4 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                m.splice(i..i, t.iter().copied());
            }
            5 => {
                let digits: Vec<usize> = (0..m.len()).filter(|&j| m[j].is_ascii_digit()).collect();
                if !digits.is_empty() {
                    let start = digits[rng.below(digits.len())];
                    let end = (start..m.len())
                        .find(|&j| !m[j].is_ascii_digit())
                        .unwrap_or(m.len());
                    let value =
                        ["0", "1", "65536", "2147483648", "18446744073709551616"][rng.below(5)];
                    m.splice(start..end, value.bytes());
                }
            }
            6 => {
                let n = rng.below(m.len() + 1);
                let again = m[..n].to_vec();
                m.extend_from_slice(&again);
            }
            _ => {
                let starts: Vec<usize> = std::iter::once(0)
                    .chain((1..m.len()).filter(|&j| m[j - 1] == b'\n'))
                    .collect();
                let s = starts[rng.below(starts.len())];
                let e = (s..m.len())
                    .find(|&j| m[j] == b'\n')
                    .map_or(m.len(), |j| j + 1);
                let line = m[s..e].to_vec();
                m.splice(s..s, line);
            }
        }
    }
    m
}

/// Sends `bytes` on a fresh connection and reads until the server closes.
/// `None` when it neither answered nor closed within `bound`.
async fn exchange(port: u16, bytes: &[u8], bound: Duration) -> Option<Vec<u8>> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    // The server may answer and close before all is written.
    let _ = s.write_all(bytes).await;
    let mut out = Vec::new();
    match tokio::time::timeout(bound, s.read_to_end(&mut out)).await {
        Ok(_) => Some(out),
        Err(_) => None,
    }
}

/// What an answer must look like: nothing (a close), or ICAP answers, each
/// beginning with a status line.
fn check_answer(answer: &[u8]) -> Result<(), String> {
    if answer.is_empty() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(answer);
    let status = text.lines().next().unwrap_or("");
    let code = status
        .strip_prefix("ICAP/1.0 ")
        .map(|s| &s[..3.min(s.len())]);
    match code {
        Some(c) if c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()) => Ok(()),
        _ => Err(format!("not an ICAP answer: {status:?}")),
    }
}

/// What an undamaged request must get: 200 (OPTIONS, an echo, a block
/// page) or 204, after a `100 Continue` when its preview did not hold the
/// whole body; a block exactly when it carries EICAR.
fn check_served(answer: &[u8], infected: bool) -> Result<(), String> {
    let text = String::from_utf8_lossy(answer);
    let text = text
        .strip_prefix("ICAP/1.0 100 Continue\r\n\r\n")
        .unwrap_or(&text);
    let status = text.lines().next().unwrap_or("");
    if !status.starts_with("ICAP/1.0 200 ") && !status.starts_with("ICAP/1.0 204 ") {
        return Err(format!("a well-formed request got {status:?}"));
    }
    match (infected, text.contains("X-Infection-Found:")) {
        (true, false) => Err(format!("EICAR not blocked: {status:?}")),
        (false, true) => Err("a clean body blocked".to_owned()),
        _ => Ok(()),
    }
}

const CASES: u64 = 600;
/// Connections at once; most cases are answered at once, the ones cut
/// short wait for a timeout.
const AT_ONCE: usize = 32;

/// The timeouts the servers run with: short, so that a request cut short
/// ends soon (a head with 408, a body or an idle connection with a close).
const TIMEOUTS: [(&str, &str); 3] = [
    ("HEAD_TIMEOUT", "1s"),
    ("BODY_TIMEOUT", "2s"),
    ("IDLE_TIMEOUT", "2s"),
];

/// Sends the cases to the ICAP server on `port`; returns what went wrong.
async fn play(port: u16) -> Vec<String> {
    // Well past every timeout above, so that only a hang exceeds it.
    let bound = Duration::from_secs(20);
    let mut failures = Vec::new();
    let mut set = tokio::task::JoinSet::new();
    for case in 0..CASES {
        if set.len() >= AT_ONCE {
            failures.extend(set.join_next().await.unwrap().unwrap());
        }
        set.spawn(async move {
            let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (case + 1).wrapping_mul(0xff51_afd7));
            let (request, infected) = well_formed(&mut rng);
            // One case in ten goes undamaged: the server must still serve
            // those between the others.
            let intact = case % 10 == 0;
            let request = if intact {
                request
            } else {
                damage(&mut rng, request)
            };
            if request.is_empty() {
                return None;
            }
            let verdict = match exchange(port, &request, bound).await {
                None => Err(format!("no answer and no close within {bound:?}")),
                Some(answer) if intact => check_served(&answer, infected),
                Some(answer) => check_answer(&answer),
            };
            verdict.err().map(|why| {
                let shown = &request[..request.len().min(400)];
                format!("case {case}: {why}; sent {}", shown.escape_ascii())
            })
        });
    }
    while let Some(result) = set.join_next().await {
        failures.extend(result.unwrap());
    }
    failures
}

/// The server on `port` still blocks EICAR, for a client nobody here wrote.
async fn still_scans(port: u16) {
    let dir = support::TempDir::new("mutated");
    let infected = support::write_file(&dir, "eicar.com", &eicar());
    let t = c_icap_text(port, &["-s", "avscan", "-v", "-f", &infected]).await;
    assert!(
        t.contains("ICAP/1.0 200 OK") && t.contains(&format!("X-Virus-ID: {EICAR_NAME}")),
        "{t}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_requests_get_an_answer_or_a_close_and_nothing_panics() {
    let clamd = ClamdProcess::start();
    let port = support::free_port();
    let mut env = vec![
        ("ICAP_PORT", port.to_string()),
        ("CLAMD_URL", clamd.tcp_url()),
    ];
    env.extend(TIMEOUTS.map(|(k, v)| (k, v.to_owned())));
    let server = Service::start_with(env!("CARGO_BIN_EXE_virus-scanner"), &["all"], &env);
    server.wait_port(port, Duration::from_secs(20));
    let failures = play(port).await;
    let log = server.log();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(!log.contains("panicked"), "the server panicked:\n{log}");
    // Refusals are logged, with their status.
    assert!(
        log.contains("malformed ICAP request"),
        "no refusal logged:\n{log}"
    );
    still_scans(port).await;
}

/// The same cases against a producer and a handler over a real Redis, with
/// bodies over 1 KiB streamed through Redis: besides the above, every task
/// the damaged requests left ends, and every key of theirs expires.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_requests_to_a_producer_leave_nothing_behind() {
    let clamd = ClamdProcess::start();
    let redis = RedisProcess::start();
    let port = support::free_port();
    let mut env = vec![
        ("REDIS_PORT", redis.port.to_string()),
        ("CLAMD_URL", clamd.tcp_url()),
        ("INLINE_MAX", "1K".into()),
        ("STREAM_CHUNK", "512".into()),
    ];
    env.extend(TIMEOUTS.map(|(k, v)| (k, v.to_owned())));
    let handler = Service::start(env!("CARGO_BIN_EXE_virus-scanner-handler"), &env);
    env.push(("ICAP_PORT", port.to_string()));
    let producer = Service::start(env!("CARGO_BIN_EXE_virus-scanner-producer"), &env);
    producer.wait_port(port, Duration::from_secs(20));
    let failures = play(port).await;
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    still_scans(port).await;
    for (name, log) in [("producer", producer.log()), ("handler", handler.log())] {
        assert!(!log.contains("panicked"), "the {name} panicked:\n{log}");
    }
    // The handler ends a streamed body that stopped coming within its
    // BODY_TIMEOUT; then no task is left in a lane, and every key expires.
    let mut left = Vec::new();
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        left = lanes_holding(&redis).await;
        if left.is_empty() {
            break;
        }
    }
    assert!(left.is_empty(), "tasks left in {left:?}");
    redis.assert_keys_expire().await;
}

/// The lanes that still hold tasks.
async fn lanes_holding(redis: &RedisProcess) -> Vec<String> {
    let mut conn = redis.conn().await;
    let mut holding = Vec::new();
    for lane in ["vs:tasks:high", "vs:tasks:normal", "vs:tasks:low"] {
        let len: u64 = redis::cmd("XLEN")
            .arg(lane)
            .query_async(&mut conn)
            .await
            .unwrap();
        if len > 0 {
            holding.push(lane.to_owned());
        }
    }
    holding
}
