//! The deployment examples name streams, groups and settings the code must
//! really use: read them and compare.

mod support;

use std::collections::BTreeMap;

use support::ClamdProcess;
use virus_scanner::config::parse_size;
use virus_scanner::model::{Priority, Verdict};
use virus_scanner::queue::{Keys, GROUP};

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path)).unwrap()
}

#[test]
fn keda_scaledobject_matches_the_queue() {
    let yaml = read("docs/examples/keda/scaledobject.yaml");
    let keys = Keys::new("vs");
    for lane in Priority::ALL {
        let line = format!("stream: {}", keys.lane(lane));
        assert!(yaml.contains(&line), "{line:?} missing");
    }
    let groups: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("consumerGroup: "))
        .collect();
    assert_eq!(groups.len(), 3);
    assert!(groups.iter().all(|g| *g == GROUP), "{groups:?}");
    assert!(yaml.contains("type: redis-streams"));
}

/// Fails unless the README's settings tables name each of `settings`.
fn readme_lists(settings: &[&str]) {
    let readme = read("README.md");
    for setting in settings {
        assert!(
            readme.contains(&format!("`{setting}`")),
            "README does not list {setting}"
        );
    }
}

#[test]
fn readme_settings_tables_name_every_setting_of_every_command() {
    let readme = read("README.md");
    let mut missing = Vec::new();
    for command in ["all", "producer", "handler"] {
        for setting in virus_scanner::cli::settings(command) {
            if !readme.contains(&format!("| `{setting}` |")) {
                missing.push(format!("{command} {setting}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "not in the README's settings tables: {missing:?}"
    );
}

#[test]
fn readme_lists_every_queue_setting() {
    readme_lists(&[
        "REDIS_HOST",
        "REDIS_PORT",
        "REDIS_URL",
        "REDIS_PREFIX",
        "REDIS_TIMEOUT",
        "INLINE_MAX",
        "STREAM_CHUNK",
        "SCAN_MOUNT",
        "DISK_MIN",
        "ORPHAN_AGE",
        "SCAN_DEADLINE",
        "BODY_TTL",
        "HANDLER_CONCURRENCY",
        "CLAIM_IDLE",
        "MAX_DELIVERIES",
        "DEAD_LETTER_MAX",
        "RESULT_TTL",
        "PRIORITY_RULES",
        "DEFAULT_PRIORITY",
        "PRIORITY_HEADER",
    ]);
}

#[test]
fn envoy_examples_match_the_ext_proc_server() {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        extproc: virus_scanner::config::ExtProcConfig,
        #[command(flatten)]
        scan: virus_scanner::config::ScanConfig,
    }
    let d = Defaults::try_parse_from(["x"]).unwrap();
    let port = d.extproc.producer_port;
    let size = |s: &str| virus_scanner::config::parse_size(s).unwrap();

    let envoy = read("docs/examples/envoy/envoy.yaml");
    assert!(
        envoy.contains(&format!("port_value: {port}")),
        "envoy.yaml: the gRPC port"
    );
    assert!(envoy.contains("envoy.filters.http.ext_proc"));
    assert!(
        envoy.contains("http2_protocol_options"),
        "ext_proc needs HTTP/2"
    );
    assert!(envoy.contains("failure_mode_allow: false"));
    assert!(
        envoy.contains("allow_mode_override: true"),
        "trusted hosts skip bodies"
    );
    // Buffer limits at least the scan limit, and below the gRPC message limit.
    let limits: Vec<u64> = envoy
        .lines()
        .filter_map(|l| l.trim().strip_prefix("per_connection_buffer_limit_bytes: "))
        .map(|v| v.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(limits.len(), 2, "listener and upstream cluster");
    for limit in limits {
        assert!(
            limit >= d.scan.max_scan_size,
            "buffer limit under MAX_SCAN_SIZE"
        );
        assert!(
            limit <= d.extproc.grpc_max_message_size,
            "buffer limit over GRPC_MAX_MESSAGE_SIZE"
        );
    }
    // Envoy grants the server's requests for time up to max_message_timeout.
    let max = envoy
        .lines()
        .find_map(|l| l.trim().strip_prefix("max_message_timeout: "))
        .expect("max_message_timeout");
    let max = virus_scanner::config::parse_duration(max).unwrap();
    assert!(max >= d.extproc.extproc_override_timeout);

    let gateway = read("docs/examples/envoy/gateway.yaml");
    for kind in [
        "kind: EnvoyExtensionPolicy",
        "kind: ClientTrafficPolicy",
        "kind: BackendTrafficPolicy",
    ] {
        assert!(gateway.contains(kind), "{kind} missing");
    }
    assert!(gateway.contains(&format!("port: {port}")));
    assert!(gateway.contains("failOpen: false"));
    assert!(gateway.contains("appProtocol: kubernetes.io/h2c"));
    for limit in gateway
        .lines()
        .filter_map(|l| l.trim().strip_prefix("bufferLimit: "))
    {
        let bytes = size(limit.trim_end_matches('i'));
        assert!(bytes >= d.scan.max_scan_size && bytes <= d.extproc.grpc_max_message_size);
    }
}

#[test]
fn readme_lists_every_ext_proc_setting() {
    readme_lists(&[
        "PRODUCER_PORT",
        "GRPC_MAX_MESSAGE_SIZE",
        "EXTPROC_BODY_MODE",
        "EXTPROC_STREAMED",
        "EXTPROC_OVERRIDE_AFTER",
        "EXTPROC_OVERRIDE_TIMEOUT",
        "GRPC_TLS_CERT",
        "GRPC_TLS_KEY",
        "GRPC_TLS_CLIENT_CA",
    ]);
}

/// A YAML file as JSON, read by PyYAML (in target/py, made by
/// scripts/test.sh).
fn yaml(path: &str) -> serde_json::Value {
    let python = std::env::var("VS_PYTHON").unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/py/bin/python")
            .display()
            .to_string()
    });
    let out = std::process::Command::new(python)
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .output()
        .expect("target/py (scripts/test.sh makes it) or VS_PYTHON");
    assert!(
        out.status.success(),
        "{path}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The default of each port setting, from the code.
fn default_ports() -> std::collections::HashMap<&'static str, u16> {
    use clap::Parser;
    #[derive(Parser)]
    struct Defaults {
        #[command(flatten)]
        icap: virus_scanner::config::IcapConfig,
        #[command(flatten)]
        extproc: virus_scanner::config::ExtProcConfig,
        #[command(flatten)]
        metrics: virus_scanner::config::MetricsConfig,
    }
    let d = Defaults::try_parse_from(["x"]).unwrap();
    std::collections::HashMap::from([
        ("ICAP_PORT", d.icap.icap_port),
        ("ICAPS_PORT", d.icap.icaps_port),
        ("PRODUCER_PORT", d.extproc.producer_port),
        ("METRICS_PORT", d.metrics.metrics_port),
    ])
}

fn exists(path: &str) -> bool {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(path)
        .exists()
}

#[test]
fn dockerfile_builds_each_flavor_as_the_code_names_it() {
    let text = read("Dockerfile");
    let ports = default_ports();
    assert!(text.contains("ARG FLAVOR=all") && text.contains("FROM ${FLAVOR}"));
    for (flavor, entry) in [
        ("producer", "[\"/usr/local/bin/virus-scanner-producer\"]"),
        ("consumer", "[\"/usr/local/bin/virus-scanner-handler\"]"),
        ("all", "[\"/usr/local/bin/virus-scanner\", \"all\"]"),
    ] {
        let stage = text
            .split("\nFROM ")
            .find(|s| s.starts_with(&format!("runtime AS {flavor}\n")))
            .unwrap_or_else(|| panic!("no {flavor} stage"));
        assert!(
            stage.contains(&format!("ENTRYPOINT {entry}")),
            "{flavor}: {stage}"
        );
        if flavor != "consumer" {
            for port in ["ICAP_PORT", "ICAPS_PORT", "PRODUCER_PORT"] {
                assert!(
                    stage.contains(&ports[port].to_string()),
                    "{flavor} exposes {port}"
                );
            }
        }
    }
    assert!(text.contains(&format!("EXPOSE {}", ports["METRICS_PORT"])));
    // The binaries it copies are the package's.
    for bin in [
        "virus-scanner",
        "virus-scanner-producer",
        "virus-scanner-handler",
    ] {
        assert!(text.contains(&format!("--bin {bin}")), "{bin}");
        assert!(exists(&format!("src/bin/{bin}.rs")), "{bin}");
    }
    assert!(text.contains("USER 10001"), "not root");
    for file in [&text, &read("docker/squid.Dockerfile")] {
        for line in file
            .lines()
            .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
        {
            let parts: Vec<&str> = line.split_whitespace().collect();
            for src in &parts[1..parts.len() - 1] {
                assert!(exists(src), "COPY {src}: no such file");
            }
        }
    }
}

#[test]
fn compose_file_matches_the_code() {
    let compose = yaml("docker-compose.yml");
    let services = compose["services"].as_object().unwrap();
    for name in ["redis", "clamav", "producer", "handler", "squid"] {
        assert!(services.contains_key(name), "service {name}");
    }
    let ports = default_ports();
    for (service, command, flavor) in [
        ("producer", "producer", "producer"),
        ("handler", "handler", "consumer"),
    ] {
        let s = &services[service];
        assert_eq!(s["build"]["args"]["FLAVOR"], flavor);
        let known = virus_scanner::cli::settings(command);
        let env = s["environment"].as_object().unwrap();
        for key in env.keys() {
            assert!(
                known.contains(key),
                "{service}: {key} is not a setting of {command}"
            );
        }
        assert_eq!(env["REDIS_HOST"], "redis");
        assert_eq!(env["METRICS_PORT"], ports["METRICS_PORT"].to_string());
        let check = s["healthcheck"]["test"].as_array().unwrap();
        assert!(
            check.iter().any(|a| a == "probe"),
            "{service}: health check"
        );
        assert!(
            check.iter().any(|a| a.as_str()
                == Some(&format!(
                    "http://127.0.0.1:{}/readyz",
                    ports["METRICS_PORT"]
                ))),
            "{service}: probes /readyz on METRICS_PORT"
        );
    }
    let handler_env = &services["handler"]["environment"];
    assert_eq!(handler_env["CLAMD_URL"], "tcp://clamav:3310");
    let producer_env = &services["producer"]["environment"];
    for (key, port) in [("ICAP_PORT", "1344"), ("PRODUCER_PORT", "50051")] {
        assert_eq!(producer_env[key], port);
        let published = services["producer"]["ports"].as_array().unwrap();
        assert!(published
            .iter()
            .any(|p| p.as_str().unwrap().ends_with(&format!(":{port}"))));
    }
    assert_eq!(services["squid"]["environment"]["ICAP_HOST"], "producer");
    assert_eq!(
        services["squid"]["environment"]["ICAP_PORT"],
        producer_env["ICAP_PORT"]
    );
    assert!(exists(
        services["squid"]["build"]["dockerfile"].as_str().unwrap()
    ));
}

#[test]
fn compose_config_accepts_the_file() {
    let bin = std::env::var("VS_DOCKER_COMPOSE").unwrap_or_else(|_| {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("target/py/bin/docker-compose")
            .display()
            .to_string()
    });
    let out = std::process::Command::new(&bin)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["-f", "docker-compose.yml", "config", "-q"])
        .output()
        .unwrap_or_else(|e| panic!("{bin} (scripts/test.sh installs it): {e}"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn helm_chart_matches_the_code() {
    let values = yaml("charts/virus-scanner/values.yaml");
    assert!(values["keda"]["enabled"].as_bool().unwrap());
    let ports = default_ports();
    for (file, command) in [("producer.yaml", "producer"), ("handler.yaml", "handler")] {
        let text = read(&format!("charts/virus-scanner/templates/{file}"));
        let known = virus_scanner::cli::settings(command);
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- name: "))
            .filter(|n| n.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
            .collect();
        assert!(names.len() >= 4, "{file}: env");
        for name in names {
            assert!(
                known.contains(&name.to_owned()),
                "{file}: {name} is not a setting of {command}"
            );
        }
        for path in ["path: /healthz", "path: /readyz"] {
            assert!(text.contains(path), "{file}: {path}");
        }
        assert!(text.contains(&format!("containerPort: {}", ports["METRICS_PORT"])));
        assert!(text.contains("runAsUser: 10001"));
    }
    let producer = read("charts/virus-scanner/templates/producer.yaml");
    for port in ["ICAP_PORT", "PRODUCER_PORT"] {
        assert!(
            producer.contains(&format!("containerPort: {}", ports[port])),
            "{port}"
        );
    }
    // producer.blockPageConfigMap: the operator's block page, mounted from a
    // ConfigMap at the path BLOCK_PAGE names; empty (built-in) by default.
    assert_eq!(values["producer"]["blockPageConfigMap"], "");
    assert!(producer.contains("value: /etc/virus-scanner/block-page/block-page.html"));
    assert!(producer.contains("mountPath: /etc/virus-scanner/block-page\n"));
    assert!(producer.contains("name: {{ .Values.producer.blockPageConfigMap }}"));
    let handler = read("charts/virus-scanner/templates/handler.yaml");
    assert!(
        handler.contains("value: tcp://127.0.0.1:3310") && handler.contains("containerPort: 3310")
    );
    // handler.clamd.socket: the unix socket instead, its directory mounted
    // in both containers; empty (TCP) by default.
    assert_eq!(values["handler"]["clamd"]["socket"], "");
    assert!(handler.contains("value: unix://{{ .Values.handler.clamd.socket }}"));
    assert_eq!(
        handler
            .matches("mountPath: {{ dir .Values.handler.clamd.socket }}")
            .count(),
        2
    );
    let socket: virus_scanner::scan::clamd::ClamdAddr = "unix:///run/clamav/clamd.sock"
        .parse()
        .expect("the chart's unix:// form is a CLAMD_URL the code takes");
    assert!(matches!(
        socket,
        virus_scanner::scan::clamd::ClamdAddr::Unix(_)
    ));
    let keda = read("charts/virus-scanner/templates/scaledobject.yaml");
    let keys = Keys::new("vs");
    for lane in Priority::ALL {
        assert!(keda.contains(&format!("stream: {}", keys.lane(lane))));
    }
    assert_eq!(keda.matches(&format!("consumerGroup: {GROUP}")).count(), 3);
}

/// The clamd.conf settings of a deployment file, by name: the official
/// ClamAV image writes each `CLAMD_CONF_<Name>` variable into clamd.conf.
fn compose_clamd_conf(compose: &serde_json::Value) -> BTreeMap<String, String> {
    compose["services"]["clamav"]["environment"]
        .as_object()
        .expect("the clamav service has an environment")
        .iter()
        .filter_map(|(k, v)| {
            let name = k.strip_prefix("CLAMD_CONF_")?;
            Some((name.to_owned(), v.as_str().unwrap().to_owned()))
        })
        .collect()
}

/// clamd.conf settings that make clamd report what it leaves unscanned,
/// and scan every body the scanner sends it.
fn assert_reports_what_it_skips(file: &str, conf: &BTreeMap<String, String>, bodies: &[&str]) {
    let size = |name: &str| {
        let value = conf
            .get(name)
            .unwrap_or_else(|| panic!("{file}: clamd's {name} is not set"));
        parse_size(value).unwrap()
    };
    assert_eq!(
        conf.get("AlertExceedsMax").map(String::as_str),
        Some("yes"),
        "{file}: AlertExceedsMax"
    );
    // clamd 1.4 flags a file past MaxFileSize in an archive only when
    // MaxScanSize is no larger.
    assert!(
        size("MaxScanSize") <= size("MaxFileSize"),
        "{file}: {conf:?}"
    );
    for body in bodies {
        assert!(
            parse_size(body).unwrap() <= size("StreamMaxLength"),
            "{file}: MAX_SCAN_SIZE {body} is over clamd's StreamMaxLength"
        );
    }
}

/// A zip holding one deflated file of `len` zero bytes with EICAR after
/// them, made by Python's zipfile.
fn zip_with_eicar_after(dir: &support::TempDir, len: u64) -> Vec<u8> {
    let path = dir.path().join("big.zip");
    let eicar = support::write_file(dir, "eicar", &support::eicar());
    let script = "import sys, zipfile\n\
                  z = zipfile.ZipFile(sys.argv[1], 'w', zipfile.ZIP_DEFLATED)\n\
                  with z.open('big.bin', 'w') as f:\n\
                  \x20   n = int(sys.argv[2])\n\
                  \x20   while n > 0:\n\
                  \x20       f.write(bytes(min(n, 1 << 20)))\n\
                  \x20       n -= 1 << 20\n\
                  \x20   f.write(open(sys.argv[3], 'rb').read())\n\
                  z.close()\n";
    let out = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .arg(len.to_string())
        .arg(&eicar)
        .output()
        .expect("python3");
    assert!(out.status.success(), "{}", support::output_text(&out));
    std::fs::read(path).unwrap()
}

/// The clamd of the compose file and of the Helm chart reports a file it
/// does not scan, which the scanner then treats as too large; with the
/// image's own settings, a small zip holding a file past MaxFileSize is
/// answered OK, as if clean.
#[tokio::test]
async fn deployed_clamd_reports_the_files_it_does_not_scan() {
    let compose = yaml("docker-compose.yml");
    let conf = compose_clamd_conf(&compose);
    let services = &compose["services"];
    let bodies: Vec<&str> = ["producer", "handler"]
        .iter()
        .map(|s| {
            services[s]["environment"]["MAX_SCAN_SIZE"]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_reports_what_it_skips("docker-compose.yml", &conf, &bodies);

    let values = yaml("charts/virus-scanner/values.yaml");
    let chart: BTreeMap<String, String> = values["handler"]["clamd"]["config"]
        .as_object()
        .expect("handler.clamd.config")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    let chart_body = values["producer"]["maxScanSize"].as_str().unwrap();
    assert_reports_what_it_skips("values.yaml", &chart, &[chart_body]);
    let handler = read("charts/virus-scanner/templates/handler.yaml");
    assert!(handler.contains("range $name, $value := .Values.handler.clamd.config"));
    assert!(handler.contains("- name: CLAMD_CONF_{{ $name }}"));
    assert!(
        handler.contains("- name: MAX_SCAN_SIZE\n              value: {{ .Values.producer.maxScanSize | quote }}"),
        "the handlers scan up to the producers' MAX_SCAN_SIZE"
    );

    // A real clamd with the compose file's settings.
    let extra: String = conf
        .iter()
        .filter(|(k, _)| !["StreamMaxLength", "MaxFileSize", "MaxScanSize"].contains(&k.as_str()))
        .map(|(k, v)| format!("{k} {v}\n"))
        .collect();
    let deployed = ClamdProcess::start_with(
        &conf["StreamMaxLength"],
        (&conf["MaxFileSize"], &conf["MaxScanSize"]),
        &extra,
    );
    let dir = support::TempDir::new("deployed-clamd");
    let max_file = parse_size(&conf["MaxFileSize"]).unwrap();
    let past = zip_with_eicar_after(&dir, max_file + (1 << 20));
    assert!(past.len() < 1 << 20, "{} bytes", past.len());
    let verdict = deployed.verdict(&past).await;
    assert!(
        matches!(verdict, Verdict::TooLarge { .. }),
        "a file past MaxFileSize in a zip: {verdict:?}"
    );
    // Within the limits, it scans into the zip.
    assert!(20 << 20 < max_file);
    assert!(matches!(
        deployed
            .verdict(&support::fixture("eicar-after-20m.zip"))
            .await,
        Verdict::Infected { .. }
    ));
    // The image's own settings (clamd 1.x defaults) pass the same zip as
    // clean: what the settings above are for.
    let image = ClamdProcess::start_with("100M", ("100M", "400M"), "");
    assert_eq!(image.verdict(&past).await, Verdict::Clean);
}
