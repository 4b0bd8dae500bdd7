//! `mybuild cache ls`.

use std::io::Write;
use std::time::UNIX_EPOCH;

use anyhow::Result;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct CacheArgs {
    #[command(subcommand)]
    command: CacheCommand,
}

#[derive(clap::Subcommand, Debug)]
enum CacheCommand {
    /// List step cache records, least recently used first
    Ls(LsArgs),
}

#[derive(clap::Args, Debug)]
struct LsArgs {
    /// Show full keys
    #[arg(long)]
    no_trunc: bool,
    /// table (default), json (one object per line) or a Go template such as '{{.Key}} {{.Step}}'
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
}

const LS_HEADERS: &[(&str, &str)] = &[
    ("Key", "KEY"),
    ("Size", "SIZE"),
    ("LastUsed", "LAST USED"),
    ("LastUsedAt", "LAST USED AT"),
    ("Step", "STEP"),
];

pub fn run(g: &Globals, a: &CacheArgs) -> Result<i32> {
    match &a.command {
        CacheCommand::Ls(a) => ls(g, a),
    }
}

fn ls(g: &Globals, a: &LsArgs) -> Result<i32> {
    use crate::format::{self, Format, Layout};
    let fmt = Format::parse(
        a.format.as_deref(),
        &Layout {
            default: "table {{.Key}}\\t{{.Size}}\\t{{.LastUsed}}\\t{{.Step}}",
            headers: LS_HEADERS,
        },
    )?;
    let store = g.store()?;
    let mut rows = Vec::new();
    for e in store.cache_list()? {
        let key = if a.no_trunc {
            e.record.key.to_string()
        } else {
            e.record.key.short().to_string()
        };
        let step: String = e
            .record
            .step
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let step = if !a.no_trunc && step.chars().count() > 60 {
            format!("{}…", step.chars().take(59).collect::<String>())
        } else {
            step
        };
        let used = e
            .last_used
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let used = layer_cache::image::rfc3339(used);
        rows.push(serde_json::json!({
            "Key": key,
            "LastUsed": format::since(Some(&used)),
            "LastUsedAt": format::go_time(&used),
            "Size": format::human_size(e.record.size),
            "Step": step,
        }));
    }
    let text = fmt.render(&rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(0)
}
