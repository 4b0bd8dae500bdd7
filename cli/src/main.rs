mod commands;
mod format;
mod progress;
mod transfer_view;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "mybuild",
    version = commands::shell::VERSION,
    long_version = commands::shell::long_version(),
    about = "Daemonless container image builder and registry toolkit"
)]
struct Cli {
    /// Store directory (default: $MYBUILD_ROOT, /var/lib/mybuild as root, else $XDG_DATA_HOME/mybuild)
    #[arg(long, global = true, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Print detailed logs (same as RUST_LOG=debug)
    #[arg(long, global = true)]
    debug: bool,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process; boxing the build flags would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Build an image from a Dockerfile (the default verb: `mybuild -t app:1 .`)
    Build(commands::build::BuildArgs),
    /// List tagged images
    Images(commands::store::ImagesArgs),
    /// Print an image's manifest and config as JSON
    Inspect(commands::store::InspectArgs),
    /// Give an image another name
    Tag(commands::store::TagArgs),
    /// Remove image tags
    Rmi(commands::store::RmiArgs),
    /// Remove blobs that no tag references (--cache: step cache records too)
    Prune(commands::store::PruneArgs),
    /// Inspect the step cache (`cache ls`)
    Cache(commands::cache::CacheArgs),
    /// Verify every blob and every tag in the store
    Fsck(commands::store::FsckArgs),
    /// Create a one-layer image from a rootfs tarball
    Import(commands::archive::ImportArgs),
    /// Write images to a tar that docker load and OCI tools accept
    Save(commands::archive::SaveArgs),
    /// Load images from a Docker or OCI archive
    Load(commands::archive::LoadArgs),
    /// Lint a Dockerfile
    Check(commands::check::CheckArgs),
    /// Parse a Dockerfile and print its syntax tree
    Parse(commands::parse::ParseArgs),
    /// Pull an image from a registry into the store
    Pull(commands::registry::PullArgs),
    /// Push an image from the store to a registry
    Push(commands::registry::PushArgs),
    /// Copy an image between registries (streaming, digests kept)
    Copy(commands::registry::CopyArgs),
    /// Log in to a registry
    Login(commands::registry::LoginArgs),
    /// Remove a registry's stored credentials
    Logout(commands::registry::LogoutArgs),
    /// List a repository's tags in a registry
    Tags(commands::registry::TagsArgs),
    /// Print the manifest digest of an image in a registry
    Digest(commands::registry::RefArgs),
    /// Delete an image (manifest) from a registry
    Delete(commands::registry::RefArgs),
    /// Run a command in a new container
    Run(commands::run::RunArgs),
    /// List containers
    Ps(commands::run_ps::PsArgs),
    /// Start stopped containers (same writable layer)
    Start(commands::run::StartArgs),
    /// Stop running containers (the image's STOPSIGNAL, then SIGKILL)
    Stop(commands::run_ps::StopArgs),
    /// Remove containers
    Rm(commands::run_ps::RmArgs),
    /// Print a container's output
    Logs(commands::run_ps::LogsArgs),
    /// Create a new image from a container's changes
    Commit(commands::container_image::CommitArgs),
    /// List the changes to files in a container's filesystem (A, C, D)
    Diff(commands::container_image::DiffArgs),
    /// Runs a detached container (internal)
    #[command(name = "__container-keeper", hide = true)]
    Keeper(commands::run::KeeperArgs),
    /// Run a command (default: $SHELL) in the user namespace a non-root user builds in, with $MYBUILD_ROOT set to the store
    Unshare(UnshareArgs),
    /// Show an image's history (its steps, newest first)
    History(commands::history::HistoryArgs),
    /// Print a shell completion script (bash, zsh or fish)
    #[command(alias = "completions")]
    Completion(commands::shell::CompletionArgs),
    /// Print the version, git commit, compiler and features of this binary
    Version(commands::shell::VersionArgs),
    /// Write the man pages, one per verb (internal; the install step runs it)
    #[command(name = "__man", hide = true)]
    Man(commands::shell::ManArgs),
    /// Print an image's manifest as a registry serves it (--raw: the exact bytes)
    Manifest(commands::remote::ManifestArgs),
    /// Print an image's config as a registry serves it (--raw: the exact bytes)
    Config(commands::remote::ConfigArgs),
    /// Create or inspect a multi-platform index (index create, index inspect)
    Index(commands::remote::IndexArgs),
}

