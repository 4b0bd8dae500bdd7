//! Registry commands: pull, push, copy, login, logout, tags, digest, delete.
//! registry-client speaks the protocol and runs the transfers; this file parses
//! arguments, wires the store in (`store_io`), handles signals and picks the view.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use layer_cache::{Digest, ImageRef, Store};
use registry_client::auth::{CredentialStore, Credentials};
use registry_client::reference::normalize_registry;
use registry_client::transfer::{
    self, Action, Registry, Transfer, TransferEvent, TransferReporter,
};
use registry_client::{Client, ClientOptions, Descriptor, Manifest, Platform, Reference};

use crate::progress::Event;
pub use crate::progress::ProgressMode;
pub use crate::store_io::local_name;
use crate::store_io::StoreIo;
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
    #[command(flatten)]
    progress: ProgressOpts,
    #[command(flatten)]
    opts: RegistryOpts,
}

#[derive(clap::Args, Debug)]
pub struct CopyArgs {
    /// Source image in a registry
    src: String,
    /// Destination image in a registry
    dst: String,
    /// Copy every platform of a multi-platform image (keeps the index digest)
    #[arg(long)]
    all_platforms: bool,
    /// Platform to copy from a multi-platform image (os/arch[/variant])
    #[arg(long)]
    platform: Option<String>,
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
    let mut o = ClientOptions::from_env();
    o.insecure_registries = opts
        .insecure
        .iter()
        .map(|h| normalize_registry(h))
        .collect();
    Arc::new(Client::new(o))
}

pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn parse_ref(s: &str) -> Result<Reference> {
    Ok(Reference::parse(s)?)
}

fn want_platform(p: Option<&str>) -> Result<Platform> {
    Ok(match p {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    })
}

/// Transfers with `client`'s concurrency, told to `view`.
fn transfer(client: &Client, view: Arc<TransferView>) -> Transfer {
    Transfer::new(view, client.options().max_concurrent_per_host)
}

/// Pulls `r` into the store and tags it; returns the stored manifest's digest.
pub async fn pull_into_store(
    store: &Store,
    client: &Arc<Client>,
    r: &Reference,
    platform: &Platform,
    view: Arc<TransferView>,
    unpack: bool,
) -> Result<Digest> {
    let _lock = store.usage_lock()?;
    let io = Arc::new(StoreIo::new(store));
    let pulled = transfer::pull(
        &transfer(client, view),
        Arc::new(Registry::new(client.clone())),
        io.clone(),
        r,
        platform,
        unpack,
    )
    .await?;
    io.save_sources();
    Ok(pulled.manifest.digest)
}

/// Pushes a manifest whose config and layers are in the store (the build cache's
/// artifact) to `dest`, as `push` sends an image.
pub async fn push_manifest(
    store: &Store,
    client: &Arc<Client>,
    dest: &Reference,
    m: &Manifest,
    mode: ProgressMode,
) -> Result<()> {
    let io = Arc::new(StoreIo::new(store));
    let t = transfer(client, Arc::new(TransferView::new(mode)));
    let sink = Arc::new(Registry::new(client.clone()));
    transfer::push_tree(&t, io.clone(), sink, dest, dest, m).await?;
    io.save_sources();
    Ok(())
}

/// Pulls one blob of `r`'s repository into the store, verified, without progress
/// output (a build's imported cache layer, fetched while steps run).
pub async fn pull_blob_quietly(
    store: &Store,
    client: &Arc<Client>,
    r: &Reference,
    d: &Descriptor,
) -> Result<()> {
    let t = Transfer::quiet(1);
    let source = Registry::new(client.clone());
    transfer::transfer_blob(&t, &source, &StoreIo::blobs_only(store), r, d, None).await?;
    Ok(())
}

