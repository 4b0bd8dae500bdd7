//! `mybuild parse`: dump the parsed Dockerfile for tooling.
//!
//! Without flags it prints BuildKit's AST dump (the format of BuildKit's parser tests);
//! `--json` prints the syntax tree and the typed stages; `--plan` prints the step graph.

use builder::plan::{plan, NoBaseInfo, PlanOptions, Platform};
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ParseArgs {
    /// Print the parse as JSON
    #[arg(long)]
    pub json: bool,
    /// Print the planned step graph (JSON) instead of the syntax tree
    #[arg(long)]
    pub plan: bool,
    /// With --plan: the stage to build
    #[arg(long)]
    pub target: Option<String>,
    /// With --plan: NAME=VALUE build arguments
    #[arg(long = "build-arg", value_name = "NAME=VALUE")]
    pub build_args: Vec<String>,
    /// With --plan: the target platform (default: this machine's)
    #[arg(long)]
    pub platform: Option<String>,
    /// The Dockerfile to parse
    #[arg(default_value = "Dockerfile")]
    pub file: PathBuf,
}

pub fn run(args: &ParseArgs) -> anyhow::Result<i32> {
    let bytes = std::fs::read(&args.file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", args.file.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let name = args.file.display().to_string();
    // The plain dump is BuildKit's line parser alone: it accepts what only the instruction
    // layer rejects (e.g. a bare HEALTHCHECK), as `parser.Parse` does.
    if !args.json && !args.plan {
        return match builder::dockerfile::parse_ast(&text) {
            Ok(ast) => {
                print!("{}", ast.dump());
                Ok(0)
            }
            Err(_) => {
                match builder::dockerfile::parse(&text, &name) {
                    Err(e) => eprint!("{}", e.render()),
                    Ok(_) => eprintln!("error: {name}: parse failed"),
                }
                Ok(1)
            }
        };
    }
    let df = match builder::dockerfile::parse(&text, &name) {
        Ok(df) => df,
        Err(e) => {
            eprint!("{}", e.render());
            return Ok(1);
        }
    };
    if args.plan {
        let mut opts = PlanOptions {
            target: args.target.clone(),
            ..PlanOptions::default()
        };
        for a in &args.build_args {
            let (k, v) = match a.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (a.clone(), std::env::var(a).unwrap_or_default()),
            };
            opts.build_args.insert(k, v);
        }
        if let Some(p) = &args.platform {
            opts.target_platform =
                Platform::parse(p).map_err(|_| anyhow::anyhow!("invalid platform {p:?}"))?;
        }
        return match plan(&df, &opts, &NoBaseInfo) {
            Ok(g) => {
                for w in &g.warnings {
                    eprintln!("{}", w.message);
                }
                println!("{}", serde_json::to_string_pretty(&g)?);
                Ok(0)
            }
            Err(e) => {
                eprint!("{}", e.render());
                Ok(1)
            }
        };
    }
    // The line parser cannot fail where `parse` succeeded.
    let ast = builder::dockerfile::parse_ast(&text)?;
    let out = serde_json::json!({ "ast": ast, "dockerfile": df });
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(0)
}
