//! Real programs for the tests, each started on a free loopback port and
//! stopped when dropped: clamd (Debian's clamav-daemon, with the shipped
//! EICAR signature), redis-server, Squid (squid-openssl, with the
//! configurations in `squid/`), c-icap-client, an HTTP origin, and this
//! project's server (in-process, or its binaries as child processes).

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener as StdListener, TcpStream as StdStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use virus_scanner::config::{IcapConfig, ScanConfig};
use virus_scanner::frontend::icap::{run, IcapService};
use virus_scanner::scan::clamd::Clamd;
use virus_scanner::scan::Scanner;

/// The EICAR test string, assembled here so that the source itself is not
/// flagged by scanners.
pub fn eicar() -> Vec<u8> {
    let mut v = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$".to_vec();
    v.extend_from_slice(b"EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*");
    v
}

/// The name clamd reports for it.
pub const EICAR_NAME: &str = "Eicar-Test-Signature.UNOFFICIAL";

/// `parts` as one brotli stream (RFC 7932) of stored meta-blocks, one a
/// part: brotli without an encoder. A string cut between two parts is not
/// in the encoded bytes, so only a scanner that decodes finds it.
pub fn brotli_stored(parts: &[&[u8]]) -> Vec<u8> {
    // WBITS 16 (one 0 bit), then per part: ISLAST 0, MNIBBLES 4 (00),
    // MLEN-1 in 16 bits, ISUNCOMPRESSED 1, padding to the byte; the data.
    // At the end an empty last meta-block: ISLAST 1, ISLASTEMPTY 1.
    let mut out = Vec::new();
    let mut first = true;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        assert!(part.len() <= 65536);
        let shift = if first { 1 } else { 0 };
        let bits: u32 = ((part.len() as u32 - 1) << (3 + shift)) | (1 << (19 + shift));
        out.extend_from_slice(&bits.to_le_bytes()[..3]);
        out.extend_from_slice(part);
        first = false;
    }
    out.push(if first { 0b110 } else { 0b11 });
    out
}

/// `data` as one gzip member (RFC 1952; its CRC left 0, which nothing
/// here checks).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut out = vec![0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 3];
    out.extend_from_slice(&miniz_oxide::deflate::compress_to_vec(data, 6));
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(&(data.len() as u32).to_le_bytes());
    out
}

/// Random cases for the tests that make up their input (xorshift64*):
/// the same on every run, so that a failing case can be sent again.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

pub fn project_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(project_dir().join("tests/fixtures").join(name)).unwrap()
}

/// A port nothing listens on, for a server a test starts. It is taken below
/// the kernel's ephemeral range (`ip_local_port_range`): a port the kernel
/// hands out for `127.0.0.1:0` is also where it picks the source ports of
/// outgoing connections, so between this check and the server's bind a
/// client connection of another test could take it (seen: "Address already
/// in use" for a producer's gRPC port). Ports go round from a point that
/// depends on the process, so that no two tests of one run get the same.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOWEST: u32 = 10_000;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768)
        .max(LOWEST + 1_000);
    let span = ephemeral_start - LOWEST;
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOWEST + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        if StdListener::bind(("127.0.0.1", port as u16)).is_ok() {
            return port as u16;
        }
    }
    panic!("no free port between {LOWEST} and {ephemeral_start}");
}

/// Waits until something accepts connections on `port`.
pub fn wait_port(port: u16, within: Duration) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if StdStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("nothing listens on port {port} after {within:?}");
}

/// A directory removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "vs-{prefix}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        // Squid drops to its own user; it must be able to write here.
        let _ = Command::new("chmod").arg("777").arg(&path).status();
        TempDir(path)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Waits up to `within` for `child` to exit; true if it did.
