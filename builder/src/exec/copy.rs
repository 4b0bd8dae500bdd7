//! COPY and ADD of local content: sources from the build context or another stage's
//! snapshots are written into a fresh directory that then becomes the step's layer.
//! Parent directories that already exist in the image keep the image's owner and mode.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::merged;

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source {0:?} not found")]
    NotFound(String),
    #[error("source {0:?} leaves the build context")]
    Outside(String),
    #[error("invalid --chmod {0:?}: expected an octal mode such as 0755 or a symbolic one such as u=rwX,go=rX")]
    Chmod(String),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

pub struct CopySpec<'a> {
    /// Where sources are read: `[context]`, or a stage's snapshots topmost first.
    pub src_layers: &'a [PathBuf],
    /// The stage's current snapshots, topmost first, to mirror existing parents.
    pub dest_layers: &'a [PathBuf],
    pub sources: &'a [String],
    /// Heredoc files: (name, content).
    pub contents: &'a [(String, String)],
    /// Destination, already absolute (WORKDIR applied).
    pub dest: &'a str,
    pub owner: (u32, u32),
    pub chmod: Option<super::chmod::Chmod>,
    /// The directory that becomes the layer.
    pub upper: &'a Path,
}

pub fn parse_chmod(s: &str) -> Result<super::chmod::Chmod, CopyError> {
    super::chmod::Chmod::parse(s).ok_or_else(|| CopyError::Chmod(s.to_string()))
}

/// An entry's mode after `--chmod`, which may depend on its own mode.
fn mode_for(spec: &CopySpec, mode: u32, is_dir: bool) -> u32 {
    match &spec.chmod {
        Some(c) => c.apply(mode, is_dir),
        None => mode & 0o7777,
    }
}

