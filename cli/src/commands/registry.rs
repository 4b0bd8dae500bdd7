//! Registry commands: pull, push, copy, login, logout, tags, digest, delete.
//! registry-client speaks the protocol; this file wires it to the store.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::future::BoxFuture;
use futures_util::{StreamExt, TryStreamExt};
use layer_cache::image::descriptor as oci_descriptor;
use layer_cache::snapshot::SnapshotFeeder;
use layer_cache::{Digest, ImageRef, Store};
use registry_client::auth::{CredentialStore, Credentials};
use registry_client::manifest::{select_platform, MAX_MANIFEST};
use registry_client::reference::normalize_registry;
use registry_client::{
    BlobSource, Client, ClientOptions, Descriptor, Manifest, ManifestBody, Platform, PushOutcome,
    Reference,
};
use tokio::io::{AsyncRead, AsyncSeekExt};

pub use crate::progress::ProgressMode;
use crate::progress::{BlobAction, BlobBar, Event};
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

pub fn client(opts: &RegistryOpts) -> Client {
    let mut o = ClientOptions::from_env();
    o.insecure_registries = opts
        .insecure
        .iter()
        .map(|h| normalize_registry(h))
        .collect();
    Client::new(o)
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

fn digest_of(s: &str) -> Result<Digest> {
    s.parse::<Digest>().map_err(|e| anyhow!("{e}"))
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

/// Which repositories (per registry) hold which blobs, so a push to another
/// repository can mount instead of upload. A hint only: losing it costs an upload.
struct Sources(layer_cache::sources::RegistrySources);

impl Sources {
    fn load(store: &Store) -> Sources {
        Sources(layer_cache::sources::RegistrySources::load(store))
    }
    fn repos_on(&self, digest: &str, registry: &str) -> Vec<String> {
        self.0.repos_on(digest, registry)
    }
    fn add(&mut self, digest: &str, r: &Reference) {
        self.0.add(digest, &r.name())
    }
    fn save(&mut self) {
        // A hint: failing to keep it costs a later upload, not this command.
        let _ = self.0.save();
    }
}

/// A store blob as an upload source, counting what is read into a bar.
struct StoreBlob(PathBuf, Option<BlobBar>);

impl BlobSource for StoreBlob {
    fn open(
        &self,
        offset: u64,
    ) -> BoxFuture<'_, std::io::Result<Box<dyn AsyncRead + Send + Unpin>>> {
        Box::pin(async move {
            let mut f = tokio::fs::File::open(&self.0).await?;
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            Ok(match &self.1 {
                Some(bar) => {
                    // A retry starts again from where the registry stands.
                    bar.set_position(offset);
                    Box::new(Counted(f, bar.clone())) as Box<dyn AsyncRead + Send + Unpin>
                }
                None => Box::new(f),
            })
        })
    }
}

struct Counted<R>(R, BlobBar);

impl<R: AsyncRead + Unpin> AsyncRead for Counted<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.0).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &res {
            self.1.inc((buf.filled().len() - before) as u64);
        }
        res
    }
}

/// Another registry's blob as an upload source (registry-to-registry copy).
struct RemoteBlob<'a> {
    client: &'a Client,
    from: &'a Reference,
    digest: String,
}

impl BlobSource for RemoteBlob<'_> {
    fn open(
        &self,
        offset: u64,
    ) -> BoxFuture<'_, std::io::Result<Box<dyn AsyncRead + Send + Unpin>>> {
        Box::pin(async move {
            self.client
                .open_blob(self.from, &self.digest, offset)
                .await
                .map_err(std::io::Error::other)
        })
    }
}

fn want_platform(p: Option<&str>) -> Result<Platform> {
    Ok(match p {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    })
}

/// The platform's manifest when `m` is an index, else `m` itself.
async fn resolve_platform(
    client: &Client,
    r: &Reference,
    m: Manifest,
    want: &Platform,
) -> Result<Manifest> {
    let ManifestBody::Index { manifests } = m.body()? else {
        return Ok(m);
    };
    let chosen = select_platform(&manifests, want).ok_or_else(|| {
        let have: Vec<String> = manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        anyhow!(
            "{r}: no image for platform {want} (it has {})",
            have.join(", ")
        )
    })?;
    let child = client
        .get_manifest(&r.with_reference(None, Some(chosen.digest.clone())))
        .await?;
    if child.is_index() {
        bail!("{r}: nested indexes are not supported");
    }
    Ok(child)
}

