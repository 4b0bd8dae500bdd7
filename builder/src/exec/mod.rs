//! The executor: runs a [`StepGraph`] against the store. Each stage starts from
//! scratch, an image in the store, or another stage; config instructions edit the
//! image config; RUN runs in the [`sandbox`](crate::sandbox) on an overlay of the
//! stage's snapshots; COPY/ADD write into a fresh directory. A step's new directory
//! is diffed into a layer in one streaming pass and then kept as that layer's
//! snapshot, so nothing is unpacked twice.
//!
//! The step cache: before a step runs its key is computed ([`crate::cache`]) and looked
//! up in the store's index; a hit restores the recorded layer, snapshot and config
//! without reading the layer, a miss runs the step and records it. The first miss of
//! each stage is explained.

pub mod add;
mod cached;
pub use cached::NEW_INSTRUCTION;
pub mod chmod;
pub mod config;
pub mod copy;
mod copy_step;
pub mod fetch;
pub mod git;
mod history;
pub mod merged;
mod mounts;
mod platform_tag;
pub use platform_tag::PlatformTag;
mod run;
pub mod secret;
mod ssh;
pub mod ssh_agent;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use layer_cache::cache_index::CacheRecord;
use layer_cache::error::AtPath;
use layer_cache::image::{self, ContainerConfig, History, ImageConfig};
use layer_cache::layer::LayerOptions;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::stat_cache::StatCache;
use layer_cache::{Digest, Store, StoreError};

use crate::cache::{self, Inputs, KeyOptions, StepNote};
use crate::dockerfile::Command;
use crate::layer::diff::{self, DiffError};
use crate::plan::{Base, Platform, Source, Step, StepGraph, StepKind};
use crate::sandbox::{self, Network, Outcome, SandboxError, SandboxSpec, Stream};
use crate::users;

const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub struct BuildRequest<'a> {
    pub graph: &'a StepGraph,
    /// The build context directory.
    pub context: PathBuf,
    /// Its `.dockerignore` (or `<Dockerfile>.dockerignore`): what COPY may not see.
    pub dockerignore: Option<crate::ignore::Matcher>,
    /// The Dockerfile's name as the user gave it, for error locations.
    pub dockerfile: String,
    /// The `mybuild` binary, re-executed as the sandbox init.
    pub exe: PathBuf,
    /// `--network` for RUN steps that do not say.
    pub network: Network,
    /// `--allow`: entitlements RUN flags may use.
    pub allow: Entitlements,
    pub layer: LayerOptions,
    /// `--label`s added to the final image.
    pub labels: BTreeMap<String, String>,
    /// SOURCE_DATE_EPOCH: fixes `created` and clamps file times in new layers.
    pub source_date_epoch: Option<i64>,
    /// `--secret` values by id, for `RUN --mount=type=secret`; never written to an image.
    pub secrets: BTreeMap<String, secret::Secret>,
    /// `--add-host` entries (host, address), appended to every RUN's `/etc/hosts`.
    pub extra_hosts: Vec<(String, String)>,
    /// `--ssh` agent sockets by id, for `RUN --mount=type=ssh`.
    pub ssh: BTreeMap<String, PathBuf>,
    /// `--no-cache`: run every step (results are still recorded).
    pub no_cache: bool,
    /// `--no-cache-filter`: stages (by name or index) whose steps all run.
    pub no_cache_filter: Vec<String>,
    /// Local directory `--build-context`s by name ([`Source::NamedContext`]).
    pub named_contexts: BTreeMap<String, crate::context::NamedDir>,
    /// Base images the caller resolved for a platform: (reference, platform) → the
    /// stored manifest. A store tag names one platform's image, so a build using one
    /// name for two platforms needs this; other bases are looked up by name.
    pub base_images: BTreeMap<(String, String), Descriptor>,
    /// Where a cache hit's missing layer blob can be fetched from (`--cache-from`).
    pub layer_source: Option<&'a dyn LayerSource>,
    /// Where a new `type=cache` directory's imported contents come from
    /// (`--cache-from` of a cache exported with `cache-mounts=true`).
    pub cache_mount_source: Option<&'a dyn CacheMountSource>,
    /// The HTTP client ADD fetches URLs with; without one, ADD of a URL fails.
    pub http: Option<&'a dyn fetch::Fetch>,
    /// Told of each layer a step of the target stage (or a stage it is built
    /// FROM) writes or reuses from the cache, as soon as it is stored: `--push`
    /// compresses it while later steps run.
    pub layer_ready: Option<&'a dyn LayerReady>,
}

/// Hears of the final image's new layers as they are written.
pub trait LayerReady: Sync {
    fn layer_ready(&self, layer: &Descriptor, diff_id: &Digest);
}

