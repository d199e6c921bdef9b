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

#[test]
fn readme_lists_every_queue_setting() {
    let readme = read("README.md");
    for setting in [
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
    ] {
        assert!(
            readme.contains(&format!("`{setting}`")),
            "README does not list {setting}"
        );
    }
}