/// Pushes a stored image to `dest`; returns the manifest digest.
pub async fn push_from_store(
    store: &Store,
    client: &Arc<Client>,
    image: &str,
    dest: &Reference,
    view: Arc<TransferView>,
) -> Result<Digest> {
    let io = Arc::new(StoreIo::new(store));
    let (m, upstream) = io.image(image)?;
    let mut dest = dest.clone();
    if dest.tag.is_none() && dest.digest.is_none() {
        dest.tag = Some("latest".into());
    }
    let t = transfer(client, view);
    let sink = Arc::new(Registry::new(client.clone()));
    transfer::push(&t, io.clone(), sink, &dest, &dest, &m, upstream.as_ref()).await?;
    io.save_sources();
    Ok(m.digest)
}

/// Runs `work` to its end or until SIGINT or SIGTERM, whichever comes first.
/// On a signal `work` is dropped at its current await: its ingest files are
/// removed and its locks released, and nothing it had not finished is tagged
/// (tags are written after the last await). `Err(code)` is the exit status.
fn until_interrupted<T>(
    rt: &tokio::runtime::Runtime,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<std::result::Result<T, i32>> {
    use tokio::signal::unix::{signal, SignalKind};
    rt.block_on(async {
        // Installed before any transfer starts, so no signal finds the default action.
        let mut int = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let mut term = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        tokio::select! {
            done = work => done.map(Ok),
            _ = int.recv() => Ok(Err(130)),
            _ = term.recv() => Ok(Err(143)),
        }
    })
}

/// [`until_interrupted`] for work that uploads with `client`. However the work
/// ends (done, failed, or dropped at a signal), the upload sessions it left
/// open are then cancelled, so none waits on the registry for its purge.
fn uploading_until_interrupted<T>(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    work: impl std::future::Future<Output = Result<T>>,
) -> Result<std::result::Result<T, i32>> {
    let done = until_interrupted(rt, work);
    rt.block_on(client.cancel_open_uploads());
    done
}

pub fn pull(g: &Globals, a: &PullArgs) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    let platform = want_platform(a.platform.as_deref())?;
    let mode = a.progress.mode()?;
    let store = g.store()?;
    let client = client(&a.opts);
    let view = Arc::new(TransferView::new(mode));
    view.event(TransferEvent::Start {
        action: Action::Pull,
        reference: &r,
    });
    let pulled = until_interrupted(
        &runtime()?,
        pull_into_store(&store, &client, &r, &platform, view.clone(), false),
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
    println!("{}", ImageRef::parse(&local_name(&r))?);
    Ok(0)
}

pub fn push(g: &Globals, a: &PushArgs) -> Result<i32> {
    let dest = parse_ref(a.dest.as_deref().unwrap_or(&a.image))?;
    let mode = a.progress.mode()?;
    let store = g.store()?;
    let client = client(&a.opts);
    let view = Arc::new(TransferView::new(mode));
    view.say(Event::push(&dest, Some(&a.image)));
    let pushed = uploading_until_interrupted(
        &runtime()?,
        &client,
        push_from_store(&store, &client, &a.image, &dest, view.clone()),
    )?;
    let digest = match pushed {
        Ok(d) => d,
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

pub fn copy(a: &CopyArgs) -> Result<i32> {
    let src = parse_ref(&a.src)?;
    let mut dst = parse_ref(&a.dst)?;
    if dst.tag.is_none() && dst.digest.is_none() {
        dst.tag = Some(src.tag.clone().unwrap_or_else(|| "latest".into()));
    }
    let want = want_platform(a.platform.as_deref())?;
    let client = client(&a.opts);
    let view = Arc::new(TransferView::new(ProgressMode::Plain));
    view.say(Event::copy(&src, &dst));
    let registry = Arc::new(Registry::new(client.clone()));
    let t = transfer(&client, view.clone());
    let work = async {
        let copied = transfer::copy(
            &t,
            registry.clone(),
            registry.clone(),
            &src,
            &dst,
            &want,
            a.all_platforms,
        );
        Ok::<Digest, anyhow::Error>(copied.await?)
    };
    let digest = match uploading_until_interrupted(&runtime()?, &client, work)? {
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
    let mut o = ClientOptions::from_env();
    o.insecure_registries = a
        .opts
        .insecure
        .iter()
        .map(|h| normalize_registry(h))
        .collect();
    o.credential_override = Some((
        registry.clone(),
        Credentials::Basic {
            username: username.clone(),
            password: password.clone(),
        },
    ));
    let client = Client::new(o);
    match runtime()?.block_on(client.check_login(&registry)) {
        Ok(()) => {}
        Err(registry_client::Error::Unauthorized { .. }) => {
            bail!("logging in to {registry} as {username}: the registry refused the username or password")
        }
        Err(e) => {
            return Err(
                anyhow::Error::from(e).context(format!("logging in to {registry} as {username}"))
            )
        }
    }
    let store = CredentialStore::from_env();
    store.store(&registry, &username, &password)?;
    eprintln!(
        "credentials saved in {}",
        registry_client::auth::describe(&store, &registry)
    );
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

pub fn tags(a: &RefArgs) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    let mut tags = runtime()?.block_on(client(&a.opts).list_tags(&r))?;
    // Pages of a list that changed meanwhile may overlap.
    tags.sort();
    tags.dedup();
    let mut out = std::io::stdout().lock();
    for t in tags {
        writeln!(out, "{t}")?;
    }
    Ok(0)
}

pub fn digest(a: &RefArgs) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    println!(
        "{}",
        runtime()?.block_on(client(&a.opts).manifest_digest(&r))?
    );
    Ok(0)
}

pub fn delete(a: &RefArgs) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    let d = runtime()?.block_on(client(&a.opts).delete_manifest(&r))?;
    println!("Deleted {} ({d})", r);
    Ok(0)
}

/// Pulls bases for a build: missing ones always, all of them with `--pull`.
pub struct BasePuller {
    store: Store,
    client: Arc<Client>,
    rt: tokio::runtime::Runtime,
    always: bool,
    mode: ProgressMode,
    done: std::sync::Mutex<BTreeSet<String>>,
    pub errors: std::sync::Mutex<Vec<String>>,
}

impl BasePuller {
    pub fn new(
        store: &Store,
        always: bool,
        opts: &RegistryOpts,
        mode: ProgressMode,
    ) -> Result<BasePuller> {
        Ok(BasePuller {
            store: store.clone(),
            client: client(opts),
            rt: runtime()?,
            always,
            mode,
            done: Default::default(),
            errors: Default::default(),
        })
    }

    /// Makes `reference` available in the store (pulling it when needed).
    pub fn ensure(&self, reference: &str, platform: Option<Platform>) {
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        let platform = platform.unwrap_or_else(Platform::host);
        if !done.insert(format!("{reference} {platform}")) {
            return;
        }
        // A stored image of another platform is pulled again for this one.
        let stored = self.store.resolve(reference).ok().map(|d| {
            self.store
                .load_image(&d)
                .map_or(true, |img| img.config.is_for(&platform))
        });
        if !self.always && stored == Some(true) {
            return;
        }
        let Ok(r) = Reference::parse(reference) else {
            return;
        };
        let view = Arc::new(TransferView::new(self.mode));
        view.event(TransferEvent::Start {
            action: Action::Pull,
            reference: &r,
        });
        if let Err(e) = self.rt.block_on(pull_into_store(
            &self.store,
            &self.client,
            &r,
            &platform,
            view,
            true,
        )) {
            if let Ok(mut errs) = self.errors.lock() {
                errs.push(format!("pulling {reference}: {e:#}"));
            }
        }
    }

    pub fn push(&self, store: &Store, image: &str) -> Result<Digest> {
        let dest = parse_ref(image)?;
        let view = Arc::new(TransferView::new(self.mode));
        view.event(TransferEvent::Start {
            action: Action::Push,
            reference: &dest,
        });
        self.rt.block_on(async {
            let pushed = push_from_store(store, &self.client, image, &dest, view).await;
            // A failed blob drops its siblings mid-upload: cancel their sessions.
            self.client.cancel_open_uploads().await;
            pushed
        })
    }
}
