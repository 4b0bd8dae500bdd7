//! Reading a stack of snapshot directories (topmost first) as the overlay would show
//! it, without mounting: whiteouts (0/0 devices) hide lower entries, opaque
//! directories hide lower directories' contents. A build context is a stack of one.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn is_whiteout(md: &std::fs::Metadata) -> bool {
    md.file_type().is_char_device() && md.rdev() == 0
}

fn is_opaque(path: &Path) -> bool {
    crate::xattrs::is(path, "trusted.overlay.opaque", b"y")
}

/// The real path backing `rel` in the merged view, or `None` when absent.
/// `rel` is relative (no leading `/`), already cleaned.
pub fn lookup(layers: &[PathBuf], rel: &Path) -> Option<PathBuf> {
    let comps: Vec<_> = rel.components().collect();
    if comps.is_empty() {
        return layers.first().cloned();
    }
    for layer in layers {
        let mut cur = layer.clone();
        let mut opaque_above = false;
        for (j, c) in comps.iter().enumerate() {
            cur.push(c);
            let Ok(md) = std::fs::symlink_metadata(&cur) else {
                break;
            };
            if is_whiteout(&md) {
                return None;
            }
            if j + 1 == comps.len() {
                return Some(cur);
            }
            if !md.is_dir() {
                return None;
            }
            opaque_above |= is_opaque(&cur);
        }
        if opaque_above {
            return None;
        }
    }
    None
}

/// Names in directory `rel` of the merged view, sorted.
pub fn list(layers: &[PathBuf], rel: &Path) -> Vec<OsString> {
    let mut names = BTreeSet::new();
    let mut hidden = BTreeSet::new();
    for layer in layers {
        let dir = layer.join(rel);
        let Ok(md) = std::fs::symlink_metadata(&dir) else {
            continue;
        };
        if !md.is_dir() {
            break;
        }
        if let Ok(rd) = std::fs::read_dir(&dir) {
            for e in rd.flatten() {
                let name = e.file_name();
                if hidden.contains(&name) || names.contains(&name) {
                    continue;
                }
                match e.path().symlink_metadata() {
                    Ok(m) if is_whiteout(&m) => {
                        hidden.insert(name);
                    }
                    Ok(_) => {
                        names.insert(name);
                    }
                    Err(_) => {}
                }
            }
        }
        if is_opaque(&dir) {
            break;
        }
    }
    names.into_iter().collect()
}