/// The target stage and the stages it is built `FROM`: whose layers the image has.
fn target_chain(graph: &StepGraph) -> BTreeSet<usize> {
    let mut chain = BTreeSet::new();
    let mut stage = graph.stage(graph.target);
    while let Some(s) = stage {
        if !chain.insert(s.index) {
            break;
        }
        stage = match &s.base {
            Base::Stage { index } => graph.stage(*index),
            _ => None,
        };
    }
    chain
}

/// Fetches layer blobs of imported cache records on first use.
pub trait LayerSource: Sync {
    /// Puts the layer's blob in the store, verified; `false` when it cannot (the
    /// source reports why), so the step runs instead.
    fn fetch(&self, layer: &Descriptor) -> bool;
}

/// Fills new cache-mount directories from an imported cache.
pub trait CacheMountSource: Sync {
    /// Fills `dir` (new and empty, not yet visible to any step) with the imported
    /// contents of cache `id`. `false` when there are none or they could not be
    /// restored (the source reports why); `dir` is then empty again.
    fn restore(&self, id: &str, dir: &Path) -> bool;
}

/// Progress, as data; the cli renders it. Serialized, it is the build's part of
/// the progress schema (`--progress=json`, one object per line, `event` naming it).
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum BuildEvent<'a> {
    StepStarted {
        id: usize,
        stage: &'a str,
        text: &'a str,
    },
    /// A chunk of a RUN step's output (not split at lines).
    Output {
        id: usize,
        #[serde(serialize_with = "event_json::stream_name")]
        stream: Stream,
        #[serde(serialize_with = "event_json::lossy")]
        data: &'a [u8],
    },
    StepDone {
        id: usize,
        #[serde(rename = "elapsed_ms", serialize_with = "event_json::millis")]
        elapsed: Duration,
    },
    /// The step's result came from the cache; nothing ran. `linked`: a `--link`
    /// step's layer found by its own key after a step below it changed.
    StepCached {
        id: usize,
        #[serde(rename = "link_layer")]
        linked: bool,
    },
    /// The first step of a stage that missed the cache, and why.
    CacheMiss {
        id: usize,
        stage: &'a str,
        cause: &'a str,
    },
}

/// How [`BuildEvent`]'s fields read in JSON.
mod event_json {
    use std::time::Duration;

    use serde::Serializer;

    use crate::sandbox::Stream;

    pub fn stream_name<S: Serializer>(s: &Stream, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(match s {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        })
    }

    /// Output is bytes; JSON gets them as UTF-8, invalid sequences replaced.
    pub fn lossy<S: Serializer>(data: &&[u8], ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_str(&String::from_utf8_lossy(data))
    }

    pub fn millis<S: Serializer>(d: &Duration, ser: S) -> Result<S::Ok, S::Error> {
        ser.serialize_u64(d.as_millis() as u64)
    }
}

pub trait BuildReporter {
    fn event(&mut self, event: BuildEvent<'_>);
}

/// Reports nothing.
pub struct NoReporter;
impl BuildReporter for NoReporter {
    fn event(&mut self, _: BuildEvent<'_>) {}
}

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{location}: {step}: {source}")]
    Sandbox {
        location: String,
        step: String,
        #[source]
        source: SandboxError,
    },
    #[error(transparent)]
    Diff(#[from] DiffError),
    #[error(
        "{location}: {step}: process {command:?} did not complete successfully: exit code: {code}"
    )]
    RunFailed {
        location: String,
        step: String,
        command: String,
        code: i32,
    },
    #[error(
        "{location}: base image {reference:?} is not in the store (pull, import or load it first)"
    )]
    BaseNotFound { location: String, reference: String },
    #[error(
        "{location}: base image {reference:?} in the store is {have}, but this stage is built for \
         {want} (pull it for {want}, e.g. `mybuild pull --platform {want} {reference}`)"
    )]
    BasePlatform {
        location: String,
        reference: String,
        have: String,
        want: String,
    },
    #[error("{location}: {step}: exec {program}: exec format error: {why}")]
    ExecFormat {
        location: String,
        step: String,
        program: String,
        why: String,
    },
    #[error("{location}: {step}: {source}")]
    User {
        location: String,
        step: String,
        #[source]
        source: users::UserError,
    },
    #[error("{location}: {step}: {source}")]
    Copy {
        location: String,
        step: String,
        #[source]
        source: copy::CopyError,
    },
    #[error("{location}: {step}: --mount={mount}: {message}")]
    Mount {
        location: String,
        step: String,
        mount: String,
        message: String,
    },
    #[error("{location}: {step}: {source}")]
    Add {
        location: String,
        step: String,
        #[source]
        source: add::AddError,
    },
    #[error("{location}: {step}: mkdir {path}: not a directory")]
    Workdir {
        location: String,
        step: String,
        path: String,
    },
    #[error("{location}: {step}: {what} is not supported yet")]
    Unsupported {
        location: String,
        step: String,
        what: String,
    },
    #[error(
        "{location}: {step}: {what} needs the {entitlement} entitlement, which this build \
         was not given: build with --allow {entitlement}"
    )]
    Entitlement {
        location: String,
        step: String,
        what: String,
        entitlement: &'static str,
    },
}

