//! Registry commands: pull, push, copy, login, logout, tags, digest, delete.
//! registry-client speaks the protocol, `ops::registry` runs the transfers over
//! the store; this file parses arguments, handles signals and picks the view.

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use layer_cache::ImageRef;
use ops::store_io::local_name;
use registry_client::auth::CredentialStore;
use registry_client::reference::normalize_registry;
use registry_client::transfer::{Action, TransferEvent, TransferReporter};
use registry_client::{Client, Reference};

use crate::progress::Event;
pub use crate::progress::ProgressMode;
use crate::transfer_view::TransferView;
use crate::Globals;

#[derive(clap::Args, Debug, Clone, Default)]
pub struct RegistryOpts {
    /// Allow plain HTTP or unverified HTTPS for this registry (host[:port]); repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    pub insecure: Vec<String>,
}

/// How a pull or push reports its transfers, as `build --progress` does.
#[derive(clap::Args, Debug, Clone)]
pub struct ProgressOpts {
    /// Progress output: auto, tty, plain, json or quiet (auto: byte counters on a terminal unless CI is set, else plain lines; tty: byte counters, even in CI)
    #[arg(long, value_enum, default_value_t)]
    progress: ProgressMode,
    /// No progress output (same as --progress=quiet)
    #[arg(short, long)]
    quiet: bool,
}

impl ProgressOpts {
    fn mode(&self) -> Result<ProgressMode> {
        crate::progress::start(
            self.progress,
            self.quiet,
            crate::progress::Command::Transfer,
        )
    }
}

#[derive(clap::Args, Debug)]
pub struct PullArgs {
    /// Image to pull (name[:tag][@digest])
    reference: String,
    /// Platform to pick from a multi-platform image (os/arch[/variant])
    #[arg(long)]
    platform: Option<String>,
    /// Pull every tag of the repository REFERENCE names
    #[arg(short = 'a', long)]
    all_tags: bool,
    #[command(flatten)]
    progress: ProgressOpts,
    #[command(flatten)]
    opts: RegistryOpts,
}

#[derive(clap::Args, Debug)]
pub struct PushArgs {
    /// Local image to push
    image: String,
    /// Destination (default: the image's own name)
    dest: Option<String>,
    /// Codec of the layers built here, which the store keeps uncompressed: gzip, zstd or uncompressed (default: the build's --compression)
    #[arg(long = "compression-format", alias = "compression", value_parser = ["gzip", "zstd", "uncompressed"])]
    compression: Option<String>,
    /// Compression level (gzip 0-9, zstd 1-22; default: the build's)
    #[arg(long)]
    compression_level: Option<u32>,
    /// Re-encode pulled layers too, to the codec asked for
    #[arg(long)]
    force_compression: bool,
    #[command(flatten)]
    progress: ProgressOpts,
    #[command(flatten)]
    opts: RegistryOpts,
}

#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Source: [docker://]REF, oci:DIR[:TAG], oci-archive:FILE[:TAG] or docker-archive:FILE[:NAME]
    src: String,
    /// Destination, in the same forms as the source
    dst: String,
    /// Copy every platform of a multi-platform image (keeps the index digest)
    #[arg(long)]
    all_platforms: bool,
    /// Platform to copy from a multi-platform image (os/arch[/variant])
    #[arg(long)]
    platform: Option<String>,
    /// Copy every tag of the source repository to the destination repository, each with all its platforms
    #[arg(short = 'a', long, conflicts_with_all = ["platform", "all_platforms"])]
    all_tags: bool,
    #[command(flatten)]
    opts: RegistryOpts,
}

#[derive(clap::Args, Debug)]
pub struct LoginArgs {
    /// Registry host (docker.io when omitted)
    registry: Option<String>,
    /// Username
    #[arg(short = 'u', long)]
    username: Option<String>,
    /// Read the password from standard input
    #[arg(long)]
    password_stdin: bool,
    #[command(flatten)]
    opts: RegistryOpts,
}

