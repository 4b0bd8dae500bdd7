//! `mybuild [build] [OPTIONS] CONTEXT`: build an image from a Dockerfile.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use builder::bases::{ContextBases, PlannedBases, StoreBases};
use builder::exec::{BuildError, BuildReporter, BuildRequest};
use builder::plan::Platform;
use layer_cache::image::Compression;
use layer_cache::layer::LayerOptions;
use layer_cache::variant::ExportCodec;
use layer_cache::ImageRef;
use ops::{build, OpsError};

use crate::progress::{Event, ProgressMode};
use crate::transfer_view::View;
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
    /// Progress output: auto, tty, plain, json, or quiet (as -q); auto: tty on a terminal, else
    /// plain [default: $BUILDKIT_PROGRESS, else auto]
    #[arg(long, value_parser = progress_values())]
    progress: Option<ProgressMode>,
    /// Also write the result: type=oci|docker,dest=FILE; type=local,dest=DIR; type=tar,dest=FILE; type=image,name=REF[,push=true] (a bare PATH means local; - means a tar on stdout); image keys: compression, compression-level, force-compression, oci-mediatypes, rewrite-timestamp, annotation*.KEY
    #[arg(short = 'o', long = "output")]
    outputs: Vec<String>,
    /// Suppress build output; print the image id
    #[arg(short, long)]
    quiet: bool,
    /// Layer compression when the image leaves the machine (push, save, -o, --cache-to): gzip, zstd or uncompressed; the store keeps built layers uncompressed
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd", "uncompressed"])]
    compression: String,
    /// Compression level when the image leaves the machine (gzip 0-9, zstd 1-22)
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
    /// Draw the build's steps on a time axis into FILE.svg (or FILE.html): one lane
    /// per stage, cached, ran and failed steps, pulls and pushes, and the critical path
    #[arg(long, value_name = "FILE")]
    timeline: Option<PathBuf>,
    /// Load the result into Docker: its archive is piped to `docker load` (needs the docker CLI on PATH)
    #[arg(long)]
    load: bool,
    /// Add an annotation to the image: [manifest|index|manifest-descriptor|index-descriptor[[os/arch]]:]KEY=VALUE (manifest when no type); repeatable
    #[arg(long = "annotation", value_name = "[TYPE:]KEY=VALUE")]
    annotations: Vec<String>,
    /// Build context: a directory, or - for a tar (or a Dockerfile) on standard input
    context: String,
}

/// `--progress`'s values for a build (`quiet` is `-q`, as buildx has it).
fn progress_values() -> impl clap::builder::TypedValueParser<Value = ProgressMode> {
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(["auto", "tty", "plain", "json", "quiet"])
        .map(|s| <ProgressMode as clap::ValueEnum>::from_str(&s, false).unwrap_or_default())
}