pub use layer_cache::store::UPSTREAM_INDEX_ANNOTATION;

/// Pulls `r` into the store and tags it; returns the stored manifest's digest.
pub async fn pull_into_store(
    store: &Store,
    client: &Client,
    r: &Reference,
    platform: &Platform,
    mode: ProgressMode,
    unpack: bool,
) -> Result<String> {
    let _lock = store.usage_lock()?;
    let top = client.get_manifest(r).await?;
    let index = top.is_index().then(|| top.digest.clone());
    let m = resolve_platform(client, r, top, platform).await?;
    let ManifestBody::Image { config, layers } = m.body()? else {
        bail!("{r}: expected an image manifest");
    };
    let mut sources = Sources::load(store);
    let progress = &Progress::new(mode);
    // For a build, the config comes first: its diff_ids let each layer be unpacked
    // into its snapshot while it downloads, instead of read back afterwards.
    let mut diff_ids = Vec::new();
    if unpack {
        fetch_blob(store, client, r, &config, progress, None).await?;
        diff_ids = stored_diff_ids(store, &config, layers.len());
    }
    let jobs = layers
        .iter()
        .enumerate()
        .map(|(i, d)| (d, diff_ids.get(i).cloned().flatten()))
        .chain((!unpack).then_some((&config, None)))
        .map(|(d, diff_id)| fetch_blob(store, client, r, d, progress, diff_id));
    futures_util::stream::iter(jobs)
        .buffer_unordered(client.options().max_concurrent_per_host.max(1))
        .try_collect::<Vec<()>>()
        .await?;
    let blobs: Vec<&Descriptor> = std::iter::once(&config).chain(&layers).collect();
    let committed = store.write_blob(&m.bytes)?;
    if committed.digest.to_string() != m.digest {
        bail!("{r}: stored manifest digest differs from the registry's");
    }
    for d in blobs {
        sources.add(&d.digest, r);
    }
    sources.save();
    let mut desc = oci_descriptor(&m.media_type, &committed.digest, committed.size);
    // Only the chosen platform is stored, so the index is kept as a note of
    // where the image came from, never pushed: a push of this image sends the
    // platform manifest byte for byte, not an index missing its other platforms.
    if let Some(index) = index {
        let mut ann = std::collections::HashMap::new();
        ann.insert(UPSTREAM_INDEX_ANNOTATION.to_string(), index);
        desc.set_annotations(Some(ann));
    }
    if r.digest.is_none() || r.tag.is_some() {
        let local = ImageRef::parse(&local_name(r))?;
        store.set_tag(&local, &desc)?;
    }
    Ok(m.digest)
}

/// Pulls one blob into the store unless it is there; with `diff_id`, also unpacks
/// the layer into its snapshot on the way. Content that contradicts the config fails
/// the pull; any other failed unpack is left for the build, which unpacks from the
/// stored blob and reports the cause.
async fn fetch_blob(
    store: &Store,
    client: &Client,
    r: &Reference,
    d: &Descriptor,
    progress: &Progress,
    diff_id: Option<Digest>,
) -> Result<()> {
    let digest = digest_of(&d.digest)?;
    if store.has_blob(&digest) {
        progress.blob(Event::blob(BlobAction::Exists, r, d));
        return Ok(());
    }
    let mut feeder = match &diff_id {
        Some(id) => store.snapshot_feeder(id, d.size, &format!("layer {}", d.digest))?,
        None => None,
    };
    let mut w = store.ingest()?;
    let bar = progress.bar(d);
    let update = |n: u64| {
        if let Some(b) = &bar {
            b.set_position(n);
        }
    };
    let pulled = match feeder.as_mut() {
        Some(f) => {
            let mut tee = Tee(&mut w, f);
            client.pull_blob(r, d, &mut tee, &update).await
        }
        None => client.pull_blob(r, d, &mut w, &update).await,
    };
    if let Some(b) = &bar {
        b.finish_and_clear();
    }
    pulled?;
    w.commit(Some(&digest), Some(d.size))?;
    let unpacked = match feeder.map(|f| f.finish()) {
        Some(Ok(_)) => true,
        // The blob is what the manifest names, but not what the config says it
        // holds: the image is broken, so it is not tagged.
        Some(Err(e @ layer_cache::StoreError::DiffIdMismatch { .. })) => return Err(e.into()),
        Some(Err(e)) => {
            tracing::debug!("{}: unpacking while pulling failed: {e}", d.digest);
            false
        }
        None => false,
    };
    progress.blob(Event::blob(BlobAction::Pulled, r, d).unpacked(unpacked));
    Ok(())
}

