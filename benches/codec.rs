//! Codec speed: parsing a typical Squid RESPMOD head, and decoding a 1 MiB
//! chunked body, each printed beside a reference measured in the same run
//! (httparse alone on the same HTTP heads; a plain memcpy of the same bytes),
//! so that the ratio means something on a shared, noisy machine.
//!
//! Run with `cargo bench --bench codec`. This prints figures; it asserts
//! nothing about time.

// The allocator the service runs with (see src/bin/virus-scanner.rs).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::hint::black_box;
use std::time::{Duration, Instant};

use icap::{
    encode_chunk, encode_last_chunk, parse_request, ChunkedDecoder, Event, LastChunk, Limits,
};

const REQ_HEAD: &str =
    "GET http://downloads.example.com/releases/v2.4.1/tool-2.4.1-linux-amd64.tar.gz HTTP/1.1\r\n\
Host: downloads.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate\r\n\
Referer: http://downloads.example.com/releases/\r\n\
Cookie: session=8f14e45fceea167a5a36dedd4bea2543; theme=dark\r\n\
Via: 1.1 proxy.corp.example (squid/5.7)\r\n\
X-Forwarded-For: 10.20.30.40\r\n\
\r\n";

const RES_HEAD: &str = "HTTP/1.1 200 OK\r\n\
Date: Fri, 27 Nov 2026 12:00:00 GMT\r\n\
Server: nginx/1.24.0\r\n\
Content-Type: application/gzip\r\n\
Content-Length: 18734212\r\n\
Last-Modified: Tue, 03 Nov 2026 09:12:44 GMT\r\n\
ETag: \"6543a1bc-11de4c4\"\r\n\
Cache-Control: public, max-age=86400\r\n\
Accept-Ranges: bytes\r\n\
X-Cache: MISS from proxy.corp.example\r\n\
\r\n";

fn squid_respmod_head() -> Vec<u8> {
    let res_at = REQ_HEAD.len();
    let body_at = res_at + RES_HEAD.len();
    format!(
        "RESPMOD icap://127.0.0.1:1344/avscan ICAP/1.0\r\n\
         Host: 127.0.0.1:1344\r\n\
         Date: Fri, 27 Nov 2026 12:00:00 GMT\r\n\
         Encapsulated: req-hdr=0, res-hdr={res_at}, res-body={body_at}\r\n\
         Preview: 1024\r\n\
         Allow: trailers\r\n\
         X-Client-IP: 10.20.30.40\r\n\
         X-Client-Username: alice\r\n\
         \r\n{REQ_HEAD}{RES_HEAD}"
    )
    .into_bytes()
}

/// The fastest of `rounds` timings of `iters` calls: the run least disturbed
/// by the rest of the machine.
fn best_per_call(rounds: usize, iters: usize, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters as u32
        })
        .min()
        .unwrap()
}

fn httparse_only(heads: &[u8]) {
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut slots);
    let n = match req.parse(heads) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("{other:?}"),
    };
    let mut slots = [httparse::EMPTY_HEADER; 64];
    let mut res = httparse::Response::new(&mut slots);
    black_box(res.parse(&heads[n..]).unwrap());
}

fn chunked_body(total: usize, chunk: usize) -> Vec<u8> {
    let data: Vec<u8> = (0..total).map(|i| (i * 31 % 251) as u8).collect();
    let mut wire = Vec::with_capacity(total + total / chunk * 16);
    for piece in data.chunks(chunk) {
        encode_chunk(piece, &mut wire);
    }
    encode_last_chunk(&LastChunk::default(), &mut wire);
    wire
}

fn decode_all(wire: &[u8]) -> usize {
    let mut dec = ChunkedDecoder::new(Limits::DEFAULT);
    let mut rest = wire;
    let mut total = 0;
    loop {
        let step = dec.decode(rest).unwrap();
        match step.event {
            Some(Event::Data(d)) => total += black_box(d).len(),
            Some(Event::End(_)) => return total,
            None => panic!("incomplete"),
        }
        rest = &rest[step.consumed..];
    }
}

/// Decodes as a server does: the bytes arrive in `read`-sized pieces that
/// are appended to a buffer (as a socket read copies them), chunk boundaries
/// fall anywhere, and what the decoder did not use waits for the next read.
fn decode_in_reads(wire: &[u8], read: usize, buf: &mut Vec<u8>) -> usize {
    let mut dec = ChunkedDecoder::new(Limits::DEFAULT);
    let mut total = 0;
    buf.clear();
    for piece in wire.chunks(read) {
        buf.extend_from_slice(piece);
        let mut pos = 0;
        loop {
            let step = dec.decode(&buf[pos..]).unwrap();
            pos += step.consumed;
            match step.event {
                Some(Event::Data(d)) => total += black_box(d).len(),
                Some(Event::End(_)) => return total,
                None => break,
            }
        }
        buf.drain(..pos);
    }
    total
}

fn main() {
    let head = squid_respmod_head();
    let limits = Limits::DEFAULT;
    let (_, used) = parse_request(&head, &limits).unwrap().unwrap();
    assert_eq!(used, head.len());
    let icap_len = head.len() - REQ_HEAD.len() - RES_HEAD.len();
    let ours = best_per_call(15, 20_000, || {
        black_box(parse_request(black_box(&head), &limits).unwrap());
    });
    let reference = best_per_call(15, 20_000, || httparse_only(black_box(&head[icap_len..])));
    println!(
        "head parse: typical Squid RESPMOD head, {} bytes",
        head.len()
    );
    println!(
        "  icap::parse_request   {:>8.0} ns   (target: 2000 ns or less)",
        ours.as_nanos() as f64
    );
    println!(
        "  httparse alone on its two HTTP heads {:>8.0} ns   ratio {:.2}x",
        reference.as_nanos() as f64,
        ours.as_secs_f64() / reference.as_secs_f64()
    );

    const MIB: usize = 1 << 20;
    println!("chunked decode: 1 MiB body");
    let source = vec![7u8; MIB];
    let mut sink = vec![0u8; MIB];
    let copy = best_per_call(15, 50, || {
        sink.copy_from_slice(black_box(&source));
        black_box(&sink);
    });
    let gbps = |d: Duration| MIB as f64 / d.as_secs_f64() / 1e9;
    println!("  memcpy reference     {:>8.2} GB/s", gbps(copy));
    for chunk in [4 * 1024, 16 * 1024, 64 * 1024] {
        let wire = chunked_body(MIB, chunk);
        assert_eq!(decode_all(&wire), MIB);
        let t = best_per_call(15, 50, || {
            black_box(decode_all(black_box(&wire)));
        });
        println!(
            "  {:>2} KiB chunks        {:>8.2} GB/s   ratio to memcpy {:.2}x   (target: 1 GB/s or more)",
            chunk / 1024,
            gbps(t),
            gbps(t) / gbps(copy)
        );
    }
    let wire = chunked_body(MIB, 16 * 1024);
    let mut buf = Vec::with_capacity(64 * 1024);
    assert_eq!(decode_in_reads(&wire, 8192, &mut buf), MIB);
    let t = best_per_call(15, 50, || {
        black_box(decode_in_reads(black_box(&wire), 8192, &mut buf));
    });
    println!(
        "  16 KiB chunks, arriving in 8 KiB reads copied into a buffer {:>6.2} GB/s   ratio to memcpy {:.2}x",
        gbps(t),
        gbps(t) / gbps(copy)
    );
}