#[derive(clap::Args, Debug)]
struct UnshareArgs {
    /// The command and its arguments
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CMD"
    )]
    command: Vec<std::ffi::OsString>,
}

const VERBS: &[&str] = &[
    "build",
    "images",
    "inspect",
    "tag",
    "rmi",
    "prune",
    "cache",
    "fsck",
    "import",
    "save",
    "load",
    "check",
    "parse",
    "pull",
    "push",
    "copy",
    "login",
    "logout",
    "tags",
    "digest",
    "delete",
    "unshare",
    "help",
    "run",
    "ps",
    "start",
    "stop",
    "rm",
    "logs",
    "commit",
    "diff",
    "__container-keeper",
    "history",
    "completion",
    "completions",
    "version",
    "__man",
    "manifest",
    "config",
    "index",
];

/// Verbs whose own failures exit with 125, as Docker's container commands do.
const CONTAINER_VERBS: &[&str] = &["run", "start"];

/// `mybuild -t app:1 .` means `mybuild build -t app:1 .`: insert the verb when the first
/// word after the global options is not one.
fn with_default_verb(mut args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--root" {
            i += 2;
        } else if a.starts_with("--root=") || a == "--debug" {
            i += 1;
        } else {
            break;
        }
    }
    match args.get(i).map(|a| a.to_string_lossy().into_owned()) {
        None => {}
        Some(a) if is_verb(&a) || ["-h", "--help", "-V", "--version"].contains(&a.as_str()) => {}
        // A word that is no verb and no context is reported as an unknown command
        // (see `work`), rather than being taken as the build context.
        Some(a) if unknown_word(&a) => {}
        Some(_) => args.insert(i, "build".into()),
    }
    args
}

fn is_verb(word: &str) -> bool {
    VERBS.contains(&word) || commands::shell::verbs().iter().any(|v| v == word)
}

/// A first word that is no verb and cannot be a build context: no flag, no `-`,
/// nothing on disk, and nothing a URL or git reference has (`/`, `.`, `:`).
fn unknown_word(word: &str) -> bool {
    !word.starts_with('-')
        && !word.contains(['/', '.', ':'])
        && std::fs::symlink_metadata(word).is_err()
        && !is_verb(word)
}

/// The verb the arguments name (after the global options), if any.
fn verb(args: &[std::ffi::OsString]) -> Option<String> {
    let args = with_default_verb(args.to_vec());
    let mut i = 1;
    while i < args.len() {
        let a = args[i].to_string_lossy();
        if a == "--root" {
            i += 2;
        } else if a.starts_with("--root=") || a == "--debug" {
            i += 1;
        } else {
            return Some(a.into_owned());
        }
    }
    None
}

/// Verbs that touch neither the store nor a sandbox: run as the user, outside.
const OUTSIDE: &[&str] = &[
    "help",
    "-h",
    "--help",
    "-V",
    "--version",
    "login",
    "logout",
    "check",
    "parse",
    "tags",
    "digest",
    "delete",
    "copy",
    "completion",
    "completions",
    "version",
    "__man",
    "manifest",
    "config",
];

/// Run as an ordinary user, re-executes this command in a user namespace where the
/// user is root (see `builder::rootless`) and ends as it ends. `None`: go on here
/// (root already, or a verb that needs no namespace). Must run before any thread
/// is started, so the process forked for it has one.
fn enter_user_namespace(args: &[std::ffi::OsString]) -> Option<std::process::ExitCode> {
    use builder::rootless;
    if rustix::process::geteuid().is_root() {
        return None;
    }
    match verb(args) {
        Some(v) if VERBS.contains(&v.as_str()) && !OUTSIDE.contains(&v.as_str()) => {}
        _ => return None,
    }
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        Some(std::process::ExitCode::from(1))
    };
    let plan = match rootless::plan() {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if let rootless::Mapping::Single(why) = &plan.mapping {
        eprintln!("warning: {why}");
    }
    // The store is chosen here: inside, the user is root and would get root's.
    let env = [("MYBUILD_ROOT".into(), default_root().into_os_string())];
    match rootless::run_in_namespace(&plan, args, &env) {
        Ok(status) => rootless::exit_as(status),
        Err(e) => fail(&e),
    }
}

/// `mybuild unshare [CMD...]`: replaces this process with CMD (default `$SHELL`,
/// else `/bin/sh`), `$MYBUILD_ROOT` naming the store.
fn unshare(g: &Globals, a: &UnshareArgs) -> anyhow::Result<i32> {
    use std::os::unix::process::CommandExt;
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let (program, rest) = match a.command.split_first() {
        Some((p, rest)) => (p.clone(), rest),
        None => (shell, &[][..]),
    };
    let err = std::process::Command::new(&program)
        .args(rest)
        .env("MYBUILD_ROOT", &g.root)
        .exec();
    Err(anyhow::Error::new(err).context(format!("running {}", program.to_string_lossy())))
}

