//! `mybuild [build] [OPTIONS] CONTEXT`: build an image from a Dockerfile.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use builder::bases::{BaseFetch, ContextBases, PlannedBases, StoreBases};
use builder::context::Context as BuildContext;
use builder::exec::{BuildEvent, BuildReporter, BuildRequest, BuildResult, PlatformTag};
use builder::plan::{PlanOptions, Platform, StepGraph};
use builder::sandbox::Network;
use layer_cache::image::{self, Compression};
use layer_cache::layer::LayerOptions;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::{ImageRef, Store};

use crate::progress::{Event, ProgressMode};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct BuildArgs {
    /// Name and optionally a tag (name:tag); repeatable
    #[arg(short = 't', long = "tag")]
    tags: Vec<String>,
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile); - reads standard input
    #[arg(short = 'f', long = "file")]
    file: Option<String>,
    /// Set a build-time variable (NAME=VALUE, or NAME to take it from the environment)
    #[arg(long = "build-arg")]
    build_args: Vec<String>,
    /// Build this stage and what it needs
    #[arg(long)]
    target: Option<String>,
    /// Do not use cached steps (every step runs)
    #[arg(long)]
    no_cache: bool,
    /// Do not use cached steps in these stages (names or indices, comma-separated)
    #[arg(long, value_delimiter = ',', value_name = "STAGES")]
    no_cache_filter: Vec<String>,
    /// After the build, print why each stage's first uncached step missed the cache
    #[arg(long)]
    explain_cache: bool,
    /// Set metadata on the image (KEY=VALUE)
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Network for RUN steps: default (a private network with outbound access through
    /// slirp4netns), none (loopback only) or host (the host's network, unconfined)
    #[arg(long, default_value = "default")]
    network: String,
    /// Allow an entitlement RUN flags need: security.insecure (RUN --security=insecure)
    /// or network.host (RUN --network=host); repeatable or comma-separated
    #[arg(long = "allow", value_name = "ENTITLEMENT", value_delimiter = ',')]
    allow: Vec<String>,
    /// Write the image id to this file
    #[arg(long)]
    iidfile: Option<PathBuf>,
    /// Progress output: auto, tty, plain or json (auto: tty on a terminal, else plain)
    #[arg(long, default_value = "auto", value_parser = progress_values())]
    progress: ProgressMode,
    /// Also write the result: type=oci|docker,dest=FILE; type=local,dest=DIR; type=tar,dest=FILE (a bare PATH means local; - means a tar on stdout)
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Suppress build output; print the image id
    #[arg(short, long)]
    quiet: bool,
    /// Layer compression: gzip or zstd
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    compression: String,
    /// Compression level (gzip 0-9, zstd 1-22)
    #[arg(long)]
    compression_level: Option<u32>,
    /// Secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR; repeatable
    #[arg(long = "secret")]
    secrets: Vec<String>,
    /// SSH agent for RUN --mount=type=ssh: default or ID[=SOCKET|KEY[,KEY...]] (alone: $SSH_AUTH_SOCK); repeatable
    #[arg(long = "ssh")]
    ssh: Vec<String>,
    /// Target platform, os/arch[/variant] (default: this machine's): sets TARGETPLATFORM
    /// and its parts, the platform of stages without FROM --platform, and which image of
    /// a multi-platform base is used; several (comma-separated or repeated) build a
    /// multi-platform image (an OCI index)
    #[arg(long, value_name = "PLATFORM")]
    platform: Vec<String>,
    /// Pull every base image, even those already in the store
    #[arg(long)]
    pull: bool,
    /// Push the tagged image(s) to their registries after the build
    #[arg(long)]
    push: bool,
    /// For --push, --pull and bases pulled for FROM
    #[command(flatten)]
    registry: super::registry::RegistryOpts,
    /// Add a line to /etc/hosts in RUN steps: HOST:IP or HOST=IP (IP may be host-gateway); repeatable
    #[arg(long = "add-host", value_name = "HOST:IP")]
    add_hosts: Vec<String>,
    /// Write the result's digests and names as JSON to this file (BuildKit's keys)
    #[arg(long, value_name = "FILE")]
    metadata_file: Option<PathBuf>,
    /// Evaluate the build checks (lint rules) instead of building; exit 1 on any finding
    #[arg(long)]
    check: bool,
    /// Export the step cache: type=local,dest=DIR or type=registry,ref=REF, with mode=min|max (default min); repeatable
    #[arg(long = "cache-to", value_name = "OPTS")]
    cache_to: Vec<String>,
    /// Import a step cache exported with --cache-to: type=local,src=DIR, type=registry,ref=REF, or REF; repeatable
    #[arg(long = "cache-from", value_name = "OPTS")]
    cache_from: Vec<String>,
    /// Additional build context NAME=VALUE (a directory, docker-image://REF, oci-layout://DIR[:TAG][@DIGEST]), used by FROM NAME, COPY --from=NAME, RUN --mount=from=NAME; repeatable
    #[arg(long = "build-context", value_name = "NAME=VALUE")]
    build_contexts: Vec<String>,
    /// Build context: a directory, or - for a tar (or a Dockerfile) on standard input
    context: String,
}

