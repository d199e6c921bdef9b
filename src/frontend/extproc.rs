//! The Envoy ext_proc frontend's side in the service: what the `grpc/`
//! crate asks ([`virus_scanner_grpc::Scanning`]) answered with the same
//! policy, scan pipeline, block pages and audit lines as ICAP.

use std::sync::Arc;
use std::time::Instant;

use virus_scanner_grpc::{
    Begin, Direction as EnvoyDirection, Exchange, Headers, Outcome, Scan, Scanning,
};

use crate::blockpage::{self, BlockPages};
use crate::model::{BlockReason, Decision, Direction, ScanId, ScanRequest, Verdict};
use crate::pipeline::{Pipeline, Session};
use crate::policy::Policy;

/// Starts scans for Envoy's messages. Cheap to clone.
#[derive(Clone)]
pub struct ExtProcScanning {
    pipeline: Pipeline,
    policy: Arc<Policy>,
}

impl ExtProcScanning {
    /// Scans through `pipeline` under `policy`.
    pub fn new(pipeline: Pipeline, policy: Policy) -> Self {
        ExtProcScanning {
            pipeline,
            policy: Arc::new(policy),
        }
    }
}

/// One body of an Envoy stream being scanned.
pub struct ExtProcScan {
    scan: ScanRequest,
    lane: Option<crate::model::Priority>,
    session: Session,
    policy: Arc<Policy>,
    json: bool,
    started: Instant,
}

impl Scanning for ExtProcScanning {
    type Scan = ExtProcScan;

    /// With RANGE_REQUESTS=whole, `range` and `if-range`: the upstream
    /// sends the whole file, whose response body is then scanned whole.
    /// Always `available-dictionary` and `dictionary-id`: the response is
    /// then not compressed against a dictionary the scan does not have.
    fn request_removals(&self, exchange: &Exchange) -> Vec<String> {
        let headers = &exchange.request_headers;
        let whole = self.policy.range_requests == crate::policy::RangeRequests::Whole;
        let mut removals = Vec::new();
        if whole && headers.contains_key(http::header::RANGE) {
            removals.extend(["range".to_owned(), "if-range".to_owned()]);
        }
        removals.extend(
            crate::scan::decode::DICTIONARY_HEADERS
                .iter()
                .filter(|h| headers.contains_key(**h))
                .map(|h| h.to_string()),
        );
        removals
    }

    fn begin(&self, exchange: &Exchange, direction: EnvoyDirection) -> Begin<ExtProcScan> {
        let scan = scan_request(exchange, direction);
        let priority = exchange
            .request_headers
            .get(crate::policy::PRIORITY_HEADER)
            .and_then(|v| v.to_str().ok());
        // Only an address Envoy vouches for (its source.address attribute)
        // can make a client trusted, not a header the client could send.
        let client = exchange.client.filter(|_| exchange.client_from_envoy);
        match self.policy.triage(scan.host.as_deref(), client, priority) {
            Err(reason) => {
                let verdict = Verdict::NotScanned(reason);
                let decision = self.policy.decide(&verdict);
                crate::telemetry::audit(
                    "ext_proc",
                    &scan,
                    &verdict,
                    &decision,
                    Default::default(),
                    0,
                    None,
                );
                Begin::Skip {
                    headers: Vec::new(),
                }
            }
            Ok(priority) => {
                let accept = exchange.request_headers.get(http::header::ACCEPT);
                Begin::Scan(ExtProcScan {
                    session: self.pipeline.session(&scan, priority),
                    lane: self.pipeline.is_queued().then_some(priority),
                    json: blockpage::prefers_json(accept.and_then(|v| v.to_str().ok())),
                    scan,
                    policy: self.policy.clone(),
                    started: Instant::now(),
                })
            }
        }
    }
}

impl Scan for ExtProcScan {
    async fn write(&mut self, data: &[u8]) {
        self.session.write(data).await;
    }

    fn is_too_large(&self) -> bool {
        self.session.is_too_large()
    }

    async fn finish(self) -> Outcome {
        let bytes = self.session.received();
        let verdict = self.session.finish().await;
        let decision = self.policy.decide(&verdict);
        crate::telemetry::audit(
            "ext_proc",
            &self.scan,
            &verdict,
            &decision,
            self.started.elapsed(),
            bytes,
            self.lane,
        );
        outcome(
            &self.scan,
            &verdict,
            &decision,
            self.json,
            &self.policy.pages,
        )
    }
}