#[derive(clap::Args, Debug)]
pub struct LogoutArgs {
    /// Registry host (docker.io when omitted)
    registry: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RefArgs {
    /// Image or repository in a registry
    reference: String,
    #[command(flatten)]
    opts: RegistryOpts,
}

pub fn client(opts: &RegistryOpts) -> Arc<Client> {
    ops::registry::client(&opts.insecure)
}

fn parse_ref(s: &str) -> Result<Reference> {
    // `docker://` as skopeo writes a registry end.
    Ok(Reference::parse(s.strip_prefix("docker://").unwrap_or(s))?)
}

/// Runs `work` to its end or until SIGINT or SIGTERM, whichever comes first.
/// On a signal `work` is dropped at its current await: its ingest files are
/// removed and its locks released, and nothing it had not finished is tagged
/// (tags are written after the last await). `Err(code)` is the exit status.
pub(crate) fn until_interrupted<T, E: Into<anyhow::Error>>(
    rt: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<std::result::Result<T, i32>> {
    use tokio::signal::unix::{signal, SignalKind};
    rt.block_on(async {
        // Installed before any transfer starts, so no signal finds the default action.
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        tokio::select! {
            done = work => done.map(Ok).map_err(Into::into),
            _ = int.recv() => Ok(Err(130)),
            _ = term.recv() => Ok(Err(143)),
        }
    })
}

/// [`until_interrupted`] for work that uploads with `client`. However the work
/// ends (done, failed, or dropped at a signal), the upload sessions it left
/// open are then cancelled, so none waits on the registry for its purge.
pub(crate) fn uploading_until_interrupted<T, E: Into<anyhow::Error>>(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    work: impl std::future::Future<Output = std::result::Result<T, E>>,
) -> Result<std::result::Result<T, i32>> {
    let done = until_interrupted(rt, work);
    rt.block_on(client.cancel_open_uploads());
    done
}

pub fn pull(g: &Globals, a: &PullArgs) -> Result<i32> {
    if a.all_tags {
        let mode = a.progress.mode()?;
        return super::remote::pull_all_tags(g, &a.reference, a.platform.as_deref(), mode, &a.opts);
    }
    pull_with(g, a, true)
}

/// `run`'s pull of an image it does not have: the pull's progress, and no name on
/// standard output (the container's output goes there).
pub fn pull_for_run(g: &Globals, reference: &str, platform: Option<&str>) -> Result<i32> {
    let a = PullArgs {
        reference: reference.to_string(),
        platform: platform.map(str::to_string),
        all_tags: false,
        progress: ProgressOpts {
            progress: ProgressMode::default(),
            quiet: false,
        },
        opts: RegistryOpts::default(),
    };
    pull_with(g, &a, false)
}

fn pull_with(g: &Globals, a: &PullArgs, print_name: bool) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    let platform = ops::registry::want_platform(a.platform.as_deref())?;
    let mode = a.progress.mode()?;
    let store = g.store()?;
    let client = client(&a.opts);
    let view = Arc::new(TransferView::new(mode));
    view.event(TransferEvent::Start {
        action: Action::Pull,
        reference: &r,
    });
    let pulled = until_interrupted(
        &ops::registry::runtime()?,
        ops::registry::pull_into_store(&store, &client, &r, &platform, view.clone(), false),
    )?;
    let digest = match pulled {
        Ok(d) => d,
        Err(code) => {
            view.event(TransferEvent::Interrupted {
                action: Action::Pull,
                reference: &r,
                left: "nothing was tagged and partial downloads were removed",
            });
            return Ok(code);
        }
    };
    let size = store.blob_size(&digest)?.unwrap_or_default();
    view.event(TransferEvent::Finish {
        action: Action::Pull,
        reference: &r,
        digest: &digest,
        size,
    });
    if print_name {
        println!("{}", ImageRef::parse(&local_name(&r))?);
    }
    Ok(0)
}

pub fn push(g: &Globals, a: &PushArgs) -> Result<i32> {
    let dest = parse_ref(a.dest.as_deref().unwrap_or(&a.image))?;
    let mode = a.progress.mode()?;
    let store = g.store()?;
    let client = client(&a.opts);
    let convert = push_conversion(&store, a)?;
    let view = Arc::new(TransferView::new(mode));
    view.say(Event::push(&dest, Some(&a.image)));
    let pushed = uploading_until_interrupted(
        &ops::registry::runtime()?,
        &client,
        ops::registry::push_from_store(&store, &client, &a.image, &dest, &convert, view.clone()),
    )?;
    let digest = match pushed {
        Ok(d) => layer_cache::image::descriptor_digest(&d)?,
        Err(code) => {
            view.event(TransferEvent::Interrupted {
                action: Action::Push,
                reference: &dest,
                left: "blobs already uploaded stay in the registry; push again to finish",
            });
            return Ok(code);
        }
    };
    let size = store.blob_size(&digest)?.unwrap_or_default();
    view.event(TransferEvent::Finish {
        action: Action::Push,
        reference: &dest,
        digest: &digest,
        size,
    });
    println!("{digest}");
    Ok(0)
}

/// How `push` compresses: its flags, else the codec the image was built with.
fn push_conversion(
    store: &layer_cache::Store,
    a: &PushArgs,
) -> Result<layer_cache::convert::ConvertOptions> {
    let stored = store.resolve(&a.image)?;
    let built = store.export_codec(&layer_cache::image::descriptor_digest(&stored)?)?;
    let asked = ops::output::ExportOpts {
        compression: a.compression.as_deref().map(ops::output::codec_name),
        level: a.compression_level,
        force: a.force_compression,
        ..Default::default()
    };
    let codec = asked.codec(&built);
    if let (Some(why), Some(l)) = (codec.level_error(), codec.level) {
        bail!("--compression-level {l}: {why}");
    }
    Ok(asked.leaving(&built))
}

pub fn copy(a: &CopyArgs) -> Result<i32> {
    if a.all_tags {
        return super::remote::copy_all_tags(&a.src, &a.dst, &a.opts);
    }
    let (platform, all) = (a.platform.as_deref(), a.all_platforms);
    if let Some(code) = super::remote::copy_ends(&a.src, &a.dst, platform, all, &a.opts)? {
        return Ok(code);
    }
    let src = parse_ref(&a.src)?;
    let dst = ops::registry::copy_destination(&src, &parse_ref(&a.dst)?);
    let want = ops::registry::want_platform(a.platform.as_deref())?;
    let client = client(&a.opts);
    let view = Arc::new(TransferView::new(ProgressMode::Plain));
    view.say(Event::copy(&src, &dst));
    let work = ops::registry::copy(&client, &src, &dst, &want, a.all_platforms, view.clone());
    let digest = match uploading_until_interrupted(&ops::registry::runtime()?, &client, work)? {
        Ok(d) => d,
        Err(code) => {
            // The manifest goes last, so a stop before it leaves DST as it was.
            view.event(TransferEvent::Interrupted {
                action: Action::Copy,
                reference: &src,
                left: &format!("no manifest was written to {dst}"),
            });
            return Ok(code);
        }
    };
    view.say(Event::copied(&src, &dst, &digest));
    println!("{digest}");
    Ok(0)
}

fn read_password(prompt: &str) -> Result<String> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("no password given: use --password-stdin, or run in a terminal");
    }
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let old = rustix::termios::tcgetattr(&stdin).ok();
    if let Some(old) = &old {
        let mut t = old.clone();
        t.local_modes.remove(rustix::termios::LocalModes::ECHO);
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &t);
    }
    let mut line = String::new();
    let res = stdin.read_line(&mut line);
    if let Some(old) = &old {
        let _ = rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, old);
    }
    eprintln!();
    res.context("reading the password")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