/// What RUN steps may ask for beyond the default sandbox (`--allow`), as BuildKit's
/// entitlements.
#[derive(Debug, Clone, Copy, Default)]
pub struct Entitlements {
    /// `security.insecure`: `RUN --security=insecure`.
    pub security_insecure: bool,
    /// `network.host`: `RUN --network=host`.
    pub network_host: bool,
}

pub struct BuildResult {
    pub manifest: Descriptor,
    pub config: ImageConfig,
    /// Step-cache records this build used or wrote, for `--cache-to`.
    pub cache_keys: UsedKeys,
}

/// Cache keys of the records a build used or wrote (chained and `--link` keys; the
/// whole-build record is left out), each list sorted and without duplicates.
#[derive(Debug, Clone, Default)]
pub struct UsedKeys {
    /// The records that make up the final image: the target stage's and those of
    /// the stages it is built `FROM` (not stages only copied or mounted from).
    pub image: Vec<Digest>,
    /// Every built stage's records.
    pub all: Vec<Digest>,
    /// The ids of the `type=cache` mounts of every built stage's RUN steps, cached
    /// or run, sorted.
    pub cache_mounts: Vec<String>,
}

/// A stage as it grows: layers, their snapshots, the config.
#[derive(Clone, Default)]
struct StageState {
    layers: Vec<Descriptor>,
    /// Snapshot directories, bottom layer first.
    snapshots: Vec<PathBuf>,
    config: ImageConfig,
    /// Cache key of the state so far; `None` once a step could not be keyed.
    key: Option<Digest>,
    /// Some step of this state (or of a stage it builds on) ran instead of hitting.
    rebuilt: bool,
    /// Keys of the records the state's steps used or wrote (with those of the
    /// stage it is built FROM).
    cache_keys: Vec<Digest>,
    /// Ids of the cache mounts its RUN steps use (for `--cache-to cache-mounts=true`).
    cache_mounts: BTreeSet<String>,
}

impl StageState {
    fn topmost_first(&self) -> Vec<PathBuf> {
        self.snapshots.iter().rev().cloned().collect()
    }
    fn container(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }
}

struct Exec<'a> {
    store: &'a Store,
    req: &'a BuildRequest<'a>,
    reporter: &'a mut dyn BuildReporter,
    created: &'a str,
    next_id: &'a AtomicUsize,
    /// The build's key options with this stage's platform.
    key_opts: &'a KeyOptions,
    /// The platform this stage is built for.
    platform: &'a Platform,
    /// Stat caches of the build context and of stages COPY'd from, loaded when first
    /// needed, by the directory (or snapshot stack) they describe.
    stat: &'a Mutex<BTreeMap<PathBuf, StatCache>>,
    /// Steps that ran (missed the cache) in the whole build.
    ran: &'a AtomicUsize,
    /// URLs ADD downloaded in this build, by URL: fetched once, removed at the end.
    downloads: &'a Mutex<BTreeMap<String, std::sync::Arc<add::Download>>>,
    /// URLs a 304 confirmed in this build, not downloaded (yet): asked once per build.
    revalidated: &'a Mutex<BTreeMap<String, add::Unchanged>>,
    /// Git sources resolved to a commit in this build, by source: asked once per build.
    git: &'a Mutex<BTreeMap<String, git::Resolved>>,
    /// The stage's layers end up in the image (it is in [`target_chain`]).
    in_image: bool,
}

/// Per-stage cache state while its steps run.
struct StageCtx {
    name: String,
    /// Look nothing up (`--no-cache`, or the stage is in `--no-cache-filter`).
    no_lookup: bool,
    /// Why the stage's root differs from the last build, if known.
    base_cause: Option<String>,
    /// The stage's first miss was already explained.
    explained: bool,
}

/// An event as it crosses from a stage's thread to the thread that reports.
enum Msg {
    Started {
        id: usize,
        stage: String,
        text: String,
    },
    Output {
        id: usize,
        stream: Stream,
        data: Vec<u8>,
    },
    Done {
        id: usize,
        elapsed: Duration,
    },
    Cached {
        id: usize,
        linked: bool,
    },
    Miss {
        id: usize,
        stage: String,
        cause: String,
    },
    StageFinished {
        index: usize,
        result: Box<Result<StageState, BuildError>>,
    },
}

/// A stage thread's reporter: forwards owned events to the reporting thread.
struct Forward(mpsc::Sender<Msg>);

