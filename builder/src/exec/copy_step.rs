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
        if is_add
            && c.sources
                .iter()
                .any(|s| s.contains("://") || s.starts_with("git@"))
        {
            return Err(unsupported("ADD from a URL or git repository"));
        }
        if is_add && c.unpack != Some(false) {
            // Local archives would be extracted by ADD; refuse rather than copy them wrongly.
            for s in &c.sources {
                let lower = s.to_ascii_lowercase();
                if [
                    ".tar", ".tar.gz", ".tgz", ".tar.xz", ".txz", ".tar.bz2", ".tbz2", ".tar.zst",
                ]
                .iter()
                .any(|ext| lower.ends_with(ext))
                {
                    return Err(unsupported("ADD of a local archive (auto-extraction)"));
                }
            }
        }
        if c.checksum.is_some() {
            return Err(unsupported("ADD --checksum"));
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
        let dest_layers = st.topmost_first();
        copy::copy(&copy::CopySpec {
            src_layers: &src_layers,
            dest_layers: &dest_layers,
            sources: &c.sources,
            filter,
            contents: &c.contents,
            dest: &dest,
            owner,
            chmod,
            upper: upper.path(),
        })
        .map_err(copy_err)?;
        let word = if is_add { "ADD" } else { "COPY" };
        self.commit_layer(
            st,
            upper,
            format!("{word} {} {dest} # buildkit", c.sources.join(" ")),
        )?;
        Ok(())
    }
}
