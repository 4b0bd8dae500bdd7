//! A build's orchestration around the builder: the values of its options, the
//! context and Dockerfile, one plan per target platform, the bases and images
//! those plans pull, the builds, and what a successful build does with its
//! result (tags, `-o` outputs, `--cache-to`, `--push`, `--iidfile`,
//! `--metadata-file`). Diagnostics are returned for the CLI to render.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use builder::bases::{BaseFetch, StoreBases};
use builder::context::Context as BuildContext;
use builder::exec::{BuildEvent, BuildReporter, BuildRequest, BuildResult, PlatformTag};
use builder::plan::{PlanError, PlanOptions, Platform, StepGraph};
use builder::sandbox::Network;
use layer_cache::convert::ConvertOptions;
use layer_cache::image;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::variant::{ExportCodec, VariantSpec};
use layer_cache::{Digest, ImageRef, Store};

use crate::archive::Stdout;
use crate::build_context::NamedContexts;
use crate::cache_io::CacheSpec;
use crate::output::Output;
use crate::registry::BasePuller;
use crate::{OpsError, Reporter, Result};

/// Pulls base images for the planner through the base puller.
pub struct PullBases<'a>(pub &'a BasePuller);

impl BaseFetch for PullBases<'_> {
    fn ensure(&self, reference: &str, platform: &Platform) {
        self.0.ensure(reference, Some(platform.clone()));
    }
}

/// Keeps each stage's first cache miss for `--explain-cache`, and the `--link`
/// steps reused after one, passing events on.
pub struct Explain {
    inner: Box<dyn BuildReporter>,
    /// (step, stage, cause).
    misses: Vec<(usize, String, String)>,
    /// Step ids and their text, to name the reused --link steps.
    texts: BTreeMap<usize, (String, String)>,
    /// (step, stage, instruction) of --link layers reused after a change below.
    linked: Vec<(usize, String, String)>,
}

/// Each stage's first miss and the reused `--link` steps: (step, stage, text).
pub type Explained = (Vec<(usize, String, String)>, Vec<(usize, String, String)>);

impl Explain {
    pub fn new(inner: Box<dyn BuildReporter>) -> Explain {
        Explain {
            inner,
            misses: Vec::new(),
            texts: BTreeMap::new(),
            linked: Vec::new(),
        }
    }

    /// The reporter passed on to, and what was kept.
    pub fn into_parts(self) -> (Box<dyn BuildReporter>, Explained) {
        (self.inner, (self.misses, self.linked))
    }
}

impl BuildReporter for Explain {
    fn event(&mut self, event: BuildEvent<'_>) {
        match &event {
            BuildEvent::StepStarted { id, stage, text } => {
                self.texts
                    .insert(*id, (stage.to_string(), text.to_string()));
            }
            BuildEvent::CacheMiss { id, stage, cause } => {
                self.misses
                    .push((*id, stage.to_string(), cause.to_string()));
            }
            BuildEvent::StepCached { id, linked: true } => {
                if let Some((stage, text)) = self.texts.get(id) {
                    self.linked.push((*id, stage.clone(), text.clone()));
                }
            }
            _ => {}
        }
        self.inner.event(event);
    }
}

/// `KEY=VALUE` options (`what`: the flag) as a map.
pub fn key_values(list: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for item in list {
        match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            _ if what == "--build-arg" && !item.is_empty() && !item.contains('=') => {
                // A bare name takes its value from the environment, as docker does.
                if let Ok(v) = std::env::var(item) {
                    out.insert(item.clone(), v);
                }
            }
            _ => {
                return Err(OpsError::invalid(format!(
                    "{what} {item:?}: expected KEY=VALUE"
                )))
            }
        }
    }
    Ok(out)
}

/// `--network`: default (private), host or none.
pub fn network(value: &str) -> Result<Network> {
    match value {
        "default" => Ok(Network::Private),
        "host" => Ok(Network::Host),
        "none" => Ok(Network::None),
        other => Err(OpsError::invalid(format!(
            "--network={other}: expected default, none or host"
        ))),
    }
}

/// `--allow` values as BuildKit's entitlements. `--network=host` for the whole build
/// grants `network.host` itself, as buildx does.
pub fn entitlements(list: &[String], network: Network) -> Result<builder::exec::Entitlements> {
    let mut allow = builder::exec::Entitlements {
        network_host: network == Network::Host,
        ..Default::default()
    };
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match item {
            "security.insecure" => allow.security_insecure = true,
            "network.host" => allow.network_host = true,
            other => {
                return Err(OpsError::invalid(format!(
                    "--allow {other}: expected security.insecure or network.host"
                )))
            }
        }
    }
    Ok(allow)
}

