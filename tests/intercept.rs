//! The transparent proxy of `squid/intercept.conf`, for real. A client in
//! a network namespace of its own talks to an origin's address as if there
//! were no proxy; on the host, nftables redirects that traffic to Squid's
//! intercept ports (the NAT rule of squid/README.md); Squid bumps the HTTPS
//! and hands every request and response to the server over ICAP. Setting
//! up the network needs root: without it, the commands go through
//! `sudo -n`.

mod support;

use std::process::{Command, Output};

use support::{
    bump_ca, downloads, eicar, make_certs_for, ClamdProcess, Origin, Squid, TempDir, TestServer,
    EICAR_NAME,
};

/// The client's namespace, the two ends of its link, and the nftables
/// table: fixed names, so that a run that crashed is cleaned up by the next.
const NAMESPACE: &str = "vs-intercept";
const HOST_LINK: &str = "vsicpt-host";
const CLIENT_LINK: &str = "vsicpt-client";
const TABLE: &str = "vs_intercept";
const HOST_IP: &str = "10.213.77.1";
const CLIENT_IP: &str = "10.213.77.2";
/// The HTTPS origin's name: the client resolves it to the host's address
/// and sends it as the TLS SNI, which Squid peeks at.
const TLS_NAME: &str = "origin.test";

/// `program` as root: itself when this is root, else through `sudo -n`.
fn as_root(program: &str) -> (String, Vec<String>) {
    if support::is_root() {
        (program.to_owned(), Vec::new())
    } else {
        ("sudo".to_owned(), vec!["-n".to_owned(), program.to_owned()])
    }
}