/// Where the store lives when no `--root` is given.
fn default_root() -> PathBuf {
    if let Some(r) = std::env::var_os("MYBUILD_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(r);
    }
    if rustix::process::geteuid().is_root() {
        return PathBuf::from("/var/lib/mybuild");
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("mybuild");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".local/share/mybuild")
}

pub struct Globals {
    pub root: PathBuf,
}

impl Globals {
    pub fn store(&self) -> anyhow::Result<layer_cache::Store> {
        Ok(layer_cache::Store::open(&self.root)?.with_unpack_overrides(unpack_overrides()?))
    }
}

/// Layer unpack limits from `MYBUILD_UNPACK_MAX_BYTES` (a size such as `20GiB`)
/// and `MYBUILD_UNPACK_MAX_ENTRIES`, replacing the defaults.
fn unpack_overrides() -> anyhow::Result<layer_cache::store::UnpackOverrides> {
    use anyhow::Context;
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    let max_bytes = var("MYBUILD_UNPACK_MAX_BYTES")
        .map(|v| ops::store::parse_size(&v).context("MYBUILD_UNPACK_MAX_BYTES"))
        .transpose()?;
    let max_entries = var("MYBUILD_UNPACK_MAX_ENTRIES")
        .map(|v| {
            v.trim().parse::<u64>().with_context(|| {
                format!("MYBUILD_UNPACK_MAX_ENTRIES={v:?}: expected a whole number")
            })
        })
        .transpose()?;
    Ok(layer_cache::store::UnpackOverrides {
        max_bytes,
        max_entries,
    })
}

fn main() -> std::process::ExitCode {
    // The sandbox init must run before anything starts a thread.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == builder::sandbox::INIT_ARG) {
        builder::sandbox::init_main(&args);
    }
    if let Some(code) = enter_user_namespace(&args) {
        return code;
    }
    // The work runs on a thread with a known stack, whatever `ulimit -s` says:
    // parsing and expansion recurse (bounded, see `shell::MAX_NESTING`).
    let work = std::thread::Builder::new()
        .name("mybuild".into())
        .stack_size(WORK_STACK)
        .spawn(move || work(args));
    match work.map(|h| h.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(panic)) => std::panic::resume_unwind(panic),
        Err(e) => {
            eprintln!("error: starting the main thread: {e}");
            std::process::ExitCode::from(1)
        }
    }
}

/// The stack the cli's work gets: 64 MiB (only what is touched is committed).
const WORK_STACK: usize = 64 << 20;