/// `--add-host` values as (host, address), parsed as Docker does: `HOST=IP` or
/// `HOST:IP`, an IPv6 address optionally in brackets. `host-gateway` is the host as
/// RUN sees it: loopback on the host's network, the stack's gateway on a private one.
pub fn extra_hosts(list: &[String], network: Network) -> Result<Vec<(String, String)>> {
    let gateway = match network {
        Network::Private => builder::sandbox::PRIVATE_GATEWAY,
        Network::Host | Network::None => "127.0.0.1",
    };
    list.iter()
        .map(|item| {
            let (host, ip) = item
                .split_once('=')
                .or_else(|| item.split_once(':'))
                .ok_or_else(|| {
                    OpsError::invalid(format!("--add-host {item:?}: expected HOST:IP"))
                })?;
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            let ip = if ip == "host-gateway" { gateway } else { ip };
            if host.is_empty() || host.contains(char::is_whitespace) {
                return Err(OpsError::invalid(format!(
                    "--add-host {item:?}: invalid host name {host:?}"
                )));
            }
            ip.parse::<std::net::IpAddr>().map_err(|_| {
                OpsError::invalid(format!("--add-host {item:?}: invalid IP address {ip:?}"))
            })?;
            Ok((host.to_string(), ip.to_string()))
        })
        .collect()
}

/// `--platform` (repeatable, comma-separated): the target platforms in the order
/// given, duplicates dropped; the host's when none.
pub fn target_platforms(given: &[String]) -> Result<Vec<Platform>> {
    let mut list: Vec<Platform> = Vec::new();
    for p in given.iter().flat_map(|g| g.split(',')).map(str::trim) {
        if p.is_empty() {
            continue;
        }
        let parsed = Platform::parse(p).map_err(|_| {
            OpsError::invalid(format!("--platform {p:?}: expected os/arch[/variant]"))
        })?;
        if !list.contains(&parsed) {
            list.push(parsed);
        }
    }
    if list.is_empty() {
        list.push(Platform::host());
    }
    Ok(list)
}

/// The build context (`-`: a tar, or a Dockerfile, on standard input);
/// `file`: the `-f` given.
pub fn open_context(context: &str, file: Option<&str>, store: &Store) -> Result<BuildContext> {
    Ok(if context == "-" {
        if file == Some("-") {
            return Err(OpsError::invalid(
                "standard input cannot hold both the build context and the Dockerfile",
            ));
        }
        BuildContext::stdin(store, std::io::stdin())?
    } else {
        BuildContext::dir(Path::new(context))?
    })
}

/// The Dockerfile's name as shown, its text, and its path (for `<Dockerfile>.dockerignore`).
pub fn read_dockerfile(
    context: &str,
    file: Option<&str>,
    ctx: &BuildContext,
) -> Result<(String, String, Option<PathBuf>)> {
    let read =
        |p: &Path, shown: &str| std::fs::read_to_string(p).map_err(OpsError::io("reading", shown));
    Ok(match (file, ctx.stdin_dockerfile()) {
        (_, Some(text)) => ("-".to_string(), text.to_string(), None),
        (Some("-"), None) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|source| OpsError::Stdin {
                    what: "reading the Dockerfile from standard input",
                    source,
                })?;
            ("-".to_string(), s, None)
        }
        (Some(f), None) => {
            // In a context from standard input, -f names a file inside it.
            let p = if context == "-" {
                ctx.path().join(f)
            } else {
                PathBuf::from(f)
            };
            let text = read(&p, f)?;
            (f.to_string(), text, Some(p))
        }
        (None, None) => {
            let p = ctx.path().join("Dockerfile");
            let shown = if context == "-" {
                "Dockerfile".to_string()
            } else {
                Path::new(context).join("Dockerfile").display().to_string()
            };
            let text = read(&p, &shown)?;
            (shown, text, Some(p))
        }
    })
}

/// As buildx: a docker-archive holds one image per name, not an index.
pub fn check_outputs(outputs: &[Output], platforms: usize) -> Result<()> {
    if platforms > 1
        && outputs
            .iter()
            .any(|o| matches!(o, Output::Archive { docker: true, .. }))
    {
        return Err(OpsError::invalid(format!(
            "--output type=docker: docker exporter does not currently support exporting \
             manifest lists (building {platforms} platforms); use type=oci"
        )));
    }
    Ok(())
}