/// Pulls base images for the planner through the registry side's puller.
struct PullBases<'a>(&'a super::registry::BasePuller);

impl BaseFetch for PullBases<'_> {
    fn ensure(&self, reference: &str, platform: &Platform) {
        self.0.ensure(reference, Some(platform.clone()));
    }
}

/// Keeps each stage's first cache miss for `--explain-cache`, and the `--link`
/// steps reused after one, passing events on.
struct Explain {
    inner: Box<dyn BuildReporter>,
    /// (step, stage, cause).
    misses: Vec<(usize, String, String)>,
    /// Step ids and their text, to name the reused --link steps.
    texts: BTreeMap<usize, (String, String)>,
    /// (step, stage, instruction) of --link layers reused after a change below.
    linked: Vec<(usize, String, String)>,
}

impl Explain {
    fn new(inner: Box<dyn BuildReporter>) -> Explain {
        Explain {
            inner,
            misses: Vec::new(),
            texts: BTreeMap::new(),
            linked: Vec::new(),
        }
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

/// `--progress`'s values for a build (no `quiet`: a build has `-q`).
fn progress_values() -> impl clap::builder::TypedValueParser<Value = ProgressMode> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["auto", "tty", "plain", "json"])
        .map(|s| <ProgressMode as clap::ValueEnum>::from_str(&s, false).unwrap_or_default())
}

fn key_values(list: &[String], what: &str) -> Result<BTreeMap<String, String>> {
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
            _ => bail!("{what} {item:?}: expected KEY=VALUE"),
        }
    }
    Ok(out)
}

/// The build checks' findings after a build, as BuildKit lists them (JSON events
/// with `--progress=json`).
fn lint_summary(lint: &builder::lint::LintReport, progress: ProgressMode) {
    if lint.warnings.is_empty() {
        return;
    }
    if progress == ProgressMode::Json {
        for w in &lint.warnings {
            crate::progress::json::write(&Event::lint(w), &mut std::io::stderr().lock());
        }
        return;
    }
    let n = lint.warnings.len();
    eprintln!(
        "{n} warning{} found (use mybuild build --check for details):",
        if n == 1 { "" } else { "s" }
    );
    for w in &lint.warnings {
        eprintln!(" - {}: {} (line {})", w.rule, w.detail, w.line);
    }
}

/// `--allow` values as BuildKit's entitlements. `--network=host` for the whole build
/// grants `network.host` itself, as buildx does.
fn entitlements(list: &[String], network: Network) -> Result<builder::exec::Entitlements> {
    let mut allow = builder::exec::Entitlements {
        network_host: network == Network::Host,
        ..Default::default()
    };
    for item in list.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        match item {
            "security.insecure" => allow.security_insecure = true,
            "network.host" => allow.network_host = true,
            other => bail!("--allow {other}: expected security.insecure or network.host"),
        }
    }
    Ok(allow)
}

