//! The page a user sees instead of a blocked file or upload.
//!
//! It says what happened in words a user can act on, shows the URL (escaped)
//! and the scan id to quote to the help desk, and is never cached. An
//! operator may replace the built-in HTML page with one of their own
//! (`BLOCK_PAGE`, a [`Template`]); the JSON answer for API clients stays.

use std::path::Path;
use std::sync::{Arc, RwLock};

use http::StatusCode;

use crate::model::{BlockReason, ScanId};

/// A rendered block page.
#[derive(Debug, Clone)]
pub struct BlockPage {
    /// The HTTP status the user's browser gets.
    pub status: StatusCode,
    /// The HTML.
    pub html: String,
}

/// Escapes text for HTML content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What every HTML page says about a block, in plain text.
struct Facts<'a> {
    status: StatusCode,
    /// [`BlockReason::as_str`].
    reason: &'static str,
    title: &'static str,
    message: String,
    signatures: &'a [String],
}

fn facts(reason: &BlockReason) -> Facts<'_> {
    let (status, title, message, signatures): (_, _, _, &[String]) = match reason {
        BlockReason::Infected(signatures) => (
            StatusCode::FORBIDDEN,
            "Blocked: malware found",
            "The file you tried to transfer contains malware and was blocked.".to_owned(),
            signatures,
        ),
        BlockReason::TooLarge { limit } => (
            StatusCode::FORBIDDEN,
            "Blocked: too large to scan",
            format!(
                "The file is larger than {}, so it was blocked.",
                scannable(*limit)
            ),
            &[],
        ),
        BlockReason::ScannerUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Blocked: virus scanner unavailable",
            "The virus scanner could not check this transfer, so it was blocked. \
             Please try again in a few minutes."
                .to_owned(),
            &[],
        ),
        BlockReason::Undecodable => (
            StatusCode::FORBIDDEN,
            "Blocked: could not be checked",
            "The file is packed in a way the virus scanner cannot see into (its \
             compression is damaged or unknown, or it is an archive the scanner \
             cannot open), so it \
             could not be checked whole and was blocked."
                .to_owned(),
            &[],
        ),
    };
    Facts {
        status,
        reason: reason.as_str(),
        title,
        message,
        signatures,
    }
}

/// Renders the built-in page for a blocked message.
pub fn render(reason: &BlockReason, url: &str, id: &ScanId) -> BlockPage {
    let facts = facts(reason);
    let mut detail = escape_html(&facts.message);
    if !facts.signatures.is_empty() {
        detail.push_str("<br>Detected: <b>");
        detail.push_str(&escape_html(&facts.signatures.join(", ")));
        detail.push_str("</b>");
    }
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:42em;margin:3em auto;padding:0 1em;color:#222}}\
         h1{{color:#b00020;font-size:1.5em}}code{{word-break:break-all}}</style></head>\n\
         <body><h1>{title}</h1>\n<p>{detail}</p>\n<p>URL: <code>{url}</code></p>\n\
         <p>Reference: <code>{id}</code></p>\n<p><small>virus-scanner</small></p></body></html>\n",
        title = facts.title,
        url = escape_html(url),
        id = escape_html(id.as_str()),
    );
    BlockPage {
        status: facts.status,
        html,
    }
}

/// The HTML block pages in force: the built-in one, or the operator's own
/// (`BLOCK_PAGE`), which [`BlockPages::reload`] reads again. Cheap to
/// clone; clones share the page.
#[derive(Debug, Clone, Default)]
pub struct BlockPages {
    /// The operator's file, when there is one.
    path: Option<Arc<Path>>,
    template: Arc<RwLock<Option<Arc<Template>>>>,
}

impl BlockPages {
    /// The operator's page, read from `path` (see [`Template::parse`]).
    pub fn from_file(path: &Path) -> Result<BlockPages, String> {
        let template = read_template(path)?;
        Ok(BlockPages {
            path: Some(path.into()),
            template: Arc::new(RwLock::new(Some(Arc::new(template)))),
        })
    }

    /// Reads the operator's file again. On an error the page in force
    /// stays. Without a file of the operator's, nothing to do.
    pub fn reload(&self) -> Result<(), String> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let template = read_template(path)?;
        *self.template.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(template));
        Ok(())
    }

    /// Whether an operator's file is in force.
    pub fn is_custom(&self) -> bool {
        self.path.is_some()
    }

    /// The HTML page for a blocked message.
    pub fn html(&self, reason: &BlockReason, url: &str, id: &ScanId) -> BlockPage {
        let template = self
            .template
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        match template {
            None => render(reason, url, id),
            Some(template) => {
                let facts = facts(reason);
                BlockPage {
                    status: facts.status,
                    html: template.render(&facts, url, id),
                }
            }
        }
    }
}