impl BuildReporter for Forward {
    fn event(&mut self, event: BuildEvent<'_>) {
        let msg = match event {
            BuildEvent::StepStarted { id, stage, text } => Msg::Started {
                id,
                stage: stage.to_string(),
                text: text.to_string(),
            },
            BuildEvent::Output { id, stream, data } => Msg::Output {
                id,
                stream,
                data: data.to_vec(),
            },
            BuildEvent::StepDone { id, elapsed } => Msg::Done { id, elapsed },
            BuildEvent::StepCached { id, linked } => Msg::Cached { id, linked },
            BuildEvent::CacheMiss { id, stage, cause } => Msg::Miss {
                id,
                stage: stage.to_string(),
                cause: cause.to_string(),
            },
        };
        let _ = self.0.send(msg);
    }
}

/// Runs the graph. Stages whose dependencies are built run at the same time, each on
/// its own thread; events reach `reporter` on the calling thread. After a failure no
/// new stage starts, running ones finish, and the first error is returned.
pub fn build(
    store: &Store,
    req: &BuildRequest,
    reporter: &mut dyn BuildReporter,
) -> Result<BuildResult, BuildError> {
    let _usage = store.usage_lock()?;
    let created = image::rfc3339(req.source_date_epoch.unwrap_or_else(image::build_time));
    let next_id = AtomicUsize::new(1);
    let ran = AtomicUsize::new(0);
    let stat: Mutex<BTreeMap<PathBuf, StatCache>> = Mutex::new(BTreeMap::new());
    let downloads = Mutex::new(BTreeMap::new());
    let revalidated = Mutex::new(BTreeMap::new());
    let git_refs = Mutex::new(BTreeMap::new());
    let key_opts = KeyOptions {
        // Replaced by each stage's own platform, so no step is shared across platforms.
        platform: Platform::host().to_string(),
        compression: format!("{:?}/{:?}", req.layer.compression, req.layer.level),
        source_date_epoch: req.source_date_epoch,
    };
    let mut done: BTreeMap<usize, StageState> = BTreeMap::new();
    let mut started: BTreeSet<usize> = BTreeSet::new();
    let mut failure: Option<BuildError> = None;
    let (tx, rx) = mpsc::channel::<Msg>();
    let in_image = target_chain(req.graph);
    std::thread::scope(|scope| {
        let mut running = 0usize;
        loop {
            if failure.is_none() {
                for stage in &req.graph.stages {
                    let ready = !started.contains(&stage.index)
                        && stage.depends_on.iter().all(|d| done.contains_key(d));
                    if !ready {
                        continue;
                    }
                    started.insert(stage.index);
                    running += 1;
                    // A stage sees the finished stages it depends on, nothing else.
                    let deps: BTreeMap<usize, StageState> = stage
                        .depends_on
                        .iter()
                        .filter_map(|d| done.get(d).map(|s| (*d, s.clone())))
                        .collect();
                    let tx = tx.clone();
                    let in_image = in_image.contains(&stage.index);
                    let (created, next_id, key_opts, stat, ran, downloads, revalidated, git) = (
                        &created,
                        &next_id,
                        &key_opts,
                        &stat,
                        &ran,
                        &downloads,
                        &revalidated,
                        &git_refs,
                    );
                    scope.spawn(move || {
                        let mut forward = Forward(tx.clone());
                        let stage_opts = key_opts.for_platform(&stage.stage_platform);
                        let mut ex = Exec {
                            store,
                            req,
                            reporter: &mut forward,
                            created,
                            next_id,
                            key_opts: &stage_opts,
                            platform: &stage.stage_platform,
                            stat,
                            ran,
                            downloads,
                            revalidated,
                            git,
                            in_image,
                        };
                        let result = ex.stage(stage, &deps);
                        let _ = tx.send(Msg::StageFinished {
                            index: stage.index,
                            result: Box::new(result),
                        });
                    });
                }
            }
            if running == 0 {
                break;
            }
            let Ok(msg) = rx.recv() else { break };
            match msg {
                Msg::Started { id, stage, text } => reporter.event(BuildEvent::StepStarted {
                    id,
                    stage: &stage,
                    text: &text,
                }),
                Msg::Output { id, stream, data } => reporter.event(BuildEvent::Output {
                    id,
                    stream,
                    data: &data,
                }),
                Msg::Done { id, elapsed } => reporter.event(BuildEvent::StepDone { id, elapsed }),
                Msg::Cached { id, linked } => reporter.event(BuildEvent::StepCached { id, linked }),
                Msg::Miss { id, stage, cause } => reporter.event(BuildEvent::CacheMiss {
                    id,
                    stage: &stage,
                    cause: &cause,
                }),
                Msg::StageFinished { index, result } => {
                    running -= 1;
                    match *result {
                        Ok(st) => {
                            done.insert(index, st);
                        }
                        Err(e) => {
                            failure.get_or_insert(e);
                        }
                    }
                }
            }
        }
    });
    // Stat caches are worth keeping even when a step failed.
    let saved = stat
        .into_inner()
        .map(|m| m.into_values().try_for_each(|mut c| c.save(store)))
        .unwrap_or(Ok(()));
    if let Some(e) = failure {
        return Err(e);
    }
    saved?;
    finish_image(store, req, done, ran.into_inner(), &created)
}