/// `--progress`, else `BUILDKIT_PROGRESS` (unset or empty: auto), as buildx reads it.
fn progress_mode(flag: Option<ProgressMode>) -> Result<ProgressMode> {
    if let Some(mode) = flag {
        return Ok(mode);
    }
    match std::env::var("BUILDKIT_PROGRESS") {
        Ok(v) if !v.trim().is_empty() => {
            <ProgressMode as clap::ValueEnum>::from_str(v.trim(), false).map_err(|_| {
                anyhow!("BUILDKIT_PROGRESS={v}: expected auto, tty, plain, json or quiet")
            })
        }
        _ => Ok(ProgressMode::Auto),
    }
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

/// A failed RUN as Docker shows it: the instruction's lines in the Dockerfile
/// marked `>>>`, then the process and its exit code (the command once).
fn with_source(
    e: OpsError,
    file: &str,
    text: &str,
    graphs: &[(Platform, builder::plan::StepGraph)],
) -> anyhow::Error {
    let (OpsError::Build(b) | OpsError::BuildFor { source: b, .. }) = &e else {
        return e.into();
    };
    let BuildError::RunFailed {
        location,
        command,
        code,
        ..
    } = &**b
    else {
        return e.into();
    };
    let Some(start) = location
        .rsplit_once(':')
        .and_then(|(_, l)| l.parse::<usize>().ok())
    else {
        return e.into();
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
    let Some(path) = &a.timeline else {
        return build(g, a);
    };
    crate::progress::timeline::start();
    let built = build(g, a);
    // Drawn whatever the outcome: a failed build's picture shows where it stopped.
    let drawn = crate::progress::timeline::write(path);
    match (built, drawn) {
        (Ok(_), Err(e)) => Err(e),
        (built, Err(e)) => {
            eprintln!("warning: {e:#}");
            built
        }
        (built, Ok(())) => built,
    }
}

fn build(g: &Globals, a: &BuildArgs) -> Result<i32> {
    let outputs = a
        .outputs
        .iter()
        .map(|o| ops::output::parse(o))
        .collect::<ops::Result<Vec<_>>>()?;
    let cache_from = a
        .cache_from
        .iter()
        .map(|c| ops::cache_io::parse(c, false))
        .collect::<ops::Result<Vec<_>>>()?;
    let annotations = ops::output::parse_annotations(&a.annotations)?;
    let cache_to = a
        .cache_to
        .iter()
        .map(|c| ops::cache_io::parse(c, true))
        .collect::<ops::Result<Vec<_>>>()?;
    let progress = progress_mode(a.progress)?;
    let quiet = a.quiet || progress == ProgressMode::Quiet;
    let mode = crate::progress::start(progress, quiet, crate::progress::Command::Build)?;
    let say = View(mode);
    let reporter: Box<dyn BuildReporter> = Box::new(crate::progress::Steps);
    let network = build::network(&a.network)?;
    let allow = build::entitlements(&a.allow, network)?;
    let store = g.store()?;
    // An oci-layout:// context's blobs stay untagged: keep `prune` off until the build ran.
    let _usage = (!a.build_contexts.is_empty())
        .then(|| store.usage_lock())
        .transpose()?;
    let named = ops::build_context::parse(&store, &a.build_contexts)?;
    let ctx = build::open_context(&a.context, a.file.as_deref(), &store)?;
    let tags = a
        .tags
        .iter()
        .map(|t| ImageRef::parse(t).map_err(anyhow::Error::from))
        .collect::<Result<Vec<_>>>()?;
    let (dockerfile_name, text, dockerfile_path) =
        build::read_dockerfile(&a.context, a.file.as_deref(), &ctx)?;
    let dockerignore = ctx.ignore(dockerfile_path.as_deref())?;
    let df = match builder::dockerfile::parse(&text, &dockerfile_name) {
        Ok(df) => df,
        Err(e) => {
            eprintln!("{}", e.render());
            return Ok(1);
        }
    };
    let platforms = build::target_platforms(&a.platform)?;
    build::check_outputs(&outputs, platforms.len())?;
    if a.load && platforms.len() > 1 {
        anyhow::bail!("--load: docker load cannot take a multi-platform image; build one platform, or use -o type=oci");
    }
    let mut build_args = build::key_values(&a.build_args, "--build-arg")?;
    let source_date_epoch = source_date_epoch(&mut build_args)?;
    ops::output::check_annotations(&outputs, &annotations, platforms.len())?;
    let client = super::registry::client(&a.registry);
    let puller = ops::registry::BasePuller::new(&store, a.pull, client, Arc::new(say))?;
    let fetch = build::PullBases(&puller);
    let bases = StoreBases::new(&store, &fetch);
    let target = a.target.as_deref();
    let graphs = match build::plan_platforms(&df, target, &platforms, &named, &build_args, &bases) {
        Ok(graphs) => graphs,
        Err(e) => {
            eprintln!("{}", e.render());
            return Ok(1);
        }
    };
    for line in build::pull_copied_and_warnings(&puller, &graphs, &named, quiet, &dockerfile_name) {
        eprintln!("{line}");
    }
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
        lint_summary(&lint, progress);
        eprintln!("error: {e}");
        return Ok(1);
    }
    let exe = std::env::current_exe().context("locating the mybuild binary for the sandbox")?;
    // Agents serving --ssh key files live until the build ends (on every path).
    let ssh = ops::ssh::parse(&a.ssh)?;
    let imported = ops::cache_io::import(&store, &cache_from, &a.registry.insecure, &say);
    let http = ops::fetch::HttpFetch(registry_client::http::Fetcher::new(
        &ops::registry::client_options(&a.registry.insecure),
    ));
    let codec = export_codec(&a.compression, a.compression_level)?;
    // A build that pushes compresses its layers as they are written.
    let pushing = a.push
        || outputs
            .iter()
            .any(|o| matches!(o, ops::output::Output::Image { push: true, .. }));
    let precompress = pushing.then(|| {
        let first = ops::output::first_image_opts(&outputs);
        let to = if a.push {
            &first
        } else {
            push_opts(&outputs).unwrap_or(&first)
        };
        build::Precompress::start(&store, to.codec(&codec))
    });
    let mut req = BuildRequest {
        graph: &graphs[0].1,
        context: ctx.path().to_path_buf(),
        dockerignore,
        dockerfile: dockerfile_name,
        exe,
        network,
        allow,
        // Built layers are stored uncompressed: compressed only when they leave.
        layer: LayerOptions {
            compression: Compression::None,
            level: None,
        },
        labels: build::key_values(&a.labels, "--label")?,
        source_date_epoch,
        secrets: ops::secrets::parse(&a.secrets)?,
        extra_hosts: build::extra_hosts(&a.add_hosts, network)?,
        ssh: ssh.sockets.clone(),
        no_cache: a.no_cache,
        no_cache_filter: a.no_cache_filter.clone(),
        // Keyed by (reference, platform): every platform's bases at once.
        base_images: bases.into_resolved(),
        layer_source: (!imported.is_empty()).then_some(&imported as _),
        cache_mount_source: imported.has_mounts().then_some(&imported as _),
        named_contexts: named.dirs,
        http: Some(&http),
        layer_ready: precompress.as_ref().map(|p| p as _),
    };
    let mut explain = build::Explain::new(reporter);
    let (built, failed) = build::build_platforms(&store, &mut req, &graphs, &mut explain);
    drop(ssh);
    // Stops live progress before anything else prints.
    let (inner, (misses, linked)) = explain.into_parts();
    drop(inner);
    if a.explain_cache {
        explain_summary(&misses, &linked, failed.is_none());
    }
    imported.report(&say);
    if let Some(e) = failed {
        return Err(with_source(e, &req.dockerfile, &text, &graphs));
    }
    let finish = build::Finish {
        store: &store,
        tags: &tags,
        outputs: &outputs,
        cache_to: &cache_to,
        insecure: &a.registry.insecure,
        puller: &puller,
        push: a.push,
        annotations: &annotations,
        base_diff_ids: &build::base_diff_ids(&store, &graphs, &req.base_images),
        iidfile: a.iidfile.as_deref(),
        metadata_file: a.metadata_file.as_deref(),
        codec,
        precompress: precompress.as_ref(),
        reporter: &say,
        stdout: &super::archive::stdout,
    };
    let digest = finish.run(&built)?;
    if a.load {
        // docker's own lines go to standard error, but not amid JSON events.
        let out = if mode == ProgressMode::Json {
            std::process::Stdio::null()
        } else {
            std::io::stderr().into()
        };
        ops::docker::load(&store, &tags, &digest, out)?;
    }
    if !quiet {
        lint_summary(&lint, progress);
    }
    if quiet {
        println!("{digest}");
    } else {
        crate::progress::emit(&Event::Image {
            digest,
            tags: tags.iter().map(|t| t.tagged_name()).collect(),
        });
    }
    Ok(0)
}

/// `--compression` and `--compression-level`, checked as the `-o` keys are.
fn export_codec(compression: &str, level: Option<u32>) -> Result<ExportCodec> {
    let codec = ExportCodec {
        compression: ops::output::codec_name(compression),
        level,
    };
    if let (Some(why), Some(l)) = (codec.level_error(), level) {
        bail!("--compression-level {l}: {why}");
    }
    Ok(codec)
}

/// The keys of the first `type=image` output that pushes.
fn push_opts(outputs: &[ops::output::Output]) -> Option<&ops::output::ExportOpts> {
    outputs.iter().find_map(|o| match o {
        ops::output::Output::Image {
            push: true, opts, ..
        } => Some(opts),
        _ => None,
    })
}

/// The build's SOURCE_DATE_EPOCH: `--build-arg SOURCE_DATE_EPOCH=N` as BuildKit's
/// Dockerfile frontend takes it, else the environment variable, which then also
/// becomes that build arg (as buildx passes it), so `ARG SOURCE_DATE_EPOCH` sees it.
fn source_date_epoch(
    build_args: &mut std::collections::BTreeMap<String, String>,
) -> Result<Option<i64>> {
    const NAME: &str = "SOURCE_DATE_EPOCH";
    if let Some(v) = build_args.get(NAME) {
        return v.trim().parse().map(Some).map_err(|_| {
            anyhow!("--build-arg {NAME}={v}: expected a whole number of seconds since 1970")
        });
    }
    let Some(v) = std::env::var(NAME).ok() else {
        return Ok(None);
    };
    let epoch = v.trim().parse().ok();
    if epoch.is_some() {
        build_args.insert(NAME.to_string(), v.trim().to_string());
    }
    Ok(epoch)
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