fn read_template(path: &Path) -> Result<Template, String> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| format!("BLOCK_PAGE {shown}: {e}"))?;
    if bytes.len() > MAX_TEMPLATE {
        return Err(format!(
            "BLOCK_PAGE {shown}: {} bytes; a block page may have at most {}",
            bytes.len(),
            human_size(MAX_TEMPLATE as u64)
        ));
    }
    let text = String::from_utf8(bytes).map_err(|_| format!("BLOCK_PAGE {shown}: not UTF-8"))?;
    Template::parse(&text).map_err(|e| format!("BLOCK_PAGE {shown}: {e}"))
}

impl From<Template> for BlockPages {
    /// A page given whole, not read from a file (so never reloaded).
    fn from(template: Template) -> Self {
        BlockPages {
            path: None,
            template: Arc::new(RwLock::new(Some(Arc::new(template)))),
        }
    }
}

/// The largest block page file taken: it goes out with every block.
const MAX_TEMPLATE: usize = 1 << 20;

/// An operator's block page: HTML with `{{field}}` placeholders, each
/// replaced by its value escaped for HTML. Anything else is sent as
/// written, so CSS and scripts with single braces are left alone.
#[derive(Debug)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Field(Field),
}

/// The fields a block page may show.
#[derive(Debug, Clone, Copy)]
enum Field {
    Title,
    Message,
    Reason,
    Signatures,
    Url,
    Reference,
}

impl Field {
    const ALL: [(&'static str, Field); 6] = [
        ("title", Field::Title),
        ("message", Field::Message),
        ("reason", Field::Reason),
        ("signatures", Field::Signatures),
        ("url", Field::Url),
        ("reference", Field::Reference),
    ];
}

impl Template {
    /// Reads a page's text. The fields are `{{title}}` (a headline),
    /// `{{message}}` (a sentence saying what happened), `{{reason}}`
    /// (`infected`, `too-large` or `scanner-unavailable`), `{{signatures}}`
    /// (what clamd found, comma-separated; empty for the other reasons),
    /// `{{url}}` and `{{reference}}` (the scan id, which the logs carry).
    /// Spaces inside the braces are allowed. An unknown name or a `{{`
    /// without its `}}` is an error, so that a typo is caught at start
    /// rather than shown to users.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(open) = rest.find("{{") {
            let Some(close) = rest[open + 2..].find("}}") else {
                return Err(format!(
                    "a {{{{ at byte {} has no }}}}",
                    text.len() - rest.len() + open
                ));
            };
            let name = rest[open + 2..open + 2 + close].trim();
            let Some(&(_, field)) = Field::ALL.iter().find(|(n, _)| *n == name) else {
                let known: Vec<_> = Field::ALL
                    .iter()
                    .map(|(n, _)| format!("{{{{{n}}}}}"))
                    .collect();
                return Err(format!(
                    "unknown field {{{{{name}}}}}; the fields are {}",
                    known.join(", ")
                ));
            };
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            parts.push(Part::Field(field));
            rest = &rest[open + 2 + close + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Template { parts })
    }