pub fn login(a: &LoginArgs) -> Result<i32> {
    let registry = normalize_registry(a.registry.as_deref().unwrap_or("docker.io"));
    let username = match &a.username {
        Some(u) => u.clone(),
        None => {
            if !std::io::stdin().is_terminal() {
                bail!("no username given: use -u USER");
            }
            eprint!("Username: ");
            let _ = std::io::stderr().flush();
            let mut u = String::new();
            std::io::stdin()
                .read_line(&mut u)
                .context("reading the username")?;
            u.trim().to_string()
        }
    };
    if username.is_empty() {
        bail!("the username is empty");
    }
    let password = if a.password_stdin {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the password from standard input")?;
        s.trim_end_matches(['\r', '\n']).to_string()
    } else {
        read_password("Password: ")?
    };
    if password.is_empty() {
        bail!("the password is empty");
    }
    let saved_in = ops::registry::login(&registry, &username, &password, &a.opts.insecure)?;
    eprintln!("credentials saved in {saved_in}");
    println!("Login Succeeded");
    Ok(0)
}

pub fn logout(a: &LogoutArgs) -> Result<i32> {
    let registry = normalize_registry(a.registry.as_deref().unwrap_or("docker.io"));
    if CredentialStore::from_env().erase(&registry)? {
        println!("Removed login credentials for {registry}");
        Ok(0)
    } else {
        bail!("not logged in to {registry}")
    }
}

#[derive(clap::Args, Debug)]
pub struct TagsArgs {
    /// Repository in a registry
    reference: String,
    /// One tag a line (default), table, json (one object per line) or a Go template such as '{{.Repository}}:{{.Tag}}'
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
    #[command(flatten)]
    opts: RegistryOpts,
}

pub fn tags(a: &TagsArgs) -> Result<i32> {
    use crate::format::{Format, Layout};
    let table = matches!(a.format.as_deref().map(str::trim), Some("table"));
    let layout = Layout {
        default: if table {
            "table {{.Repository}}\\t{{.Tag}}"
        } else {
            "{{.Tag}}"
        },
        headers: &[("Repository", "REPOSITORY"), ("Tag", "TAG")],
    };
    let fmt = Format::parse(a.format.as_deref(), &layout)?;
    let r = parse_ref(&a.reference)?;
    let mut tags = ops::registry::runtime()?.block_on(client(&a.opts).list_tags(&r))?;
    // Pages of a list that changed meanwhile may overlap.
    tags.sort();
    tags.dedup();
    let repo = r.name();
    let rows: Vec<serde_json::Value> = tags
        .into_iter()
        .map(|t| serde_json::json!({"Repository": repo, "Tag": t}))
        .collect();
    let text = fmt.render(&rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(0)
}

pub fn digest(a: &RefArgs) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    println!(
        "{}",
        ops::registry::runtime()?.block_on(client(&a.opts).manifest_digest(&r))?
    );
    Ok(0)
}

pub fn delete(a: &RefArgs) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    let d = ops::registry::runtime()?.block_on(client(&a.opts).delete_manifest(&r))?;
    println!("Deleted {} ({d})", r);
    Ok(0)
}
