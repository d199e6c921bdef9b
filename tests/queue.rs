//! Split mode against the real programs: redis-server, clamd, and this
//! project's producer and handler binaries as separate processes, driven
//! over ICAP by c-icap-client and by the tests' own client.

mod support;

use std::time::Duration;

use support::{
    c_icap_text, chunked, eicar, icap_respmod, read_icap_answer, respmod_head, write_file,
    ClamdProcess, IcapAnswer, RedisProcess, Service, TempDir,
};
use tokio::io::AsyncWriteExt;

const PRODUCER: &str = env!("CARGO_BIN_EXE_virus-scanner-producer");
const HANDLER: &str = env!("CARGO_BIN_EXE_virus-scanner-handler");

/// `size` bytes no other call returns (clamd's cache must not answer), with
/// EICAR at the very end when `infected`.
fn body(size: usize, seed: u64, infected: bool) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(size);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    if infected {
        let e = eicar();
        let at = size.saturating_sub(e.len());
        v.truncate(at);
        v.extend_from_slice(&e);
    }
    v
}

/// Environment shared by producers and handlers.
fn common(redis: &RedisProcess, clamd: &ClamdProcess) -> Vec<(&'static str, String)> {
    vec![
        ("REDIS_HOST", "127.0.0.1".into()),
        ("REDIS_PORT", redis.port.to_string()),
        ("CLAMD_URL", clamd.tcp_url()),
        ("MAX_SCAN_SIZE", "300M".into()),
    ]
}

