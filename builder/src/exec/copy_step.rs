//! The COPY and ADD steps: resolve sources (context, stage or image), owner and mode,
//! copy into a fresh directory, and commit it as a layer.

use super::*;
use crate::plan::CopyStep;

impl Exec<'_> {
    pub(super) fn copy_step(
        &mut self,
        st: &mut StageState,
        c: &CopyStep,
        is_add: bool,
        done: &BTreeMap<usize, StageState>,
        location: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        let unsupported = |what: &str| BuildError::Unsupported {
            location: location.to_string(),
            step: text.to_string(),
            what: what.to_string(),
        };
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
            if let Some(git) = c.sources.iter().find(|s| add::is_git(s)) {
                return Err(unsupported(&format!("ADD from a git repository ({git})")));
            }
            if c.keep_git_dir.is_some() {
                return Err(unsupported("ADD --keep-git-dir (git sources)"));
            }
            if let Some(sum) = &c.checksum {
                add::validate_checksum(&c.sources, sum).map_err(add_err)?;
            }
        }
        let src_layers = match &c.from {
            Source::Context => vec![self.req.context.clone()],
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
            Some(spec) => {
                let ids =
                    users::resolve(spec, &st.topmost_first()).map_err(|e| BuildError::User {
                        location: location.to_string(),
                        step: text.to_string(),
                        source: e,
                    })?;
                (ids.uid, ids.gid)
            }
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
        let workdir = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone());
        let mut dest = resolve_path(workdir.as_deref(), &c.dest);
        if c.dest.ends_with('/') && !dest.ends_with('/') {
            dest.push('/');
        }
        let exclude = crate::ignore::Matcher::new(&c.exclude)
            .map_err(|e| copy_err(copy::CopyError::Pattern(e)))?;
        let from_context = matches!(c.from, Source::Context);
        let filter = copy::SourceFilter {
            from_context,
            ignore: self.req.dockerignore.as_ref().filter(|_| from_context),
            exclude: Some(&exclude),
            parents: c.parents,
        };
        let upper = self.store.scratch_dir("copy")?;
        // --link (BuildKit: a layer merged onto the image, unless --chmod is given)
        // copies into an empty tree: the destination's existing content is not looked
        // at, so an image symlink on the path is replaced, not followed.
        let linked = c.link && c.chmod.is_none();
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
                },
            )
            .map_err(add_err)?;
        } else {
            copy::copy(&spec).map_err(copy_err)?;
        }
        let word = if is_add { "ADD" } else { "COPY" };
        self.commit_layer(
            st,
            upper,
            format!("{word} {} {dest} # buildkit", c.sources.join(" ")),
        )?;
        Ok(())
    }
}
