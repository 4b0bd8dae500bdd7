//! The warnings layer: a registry's `Warning` headers (deprecations, quota notes),
//! each distinct text logged once per client.

use std::collections::HashSet;
use std::sync::Mutex;

use reqwest::Response;

#[derive(Default)]
pub struct Warnings {
    seen: Mutex<HashSet<String>>,
}

impl Warnings {
    /// Logs each `Warning` of `resp` not seen before from this client.
    pub fn note(&self, registry: &str, resp: &Response) {
        for w in resp.headers().get_all("warning") {
            let Some(text) = w.to_str().ok().and_then(warning_text) else {
                continue;
            };
            let first = self
                .seen
                .lock()
                .map(|mut s| s.insert(text.clone()))
                .unwrap_or(false);
            if first {
                tracing::warn!("registry {registry} warns: {text}");
            }
        }
    }
}

/// The text of an RFC 7234 `Warning` value (`299 - "text" [date]`): the first
/// quoted string, unescaped; a value without quotes is taken whole.
fn warning_text(value: &str) -> Option<String> {
    let v = value.trim();
    let text = match v.split_once('"') {
        Some((_, rest)) => {
            let mut out = String::new();
            let mut chars = rest.chars();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => out.extend(chars.next()),
                    c => out.push(c),
                }
            }
            out
        }
        None => v.to_string(),
    };
    let text = text.trim().to_string();
    (!text.is_empty()).then_some(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warning_header_text() {
        assert_eq!(
            warning_text(r#"299 - "this image is deprecated""#).as_deref(),
            Some("this image is deprecated")
        );
        assert_eq!(
            warning_text(r#"299 registry.example "say \"hi\"" "Sat, 01 Jan 2000 00:00:00 GMT""#)
                .as_deref(),
            Some(r#"say "hi""#)
        );
        assert_eq!(warning_text("  "), None);
    }
}
