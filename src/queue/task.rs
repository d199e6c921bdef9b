//! What travels on the queue: the task a producer adds and the result a
//! handler sends back, as versioned JSON.
//!
//! A task is one stream entry with the fields `task` (this JSON) and, for the
//! inline provider, `body` (the raw bytes, not base64). A handler that meets
//! a schema version it does not know sends the task to the dead-letter stream
//! with that reason instead of guessing.

use serde::{Deserialize, Serialize};

use crate::model::{Direction, Priority, ScanRequest, Verdict};

/// The schema version this build writes and reads.
pub const SCHEMA_VERSION: u32 = 1;

/// Where a task's body is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Provider {
    /// In the task's own `body` field.
    Inline,
    /// Chunks in the stream at `key`, written while the body arrives and
    /// ended by an explicit end (or abort) entry.
    Stream {
        /// The body stream's key.
        key: String,
    },
    /// A file under `SCAN_MOUNT`, named relative to it.
    Disk {
        /// The file's name inside the mount (one path component).
        name: String,
    },
}

impl Provider {
    /// `inline`, `stream` or `disk`, for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Provider::Inline => "inline",
            Provider::Stream { .. } => "stream",
            Provider::Disk { .. } => "disk",
        }
    }
}

/// The end user, as the proxy reported them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// User name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// One scan, as queued.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// The scan id, carried from the frontend to the handler's logs.
    pub id: String,
    /// The lane it was queued in.
    pub priority: Priority,
    /// When it was queued, in milliseconds since the Unix epoch.
    pub enqueued_at_ms: u64,
    /// `request` (upload) or `response` (download).
    pub direction: String,
    /// The URL.
    pub url: String,
    /// The host, lower-case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The end user.
    #[serde(default)]
    pub client: Client,
    /// The body's length when known (always, once the body has ended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_length: Option<u64>,
    /// The body's `Content-Encoding`: the handler decodes the codings clamd
    /// cannot see through. (A handler from before this field scans the
    /// bytes as they are.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_encoding: Option<String>,
    /// An upload's multipart/form-data boundary: the handler scans each
    /// part alone. (A handler from before this field scans the body whole.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub form_boundary: Option<String>,
    /// Where the body is.
    pub provider: Provider,
    /// After this (milliseconds since the epoch) nobody waits for the
    /// result: a handler that picks the task up later drops it. For the
    /// stream provider it bounds the start of the scan; the body's own
    /// chunks then keep it alive.
    pub deadline_ms: u64,
    /// The list the producer pops its results from.
    pub reply_to: String,
}

impl Task {
    /// A task for `scan`, with everything but the provider and times.
    pub fn new(
        scan: &ScanRequest,
        priority: Priority,
        provider: Provider,
        reply_to: String,
    ) -> Task {
        Task {
            v: SCHEMA_VERSION,
            id: scan.id.to_string(),
            priority,
            enqueued_at_ms: now_ms(),
            direction: scan.direction.as_str().to_owned(),
            url: scan.url.clone(),
            host: scan.host.clone(),
            client: Client {
                ip: scan.client_ip.map(|ip| ip.to_string()),
                user: scan.user.clone(),
            },
            content_length: scan.declared_length,
            content_encoding: scan.content_encoding.clone(),
            form_boundary: scan.form_boundary.clone(),
            provider,
            deadline_ms: 0,
            reply_to,
        }
    }

    /// The direction, if it is one this build knows.
    pub fn direction(&self) -> Option<Direction> {
        match self.direction.as_str() {
            "request" => Some(Direction::Request),
            "response" => Some(Direction::Response),
            _ => None,
        }
    }

    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a task always serializes")
    }

    /// Reads a task, refusing other schema versions.
    pub fn from_json(text: &[u8]) -> Result<Task, String> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let version: Version =
            serde_json::from_slice(text).map_err(|e| format!("not a task: {e}"))?;
        if version.v != SCHEMA_VERSION {
            return Err(format!(
                "task schema version {} (this handler reads {SCHEMA_VERSION})",
                version.v
            ));
        }
        serde_json::from_slice(text).map_err(|e| format!("malformed task: {e}"))
    }
}

/// A handler's answer to one task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskResult {
    /// Schema version ([`SCHEMA_VERSION`]).
    pub v: u32,
    /// The task's id.
    pub id: String,
    /// What the scan found.
    pub verdict: WireVerdict,
    /// The handler that scanned it (host and process).
    pub handler: String,
    /// Bytes scanned.
    pub bytes: u64,
    /// Milliseconds from enqueue to the result.
    pub ms: u64,
}

impl TaskResult {
    /// The JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a result always serializes")
    }

    /// Reads a result.
    pub fn from_json(text: &[u8]) -> Result<TaskResult, String> {
        serde_json::from_slice(text).map_err(|e| format!("malformed result: {e}"))
    }
}

/// A verdict on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum WireVerdict {
    /// Scanned, nothing found.
    Clean,
    /// Scanned, signatures matched.
    Infected {
        /// Signature names.
        signatures: Vec<String>,
    },
    /// Over the scan limit.
    TooLarge {
        /// The limit in bytes; 0 for clamd's own, whose size is not known.
        limit: u64,
    },
    /// No verdict: the scan, the body or the queue failed. A body whose
    /// Content-Encoding did not decode travels as kind `encoding`, as it
    /// did before it had a verdict of its own, so that producers and
    /// handlers of either age read each other.
    Error {
        /// A short label (`connect`, `aborted`, `dead-letter`, ...).
        kind: String,
        /// What went wrong.
        message: String,
    },
}