/// One step graph per target platform, all planned before any step runs; the
/// first planning error stops it (boxed: it is large, and rendered once).
pub fn plan_platforms(
    df: &builder::dockerfile::Dockerfile,
    target: Option<&str>,
    platforms: &[Platform],
    named: &NamedContexts,
    build_args: &BTreeMap<String, String>,
    bases: &StoreBases<'_>,
) -> Result<Vec<(Platform, StepGraph)>, Box<PlanError>> {
    let mut graphs = Vec::new();
    for platform in platforms {
        let opts = PlanOptions {
            build_args: build_args.clone(),
            target: target.map(str::to_string),
            target_platform: platform.clone(),
            named_contexts: named.plan.clone(),
            ..PlanOptions::default()
        };
        graphs.push((platform.clone(), builder::plan::plan(df, &opts, bases)?));
    }
    Ok(graphs)
}

/// Pulls the docker-image:// contexts the plans read; returns the warnings to
/// show: bases that could not be pulled, then the plans' own (each once; none
/// of the plans' when `quiet`).
pub fn pull_copied_and_warnings(
    puller: &BasePuller,
    graphs: &[(Platform, StepGraph)],
    named: &NamedContexts,
    quiet: bool,
    dockerfile_name: &str,
) -> Vec<String> {
    // docker-image:// contexts read by COPY --from or a mount are pulled like bases.
    for (_, graph) in graphs {
        for reference in builder::bases::copied_images(graph, &named.plan) {
            puller.ensure(reference, None);
        }
    }
    // A base that could not be pulled is reported here; the build then fails
    // at its FROM (with the Dockerfile location) unless the store has it.
    let mut lines: Vec<String> = puller
        .errors
        .lock()
        .map(|e| e.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|e| format!("WARNING: {e}"))
        .collect();
    // The platforms' plans mostly warn alike: each warning once.
    let mut warned = std::collections::BTreeSet::new();
    for w in graphs.iter().flat_map(|(_, g)| &g.warnings) {
        // BuildKit's own text may start `[Warning] `: one prefix is enough.
        let message = w.message.strip_prefix("[Warning] ").unwrap_or(&w.message);
        let line = match &w.span {
            Some(s) => format!("WARNING: {}:{}: {message}", dockerfile_name, s.start_line),
            None => format!("WARNING: {message}"),
        };
        if !quiet && warned.insert(line.clone()) {
            lines.push(line);
        }
    }
    lines
}

/// Builds the platforms one after another (steps they share, stages on
/// $BUILDPLATFORM, are step-cache hits after the first), stopping at the first
/// failure.
pub fn build_platforms<'g>(
    store: &Store,
    req: &mut BuildRequest<'g>,
    graphs: &'g [(Platform, StepGraph)],
    explain: &mut Explain,
) -> (Vec<BuildResult>, Option<OpsError>) {
    let multi = graphs.len() > 1;
    let mut built = Vec::new();
    let mut last_id = 0;
    for (platform, graph) in graphs {
        req.graph = graph;
        let result = if multi {
            let mut tagged = PlatformTag::new(explain, platform.to_string(), last_id);
            let r = builder::exec::build(store, req, &mut tagged);
            last_id = tagged.max();
            r.map_err(|e| OpsError::BuildFor {
                platform: platform.to_string(),
                source: Box::new(e),
            })
        } else {
            builder::exec::build(store, req, explain).map_err(OpsError::from)
        };
        match result {
            Ok(r) => built.push(r),
            Err(e) => return (built, Some(e)),
        }
    }
    (built, None)
}

