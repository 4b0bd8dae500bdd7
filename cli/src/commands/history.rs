//! `mybuild history`: an image's steps, newest first, in Docker's columns.

use std::io::Write;

use anyhow::Result;

use crate::format::{self, Format, Layout};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct HistoryArgs {
    /// Image name, name@digest or id (prefix)
    image: String,
    /// Do not truncate ids and CREATED BY
    #[arg(long)]
    no_trunc: bool,
    /// Show only image ids (`<missing>` for steps below the top)
    #[arg(short, long)]
    quiet: bool,
    /// Print sizes and dates in human-readable form (`-H=false`: bytes and RFC 3339)
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    human: bool,
    /// table (default), json (one object per line) or a Go template such as '{{.CreatedBy}}'
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
}

const HEADERS: &[(&str, &str)] = &[
    ("ID", "IMAGE"),
    ("CreatedSince", "CREATED"),
    ("CreatedAt", "CREATED AT"),
    ("CreatedBy", "CREATED BY"),
    ("Size", "SIZE"),
    ("Comment", "COMMENT"),
];

/// Times up to 2000-01-01 show as `N/A` in CREATED (a SOURCE_DATE_EPOCH of 0), as
/// Docker's history does.
const EPOCH: i64 = 946_684_800;

/// Docker's `Ellipsis(s, 45)` for CREATED BY.
const CREATED_BY_WIDTH: usize = 45;

pub fn run(g: &Globals, a: &HistoryArgs) -> Result<i32> {
    let default = if a.quiet {
        "{{.ID}}"
    } else {
        "table {{.ID}}\\t{{.CreatedSince}}\\t{{.CreatedBy}}\\t{{.Size}}\\t{{.Comment}}"
    };
    // As Docker: -q wins over --format.
    let spec = if a.quiet { None } else { a.format.as_deref() };
    let fmt = Format::parse(
        spec,
        &Layout {
            default,
            headers: HEADERS,
        },
    )?;
    let rows: Vec<serde_json::Value> = ops::images::history(&g.store()?, &a.image)?
        .into_iter()
        .map(|h| {
            let id = match &h.id {
                None => "<missing>".to_string(),
                Some(d) if a.no_trunc => d.to_string(),
                Some(d) => d.hex().get(..12).unwrap_or(d.hex()).to_string(),
            };
            let created_by = h.created_by.replace('\t', " ");
            let created_by = if a.no_trunc {
                created_by
            } else {
                ellipsis(&created_by, CREATED_BY_WIDTH)
            };
            let created = h.created.as_deref().and_then(format::parse_time);
            let created_at = created.map(layer_cache::image::rfc3339).unwrap_or_default();
            let since = match created {
                _ if !a.human => created_at.clone(),
                Some(t) if t <= EPOCH => "N/A".to_string(),
                Some(t) => format!("{} ago", format::human_duration(format::now() - t)),
                None => String::new(),
            };
            let size = if a.human {
                format::human_size(h.size)
            } else {
                h.size.to_string()
            };
            serde_json::json!({
                "Comment": h.comment,
                "CreatedAt": created_at,
                "CreatedBy": created_by,
                "CreatedSince": since,
                "ID": id,
                "Size": size,
            })
        })
        .collect();
    let text = fmt.render(&rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(0)
}

/// `s` cut to `width` characters, the last one an ellipsis, when longer.
fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut cut: String = s.chars().take(width - 1).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    #[test]
    fn created_by_is_cut_as_docker_cuts_it() {
        assert_eq!(super::ellipsis("abc", 45), "abc");
        let long = "x".repeat(50);
        let cut = super::ellipsis(&long, 45);
        assert_eq!(cut.chars().count(), 45);
        assert!(cut.ends_with('…'));
    }
}