/// The target stage's image: the one made last time when no step ran and the
/// final key hits, else a new config (labels, creation time) and manifest, recorded
/// under the final key.
fn finish_image(
    store: &Store,
    req: &BuildRequest,
    mut done: BTreeMap<usize, StageState>,
    ran: usize,
    created: &str,
) -> Result<BuildResult, BuildError> {
    let mut st = done
        .remove(&req.graph.target)
        .ok_or_else(|| StoreError::invalid("build plan", "target stage was not built"))?;
    fn sorted<T: Ord>(items: impl Iterator<Item = T>) -> Vec<T> {
        items.collect::<BTreeSet<_>>().into_iter().collect()
    }
    let stages = || done.values().chain(std::iter::once(&st));
    let cache_keys = UsedKeys {
        image: sorted(st.cache_keys.iter().cloned()),
        all: sorted(stages().flat_map(|s| s.cache_keys.iter().cloned())),
        cache_mounts: sorted(stages().flat_map(|s| s.cache_mounts.iter().cloned())),
    };
    // A build where every step hit reuses the image it made last time: same digest,
    // and nothing but the tag is written.
    let final_key = st
        .key
        .as_ref()
        .map(|k| cache::final_key(k, &req.labels, &config_digest(&st.config)));
    if ran == 0 && !req.no_cache {
        if let Some(rec) = final_key
            .as_ref()
            .map(|k| store.cache_get(k))
            .transpose()?
            .flatten()
        {
            if let Some(m) = rec.manifest {
                if store.has_blob(&image::descriptor_digest(&m)?) {
                    let img = store.load_image(&m)?;
                    return Ok(BuildResult {
                        manifest: m,
                        config: img.config,
                        cache_keys,
                    });
                }
            }
        }
    }
    for (k, v) in &req.labels {
        st.container().labels.insert(k.clone(), v.clone());
    }
    st.config.created = Some(created.to_string());
    let manifest = store.write_image(&st.config, &st.layers)?;
    if let Some(key) = final_key {
        store.cache_put(&CacheRecord {
            key,
            step: format!("image {}", image::descriptor_digest(&manifest)?),
            layer: None,
            diff_id: None,
            config: None,
            history: None,
            manifest: Some(manifest.clone()),
            created: layer_cache::stat_cache::now_secs(),
            size: 0,
        })?;
    }
    Ok(BuildResult {
        manifest,
        config: st.config,
        cache_keys,
    })
}

impl Exec<'_> {
    /// Builds one stage from its base and the finished stages it depends on.
    fn stage(
        &mut self,
        stage: &crate::plan::PlannedStage,
        done: &BTreeMap<usize, StageState>,
    ) -> Result<StageState, BuildError> {
        let name = stage
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{}", stage.index));
        let location = format!("{}:{}", self.req.dockerfile, stage.span.start_line);
        let no_lookup = self.req.no_cache
            || self.req.no_cache_filter.iter().any(|f| {
                stage
                    .name
                    .as_deref()
                    .is_some_and(|n| n.eq_ignore_ascii_case(f))
                    || *f == stage.index.to_string()
            });
        let mut sc = StageCtx {
            name: name.clone(),
            no_lookup,
            base_cause: None,
            explained: false,
        };
        let mut st = match &stage.base {
            Base::Scratch => {
                let mut s = StageState::default();
                s.config.os = self.platform.os.clone();
                s.config.architecture = self.platform.architecture.clone();
                s.config.variant = self.platform.variant.clone();
                // BuildKit's empty image: WORKDIR / and the default PATH.
                let c = s.container();
                c.working_dir = Some("/".into());
                if self.platform.os != "windows" {
                    c.env.push(DEFAULT_PATH.into());
                }
                s.key = Some(cache::scratch_key(self.key_opts));
                s
            }
            Base::Stage { index } => done.get(index).cloned().ok_or_else(|| {
                StoreError::invalid(
                    "build plan",
                    format!("stage {index} used before it was built"),
                )
            })?,
            Base::Image { reference } => {
                let mut s = self.base_image(reference, &location)?;
                sc.base_cause = self.base_changed(reference)?;
                // BuildKit makes sure every stage has a PATH (but on Windows).
                let has_path = s.config.config.as_ref().is_some_and(|c| {
                    c.env
                        .iter()
                        .any(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == "PATH")
                });
                if !has_path && self.platform.os != "windows" {
                    s.container().env.push(DEFAULT_PATH.into());
                }
                s
            }
        };
        if let Base::Stage { index } = &stage.base {
            if st.rebuilt {
                sc.base_cause = Some(format!(
                    "base stage {} was rebuilt",
                    stage_name_of(self.req.graph, *index)
                ));
            }
        }
        // The base's ONBUILD triggers ran (the plan put them first): a child of this
        // stage must not run them again, as BuildKit clears them.
        if let Some(c) = st.config.config.as_mut() {
            c.on_build = None;
        }
        for step in &stage.steps {
            self.step(&mut sc, &mut st, step, done)?;
        }
        Ok(st)
    }
}

