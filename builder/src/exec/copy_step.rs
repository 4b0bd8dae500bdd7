//! The COPY and ADD steps: resolve sources (context, stage or image), owner and mode,
//! copy into a fresh directory, and commit it as a layer.

use std::sync::Arc;

use layer_cache::url_cache::UrlMeta;

use super::*;
use crate::plan::CopyStep;

/// Whether the step makes a layer without looking at the image below (`--link`,
/// which `--chmod` turns off), so its layer can be cached apart from its parent.
pub(super) fn is_linked(c: &CopyStep) -> bool {
    c.link && c.chmod.is_none()
}

/// The destination against the stage's WORKDIR, keeping a trailing `/`.
pub(super) fn copy_dest(st: &StageState, c: &CopyStep) -> String {
    let workdir = st
        .config
        .config
        .as_ref()
        .and_then(|c| c.working_dir.as_deref());
    let mut dest = resolve_path(workdir, &c.dest);
    // `.` names the WORKDIR itself, always a directory (BuildKit makes it `./`).
    let names_dir = c.dest.ends_with('/') || c.dest == "." || c.dest.ends_with("/.");
    if names_dir && !dest.ends_with('/') {
        dest.push('/');
    }
    dest
}

/// The owner `--chown` names, as BuildKit resolves it: `user:group` through the
/// image's passwd and group files; a user alone takes the user's primary group, but
/// a numeric user alone is its own group (`3000` gives 3000:3000) whatever passwd
/// says, since BuildKit passes it by id without a lookup.
pub(super) fn chown_ids(spec: &str, layers: &[PathBuf]) -> Result<(u32, u32), users::UserError> {
    if !spec.contains(':') && !spec.is_empty() && spec.bytes().all(|b| b.is_ascii_digit()) {
        let uid = spec
            .parse()
            .map_err(|_| users::UserError::Invalid(spec.to_string()))?;
        return Ok((uid, uid));
    }
    let ids = users::resolve(spec, layers)?;
    Ok((ids.uid, ids.gid))
}

/// COPY's and ADD's history as BuildKit writes it: `--parents`, `--chown` and
/// `--chmod` as given, the sources, `<<NAME` for each heredoc, and the destination
/// as written (not resolved against WORKDIR).
pub(super) fn copy_created_by(c: &CopyStep, is_add: bool) -> String {
    let mut s = String::from(if is_add { "ADD" } else { "COPY" });
    if c.parents && !is_add {
        s.push_str(" --parents");
    }
    if let Some(v) = c.chown.as_deref().filter(|v| !v.is_empty()) {
        s.push_str(&format!(" --chown={v}"));
    }
    if let Some(v) = c.chmod.as_deref().filter(|v| !v.is_empty()) {
        s.push_str(&format!(" --chmod={v}"));
    }
    for src in &c.sources {
        s.push(' ');
        s.push_str(src);
    }
    for (name, _) in &c.contents {
        s.push_str(" <<");
        s.push_str(name);
    }
    s.push(' ');
    s.push_str(&c.dest);
    s.push_str(" # buildkit");
    s
}

impl<'a> Exec<'a> {
    /// The directory and ignore rules of a context source (the build context or a
    /// local named context); `None` for stages and images.
    pub(super) fn context_dir(
        &self,
        from: &Source,
    ) -> Result<Option<(&'a std::path::Path, Option<&'a crate::ignore::Matcher>)>, BuildError> {
        let req: &'a BuildRequest<'a> = self.req;
        Ok(match from {
            Source::Context => Some((req.context.as_path(), req.dockerignore.as_ref())),
            Source::NamedContext { name } => {
                let nd = req.named_contexts.get(name).ok_or_else(|| {
                    StoreError::invalid("build plan", format!("named context {name} was not given"))
                })?;
                Some((nd.dir.as_path(), nd.dockerignore.as_ref()))
            }
            Source::Stage { .. } | Source::Image { .. } => None,
        })
    }

