//! The page a user sees instead of a blocked file or upload.
//!
//! It says what happened in words a user can act on, shows the URL (escaped)
//! and the scan id to quote to the help desk, and is never cached.

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

/// Renders the page for a blocked message.
pub fn render(reason: &BlockReason, url: &str, id: &ScanId) -> BlockPage {
    let (status, title, detail) = match reason {
        BlockReason::Infected(signatures) => (
            StatusCode::FORBIDDEN,
            "Blocked: malware found",
            format!(
                "The file you tried to transfer contains malware and was blocked.<br>Detected: <b>{}</b>",
                escape_html(&signatures.join(", "))
            ),
        ),
        BlockReason::TooLarge { limit } => (
            StatusCode::FORBIDDEN,
            "Blocked: too large to scan",
            format!(
                "The file is larger than {}, so it was blocked.",
                escape_html(&scannable(*limit))
            ),
        ),
        BlockReason::ScannerUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Blocked: virus scanner unavailable",
            "The virus scanner could not check this transfer, so it was blocked. Please try again in a few minutes."
                .to_owned(),
        ),
    };
    let html = format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\
         <style>body{{font-family:sans-serif;max-width:42em;margin:3em auto;padding:0 1em;color:#222}}\
         h1{{color:#b00020;font-size:1.5em}}code{{word-break:break-all}}</style></head>\n\
         <body><h1>{title}</h1>\n<p>{detail}</p>\n<p>URL: <code>{url}</code></p>\n\
         <p>Reference: <code>{id}</code></p>\n<p><small>virus-scanner</small></p></body></html>\n",
        url = escape_html(url),
        id = escape_html(id.as_str()),
    );
    BlockPage { status, html }
}

/// The same answer as JSON, for API clients: `reason` (`infected`,
/// `too-large`, `scanner-unavailable`), a message, the signatures, the URL
/// and the reference.
pub fn render_json(reason: &BlockReason, url: &str, id: &ScanId) -> BlockPage {
    let (status, label, message, signatures) = match reason {
        BlockReason::Infected(signatures) => (
            StatusCode::FORBIDDEN,
            "infected",
            "malware found; the transfer was blocked".to_owned(),
            signatures.clone(),
        ),
        BlockReason::TooLarge { limit } => (
            StatusCode::FORBIDDEN,
            "too-large",
            format!(
                "larger than {}; the transfer was blocked",
                scannable(*limit)
            ),
            Vec::new(),
        ),
        BlockReason::ScannerUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "scanner-unavailable",
            "the virus scanner could not check this transfer; try again in a few minutes"
                .to_owned(),
            Vec::new(),
        ),
    };
    let body = serde_json::json!({
        "blocked": true,
        "reason": label,
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
/// (`limit` 0), "the virus scanner can take".
fn scannable(limit: u64) -> String {
    match limit {
        0 => "the virus scanner can take".to_owned(),
        n => format!("the {} that can be scanned for malware", human_size(n)),
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
        let page = render(&BlockReason::TooLarge { limit: 25 << 20 }, "u", &id);
        assert!(page
            .html
            .contains("larger than the 25 MiB that can be scanned for malware"));
        // clamd's own limit: its size is not known.
        let page = render(&BlockReason::TooLarge { limit: 0 }, "u", &id);
        assert_eq!(page.status, StatusCode::FORBIDDEN);
        assert!(page
            .html
            .contains("larger than the virus scanner can take, so it was blocked"));
        assert_eq!(
            render(&BlockReason::ScannerUnavailable, "u", &id).status,
            StatusCode::SERVICE_UNAVAILABLE
        );
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
}
