//! The queue between the producer (the frontends) and the handlers (the
//! scanning workers): Redis Streams, one per priority lane, each read by one
//! consumer group.
//!
//! What goes where (every name starts with the configured prefix, `vs` by
//! default):
//!
//! | key | type | lifetime |
//! |---|---|---|
//! | `vs:tasks:{high,normal,low}` | stream, group `vs-handlers` | permanent; entries are deleted once acknowledged |
//! | `vs:dead` | stream of tasks given up on | permanent, capped at `DEAD_LETTER_MAX` entries |
//! | `vs:body:{id}` | stream of one body's chunks (stream provider) | `BODY_TTL`, deleted after the scan |
//! | `vs:result:{id}` | one task's result (JSON) | `RESULT_TTL` |
//! | `vs:reply:{producer}` | list of results for one producer process | `RESULT_TTL`, refreshed |
//! | `vs:clamd-version` | clamd's version as a handler last saw it | 5 minutes, refreshed |
//!
//! The task schema is in [`task`]; the producer side in [`producer`]; the
//! handler side in `crate::worker`; bodies on the shared volume in [`disk`].

pub mod disk;
pub mod producer;
pub mod task;

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::model::Priority;

/// The consumer group every handler joins.
pub const GROUP: &str = "vs-handlers";

/// How long the clamd version a handler publishes stays valid.
pub const VERSION_TTL: Duration = Duration::from_secs(300);

/// Key names under one prefix.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`vs` by default).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    /// The stream of one lane.
    pub fn lane(&self, p: Priority) -> String {
        format!("{}:tasks:{}", self.prefix, p.as_str())
    }

    /// The dead-letter stream.
    pub fn dead(&self) -> String {
        format!("{}:dead", self.prefix)
    }

    /// One body's chunks.
    pub fn body(&self, id: &str) -> String {
        format!("{}:body:{id}", self.prefix)
    }

    /// One task's result.
    pub fn result(&self, id: &str) -> String {
        format!("{}:result:{id}", self.prefix)
    }

    /// The list a producer process pops its results from.
    pub fn reply(&self, producer: &str) -> String {
        format!("{}:reply:{producer}", self.prefix)
    }

    /// clamd's version, as published by the handlers.
    pub fn clamd_version(&self) -> String {
        format!("{}:clamd-version", self.prefix)
    }

    /// The pattern that matches every key of the project's.
    pub fn pattern(&self) -> String {
        format!("{}:*", self.prefix)
    }
}

/// Where Redis is and how to talk to it.
#[derive(Debug, Clone, clap::Args)]
pub struct RedisConfig {
    /// Redis host (used when REDIS_URL is not set).
    #[arg(long, env = "REDIS_HOST", default_value = "127.0.0.1")]
    pub redis_host: String,

    /// Redis port (used when REDIS_URL is not set).
    #[arg(long, env = "REDIS_PORT", default_value_t = 6379)]
    pub redis_port: u16,

    /// The whole address instead: redis://host:port, with a password and a
    /// database number if needed (redis://:password@host:port/db), or
    /// rediss:// for TLS (checked against the system's CA certificates).
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,

    /// Prefix of every key the project uses.
    #[arg(long, env = "REDIS_PREFIX", default_value = "vs")]
    pub redis_prefix: String,

    /// Timeout for connecting to Redis and for each command's answer.
    #[arg(long, env = "REDIS_TIMEOUT", default_value = "5s", value_parser = crate::config::parse_duration)]
    pub redis_timeout: Duration,
}

impl RedisConfig {
    /// The URL to connect to.
    pub fn url(&self) -> String {
        match &self.redis_url {
            Some(url) => url.clone(),
            None if self.redis_host.contains(':') => {
                format!("redis://[{}]:{}", self.redis_host, self.redis_port)
            }
            None => format!("redis://{}:{}", self.redis_host, self.redis_port),
        }
    }

    /// The URL with any password masked, for logs.
    pub fn display_url(&self) -> String {
        let url = self.url();
        match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}://***{}", &url[..scheme], &url[at..])
            }
            _ => url,
        }
    }

    /// The key names.
    pub fn keys(&self) -> Keys {
        Keys::new(&self.redis_prefix)
    }

    /// Checks what clap cannot.
    pub fn validate(&self) -> Result<(), String> {
        let url = self.url();
        if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
            return Err(format!(
                "REDIS_URL {:?} must start with redis:// or rediss://",
                self.display_url()
            ));
        }
        redis::Client::open(url.as_str())
            .map_err(|e| format!("REDIS_URL {:?}: {e}", self.display_url()))?;
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['*', '?', '[', ' ']) {
            return Err("REDIS_PREFIX must be non-empty, without spaces or glob characters".into());
        }
        Ok(())
    }

    /// A multiplexed connection that reconnects by itself (with backoff)
    /// whenever Redis goes away; commands fail meanwhile. `blocking` is the
    /// longest a blocking command sent on it waits, added to the answer
    /// timeout: a connection used for blocking commands must not be shared.
    pub fn connect(&self, blocking: Duration) -> Result<ConnectionManager, redis::RedisError> {
        if self.url().starts_with("rediss://") {
            // rustls needs a process-wide crypto provider; a second install
            // fails harmlessly.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
        let client = redis::Client::open(self.url().as_str())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.redis_timeout))
            .set_response_timeout(Some(self.redis_timeout + blocking))
            .set_min_delay(Duration::from_millis(50))
            .set_max_delay(Duration::from_secs(2))
            .set_number_of_retries(usize::MAX);
        ConnectionManager::new_lazy_with_config(client, config)
    }
}

