//! `mybuild check`: lint a Dockerfile with BuildKit's check rules.

use builder::diagnostic::{render_as, Location};
use builder::lint::{lint_text, LintReport, PathOnlyBases};
use builder::plan::{plan, PlanOptions};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile)
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Exit non-zero when any warning is reported
    #[arg(long)]
    pub fail_on_warning: bool,
    /// Print the findings as JSON
    #[arg(long)]
    pub json: bool,
    /// Build context directory
    #[arg(default_value = ".")]
    pub context: PathBuf,
}

pub fn run(args: &CheckArgs) -> anyhow::Result<i32> {
    let path = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let bytes =
        std::fs::read(&path).map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let name = path.display().to_string();
    // Without a registry, base images are taken to define PATH only (as BuildKit's lint
    // reference run did); UndefinedVar may differ for images that define more.
    let (report, parse_err) = lint_text(&text, &name, &PathOnlyBases);
    let mut failed = false;
    let mut error_text = None;
    if let Some(e) = &parse_err {
        failed = true;
        error_text = Some(e.render());
    } else if let Ok(df) = builder::dockerfile::parse(&text, &name) {
        let opts = PlanOptions {
            all_stages: true,
            ..PlanOptions::default()
        };
        if let Err(e) = plan(&df, &opts, &PathOnlyBases) {
            failed = true;
            error_text = Some(e.render());
        }
    }
    print_report(&name, &text, &report, error_text.as_deref(), args.json)?;
    failed |= report.error.is_some() || (args.fail_on_warning && !report.warnings.is_empty());
    Ok(i32::from(failed))
}

/// Prints lint findings as `mybuild check` (and `build --check`) shows them: one
/// located warning each and a count, or one JSON document; `error_text` is a parse
/// or plan error that stopped the check.
pub fn print_report(
    name: &str,
    text: &str,
    report: &LintReport,
    error_text: Option<&str>,
    json: bool,
) -> anyhow::Result<()> {
    if json {
        let out = serde_json::json!({
            "file": name,
            "warnings": report.warnings,
            "error": error_text.map(str::to_string).or(report.error.clone()),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for w in &report.warnings {
            let loc = Location::find(name, text, w.line, 1, None);
            let loc = Location {
                column: 1,
                len: loc.line_text.chars().count().max(1),
                ..loc
            };
            eprint!(
                "{}  = {}\n  = {}\n\n",
                render_as("warning", &format!("{}: {}", w.rule, w.detail), &loc),
                w.description,
                w.url
            );
        }
        if let Some(e) = error_text {
            eprint!("{e}");
        }
        if let Some(e) = &report.error {
            eprintln!("error: {e}");
        }
        if error_text.is_none() {
            let n = report.warnings.len();
            eprintln!(
                "Check complete, {} warning{} found",
                n,
                if n == 1 { " has been" } else { "s have been" }
            );
        }
    }
    Ok(())
}