    fn render(&self, facts: &Facts<'_>, url: &str, id: &ScanId) -> String {
        let mut out = String::with_capacity(self.parts.iter().map(Part::len_hint).sum());
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Field(field) => {
                    let value = match field {
                        Field::Title => escape_html(facts.title),
                        Field::Message => escape_html(&facts.message),
                        Field::Reason => facts.reason.to_owned(),
                        Field::Signatures => escape_html(&facts.signatures.join(", ")),
                        Field::Url => escape_html(url),
                        Field::Reference => escape_html(id.as_str()),
                    };
                    out.push_str(&value);
                }
            }
        }
        out
    }
}

impl Part {
    fn len_hint(&self) -> usize {
        match self {
            Part::Text(text) => text.len(),
            Part::Field(_) => 64,
        }
    }
}

/// The same answer as JSON, for API clients: `reason`
/// ([`BlockReason::as_str`]), a message, the signatures, the URL
/// and the reference.
pub fn render_json(reason: &BlockReason, url: &str, id: &ScanId) -> BlockPage {
    let (status, message, signatures) = match reason {
        BlockReason::Infected(signatures) => (
            StatusCode::FORBIDDEN,
            "malware found; the transfer was blocked".to_owned(),
            signatures.clone(),
        ),
        BlockReason::TooLarge { limit } => (
            StatusCode::FORBIDDEN,
            format!(
                "larger than {}; the transfer was blocked",
                scannable(*limit)
            ),
            Vec::new(),
        ),
        BlockReason::ScannerUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the virus scanner could not check this transfer; try again in a few minutes"
                .to_owned(),
            Vec::new(),
        ),
        BlockReason::Undecodable => (
            StatusCode::FORBIDDEN,
            "it is packed in a way the virus scanner cannot see into (a damaged or \
             unknown Content-Encoding, or an archive the scanner cannot open), so it could not be checked \
             whole; the transfer was blocked"
                .to_owned(),
            Vec::new(),
        ),
    };
    let body = serde_json::json!({
        "blocked": true,
        "reason": reason.as_str(),
        "message": message,
        "signatures": signatures,
        "url": url,
        "reference": id.as_str(),
    });
    BlockPage {
        status,
        html: body.to_string(),
    }
}

/// Whether an `Accept` header asks for JSON rather than HTML: a JSON type
/// (`application/json`, `application/*+json`) ranked above any HTML type.
pub fn prefers_json(accept: Option<&str>) -> bool {
    let Some(accept) = accept else {
        return false;
    };
    let rank = |kind: fn(&str) -> bool| {
        accept
            .split(',')
            .filter_map(|range| {
                let mut parts = range.split(';');
                let media = parts.next()?.trim().to_ascii_lowercase();
                let q = parts
                    .filter_map(|p| p.trim().strip_prefix("q="))
                    .find_map(|q| q.trim().parse::<f32>().ok())
                    .unwrap_or(1.0);
                (kind(&media) && q > 0.0).then_some(q)
            })
            .fold(None, |best: Option<f32>, q| {
                Some(best.map_or(q, |b| b.max(q)))
            })
    };
    let json = rank(|m| {
        m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
    });
    let html = rank(|m| m == "text/html" || m == "application/xhtml+xml");
    match (json, html) {
        (Some(j), Some(h)) => j > h,
        (Some(_), None) => true,
        _ => false,
    }
}

/// What a too-large body was larger than: "the 25 MiB that can be
/// scanned for malware", or, when clamd refused it at a limit of its own
/// (`limit` `None`), "the virus scanner can take".
fn scannable(limit: Option<u64>) -> String {
    match limit {
        None => "the virus scanner can take".to_owned(),
        Some(n) => format!("the {} that can be scanned for malware", human_size(n)),
    }
}