/// `--add-host` values as (host, address), parsed as Docker does: `HOST=IP` or
/// `HOST:IP`, an IPv6 address optionally in brackets. `host-gateway` is the host as
/// RUN sees it: loopback on the host's network, the stack's gateway on a private one.
fn extra_hosts(list: &[String], network: Network) -> Result<Vec<(String, String)>> {
    let gateway = match network {
        Network::Private => builder::sandbox::PRIVATE_GATEWAY,
        Network::Host | Network::None => "127.0.0.1",
    };
    list.iter()
        .map(|item| {
            let (host, ip) = item
                .split_once('=')
                .or_else(|| item.split_once(':'))
                .ok_or_else(|| anyhow!("--add-host {item:?}: expected HOST:IP"))?;
            let ip = ip.trim_start_matches('[').trim_end_matches(']');
            let ip = if ip == "host-gateway" { gateway } else { ip };
            if host.is_empty() || host.contains(char::is_whitespace) {
                bail!("--add-host {item:?}: invalid host name {host:?}");
            }
            ip.parse::<std::net::IpAddr>()
                .map_err(|_| anyhow!("--add-host {item:?}: invalid IP address {ip:?}"))?;
            Ok((host.to_string(), ip.to_string()))
        })
        .collect()
}

/// `--platform` (repeatable, comma-separated): the target platforms in the order
/// given, duplicates dropped; the host's when none.
fn target_platforms(given: &[String]) -> Result<Vec<Platform>> {
    let mut list: Vec<Platform> = Vec::new();
    for p in given.iter().flat_map(|g| g.split(',')).map(str::trim) {
        if p.is_empty() {
            continue;
        }
        let parsed = Platform::parse(p)
            .ok()
            .with_context(|| format!("--platform {p:?}: expected os/arch[/variant]"))?;
        if !list.contains(&parsed) {
            list.push(parsed);
        }
    }
    if list.is_empty() {
        list.push(Platform::host());
    }
    Ok(list)
}

/// A failed RUN as Docker shows it: the instruction's lines in the Dockerfile
/// marked `>>>`, then the process and its exit code (the command once).
fn with_source(
    e: anyhow::Error,
    file: &str,
    text: &str,
    graphs: &[(Platform, builder::plan::StepGraph)],
) -> anyhow::Error {
    let Some(builder::exec::BuildError::RunFailed {
        location,
        command,
        code,
        ..
    }) = e.downcast_ref()
    else {
        return e;
    };
    let Some(start) = location
        .rsplit_once(':')
        .and_then(|(_, l)| l.parse::<usize>().ok())
    else {
        return e;
    };
    let end = graphs
        .iter()
        .flat_map(|(_, g)| &g.stages)
        .flat_map(|s| &s.steps)
        .find(|s| s.span.start_line == start && !s.onbuild)
        .map_or(start, |s| s.span.end_line.max(start));
    eprint!("{}", source_block(file, text, start, end));
    let failed = anyhow!("process {command:?} did not complete successfully: exit code: {code}");
    // Keep what the caller added (`building for PLATFORM`); drop the old text.
    let top = e.to_string();
    if top.contains("did not complete successfully") {
        failed
    } else {
        failed.context(top)
    }
}