fn run(program: &str, args: &[&str]) -> Output {
    let (program, first) = as_root(program);
    Command::new(&program)
        .args(first)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn must(program: &str, args: &[&str]) {
    let out = run(program, args);
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The client's network: a namespace linked to the host, and the host's
/// NAT rules for it. Removed when dropped.
struct ClientNet;

impl ClientNet {
    /// The namespace and its link to the host.
    fn up() -> ClientNet {
        ClientNet::remove();
        must("ip", &["netns", "add", NAMESPACE]);
        let net = ClientNet;
        must(
            "ip",
            &[
                "link",
                "add",
                HOST_LINK,
                "type",
                "veth",
                "peer",
                "name",
                CLIENT_LINK,
            ],
        );
        must("ip", &["link", "set", CLIENT_LINK, "netns", NAMESPACE]);
        must(
            "ip",
            &["addr", "add", &format!("{HOST_IP}/24"), "dev", HOST_LINK],
        );
        must("ip", &["link", "set", HOST_LINK, "up"]);
        let client_ip = format!("{CLIENT_IP}/24");
        for args in [
            &["addr", "add", client_ip.as_str(), "dev", CLIENT_LINK][..],
            &["link", "set", CLIENT_LINK, "up"],
            &["link", "set", "lo", "up"],
        ] {
            let mut all = vec!["-n", NAMESPACE];
            all.extend_from_slice(args);
            must("ip", &all);
        }
        net
    }

    /// Redirects what the client sends to each `(port, to)` to the host's
    /// port `to`, as squid/README.md's nftables rule does.
    fn redirect(&self, ports: &[(u16, u16)]) {
        let rules: String = ports
            .iter()
            .map(|(from, to)| {
                format!("    iifname \"{HOST_LINK}\" tcp dport {from} redirect to :{to}\n")
            })
            .collect();
        let ruleset = format!(
            "table ip {TABLE} {{\n  chain prerouting {{\n    type nat hook prerouting priority dstnat; policy accept;\n{rules}  }}\n}}\n"
        );
        let dir = TempDir::new("nft");
        let file = dir.path().join("rules.nft");
        std::fs::write(&file, ruleset).unwrap();
        must("nft", &["-f", &file.display().to_string()]);
    }

    fn remove() {
        let _ = run("nft", &["delete", "table", "ip", TABLE]);
        let _ = run("ip", &["link", "del", HOST_LINK]);
        let _ = run("ip", &["netns", "del", NAMESPACE]);
    }

    /// curl in the client's namespace, with no proxy: the status and the
    /// body.
    async fn fetch(&self, url: &str, upload: Option<&[u8]>, curl: &[&str]) -> (u16, Vec<u8>) {
        let (program, first) = as_root("ip");
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(first)
            .args(["netns", "exec", NAMESPACE, "curl", "--noproxy", "*"])
            .args(curl);
        let scratch = TempDir::new("client");
        support::curl(cmd, url, upload, scratch.path()).await
    }
}

impl Drop for ClientNet {
    fn drop(&mut self) {
        ClientNet::remove();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intercepted_http_and_https_are_scanned() {
    let clamd = ClamdProcess::start();
    let server = TestServer::start(&["--clamd-url", &clamd.tcp_url()]).await;

    let (clean, files) = downloads();

    let certs = TempDir::new("intercept-origin");
    make_certs_for(certs.path(), &["origin"], &[&format!("DNS:{TLS_NAME}")]);
    let bump = bump_ca();

    // The client's network first: the origins listen on the host's side
    // of it, and what the client sends to them goes to Squid instead.
    let net = ClientNet::up();
    let host_ip = HOST_IP.parse().unwrap();
    let plain = Origin::start_on(host_ip, files.clone()).await;
    let tls = Origin::start_tls_on(
        host_ip,
        files,
        &certs.path().join("origin.crt"),
        &certs.path().join("origin.key"),
    )
    .await;
    let (http_in, https_in) = (support::free_port(), support::free_port());
    net.redirect(&[(plain.port, http_in), (tls.port, https_in)]);

    let squid = Squid::start_with(
        "intercept.conf",
        server.port(),
        &[
            ("@INTERCEPT_HTTP_PORT@", http_in.to_string()),
            ("@INTERCEPT_HTTPS_PORT@", https_in.to_string()),
            ("@BUMP_DIR@", bump.path().display().to_string()),
            (
                "@ORIGIN_CA@",
                certs.path().join("ca.crt").display().to_string(),
            ),
        ],
    );
    support::wait_port(https_in, std::time::Duration::from_secs(30));
    let ca = bump.path().join("bump-ca.crt").display().to_string();
    let resolve = format!("{TLS_NAME}:{}:{HOST_IP}", tls.port);
    let curl = ["--cacert", ca.as_str(), "--resolve", resolve.as_str()];
    let https = |path: &str| format!("https://{TLS_NAME}:{}{path}", tls.port);

    for url in [plain.url("/clean.bin"), https("/clean.bin")] {
        let (code, body) = net.fetch(&url, None, &curl).await;
        assert_eq!(
            code,
            200,
            "{url}: {}\n{}",
            String::from_utf8_lossy(&body),
            squid.cache_log()
        );
        assert!(body == clean, "{url}: the clean file arrives byte for byte");
    }
    for url in [plain.url("/eicar.pdf"), https("/eicar.pdf")] {
        let (code, body) = net.fetch(&url, None, &curl).await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(code, 403, "{url}: {page} {}", squid.cache_log());
        assert!(page.contains(EICAR_NAME), "{url}: {page}");
        assert!(page.contains(&url), "{url}: the page names the URL: {page}");
    }
    for url in [plain.url("/upload"), https("/upload")] {
        let (code, body) = net.fetch(&url, Some(&eicar()), &curl).await;
        let page = String::from_utf8_lossy(&body);
        assert_eq!(code, 403, "{url} upload: {page}");
        assert!(page.contains(EICAR_NAME), "{url} upload: {page}");
    }
    // Squid saw the client's own address: the traffic was intercepted, not
    // sent to a proxy port. (Squid may write its log lines a little later.)
    support::eventually(std::time::Duration::from_secs(20), || async {
        let log = squid.access_log();
        if log.contains(CLIENT_IP) {
            return Ok(());
        }
        Err(format!("no {CLIENT_IP} in access.log:\n{log}"))
    })
    .await;
    squid.assert_cert_cache_works();
    squid.assert_no_icap_errors();
    drop(squid);
    drop(net);
}

/// The nftables ruleset of squid/README.md, as written there, is one nft
/// takes (checked, not applied): the NAT redirect that the test above runs,
/// and the refusal of HTTP/3, which would pass the proxy unscanned.
#[test]
fn the_nftables_rules_in_squid_readme_are_valid() {
    let readme = std::fs::read_to_string(support::project_dir().join("squid/README.md")).unwrap();
    let start = readme
        .find("table ip squid {")
        .expect("an nftables ruleset");
    let end = start + readme[start..].find("\n}\n").expect("its end") + 3;
    let ruleset = &readme[start..end];
    for rule in ["tcp dport 443 redirect", "udp dport 443 reject"] {
        assert!(ruleset.contains(rule), "{rule:?} missing:\n{ruleset}");
    }
    let dir = TempDir::new("nft-readme");
    let file = dir.path().join("rules.nft");
    std::fs::write(&file, ruleset).unwrap();
    must("nft", &["-c", "-f", &file.display().to_string()]);
}