/// What Envoy is told for a decision: the one place where the model meets
/// ext_proc's answers. A block is a JSON body when `json`, else the HTML
/// page of `pages`.
fn outcome(
    scan: &ScanRequest,
    verdict: &Verdict,
    decision: &Decision,
    json: bool,
    pages: &BlockPages,
) -> Outcome {
    let reason = match decision {
        Decision::Allow { unscanned: None } => {
            return Outcome::Allow {
                headers: Vec::new(),
            }
        }
        Decision::Allow {
            unscanned: Some(reason),
        } => {
            return Outcome::Allow {
                headers: vec![(
                    "x-virus-scanner-warning".into(),
                    format!("not scanned; reason={}", reason.as_str()),
                )],
            }
        }
        Decision::Block(reason) => reason,
    };
    let (page, content_type) = if json {
        (
            blockpage::render_json(reason, &scan.url, &scan.id),
            "application/json",
        )
    } else {
        (
            pages.html(reason, &scan.url, &scan.id),
            "text/html; charset=utf-8",
        )
    };
    let mut headers: Headers = vec![
        ("content-type".into(), content_type.into()),
        ("cache-control".into(), "no-store".into()),
        ("x-virus-scanner-result".into(), reason.as_str().into()),
        ("x-virus-scanner-reference".into(), scan.id.to_string()),
    ];
    if let BlockReason::Infected(signatures) = reason {
        headers.push((
            "x-virus-scanner-signature".into(),
            header_text(&signatures.join(", ")),
        ));
    }
    if let Verdict::Error { kind, .. } = verdict {
        headers.push(("x-virus-scanner-error".into(), (*kind).into()));
    }
    Outcome::Block {
        status: page.status,
        headers,
        body: page.html.into_bytes(),
        details: format!("virus_scanner_{}", reason.as_str().replace('-', "_")),
    }
}

/// Text made safe for a header value: visible ASCII and spaces only.
fn header_text(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c == ' ' || c.is_ascii_graphic() {
                c
            } else {
                '?'
            }
        })
        .collect()
}

/// Translates what Envoy sent into the internal model.
fn scan_request(exchange: &Exchange, envoy: EnvoyDirection) -> ScanRequest {
    let direction = match envoy {
        EnvoyDirection::Request => Direction::Request,
        EnvoyDirection::Response => Direction::Response,
    };
    ScanRequest {
        id: ScanId::next(),
        direction,
        method: exchange.method.clone(),
        url: exchange.url(),
        host: exchange.host(),
        response_status: exchange.status,
        declared_length: exchange.declared_length(envoy),
        client_ip: exchange.client,
        user: None,
        content_encoding: crate::model::content_encoding(match envoy {
            EnvoyDirection::Request => &exchange.request_headers,
            EnvoyDirection::Response => &exchange.response_headers,
        }),
        form_boundary: crate::model::form_boundary(direction, &exchange.request_headers),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn exchange() -> Exchange {
        let mut e = Exchange {
            method: Some(http::Method::POST),
            scheme: Some("https".into()),
            authority: Some("Files.Example.com:8443".into()),
            path: Some("/up?x=1".into()),
            ..Default::default()
        };
        e.request_headers
            .insert("content-length", "12".parse().unwrap());
        e
    }

    #[test]
    fn envoy_heads_become_scan_requests() {
        let scan = scan_request(&exchange(), EnvoyDirection::Request);
        assert_eq!(scan.url, "https://Files.Example.com:8443/up?x=1");
        assert_eq!(scan.host.as_deref(), Some("files.example.com"));
        assert_eq!(scan.declared_length, Some(12));
        assert_eq!(scan.direction, Direction::Request);
        let scan = scan_request(&exchange(), EnvoyDirection::Response);
        assert_eq!(scan.declared_length, None);
    }

    #[test]
    fn blocks_name_the_verdict() {
        let scan = scan_request(&exchange(), EnvoyDirection::Request);
        let verdict = Verdict::Infected {
            signatures: vec!["Eicar-Test-Signature".into()],
        };
        let decision = Decision::Block(BlockReason::Infected(vec!["Eicar-Test-Signature".into()]));
        let Outcome::Block {
            status,
            headers,
            body,
            ..
        } = outcome(&scan, &verdict, &decision, true, &BlockPages::default())
        else {
            panic!("not a block");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(
            get("x-virus-scanner-signature"),
            Some("Eicar-Test-Signature")
        );
        assert_eq!(get("content-type"), Some("application/json"));
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("\"reason\":\"infected\""));
        let failed = Verdict::Error {
            kind: "connect",
            message: "refused".into(),
        };
        let Outcome::Block { status, .. } = outcome(
            &scan,
            &failed,
            &Decision::Block(BlockReason::ScannerUnavailable),
            false,
            &BlockPages::default(),
        ) else {
            panic!("not a block");
        };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        // An operator's page (BLOCK_PAGE) for clients that want HTML; JSON
        // stays JSON.
        let own: BlockPages = blockpage::Template::parse("<p>{{reason}}: {{signatures}}</p>")
            .unwrap()
            .into();
        let Outcome::Block { status, body, .. } = outcome(&scan, &verdict, &decision, false, &own)
        else {
            panic!("not a block");
        };
        assert_eq!(status, StatusCode::FORBIDDEN);
        assert_eq!(body, b"<p>infected: Eicar-Test-Signature</p>");
        let Outcome::Block { body, .. } = outcome(&scan, &verdict, &decision, true, &own) else {
            panic!("not a block");
        };
        assert!(String::from_utf8(body)
            .unwrap()
            .contains("\"reason\":\"infected\""));
    }
}
