//! The deployment examples name streams, groups and settings the code must
//! really use: read them and compare.

use virus_scanner::model::Priority;
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
