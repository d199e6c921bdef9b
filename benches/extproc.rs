//! ext_proc against ICAP on the same server and clamd: BUFFERED streams
//! played as Envoy plays them (request headers, wait, the body in one
//! message, wait), beside RESPMODs with preview and `Allow: 204`, with the
//! same unique bodies, printed as a table with the ratio ext_proc / ICAP.
//!
//! Run by `SECTIONS=extproc scripts/bench.sh`, which starts clamd and the server;
//! by hand: `ICAP=127.0.0.1:1344 EXTPROC=127.0.0.1:50051 cargo bench --bench
//! extproc`, with `SIZES` (1K,64K,1M), `CONNECTIONS` (8,64) and `DURATION`
//! (10s), `ROUNDS` (1; each round measures both paths, in turn first, and
//! the ratio is the median of the rounds'), `CHANNELS` (HTTP/2 connections,
//! 2); `PATHS=icap` or `PATHS=extproc` measures only one; `SERVER_PIDS`
//! (comma-separated: the server, clamd) prints their CPU time per request;
//! `CLIENT` (h2) is the gRPC client: `h2` frames the same messages by hand
//! on HTTP/2, as lean as the ICAP load generator, so that on shared cores
//! the client's own cost does not weigh on one side only; `tonic` uses
//! tonic's generated client.
//! This prints figures; it asserts nothing about time.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use envoy_types::pb::envoy::config::core::v3::{HeaderMap, HeaderValue};
use envoy_types::pb::envoy::service::ext_proc::v3::external_processor_client::ExternalProcessorClient;
use envoy_types::pb::envoy::service::ext_proc::v3::{
    processing_request::Request as Req, processing_response::Response as Res, HttpBody,
    HttpHeaders, ProcessingRequest, ProcessingResponse, ProtocolConfiguration,
};
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};
use virus_scanner::bench::{
    base_body, cpu_time, measure, next_stamp, stamp, Rounds, Stats, Target,
};
use virus_scanner::config::{parse_duration, parse_size};

fn setting(name: &str, default: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| default.to_owned())
}

// One thread: the load generator's tasks never wake each other across
// threads, so on shared cores it takes less CPU from the servers it
// measures (1 KiB, 8 streams: 19 instead of 22 us per ICAP request, 47
// instead of 60 per ext_proc exchange), and the same for both paths.
#[tokio::main(flavor = "current_thread")]
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
    let n_channels = setting("CHANNELS", "2")
        .parse::<usize>()
        .expect("CHANNELS")
        .max(1);
    let connections = Connections::open(&setting("CLIENT", "h2"), &extproc, n_channels).await;
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
                            connections.measure(size as usize, n, duration).await
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

/// The HTTP/2 connections to the ext_proc server, as the chosen client
/// holds them.
enum Connections {
    /// `CLIENT=h2`: h2's handles, and the method's URI.
    Lean(Vec<h2::client::SendRequest<Bytes>>, http::Uri),
    /// `CLIENT=tonic`: tonic's channels.
    Tonic(Vec<Channel>),
}

impl Connections {
    async fn open(client: &str, extproc: &str, n: usize) -> Connections {
        match client {
            "h2" => {
                let mut conns = Vec::new();
                for _ in 0..n {
                    let tcp = tokio::net::TcpStream::connect(extproc)
                        .await
                        .expect("the ext_proc server answers");
                    tcp.set_nodelay(true).expect("nodelay");
                    let (send, conn) = h2::client::Builder::new()
                        .initial_window_size(16 << 20)
                        .initial_connection_window_size(64 << 20)
                        .handshake::<_, Bytes>(tcp)
                        .await
                        .expect("HTTP/2 with the ext_proc server");
                    tokio::spawn(conn);
                    conns.push(send);
                }
                let uri =
                    format!("http://{extproc}/envoy.service.ext_proc.v3.ExternalProcessor/Process")
                        .parse()
                        .expect("EXTPROC=ip:port");
                Connections::Lean(conns, uri)
            }
            "tonic" => {
                let mut channels = Vec::new();
                for _ in 0..n {
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
                Connections::Tonic(channels)
            }
            other => panic!("CLIENT={other}: h2 or tonic"),
        }
    }

    /// `streams` players spread over the connections, measured.
    async fn measure(&self, size: usize, streams: usize, duration: Duration) -> Stats {
        match self {
            Connections::Lean(conns, uri) => {
                let headers =
                    virus_scanner_grpc::frame(&upload_headers(size), usize::MAX).expect("no limit");
                let players = (0..streams)
                    .map(|i| Lean {
                        conn: conns[i % conns.len()].clone(),
                        uri: uri.clone(),
                        headers: headers.clone(),
                    })
                    .collect();
                measure_players(players, size, duration).await
            }
            Connections::Tonic(channels) => {
                let players = (0..streams)
                    .map(|i| {
                        Tonic(
                            ExternalProcessorClient::new(channels[i % channels.len()].clone())
                                .max_encoding_message_size(usize::MAX)
                                .max_decoding_message_size(usize::MAX),
                        )
                    })
                    .collect();
                measure_players(players, size, duration).await
            }
        }
    }
}

/// One client of the benchmark, which plays an exchange for a body.
trait Player: Send + 'static {
    fn play(&mut self, body: &[u8]) -> impl Future<Output = Result<(), String>> + Send;
}