impl Exec<'_> {
    fn base_image(&mut self, reference: &str, location: &str) -> Result<StageState, BuildError> {
        let resolved = self
            .req
            .base_images
            .get(&(reference.to_string(), self.platform.to_string()))
            .cloned()
            .map(Ok);
        let desc = match resolved.unwrap_or_else(|| self.store.resolve(reference)) {
            Ok(d) => d,
            Err(StoreError::ImageNotFound(_)) | Err(StoreError::InvalidReference { .. }) => {
                return Err(BuildError::BaseNotFound {
                    location: location.to_string(),
                    reference: reference.to_string(),
                })
            }
            Err(e) => return Err(e.into()),
        };
        let img = self.store.load_image(&desc)?;
        let c = &img.config;
        // A tag holds one platform's image: never build on another platform's.
        if !c.is_for(self.platform) {
            let have = c.platform().normalized();
            return Err(BuildError::BasePlatform {
                location: location.to_string(),
                reference: reference.to_string(),
                have: have.to_string(),
                want: self.platform.to_string(),
            });
        }
        let layers = img.manifest.layers().clone();
        let diff_ids = img.config.rootfs.diff_ids.clone();
        if layers.len() != diff_ids.len() {
            return Err(StoreError::invalid(
                format!("image {reference}"),
                "layer count and diff_ids differ",
            )
            .into());
        }
        let mut snapshots = Vec::new();
        for (l, d) in layers.iter().zip(&diff_ids) {
            snapshots.push(self.store.ensure_snapshot(l, d)?);
        }
        Ok(StageState {
            layers,
            snapshots,
            config: img.config,
            key: Some(cache::image_key(&img.manifest_digest, self.key_opts)),
            rebuilt: false,
            cache_keys: Vec::new(),
            cache_mounts: BTreeSet::new(),
        })
    }

    fn history(&self, st: &mut StageState, created_by: String, empty: bool) {
        st.config.history.push(History {
            created: Some(self.created.to_string()),
            created_by: Some(created_by),
            comment: Some("buildkit.dockerfile.v0".into()),
            empty_layer: empty,
            ..History::default()
        });
    }

    fn step(
        &mut self,
        sc: &mut StageCtx,
        st: &mut StageState,
        step: &Step,
        done: &BTreeMap<usize, StageState>,
    ) -> Result<(), BuildError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let text = step.original.trim().to_string();
        let location = format!("{}:{}", self.req.dockerfile, step.span.start_line);
        let started = Instant::now();
        self.reporter.event(BuildEvent::StepStarted {
            id,
            stage: &sc.name,
            text: &text,
        });
        if let StepKind::Arg { args } = &step.kind {
            // ARG changes nothing but the history (no key, no record); its values
            // reach the keys of the RUN steps that see them. The final image's key
            // covers the history, so a changed ARG still makes a new image.
            let desc: Vec<String> = args
                .iter()
                .map(|(k, v)| match v {
                    Some(v) => format!("{k}={v}"),
                    None => k.clone(),
                })
                .collect();
            self.history(st, format!("ARG {}", desc.join(" ")), true);
            self.reporter.event(BuildEvent::StepDone {
                id,
                elapsed: started.elapsed(),
            });
            return Ok(());
        }
        // ADD of a URL without --checksum is keyed by the body: fetch it first (once
        // per build; the step uses the same file when it runs), or revalidate what the
        // last build fetched.
        // A git source is keyed by the commit its ref resolves to (ls-remote only; the
        // fetch waits until the step runs).
        let mut urls = Vec::new();
        if let StepKind::Add(c) = &step.kind {
            let add_err = |e| BuildError::Add {
                location: location.clone(),
                step: text.clone(),
                source: e,
            };
            if let Some(sum) = &c.checksum {
                add::validate_checksum(&c.sources, sum).map_err(add_err)?;
            }
            for src in c.sources.iter().filter(|s| add::is_git(s)) {
                let r = self.resolve_git(src).map_err(add_err)?;
                if let Some(sum) = &c.checksum {
                    git::verify_checksum(&r, sum).map_err(|e| add_err(add::AddError::Git(e)))?;
                }
            }
            if c.checksum.is_none() {
                urls = self
                    .url_inputs(sc, st, step, done, &c.sources)
                    .map_err(add_err)?;
            }
        }
        let keyed = self.step_key(st, step, done, &urls);
        if let StepKind::Run { mounts, .. } = &step.kind {
            let workdir = st
                .config
                .config
                .as_ref()
                .and_then(|c| c.working_dir.clone());
            st.cache_mounts
                .extend(mounts::cache_ids(mounts, workdir.as_deref()));
        }
        if let Some((key, _, _)) = keyed.as_ref().filter(|_| !sc.no_lookup) {
            if let Some(rec) = self.store.cache_get(key)? {
                if self.restore(st, &rec)? {
                    st.key = Some(key.clone());
                    st.cache_keys.push(key.clone());
                    self.reporter
                        .event(BuildEvent::StepCached { id, linked: false });
                    return Ok(());
                }
            }
        }
        // A --link layer does not depend on the image below: after a change further
        // up it is still found by its own key and put on the new parent.
        let link_key = keyed.as_ref().and_then(|k| self.link_key(st, step, k));
        let layers_before = st.layers.len();
        let history_before = st.config.history.len();
        let mut link_hit = false;
        if let Some(rec) = link_key
            .as_ref()
            .filter(|_| !sc.no_lookup)
            .map(|k| self.store.cache_get(k))
            .transpose()?
            .flatten()
        {
            link_hit = self.restore_link(st, &rec)?;
        }
        if link_hit {
            self.reporter
                .event(BuildEvent::StepCached { id, linked: true });
        } else {
            self.run_kind(sc, st, step, done, id, keyed.as_ref(), &location, &text)?;
            if let Some(lk) = &link_key {
                self.record_link(st, lk, &text, layers_before, history_before)?;
            }
        }
        if let Some(lk) = link_key {
            st.cache_keys.push(lk);
        }
        let parent_key = st.key.take();
        if let (Some(parent), Some((key, inputs, step_json))) = (parent_key, keyed) {
            self.record(st, &key, &text, layers_before, history_before)?;
            st.cache_keys.push(key.clone());
            let note = StepNote {
                key: key.clone(),
                step_json,
                inputs,
            };
            if let Ok(bytes) = serde_json::to_vec(&note) {
                self.store
                    .set_cache_note(&cache::step_note_name(&parent, &text), &bytes)?;
            }
            st.key = Some(key);
        }
        if !link_hit {
            self.reporter.event(BuildEvent::StepDone {
                id,
                elapsed: started.elapsed(),
            });
        }
        Ok(())
    }

    /// Runs a step that missed the cache, explaining the stage's first miss.
    #[allow(clippy::too_many_arguments)]
    fn run_kind(
        &mut self,
        sc: &mut StageCtx,
        st: &mut StageState,
        step: &Step,
        done: &BTreeMap<usize, StageState>,
        id: usize,
        keyed: Option<&(Digest, Inputs, String)>,
        location: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        let (location, text) = (location.to_string(), text.to_string());
        if !sc.explained {
            sc.explained = true;
            let cause = self.explain(sc, st, keyed, &text);
            self.reporter.event(BuildEvent::CacheMiss {
                id,
                stage: &sc.name,
                cause: &cause,
            });
        }
        self.ran.fetch_add(1, Ordering::Relaxed);
        st.rebuilt = true;
        match config::apply(&mut st.config, &step.kind) {
            config::Applied::History(created_by) => self.history(st, created_by, true),
            // BuildKit records no history for ONBUILD.
            config::Applied::Silent => {}
            config::Applied::Workdir(wd) => {
                if wd == "/" {
                    self.history(st, format!("WORKDIR {wd}"), true);
                } else {
                    self.workdir_layer(st, &wd, &location, &text)?;
                }
            }
            config::Applied::NotConfig => match &step.kind {
                StepKind::Run { .. } => {
                    self.run_step(id, st, &step.kind, done, &location, &text)?
                }
                StepKind::Copy(c) | StepKind::Add(c) => {
                    let is_add = matches!(step.kind, StepKind::Add(_));
                    self.copy_step(st, c, is_add, done, &location, &text)?
                }
                _ => {}
            },
        }
        Ok(())
    }

    /// WORKDIR makes its directory at once, as BuildKit's mkdir with parents: the
    /// missing directories (the path resolved through the image's symlinks, never
    /// leaving the root) are 0755 and owned by the USER in effect (a uid alone is
    /// also the gid), else root, in a layer of their own; parents that exist keep
    /// their owner, mode and time. No layer when the directory exists.
    fn workdir_layer(
        &mut self,
        st: &mut StageState,
        wd: &str,
        location: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let lowers = st.topmost_first();
        let user = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.user.clone())
            .unwrap_or_default();
        // BuildKit's mkdir takes the user as a chown option: a number alone is its
        // own group, as with `--chown`.
        let owner = if user.is_empty() {
            (0, 0)
        } else {
            copy_step::chown_ids(&user, &lowers).map_err(|e| BuildError::User {
                location: location.to_string(),
                step: text.to_string(),
                source: e,
            })?
        };
        let resolved = sandbox::resolve_in_layers(&lowers, wd);
        // Resolved, so no component is a symlink: never followed on the host.
        let in_image = |rel: &std::path::Path| {
            merged::lookup(&lowers, rel).and_then(|p| std::fs::symlink_metadata(p).ok())
        };
        if in_image(std::path::Path::new(resolved.trim_start_matches('/')))
            .is_some_and(|m| m.is_dir())
        {
            // Nothing to make, no layer.
            self.history(st, format!("WORKDIR {wd}"), true);
            return Ok(());
        }
        let upper = self.store.scratch_dir("workdir")?;
        let mut rel = PathBuf::new();
        let mut times = Vec::new();
        for part in resolved.split('/').filter(|p| !p.is_empty()) {
            rel.push(part);
            let here = upper.path().join(&rel);
            let existing = in_image(&rel);
            std::fs::create_dir(&here).at(&here)?;
            let (mode, (uid, gid), mtime) = match existing {
                Some(md) if md.is_dir() => {
                    (md.mode() & 0o7777, (md.uid(), md.gid()), Some(md.mtime()))
                }
                Some(_) => {
                    return Err(BuildError::Workdir {
                        location: location.to_string(),
                        step: text.to_string(),
                        path: format!("/{}", rel.display()),
                    })
                }
                None => (0o755, owner, None),
            };
            std::os::unix::fs::chown(&here, Some(uid), Some(gid)).at(&here)?;
            std::fs::set_permissions(&here, std::fs::Permissions::from_mode(mode)).at(&here)?;
            if let Some(t) = mtime {
                times.push((here.clone(), t));
            }
        }
        // Deepest first: making a child would move its parent's time again.
        for (dir, t) in times.iter().rev() {
            crate::mtime::set(dir, *t, 0).at(dir)?;
        }
        self.commit_layer(st, upper, format!("WORKDIR {wd}"))
    }

    /// Exec form as is; shell form through the stage's SHELL (default `/bin/sh -c`).
    fn argv(&self, st: &StageState, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(v) => v.clone(),
            Command::Shell(s) => {
                let mut shell = st
                    .config
                    .config
                    .as_ref()
                    .and_then(|c| c.shell.clone())
                    .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
                shell.push(s.clone());
                shell
            }
        }
    }

    /// Diffs a step's directory into a layer (or an empty-layer history entry) and keeps
    /// the directory as the layer's snapshot.
    fn commit_layer(
        &mut self,
        st: &mut StageState,
        dir: layer_cache::snapshot::ScratchDir,
        created_by: String,
    ) -> Result<(), BuildError> {
        let is_empty = fs_err::read_dir(dir.path())
            .map_err(StoreError::from)?
            .next()
            .is_none();
        if is_empty {
            self.history(st, created_by, true);
            return Ok(());
        }
        let opts = diff::DiffOptions {
            clamp_mtime: self.req.source_date_epoch,
        };
        let layer = crate::layer::write_layer(self.store, dir.path(), self.req.layer, &opts)
            .map_err(|e| match e {
                crate::layer::WriteLayerError::Store(e) => BuildError::Store(e),
                crate::layer::WriteLayerError::Diff(e) => BuildError::Diff(e),
            })?;
        let snapshot = self.store.commit_snapshot(dir, &layer.diff_id)?;
        if let (true, Some(hook)) = (self.in_image, self.req.layer_ready) {
            hook.layer_ready(&layer.descriptor(), &layer.diff_id);
        }
        st.layers.push(layer.descriptor());
        st.snapshots.push(snapshot);
        st.config.rootfs.diff_ids.push(layer.diff_id.clone());
        self.history(st, created_by, false);
        Ok(())
    }
}

