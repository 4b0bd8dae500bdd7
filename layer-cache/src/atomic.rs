//! Whole-file replacement that a kill cannot tear: the content goes to a temp file,
//! is fsync'ed, renamed over the target, and the directory is fsync'ed. Readers see
//! the old file or the new one, never a part.

use std::fs::File;
use std::io;
use std::path::Path;

use crate::error::{AtPath, Result};
use crate::store::unique_suffix;

/// Writes `path` through a temp file beside it.
pub fn write_atomically(path: &Path, fill: impl FnOnce(&mut File) -> io::Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    write_atomically_in(dir, path, fill)
}

/// Writes `path` through a temp file in `temp_dir` (on the same filesystem). The temp
/// file is flock'ed while it is written, so a sweep of `temp_dir` that skips locked
/// files (the store's ingest directory) leaves it alone.
pub fn write_atomically_in(
    temp_dir: &Path,
    path: &Path,
    fill: impl FnOnce(&mut File) -> io::Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = temp_dir.join(format!(".{name}.tmp-{}", unique_suffix()));
    let res = File::create(&temp)
        .and_then(|mut f| {
            rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
            fill(&mut f)?;
            f.sync_all()
        })
        .and_then(|()| std::fs::rename(&temp, path))
        .at(path);
    if res.is_err() {
        let _ = std::fs::remove_file(&temp);
        return res;
    }
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    crate::ingest::sync_dir(dir)
}