    pub(super) fn copy_step(
        &mut self,
        st: &mut StageState,
        c: &CopyStep,
        is_add: bool,
        done: &BTreeMap<usize, StageState>,
        location: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        let add_err = |e| BuildError::Add {
            location: location.to_string(),
            step: text.to_string(),
            source: e,
        };
        if !is_add {
            if let Some(s) = c.sources.iter().find(|s| add::is_git(s)) {
                return Err(add_err(add::AddError::CopyGit(s.clone())));
            }
            if let Some(s) = c.sources.iter().find(|s| add::is_http(s)) {
                return Err(add_err(add::AddError::CopyUrl(s.clone())));
            }
        }
        if is_add {
            if let Some(sum) = &c.checksum {
                add::validate_checksum(&c.sources, sum).map_err(add_err)?;
            }
        }
        // Fetched once per build: keying the step may already have downloaded them.
        let mut downloads = Vec::new();
        if is_add {
            for url in c.sources.iter().filter(|s| add::is_http(s)) {
                if !downloads.iter().any(|d: &Arc<add::Download>| d.url == *url) {
                    downloads.push(self.download(url, c.checksum.as_deref()).map_err(add_err)?);
                }
            }
        }
        // Checked out at the commit the step was keyed by.
        let mut checkouts: Vec<(String, git::Checkout)> = Vec::new();
        if is_add {
            let keep = c.keep_git_dir.unwrap_or(false);
            for src in c.sources.iter().filter(|s| add::is_git(s)) {
                if checkouts.iter().any(|(s, _)| s == src) {
                    continue;
                }
                let r = self.resolve_git(src).map_err(add_err)?;
                if let Some(sum) = &c.checksum {
                    git::verify_checksum(&r, sum).map_err(|e| add_err(add::AddError::Git(e)))?;
                }
                let co = git::checkout(self.store, &r, keep, &self.git_env())
                    .map_err(|e| add_err(add::AddError::Git(e)))?;
                checkouts.push((src.clone(), co));
            }
        }
        let context = self.context_dir(&c.from)?;
        let src_layers = match &c.from {
            Source::Context | Source::NamedContext { .. } => {
                context.iter().map(|(d, _)| d.to_path_buf()).collect()
            }
            Source::Stage { index } => {
                done.get(index).map(|s| s.topmost_first()).ok_or_else(|| {
                    StoreError::invalid(
                        "build plan",
                        format!("stage {index} used before it was built"),
                    )
                })?
            }
            Source::Image { reference } => self.base_image(reference, location)?.topmost_first(),
        };
        let owner = match &c.chown {
            Some(spec) => chown_ids(spec, &st.topmost_first()).map_err(|e| BuildError::User {
                location: location.to_string(),
                step: text.to_string(),
                source: e,
            })?,
            None => (0, 0),
        };
        let copy_err = |e| BuildError::Copy {
            location: location.to_string(),
            step: text.to_string(),
            source: e,
        };
        let chmod = c
            .chmod
            .as_deref()
            .map(copy::parse_chmod)
            .transpose()
            .map_err(copy_err)?;
        let dest = copy_dest(st, c);
        let exclude = crate::ignore::Matcher::new(&c.exclude)
            .map_err(|e| copy_err(copy::CopyError::Pattern(e)))?;
        let filter = copy::SourceFilter {
            from_context: context.is_some(),
            ignore: context.and_then(|(_, ignore)| ignore),
            exclude: Some(&exclude),
            parents: c.parents,
        };
        let upper = self.store.scratch_dir("copy")?;
        // --link (BuildKit: a layer merged onto the image, unless --chmod is given)
        // copies into an empty tree: the destination's existing content is not looked
        // at, so an image symlink on the path is replaced, not followed.
        let linked = is_linked(c);
        let dest_layers = if linked {
            Vec::new()
        } else {
            st.topmost_first()
        };
        let spec = copy::CopySpec {
            src_layers: &src_layers,
            dest_layers: &dest_layers,
            sources: &c.sources,
            filter,
            contents: &c.contents,
            dest: &dest,
            owner,
            chmod,
            upper: upper.path(),
        };
        if is_add {
            add::add(
                self.store,
                &add::AddSpec {
                    copy: spec,
                    chown_given: c.chown.is_some(),
                    unpack: c.unpack,
                    checksum: c.checksum.as_deref(),
                    downloads: &downloads,
                    git: &checkouts,
                    http: self.req.http,
                },
            )
            .map_err(add_err)?;
        } else {
            copy::copy(&spec).map_err(copy_err)?;
        }
        self.commit_layer(st, upper, copy_created_by(c, is_add))?;
        Ok(())
    }

    /// `url`'s body, downloaded once per build and shared by every step naming it;
    /// with `checksum` the body must match. Two stages asking at once may both fetch.
    /// When a 304 earlier in the build let a step be keyed by the remembered content,
    /// the body must be that content.
    pub(super) fn download(
        &self,
        url: &str,
        checksum: Option<&str>,
    ) -> Result<Arc<add::Download>, add::AddError> {
        let known = self.downloads.lock().ok().and_then(|m| m.get(url).cloned());
        if let Some(d) = known {
            if let Some(sum) = checksum {
                add::verify(&d, sum)?;
            }
            return Ok(d);
        }
        let d = Arc::new(add::fetch(self.store, self.http(url)?, url, checksum)?);
        let confirmed = self
            .revalidated
            .lock()
            .ok()
            .and_then(|m| m.get(url).cloned());
        if let Some(u) = confirmed.filter(|u| u.content.digest != d.digest) {
            return Err(add::AddError::ChangedUnderValidator {
                url: add::redact(url),
                validator: u.validator,
                remembered: u.content.digest,
                fetched: d.digest.clone(),
            });
        }
        if let Ok(mut m) = self.downloads.lock() {
            m.insert(url.to_string(), d.clone());
        }
        Ok(d)
    }