/// A stage's name for messages: its `AS` name or its index.
fn stage_name_of(graph: &StepGraph, index: usize) -> String {
    graph
        .stage(index)
        .and_then(|s| s.name.clone())
        .unwrap_or_else(|| index.to_string())
}

/// WORKDIR and COPY destinations: absolute as given, else relative to the workdir.
fn resolve_path(workdir: Option<&str>, path: &str) -> String {
    let joined = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{}/{}", workdir.unwrap_or("/").trim_end_matches('/'), path)
    };
    let mut out: Vec<&str> = Vec::new();
    for part in joined.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            p => out.push(p),
        }
    }
    format!("/{}", out.join("/"))
}

/// The config's digest without its times, which a rebuild from the cache makes anew:
/// it tells whether the image made last time is still the one this build makes.
fn config_digest(config: &ImageConfig) -> Digest {
    let mut c = config.clone();
    c.created = None;
    for h in &mut c.history {
        h.created = None;
    }
    Digest::of(&serde_json::to_vec(&c).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn resolves_destinations_against_workdir() {
        assert_eq!(super::resolve_path(Some("/app"), "src"), "/app/src");
        assert_eq!(super::resolve_path(Some("/app"), "/etc/x"), "/etc/x");
        assert_eq!(super::resolve_path(None, "../a/./b"), "/a/b");
        assert_eq!(super::resolve_path(Some("/a/b"), ".."), "/a");
    }
}