/// BuildKit's `errdefs.Source.Print`: lines `start..=end` marked `>>>`, with one
/// line of context each side (two for a one-line instruction).
fn source_block(file: &str, text: &str, start: usize, end: usize) -> String {
    let lines: Vec<&str> = text.split('\n').collect();
    if start < 1 || start > lines.len() {
        return String::new();
    }
    let (mut first, mut last) = (start, end.min(lines.len()));
    let pad = if last == start { 4 } else { 2 };
    let mut p = 0;
    while p < pad {
        if first > 1 {
            first -= 1;
            p += 1;
        }
        if last != lines.len() {
            last += 1;
            p += 1;
        }
        p += 1;
    }
    let mut out = format!("{file}:{start}\n--------------------\n");
    for (i, line) in lines.iter().enumerate().take(last).skip(first - 1) {
        let n = i + 1;
        let mark = if (start..=end).contains(&n) {
            ">>>"
        } else {
            "   "
        };
        out.push_str(&format!(
            " {n:>3} | {mark} {}\n",
            line.trim_end_matches('\r')
        ));
    }
    out.push_str("--------------------\n");
    out
}

pub fn run(g: &Globals, a: &BuildArgs) -> Result<i32> {
    let outputs = a
        .outputs
        .iter()
        .map(|o| crate::output::parse(o))
        .collect::<Result<Vec<_>>>()?;
    let cache_from = a
        .cache_from
        .iter()
        .map(|c| super::cache_io::parse(c, false))
        .collect::<Result<Vec<_>>>()?;
    let cache_to = a
        .cache_to
        .iter()
        .map(|c| super::cache_io::parse(c, true))
        .collect::<Result<Vec<_>>>()?;
    let mode = crate::progress::start(a.progress, a.quiet, crate::progress::Command::Build)?;
    let say = super::cache_io::Say(mode);
    let reporter: Box<dyn BuildReporter> = Box::new(crate::progress::Steps);
    let network = match a.network.as_str() {
        "default" => Network::Private,
        "host" => Network::Host,
        "none" => Network::None,
        other => bail!("--network={other}: expected default, none or host"),
    };
    let allow = entitlements(&a.allow, network)?;
    let store = g.store()?;
    // An oci-layout:// context's blobs stay untagged: keep `prune` off until the build ran.
    let _usage = (!a.build_contexts.is_empty())
        .then(|| store.usage_lock())
        .transpose()?;
    let named = super::build_context::parse(&store, &a.build_contexts)?;
    let ctx = open_context(a, &store)?;
    let tags = a
        .tags
        .iter()
        .map(|t| ImageRef::parse(t).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    let (dockerfile_name, text, dockerfile_path) = read_dockerfile(a, &ctx)?;
    let dockerignore = ctx.ignore(dockerfile_path.as_deref())?;
    let df = match builder::dockerfile::parse(&text, &dockerfile_name) {
        Ok(df) => df,
        Err(e) => {
            eprintln!("{}", e.render());
            return Ok(1);
        }
    };
    let platforms = target_platforms(&a.platform)?;
    let multi = platforms.len() > 1;
    check_outputs(&outputs, platforms.len())?;
    let build_args = key_values(&a.build_args, "--build-arg")?;
    let puller = super::registry::BasePuller::new(&store, a.pull, &a.registry, mode)?;
    let fetch = PullBases(&puller);
    let bases = StoreBases::new(&store, &fetch);
    let Some(graphs) = plan_platforms(&df, a, &platforms, &named, &build_args, &bases) else {
        return Ok(1);
    };
    pull_copied_and_warn(&puller, &graphs, &named, a.quiet, &dockerfile_name);
    // Build checks, as BuildKit runs them on every build: reported after it, or
    // instead of it with --check; `# check=error=true` stops it before any step.
    let lint = builder::lint::lint(
        &df,
        &ContextBases {
            inner: &PlannedBases(&bases),
            named: &named.plan,
        },
    );
    if a.check {
        crate::commands::check::print_report(&dockerfile_name, &text, &lint, None, false)?;
        return Ok(i32::from(!lint.warnings.is_empty() || lint.error.is_some()));
    }
    if let Some(e) = &lint.error {
        lint_summary(&lint, a.progress);
        eprintln!("error: {e}");
        return Ok(1);
    }
    let exe = std::env::current_exe().context("locating the mybuild binary for the sandbox")?;
    // Agents serving --ssh key files live until the build ends (on every path).
    let ssh = crate::commands::ssh::parse(&a.ssh)?;
    let imported = super::cache_io::import(&store, &cache_from, &a.registry, say);
    let http = super::fetch::HttpFetch(registry_client::http::Fetcher::new(
        super::registry::client(&a.registry).options(),
    ));
    let mut req = BuildRequest {
        graph: &graphs[0].1,
        context: ctx.path().to_path_buf(),
        dockerignore,
        dockerfile: dockerfile_name,
        exe,
        network,
        allow,
        layer: LayerOptions {
            compression: if a.compression == "zstd" {
                Compression::Zstd
            } else {
                Compression::Gzip
            },
            level: a.compression_level,
        },
        labels: key_values(&a.labels, "--label")?,
        source_date_epoch: std::env::var("SOURCE_DATE_EPOCH")
            .ok()
            .and_then(|s| s.trim().parse().ok()),
        secrets: crate::commands::secrets::parse(&a.secrets)?,
        extra_hosts: extra_hosts(&a.add_hosts, network)?,
        ssh: ssh.sockets.clone(),
        no_cache: a.no_cache,
        no_cache_filter: a.no_cache_filter.clone(),
        // Keyed by (reference, platform): every platform's bases at once.
        base_images: bases.into_resolved(),
        layer_source: (!imported.is_empty()).then_some(&imported as _),
        named_contexts: named.dirs,
        http: Some(&http),
    };
    let mut explain = Explain::new(reporter);
    let (built, failed) = build_platforms(&store, &mut req, &graphs, &mut explain);
    drop(ssh);
    // Stops live progress before anything else prints.
    let Explain {
        inner,
        misses,
        linked,
        ..
    } = explain;
    drop(inner);
    if a.explain_cache {
        explain_summary(&misses, &linked, failed.is_none());
    }
    imported.report(say);
    if let Some(e) = failed {
        return Err(with_source(e, &req.dockerfile, &text, &graphs));
    }
    let finish = Finish {
        store: &store,
        tags: &tags,
        outputs: &outputs,
        cache_to: &cache_to,
        puller: &puller,
        say,
        multi,
    };
    finish.run(a, &built, &lint)?;
    Ok(0)
}

/// The build context: a directory, or a tar (or a Dockerfile) on standard input.
fn open_context(a: &BuildArgs, store: &Store) -> Result<BuildContext> {
    Ok(if a.context == "-" {
        if a.file.as_deref() == Some("-") {
            bail!("standard input cannot hold both the build context and the Dockerfile");
        }
        BuildContext::stdin(store, std::io::stdin())?
    } else {
        BuildContext::dir(Path::new(&a.context))?
    })
}

/// The Dockerfile's name as shown, its text, and its path (for `<Dockerfile>.dockerignore`).
fn read_dockerfile(a: &BuildArgs, ctx: &BuildContext) -> Result<(String, String, Option<PathBuf>)> {
    Ok(match (a.file.as_deref(), ctx.stdin_dockerfile()) {
        (_, Some(text)) => ("-".to_string(), text.to_string(), None),
        (Some("-"), None) => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .context("reading the Dockerfile from standard input")?;
            ("-".to_string(), s, None)
        }
        (Some(f), None) => {
            // In a context from standard input, -f names a file inside it.
            let p = if a.context == "-" {
                ctx.path().join(f)
            } else {
                PathBuf::from(f)
            };
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {f}"))?;
            (f.to_string(), text, Some(p))
        }
        (None, None) => {
            let p = ctx.path().join("Dockerfile");
            let shown = if a.context == "-" {
                "Dockerfile".to_string()
            } else {
                Path::new(&a.context)
                    .join("Dockerfile")
                    .display()
                    .to_string()
            };
            let text = std::fs::read_to_string(&p).with_context(|| format!("reading {shown}"))?;
            (shown, text, Some(p))
        }
    })
}

