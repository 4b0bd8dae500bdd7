//! `mybuild cache ls` and the `--cache` side of `mybuild prune`.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Result};
use layer_cache::cache_index::CachePruneOptions;

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

/// `--keep-storage` and `--filter until=…` as store options.
pub fn prune_options(keep_storage: Option<&str>, filters: &[String]) -> Result<CachePruneOptions> {
    let mut opts = CachePruneOptions {
        keep_storage: keep_storage.map(parse_size).transpose()?,
        until: None,
    };
    for f in filters {
        match f.split_once('=') {
            Some(("until", d)) => opts.until = Some(parse_duration(d)?),
            _ => bail!("--filter {f:?}: only until=DURATION (e.g. until=24h) is supported"),
        }
    }
    Ok(opts)
}

/// `512MB`, `10GB`, `1.5GiB`, `100` (bytes); docker's units, 1000- or 1024-based.
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = match num.parse() {
        Ok(n) => n,
        Err(_) => bail!("invalid size {s:?}: expected a number with an optional unit (e.g. 10GB)"),
    };
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "m" | "mb" => 1e6,
        "g" | "gb" => 1e9,
        "t" | "tb" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        u => bail!("invalid size {s:?}: unknown unit {u:?}"),
    };
    Ok((n * mult) as u64)
}

/// `24h`, `90m`, `7d`, `1h30m`, `45s`.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let mut total = 0u64;
    let mut num = String::new();
    for c in s.trim().chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = match num.parse() {
            Ok(n) => n,
            Err(_) => bail!("invalid duration {s:?}: expected e.g. 24h, 30m, 7d"),
        };
        num.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => bail!("invalid duration {s:?}: unknown unit {c:?} (use s, m, h or d)"),
        };
    }
    if !num.is_empty() {
        bail!("invalid duration {s:?}: a number needs a unit (s, m, h or d)");
    }
    if total == 0 && !s.trim().starts_with('0') {
        bail!("invalid duration {s:?}: expected e.g. 24h, 30m, 7d");
    }
    Ok(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("10GB").unwrap(), 10_000_000_000);
        assert_eq!(parse_size("1.5KiB").unwrap(), 1536);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("ten").is_err());
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86400);
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert!(parse_duration("24").is_err());
        assert!(parse_duration("3y").is_err());
    }
}
