//! ext_proc against ICAP on the same server and clamd: BUFFERED streams
//! played as Envoy plays them (request headers, wait, the body in one
//! message, wait), beside RESPMODs with preview and `Allow: 204`, with the
//! same unique bodies, printed as a table with the ratio ext_proc / ICAP.
//!
//! Run by `scripts/bench-extproc.sh`, which starts clamd and the server;
//! by hand: `ICAP=127.0.0.1:1344 EXTPROC=127.0.0.1:50051 cargo bench --bench
//! extproc`, with `SIZES` (1K,64K,1M), `CONNECTIONS` (8,64) and `DURATION`
//! (10s), `ROUNDS` (1; each round measures both paths, in turn first, and
//! the ratio is the median of the rounds'), `CHANNELS` (HTTP/2 connections,
//! 2); `PATHS=icap` or `PATHS=extproc` measures only one; `SERVER_PIDS`
//! (comma-separated: the server, clamd) prints their CPU time per request.
//! This prints figures; it asserts nothing about time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request::Request as Req, processing_response::Response as Res, HttpBody,
    HttpHeaders, ProcessingRequest, ProtocolConfiguration,
};
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use virus_scanner::bench::{
    base_body, cpu_time, measure, next_stamp, stamp, Rounds, Stats, Target,
};
use virus_scanner::config::{parse_duration, parse_size};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

#[tokio::main]
async fn main() {
    let icap: SocketAddr = setting("ICAP", "127.0.0.1:1344")
        .parse()
        .expect("ICAP=ip:port");
    let extproc = setting("EXTPROC", "127.0.0.1:50051");
    let sizes: Vec<u64> = setting("SIZES", "1K,64K,1M")
        .split(',')
        .map(|s| parse_size(s).expect("SIZES"))
        .collect();
    let conns: Vec<usize> = setting("CONNECTIONS", "8,64")
        .split(',')
        .map(|s| s.trim().parse().expect("CONNECTIONS"))
        .collect();
    let duration = parse_duration(&setting("DURATION", "10s")).expect("DURATION");
    let paths = setting("PATHS", "icap,extproc");
    let rounds: usize = setting("ROUNDS", "1").parse().expect("ROUNDS");
    let pids: Vec<u32> = setting("SERVER_PIDS", "")
        .split(',')
        .filter(|p| !p.is_empty())
        .map(|p| p.trim().parse().expect("SERVER_PIDS"))
        .collect();
    // Envoy keeps an HTTP/2 connection per worker thread: CHANNELS of them
    // (2 by default), the streams spread over them.
    let mut channels = Vec::new();
    for _ in 0..setting("CHANNELS", "2")
        .parse::<usize>()
        .expect("CHANNELS")
        .max(1)
    {
        let channel = Endpoint::from_shared(format!("http://{extproc}"))
            .expect("EXTPROC=ip:port")
            // Envoy's own HTTP/2 windows are large; tonic's are 64 KiB.
            .initial_stream_window_size(16 << 20)
            .initial_connection_window_size(64 << 20)
            .connect()
            .await
            .expect("the ext_proc server answers");
        channels.push(channel);
    }
    let icap = Target::Icap {
        addr: icap,
        service: "avscan".into(),
        url: "http://bench.test/file.bin".into(),
    };

    println!("| size | streams | path | req/s | p50 ms | p99 ms | errors | server CPU us/req | ext_proc / ICAP |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for &size in &sizes {
        for &n in &conns {
            // Target 0 is ICAP, 1 ext_proc.
            let mut cell = Rounds::new(2);
            for round in 0..rounds.max(1) {
                for path in Rounds::order(round, 2) {
                    let before = cpu_time(&pids);
                    let mut stats = match path {
                        0 if paths.contains("icap") => {
                            measure(&icap, size as usize, n, duration).await
                        }
                        1 if paths.contains("extproc") => {
                            measure_extproc(&channels, size as usize, n, duration).await
                        }
                        _ => Stats::default(),
                    };
                    if !pids.is_empty() {
                        stats.cpu = Some(cpu_time(&pids).saturating_sub(before));
                    }
                    cell.add(path, stats);
                }
            }
            println!("{}", cell.total(0).row(size as usize, n, "ICAP", ""));
            let ratio = cell.ratio_text(1, 0);
            println!(
                "{}",
                cell.total(1)
                    .row(size as usize, n, "ext_proc BUFFERED", &ratio)
            );
        }
    }
}

/// `streams` workers, each playing one BUFFERED exchange after another on
/// one of the shared HTTP/2 connections, as Envoy does.
async fn measure_extproc(
    channels: &[Channel],
    size: usize,
    streams: usize,
    duration: Duration,
) -> Stats {
    let base = Arc::new(base_body(size));
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = (0..streams)
        .map(|i| {
            let (channel, base) = (channels[i % channels.len()].clone(), base.clone());
            tokio::spawn(async move {
                let mut client = ExternalProcessorClient::new(channel)
                    .max_encoding_message_size(usize::MAX)
                    .max_decoding_message_size(usize::MAX);
                let mut body = base.to_vec();
                let mut stats = Stats::default();
                while Instant::now() < end {
                    stamp(&mut body, next_stamp());
                    let t0 = Instant::now();
                    let result = exchange(&mut client, &body).await;
                    stats.record(result, t0.elapsed());
                }
                stats
            })
        })
        .collect();
    let mut parts = Vec::new();
    for w in workers {
        parts.push(w.await.expect("worker"));
    }
    Stats::merge(parts, start.elapsed())
}

/// One upload: headers, then the body; both must be answered CONTINUE.
async fn exchange(
    client: &mut ExternalProcessorClient<Channel>,
    body: &[u8],
) -> Result<(), String> {
    let (tx, rx) = mpsc::channel(2);
    let header = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    };
    let len = body.len().to_string();
    tx.send(ProcessingRequest {
        protocol_config: Some(ProtocolConfiguration {
            request_body_mode: 2,
            response_body_mode: 0,
            send_body_without_waiting_for_header_response: false,
        }),
        request: Some(Req::RequestHeaders(HttpHeaders {
            headers: Some(HeaderMap {
                headers: vec![
                    header(":method", "POST"),
                    header(":scheme", "http"),
                    header(":authority", "bench.test"),
                    header(":path", "/file.bin"),
                    header("content-length", &len),
                ],
            }),
            end_of_stream: false,
            ..Default::default()
        })),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    let mut replies = client
        .process(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .map_err(|e| e.to_string())?
        .into_inner();
    let mut next = async || loop {
        match replies.message().await {
            Ok(Some(m)) if m.response.is_none() => continue,
            Ok(Some(m)) => return Ok(m.response.unwrap()),
            Ok(None) => return Err("stream ended".to_owned()),
            Err(s) => return Err(s.to_string()),
        }
    };
    let Res::RequestHeaders(_) = next().await? else {
        return Err("headers not answered".into());
    };
    tx.send(ProcessingRequest {
        request: Some(Req::RequestBody(HttpBody {
            body: body.to_vec(),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    })
    .await
    .map_err(|e| e.to_string())?;
    match next().await? {
        Res::RequestBody(b) if b.response.as_ref().is_none_or(|c| c.status == 0) => Ok(()),
        other => Err(format!("not CONTINUE: {other:?}")),
    }
}