/// The diff_ids of a stored config, one per layer (`None` where it cannot be read,
/// so that layer is simply not unpacked early).
fn stored_diff_ids(store: &Store, config: &Descriptor, layers: usize) -> Vec<Option<Digest>> {
    let ids = digest_of(&config.digest)
        .ok()
        .and_then(|c| store.read_blob(&c, layer_cache::image::MAX_JSON_BLOB).ok())
        .and_then(|b| layer_cache::image::ImageConfig::parse(&b, "config").ok())
        .map(|c| c.rootfs.diff_ids)
        .unwrap_or_default();
    if ids.len() != layers {
        return vec![None; layers];
    }
    ids.into_iter().map(Some).collect()
}

/// Writes to two writers: the blob's ingest file and its snapshot feeder.
struct Tee<'a>(
    &'a mut layer_cache::ingest::BlobWriter,
    &'a mut SnapshotFeeder,
);

impl std::io::Write for Tee<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        self.1.write_all(buf)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// A transfer's events into the process's view; `Quiet` keeps only warnings and
/// interruptions.
struct Progress {
    mode: ProgressMode,
}

impl Progress {
    fn new(mode: ProgressMode) -> Progress {
        Progress { mode }
    }

    fn emit(&self, e: &Event<'_>) {
        if self.mode != ProgressMode::Quiet || e.always_said() {
            crate::progress::emit(e);
        }
    }

    /// A warning: always shown (a JSON event in JSON mode), even when quiet.
    fn warn(&self, text: String) {
        self.emit(&Event::warning(text));
    }

    /// One blob's outcome.
    fn blob(&self, e: Event<'_>) {
        self.emit(&e);
    }

    /// The end of a pull or push (`pulled`, `pushed`).
    fn finish(&self, e: Event<'_>) {
        self.emit(&e);
    }

    /// Says the work was stopped by a signal, and what that left.
    fn interrupted(&self, action: &str, r: &Reference, left: &str) {
        self.emit(&Event::interrupted(action, r, left));
    }

    /// The start of a pull or push.
    fn start(&self, e: Event<'_>) {
        self.emit(&e);
    }

    /// `d`'s byte counter, where the view draws one.
    fn bar(&self, d: &Descriptor) -> Option<BlobBar> {
        live_progress(self.mode).then(|| BlobBar::new(d)).flatten()
    }
}

