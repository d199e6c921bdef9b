//! Every configuration in `squid/` is one Squid accepts: `squid -k parse`
//! on each, with its placeholders filled in. (Each also runs in a test of
//! its own: forward, icaps, bump, and intercept in tests/intercept.rs.)

mod support;

use support::{make_certs, project_dir, TempDir};

#[test]
fn squid_parses_every_configuration() {
    let dir = TempDir::new("squid-parse");
    make_certs(dir.path(), &["server"]);
    let bump = support::bump_ca();
    let bump = bump.path();
    let d = dir.path().display().to_string();
    for name in ["forward.conf", "icaps.conf", "bump.conf", "intercept.conf"] {
        let text = std::fs::read_to_string(project_dir().join("squid").join(name)).unwrap();
        let filled = text
            .replace("@HTTP_PORT@", &support::free_port().to_string())
            .replace("@INTERCEPT_HTTP_PORT@", &support::free_port().to_string())
            .replace("@INTERCEPT_HTTPS_PORT@", &support::free_port().to_string())
            .replace("@ICAP_PORT@", "1344")
            .replace("@DIR@", &d)
            .replace("@TLS_CA@", &format!("{d}/ca.crt"))
            .replace("@ORIGIN_CA@", &format!("{d}/ca.crt"))
            .replace("@BUMP_DIR@", &bump.display().to_string());
        let left = filled
            .split('@')
            .skip(1)
            .step_by(2)
            .find(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        assert_eq!(left, None, "{name}: a placeholder is left");
        let conf = dir.path().join(name);
        std::fs::write(&conf, filled).unwrap();
        let out = std::process::Command::new("squid")
            .arg("-k")
            .arg("parse")
            .arg("-f")
            .arg(&conf)
            .output()
            .expect("squid (squid-openssl) is installed");
        let log = String::from_utf8_lossy(&out.stderr);
        let problems: Vec<&str> = log
            .lines()
            .filter(|l| {
                ["ERROR", "FATAL", "WARNING", "unrecognized"]
                    .iter()
                    .any(|w| l.contains(w))
            })
            .filter(|l| !l.contains("log name now starts with a module name"))
            .collect();
        assert!(
            out.status.success() && problems.is_empty(),
            "{name}:\n{log}"
        );
    }
}