/// As buildx: a docker-archive holds one image per name, not an index.
fn check_outputs(outputs: &[crate::output::Output], platforms: usize) -> Result<()> {
    if platforms > 1
        && outputs
            .iter()
            .any(|o| matches!(o, crate::output::Output::Archive { docker: true, .. }))
    {
        bail!(
            "--output type=docker: docker exporter does not currently support exporting \
             manifest lists (building {platforms} platforms); use type=oci"
        );
    }
    Ok(())
}

/// One step graph per target platform, all planned before any step runs; `None`
/// after printing a planning error.
fn plan_platforms(
    df: &builder::dockerfile::Dockerfile,
    a: &BuildArgs,
    platforms: &[Platform],
    named: &super::build_context::NamedContexts,
    build_args: &BTreeMap<String, String>,
    bases: &StoreBases<'_>,
) -> Option<Vec<(Platform, StepGraph)>> {
    let mut graphs = Vec::new();
    for platform in platforms {
        let opts = PlanOptions {
            build_args: build_args.clone(),
            target: a.target.clone(),
            target_platform: platform.clone(),
            named_contexts: named.plan.clone(),
            ..PlanOptions::default()
        };
        match builder::plan::plan(df, &opts, bases) {
            Ok(g) => graphs.push((platform.clone(), g)),
            Err(e) => {
                eprintln!("{}", e.render());
                return None;
            }
        }
    }
    Some(graphs)
}