    /// The build's HTTP client, for fetching `url`.
    fn http(&self, url: &str) -> Result<&'a dyn super::fetch::Fetch, add::AddError> {
        self.req.http.ok_or_else(|| add::AddError::NoHttp {
            url: add::redact(url),
        })
    }

    /// `src`'s git ref resolved to a commit, once per build and shared by every step.
    pub(super) fn resolve_git(&self, src: &str) -> Result<git::Resolved, add::AddError> {
        if let Some(r) = self.git.lock().ok().and_then(|m| m.get(src).cloned()) {
            return Ok(r);
        }
        let r = git::resolve(self.store, src, &self.git_env())?;
        if let Ok(mut m) = self.git.lock() {
            m.insert(src.to_string(), r.clone());
        }
        Ok(r)
    }

    /// The build's default `--ssh` agent reaches git (for ssh remotes), nothing else.
    fn git_env(&self) -> git::GitEnv {
        git::GitEnv {
            ssh_auth_sock: self.req.ssh.get("default").cloned(),
        }
    }

    /// Revalidates `url` against what the last build remembered; the content to key by.
    fn revalidate(&self, url: &str, meta: &UrlMeta) -> Result<add::UrlContent, add::AddError> {
        match add::revalidate(self.store, self.http(url)?, url, meta)? {
            add::Revalidated::Unchanged(u) => {
                let content = u.content.clone();
                if let Ok(mut m) = self.revalidated.lock() {
                    m.insert(url.to_string(), u);
                }
                Ok(content)
            }
            add::Revalidated::Fetched(d) => {
                let content = d.content();
                if let Ok(mut m) = self.downloads.lock() {
                    m.insert(url.to_string(), Arc::new(d));
                }
                Ok(content)
            }
        }
    }

    /// The content an ADD step's URLs are keyed by. A URL settled earlier in the build
    /// is not asked about again. One a past build remembered is revalidated only when
    /// the step's record for the remembered content still exists (else the step runs
    /// and needs the body anyway); others, and all under --no-cache, are downloaded.
    pub(super) fn url_inputs(
        &self,
        sc: &StageCtx,
        st: &StageState,
        step: &Step,
        done: &BTreeMap<usize, StageState>,
        sources: &[String],
    ) -> Result<Vec<add::UrlContent>, add::AddError> {
        let mut out: Vec<add::UrlContent> = Vec::new();
        let mut remembered: Vec<(String, UrlMeta)> = Vec::new();
        for url in sources.iter().filter(|s| add::is_http(s)) {
            if out.iter().any(|c| c.url == *url) || remembered.iter().any(|(u, _)| u == url) {
                continue;
            }
            if let Some(d) = self.downloads.lock().ok().and_then(|m| m.get(url).cloned()) {
                out.push(d.content());
                continue;
            }
            if let Some(u) = self
                .revalidated
                .lock()
                .ok()
                .and_then(|m| m.get(url).cloned())
            {
                out.push(u.content);
                continue;
            }
            let meta = match sc.no_lookup {
                true => None,
                false => self.store.url_meta(url)?.filter(UrlMeta::has_validator),
            };
            match meta {
                Some(m) => remembered.push((url.clone(), m)),
                None => out.push(self.download(url, None)?.content()),
            }
        }
        if remembered.is_empty() {
            return Ok(out);
        }
        let guess: Vec<add::UrlContent> = out
            .iter()
            .cloned()
            .chain(remembered.iter().map(|(u, m)| add::remembered(u, m)))
            .collect();
        let worth = match self.step_key(st, step, done, &guess) {
            Some(keyed) => {
                self.store.cache_get(&keyed.0)?.is_some()
                    || match self.link_key(st, step, &keyed) {
                        Some(lk) => self.store.cache_get(&lk)?.is_some(),
                        None => false,
                    }
            }
            None => false,
        };
        for (url, meta) in remembered {
            out.push(match worth {
                true => self.revalidate(&url, &meta)?,
                false => self.download(&url, None)?.content(),
            });
        }
        Ok(out)
    }
}