/// Compresses the image's new layers on a thread of its own while the build's
/// later steps run (`--push`), so the push finds each one ready: the variants
/// are remembered by the store ([`Store::layer_variant`]).
pub struct Precompress {
    tx: std::sync::Mutex<Option<std::sync::mpsc::Sender<(Descriptor, Digest)>>>,
    worker: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Precompress {
    pub fn start(store: &Store, codec: ExportCodec) -> Precompress {
        let (tx, rx) = std::sync::mpsc::channel::<(Descriptor, Digest)>();
        let store = store.clone();
        let spec = VariantSpec {
            compression: codec.compression,
            level: codec.level,
            clamp_mtime: None,
        };
        let worker = std::thread::spawn(move || {
            for (layer, diff_id) in rx {
                // Only a head start: the push redoes (and reports) what failed here.
                let _ = store.layer_variant(&layer, &diff_id, &spec, true);
            }
        });
        Precompress {
            tx: std::sync::Mutex::new(Some(tx)),
            worker: std::sync::Mutex::new(Some(worker)),
        }
    }

    /// Waits for the layers sent so far.
    pub fn finish(&self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
        let worker = self.worker.lock().ok().and_then(|mut w| w.take());
        if let Some(w) = worker {
            let _ = w.join();
        }
    }
}

impl builder::exec::LayerReady for Precompress {
    fn layer_ready(&self, layer: &Descriptor, diff_id: &Digest) {
        // Only layers kept uncompressed get the codec when they leave.
        let mt: &str = layer.media_type().as_ref();
        if image::Compression::of_media_type(mt) != Some(image::Compression::None) {
            return;
        }
        if let Ok(tx) = self.tx.lock() {
            if let Some(tx) = tx.as_ref() {
                let _ = tx.send((layer.clone(), diff_id.clone()));
            }
        }
    }
}

impl Drop for Precompress {
    /// A failed build does not wait: the worker stops with the process.
    fn drop(&mut self) {
        if let Ok(mut tx) = self.tx.lock() {
            tx.take();
        }
    }
}

/// What a successful build does with its result: tags, `-o` outputs, `--cache-to`,
/// `--push`, `--iidfile`, `--metadata-file`.
pub struct Finish<'a> {
    pub store: &'a Store,
    pub tags: &'a [ImageRef],
    pub outputs: &'a [Output],
    pub cache_to: &'a [CacheSpec],
    /// `--insecure-registry` hosts, for `--cache-to` registries.
    pub insecure: &'a [String],
    pub puller: &'a BasePuller,
    pub push: bool,
    /// `--annotation`s: on the stored and pushed image and every image output.
    pub annotations: &'a layer_cache::convert::Annotations,
    /// The diff_ids of each platform's base image (see [`base_diff_ids`]).
    pub base_diff_ids: &'a [Vec<Digest>],
    pub iidfile: Option<&'a Path>,
    pub metadata_file: Option<&'a Path>,
    /// `--compression` and `--compression-level`: how built layers leave the
    /// machine (pushes, `-o` archives, `--cache-to`), and are remembered for a
    /// later `push` or `save` of the image.
    pub codec: ExportCodec,
    /// Layers compressed while the build ran; waited for before pushing.
    pub precompress: Option<&'a Precompress>,
    pub reporter: &'a dyn Reporter,
    /// Where `-o …,dest=-` writes.
    pub stdout: Stdout<'a>,
}

