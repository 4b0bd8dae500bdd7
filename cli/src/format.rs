//! `--format` for every listing command, as Docker's CLI reads it: `table` (the
//! command's own table), `json` (one object per line), or a Go-template subset:
//! `{{.Field}}`, `{{.A.B}}` into nested objects, `{{.}}`, `{{json .}}`,
//! `{{json .Field}}`, `{{upper .F}}`, `{{lower .F}}`, `{{join .F ", "}}`,
//! `{{-`/`-}}` trim markers, `\t` and `\n` escapes, and a `table ` prefix that
//! adds a header row and aligns the tab-separated cells (Go's tabwriter with
//! Docker's settings).
//!
//! Rows are JSON objects whose keys are Docker's field names, so `{{json .}}` and
//! `--format json` print what Docker prints. A field a row lacks is an error naming
//! it, before anything is printed.
//!
//! Also here: Docker's relative times (`go-units`' `HumanDuration`) and sizes
//! (`HumanSizeWithPrecision(size, 3)`), which the default tables show.

use std::fmt::Write as _;

use anyhow::{anyhow, bail, Result};
use serde_json::{Map, Value};

/// A parsed `--format`.
#[derive(Debug)]
pub struct Format {
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Json,
    Template(Template),
}

/// What one command offers: its default layout and the header of each field.
pub struct Layout<'a> {
    /// The format used without `--format` (and for `--format table`).
    pub default: &'a str,
    /// Column titles by field name; a field not listed is titled in capitals.
    pub headers: &'a [(&'a str, &'a str)],
}

impl Format {
    /// `None`, `table`, `json` or a template; `layout.default` stands for the first two.
    pub fn parse(spec: Option<&str>, layout: &Layout) -> Result<Format> {
        let spec = match spec.map(str::trim) {
            None | Some("") | Some("table") => layout.default,
            Some(s) => s,
        };
        if spec == "json" {
            return Ok(Format { kind: Kind::Json });
        }
        let mut t = Template::parse(spec)?;
        if t.table {
            t.header = Some(t.header_line(layout.headers));
        }
        Ok(Format {
            kind: Kind::Template(t),
        })
    }

    /// Renders every row, the header first for a `table` format; the whole text
    /// is made before anything is printed, so a bad field prints nothing.
    pub fn render(&self, rows: &[Value]) -> Result<String> {
        match &self.kind {
            Kind::Json => {
                let mut out = String::new();
                for r in rows {
                    out.push_str(&serde_json::to_string(r)?);
                    out.push('\n');
                }
                Ok(out)
            }
            Kind::Template(t) => {
                let mut lines = Vec::new();
                if let Some(h) = &t.header {
                    lines.push(h.clone());
                }
                for r in rows {
                    lines.push(t.execute(r)?);
                }
                if t.table {
                    Ok(tabwriter(&lines))
                } else {
                    Ok(lines.iter().map(|l| format!("{l}\n")).collect())
                }
            }
        }
    }

    /// Renders one document (inspect's), as `docker inspect -f`: a template or `json`.
    pub fn render_one(&self, doc: &Value) -> Result<String> {
        if let Kind::Template(t) = &self.kind {
            if t.table {
                bail!("--format: a table needs a listing, not a single document");
            }
        }
        self.render(std::slice::from_ref(doc))
    }
}

/// A parsed template.
#[derive(Debug)]
struct Template {
    source: String,
    table: bool,
    parts: Vec<Part>,
    header: Option<String>,
}

