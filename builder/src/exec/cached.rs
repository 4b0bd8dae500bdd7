//! The executor's side of the step cache: a step's key and inputs, restoring a hit,
//! recording a miss, and explaining a stage's first miss.

use std::path::Path;

use super::copy_step::{copy_dest, is_linked};
use super::*;

/// The cache-miss cause of an instruction never built on this parent, as on a
/// first build; progress output leaves it out (BuildKit says nothing there).
pub const NEW_INSTRUCTION: &str =
    "no earlier build of this instruction on the same parent (the instruction is new or was edited)";

impl Exec<'_> {
    /// The step's key, its inputs summary and its planned form; `None` when the step
    /// cannot be keyed (its parent could not, or its inputs are unknown before it runs),
    /// in which case it and the rest of its stage always run. `downloads` are the
    /// step's URLs as fetched or revalidated (ADD without `--checksum` is keyed by the
    /// body).
    pub(super) fn step_key(
        &self,
        st: &StageState,
        step: &Step,
        done: &BTreeMap<usize, StageState>,
        downloads: &[add::UrlContent],
    ) -> Option<(Digest, Inputs, String)> {
        let parent = st.key.as_ref()?;
        let step_json = serde_json::to_string(&step.kind).ok()?;
        let mut inputs = Inputs::default();
        match &step.kind {
            StepKind::Run {
                mounts,
                network,
                build_args,
                ..
            } => {
                inputs.args = build_args.clone();
                let net = match network.as_deref() {
                    None | Some("default") => format!("{:?}", self.req.network),
                    Some(n) => n.to_string(),
                };
                inputs.other.push(("network".into(), net));
                if !self.req.extra_hosts.is_empty() {
                    inputs.other.push(("hosts".into(), self.hosts_file()));
                }
                for (i, m) in mounts.iter().enumerate() {
                    // Bind mounts count by what they show; cache mounts by their spec
                    // (id, in the step's text), never by contents; secrets never by
                    // contents either.
                    let bind = m.mount.kind().eq_ignore_ascii_case("bind");
                    let src = m
                        .mount
                        .get("source")
                        .or_else(|| m.mount.get("src"))
                        .unwrap_or("/")
                        .to_string();
                    match &m.from {
                        // A bind mount shows the context through .dockerignore, as COPY sees it.
                        None | Some(Source::Context) if bind => {
                            let filter = copy::SourceFilter {
                                from_context: true,
                                ignore: self.req.dockerignore.as_ref(),
                                ..copy::SourceFilter::default()
                            };
                            let files = self.context_inputs(&[src], &filter)?;
                            inputs.files.extend_prefixed(&files, "");
                        }
                        // A named local context, through its own .dockerignore.
                        Some(from @ Source::NamedContext { .. }) if bind => {
                            let (dir, ignore) = self.context_dir(from).ok().flatten()?;
                            let filter = copy::SourceFilter {
                                from_context: true,
                                ignore,
                                ..copy::SourceFilter::default()
                            };
                            let files = self.dir_inputs(dir, &[src], &filter)?;
                            inputs.files.extend_prefixed(&files, &format!("mount {i}:"));
                        }
                        Some(Source::Stage { index }) if bind => {
                            let filter = copy::SourceFilter::default();
                            let files = self.stage_inputs(*index, &[src], &filter, done)?;
                            inputs.files.extend_prefixed(&files, &format!("mount {i}:"));
                        }
                        None | Some(Source::Context) => {}
                        Some(from) => {
                            let what = format!("mount {i} source");
                            inputs.other.push((what, self.source_id(from, done)?));
                        }
                    }
                }
            }
            StepKind::Copy(c) | StepKind::Add(c) => {
                let is_add = matches!(step.kind, StepKind::Add(_));
                // As BuildKit keys an http source: by `--checksum` when given (nothing
                // is fetched), else by the body's digest, the file name and the
                // Last-Modified time the file gets.
                let mut local = Vec::new();
                for s in &c.sources {
                    // A git source: by the commit its ref resolved to (in step_json:
                    // the source text, dest, --chown, --chmod, --checksum).
                    if is_add && add::is_git(s) {
                        let r = self.git.lock().ok()?.get(s).cloned()?;
                        let subdir = r.source.subdir.as_deref().unwrap_or("");
                        let keep = c.keep_git_dir.unwrap_or(false);
                        inputs.other.push((
                            format!("git {}", add::redact(&r.source.remote)),
                            format!("commit {} subdir {subdir:?} keep-git-dir {keep}", r.commit),
                        ));
                        continue;
                    }
                    if !is_add || !add::is_http(s) {
                        if s.contains("://") || s.starts_with("git@") {
                            return None;
                        }
                        local.push(s.clone());
                        continue;
                    }
                    let what = format!("url {}", add::redact(s));
                    let value = match (&c.checksum, downloads.iter().find(|d| d.url == *s)) {
                        (Some(sum), _) => {
                            format!("checksum {sum} name {}", add::url_file_name(s))
                        }
                        (None, Some(d)) => {
                            format!("{} name {} mtime {}", d.digest, d.name, d.mtime)
                        }
                        (None, None) => return None,
                    };
                    inputs.other.push((what, value));
                }
                // What the step itself selects; a bad pattern gives no key and the
                // step reports it.
                let exclude = crate::ignore::Matcher::new(&c.exclude).ok()?;
                // The build context or a named local one: files hashed the same way.
                let context = self.context_dir(&c.from).ok()?;
                let filter = copy::SourceFilter {
                    from_context: context.is_some(),
                    ignore: context.and_then(|(_, ignore)| ignore),
                    exclude: Some(&exclude),
                    parents: c.parents,
                };
                match &c.from {
                    Source::Context | Source::NamedContext { .. } if local.is_empty() => {}
                    Source::Context | Source::NamedContext { .. } => {
                        inputs.files = self.dir_inputs(context?.0, &local, &filter)?
                    }
                    // By content, so a rebuilt stage that made the same files still hits.
                    Source::Stage { index } => {
                        inputs.files = self.stage_inputs(*index, &local, &filter, done)?
                    }
                    from => {
                        let id = self.source_id(from, done)?;
                        inputs.other.push(("source".into(), id));
                    }
                }
            }
            _ => {}
        }
        Some((
            cache::step_key(parent, &step_json, &inputs),
            inputs,
            step_json,
        ))
    }

    /// The key of a `--link` step's layer alone (see [`cache::link_key`]); `None` for
    /// other steps, or when a `--chown` name does not resolve (the step reports it).
    pub(super) fn link_key(
        &self,
        st: &StageState,
        step: &Step,
        keyed: &(Digest, Inputs, String),
    ) -> Option<Digest> {
        let (StepKind::Copy(c) | StepKind::Add(c)) = &step.kind else {
            return None;
        };
        if !is_linked(c) {
            return None;
        }
        let (uid, gid) = match &c.chown {
            Some(spec) => super::copy_step::chown_ids(spec, &st.topmost_first()).ok()?,
            None => (0, 0),
        };
        let resolved = format!("dest {} owner {uid}:{gid}", copy_dest(st, c));
        Some(cache::link_key(
            &keyed.2,
            &keyed.1,
            &resolved,
            self.key_opts,
        ))
    }

    /// Puts a `--link` step's recorded layer, snapshot and history entry on top of the
    /// state as it is now: the config stays the new parent's. `false` when the
    /// record's blob is gone.
    pub(super) fn restore_link(
        &self,
        st: &mut StageState,
        rec: &CacheRecord,
    ) -> Result<bool, BuildError> {
        let Some(history) = rec.history.clone() else {
            return Ok(false);
        };
        if !self.reuse_layer(st, rec)? {
            return Ok(false);
        }
        st.config.history.push(history);
        Ok(true)
    }

    /// Puts the record's layer (if it has one) and its snapshot on the state, the
    /// snapshot unpacked again only if it was pruned. `false` when the blob is gone.
    fn reuse_layer(&self, st: &mut StageState, rec: &CacheRecord) -> Result<bool, BuildError> {
        match (&rec.layer, &rec.diff_id) {
            (Some(layer), Some(diff_id)) => {
                let digest = image::descriptor_digest(layer)?;
                // An imported record's blob is fetched on first use.
                if !self.store.has_blob(&digest)
                    && !self
                        .req
                        .layer_source
                        .is_some_and(|s| s.fetch(layer) && self.store.has_blob(&digest))
                {
                    return Ok(false);
                }
                let snapshot = self.store.ensure_snapshot(layer, diff_id)?;
                if let (true, Some(hook)) = (self.in_image, self.req.layer_ready) {
                    hook.layer_ready(layer, diff_id);
                }
                st.layers.push(layer.clone());
                st.snapshots.push(snapshot);
                st.config.rootfs.diff_ids.push(diff_id.clone());
                Ok(true)
            }
            (None, None) => Ok(true),
            _ => Ok(false),
        }
    }

    /// Records a `--link` step's layer and history entry under its layer key.
    pub(super) fn record_link(
        &self,
        st: &StageState,
        key: &Digest,
        text: &str,
        layers_before: usize,
        history_before: usize,
    ) -> Result<(), BuildError> {
        let step = format!("{text} (--link layer)");
        self.put_record(st, key, step, None, layers_before, history_before)
    }

    /// A stage is known by its final key, an image by its manifest digest.
    fn source_id(&self, from: &Source, done: &BTreeMap<usize, StageState>) -> Option<String> {
        match from {
            Source::Context => Some("context".into()),
            Source::NamedContext { name } => Some(format!("context {name}")),
            Source::Stage { index } => Some(format!(
                "stage {} {}",
                stage_name_of(self.req.graph, *index),
                done.get(index)?.key.as_ref()?
            )),
            Source::Image { reference } => {
                let desc = self.store.resolve(reference).ok()?;
                Some(format!(
                    "image {reference} {}",
                    image::descriptor_digest(&desc).ok()?
                ))
            }
        }
    }

    /// Context files a COPY would select, through the stat cache. A source that does
    /// not resolve gives no key: the step runs and reports the error itself.
    fn context_inputs(
        &self,
        sources: &[String],
        filter: &copy::SourceFilter<'_>,
    ) -> Option<cache::Files> {
        self.dir_inputs(&self.req.context, sources, filter)
    }

    /// Files a COPY would select from a context directory (the build context or a
    /// named one), through that directory's stat cache.
    fn dir_inputs(
        &self,
        dir: &Path,
        sources: &[String],
        filter: &copy::SourceFilter<'_>,
    ) -> Option<cache::Files> {
        self.hashed_inputs(&[dir.to_path_buf()], dir, sources, filter)
    }

    /// Files selected from a finished stage's snapshots. Snapshots never change once
    /// committed, so the stack's stat cache answers for every file of a cached stage.
    fn stage_inputs(
        &self,
        index: usize,
        sources: &[String],
        filter: &copy::SourceFilter<'_>,
        done: &BTreeMap<usize, StageState>,
    ) -> Option<cache::Files> {
        let layers = done.get(&index)?.topmost_first();
        let mut guard = self.stat.lock().ok()?;
        let stat = guard
            .entry(self.store.snapshots_dir())
            .or_insert_with(|| self.store.snapshot_stat_cache());
        cache::copy_inputs(&layers, sources, filter, Some(stat)).ok()
    }

    fn hashed_inputs(
        &self,
        layers: &[PathBuf],
        dir: &Path,
        sources: &[String],
        filter: &copy::SourceFilter<'_>,
    ) -> Option<cache::Files> {
        let mut guard = self.stat.lock().ok()?;
        let stat = guard
            .entry(dir.to_path_buf())
            .or_insert_with(|| self.store.stat_cache(dir));
        cache::copy_inputs(layers, sources, filter, Some(stat)).ok()
    }

    /// Applies a record on top of the state it was keyed from. The layer is not read:
    /// its snapshot is reused (unpacked once only if it was pruned). `false` when the
    /// record's blob is gone, so the step must run.
    pub(super) fn restore(
        &self,
        st: &mut StageState,
        rec: &CacheRecord,
    ) -> Result<bool, BuildError> {
        let Some(mut config) = rec.config.clone() else {
            return Ok(false);
        };
        if !self.reuse_layer(st, rec)? {
            return Ok(false);
        }
        let mut history = std::mem::take(&mut st.config.history);
        history.extend(rec.history.clone());
        config.rootfs.diff_ids = std::mem::take(&mut st.config.rootfs.diff_ids);
        config.history = history;
        st.config = config;
        Ok(true)
    }

    /// Records what the step just did (a layer if it added one, its history entry, the
    /// config after it).
    pub(super) fn record(
        &self,
        st: &StageState,
        key: &Digest,
        text: &str,
        layers_before: usize,
        history_before: usize,
    ) -> Result<(), BuildError> {
        let mut config = st.config.clone();
        config.rootfs.diff_ids.clear();
        config.history.clear();
        let step = text.to_string();
        self.put_record(st, key, step, Some(config), layers_before, history_before)
    }

    /// Stores the step's record: the layer and history entry it added, if any.
    fn put_record(
        &self,
        st: &StageState,
        key: &Digest,
        step: String,
        config: Option<ImageConfig>,
        layers_before: usize,
        history_before: usize,
    ) -> Result<(), BuildError> {
        let layer = (st.layers.len() > layers_before)
            .then(|| st.layers.last().cloned())
            .flatten();
        let diff_id = layer
            .as_ref()
            .and_then(|_| st.config.rootfs.diff_ids.last().cloned());
        let history = (st.config.history.len() > history_before)
            .then(|| st.config.history.last().cloned())
            .flatten();
        self.store.cache_put(&CacheRecord {
            key: key.clone(),
            step,
            size: layer.as_ref().map_or(0, |l| l.size()),
            layer,
            diff_id,
            config,
            history,
            manifest: None,
            created: layer_cache::stat_cache::now_secs(),
        })?;
        Ok(())
    }

    /// Why the step missed: `INSTRUCTION: cause`.
    pub(super) fn explain(
        &self,
        sc: &mut StageCtx,
        st: &StageState,
        keyed: Option<&(Digest, Inputs, String)>,
        text: &str,
    ) -> String {
        let cause = if self.req.no_cache {
            "--no-cache".to_string()
        } else if sc.no_lookup {
            "stage is in --no-cache-filter".to_string()
        } else if let Some(c) = sc.base_cause.take() {
            c
        } else {
            match (st.key.as_ref(), keyed) {
                (None, _) => "an earlier step cannot be cached".into(),
                (Some(_), None) => "the step cannot be cached (its sources are unreadable)".into(),
                (Some(parent), Some((key, inputs, step_json))) => {
                    let note = self
                        .store
                        .cache_note(&cache::step_note_name(parent, text))
                        .ok()
                        .flatten()
                        .and_then(|b| serde_json::from_slice::<StepNote>(&b).ok());
                    match note {
                        None => NEW_INSTRUCTION.into(),
                        Some(n) if n.key == *key => {
                            "its cache record was pruned or its layer is gone".into()
                        }
                        Some(n) => match inputs.explain_change(&n.inputs) {
                            Some(c) => c,
                            None if n.step_json != *step_json => {
                                "the instruction expands differently (a variable changed)".into()
                            }
                            None => "its inputs changed".into(),
                        },
                    }
                }
            }
        };
        format!("{text}: {cause}")
    }

    /// Compares a base image's digest with the one the last build saw; notes the new one.
    pub(super) fn base_changed(&self, reference: &str) -> Result<Option<String>, BuildError> {
        let Ok(desc) = self.store.resolve(reference) else {
            return Ok(None);
        };
        let digest = image::descriptor_digest(&desc)?;
        let name = cache::base_note_name(reference);
        let old = self
            .store
            .cache_note(&name)?
            .and_then(|b| String::from_utf8(b).ok());
        if old.as_deref() == Some(digest.to_string().as_str()) {
            return Ok(None);
        }
        self.store
            .set_cache_note(&name, digest.to_string().as_bytes())?;
        Ok(old.map(|o| {
            format!(
                "base image {reference} changed digest {}→{}",
                short(&o),
                digest.short()
            )
        }))
    }
}

fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    hex.get(..12).unwrap_or(hex)
}