/// Pulls the docker-image:// contexts the plans read, then reports bases that could
/// not be pulled and the plans' warnings.
fn pull_copied_and_warn(
    puller: &super::registry::BasePuller,
    graphs: &[(Platform, StepGraph)],
    named: &super::build_context::NamedContexts,
    quiet: bool,
    dockerfile_name: &str,
) {
    // docker-image:// contexts read by COPY --from or a mount are pulled like bases.
    for (_, graph) in graphs {
        for reference in builder::bases::copied_images(graph, &named.plan) {
            puller.ensure(reference, None);
        }
    }
    // A base that could not be pulled is reported here; the build then fails
    // at its FROM (with the Dockerfile location) unless the store has it.
    for e in puller.errors.lock().map(|e| e.clone()).unwrap_or_default() {
        eprintln!("WARNING: {e}");
    }
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
            eprintln!("{line}");
        }
    }
}

/// Builds the platforms one after another (steps they share, stages on
/// $BUILDPLATFORM, are step-cache hits after the first), stopping at the first
/// failure.
fn build_platforms<'g>(
    store: &Store,
    req: &mut BuildRequest<'g>,
    graphs: &'g [(Platform, StepGraph)],
    explain: &mut Explain,
) -> (Vec<BuildResult>, Option<anyhow::Error>) {
    let multi = graphs.len() > 1;
    let mut built = Vec::new();
    let mut last_id = 0;
    for (platform, graph) in graphs {
        req.graph = graph;
        let result = if multi {
            let mut tagged = PlatformTag::new(explain, platform.to_string(), last_id);
            let r = builder::exec::build(store, req, &mut tagged);
            last_id = tagged.max();
            r.with_context(|| format!("building for {platform}"))
        } else {
            builder::exec::build(store, req, explain).map_err(anyhow::Error::from)
        };
        match result {
            Ok(r) => built.push(r),
            Err(e) => return (built, Some(e)),
        }
    }
    (built, None)
}

/// `--explain-cache`: each stage's first miss and the `--link` layers reused after one.
fn explain_summary(
    misses: &[(usize, String, String)],
    linked: &[(usize, String, String)],
    ok: bool,
) {
    if misses.is_empty() && ok {
        eprintln!("cache: every step was cached");
    }
    for (id, stage, cause) in misses {
        eprintln!("cache miss in stage {stage} at #{id}: {cause}");
    }
    for (id, stage, text) in linked {
        eprintln!(
            "cache hit in stage {stage} at #{id}: {text}: its --link layer was reused \
             on the changed image below"
        );
    }
}