#[derive(Debug)]
enum Part {
    Text(String),
    Action { func: Func, path: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
enum Func {
    Print,
    Json,
    Upper,
    Lower,
    Join(String),
}

impl Template {
    fn parse(spec: &str) -> Result<Template> {
        // As Docker's formatter: the `table` prefix, surrounding spaces, then escapes.
        let (table, body) = match spec.strip_prefix("table") {
            Some(rest) if rest.is_empty() || rest.starts_with(char::is_whitespace) => (true, rest),
            _ => (false, spec),
        };
        let body = body
            .trim_matches(' ')
            .replace("\\t", "\t")
            .replace("\\n", "\n");
        let mut parts = Vec::new();
        let mut rest = body.as_str();
        // Go's trim markers: `{{- ` drops the white space before, ` -}}` after.
        let mut trim_next = false;
        while let Some(open) = rest.find("{{") {
            let after = &rest[open + 2..];
            let close = after
                .find("}}")
                .ok_or_else(|| anyhow!("--format {spec:?}: unclosed action (missing \"}}}}\")"))?;
            let mut inner = &after[..close];
            let mut text = &rest[..open];
            if trim_next {
                text = text.trim_start();
            }
            if let Some(i) = inner
                .strip_prefix('-')
                .filter(|i| i.starts_with(char::is_whitespace))
            {
                text = text.trim_end();
                inner = i;
            }
            trim_next = false;
            if let Some(i) = inner
                .strip_suffix('-')
                .filter(|i| i.ends_with(char::is_whitespace))
            {
                trim_next = true;
                inner = i;
            }
            if !text.is_empty() {
                parts.push(Part::Text(text.to_string()));
            }
            parts.push(parse_action(spec, inner)?);
            rest = &after[close + 2..];
        }
        let rest = if trim_next { rest.trim_start() } else { rest };
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_string()));
        }
        Ok(Template {
            source: spec.to_string(),
            table,
            parts,
            header: None,
        })
    }

    fn header_line(&self, headers: &[(&str, &str)]) -> String {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action { path, .. } => {
                    let name = path.join(".");
                    match headers.iter().find(|(f, _)| *f == name) {
                        Some((_, h)) => out.push_str(h),
                        None => out.push_str(&name.to_uppercase()),
                    }
                }
            }
        }
        out
    }

    fn execute(&self, row: &Value) -> Result<String> {
        let mut out = String::new();
        for p in &self.parts {
            match p {
                Part::Text(t) => out.push_str(t),
                Part::Action { func, path } => {
                    let v = lookup(row, path).map_err(|missing| {
                        anyhow!(
                            "--format {:?}: {missing} at <.{}>",
                            self.source,
                            path.join(".")
                        )
                    })?;
                    match func {
                        Func::Print => go_print(&mut out, v),
                        Func::Json => out.push_str(&serde_json::to_string(v)?),
                        Func::Upper => out.push_str(&go_string(v).to_uppercase()),
                        Func::Lower => out.push_str(&go_string(v).to_lowercase()),
                        Func::Join(sep) => match v {
                            Value::Array(items) => {
                                let items: Vec<String> = items.iter().map(go_string).collect();
                                out.push_str(&items.join(sep));
                            }
                            other => go_print(&mut out, other),
                        },
                    }
                }
            }
        }
        Ok(out)
    }
}

fn parse_action(spec: &str, inner: &str) -> Result<Part> {
    let words = split_words(inner.trim());
    let bad = || {
        anyhow!("--format {spec:?}: unsupported action {{{{{inner}}}}} (supported: .Field, json, upper, lower, join)")
    };
    let (func, arg) = match words.as_slice() {
        [one] => (Func::Print, one.as_str()),
        [f, arg] if f == "json" => (Func::Json, arg.as_str()),
        [f, arg] if f == "upper" => (Func::Upper, arg.as_str()),
        [f, arg] if f == "lower" => (Func::Lower, arg.as_str()),
        [f, arg, sep] if f == "join" => {
            let sep = sep
                .strip_prefix('"')
                .and_then(|s| s.strip_suffix('"'))
                .ok_or_else(bad)?;
            (Func::Join(sep.to_string()), arg.as_str())
        }
        _ => return Err(bad()),
    };
    let path = match arg {
        "." => Vec::new(),
        a if a.starts_with('.') => {
            let path: Vec<String> = a[1..].split('.').map(str::to_string).collect();
            if path.iter().any(String::is_empty) {
                return Err(bad());
            }
            path
        }
        _ => return Err(bad()),
    };
    Ok(Part::Action { func, path })
}

/// Words of an action; a double-quoted string is one word.
fn split_words(s: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if !cur.is_empty() {
        words.push(cur);
    }
    words
}