/// Byte counters only where the view draws them, and not for quiet work.
fn live_progress(mode: ProgressMode) -> bool {
    mode != ProgressMode::Quiet && crate::progress::draws_bytes()
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

/// The store's name for a registry reference (`busybox:latest`, `host:5000/app:1`).
pub fn local_name(r: &Reference) -> String {
    let repo = r.name();
    match (&r.tag, &r.digest) {
        (Some(t), _) => format!("{repo}:{t}"),
        (None, Some(d)) => format!("{repo}@{d}"),
        (None, None) => format!("{repo}:latest"),
    }
}

pub fn pull(g: &Globals, a: &PullArgs) -> Result<i32> {
    let r = parse_ref(&a.reference)?;
    let platform = want_platform(a.platform.as_deref())?;
    let mode = a.progress.mode()?;
    let store = g.store()?;
    let client = client(&a.opts);
    let progress = Progress::new(mode);
    progress.start(Event::pull(&r));
    let pulled = until_interrupted(
        &runtime()?,
        pull_into_store(&store, &client, &r, &platform, mode, false),
    )?;
    let digest = match pulled {
        Ok(d) => d,
        Err(code) => {
            progress.interrupted(
                "pull",
                &r,
                "nothing was tagged and partial downloads were removed",
            );
            return Ok(code);
        }
    };
    let size = store.blob_size(&digest_of(&digest)?)?.unwrap_or_default();
    progress.finish(Event::pulled(&r, &digest, size));
    println!("{}", ImageRef::parse(&local_name(&r))?);
    Ok(0)
}

/// Pushes one image manifest's blobs, then the manifest by `dest`.
async fn push_manifest_tree(
    store: &Store,
    client: &Client,
    sources: &mut Sources,
    dest: &Reference,
    m: &Manifest,
    progress: &Progress,
) -> Result<()> {
    match m.body()? {
        ManifestBody::Index { manifests } => {
            for child in &manifests {
                let d = digest_of(&child.digest)?;
                if client.has_manifest(dest, &child.digest).await? {
                    continue;
                }
                let bytes = store
                    .read_blob(&d, MAX_MANIFEST)
                    .with_context(|| format!("index entry {} is not in the store", child.digest))?;
                let cm = Manifest::new(bytes, Some(&child.media_type))?;
                Box::pin(push_manifest_tree(
                    store,
                    client,
                    sources,
                    &dest.with_reference(None, None),
                    &cm,
                    progress,
                ))
                .await?;
            }
        }
        ManifestBody::Image { config, layers } => {
            let blobs: Vec<Descriptor> = std::iter::once(config).chain(layers).collect();
            let mounts: Vec<Vec<String>> = blobs
                .iter()
                .map(|d| sources.repos_on(&d.digest, &dest.registry))
                .collect();
            let jobs = blobs.iter().zip(mounts).map(|(d, from)| async move {
                let path = store.blob_path(&digest_of(&d.digest)?);
                if !path.is_file() {
                    bail!("blob {} is not in the store", d.digest);
                }
                let bar = progress.bar(d);
                let pushed = client
                    .push_blob(dest, d, &StoreBlob(path, bar.clone()), &from)
                    .await;
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                match pushed? {
                    PushOutcome::Exists => progress.blob(Event::blob(BlobAction::Skipped, dest, d)),
                    PushOutcome::Mounted { from } => progress.blob(Event::mounted(dest, d, &from)),
                    PushOutcome::Uploaded { chunks } => {
                        progress.blob(Event::pushed_in(dest, d, u64::from(chunks)))
                    }
                }
                Ok(d.digest.clone())
            });
            let done: Vec<String> = futures_util::stream::iter(jobs)
                .buffer_unordered(client.options().max_concurrent_per_host.max(1))
                .try_collect()
                .await?;
            for d in done {
                sources.add(&d, dest);
            }
        }
    }
    client.put_manifest(dest, m).await?;
    Ok(())
}

/// Pushes a manifest whose config and layers are in the store (the build cache's
/// artifact) to `dest`, as `push` sends an image.
pub async fn push_manifest(
    store: &Store,
    client: &Client,
    dest: &Reference,
    m: &Manifest,
    mode: ProgressMode,
) -> Result<()> {
    let mut sources = Sources::load(store);
    push_manifest_tree(store, client, &mut sources, dest, m, &Progress::new(mode)).await?;
    sources.save();
    Ok(())
}

/// Pulls one blob of `r`'s repository into the store, verified, without progress
/// output (a build's imported cache layer, fetched while steps run).
pub async fn pull_blob_quietly(
    store: &Store,
    client: &Client,
    r: &Reference,
    d: &Descriptor,
) -> Result<()> {
    let progress = Progress::new(ProgressMode::Quiet);
    fetch_blob(store, client, r, d, &progress, None).await
}

/// Pushes a stored image to `dest`; returns the manifest digest.
pub async fn push_from_store(
    store: &Store,
    client: &Client,
    image: &str,
    dest: &Reference,
    mode: ProgressMode,
) -> Result<String> {
    let desc = store.resolve(image)?;
    let digest = layer_cache::image::descriptor_digest(&desc)?;
    let bytes = store.read_blob(&digest, MAX_MANIFEST)?;
    let m = Manifest::new(bytes, Some(desc.media_type().to_string().as_str()))?;
    let mut dest = dest.clone();
    if dest.tag.is_none() && dest.digest.is_none() {
        dest.tag = Some("latest".into());
    }
    let mut sources = Sources::load(store);
    let progress = Progress::new(mode);
    let upstream = desc
        .annotations()
        .as_ref()
        .and_then(|a| a.get(UPSTREAM_INDEX_ANNOTATION));
    if let (Some(index), Some(_)) = (upstream, &dest.tag) {
        // A platform pulled from an index, pushed back over that index: the other
        // platforms would vanish from the tag.
        if client.manifest_digest(&dest).await.ok().as_ref() == Some(index) {
            progress.warn(format!(
                "{dest} holds the multi-platform index {index} this image was pulled from; \
                 pushing replaces it with this one platform (`mybuild copy --all-platforms` \
                 moves the whole index)"
            ));
        }
    }
    push_manifest_tree(store, client, &mut sources, &dest, &m, &progress).await?;
    sources.save();
    Ok(m.digest)
}

pub fn push(g: &Globals, a: &PushArgs) -> Result<i32> {
    let dest = parse_ref(a.dest.as_deref().unwrap_or(&a.image))?;
    let mode = a.progress.mode()?;
    let store = g.store()?;
    let client = client(&a.opts);
    let progress = Progress::new(mode);
    progress.start(Event::push(&dest, Some(&a.image)));
    let pushed = uploading_until_interrupted(
        &runtime()?,
        &client,
        push_from_store(&store, &client, &a.image, &dest, mode),
    )?;
    let digest = match pushed {
        Ok(d) => d,
        Err(code) => {
            progress.interrupted(
                "push",
                &dest,
                "blobs already uploaded stay in the registry; push again to finish",
            );
            return Ok(code);
        }
    };
    let size = store.blob_size(&digest_of(&digest)?)?.unwrap_or_default();
    progress.finish(Event::pushed(&dest, &digest, size));
    println!("{digest}");
    Ok(0)
}

async fn copy_image(client: &Client, src: &Reference, dst: &Reference, m: &Manifest) -> Result<()> {
    if let ManifestBody::Image { config, layers } = m.body()? {
        let same = src.registry == dst.registry;
        let blobs: Vec<Descriptor> = std::iter::once(config).chain(layers).collect();
        let jobs = blobs.iter().map(|d| async move {
            let from = if same {
                vec![src.repository.clone()]
            } else {
                Vec::new()
            };
            let source = RemoteBlob {
                client,
                from: src,
                digest: d.digest.clone(),
            };
            let outcome = client.push_blob(dst, d, &source, &from).await?;
            let what = match outcome {
                PushOutcome::Exists => "skipped (exists)".to_string(),
                PushOutcome::Mounted { from } => format!("mounted from {from}"),
                PushOutcome::Uploaded { .. } => format!("copied {}", super::human_size(d.size)),
            };
            eprintln!("{}: {what}", short(&d.digest));
            Ok::<(), anyhow::Error>(())
        });
        futures_util::stream::iter(jobs)
            .buffer_unordered(client.options().max_concurrent_per_host.max(1))
            .try_collect::<Vec<()>>()
            .await?;
    }
    client.put_manifest(dst, m).await?;
    Ok(())
}

pub fn copy(a: &CopyArgs) -> Result<i32> {
    let src = parse_ref(&a.src)?;
    let mut dst = parse_ref(&a.dst)?;
    if dst.tag.is_none() && dst.digest.is_none() {
        dst.tag = Some(src.tag.clone().unwrap_or_else(|| "latest".into()));
    }
    let want = want_platform(a.platform.as_deref())?;
    let client = client(&a.opts);
    let work = async {
        let top = client.get_manifest(&src).await?;
        if top.is_index() && a.all_platforms {
            let ManifestBody::Index { manifests } = top.body()? else {
                unreachable!("is_index checked")
            };
            for child in &manifests {
                let cm = client
                    .get_manifest(&src.with_reference(None, Some(child.digest.clone())))
                    .await?;
                let child_dst = dst.with_reference(None, None);
                Box::pin(copy_image(&client, &src, &child_dst, &cm)).await?;
            }
            copy_image(&client, &src, &dst, &top).await?;
            Ok::<String, anyhow::Error>(top.digest)
        } else {
            let m = resolve_platform(&client, &src, top, &want).await?;
            copy_image(&client, &src, &dst, &m).await?;
            Ok(m.digest)
        }
    };
    let digest = match uploading_until_interrupted(&runtime()?, &client, work)? {
        Ok(d) => d,
        Err(code) => {
            // The manifest goes last, so a stop before it leaves DST as it was.
            Progress::new(ProgressMode::Plain).interrupted(
                "copy",
                &src,
                &format!("no manifest was written to {dst}"),
            );
            return Ok(code);
        }
    };
    eprintln!("copied {src} to {dst}");
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
    client: Client,
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
        Progress::new(self.mode).start(Event::pull(&r));
        if let Err(e) = self.rt.block_on(pull_into_store(
            &self.store,
            &self.client,
            &r,
            &platform,
            self.mode,
            true,
        )) {
            if let Ok(mut errs) = self.errors.lock() {
                errs.push(format!("pulling {reference}: {e:#}"));
            }
        }
    }

    pub fn push(&self, store: &Store, image: &str) -> Result<String> {
        let dest = parse_ref(image)?;
        Progress::new(self.mode).start(Event::push(&dest, None));
        self.rt.block_on(async {
            let pushed = push_from_store(store, &self.client, image, &dest, self.mode).await;
            // A failed blob drops its siblings mid-upload: cancel their sessions.
            self.client.cancel_open_uploads().await;
            pushed
        })
    }
}
