//! Shell conventions: `completion`, `version`, man pages, and the message for a
//! first word that is neither a verb nor a build context.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;

/// The version line `--version` and `version` start with.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `--version`'s text: the version, then the commit, compiler and features.
pub fn long_version() -> &'static str {
    static TEXT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TEXT.get_or_init(|| {
        let i = Info::get();
        format!(
            "{}\ncommit: {}{}\nrustc: {}\nfeatures: {}",
            i.version,
            i.commit,
            if i.dirty { " (dirty)" } else { "" },
            i.rustc,
            if i.features.is_empty() {
                "none".to_string()
            } else {
                i.features.join(",")
            }
        )
    })
}

/// What the build script recorded about this binary.
struct Info {
    version: &'static str,
    commit: &'static str,
    dirty: bool,
    rustc: &'static str,
    features: Vec<&'static str>,
}

impl Info {
    fn get() -> Self {
        Info {
            version: VERSION,
            commit: env!("MYBUILD_GIT_COMMIT"),
            dirty: env!("MYBUILD_GIT_DIRTY") == "true",
            rustc: env!("MYBUILD_RUSTC_VERSION"),
            features: env!("MYBUILD_FEATURES")
                .split(',')
                .filter(|f| !f.is_empty())
                .collect(),
        }
    }
}

#[derive(clap::Args, Debug)]
pub struct VersionArgs {
    /// Output format: text or json
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    format: String,
}

pub fn version(a: &VersionArgs) -> Result<i32> {
    if a.format == "json" {
        let i = Info::get();
        let doc = serde_json::json!({
            "version": i.version,
            "commit": i.commit,
            "dirty": i.dirty,
            "rustc": i.rustc,
            "features": i.features,
        });
        println!("{doc}");
    } else {
        println!("mybuild {}", long_version());
    }
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct CompletionArgs {
    /// The shell to complete for
    shell: clap_complete::Shell,
}

pub fn completion(a: &CompletionArgs) -> Result<i32> {
    use std::io::Write;
    let mut cmd = crate::Cli::command();
    // Into memory first: clap_complete panics on a write error (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(a.shell, &mut cmd, "mybuild", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing the completion script"))
        }
        _ => Ok(0),
    }
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Directory to write the pages to (default: share/man/man1 beside the
    /// binary's bin directory, where man finds pages for commands on PATH)
    dir: Option<PathBuf>,
}

/// Writes `mybuild.1` and one `mybuild-VERB.1` per verb (and sub-verb) into the
/// directory, from the same definition the arguments are parsed with.
pub fn man(a: &ManArgs) -> Result<i32> {
    let dir = match &a.dir {
        Some(d) => d.clone(),
        None => default_man_dir()?,
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), &dir)
        .with_context(|| format!("writing man pages to {}", dir.display()))?;
    println!("{}", dir.display());
    Ok(0)
}

/// `PREFIX/share/man/man1` for a binary in `PREFIX/bin` (man-db searches it for
/// every `PREFIX/bin` on PATH, so `~/.cargo/bin` needs no MANPATH).
fn default_man_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the mybuild binary")?;
    let prefix = exe
        .parent()
        .and_then(Path::parent)
        .context("the mybuild binary is not in a bin directory; name the directory")?;
    Ok(prefix.join("share/man/man1"))
}

/// The verbs a user can type: every subcommand's name and aliases (clap's
/// built-in `help` included).
pub fn verbs() -> Vec<String> {
    let cmd = crate::Cli::command();
    let mut out = vec!["help".to_string()];
    for sub in cmd.get_subcommands() {
        out.push(sub.get_name().to_string());
        out.extend(sub.get_all_aliases().map(str::to_string));
    }
    out
}

/// The closest visible verb, by clap's own measure (Jaro similarity above 0.7).
fn suggestion(word: &str) -> Option<String> {
    let cmd = crate::Cli::command();
    cmd.get_subcommands()
        .filter(|s| !s.is_hide_set())
        .flat_map(|s| std::iter::once(s.get_name()).chain(s.get_visible_aliases()))
        .map(|v| (strsim::jaro(v, word), v))
        .filter(|(score, _)| *score > 0.7)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, v)| v.to_string())
}

/// The usage error for a first word that is no verb and no build context.
pub fn unknown_command(word: &str) -> clap::Error {
    let mut text = format!("unknown command \"{word}\"");
    match suggestion(word) {
        Some(v) => text.push_str(&format!("; did you mean \"{v}\"?")),
        None => text.push_str(" (no verb, and no file or directory of that name to build)"),
    }
    text.push_str("\n\nRun 'mybuild --help' for the verbs.\n");
    clap::Error::raw(clap::error::ErrorKind::InvalidSubcommand, text)
        .with_cmd(&crate::Cli::command())
}