fn wait_exit(child: &mut Child, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn kill(child: &mut Child) {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    if !wait_exit(child, Duration::from_secs(10)) {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A real clamd with the shipped EICAR signature, on a free TCP port and a
/// unix socket.
pub struct ClamdProcess {
    child: Option<Child>,
    dir: TempDir,
    pub port: u16,
    /// clamd's `StreamMaxLength`: the most an INSTREAM scan may send.
    stream_max: String,
    /// clamd's `MaxFileSize` and `MaxScanSize`.
    max_file: String,
    max_scan: String,
    /// More lines of clamd.conf.
    extra: String,
}

impl ClamdProcess {
    pub fn start() -> ClamdProcess {
        ClamdProcess::start_with_stream_max("300M")
    }

    /// A clamd that refuses INSTREAM bodies over `stream_max` (as clamd's
    /// own default of 25M does) and still scans files up to 300M.
    pub fn start_with_stream_max(stream_max: &str) -> ClamdProcess {
        ClamdProcess::start_with(stream_max, ("300M", "400M"), "")
    }

    /// A clamd that scans no file over `max_file` (in an archive too) and
    /// no more than `max_scan` of a body, with `extra` lines of
    /// configuration.
    pub fn start_with_limits(max_file: &str, max_scan: &str, extra: &str) -> ClamdProcess {
        ClamdProcess::start_with("300M", (max_file, max_scan), extra)
    }

    /// A clamd with all of these: `StreamMaxLength`, `MaxFileSize`,
    /// `MaxScanSize` and `extra` lines of configuration.
    pub fn start_with(
        stream_max: &str,
        (max_file, max_scan): (&str, &str),
        extra: &str,
    ) -> ClamdProcess {
        let dir = TempDir::new("clamd");
        let port = free_port();
        let mut clamd = ClamdProcess {
            child: None,
            dir,
            port,
            stream_max: stream_max.to_owned(),
            max_file: max_file.to_owned(),
            max_scan: max_scan.to_owned(),
            extra: extra.to_owned(),
        };
        clamd.launch();
        clamd
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("clamd.sock")
    }

    pub fn tcp_url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    pub fn unix_url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// clamd's own verdict on `body`, sent by INSTREAM with nothing done
    /// to it.
    pub async fn verdict(&self, body: &[u8]) -> virus_scanner::model::Verdict {
        let options = virus_scanner::scan::clamd::ClamdOptions {
            connect_timeout: Duration::from_secs(5),
            scan_timeout: Duration::from_secs(60),
            max_concurrency: 1,
            fildes_max: 0,
            sessions: false,
        };
        Clamd::new(self.tcp_url().parse().unwrap(), options)
            .instream_all(body)
            .await
            .unwrap()
    }

    fn launch(&mut self) {
        let conf = self.dir.path().join("clamd.conf");
        std::fs::write(
            &conf,
            format!(
                "Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\nLocalSocket {sock}\n\
                 DatabaseDirectory {db}\nLogFile {dir}/clamd.log\nLogTime yes\n\
                 StreamMaxLength {stream_max}\nMaxFileSize {max_file}\nMaxScanSize {max_scan}\nMaxThreads 8\n\
                 {extra}",
                port = self.port,
                stream_max = self.stream_max,
                max_file = self.max_file,
                max_scan = self.max_scan,
                extra = self.extra,
                sock = self.socket().display(),
                db = project_dir().join("clamav/db").display(),
                dir = self.dir.path().display(),
            ),
        )
        .unwrap();
        let child = Command::new("clamd")
            .arg("-c")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("clamd (Debian package clamav-daemon) is installed");
        self.child = Some(child);
        let end = Instant::now() + Duration::from_secs(60);
        while Instant::now() < end {
            if ping(self.port) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "clamd did not answer PING: {}",
            std::fs::read_to_string(self.dir.path().join("clamd.log")).unwrap_or_default()
        );
    }

    /// Stops clamd (SIGTERM, then SIGKILL).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Freezes clamd (SIGSTOP): connections stay open, nothing is answered.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Thaws a paused clamd (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("clamd running").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} clamd");
    }

    /// Starts clamd again on the same port and socket.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for ClamdProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = StdStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"zPING\0").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"PONG"))
}

/// The settings of a test server, as the command line would give them.
#[derive(Parser)]
struct Settings {
    #[command(flatten)]
    icap: IcapConfig,
    #[command(flatten)]
    scan: ScanConfig,
}

/// This project's ICAP server, in-process on a free port.
pub struct TestServer {
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Starts the server with `args` as command-line settings (for example
    /// `["--clamd-url", url]`).
    pub async fn start(args: &[&str]) -> TestServer {
        let mut argv = vec!["virus-scanner", "--listen-addr", "127.0.0.1"];
        argv.extend_from_slice(args);
        let settings = Settings::try_parse_from(&argv).unwrap();
        settings.icap.validate().unwrap();
        settings.scan.validate().unwrap();
        let clamd = Clamd::new(
            settings.scan.clamd_url.clone(),
            settings.scan.clamd_options(),
        );
        let scanner = Scanner::new(clamd, settings.scan.max_scan_size);
        let _ = scanner.refresh_version().await;
        let service = Arc::new(IcapService::new(
            settings.icap,
            virus_scanner::pipeline::Pipeline::Local(scanner),
            settings.scan.policy(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel();
        let handle = tokio::spawn(async move {
            run(listener, service, async {
                let _ = rx.await;
            })
            .await
            .unwrap();
        });
        TestServer {
            addr,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting, lets transactions finish, and waits for the server.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// A test CA in `dir` (`ca.crt`, `ca.key`) and, for each name, a
/// certificate it signed (`<name>.crt`, `<name>.key`) valid for localhost
/// and 127.0.0.1, made with openssl.
/// A TLS handshake with openssl s_client on `port`, with `args` (a client
/// certificate, `-alpn h2`): what s_client reported, and the serial of the
/// certificate the server presented.
pub fn tls_handshake(port: u16, args: &str) -> (String, String) {
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "echo | openssl s_client -connect 127.0.0.1:{port} {args} 2>/dev/null | tee /dev/stderr | openssl x509 -noout -serial"
        ))
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stderr).into_owned(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// Makes `dir/server.crt` anew, sends `server` SIGHUP and waits until it
/// logs `reloaded`; returns the new certificate's serial.
pub async fn renew_server_cert(dir: &Path, server: &Service, reloaded: &str) -> String {
    let old = cert_serial(&dir.join("server.crt"));
    make_certs(dir, &["server"]);
    let new = cert_serial(&dir.join("server.crt"));
    assert_ne!(old, new, "a new certificate");
    server.hangup();
    server.wait_log(reloaded, 1, Duration::from_secs(10)).await;
    new
}

/// A PEM certificate's serial, as `openssl x509 -serial` prints it.
pub fn cert_serial(path: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(path)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A CA in `dir` (`ca.crt`, made once), and for each of `names` a key and
/// a certificate it signed for localhost and 127.0.0.1.
pub fn make_certs(dir: &Path, names: &[&str]) {
    make_certs_for(dir, names, &[]);
}

/// The same, the certificates also naming `sans` (`IP:10.0.0.1`,
/// `DNS:origin.test`).
pub fn make_certs_for(dir: &Path, names: &[&str], sans: &[&str]) {
    let d = dir.display().to_string();
    let openssl = |args: &str| {
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("cd {d} && openssl {args} 2>/dev/null"))
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args}");
    };
    let more: String = sans.iter().map(|san| format!(",{san}")).collect();
    std::fs::write(
        dir.join("san.ext"),
        format!("subjectAltName=DNS:localhost,IP:127.0.0.1{more}\n"),
    )
    .unwrap();
    if !dir.join("ca.crt").exists() {
        openssl("req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 2 -subj /CN=vs-test-ca");
    }
    for name in names {
        openssl(&format!(
            "req -newkey rsa:2048 -nodes -keyout {name}.key -out {name}.csr -subj /CN={name}"
        ));
        openssl(&format!(
            "x509 -req -in {name}.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out {name}.crt -days 2 -extfile san.ext"
        ));
    }
}

/// A bump CA and certificate cache in a new directory, made by the
/// project's `squid/make-bump-ca.sh` (valid for two days).
pub fn bump_ca() -> TempDir {
    let bump = TempDir::new("bump-ca");
    let status = Command::new(project_dir().join("squid/make-bump-ca.sh"))
        .arg(bump.path())
        .arg("2")
        .status()
        .unwrap();
    assert!(status.success(), "squid/make-bump-ca.sh");
    // Squid started as root runs its certificate helper as `proxy`, which
    // must own the cache, as squid/README.md tells operators.
    if is_root() {
        let status = Command::new("chown")
            .args(["-R", "proxy:"])
            .arg(bump.path())
            .status()
            .unwrap();
        assert!(
            status.success(),
            "chown -R proxy: {}",
            bump.path().display()
        );
    }
    bump
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    static ROOT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ROOT.get_or_init(|| {
        let id = Command::new("id").arg("-u").output().expect("id");
        String::from_utf8_lossy(&id.stdout).trim() == "0"
    })
}

/// `size` bytes of a pattern no scanner flags.
pub fn patterned(size: u32) -> Bytes {
    (0..size).map(|i| (i * 31 % 251) as u8).collect()
}

/// An origin's files for the proxy tests: `/clean.bin` (300 KB, long
/// enough to be trickled back while it is scanned) and `/eicar.pdf`
/// (EICAR after a harmless start); with the clean file.
pub fn downloads() -> (Bytes, HashMap<String, Bytes>) {
    let clean = patterned(300_000);
    let mut infected = b"%PDF-1.4 harmless start\n".to_vec();
    infected.extend_from_slice(&eicar());
    let files = HashMap::from([
        ("/clean.bin".to_owned(), clean.clone()),
        ("/eicar.pdf".to_owned(), Bytes::from(infected)),
    ]);
    (clean, files)
}

/// Runs `cmd`, a curl command line so far, on `url` (POSTing `upload` when
/// given), with its files in `scratch`: the status and the body.
pub async fn curl(
    mut cmd: tokio::process::Command,
    url: &str,
    upload: Option<&[u8]>,
    scratch: &Path,
) -> (u16, Vec<u8>) {
    let n = free_port();
    let out = scratch.join(format!("body-{n}"));
    cmd.args(["-sS", "-w", "%{http_code}", "--max-time", "120", "-o"])
        .arg(&out)
        .arg(url);
    if let Some(data) = upload {
        let file = scratch.join(format!("upload-{n}"));
        std::fs::write(&file, data).unwrap();
        cmd.arg("--data-binary").arg(format!("@{}", file.display()));
        cmd.args(["-H", "Content-Type: application/octet-stream"]);
    }
    let output = cmd.output().await.expect("curl is installed");
    let code = String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    if code == 0 {
        // No answer at all: say why in the failing test's output.
        eprintln!("curl {url}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let body = std::fs::read(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    (code, body)
}

/// Runs Debian's c-icap-client against `port` with `args`.
pub async fn c_icap_client(port: u16, args: &[&str]) -> Output {
    let port = port.to_string();
    let mut cmd = tokio::process::Command::new("c-icap-client");
    cmd.args(["-i", "127.0.0.1", "-p", &port]).args(args);
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("c-icap-client finished within 60 s")
        .expect("c-icap-client (Debian package c-icap) is installed")
}

/// Runs c-icap-client and returns what it printed, both streams.
pub async fn c_icap_text(port: u16, args: &[&str]) -> String {
    output_text(&c_icap_client(port, args).await)
}

/// The ISTag of the server on `port`, from c-icap-client's OPTIONS, with
/// its quotes.
pub async fn istag(port: u16) -> String {
    let t = c_icap_text(port, &["-s", "avscan"]).await;
    t.lines()
        .find_map(|l| l.trim().strip_prefix("ISTag: "))
        .unwrap_or_else(|| panic!("no ISTag in {t}"))
        .to_owned()
}

/// Asks `check` every 100 ms until it answers `Ok`, and returns what it
/// gave; fails the test with its last `Err` once `within` has passed.
pub async fn eventually<T, F, Fut>(within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let end = Instant::now() + within;
    loop {
        match check().await {
            Ok(done) => return done,
            Err(why) if Instant::now() >= end => panic!("after {within:?}: {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until the ISTag of the server on `port` is known (not
/// `VS-unknown`) and returns it. `within` is far shorter than
/// VERSION_REFRESH's default minute: an unknown version is asked for again
/// every few seconds.
pub async fn known_istag(port: u16, within: Duration) -> String {
    eventually(within, || async {
        let tag = istag(port).await;
        if tag == "\"VS-unknown\"" {
            return Err(format!("ISTag still {tag}"));
        }
        Ok(tag)
    })
    .await
}

/// What a program printed, standard output then standard error.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Writes `data` to a file in `dir` and returns its path as text.
pub fn write_file(dir: &TempDir, name: &str, data: &[u8]) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, data).unwrap();
    path.display().to_string()
}

/// An HTTP/1.1 origin serving fixed bodies by path (those ending in `.br`
/// or `.deflate` with that Content-Encoding), and accepting uploads.
pub struct Origin {
    pub port: u16,
    ip: std::net::IpAddr,
    handle: tokio::task::JoinHandle<()>,
}

const LOOPBACK: std::net::IpAddr = std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

impl Origin {
    pub async fn start(files: HashMap<String, Bytes>) -> Origin {
        Origin::start_on(LOOPBACK, files).await
    }

    /// The same, listening on `ip` (a port the kernel picks).
    pub async fn start_on(ip: std::net::IpAddr, files: HashMap<String, Bytes>) -> Origin {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let files = Arc::new(files);
        let handle = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let files = files.clone();
                tokio::spawn(async move {
                    let _ = serve_http(&mut stream, &files).await;
                });
            }
        });
        Origin { port, ip, handle }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}:{}{path}", self.ip, self.port)
    }

    /// The same over HTTPS, with `cert` and `key` (PEM files; the
    /// certificate names localhost).
    pub async fn start_tls(files: HashMap<String, Bytes>, cert: &Path, key: &Path) -> Origin {
        Origin::start_tls_on(LOOPBACK, files, cert, key).await
    }

    /// The same, listening on `ip`.
    pub async fn start_tls_on(
        ip: std::net::IpAddr,
        files: HashMap<String, Bytes>,
        cert: &Path,
        key: &Path,
    ) -> Origin {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let files = Arc::new(files);
        let handle = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (files, acceptor) = (files.clone(), acceptor.clone());
                tokio::spawn(async move {
                    if let Ok(mut tls) = acceptor.accept(stream).await {
                        let _ = serve_http(&mut tls, &files).await;
                    }
                });
            }
        });
        Origin { port, ip, handle }
    }

    /// The HTTPS URL of `path` on an origin from [`Origin::start_tls`]
    /// (named localhost), or from [`Origin::start_tls_on`] (by address).
    pub fn https_url(&self, path: &str) -> String {
        if self.ip == LOOPBACK {
            format!("https://localhost:{}{path}", self.port)
        } else {
            format!("https://{}:{}{path}", self.ip, self.port)
        }
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// What the test origin answers an upload with: its length and a hash of
/// it, so that a test can tell it arrived whole and unchanged.
pub fn stored(upload: &[u8]) -> String {
    let hash = upload.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    format!("stored {} bytes, fnv {hash:016x}\n", upload.len())
}

/// A chunked HTTP body, decoded (chunk extensions and trailers ignored).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(eol) = body.windows(2).position(|w| w == b"\r\n") else {
            return out;
        };
        let size = std::str::from_utf8(&body[..eol])
            .ok()
            .and_then(|l| usize::from_str_radix(l.split(';').next()?.trim(), 16).ok())
            .unwrap_or(0);
        body = &body[eol + 2..];
        if size == 0 || body.len() < size {
            return out;
        }
        out.extend_from_slice(&body[..size]);
        body = body.get(size + 2..).unwrap_or_default();
    }
}

async fn serve_http<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    stream: &mut S,
    files: &HashMap<String, Bytes>,
) -> std::io::Result<()> {
    let mut buf = Vec::new();
    loop {
        let mut chunk = [0u8; 16 * 1024];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        let httparse::Status::Complete(head_len) = req.parse(&buf).unwrap() else {
            continue;
        };
        let length: usize = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-length"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
            .unwrap_or(0);
        // `Range: bytes=FIRST-LAST` is honoured, as most servers do.
        let range: Option<(usize, usize)> = req
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("range"))
            .and_then(|h| std::str::from_utf8(h.value).ok()?.strip_prefix("bytes="))
            .and_then(|r| {
                let (first, last) = r.split_once('-')?;
                Some((first.trim().parse().ok()?, last.trim().parse().ok()?))
            });
        let chunked = req.headers.iter().any(|h| {
            h.name.eq_ignore_ascii_case("transfer-encoding")
                && h.value.eq_ignore_ascii_case(b"chunked")
        });
        let method = req.method.unwrap().to_owned();
        let path = req.path.unwrap().to_owned();
        // The body is read and dropped: by its length, or (an upload of
        // unknown length) up to its last chunk.
        let whole = |buf: &[u8]| {
            let body = &buf[head_len..];
            if chunked {
                body == b"0\r\n\r\n" || body.ends_with(b"\r\n0\r\n\r\n")
            } else {
                body.len() >= length
            }
        };
        while !whole(&buf) {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let mut content_range = String::new();
        let (status, body) = match (method.as_str(), files.get(&path)) {
            ("POST" | "PUT", _) => {
                let body = &buf[head_len..];
                let upload = if chunked {
                    dechunk(body)
                } else {
                    body.to_vec()
                };
                ("201 Created", Bytes::from(stored(&upload)))
            }
            (_, Some(body)) => match range {
                Some((first, last)) if first <= last && last < body.len() => {
                    content_range =
                        format!("Content-Range: bytes {first}-{last}/{}\r\n", body.len());
                    ("206 Partial Content", body.slice(first..=last))
                }
                _ => ("200 OK", body.clone()),
            },
            _ => ("404 Not Found", Bytes::from_static(b"no such file\n")),
        };
        // A path ending in .br, .deflate or .zstd is served with that
        // Content-Encoding (its body already encoded), as a server would.
        let encoding = match path.rsplit_once('.') {
            Some((_, "br")) => "Content-Encoding: br\r\n",
            Some((_, "deflate")) => "Content-Encoding: deflate\r\n",
            Some((_, "zstd")) => "Content-Encoding: zstd\r\n",
            _ => "",
        };
        // A path ending in .chunked is sent chunked, its length unknown
        // to the proxy until the end, as a streaming origin sends it.
        let chunked_out = path.ends_with(".chunked");
        let length = if chunked_out {
            "Transfer-Encoding: chunked\r\n".to_owned()
        } else {
            format!("Content-Length: {}\r\n", body.len())
        };
        let head = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/octet-stream\r\n{length}{encoding}{content_range}Connection: close\r\n\r\n",
        );
        stream.write_all(head.as_bytes()).await?;
        if method != "HEAD" && chunked_out {
            for piece in body.chunks(16 * 1024) {
                stream
                    .write_all(format!("{:x}\r\n", piece.len()).as_bytes())
                    .await?;
                stream.write_all(piece).await?;
                stream.write_all(b"\r\n").await?;
            }
            stream.write_all(b"0\r\n\r\n").await?;
        } else if method != "HEAD" {
            stream.write_all(&body).await?;
        }
        stream.shutdown().await?;
        return Ok(());
    }
}

/// Squid 5 (squid-openssl) with one of the configurations in `squid/`.
pub struct Squid {
    child: Option<Child>,
    pub dir: TempDir,
    pub port: u16,
    conf: PathBuf,
}

impl Squid {
    /// Starts Squid with `squid/<name>`, pointed at the ICAP server on `icap_port`.
    pub fn start(name: &str, icap_port: u16) -> Squid {
        Squid::start_with(name, icap_port, &[])
    }

    /// The same, with more `@NAME@` placeholders filled in.
    pub fn start_with(name: &str, icap_port: u16, more: &[(&str, String)]) -> Squid {
        let dir = TempDir::new("squid");
        let port = free_port();
        let template = std::fs::read_to_string(project_dir().join("squid").join(name)).unwrap();
        let mut conf_text = template
            .replace("@HTTP_PORT@", &port.to_string())
            .replace("@ICAP_PORT@", &icap_port.to_string())
            .replace("@DIR@", &dir.path().display().to_string());
        for (placeholder, value) in more {
            conf_text = conf_text.replace(placeholder, value);
        }
        let conf = dir.path().join("squid.conf");
        std::fs::write(&conf, conf_text).unwrap();
        let child = Command::new("squid")
            .arg("-N")
            .arg("-f")
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("squid (Debian package squid-openssl) is installed");
        wait_port(port, Duration::from_secs(30));
        Squid {
            child: Some(child),
            dir,
            port,
            conf,
        }
    }

    pub fn cache_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("cache.log")).unwrap_or_default()
    }

    /// Fails the test when Squid logged an ICAP error: a protocol error, a
    /// failed transaction, or the service marked down or suspended.
    pub fn assert_no_icap_errors(&self) {
        let log = self.cache_log();
        let errors: Vec<&str> = log
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("icap")
                    && ["error", "fail", "down", "suspend"]
                        .iter()
                        .any(|w| l.contains(w))
            })
            .collect();
        assert!(errors.is_empty(), "ICAP errors in cache.log:\n{log}");
    }

    /// Fails the test when Squid's certificate helper (`sslcrtd_program`)
    /// could not use its cache. Squid still bumps then, minting each
    /// certificate itself, which would hide a cache that a deployment made
    /// the same way could not use either.
    pub fn assert_cert_cache_works(&self) {
        let log = self.cache_log();
        assert!(
            !log.contains("security_file_certgen helper database"),
            "the certificate helper failed:\n{log}"
        );
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Fetches `url` through Squid with curl; returns the status and body.
    pub async fn fetch(&self, url: &str, upload: Option<&[u8]>) -> (u16, Vec<u8>) {
        self.fetch_with(url, upload, &[]).await
    }

    /// Fetches `url` through Squid and fails unless it arrives with status
    /// 200 and byte for byte as `want`; `context` (and `log`, on a bad
    /// status) go into the failure.
    pub async fn assert_arrives_whole(&self, url: &str, want: &[u8], context: &str, log: &str) {
        let (status, body) = self.fetch(url, None).await;
        assert_eq!(status, 200, "{context}\n{log}");
        assert!(
            body == want,
            "{context}: {} bytes arrived, {} expected",
            body.len(),
            want.len()
        );
    }

    /// The same, with more curl arguments (`--cacert` for HTTPS).
    pub async fn fetch_with(
        &self,
        url: &str,
        upload: Option<&[u8]>,
        curl: &[&str],
    ) -> (u16, Vec<u8>) {
        let mut cmd = tokio::process::Command::new("curl");
        cmd.arg("-x")
            .arg(format!("http://127.0.0.1:{}", self.port))
            .args(curl);
        self::curl(cmd, url, upload, self.dir.path()).await
    }
}