impl From<&Verdict> for WireVerdict {
    fn from(v: &Verdict) -> WireVerdict {
        match v {
            Verdict::Clean => WireVerdict::Clean,
            Verdict::Infected { signatures } => WireVerdict::Infected {
                signatures: signatures.clone(),
            },
            Verdict::TooLarge { limit } => WireVerdict::TooLarge {
                limit: limit.unwrap_or(0),
            },
            // A handler never skips on purpose; say so rather than pass.
            Verdict::NotScanned(reason) => WireVerdict::Error {
                kind: "not-scanned".into(),
                message: format!("handler did not scan ({})", reason.as_str()),
            },
            Verdict::Undecodable { reason } => WireVerdict::Error {
                kind: ENCODING.into(),
                message: reason.clone(),
            },
            Verdict::Error { kind, message } => WireVerdict::Error {
                kind: (*kind).to_owned(),
                message: message.clone(),
            },
        }
    }
}

impl WireVerdict {
    /// The verdict for the frontend.
    pub fn into_verdict(self) -> Verdict {
        match self {
            WireVerdict::Clean => Verdict::Clean,
            WireVerdict::Infected { signatures } => Verdict::Infected { signatures },
            WireVerdict::TooLarge { limit } => Verdict::TooLarge {
                limit: (limit > 0).then_some(limit),
            },
            WireVerdict::Error { kind, message } if kind == ENCODING => {
                Verdict::Undecodable { reason: message }
            }
            WireVerdict::Error { kind, message } => Verdict::Error {
                kind: error_kind(&kind),
                message,
            },
        }
    }
}

/// The wire's error kind for [`Verdict::Undecodable`].
const ENCODING: &str = "encoding";

/// Error kinds as static labels (the model keeps `&'static str`).
pub fn error_kind(kind: &str) -> &'static str {
    match kind {
        "connect" => "connect",
        "timeout" => "timeout",
        "io" => "io",
        "clamd_error" => "clamd_error",
        "protocol" => "protocol",
        "aborted" => "aborted",
        "deadline" => "deadline",
        "dead-letter" => "dead-letter",
        "body" => "body",
        "queue" => "queue",
        "not-scanned" => "not-scanned",
        _ => "handler",
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ScanId;

    fn scan() -> ScanRequest {
        ScanRequest {
            id: ScanId::next(),
            direction: Direction::Response,
            method: None,
            url: "http://example.com/a.zip".into(),
            host: Some("example.com".into()),
            response_status: None,
            declared_length: Some(42),
            client_ip: Some("10.1.2.3".parse().unwrap()),
            user: Some("alice".into()),
            content_encoding: Some("br".into()),
            form_boundary: Some("b0undary".into()),
        }
    }

    #[test]
    fn task_round_trips_and_names_its_fields() {
        let t = Task::new(
            &scan(),
            Priority::High,
            Provider::Stream {
                key: "vs:body:1".into(),
            },
            "vs:reply:p".into(),
        );
        let json = t.to_json();
        for field in [
            "\"v\":1",
            "\"priority\":\"high\"",
            "\"enqueued_at_ms\"",
            "\"direction\":\"response\"",
            "\"url\"",
            "\"host\"",
            "\"client\":{\"ip\":\"10.1.2.3\",\"user\":\"alice\"}",
            "\"content_length\":42",
            "\"provider\":{\"kind\":\"stream\",\"key\":\"vs:body:1\"}",
            "\"deadline_ms\"",
        ] {
            assert!(json.contains(field), "{field} missing from {json}");
        }
        assert_eq!(Task::from_json(json.as_bytes()).unwrap(), t);
        assert_eq!(t.direction(), Some(Direction::Response));
    }

    #[test]
    fn other_schema_versions_are_refused() {
        let json = Task::new(&scan(), Priority::Low, Provider::Inline, "r".into())
            .to_json()
            .replace("\"v\":1", "\"v\":2");
        let err = Task::from_json(json.as_bytes()).unwrap_err();
        assert!(err.contains("version 2"), "{err}");
        assert!(Task::from_json(b"{}").is_err());
        assert!(Task::from_json(b"\xff").is_err());
    }

    #[test]
    fn verdicts_cross_the_wire() {
        for v in [
            Verdict::Clean,
            Verdict::Infected {
                signatures: vec!["Eicar-Test-Signature.UNOFFICIAL".into()],
            },
            Verdict::TooLarge { limit: Some(7) },
            // clamd's own limit, whose size is not known.
            Verdict::TooLarge { limit: None },
            Verdict::Error {
                kind: "timeout",
                message: "slow".into(),
            },
            Verdict::Undecodable {
                reason: "cannot decode br: truncated".into(),
            },
        ] {
            let r = TaskResult {
                v: SCHEMA_VERSION,
                id: "x".into(),
                verdict: WireVerdict::from(&v),
                handler: "h".into(),
                bytes: 1,
                ms: 2,
            };
            let back = TaskResult::from_json(r.to_json().as_bytes()).unwrap();
            assert_eq!(back.verdict.into_verdict(), v);
        }
        // A skip is never turned into a pass on the way back.
        let skipped = WireVerdict::from(&Verdict::NotScanned(crate::model::SkipReason::Trusted));
        assert!(matches!(skipped.into_verdict(), Verdict::Error { .. }));
    }
}