fn work(args: Vec<std::ffi::OsString>) -> std::process::ExitCode {
    progress::start_clock();
    let first = verb(&args);
    if let Some(word) = first.as_deref().filter(|w| unknown_word(w)) {
        commands::shell::unknown_command(word).exit();
    }
    let container_verb = first.is_some_and(|v| CONTAINER_VERBS.contains(&v.as_str()));
    let cli = match Cli::try_parse_from(with_default_verb(args)) {
        Ok(cli) => cli,
        Err(e) if container_verb && e.use_stderr() => {
            // Docker's one line and 125 for a bad flag of run/start.
            let text = e.to_string();
            eprintln!("{}", text.lines().next().unwrap_or("error: bad arguments"));
            return std::process::ExitCode::from(125);
        }
        Err(e) => e.exit(),
    };
    let filter = if cli.debug {
        tracing_subscriber::EnvFilter::new("debug")
    } else {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
    let g = Globals {
        root: cli.root.clone().unwrap_or_else(default_root),
    };
    let result = match &cli.command {
        Command::Build(a) => commands::build::run(&g, a),
        Command::Images(a) => commands::store::images(&g, a),
        Command::Inspect(a) => commands::store::inspect(&g, a),
        Command::Tag(a) => commands::store::tag(&g, a),
        Command::Rmi(a) => commands::store::rmi(&g, a),
        Command::Prune(a) => commands::store::prune(&g, a),
        Command::Cache(a) => commands::cache::run(&g, a),
        Command::Fsck(a) => commands::store::fsck(&g, a),
        Command::Import(a) => commands::archive::import(&g, a),
        Command::Save(a) => commands::archive::save(&g, a),
        Command::Load(a) => commands::archive::load(&g, a),
        Command::Check(a) => commands::check::run(a),
        Command::Parse(a) => commands::parse::run(a),
        Command::Pull(a) => commands::registry::pull(&g, a),
        Command::Push(a) => commands::registry::push(&g, a),
        Command::Copy(a) => commands::registry::copy(a),
        Command::Login(a) => commands::registry::login(a),
        Command::Logout(a) => commands::registry::logout(a),
        Command::Tags(a) => commands::registry::tags(a),
        Command::Digest(a) => commands::registry::digest(a),
        Command::Delete(a) => commands::registry::delete(a),
        Command::Unshare(a) => unshare(&g, a),
        Command::Run(a) => commands::run::run(&g, a),
        Command::Ps(a) => commands::run_ps::ps(&g, a),
        Command::Start(a) => commands::run::start(&g, a),
        Command::Stop(a) => commands::run_ps::stop(&g, a),
        Command::Rm(a) => commands::run_ps::rm(&g, a),
        Command::Logs(a) => commands::run_ps::logs(&g, a),
        Command::Commit(a) => commands::container_image::commit_verb(&g, a),
        Command::Diff(a) => commands::container_image::diff_verb(&g, a),
        Command::Keeper(a) => commands::run::keeper(&g, a),
        Command::History(a) => commands::history::run(&g, a),
        Command::Completion(a) => commands::shell::completion(a),
        Command::Version(a) => commands::shell::version(a),
        Command::Man(a) => commands::shell::man(a),
        Command::Manifest(a) => commands::remote::manifest(a),
        Command::Config(a) => commands::remote::config(a),
        Command::Index(a) => commands::remote::index(&g, a),
    };
    match result {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("error: {}", error_text(&e));
            std::process::ExitCode::from(1)
        }
    }
}

/// The error and its causes on one line, leaving out a cause its parent's message
/// already spells out (library errors often embed their source).
fn error_text(e: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in e.chain() {
        let msg = cause.to_string();
        if text.contains(&msg) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&msg);
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_verb_decides_whether_to_enter_a_user_namespace() {
        let v = |args: &[&str]| {
            let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
            super::verb(&args)
        };
        assert_eq!(v(&["mybuild", "-t", "a:1", "."]).as_deref(), Some("build"));
        assert_eq!(
            v(&["mybuild", "--root", "/s", "--debug", "login"]).as_deref(),
            Some("login")
        );
        assert_eq!(
            v(&["mybuild", "--root=/s", "images"]).as_deref(),
            Some("images")
        );
        assert_eq!(v(&["mybuild", "--debug"]), None);
        for outside in [
            "login",
            "logout",
            "--help",
            "--version",
            "check",
            "copy",
            "completion",
            "completions",
            "version",
            "__man",
        ] {
            assert!(super::OUTSIDE.contains(&outside));
        }
        for inside in [
            "build", "images", "pull", "push", "prune", "rmi", "unshare", "load",
        ] {
            assert!(!super::OUTSIDE.contains(&inside) && super::VERBS.contains(&inside));
        }
    }

    #[test]
    fn only_a_word_that_cannot_be_a_context_is_left_to_fail_as_a_command() {
        let first = |args: &[&str]| {
            let args: Vec<std::ffi::OsString> = args.iter().map(|a| a.into()).collect();
            super::with_default_verb(args)[1]
                .to_string_lossy()
                .into_owned()
        };
        for context in [
            ".",
            "-",
            "-t",
            "sub/dir",
            "ctx.d",
            "git@example.com:a/b.git",
            "https://example.com/ctx.tar",
        ] {
            assert_eq!(first(&["mybuild", context]), "build", "{context}");
        }
        for verb in [
            "images",
            "completions",
            "version",
            "help",
            "imagse",
            "frobnicate",
        ] {
            assert_eq!(first(&["mybuild", verb]), verb);
        }
        assert!(super::unknown_word("imagse") && super::unknown_word("frobnicate"));
        assert!(!super::unknown_word("images") && !super::unknown_word("completions"));
    }

    #[test]
    fn error_text_drops_causes_already_in_the_message() {
        let e =
            anyhow::Error::new(std::io::Error::other("disk full")).context("writing x: disk full");
        assert_eq!(super::error_text(&e), "writing x: disk full");
        let e = anyhow::Error::new(std::io::Error::other("disk full")).context("writing x");
        assert_eq!(super::error_text(&e), "writing x: disk full");
    }
}