impl Finish<'_> {
    /// Returns the digest of the image (one platform) or index (several).
    pub fn run(&self, built: &[BuildResult]) -> Result<Digest> {
        let store = self.store;
        // One platform: its manifest; several: an index of theirs (the children stay
        // reachable from the tag through it, so prune keeps them).
        let manifest = match built {
            [one] => one.manifest.clone(),
            many => image::write_index(
                store,
                &many.iter().map(|r| r.manifest.clone()).collect::<Vec<_>>(),
            )?,
        };
        // Annotations and type=image keys give the stored image a manifest of its
        // own; the step cache keeps the built one, so later builds still hit.
        let _usage = store.usage_lock()?;
        let built_manifest = manifest;
        let manifest = crate::output::stored_image(
            store,
            self.outputs,
            &built_manifest,
            self.annotations,
            self.base_diff_ids,
        )?;
        let digest = image::descriptor_digest(&manifest)?;
        let first_opts = crate::output::first_image_opts(self.outputs);
        store.set_export_codec(&digest, &first_opts.codec(&self.codec))?;
        for t in self.tags {
            store.set_tag(t, &manifest)?;
        }
        // type=image,name=…: those names too, each with its output's keys.
        let mut pushes: Vec<(String, ConvertOptions)> = Vec::new();
        if self.push {
            for t in self.tags {
                pushes.push((t.tagged_name(), first_opts.leaving(&self.codec)));
            }
        }
        for (i, o) in self.outputs.iter().enumerate() {
            let crate::output::Output::Image { names, push, opts } = o else {
                continue;
            };
            let first = !self.outputs[..i]
                .iter()
                .any(|o| matches!(o, crate::output::Output::Image { .. }));
            let desc = if first {
                manifest.clone()
            } else {
                let c = opts.stored_options(self.annotations, self.base_diff_ids);
                let desc = store.convert_image(&built_manifest, &c)?;
                store.set_export_codec(
                    &image::descriptor_digest(&desc)?,
                    &opts.codec(&self.codec),
                )?;
                desc
            };
            let mut named = Vec::new();
            for n in names {
                let r = ImageRef::parse(n)?;
                store.set_tag(&r, &desc)?;
                named.push(r.tagged_name());
            }
            // As buildx: without name=, the -t tags are the exporter's names.
            if *push && names.is_empty() {
                if self.tags.is_empty() {
                    return Err(OpsError::invalid(
                        "--output type=image,push=true: needs name=REF (or -t) to push to",
                    ));
                }
                named.extend(self.tags.iter().map(ImageRef::tagged_name));
            }
            if *push {
                pushes.extend(named.into_iter().map(|n| (n, opts.leaving(&self.codec))));
            }
        }
        // Outputs and pushes want the layers the build compressed as it went.
        if let Some(p) = self.precompress {
            p.finish();
        }
        for o in self.outputs {
            let export = crate::output::BuildExport {
                annotations: self.annotations,
                base_diff_ids: self.base_diff_ids,
                codec: &self.codec,
            };
            crate::output::write(store, o, &built_manifest, &export, self.tags, self.stdout)?;
        }
        drop(_usage);
        let cache_keys = merged_keys(built);
        for c in self.cache_to {
            crate::cache_io::export(
                store,
                c,
                &cache_keys,
                &self.codec,
                self.insecure,
                self.reporter,
            )?;
        }
        // --metadata-file names the pushed image (BuildKit's digest is the registry's).
        let mut pushed = None;
        for (n, convert) in &pushes {
            let d = self.puller.push(store, n, convert)?;
            pushed.get_or_insert(d);
        }
        if let Some(path) = self.iidfile {
            std::fs::write(path, digest.to_string()).map_err(OpsError::io("writing", path))?;
        }
        if let Some(path) = self.metadata_file {
            let described = pushed.as_ref().unwrap_or(&manifest);
            self.write_metadata(path, described, built.len() > 1)?;
        }
        Ok(digest)
    }

    /// `--metadata-file`: the result's digests and names under BuildKit's keys.
    fn write_metadata(&self, path: &Path, manifest: &Descriptor, multi: bool) -> Result<()> {
        let digest = image::descriptor_digest(manifest)?;
        let mut meta = serde_json::json!({
            "containerimage.digest": digest.to_string(),
            "containerimage.descriptor": manifest,
            "image.name": self.tags.iter().map(|t| t.tagged_name()).collect::<Vec<_>>().join(","),
        });
        // An index has no config of its own (buildx leaves the key out too).
        if !multi {
            let image = self.store.load_image(manifest)?;
            meta["containerimage.config.digest"] = image.config_digest.to_string().into();
        }
        let bytes = serde_json::to_vec_pretty(&meta).map_err(OpsError::Serialize)?;
        std::fs::write(path, bytes).map_err(OpsError::io("writing", path))
    }
}

/// The diff_ids of the image each graph's target stage is built on (through
/// stages it is built `FROM`); empty for `scratch` or a base that cannot be read.
/// `rewrite-timestamp` leaves those layers as they are, as BuildKit does.
pub fn base_diff_ids(
    store: &Store,
    graphs: &[(Platform, StepGraph)],
    resolved: &BTreeMap<(String, String), Descriptor>,
) -> Vec<Vec<Digest>> {
    let mut out = Vec::new();
    for (_, graph) in graphs {
        let mut stage = graph.stage(graph.target);
        // A chain of stages is at most as long as the file.
        for _ in 0..=graph.stages.len() {
            let Some(s) = stage else { break };
            match &s.base {
                builder::plan::Base::Stage { index } => stage = graph.stage(*index),
                builder::plan::Base::Scratch => break,
                builder::plan::Base::Image { reference } => {
                    let key = (reference.clone(), s.stage_platform.to_string());
                    let desc = match resolved.get(&key) {
                        Some(d) => Some(d.clone()),
                        None => store.resolve(reference).ok(),
                    };
                    if let Some(img) = desc.and_then(|d| store.load_image(&d).ok()) {
                        out.push(img.config.rootfs.diff_ids);
                    }
                    break;
                }
            }
        }
    }
    out
}

/// The step-cache records and cache-mount ids of every platform's build, sorted,
/// without duplicates.
pub fn merged_keys(built: &[BuildResult]) -> builder::exec::UsedKeys {
    let mut cache_keys = builder::exec::UsedKeys::default();
    for r in built {
        cache_keys.image.extend(r.cache_keys.image.iter().cloned());
        cache_keys.all.extend(r.cache_keys.all.iter().cloned());
        cache_keys
            .cache_mounts
            .extend(r.cache_keys.cache_mounts.iter().cloned());
    }
    for keys in [&mut cache_keys.image, &mut cache_keys.all] {
        keys.sort();
        keys.dedup();
    }
    cache_keys.cache_mounts.sort();
    cache_keys.cache_mounts.dedup();
    cache_keys
}