/// Through tonic's generated client.
struct Tonic(ExternalProcessorClient<Channel>);

impl Player for Tonic {
    fn play(&mut self, body: &[u8]) -> impl Future<Output = Result<(), String>> + Send {
        exchange(&mut self.0, body)
    }
}

/// With the gRPC framing done here, on h2.
struct Lean {
    conn: h2::client::SendRequest<Bytes>,
    uri: http::Uri,
    headers: Bytes,
}

impl Player for Lean {
    fn play(&mut self, body: &[u8]) -> impl Future<Output = Result<(), String>> + Send {
        lean_exchange(self.conn.clone(), &self.uri, self.headers.clone(), body)
    }
}

/// One worker per player, each playing one BUFFERED exchange after another
/// on its share of the HTTP/2 connections, as Envoy does, with a unique body
/// each time.
async fn measure_players<P: Player>(players: Vec<P>, size: usize, duration: Duration) -> Stats {
    let base = Arc::new(base_body(size));
    let start = Instant::now();
    let end = start + duration;
    let workers: Vec<_> = players
        .into_iter()
        .map(|mut player| {
            let base = base.clone();
            tokio::spawn(async move {
                let mut body = base.to_vec();
                let mut stats = Stats::default();
                while Instant::now() < end {
                    stamp(&mut body, next_stamp());
                    let t0 = Instant::now();
                    let result = player.play(&body).await;
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
    tx.send(upload_headers(body.len()))
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

/// One upload on its own HTTP/2 stream: headers, then the body; both must
/// be answered CONTINUE, and the call must end with status 0.
async fn lean_exchange(
    conn: h2::client::SendRequest<Bytes>,
    uri: &http::Uri,
    headers: Bytes,
    body: &[u8],
) -> Result<(), String> {
    let mut conn = conn.ready().await.map_err(|e| e.to_string())?;
    let request = http::Request::post(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .expect("a request");
    let (response, mut send) = conn
        .send_request(request, false)
        .map_err(|e| e.to_string())?;
    send.send_data(headers, false).map_err(|e| e.to_string())?;
    let mut recv = response.await.map_err(|e| e.to_string())?.into_body();
    let mut buf = BytesMut::new();
    let Some(Res::RequestHeaders(_)) = next_reply(&mut recv, &mut buf).await? else {
        return Err("headers not answered".into());
    };
    let msg = ProcessingRequest {
        request: Some(Req::RequestBody(HttpBody {
            body: body.to_vec(),
            end_of_stream: true,
            ..Default::default()
        })),
        ..Default::default()
    };
    send.send_data(
        virus_scanner_grpc::frame(&msg, usize::MAX).expect("no limit"),
        true,
    )
    .map_err(|e| e.to_string())?;
    match next_reply(&mut recv, &mut buf).await? {
        Some(Res::RequestBody(b)) if b.response.as_ref().is_none_or(|c| c.status == 0) => {}
        other => return Err(format!("not CONTINUE: {other:?}")),
    }
    while let Some(chunk) = recv.data().await {
        chunk.map_err(|e| e.to_string())?;
    }
    match recv.trailers().await.map_err(|e| e.to_string())? {
        Some(t) if t.get("grpc-status").is_some_and(|s| s == "0") => Ok(()),
        other => Err(format!("the call did not end with status 0: {other:?}")),
    }
}

/// The next reply that says something (an empty one only updates timers).
async fn next_reply(recv: &mut h2::RecvStream, buf: &mut BytesMut) -> Result<Option<Res>, String> {
    loop {
        if buf.len() >= 5 {
            let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
            if buf.len() >= 5 + len {
                let _ = buf.split_to(5);
                let msg =
                    ProcessingResponse::decode(buf.split_to(len)).map_err(|e| e.to_string())?;
                if msg.response.is_some() {
                    return Ok(msg.response);
                }
                continue;
            }
        }
        match recv.data().await {
            Some(Ok(chunk)) => {
                let _ = recv.flow_control().release_capacity(chunk.len());
                buf.extend_from_slice(&chunk);
            }
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the call ended without a reply".into()),
        }
    }
}

/// The headers of an upload of `size` bytes, with BUFFERED request bodies.
fn upload_headers(size: usize) -> ProcessingRequest {
    let header = |k: &str, v: &str| HeaderValue {
        key: k.into(),
        value: String::new(),
        raw_value: v.as_bytes().to_vec(),
    };
    let len = size.to_string();
    ProcessingRequest {
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
    }
}