/// Creates the lane streams and their consumer group where missing, so that
/// a task added before any handler started is still delivered (the group
/// starts at the beginning of the stream).
pub async fn ensure_groups(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<(), redis::RedisError> {
    for p in Priority::ALL {
        let created: Result<(), redis::RedisError> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(keys.lane(p))
            .arg(GROUP)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Queue depth of one lane.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LaneDepth {
    /// Entries in the stream (waiting or being scanned).
    pub length: u64,
    /// Entries delivered to a handler and not yet acknowledged.
    pub pending: u64,
    /// Entries not yet delivered to any handler (Redis 7's group lag).
    pub waiting: u64,
}

/// The depth of every lane and the dead-letter count: what KEDA scales on
/// and what monitoring shows.
pub async fn depths(
    conn: &mut ConnectionManager,
    keys: &Keys,
) -> Result<(Vec<(Priority, LaneDepth)>, u64), redis::RedisError> {
    let mut out = Vec::new();
    for p in Priority::ALL {
        let lane = keys.lane(p);
        let length: u64 = redis::cmd("XLEN").arg(&lane).query_async(conn).await?;
        let groups: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&lane)
            .query_async(conn)
            .await
            .unwrap_or_default();
        let mut depth = LaneDepth {
            length,
            ..LaneDepth::default()
        };
        for g in groups {
            let fields = map_of(&g);
            if fields.iter().any(|(k, v)| k == "name" && v == GROUP) {
                for (k, v) in fields {
                    match k.as_str() {
                        "pending" => depth.pending = v.parse().unwrap_or(0),
                        "lag" => depth.waiting = v.parse().unwrap_or(0),
                        _ => {}
                    }
                }
            }
        }
        out.push((p, depth));
    }
    let dead: u64 = redis::cmd("XLEN")
        .arg(keys.dead())
        .query_async(conn)
        .await?;
    Ok((out, dead))
}

/// A flat `[name, value, ...]` reply (or a RESP3 map) as text pairs.
fn map_of(v: &redis::Value) -> Vec<(String, String)> {
    use redis::Value;
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        Value::Int(i) => i.to_string(),
        Value::Nil => String::new(),
        other => format!("{other:?}"),
    };
    match v {
        Value::Array(items) => items
            .chunks(2)
            .filter(|c| c.len() == 2)
            .map(|c| (text(&c[0]), text(&c[1])))
            .collect(),
        Value::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        _ => Vec::new(),
    }
}

/// The wait between retries while Redis is away: doubling from the first
/// wait up to two seconds, back to the first after a success.
pub struct Backoff {
    first: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(first: Duration) -> Backoff {
        Backoff { first, next: first }
    }

    /// Redis answered: the next failure waits the first wait again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }

    /// Sleeps for the current wait, and doubles it for the next time.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(Duration::from_secs(2));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: Option<&str>) -> RedisConfig {
        RedisConfig {
            redis_host: "10.0.0.5".into(),
            redis_port: 6380,
            redis_url: url.map(str::to_owned),
            redis_prefix: "vs".into(),
            redis_timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn url_from_host_and_port_or_given() {
        assert_eq!(config(None).url(), "redis://10.0.0.5:6380");
        let c = config(Some("rediss://:s3cret@redis.internal:6379/2"));
        assert_eq!(c.url(), "rediss://:s3cret@redis.internal:6379/2");
        assert_eq!(c.display_url(), "rediss://***@redis.internal:6379/2");
        assert!(c.validate().is_ok());
        assert!(config(Some("http://x")).validate().is_err());
        let mut c = config(None);
        c.redis_prefix = "a*".into();
        assert!(c.validate().is_err());
    }

    #[test]
    fn key_names() {
        let k = Keys::new("vs");
        assert_eq!(k.lane(Priority::Low), "vs:tasks:low");
        assert_eq!(k.body("x"), "vs:body:x");
        assert_eq!(k.result("x"), "vs:result:x");
        assert_eq!(k.reply("p"), "vs:reply:p");
        assert_eq!(k.dead(), "vs:dead");
    }
}