fn producer(
    redis: &RedisProcess,
    clamd: &ClamdProcess,
    extra: &[(&'static str, &str)],
) -> (Service, u16) {
    let port = support::free_port();
    let mut env = common(redis, clamd);
    env.push(("ICAP_PORT", port.to_string()));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let service = Service::start(PRODUCER, &env);
    service.wait_port(port, Duration::from_secs(20));
    (service, port)
}

fn handler(redis: &RedisProcess, clamd: &ClamdProcess, extra: &[(&'static str, &str)]) -> Service {
    let mut env = common(redis, clamd);
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    Service::start(HANDLER, &env)
}

async fn scan(port: u16, n: u64, size: usize, infected: bool) -> IcapAnswer {
    let url = format!("http://origin.test/file-{n}");
    icap_respmod(port, &url, &body(size, n, infected), "")
        .await
        .unwrap_or_else(|e| panic!("scan {n}: {e}"))
}

/// A fresh directory for SCAN_MOUNT, and its path as a setting's value.
fn scan_mount() -> (TempDir, String) {
    let mount = TempDir::new("mount");
    let path = mount.path().display().to_string();
    (mount, path)
}

/// Producer settings that put every body in a file under `mount` (the
/// disk provider).
fn on_disk(mount: &str) -> [(&'static str, &str); 3] {
    [
        ("INLINE_MAX", "0"),
        ("DISK_MIN", "0"),
        ("SCAN_MOUNT", mount),
    ]
}

/// Every body file was removed after its scan.
fn assert_mount_empty(mount: &TempDir) {
    let left: Vec<_> = std::fs::read_dir(mount.path()).unwrap().collect();
    assert!(left.is_empty(), "body files left on the mount: {left:?}");
}

/// Scans a new body of each (size, infected) and checks its verdict.
async fn scan_each(port: u16, seed: &mut u64, cases: &[(usize, bool)], what: &str) {
    for &(size, infected) in cases {
        *seed += 1;
        let answer = scan(port, *seed, size, infected).await;
        assert_verdict(&answer, infected, &format!("{what}, {size} bytes"));
    }
}

fn assert_verdict(answer: &IcapAnswer, infected: bool, what: &str) {
    if infected {
        assert!(
            answer.is_infected(),
            "{what}: expected a block page, got {answer:?}"
        );
    } else {
        assert!(answer.is_clean(), "{what}: expected 204, got {answer:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_mode_end_to_end() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (producer, port) = producer(&redis, &clamd, &[]);
    let h1 = handler(&redis, &clamd, &[]);
    let h2 = handler(&redis, &clamd, &[]);

    // c-icap-client, which nobody here wrote: RESPMOD and REQMOD.
    let dir = TempDir::new("split");
    let clean = write_file(
        &dir,
        "clean.txt",
        &b"plain text, nothing to see\n".repeat(100),
    );
    let mut bad = b"prefix\n".to_vec();
    bad.extend_from_slice(&eicar());
    let infected = write_file(&dir, "eicar.com", &bad);
    let client = |file: String, mode: &'static str| async move {
        c_icap_text(
            port,
            &[
                "-s",
                "avscan",
                "-v",
                "-f",
                &file,
                mode,
                "http://origin.test/f",
            ],
        )
        .await
    };
    for mode in ["-resp", "-req"] {
        let t = client(clean.clone(), mode).await;
        assert!(t.contains("ICAP/1.0 204"), "{mode} clean: {t}");
        let t = client(infected.clone(), mode).await;
        assert!(t.contains("HTTP/1.1 403 Forbidden"), "{mode} infected: {t}");
        assert!(t.contains(support::EICAR_NAME), "{mode} infected: {t}");
    }
    // A large upload without Allow: 204 is kept whole by the producer too:
    // the block page, not an answer cut off.
    let mut large = body(600_000, 77, false);
    large.extend_from_slice(&eicar());
    let large = write_file(&dir, "large-upload.com", &large);
    let t = c_icap_text(
        port,
        &[
            "-s",
            "avscan",
            "-v",
            "-no204",
            "-f",
            &large,
            "-req",
            "http://origin.test/upload",
            "-method",
            "POST",
        ],
    )
    .await;
    assert!(t.contains("HTTP/1.1 403 Forbidden"), "large upload: {t}");
    // OPTIONS carries the ISTag from the version the handlers publish:
    // the same as a server scanning on that clamd itself.
    let reference = support::TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let expected = support::istag(reference.port()).await;
    assert_ne!(expected, "\"VS-unknown\"");
    assert_eq!(
        support::known_istag(port, Duration::from_secs(20)).await,
        expected
    );

    // The project's own client, 40 at once, both handlers taking part.
    let answers = futures_join((0..40u64).map(|n| async move {
        let infected = n % 4 == 0;
        (
            scan(port, 100 + n, 2000 + n as usize * 5000, infected).await,
            infected,
        )
    }))
    .await;
    for (n, (answer, infected)) in answers.iter().enumerate() {
        assert_verdict(answer, *infected, &format!("scan {n}"));
    }
    for h in [&h1, &h2] {
        assert!(
            h.log().contains("scanned"),
            "a handler did no work:\n{}",
            h.log()
        );
    }
    assert!(!producer.log().contains("ERROR"), "{}", producer.log());

    // Queue depth for monitoring: everything done, nothing pending.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_virus-scanner"))
        .args(["queue-status", "--redis-url", &redis.url()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    for lane in [
        "high\tvs:tasks:high\t0\t0\t0",
        "normal\tvs:tasks:normal\t0\t0\t0",
        "low\tvs:tasks:low\t0\t0\t0",
    ] {
        assert!(text.contains(lane), "{lane:?} missing in:\n{text}");
    }
    redis.assert_keys_expire().await;
}

/// Runs the futures concurrently and returns their outputs in order.
async fn futures_join<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

/// XPENDING's summary: count, lowest and highest id, and per consumer.
type PendingSummary = (
    u64,
    Option<String>,
    Option<String>,
    Option<Vec<(String, u64)>>,
);

/// Sends the first part of a body, pauses, then the rest: while the client
/// pauses, the handlers hold streamed tasks whose bodies have not ended.
async fn paused_scan(
    port: u16,
    n: u64,
    size: usize,
    infected: bool,
    pause: Duration,
) -> IcapAnswer {
    let data = body(size, n, infected);
    let url = format!("http://origin.test/paused-{n}");
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let (first, rest) = data.split_at(size / 2);
    let mut out = respmod_head(port, &url, size, "");
    out.extend_from_slice(&chunked(first, false));
    s.write_all(&out).await.unwrap();
    tokio::time::sleep(pause).await;
    s.write_all(&chunked(rest, true)).await.unwrap();
    let (mut rd, _wr) = s.split();
    read_icap_answer(&mut rd).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_handler_loses_no_scan() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    // Small INLINE_MAX: every body streams, so a task is taken before its
    // body has ended.
    let (_producer, port) = producer(&redis, &clamd, &[("INLINE_MAX", "16K")]);
    let settings = [("HANDLER_CONCURRENCY", "6"), ("CLAIM_IDLE", "2s")];
    let mut doomed = handler(&redis, &clamd, &settings);
    let survivor = handler(&redis, &clamd, &settings);
    doomed
        .wait_log("handler started", 1, Duration::from_secs(20))
        .await;
    survivor
        .wait_log("handler started", 1, Duration::from_secs(20))
        .await;

    let pause = Duration::from_secs(3);
    let scans: Vec<_> = (0..200u64)
        .map(|n| {
            let infected = n % 7 == 3;
            tokio::spawn(async move {
                (
                    paused_scan(port, n, 40_000 + n as usize * 37, infected, pause).await,
                    infected,
                )
            })
        })
        .collect();
    // Mid-pause: every worker of both handlers holds a task.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut conn = redis.conn().await;
    let (_, _, _, consumers): PendingSummary = redis::cmd("XPENDING")
        .arg("vs:tasks:normal")
        .arg("vs-handlers")
        .query_async(&mut conn)
        .await
        .unwrap();
    let doomed_name = format!("-{}-", doomed.pid());
    let held: u64 = consumers
        .iter()
        .flatten()
        .filter(|(name, _)| name.contains(&doomed_name))
        .map(|(_, n)| n)
        .sum();
    assert_eq!(
        held, 6,
        "the handler to be killed should hold one task per worker: {consumers:?}"
    );
    doomed.kill9();

    let mut wrong = Vec::new();
    for (n, scan) in scans.into_iter().enumerate() {
        let (answer, infected) = scan.await.unwrap();
        let right = if infected {
            answer.is_infected()
        } else {
            answer.is_clean()
        };
        if !right {
            wrong.push((n, infected, answer));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 200 wrong: {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(5)]
    );
    assert!(
        survivor
            .log()
            .contains("took over a task left pending by another worker"),
        "{}",
        survivor.log()
    );
    redis.assert_keys_expire().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_restart_under_load_never_passes_infected() {
    let mut redis = RedisProcess::start_durable();
    let clamd = ClamdProcess::start();
    let (_producer, port) = producer(&redis, &clamd, &[("SCAN_DEADLINE", "5s")]);
    let _handler = handler(&redis, &clamd, &[("CLAIM_IDLE", "2s")]);
    // Warm up: the split works before the restart.
    assert_verdict(&scan(port, 1, 3000, false).await, false, "before");

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for client in 0..4u64 {
        let stop = stop.clone();
        load.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                n += 1;
                let infected = n.is_multiple_of(3);
                let id = 10_000 * (client + 1) + n;
                match icap_respmod(
                    port,
                    &format!("http://origin.test/{id}"),
                    &body(4000, id, infected),
                    "",
                )
                .await
                {
                    Ok(a) => seen.push((infected, a)),
                    Err(e) => panic!("no ICAP answer during the restart: {e}"),
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    redis.restart();
    // The service recovers by itself: clean and infected verdicts again.
    let mut recovered = false;
    for _ in 0..200 {
        let clean = scan(port, 7, 3000, false).await;
        let bad = scan(port, 8, 3000, true).await;
        if clean.is_clean() && bad.is_infected() {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recovered, "no verdicts 20 s after Redis came back");
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut total, mut unavailable) = (0, 0);
    for l in load {
        for (infected, a) in l.await.unwrap() {
            total += 1;
            if infected {
                assert!(!a.is_clean(), "an infected body was answered clean: {a:?}");
                assert!(a.is_infected() || a.is_unavailable(), "{a:?}");
            } else {
                assert!(a.is_clean() || a.is_unavailable(), "{a:?}");
            }
            unavailable += a.is_unavailable() as usize;
        }
    }
    eprintln!("{total} scans during the restart, {unavailable} failed closed");
    // Every task Redis acknowledged is still scanned, even those whose
    // answers were lost with the connection.
    let mut conn = redis.conn().await;
    for _ in 0..100 {
        let left: u64 = redis::cmd("XLEN")
            .arg("vs:tasks:normal")
            .query_async(&mut conn)
            .await
            .unwrap();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    redis.assert_keys_expire().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_data_provider_small_and_large() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (mount, mount_path) = scan_mount();
    let handler = handler(&redis, &clamd, &[("SCAN_MOUNT", &mount_path)]);
    let providers = [
        ("inline", vec![("INLINE_MAX", "300M")]),
        ("stream", vec![("INLINE_MAX", "0")]),
        ("disk", on_disk(&mount_path).to_vec()),
    ];
    let mut seed = 500;
    for (provider, settings) in providers {
        let (p, port) = producer(&redis, &clamd, &settings);
        let cases = [
            (1024, false),
            (1024, true),
            (5 << 20, false),
            (5 << 20, true),
            (200 << 20, true),
        ];
        scan_each(port, &mut seed, &cases, provider).await;
        let tag = format!("provider=\"{provider}\"");
        handler.wait_log(&tag, 5, Duration::from_secs(10)).await;
        drop(p);
    }
    assert_mount_empty(&mount);
    redis.assert_keys_expire().await;
}

/// On a unix socket the handler gives clamd the body file itself (FILDES):
/// this clamd refuses INSTREAM bodies over 1M, and the 5M and 40M bodies
/// are still scanned, EICAR at their very end found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_on_disk_goes_to_clamd_by_descriptor_on_a_unix_socket() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start_with_stream_max("1M");
    let (mount, mount_path) = scan_mount();
    let unix = clamd.unix_url();
    let _handler = handler(
        &redis,
        &clamd,
        &[("SCAN_MOUNT", &mount_path), ("CLAMD_URL", &unix)],
    );
    let (_producer, port) = producer(&redis, &clamd, &on_disk(&mount_path));
    let cases = [
        (1024, true),
        (5 << 20, false),
        (5 << 20, true),
        (40 << 20, true),
    ];
    scan_each(port, &mut 900, &cases, "disk over a unix socket").await;
    assert_mount_empty(&mount);
    redis.assert_keys_expire().await;
}

/// A handler beside clamd on its unix socket (the faster deployment the
/// README recommends): inline and streamed bodies up to FILDES_MAX reach
/// clamd by descriptor. This clamd refuses INSTREAM bodies over 1M, so the
/// 1.5M and 5M bodies pass only that way; a body over FILDES_MAX goes by
/// INSTREAM, is refused as too large, and the too-large policy blocks it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_on_a_unix_socket_scans_queued_bodies_by_descriptor() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start_with_stream_max("1M");
    let unix = clamd.unix_url();
    let _handler = handler(
        &redis,
        &clamd,
        &[("CLAMD_URL", &unix), ("FILDES_MAX", "8M")],
    );
    let mut seed = 950;
    for (provider, inline_max) in [("inline", "300M"), ("stream", "0")] {
        let (_producer, port) = producer(&redis, &clamd, &[("INLINE_MAX", inline_max)]);
        let cases = [
            (1024, false),
            (1024, true),
            (1536 << 10, true),
            (5 << 20, false),
            (5 << 20, true),
        ];
        let what = format!("{provider} over a unix socket");
        scan_each(port, &mut seed, &cases, &what).await;
        seed += 1;
        let answer = scan(port, seed, 9 << 20, false).await;
        assert!(
            answer.http_status == Some(403) && !answer.is_infected(),
            "{provider}: a 9M body that clamd refused must get the too-large page, got {answer:?}"
        );
    }
    redis.assert_keys_expire().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_declared_large_is_queued_at_its_first_bytes() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    // INLINE_MAX at its default (256K); the message declares 1 MiB.
    let (_producer, port) = producer(&redis, &clamd, &[]);
    let _handler = handler(&redis, &clamd, &[]);
    let data = body(1 << 20, 9001, true);
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&respmod_head(
        port,
        "http://origin.test/declared",
        data.len(),
        "",
    ))
    .await
    .unwrap();
    s.write_all(&chunked(&data[..4096], false)).await.unwrap();
    // Only 4 KiB are out, far below INLINE_MAX: the task is queued already,
    // and its body stream holds them.
    let mut conn = redis.conn().await;
    let end = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let queued: u64 = redis::cmd("XLEN")
            .arg("vs:tasks:normal")
            .query_async(&mut conn)
            .await
            .unwrap();
        let bodies: Vec<String> = redis::cmd("KEYS")
            .arg("vs:body:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        if queued == 1 && bodies.len() == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < end,
            "after 4 KiB of a declared 1 MiB: {queued} tasks, body streams {bodies:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The rest follows on the same stream; EICAR at its very end is found.
    s.write_all(&chunked(&data[4096..], true)).await.unwrap();
    let answer = read_icap_answer(&mut s).await.unwrap();
    assert_verdict(&answer, true, "declared 1 MiB, queued early");
    redis.assert_keys_expire().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_aborted_and_late_scans_end_explicitly() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (_streaming, port) = producer(
        &redis,
        &clamd,
        &[
            ("INLINE_MAX", "0"),
            ("SCAN_DEADLINE", "2s"),
            ("PRIORITY_HEADER", "true"),
        ],
    );

    // A missed deadline: no handler runs. The answer is the failure mode
    // (closed), in time.
    let started = std::time::Instant::now();
    let late = icap_respmod(
        port,
        "http://origin.test/late",
        b"late body",
        "X-Priority: high\r\n",
    )
    .await
    .unwrap();
    assert!(late.is_unavailable(), "{late:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let mut conn = redis.conn().await;
    let high: u64 = redis::cmd("XLEN")
        .arg("vs:tasks:high")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(high, 1, "X-Priority: high put the task in the high lane");

    // The handler that comes later drops the stale task with a reason.
    let handler = handler(&redis, &clamd, &[("BODY_TIMEOUT", "5s")]);
    handler
        .wait_log("verdict=\"error\"", 1, Duration::from_secs(20))
        .await;

    // An empty body: the end of the stream is explicit, and clamd says clean.
    let empty = icap_respmod(port, "http://origin.test/empty", b"", "")
        .await
        .unwrap();
    assert!(empty.is_clean(), "{empty:?}");

    // An aborted transfer: the handler stops with "aborted", not a verdict.
    {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let mut out = respmod_head(port, "http://origin.test/aborted", 1 << 20, "");
        out.extend_from_slice(&chunked(&body(300_000, 9, false), false));
        s.write_all(&out).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    handler
        .wait_log("transfer aborted", 1, Duration::from_secs(20))
        .await;
    // Nothing is left behind but keys that expire.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let keys = redis.assert_keys_expire().await;
    assert!(
        !keys.iter().any(|k| k.starts_with("vs:body:")),
        "body streams left: {keys:?}"
    );
}

/// Body files the producer gives up are removed from the mount: a
/// transfer cut off halfway, and a whole body that cannot be queued because
/// Redis is gone (the answer is then the failure mode). No handler runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_files_given_up_are_removed_from_the_mount() {
    let mut redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (mount, mount_path) = scan_mount();
    let settings = [&on_disk(&mount_path)[..], &[("SCAN_DEADLINE", "3s")]].concat();
    let (_producer, port) = producer(&redis, &clamd, &settings);
    let files = || std::fs::read_dir(mount.path()).unwrap().count();
    let until = async |n: usize, what: &str| {
        for _ in 0..100 {
            if files() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(files(), n, "{what}");
    };
    // The first 100,000 of 150,000 declared bytes: the body has its file.
    let start = |s: u64| {
        let mut out = respmod_head(port, &format!("http://origin.test/{s}"), 150_000, "");
        out.extend_from_slice(&chunked(&body(100_000, s, false), false));
        out
    };

    // Cut off halfway: the file goes with the connection.
    {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(&start(31)).await.unwrap();
        until(1, "the body file while the body arrives").await;
    }
    until(0, "the file of a transfer cut off").await;

    // Whole, but Redis is gone: the failure mode, and the file goes.
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(&start(32)).await.unwrap();
    until(1, "the body file while the body arrives").await;
    redis.stop();
    let rest = chunked(&body(50_000, 33, false), true);
    let (mut rd, mut wr) = s.split();
    let write = async {
        let _ = wr.write_all(&rest).await;
    };
    let (_, answer) = tokio::join!(write, read_icap_answer(&mut rd));
    let answer = answer.unwrap();
    assert!(answer.is_unavailable(), "{answer:?}");
    until(0, "the file of a body that could not be queued").await;
}

/// A body file nobody will scan (its producer died mid-upload) is removed
/// by a handler once it is older than ORPHAN_AGE; a file still being
/// written stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_removes_body_files_left_behind() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (mount, mount_path) = scan_mount();
    let left = mount.path().join("dead-1.body");
    let fresh = mount.path().join("alive-1.body");
    std::fs::write(&left, b"half a body").unwrap();
    std::fs::write(&fresh, b"a body on its way").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&left)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(2 * 3600))
        .unwrap();
    let metrics = support::free_port().to_string();
    let handler = handler(
        &redis,
        &clamd,
        &[
            ("SCAN_MOUNT", &mount_path),
            ("ORPHAN_AGE", "1h"),
            ("METRICS_PORT", &metrics),
        ],
    );
    handler
        .wait_log(
            "removed a body file left behind",
            1,
            Duration::from_secs(20),
        )
        .await;
    assert!(!left.exists(), "the old body file is still there");
    assert!(fresh.exists(), "the fresh body file was removed");
    let port = metrics.parse().unwrap();
    handler.wait_port(port, Duration::from_secs(20));
    let (_, text) = support::http_get(port, "/metrics").await;
    assert!(
        text.contains("\nvirus_scanner_body_files_left_removed_total 1\n"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_that_keeps_failing_goes_to_dead_letter() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let metrics = support::free_port();
    let (_producer, port) = producer(
        &redis,
        &clamd,
        &[
            ("INLINE_MAX", "16K"),
            ("METRICS_PORT", &metrics.to_string()),
        ],
    );
    let settings = [
        ("CLAIM_IDLE", "1s"),
        ("MAX_DELIVERIES", "1"),
        ("HANDLER_CONCURRENCY", "1"),
    ];
    let mut first = handler(&redis, &clamd, &settings);
    first
        .wait_log("handler started", 1, Duration::from_secs(20))
        .await;
    // The body stalls halfway; the handler that took it dies.
    let scan = tokio::spawn(paused_scan(port, 1, 100_000, false, Duration::from_secs(4)));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    first.kill9();
    // The next delivery is one too many: dead letter, and the producer
    // gets an explicit error, which fails closed.
    let second = handler(&redis, &clamd, &settings);
    second
        .wait_log(
            "task moved to the dead-letter stream",
            1,
            Duration::from_secs(20),
        )
        .await;
    let answer = scan.await.unwrap();
    assert!(answer.is_unavailable(), "{answer:?}");
    let mut conn = redis.conn().await;
    let dead: u64 = redis::cmd("XLEN")
        .arg("vs:dead")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(dead, 1);
    assert_eq!(sample(metrics, "virus_scanner_dead_letters").await, 1);
    redis.assert_keys_expire().await;
}

/// Waits until `/readyz` on each of `ports` answers `status`.
async fn wait_ready(ports: &[u16], status: u16, what: &str) {
    for &port in ports {
        support::eventually(Duration::from_secs(20), || async {
            let (got, body) = support::http_get(port, "/readyz").await;
            if got == status {
                return Ok(());
            }
            Err(format!("{what}: /readyz on {port} still {got}: {body}"))
        })
        .await;
    }
}

/// A handler serving /metrics, and its metrics port, once it listens.
fn handler_with_metrics(redis: &RedisProcess, clamd: &ClamdProcess) -> (Service, u16) {
    let port = support::free_port();
    let service = handler(redis, clamd, &[("METRICS_PORT", &port.to_string())]);
    service.wait_port(port, Duration::from_secs(20));
    (service, port)
}

/// `/readyz` of producer and handler follows Redis: unready while it is
/// down, ready again when it is back, without a restart of their own.
/// The handler's also follows clamd; the producer, which does not scan,
/// does not ask clamd.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_follows_redis_and_clamd() {
    let mut redis = RedisProcess::start();
    let mut clamd = ClamdProcess::start();
    let producer_metrics = support::free_port();
    let (_producer, _) = producer(
        &redis,
        &clamd,
        &[("METRICS_PORT", &producer_metrics.to_string())],
    );
    let (_handler, handler_metrics) = handler_with_metrics(&redis, &clamd);
    let both = [producer_metrics, handler_metrics];
    wait_ready(&both, 200, "at start").await;
    redis.stop();
    wait_ready(&both, 503, "Redis stopped").await;
    let (_, why) = support::http_get(producer_metrics, "/readyz").await;
    assert!(why.contains("redis"), "{why}");
    redis.restart();
    wait_ready(&both, 200, "Redis back").await;
    clamd.stop();
    wait_ready(&[handler_metrics], 503, "clamd stopped").await;
    let (_, why) = support::http_get(handler_metrics, "/readyz").await;
    assert!(why.contains("clamd"), "{why}");
    assert_eq!(support::http_get(producer_metrics, "/readyz").await.0, 200);
    clamd.restart();
    wait_ready(&[handler_metrics], 200, "clamd back").await;
}

/// Every log line of `service` as a JSON object (LOG_FORMAT=json): a line
/// that is not one fails the test.
fn json_lines(service: &Service) -> Vec<serde_json::Value> {
    service
        .log()
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
            assert!(v.is_object(), "not an object: {l}");
            v
        })
        .collect()
}

/// With LOG_FORMAT=json every line of producer and handler is a JSON
/// object; the producer's audit line has the fields operators search by,
/// and the handler's line for the same scan carries the same id, which the
/// block page shows too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_the_scan_id_from_producer_to_handler() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let json = [("LOG_FORMAT", "json")];
    let (producer, port) = producer(&redis, &clamd, &json);
    let handler = handler(&redis, &clamd, &json);
    let dir = TempDir::new("json");
    let mut bad = b"prefix\n".to_vec();
    bad.extend_from_slice(&eicar());
    let file = write_file(&dir, "eicar.com", &bad);
    let url = "http://origin.test/json/eicar.com";
    let page = c_icap_text(
        port,
        &[
            "-s",
            "avscan",
            "-x",
            "X-Client-IP: 10.1.2.3",
            "-x",
            "X-Client-Username: alice",
            "-f",
            &file,
            "-resp",
            url,
        ],
    )
    .await;
    assert!(page.contains(support::EICAR_NAME), "{page}");
    producer
        .wait_log("\"message\":\"verdict\"", 1, Duration::from_secs(20))
        .await;
    let audit = json_lines(&producer)
        .into_iter()
        .find(|v| v["message"] == "verdict" && v["url"] == url)
        .unwrap_or_else(|| panic!("no audit line:\n{}", producer.log()));
    let id = audit["id"].as_str().expect("an id").to_owned();
    for (field, want) in [
        ("frontend", "icap"),
        ("direction", "response"),
        ("client", "10.1.2.3"),
        ("user", "alice"),
        ("verdict", "infected"),
        ("action", "block"),
        ("lane", "normal"),
    ] {
        assert_eq!(audit[field], want, "{field} in {audit}");
    }
    assert!(
        audit["signature"]
            .as_str()
            .is_some_and(|s| s.contains("Eicar")),
        "{audit}"
    );
    assert_eq!(audit["bytes"], bad.len() as u64, "{audit}");
    assert!(audit["ms"].is_u64(), "{audit}");
    assert!(
        page.contains(&id),
        "the block page does not show {id}:\n{page}"
    );
    // The handler logs its line after it has sent the result on.
    handler
        .wait_log(&format!("\"id\":\"{id}\""), 1, Duration::from_secs(20))
        .await;
    let scanned = json_lines(&handler)
        .into_iter()
        .find(|v| v["message"] == "scanned" && v["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no handler line for {id}:\n{}", handler.log()));
    assert_eq!(scanned["verdict"], "infected", "{scanned}");
    assert_eq!(scanned["url"], url, "{scanned}");
    assert_eq!(scanned["lane"], "normal", "{scanned}");
}

/// A producer started before any handler cannot know clamd's version: its
/// ISTag says so, and it looks again every few seconds, not only every
/// VERSION_REFRESH (a minute), so the ISTag is right soon after the first
/// handler starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_producer_learns_the_istag_soon_after_a_handler_starts() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (_producer, port) = producer(&redis, &clamd, &[]);
    assert_eq!(support::istag(port).await, "\"VS-unknown\"");
    let _handler = handler(&redis, &clamd, &[]);
    let reference = support::TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;
    let expected = support::istag(reference.port()).await;
    assert_eq!(
        support::known_istag(port, Duration::from_secs(20)).await,
        expected
    );
}

/// A sample's value on a metrics port (0 when it is not there).
async fn sample(port: u16, name: &str) -> u64 {
    let (_, text) = support::http_get(port, "/metrics").await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0)
}

/// Waits until every `(sample, value)` holds on each of `ports`.
async fn wait_samples(ports: &[u16], want: &[(&str, u64)], what: &str) {
    let wanted: Vec<u64> = ports
        .iter()
        .flat_map(|_| want.iter().map(|w| w.1))
        .collect();
    support::eventually(Duration::from_secs(20), || async {
        let mut seen = Vec::new();
        for &port in ports {
            for &(name, _) in want {
                seen.push(sample(port, name).await);
            }
        }
        if seen == wanted {
            return Ok(());
        }
        Err(format!("{what}: {want:?} on {ports:?}, seen {seen:?}"))
    })
    .await
}

/// The queue gauges on /metrics follow the lanes, on the producer's port
/// and the handler's: tasks waiting with no handler, then pending while
/// clamd is frozen, then gone once scanned; the dead-letter count too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_gauges_on_metrics_follow_the_lanes() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let producer_metrics = support::free_port();
    let (_producer, port) = producer(
        &redis,
        &clamd,
        &[
            ("METRICS_PORT", &producer_metrics.to_string()),
            ("PRIORITY_RULES", ".slow.test=low"),
        ],
    );
    // Two downloads on the normal lane, one on the low lane.
    let mut scans = Vec::new();
    for (n, host) in [
        (1u64, "origin.test"),
        (2, "origin.test"),
        (3, "a.slow.test"),
    ] {
        scans.push(tokio::spawn(gauge_scan(port, n, host)));
    }
    let normal = [
        ("virus_scanner_queue_length{lane=\"normal\"}", 2),
        ("virus_scanner_queue_length{lane=\"low\"}", 1),
    ];
    let waiting = [
        ("virus_scanner_queue_waiting{lane=\"normal\"}", 2),
        ("virus_scanner_queue_waiting{lane=\"low\"}", 1),
        ("virus_scanner_queue_pending{lane=\"normal\"}", 0),
    ];
    wait_samples(
        &[producer_metrics],
        &[&normal[..], &waiting[..]].concat(),
        "no handler",
    )
    .await;
    // A handler takes them and scans them.
    let (handler, handler_metrics) = handler_with_metrics(&redis, &clamd);
    for scan in scans {
        let answer = scan.await.unwrap();
        assert!(answer.is_clean(), "{answer:?}");
    }
    let drained = [
        ("virus_scanner_queue_length{lane=\"normal\"}", 0),
        ("virus_scanner_queue_length{lane=\"low\"}", 0),
        ("virus_scanner_queue_pending{lane=\"normal\"}", 0),
        ("virus_scanner_queue_pending{lane=\"low\"}", 0),
        ("virus_scanner_queue_up", 1),
        ("virus_scanner_dead_letters", 0),
    ];
    wait_samples(&[producer_metrics, handler_metrics], &drained, "scanned").await;
    handler
        .wait_log("clamd answers: taking tasks", 1, Duration::from_secs(5))
        .await;

    // clamd freezes: it accepts connections and answers nothing, and the
    // handler takes three more: pending, on both ports.
    clamd.pause();
    let scans: Vec<_> = [
        (4u64, "origin.test"),
        (5, "origin.test"),
        (6, "a.slow.test"),
    ]
    .into_iter()
    .map(|(n, host)| tokio::spawn(gauge_scan(port, n, host)))
    .collect();
    let pending = [
        ("virus_scanner_queue_waiting{lane=\"normal\"}", 0),
        ("virus_scanner_queue_waiting{lane=\"low\"}", 0),
        ("virus_scanner_queue_pending{lane=\"normal\"}", 2),
        ("virus_scanner_queue_pending{lane=\"low\"}", 1),
    ];
    wait_samples(
        &[producer_metrics, handler_metrics],
        &[&normal[..], &pending[..]].concat(),
        "clamd frozen",
    )
    .await;
    clamd.resume();
    for scan in scans {
        let answer = scan.await.unwrap();
        assert!(answer.is_clean(), "{answer:?}");
    }
    wait_samples(&[producer_metrics, handler_metrics], &drained, "scanned").await;
}

/// A clean download of `host` for the gauge test, its body unique to `n`.
async fn gauge_scan(port: u16, n: u64, host: &'static str) -> IcapAnswer {
    let url = format!("http://{host}/gauge-{n}");
    icap_respmod(port, &url, &body(2000, 100 + n, false), "")
        .await
        .unwrap()
}

/// Queues a task written by hand, as a producer writes it, with `provider`
/// and the entry's extra `fields`, and returns the handler's result.
async fn by_hand(
    conn: &mut redis::aio::MultiplexedConnection,
    id: &str,
    declared: u64,
    provider: serde_json::Value,
    fields: &[(&str, &[u8])],
) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let task = serde_json::json!({
        "v": 1,
        "id": id,
        "priority": "normal",
        "enqueued_at_ms": now,
        "direction": "response",
        "url": format!("http://origin.test/{id}"),
        "content_length": declared,
        "provider": provider,
        "deadline_ms": now + 60_000,
        "reply_to": "vs:reply:by-hand",
    });
    let mut cmd = redis::cmd("XADD");
    cmd.arg("vs:tasks:normal")
        .arg("*")
        .arg("task")
        .arg(task.to_string());
    for (name, value) in fields {
        cmd.arg(*name).arg(*value);
    }
    let _: String = cmd.query_async(conn).await.unwrap();
    let (_, result): (String, String) = redis::cmd("BLPOP")
        .arg("vs:reply:by-hand")
        .arg(20)
        .query_async(conn)
        .await
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(&result).unwrap();
    assert_eq!(result["id"], id, "{result}");
    result
}

/// Tasks written straight into a lane, as a producer writes them but with
/// the body missing, of another length than declared, or its end marker
/// unreadable: the handler answers each with an error (which fails
/// closed), never with a verdict on bytes that are not the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_body_is_not_whole_fails_closed() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let handler = handler(&redis, &clamd, &[]);
    handler
        .wait_log("handler started", 1, Duration::from_secs(20))
        .await;
    let mut conn = redis.conn().await;
    let infected = eicar();
    // The start of EICAR alone is clean to clamd.
    let start = &infected[..20];
    let inline = serde_json::json!({"kind": "inline"});
    let cases: [(&str, u64, Option<&[u8]>, &str); 4] = [
        ("whole", 68, Some(&infected), "infected"),
        ("empty", 0, Some(b""), "clean"),
        ("missing", 68, None, "error"),
        ("cut-short", 68, Some(start), "error"),
    ];
    for (id, declared, body, want) in cases {
        let fields: Vec<(&str, &[u8])> = body.map(|b| ("body", b)).into_iter().collect();
        let result = by_hand(&mut conn, id, declared, inline.clone(), &fields).await;
        assert_eq!(result["verdict"]["result"], want, "{id}: {result}");
    }
    // The stream provider: chunks, then an end entry giving the length.
    for (id, end, want) in [
        ("stream-whole", "20", "clean"),
        ("stream-short", "68", "error"),
        ("stream-unreadable-end", "twenty", "error"),
    ] {
        let key = format!("vs:body:{id}");
        for (name, value) in [("d", start), ("end", end.as_bytes())] {
            let _: String = redis::cmd("XADD")
                .arg(&key)
                .arg("*")
                .arg(name)
                .arg(value)
                .query_async(&mut conn)
                .await
                .unwrap();
        }
        let _: () = redis::cmd("EXPIRE")
            .arg(&key)
            .arg(600)
            .query_async(&mut conn)
            .await
            .unwrap();
        let stream = serde_json::json!({"kind": "stream", "key": key});
        let result = by_hand(&mut conn, id, 20, stream, &[]).await;
        assert_eq!(result["verdict"]["result"], want, "{id}: {result}");
    }
    redis.assert_keys_expire().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_scan_keeps_its_claim() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (_producer, port) = producer(&redis, &clamd, &[("INLINE_MAX", "16K")]);
    let settings = [("CLAIM_IDLE", "1s"), ("HANDLER_CONCURRENCY", "1")];
    let handlers = [
        handler(&redis, &clamd, &settings),
        handler(&redis, &clamd, &settings),
    ];
    for h in &handlers {
        h.wait_log("handler started", 1, Duration::from_secs(20))
            .await;
    }
    // The body stalls for 4 s, four times CLAIM_IDLE, while a handler
    // scans it: that handler renews its claim, so the other one, idle and
    // looking for stale tasks, never takes it over.
    let answer = paused_scan(port, 3, 100_000, true, Duration::from_secs(4)).await;
    assert_verdict(&answer, true, "a scan that outlasts CLAIM_IDLE");
    for h in &handlers {
        let log = h.log();
        assert!(
            !log.contains("took over a task left pending"),
            "a live scan was taken over:\n{log}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_high_lane_does_not_starve_the_low_lane() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (_producer, port) = producer(&redis, &clamd, &[("PRIORITY_HEADER", "true")]);
    // Queue 21 high and 7 low tasks while no handler runs.
    let mut scans = Vec::new();
    for n in 0..28u64 {
        let lane = if n % 4 == 3 { "low" } else { "high" };
        scans.push(tokio::spawn(async move {
            let url = format!("http://origin.test/{lane}-{n}");
            icap_respmod(
                port,
                &url,
                &body(2000, 900 + n, false),
                &format!("X-Priority: {lane}\r\n"),
            )
            .await
            .unwrap()
        }));
    }
    let mut conn = redis.conn().await;
    for _ in 0..100 {
        let high: u64 = redis::cmd("XLEN")
            .arg("vs:tasks:high")
            .query_async(&mut conn)
            .await
            .unwrap();
        let low: u64 = redis::cmd("XLEN")
            .arg("vs:tasks:low")
            .query_async(&mut conn)
            .await
            .unwrap();
        if (high, low) == (21, 7) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // One worker takes them one by one.
    let handler = handler(&redis, &clamd, &[("HANDLER_CONCURRENCY", "1")]);
    for scan in scans {
        assert!(scan.await.unwrap().is_clean());
    }
    handler
        .wait_log("scanned", 28, Duration::from_secs(10))
        .await;
    let order: Vec<bool> = handler
        .log()
        .lines()
        .filter(|l| l.contains("scanned"))
        .map(|l| l.contains("lane=\"low\""))
        .collect();
    // Four high tasks at most before each low one, while both lanes hold
    // work.
    let first_low = order.iter().position(|low| *low).unwrap();
    assert!(
        first_low <= 4,
        "the first low task came {first_low}th: {order:?}"
    );
    let lows_in_first_14 = order[..14].iter().filter(|low| **low).count();
    assert!(lows_in_first_14 >= 2, "{order:?}");
}

/// A redis-server that speaks only TLS and wants a password, with a CA of
/// the test's own making.
struct TlsRedis {
    child: std::process::Child,
    port: u16,
    ca: String,
    _dir: TempDir,
}

impl TlsRedis {
    fn start() -> TlsRedis {
        let dir = TempDir::new("redis-tls");
        let d = dir.path().display().to_string();
        let openssl = |args: &str| {
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("cd {d} && openssl {args}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "openssl {args}");
        };
        openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=vs-test-ca");
        openssl("req -newkey rsa:2048 -nodes -keyout redis.key -out redis.csr -subj /CN=127.0.0.1");
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
        )
        .unwrap();
        openssl("x509 -req -in redis.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out redis.crt -days 2 -extfile san.ext");
        let port = support::free_port();
        let child = std::process::Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--bind",
                "127.0.0.1",
                "--tls-port",
                &port.to_string(),
            ])
            .args([
                "--tls-cert-file",
                &format!("{d}/redis.crt"),
                "--tls-key-file",
                &format!("{d}/redis.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &format!("{d}/ca.crt"),
                "--tls-auth-clients",
                "no",
            ])
            .args([
                "--requirepass",
                "s3cret",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                &d,
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        support::wait_port(port, Duration::from_secs(20));
        TlsRedis {
            child,
            port,
            ca: format!("{d}/ca.crt"),
            _dir: dir,
        }
    }
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_with_a_password() {
    let redis = TlsRedis::start();
    let clamd = ClamdProcess::start();
    let url = format!("rediss://:s3cret@127.0.0.1:{}", redis.port);
    let env = |extra: Vec<(&'static str, String)>| {
        let mut env = vec![
            ("REDIS_URL", url.clone()),
            // rustls reads the CA certificates from here instead of the
            // system's store.
            ("SSL_CERT_FILE", redis.ca.clone()),
            ("CLAMD_URL", clamd.tcp_url()),
        ];
        env.extend(extra);
        env
    };
    let port = support::free_port();
    let producer = Service::start(PRODUCER, &env(vec![("ICAP_PORT", port.to_string())]));
    producer.wait_port(port, Duration::from_secs(20));
    let handler = Service::start(HANDLER, &env(vec![]));
    handler
        .wait_log("handler started", 1, Duration::from_secs(20))
        .await;
    assert_verdict(
        &scan(port, 1, 5000, false).await,
        false,
        "clean over rediss",
    );
    assert_verdict(&scan(port, 2, 5000, true).await, true, "EICAR over rediss");
    for log in [producer.log(), handler.log()] {
        assert!(!log.contains("s3cret"), "the password was logged:\n{log}");
    }
}

/// A handler whose clamd does not answer (a pod scaled up before its clamd
/// has loaded, a clamd that died) takes no task: every scan goes to the
/// handler whose clamd answers and gets its verdict. With no such handler,
/// the failure mode applies at the deadline, explicitly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_whose_clamd_is_down_takes_no_tasks() {
    let redis = RedisProcess::start();
    let clamd = ClamdProcess::start();
    let (hasty, hasty_port) = producer(&redis, &clamd, &[("SCAN_DEADLINE", "3s")]);
    let (producer, port) = producer(&redis, &clamd, &[]);
    let nowhere = format!("tcp://127.0.0.1:{}", support::free_port());
    let idle = handler(&redis, &clamd, &[("CLAMD_URL", &nowhere)]);
    idle.wait_log("handler started", 1, Duration::from_secs(20))
        .await;

    let started = std::time::Instant::now();
    let late = scan(hasty_port, 1, 2_000, true).await;
    assert!(late.is_unavailable(), "{late:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "{late:?}");
    hasty
        .wait_log("verdict=\"error\"", 1, Duration::from_secs(5))
        .await;

    let working = handler(&redis, &clamd, &[]);
    working
        .wait_log("clamd answers: taking tasks", 1, Duration::from_secs(20))
        .await;
    let mut seed = 100;
    let cases: Vec<(usize, bool)> = (0..24).map(|i| (3_000 + i, i % 3 == 0)).collect();
    scan_each(port, &mut seed, &cases, "with one handler's clamd down").await;
    assert!(
        !idle.log().contains("scanned id="),
        "the handler without clamd took a task:\n{}",
        idle.log()
    );
    let log = producer.log();
    assert!(!log.contains("verdict=\"error\""), "{log}");
    // The handler without clamd said so once, at start, and no more.
    let log = idle.log();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("clamd"))
        .collect();
    assert_eq!(warnings.len(), 1, "{log}");
    assert!(warnings[0].contains("clamd does not answer"), "{log}");
    assert!(working.log().contains("clamd version"));
}

/// clamd stops under a working handler: the task it could not scan goes
/// back to its lane, unanswered, and is scanned once clamd is back, within
/// the task's deadline; the user waits instead of getting the "scanner
/// unavailable" page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scan_waits_for_a_clamd_that_restarts() {
    let redis = RedisProcess::start();
    let mut clamd = ClamdProcess::start();
    let (_producer, port) = producer(&redis, &clamd, &[]);
    let (handler, metrics) = handler_with_metrics(&redis, &clamd);
    let mut seed = 0;
    scan_each(port, &mut seed, &[(1_000, false)], "before clamd stops").await;

    clamd.stop();
    // Inline bodies, and larger ones streamed through Redis in chunks,
    // which the next handler reads again from the start.
    let cases = [
        (11, 5_000, true),
        (12, 5_000, false),
        (13, 600_000, true),
        (14, 600_000, false),
    ];
    let waiting: Vec<_> = cases
        .iter()
        .map(|&(n, size, infected)| tokio::spawn(scan(port, n, size, infected)))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        waiting.iter().all(|w| !w.is_finished()),
        "answered while clamd was down"
    );
    handler
        .wait_log("task handed back", 1, Duration::from_secs(5))
        .await;
    handler
        .wait_log("taking no tasks", 1, Duration::from_secs(5))
        .await;
    assert!(sample(metrics, "virus_scanner_tasks_handed_back_total").await >= 1);

    clamd.restart();
    for (w, (_, size, infected)) in waiting.into_iter().zip(cases) {
        let answer = tokio::time::timeout(Duration::from_secs(30), w)
            .await
            .unwrap()
            .unwrap();
        assert_verdict(
            &answer,
            infected,
            &format!("{size} bytes, scanned after clamd came back"),
        );
    }
    handler
        .wait_log("clamd answers again", 1, Duration::from_secs(5))
        .await;
    let log = handler.log();
    assert!(!log.contains("verdict=\"error\""), "{log}");
}