/// The value at `path`; the error says which field is missing and what was there.
fn lookup<'a>(row: &'a Value, path: &[String]) -> std::result::Result<&'a Value, String> {
    let mut v = row;
    for key in path {
        v = match v {
            Value::Object(map) => map.get(key).ok_or_else(|| no_field(key, map))?,
            _ => return Err(format!("no field {key:?} (not an object)")),
        };
    }
    Ok(v)
}

fn no_field(key: &str, map: &Map<String, Value>) -> String {
    let names: Vec<&str> = map.keys().map(String::as_str).collect();
    format!("no field {key:?} (fields: {})", names.join(", "))
}

/// A value as Go's `fmt.Print` shows what Docker's templates hold.
fn go_print(out: &mut String, v: &Value) {
    match v {
        Value::Null => out.push_str("<nil>"),
        Value::String(s) => out.push_str(s),
        Value::Bool(b) => {
            let _ = write!(out, "{b}");
        }
        Value::Number(n) => {
            let _ = write!(out, "{n}");
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                go_print(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push_str("map[");
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                go_print(out, item);
            }
            out.push(']');
        }
    }
}

fn go_string(v: &Value) -> String {
    let mut s = String::new();
    go_print(&mut s, v);
    s
}

/// Go's `tabwriter.NewWriter(out, 10, 1, 3, ' ', 0)`, Docker's table writer: each
/// tab-terminated cell is padded to its column's widest cell plus 3, at least 10.
fn tabwriter(lines: &[String]) -> String {
    let rows: Vec<Vec<&str>> = lines.iter().map(|l| l.split('\t').collect()).collect();
    let mut widths: Vec<usize> = Vec::new();
    for r in &rows {
        // The text after the last tab is not a column cell.
        for (i, cell) in r.iter().take(r.len().saturating_sub(1)).enumerate() {
            let w = (cell.chars().count() + 3).max(10);
            match widths.get_mut(i) {
                Some(cur) => *cur = (*cur).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    for r in &rows {
        for (i, cell) in r.iter().enumerate() {
            out.push_str(cell);
            if i + 1 < r.len() {
                let pad = widths[i].saturating_sub(cell.chars().count());
                out.push_str(&" ".repeat(pad));
            }
        }
        out.push('\n');
    }
    out
}

pub use ops::images::parse_time;

/// Seconds since the epoch, now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// go-units' `HumanDuration`: `Less than a second`, `About a minute`, `3 hours`,
/// `2 weeks`... (hours are rounded, the rest truncated, as there).
pub fn human_duration(secs: i64) -> String {
    let s = secs.max(0);
    let minutes = s / 60;
    let hours = (s + 1800) / 3600;
    if s < 1 {
        "Less than a second".into()
    } else if s == 1 {
        "1 second".into()
    } else if s < 60 {
        format!("{s} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", s / 3600 / 24 / 365)
    }
}

/// `2 hours ago`, as Docker's CREATED columns; empty for a missing or bad time.
pub fn since(rfc3339: Option<&str>) -> String {
    match rfc3339.and_then(parse_time) {
        Some(t) => format!("{} ago", human_duration(now() - t)),
        None => String::new(),
    }
}

/// Go's `time.Time.String()` in UTC (`2023-11-14 22:13:20 +0000 UTC`), Docker's
/// `CreatedAt`; the input as given when it is no RFC 3339 time.
pub fn go_time(rfc3339: &str) -> String {
    match parse_time(rfc3339) {
        Some(t) => {
            let iso = layer_cache::image::rfc3339(t);
            format!("{} {} +0000 UTC", &iso[..10], &iso[11..19])
        }
        None => rfc3339.to_string(),
    }
}

/// go-units' `HumanSizeWithPrecision(size, 3)`: `4.86MB`, `128kB`, `0B`.
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{}{}", go_g3(v), UNITS[u])
}

/// Go's `%.3g` for 0 <= v < 1000: three significant digits, no trailing zeros.
fn go_g3(v: f64) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = v.abs().log10().floor() as i32 + 1;
    let decimals = (3 - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const LAYOUT: Layout = Layout {
        default: "table {{.Repository}}\\t{{.Tag}}\\t{{.ID}}",
        headers: &[("Repository", "REPOSITORY"), ("ID", "IMAGE ID")],
    };

    fn rows() -> Vec<Value> {
        vec![
            json!({"Repository": "busybox", "Tag": "latest", "ID": "0123456789ab", "Env": ["A=1", "B=2"]}),
            json!({"Repository": "localhost:5000/team/app", "Tag": "1", "ID": "ba9876543210", "Env": []}),
        ]
    }

    fn render(spec: Option<&str>) -> Result<String> {
        Format::parse(spec, &LAYOUT)?.render(&rows())
    }

    #[test]
    fn the_default_and_table_formats_align_as_dockers_tabwriter() {
        let expected = "REPOSITORY                TAG       IMAGE ID\n\
                        busybox                   latest    0123456789ab\n\
                        localhost:5000/team/app   1         ba9876543210\n";
        assert_eq!(render(None).unwrap(), expected);
        assert_eq!(render(Some("table")).unwrap(), expected);
        assert_eq!(
            render(Some("table {{.Tag}}\t{{.ID}}")).unwrap(),
            "TAG       IMAGE ID\nlatest    0123456789ab\n1         ba9876543210\n"
        );
    }

    #[test]
    fn templates_print_fields_json_and_escapes() {
        assert_eq!(
            render(Some("{{.Repository}}:{{.Tag}}\\t{{json .Env}}")).unwrap(),
            "busybox:latest\t[\"A=1\",\"B=2\"]\nlocalhost:5000/team/app:1\t[]\n"
        );
        assert_eq!(
            render(Some("{{.Env}} {{join .Env \",\"}} {{upper .Tag}}")).unwrap(),
            "[A=1 B=2] A=1,B=2 LATEST\n[]  1\n"
        );
        assert_eq!(
            render(Some("{{.Tag -}}  ,  {{- .ID}}")).unwrap(),
            "latest,0123456789ab\n1,ba9876543210\n"
        );
        let j = render(Some("json")).unwrap();
        let first: Value = serde_json::from_str(j.lines().next().unwrap()).unwrap();
        assert_eq!(first, rows()[0]);
        assert_eq!(render(Some("{{json .}}")).unwrap(), j);
    }

    #[test]
    fn unknown_fields_and_actions_are_errors_naming_them() {
        let e = render(Some("{{.Nope}}")).unwrap_err().to_string();
        assert!(e.contains("\"Nope\"") && e.contains("Repository"), "{e}");
        let e = render(Some("{{.Repository.X}}")).unwrap_err().to_string();
        assert!(e.contains("\"X\""), "{e}");
        let e = render(Some("{{range .Env}}")).unwrap_err().to_string();
        assert!(e.contains("unsupported action"), "{e}");
        assert!(render(Some("{{.Tag")).is_err());
    }

    #[test]
    fn inspect_paths_reach_nested_values() {
        let doc = json!({"Config": {"config": {"Env": ["PATH=/bin"], "Labels": {"a": "1"}}}});
        let f = Format::parse(
            Some("{{.Config.config.Env}} {{json .Config.config.Labels}}"),
            &LAYOUT,
        )
        .unwrap();
        assert_eq!(f.render_one(&doc).unwrap(), "[PATH=/bin] {\"a\":\"1\"}\n");
    }

    #[test]
    fn durations_follow_go_units() {
        let cases = [
            (0, "Less than a second"),
            (1, "1 second"),
            (59, "59 seconds"),
            (60, "About a minute"),
            (119, "About a minute"),
            (120, "2 minutes"),
            (3599, "59 minutes"),
            (3600, "About an hour"),
            (5399, "About an hour"),
            (5400, "2 hours"),
            (47 * 3600, "47 hours"),
            (48 * 3600, "2 days"),
            (14 * 86400, "2 weeks"),
            (60 * 86400, "2 months"),
            (2 * 365 * 86400, "2 years"),
        ];
        for (s, want) in cases {
            assert_eq!(human_duration(s), want, "{s}");
        }
    }

    #[test]
    fn sizes_and_times_print_as_docker() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(4_860_000), "4.86MB");
        assert_eq!(human_size(1_234_567), "1.23MB");
        assert_eq!(human_size(128_000_000), "128MB");
        assert_eq!(
            go_time("2023-11-14T22:13:20Z"),
            "2023-11-14 22:13:20 +0000 UTC"
        );
    }
}