impl Drop for Squid {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("squid")
                .arg("-f")
                .arg(&self.conf)
                .args(["-k", "shutdown"])
                .status();
            if wait_exit(&mut child, Duration::from_secs(10)) {
                return;
            }
            kill(&mut child);
        }
    }
}

/// Sends raw bytes over a fresh connection and returns everything the
/// server answers until it closes (or `wait` passes).
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], wait: Duration) -> Vec<u8> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, s.read_to_end(&mut out)).await;
    out
}

/// A real redis-server on a free port.
pub struct RedisProcess {
    child: Option<Child>,
    dir: TempDir,
    durable: bool,
    pub port: u16,
}

impl RedisProcess {
    /// Keeping nothing on disk.
    pub fn start() -> RedisProcess {
        Self::start_with(false)
    }

    /// Writing every command to its append-only file before answering, so
    /// that a restart loses nothing it acknowledged.
    pub fn start_durable() -> RedisProcess {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> RedisProcess {
        let mut redis = RedisProcess {
            child: None,
            dir: TempDir::new("redis"),
            durable,
            port: free_port(),
        };
        redis.launch();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(if self.durable {
                ["--appendonly", "yes", "--appendfsync", "always"]
            } else {
                ["--appendonly", "no", "--appendfsync", "no"]
            })
            .args(["--save", ""])
            .arg("--dir")
            .arg(self.dir.path())
            .args(["--logfile", "redis.log", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (Debian package redis-server) is installed");
        self.child = Some(child);
        wait_port(self.port, Duration::from_secs(20));
    }

    /// Stops redis-server (SIGTERM: it finishes its append-only file).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }

    /// Starts it again on the same port, from the same files.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// A connection for the test's own checks.
    pub async fn conn(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }

    /// Every key of the project's must expire by itself, except the lanes
    /// and the dead-letter stream (permanent, and emptied or capped). Returns
    /// the keys seen.
    pub async fn assert_keys_expire(&self) -> Vec<String> {
        let mut conn = self.conn().await;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg("vs:*")
            .query_async(&mut conn)
            .await
            .unwrap();
        for key in &keys {
            let permanent = key.starts_with("vs:tasks:") || key == "vs:dead";
            let ttl: i64 = redis::cmd("TTL")
                .arg(key)
                .query_async(&mut conn)
                .await
                .unwrap();
            if permanent {
                let len: u64 = redis::cmd("XLEN")
                    .arg(key)
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                assert!(
                    key == "vs:dead" || len == 0,
                    "lane {key} still holds {len} entries"
                );
            } else {
                assert!(ttl > 0, "key {key} has no TTL ({ttl})");
            }
        }
        keys
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One of this project's binaries, as a child process with its log in a
/// file.
pub struct Service {
    child: Option<Child>,
    log: PathBuf,
    _dir: TempDir,
}

impl Service {
    /// Starts `bin` (a path from `env!("CARGO_BIN_EXE_...")`) with `env`.
    pub fn start(bin: &str, env: &[(&str, String)]) -> Service {
        Service::start_with(bin, &[], env)
    }

    /// Starts `bin` with `args` and `env`.
    pub fn start_with(bin: &str, args: &[&str], env: &[(&str, String)]) -> Service {
        let dir = TempDir::new("service");
        let log = dir.path().join("service.log");
        let mut cmd = Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("LISTEN_ADDR", "127.0.0.1")
            // The gRPC port on a port the kernel picks, and no metrics port,
            // unless the test names them: never 50051 or 8080, which another
            // test or program may hold, and no more ports picked ahead of
            // time than the test needs (each may be taken meanwhile).
            .env("PRODUCER_PORT", "0")
            .env("METRICS_PORT", "0")
            .env("LOG_LEVEL", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Service {
            child: Some(child),
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends it SIGHUP: read the block page and certificates again.
    pub fn hangup(&self) {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-HUP", &pid]).status().unwrap();
        assert!(sent.success(), "kill -HUP {pid}");
    }

    /// What it has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until its log contains `text` at least `times` times.
    pub async fn wait_log(&self, text: &str, times: usize, within: Duration) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if self.log().matches(text).count() >= times {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("log never showed {text:?} {times} times:\n{}", self.log());
    }

    /// Waits until something accepts connections on `port`; if nothing does,
    /// fails with what the service logged (a port taken, a bad setting).
    pub fn wait_port(&self, port: u16, within: Duration) {
        let end = Instant::now() + within;
        while Instant::now() < end {
            if StdStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "nothing listens on port {port} after {within:?}; the service logged:\n{}",
            self.log()
        );
    }

    /// SIGKILL: no chance to clean up.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill(&mut child);
        }
    }
}

/// What an ICAP server answered to a RESPMOD.
#[derive(Debug)]
pub struct IcapAnswer {
    pub icap_status: u16,
    /// The HTTP status inside a 200 (a block page's 403 or 503).
    pub http_status: Option<u16>,
    /// The ICAP and HTTP heads, as text.
    pub head: String,
}

impl IcapAnswer {
    pub fn is_clean(&self) -> bool {
        self.icap_status == 204
    }

    pub fn is_infected(&self) -> bool {
        self.http_status == Some(403) && self.head.contains(EICAR_NAME)
    }

    pub fn is_unavailable(&self) -> bool {
        self.http_status == Some(503)
    }

    /// Let through unscanned, marked as undecodable (failure mode open).
    pub fn is_undecodable_let_through(&self) -> bool {
        self.is_clean()
            && self
                .head
                .contains("X-Virus-Scanner-Warning: not scanned; reason=undecodable")
    }

    /// Blocked because the body's Content-Encoding did not decode.
    pub fn is_undecodable(&self) -> bool {
        self.http_status == Some(403)
            && self
                .head
                .to_ascii_lowercase()
                .contains("x-virus-scanner-result: undecodable")
    }
}

/// The start of a RESPMOD with `Allow: 204` and no preview, for a body of
/// `len` bytes (declared by Content-Length) from `url`; `extra` are more HTTP
/// request header lines.
pub fn respmod_head(port: u16, url: &str, len: usize, extra: &str) -> Vec<u8> {
    respmod_head_with(port, url, len, extra, "")
}

/// The same, with `res_extra` header lines in the HTTP response.
pub fn respmod_head_with(
    port: u16,
    url: &str,
    len: usize,
    extra: &str,
    res_extra: &str,
) -> Vec<u8> {
    let host = url.split('/').nth(2).unwrap_or("origin.test");
    let req = format!("GET {url} HTTP/1.1\r\nHost: {host}\r\n{extra}\r\n");
    let res = format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {len}\r\n{res_extra}\r\n");
    format!(
        "RESPMOD icap://127.0.0.1:{port}/avscan ICAP/1.0\r\nHost: 127.0.0.1\r\nAllow: 204\r\n\
         Encapsulated: req-hdr=0, res-hdr={}, res-body={}\r\n\r\n{req}{res}",
        req.len(),
        req.len() + res.len()
    )
    .into_bytes()
}

/// `data` as ICAP chunks of at most 64 KiB.
pub fn chunked(data: &[u8], last: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 4096 + 16);
    for piece in data.chunks(64 * 1024) {
        out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        out.extend_from_slice(piece);
        out.extend_from_slice(b"\r\n");
    }
    if last {
        out.extend_from_slice(b"0\r\n\r\n");
    }
    out
}

/// Sends `body` for scanning as a download from `url` and reads the whole
/// answer.
pub async fn icap_respmod(
    port: u16,
    url: &str,
    body: &[u8],
    extra: &str,
) -> Result<IcapAnswer, String> {
    icap_respmod_with(port, url, body, extra, "").await
}

/// The same, with `res_extra` header lines in the HTTP response.
pub async fn icap_respmod_with(
    port: u16,
    url: &str,
    body: &[u8],
    extra: &str,
    res_extra: &str,
) -> Result<IcapAnswer, String> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = respmod_head_with(port, url, body.len(), extra, res_extra);
    out.extend_from_slice(&chunked(body, true));
    let (mut rd, mut wr) = s.split();
    let write = async {
        // The server may answer (and close) before reading everything.
        let _ = wr.write_all(&out).await;
    };
    let (_, answer) = tokio::join!(write, read_icap_answer(&mut rd));
    answer
}

/// Reads one ICAP answer: head, and the encapsulated body if there is one.
pub async fn read_icap_answer<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
) -> Result<IcapAnswer, String> {
    let limits = icap::Limits::DEFAULT;
    let mut buf = bytes::BytesMut::new();
    let (res, used) = loop {
        if let Some(parsed) = icap::parse_response(&buf, &limits).map_err(|e| e.to_string())? {
            break parsed;
        }
        if rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("connection closed before an answer".into());
        }
    };
    let head = String::from_utf8_lossy(&buf[..used]).into_owned();
    let _ = buf.split_to(used);
    let sections = res.sections.as_ref();
    let http_status = sections
        .and_then(|s| s.response.as_ref())
        .map(|h| h.status.as_u16());
    if sections.is_some_and(icap::Sections::has_body) {
        let mut dec = icap::ChunkedDecoder::new(limits);
        loop {
            let step = dec.decode(&buf).map_err(|e| e.to_string())?;
            let end = matches!(step.event, Some(icap::Event::End(_)));
            let more = step.event.is_none();
            let _ = buf.split_to(step.consumed);
            if end {
                break;
            }
            if more && rd.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("connection closed inside the answer's body".into());
            }
        }
    }
    Ok(IcapAnswer {
        icap_status: res.status.0,
        http_status,
        head,
    })
}

/// `GET path` on the metrics port: the status and the body.
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}
