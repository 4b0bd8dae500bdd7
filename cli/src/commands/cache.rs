//! `mybuild cache ls`.

use std::io::Write;
use std::time::SystemTime;

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
}

pub fn run(g: &Globals, a: &CacheArgs) -> Result<i32> {
    match &a.command {
        CacheCommand::Ls(a) => ls(g, a),
    }
}

fn ls(g: &Globals, a: &LsArgs) -> Result<i32> {
    let store = g.store()?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{:<14} {:<10} {:<16} STEP", "KEY", "SIZE", "LAST USED")?;
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
        writeln!(
            out,
            "{key:<14} {:<10} {:<16} {step}",
            super::human_size(e.record.size),
            ago(e.last_used)
        )?;
    }
    Ok(0)
}

fn ago(t: SystemTime) -> String {
    let s = SystemTime::now()
        .duration_since(t)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match s {
        0..=59 => format!("{s} seconds ago"),
        60..=3599 => format!("{} minutes ago", s / 60),
        3600..=86399 => format!("{} hours ago", s / 3600),
        _ => format!("{} days ago", s / 86400),
    }
}