/// Cleans a path to components under the root; `..` may not climb above it.
pub(crate) fn clean_rel(p: &str) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in Path::new(p).components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir if !out.pop() => return None,
            _ => {}
        }
    }
    Some(out)
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Shell-style match of one path component: `*`, `?`, `[...]`, `\` escapes.
pub fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    match (pat.first(), name.first()) {
        (None, None) => true,
        (Some(b'*'), _) => {
            glob_match(&pat[1..], name) || (!name.is_empty() && glob_match(pat, &name[1..]))
        }
        (Some(b'?'), Some(_)) => glob_match(&pat[1..], &name[1..]),
        (Some(b'['), Some(c)) => {
            let Some(end) = pat.iter().skip(1).position(|b| *b == b']').map(|i| i + 1) else {
                return pat[0] == *c && glob_match(&pat[1..], &name[1..]);
            };
            let class = &pat[1..end];
            let (negate, class) = match class.first() {
                Some(b'^' | b'!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == b'-' {
                    hit |= class[i] <= *c && *c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == *c;
                    i += 1;
                }
            }
            hit != negate && glob_match(&pat[end + 1..], &name[1..])
        }
        (Some(b'\\'), Some(c)) if pat.len() > 1 => {
            pat[1] == *c && glob_match(&pat[2..], &name[1..])
        }
        (Some(p), Some(c)) => p == c && glob_match(&pat[1..], &name[1..]),
        _ => false,
    }
}

/// Expands a source pattern against the merged source view: (relative path, real path).
pub(crate) fn expand(layers: &[PathBuf], pattern: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut current = vec![PathBuf::new()];
    for comp in pattern.components() {
        let part = comp.as_os_str().to_string_lossy().into_owned();
        let mut next = Vec::new();
        for base in &current {
            if has_glob(&part) {
                for name in merged::list(layers, base) {
                    if glob_match(part.as_bytes(), name.as_bytes()) {
                        next.push(base.join(name));
                    }
                }
            } else {
                next.push(base.join(&part));
            }
        }
        current = next;
    }
    current
        .into_iter()
        .filter_map(|rel| merged::lookup(layers, &rel).map(|real| (rel, real)))
        .collect()
}

fn set_meta(
    path: &Path,
    mode: Option<u32>,
    owner: (u32, u32),
    mtime: Option<i64>,
) -> Result<(), CopyError> {
    let md = std::fs::symlink_metadata(path).map_err(io(path))?;
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(io(path))?;
    if !md.file_type().is_symlink() {
        if let Some(m) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).map_err(io(path))?;
        }
    }
    if let Some(t) = mtime {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| CopyError::NotFound(path.display().to_string()))?;
        let ts = [
            libc::timespec {
                tv_sec: t,
                tv_nsec: 0,
            },
            libc::timespec {
                tv_sec: t,
                tv_nsec: 0,
            },
        ];
        // SAFETY: valid path and a two-element timespec array.
        if unsafe {
            libc::utimensat(
                libc::AT_FDCWD,
                c.as_ptr(),
                ts.as_ptr(),
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            return Err(io(path)(std::io::Error::last_os_error()));
        }
    }
    Ok(())
}

/// Creates `rel`'s missing parents (and itself when `dir`) in the upper directory,
/// copying owner and mode from the image where the directory already exists.
fn ensure_dirs(spec: &CopySpec, rel: &Path) -> Result<(), CopyError> {
    let mut cur = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        let here = spec.upper.join(&cur);
        if here.symlink_metadata().is_ok() {
            continue;
        }
        std::fs::create_dir(&here).map_err(io(&here))?;
        match merged::lookup(spec.dest_layers, &cur).and_then(|p| std::fs::symlink_metadata(p).ok())
        {
            Some(md) if md.is_dir() => set_meta(
                &here,
                Some(md.mode() & 0o7777),
                (md.uid(), md.gid()),
                Some(md.mtime()),
            )?,
            _ => set_meta(&here, Some(0o755), (0, 0), None)?,
        }
    }
    Ok(())
}

/// Copies every entry of source directory `src_rel` into `dest_rel`.
fn copy_children(spec: &CopySpec, src_rel: &Path, dest_rel: &Path) -> Result<(), CopyError> {
    for name in merged::list(spec.src_layers, src_rel) {
        let child = src_rel.join(&name);
        if let Some(real) = merged::lookup(spec.src_layers, &child) {
            copy_entry(spec, &child, &real, &dest_rel.join(&name))?;
        }
    }
    Ok(())
}

/// Copies one entry (file, symlink or whole directory) from the merged source view.
fn copy_entry(
    spec: &CopySpec,
    src_rel: &Path,
    real: &Path,
    dest_rel: &Path,
) -> Result<(), CopyError> {
    let md = std::fs::symlink_metadata(real).map_err(io(real))?;
    let target = spec.upper.join(dest_rel);
    if let Some(parent) = dest_rel.parent() {
        ensure_dirs(spec, parent)?;
    }
    if md.is_dir() {
        if target
            .symlink_metadata()
            .map(|m| !m.is_dir())
            .unwrap_or(false)
        {
            std::fs::remove_file(&target).map_err(io(&target))?;
        }
        if target.symlink_metadata().is_err() {
            std::fs::create_dir(&target).map_err(io(&target))?;
        }
        copy_children(spec, src_rel, dest_rel)?;
        set_meta(
            &target,
            Some(mode_for(spec, md.mode(), true)),
            spec.owner,
            Some(md.mtime()),
        )?;
        return Ok(());
    }
    if let Ok(existing) = target.symlink_metadata() {
        if existing.is_dir() {
            std::fs::remove_dir_all(&target).map_err(io(&target))?;
        } else {
            std::fs::remove_file(&target).map_err(io(&target))?;
        }
    }
    if md.file_type().is_symlink() {
        let link = std::fs::read_link(real).map_err(io(real))?;
        std::os::unix::fs::symlink(&link, &target).map_err(io(&target))?;
        set_meta(&target, None, spec.owner, Some(md.mtime()))?;
    } else if md.is_file() {
        std::fs::copy(real, &target).map_err(io(&target))?;
        set_meta(
            &target,
            Some(mode_for(spec, md.mode(), false)),
            spec.owner,
            Some(md.mtime()),
        )?;
    }
    // Devices, fifos and sockets in a context are skipped, as Docker does.
    Ok(())
}

/// Performs the copy into `spec.upper`.
pub fn copy(spec: &CopySpec) -> Result<(), CopyError> {
    let dest_rel = clean_rel(spec.dest).unwrap_or_default();
    let many =
        spec.sources.len() + spec.contents.len() > 1 || spec.sources.iter().any(|s| has_glob(s));
    let dest_is_dir = spec.dest.ends_with('/')
        || spec.dest.ends_with("/.")
        || many
        || dest_rel.as_os_str().is_empty()
        || merged::lookup(spec.dest_layers, &dest_rel)
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.is_dir());
    if dest_is_dir {
        ensure_dirs(spec, &dest_rel)?;
    }
    for src in spec.sources {
        let pattern = clean_rel(src).ok_or_else(|| CopyError::Outside(src.clone()))?;
        let matches = expand(spec.src_layers, &pattern);
        if matches.is_empty() {
            return Err(CopyError::NotFound(src.clone()));
        }
        for (rel, real) in matches {
            let is_dir = std::fs::symlink_metadata(&real)
                .map(|m| m.is_dir())
                .unwrap_or(false);
            let target = if is_dir {
                if !dest_is_dir {
                    ensure_dirs(spec, &dest_rel)?;
                }
                dest_rel.clone()
            } else if dest_is_dir {
                dest_rel.join(rel.file_name().unwrap_or_default())
            } else {
                dest_rel.clone()
            };
            if is_dir {
                // A directory source copies its contents, not itself.
                copy_children(spec, &rel, &target)?;
            } else {
                copy_entry(spec, &rel, &real, &target)?;
            }
        }
    }
    for (name, data) in spec.contents {
        let target_rel = if dest_is_dir {
            dest_rel.join(name)
        } else {
            dest_rel.clone()
        };
        if let Some(parent) = target_rel.parent() {
            ensure_dirs(spec, parent)?;
        }
        let target = spec.upper.join(&target_rel);
        std::fs::write(&target, data).map_err(io(&target))?;
        set_meta(
            &target,
            Some(mode_for(spec, 0o644, false)),
            spec.owner,
            None,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs_match_like_filepath_match() {
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(!glob_match(b"*.txt", b"a.txt.bak"));
        assert!(glob_match(b"f?le[0-9]", b"file7"));
        assert!(!glob_match(b"[!a]*", b"abc"));
        assert!(glob_match(b"\\*", b"*"));
    }
}