/// `25 MiB`, `512 KiB`, `300 bytes`.
pub fn human_size(n: u64) -> String {
    const UNITS: [(u64, &str); 3] = [(1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")];
    for (size, unit) in UNITS {
        if n >= size && n.is_multiple_of(size) {
            return format!("{} {unit}", n / size);
        }
    }
    format!("{n} bytes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_escape_and_name_the_threat() {
        let id = ScanId::next();
        let page = render(
            &BlockReason::Infected(vec!["Eicar-Test-Signature.UNOFFICIAL".into()]),
            "http://x/<script>\"",
            &id,
        );
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page.html.contains("Eicar-Test-Signature.UNOFFICIAL"));
        assert!(page.html.contains("http://x/&lt;script&gt;&quot;"));
        assert!(!page.html.contains("<script>"));
        assert!(page.html.contains(id.as_str()));
        let page = render(
            &BlockReason::TooLarge {
                limit: Some(25 << 20),
            },
            "u",
            &id,
        );
        assert!(page
            .html
            .contains("larger than the 25 MiB that can be scanned for malware"));
        // clamd's own limit: its size is not known.
        let page = render(&BlockReason::TooLarge { limit: None }, "u", &id);
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page
            .html
            .contains("larger than the virus scanner can take, so it was blocked"));
        assert_eq!(
            render(&BlockReason::ScannerUnavailable, "u", &id).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // Retrying does not mend a damaged body: 403, and the page says the
        // file could not be checked rather than that the scanner is down.
        let page = render(&BlockReason::Undecodable, "u", &id);
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page.html.contains("could not be checked"), "{}", page.html);
        let json = render_json(&BlockReason::Undecodable, "u", &id);
        assert_eq!(json.status, StatusCode::FORBIDDEN);
        let v: serde_json::Value = serde_json::from_str(&json.html).unwrap();
        assert_eq!(v["reason"], "undecodable");
    }

    #[test]
    fn json_pages_for_api_clients() {
        let id = ScanId::next();
        let page = render_json(
            &BlockReason::Infected(vec!["Eicar".into()]),
            "http://x/\"q",
            &id,
        );
        let v: serde_json::Value = serde_json::from_str(&page.html).unwrap();
        assert_eq!(v["reason"], "infected");
        assert_eq!(v["signatures"][0], "Eicar");
        assert_eq!(v["url"], "http://x/\"q");
        assert_eq!(v["reference"], id.as_str());
        assert!(prefers_json(Some("application/json")));
        assert!(prefers_json(Some(
            "application/problem+json, text/html;q=0.5"
        )));
        assert!(!prefers_json(Some(
            "text/html,application/xhtml+xml,application/json;q=0.9"
        )));
        assert!(!prefers_json(Some("*/*")));
        assert!(!prefers_json(None));
        assert!(!prefers_json(Some("application/json;q=0")));
    }

    #[test]
    fn a_page_of_ones_own_gets_its_fields_escaped() {
        let id = ScanId::next();
        let template = Template::parse(
            "<style>h1{color:red}</style><h1>{{title}}</h1><p class=\"{{ reason }}\">{{message}}</p>\
             <b>{{signatures}}</b> <code>{{url}}</code> {{reference}} {{url}}",
        )
        .unwrap();
        let pages = BlockPages::from(template);
        let reason =
            BlockReason::Infected(vec!["Eicar-Test-Signature.UNOFFICIAL".into(), "<b>".into()]);
        let page = pages.html(&reason, "http://x/<script>\"", &id);
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert_eq!(
            page.html,
            format!(
                "<style>h1{{color:red}}</style><h1>Blocked: malware found</h1>\
                 <p class=\"infected\">The file you tried to transfer contains malware and was blocked.</p>\
                 <b>Eicar-Test-Signature.UNOFFICIAL, &lt;b&gt;</b> <code>http://x/&lt;script&gt;&quot;</code> {id} \
                 http://x/&lt;script&gt;&quot;",
                id = id.as_str()
            )
        );
        let page = pages.html(&BlockReason::ScannerUnavailable, "u", &id);
        assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(
            page.html.contains("class=\"scanner-unavailable\""),
            "{}",
            page.html
        );
        assert!(page.html.contains("<b></b>"), "{}", page.html);
        let page = pages.html(
            &BlockReason::TooLarge {
                limit: Some(25 << 20),
            },
            "u",
            &id,
        );
        assert!(
            page.html
                .contains("larger than the 25 MiB that can be scanned"),
            "{}",
            page.html
        );
        // Without a page of one's own, the built-in one.
        let builtin = BlockPages::default().html(&reason, "u", &id);
        assert_eq!(builtin.html, render(&reason, "u", &id).html);
    }

    #[test]
    fn a_page_with_an_unknown_or_unclosed_field_is_refused() {
        let e = Template::parse("<p>{{virus}}</p>").unwrap_err();
        assert!(
            e.contains("unknown field {{virus}}") && e.contains("{{signatures}}"),
            "{e}"
        );
        let e = Template::parse("<p>{{url}}</p><p>{{url</p>").unwrap_err();
        assert_eq!(e, "a {{ at byte 17 has no }}");
        // Single braces and a lone closing pair are text.
        let t = Template::parse("a{b}c}}d").unwrap();
        let page = BlockPages::from(t);
        assert_eq!(
            page.html(&BlockReason::ScannerUnavailable, "u", &ScanId::next())
                .html,
            "a{b}c}}d"
        );
    }

    #[test]
    fn page_files_are_checked_when_read() {
        let dir = std::env::temp_dir().join(format!("vs-blockpage-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.html");
        let e = BlockPages::from_file(&missing).unwrap_err();
        assert!(
            e.starts_with("BLOCK_PAGE ") && e.contains("missing.html"),
            "{e}"
        );
        let binary = dir.join("binary.html");
        std::fs::write(&binary, [0xff, 0xfe, 0x00]).unwrap();
        assert!(BlockPages::from_file(&binary)
            .unwrap_err()
            .ends_with("not UTF-8"));
        let huge = dir.join("huge.html");
        std::fs::write(&huge, vec![b'a'; MAX_TEMPLATE + 1]).unwrap();
        assert!(BlockPages::from_file(&huge)
            .unwrap_err()
            .contains("at most 1 MiB"));
        let typo = dir.join("typo.html");
        std::fs::write(&typo, "{{URL}}").unwrap();
        let e = BlockPages::from_file(&typo).unwrap_err();
        assert!(
            e.contains("typo.html") && e.contains("unknown field {{URL}}"),
            "{e}"
        );
        // Read again on demand (SIGHUP); a page gone wrong leaves the last
        // good one in force.
        let own = dir.join("own.html");
        std::fs::write(&own, "first {{reason}}").unwrap();
        let pages = BlockPages::from_file(&own).unwrap();
        let shared = pages.clone();
        let show = |p: &BlockPages| {
            p.html(&BlockReason::ScannerUnavailable, "u", &ScanId::next())
                .html
        };
        assert_eq!(show(&shared), "first scanner-unavailable");
        std::fs::write(&own, "second {{reason}}").unwrap();
        pages.reload().unwrap();
        assert_eq!(show(&shared), "second scanner-unavailable");
        std::fs::write(&own, "third {{resaon}}").unwrap();
        assert!(pages
            .reload()
            .unwrap_err()
            .contains("unknown field {{resaon}}"));
        assert_eq!(show(&shared), "second scanner-unavailable");
        assert!(BlockPages::default().reload().is_ok());
        std::fs::remove_dir_all(&dir).unwrap();
        // The example the README points to.
        let example =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples/block-page.html");
        let page = BlockPages::from_file(&example).unwrap().html(
            &BlockReason::Infected(vec!["Eicar-Test-Signature.UNOFFICIAL".into()]),
            "http://x/eicar.com",
            &ScanId::next(),
        );
        assert!(
            page.html.contains("<b>Eicar-Test-Signature.UNOFFICIAL</b>"),
            "{}",
            page.html
        );
        assert!(!page.html.contains("{{"), "{}", page.html);
    }
}