/// What a successful build does with its result: tags, `-o` outputs, `--cache-to`,
/// `--push`, `--iidfile`, `--metadata-file`, then the summary.
struct Finish<'a> {
    store: &'a Store,
    tags: &'a [ImageRef],
    outputs: &'a [crate::output::Output],
    cache_to: &'a [super::cache_io::CacheSpec],
    puller: &'a super::registry::BasePuller,
    say: super::cache_io::Say,
    multi: bool,
}

impl Finish<'_> {
    fn run(
        &self,
        a: &BuildArgs,
        built: &[BuildResult],
        lint: &builder::lint::LintReport,
    ) -> Result<()> {
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
        let digest = image::descriptor_digest(&manifest)?;
        for t in self.tags {
            store.set_tag(t, &manifest)?;
        }
        for o in self.outputs {
            crate::output::write(store, o, &manifest, self.tags)?;
        }
        let cache_keys = merged_keys(built);
        for c in self.cache_to {
            super::cache_io::export(store, c, &cache_keys, &a.registry, self.say)?;
        }
        if a.push {
            for t in self.tags {
                self.puller.push(store, &t.tagged_name())?;
            }
        }
        if let Some(path) = &a.iidfile {
            std::fs::write(path, digest.to_string())
                .with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &a.metadata_file {
            self.write_metadata(path, &manifest)?;
        }
        if !a.quiet {
            lint_summary(lint, a.progress);
        }
        if a.quiet {
            println!("{digest}");
        } else {
            crate::progress::emit(&Event::Image {
                digest: digest.clone(),
                tags: self.tags.iter().map(|t| t.tagged_name()).collect(),
            });
        }
        Ok(())
    }

    /// `--metadata-file`: the result's digests and names under BuildKit's keys.
    fn write_metadata(&self, path: &Path, manifest: &Descriptor) -> Result<()> {
        let digest = image::descriptor_digest(manifest)?;
        let mut meta = serde_json::json!({
            "containerimage.digest": digest.to_string(),
            "containerimage.descriptor": manifest,
            "image.name": self.tags.iter().map(|t| t.tagged_name()).collect::<Vec<_>>().join(","),
        });
        // An index has no config of its own (buildx leaves the key out too).
        if !self.multi {
            let image = self.store.load_image(manifest)?;
            meta["containerimage.config.digest"] = image.config_digest.to_string().into();
        }
        std::fs::write(path, serde_json::to_vec_pretty(&meta)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The step-cache records of every platform's build, sorted, without duplicates.
fn merged_keys(built: &[BuildResult]) -> builder::exec::UsedKeys {
    let mut cache_keys = builder::exec::UsedKeys::default();
    for r in built {
        cache_keys.image.extend(r.cache_keys.image.iter().cloned());
        cache_keys.all.extend(r.cache_keys.all.iter().cloned());
    }
    for keys in [&mut cache_keys.image, &mut cache_keys.all] {
        keys.sort();
        keys.dedup();
    }
    cache_keys
}

#[cfg(test)]
mod tests {
    use super::source_block;

    #[test]
    fn a_failed_instruction_is_shown_with_its_lines_marked_as_docker_does() {
        let df = "# syntax\nFROM busybox\nRUN false && \\\n    echo\n";
        assert_eq!(
            source_block("Dockerfile", df, 3, 4),
            "Dockerfile:3\n--------------------\n   2 |     FROM busybox\n   3 | >>> RUN false && \\\n   4 | >>>     echo\n   5 |     \n--------------------\n"
        );
        // One line: two lines of context each side where there are some.
        let df = "FROM busybox\nRUN a\nRUN false\nRUN b\nRUN c\nRUN d\n";
        assert_eq!(
            source_block("Dockerfile", df, 3, 3),
            "Dockerfile:3\n--------------------\n   1 |     FROM busybox\n   2 |     RUN a\n   3 | >>> RUN false\n   4 |     RUN b\n   5 |     RUN c\n--------------------\n"
        );
    }
}
