//! Turns an overlay upperdir into an OCI layer tar without walking the whole rootfs.
//!
//! Overlay whiteouts (character device 0/0) become `.wh.<name>` entries, opaque
//! directories (`trusted.overlay.opaque=y`, or `user.overlay.opaque=y` in a user
//! namespace) get a `.wh..wh..opq` entry, hard links
//! within the diff become link entries, and xattrs other than overlay's own are kept
//! as PAX `SCHILY.xattr.*` records. Entries are sorted by name so equal trees give
//! equal bytes; with `clamp_mtime` (SOURCE_DATE_EPOCH) no mtime is later than it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiffError + '_ {
    move |source| DiffError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Default)]
pub struct DiffOptions {
    /// Upper bound for entry mtimes (seconds since the epoch).
    pub clamp_mtime: Option<i64>,
}

/// Writes the layer tar for `upper` to `out`. Returns the number of entries.
pub fn write_upperdir<W: Write>(
    upper: &Path,
    out: W,
    opts: &DiffOptions,
) -> Result<u64, DiffError> {
    write_tree(upper, None, out, opts)
}

/// As [`write_upperdir`], with only the top-level entries `names` (sorted) and
/// what is below them: one part of a directory written in several tars.
pub fn write_upperdir_part<W: Write>(
    upper: &Path,
    names: Vec<std::ffi::OsString>,
    out: W,
    opts: &DiffOptions,
) -> Result<u64, DiffError> {
    write_tree(upper, Some(names), out, opts)
}

fn write_tree<W: Write>(
    upper: &Path,
    top: Option<Vec<std::ffi::OsString>>,
    out: W,
    opts: &DiffOptions,
) -> Result<u64, DiffError> {
    let mut b = tar::Builder::new(out);
    b.mode(tar::HeaderMode::Complete);
    b.follow_symlinks(false);
    let mut state = State {
        opts,
        links: HashMap::new(),
        count: 0,
    };
    walk(&mut b, upper, top, &mut state)?;
    b.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(io_err(upper))?;
    Ok(state.count)
}

struct State<'a> {
    opts: &'a DiffOptions,
    /// (dev, ino) → first path written, for hard links.
    links: HashMap<(u64, u64), PathBuf>,
    count: u64,
}

/// The names in `dir`, in byte order (the order layers list them in).
pub fn sorted_children(dir: &Path) -> Result<Vec<std::ffi::OsString>, DiffError> {
    let mut names: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_err(dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io_err(dir))?;
    names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    Ok(names)
}

/// Writes every entry below `root` in sorted, depth-first order. The stack of open
/// directories lives on the heap, so tree depth is bounded by memory, not the stack.
fn walk<W: Write>(
    b: &mut tar::Builder<W>,
    root: &Path,
    top: Option<Vec<std::ffi::OsString>>,
    st: &mut State,
) -> Result<(), DiffError> {
    struct Frame {
        abs: PathBuf,
        rel: PathBuf,
        names: std::vec::IntoIter<std::ffi::OsString>,
    }
    let mut stack = vec![Frame {
        abs: root.to_path_buf(),
        rel: PathBuf::new(),
        names: match top {
            Some(names) => names.into_iter(),
            None => sorted_children(root)?.into_iter(),
        },
    }];
    while let Some(top) = stack.last_mut() {
        let Some(name) = top.names.next() else {
            stack.pop();
            continue;
        };
        let path = top.abs.join(&name);
        let rel_path = top.rel.join(&name);
        if let Some(dir) = entry(b, &path, &top.rel, &rel_path, &name, st)? {
            let names = sorted_children(&dir)?.into_iter();
            stack.push(Frame {
                abs: dir,
                rel: rel_path,
                names,
            });
        }
    }
    Ok(())
}

/// Writes one entry; returns its path when it is a directory to descend into.
fn entry<W: Write>(
    b: &mut tar::Builder<W>,
    path: &Path,
    rel: &Path,
    rel_path: &Path,
    name: &std::ffi::OsStr,
    st: &mut State,
) -> Result<Option<PathBuf>, DiffError> {
    let path = path.to_path_buf();
    let rel_path = rel_path.to_path_buf();
    let md = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
    let ft = md.file_type();
    if ft.is_char_device() && md.rdev() == 0 {
        let mut wh = std::ffi::OsString::from(".wh.");
        wh.push(name);
        let mut h = base_header(&md, st.opts, tar::EntryType::Regular);
        h.set_mode(0o600);
        h.set_size(0);
        append(b, h, &rel.join(wh), io::empty(), &path)?;
        st.count += 1;
        return Ok(None);
    }
    let xattrs = crate::xattrs::read(&path).map_err(io_err(&path))?;
    if ft.is_dir() {
        let opaque_name = layer_cache::overlay::namespace().opaque().as_bytes();
        let opaque = xattrs
            .iter()
            .any(|(k, v)| k == opaque_name && v.as_slice() == b"y");
        pax(b, &xattrs, &path)?;
        let h = base_header(&md, st.opts, tar::EntryType::Directory);
        append(b, h, &rel_path, io::empty(), &path)?;
        st.count += 1;
        if opaque {
            let mut h = base_header(&md, st.opts, tar::EntryType::Regular);
            h.set_mode(0o600);
            h.set_size(0);
            append(b, h, &rel_path.join(".wh..wh..opq"), io::empty(), &path)?;
            st.count += 1;
        }
        return Ok(Some(path));
    }
    if !ft.is_symlink() && md.nlink() > 1 {
        let key = (md.dev(), md.ino());
        if let Some(first) = st.links.get(&key) {
            let mut h = base_header(&md, st.opts, tar::EntryType::Link);
            h.set_size(0);
            b.append_link(&mut h, &rel_path, first)
                .map_err(io_err(&path))?;
            st.count += 1;
            return Ok(None);
        }
        st.links.insert(key, rel_path.clone());
    }
    pax(b, &xattrs, &path)?;
    if ft.is_symlink() {
        let target = std::fs::read_link(&path).map_err(io_err(&path))?;
        let mut h = base_header(&md, st.opts, tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, &rel_path, &target)
            .map_err(io_err(&path))?;
    } else if ft.is_file() {
        let mut h = base_header(&md, st.opts, tar::EntryType::Regular);
        h.set_size(md.len());
        let f = File::open(&path).map_err(io_err(&path))?;
        append(b, h, &rel_path, f, &path)?;
    } else {
        let kind = if ft.is_char_device() {
            tar::EntryType::Char
        } else if ft.is_block_device() {
            tar::EntryType::Block
        } else if ft.is_fifo() {
            tar::EntryType::Fifo
        } else {
            // Sockets cannot be stored in a tar; Docker skips them too.
            return Ok(None);
        };
        let mut h = base_header(&md, st.opts, kind);
        h.set_size(0);
        let rdev = md.rdev();
        h.set_device_major(libc::major(rdev))
            .map_err(io_err(&path))?;
        h.set_device_minor(libc::minor(rdev))
            .map_err(io_err(&path))?;
        append(b, h, &rel_path, io::empty(), &path)?;
    }
    st.count += 1;
    Ok(None)
}

fn base_header(md: &std::fs::Metadata, opts: &DiffOptions, kind: tar::EntryType) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(md.mode() & 0o7777);
    h.set_uid(u64::from(md.uid()));
    h.set_gid(u64::from(md.gid()));
    let mtime = match opts.clamp_mtime {
        Some(c) => md.mtime().min(c),
        None => md.mtime(),
    };
    h.set_mtime(mtime.max(0) as u64);
    h
}

fn append<W: Write, R: io::Read>(
    b: &mut tar::Builder<W>,
    mut h: tar::Header,
    rel: &Path,
    data: R,
    abs: &Path,
) -> Result<(), DiffError> {
    let mut name = rel.as_os_str().to_owned();
    if h.entry_type() == tar::EntryType::Directory {
        name.push("/");
    }
    b.append_data(&mut h, Path::new(&name), data)
        .map_err(io_err(abs))
}

fn pax<W: Write>(
    b: &mut tar::Builder<W>,
    xattrs: &[(Vec<u8>, Vec<u8>)],
    path: &Path,
) -> Result<(), DiffError> {
    let records: Vec<(String, &[u8])> = xattrs
        .iter()
        .filter(|(k, _)| !crate::xattrs::is_overlay(k))
        .map(|(k, v)| {
            let k = String::from_utf8_lossy(k);
            (format!("SCHILY.xattr.{k}"), v.as_slice())
        })
        .collect();
    if records.is_empty() {
        return Ok(());
    }
    b.append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
        .map_err(io_err(path))
}

/// Rewrites an upper directory fuse-overlayfs wrote into the form the kernel's
/// overlay writes in this process's namespace, so that the snapshot reads the same
/// to the kernel, to [`crate::exec::merged`] and to [`write_upperdir`], and the
/// layer has the same bytes. fuse-overlayfs marks an opaque directory with an
/// attribute (`trusted.overlay.opaque`, or `user.fuseoverlayfs.opaque` where
/// trusted.* is refused) and a `.wh..wh..opq` entry (an empty file, or a 0/0
/// device named `.wh..opq`); it records a whiteout as a 0/0 device or, where it
/// cannot make one, an empty `.wh.<name>` file; and it marks every directory it
/// creates opaque, where the kernel marks only one that replaces something of the
/// lower layers. `lowers` are the step's lower layers, topmost first. The
/// directories touched keep their times.
pub fn normalize_fuse_upper(upper: &Path, lowers: &[PathBuf]) -> Result<(), DiffError> {
    let opaque = layer_cache::overlay::namespace().opaque();
    // (directory, its path relative to upper, whether the lowers show beneath it)
    let mut stack = vec![(upper.to_path_buf(), PathBuf::new(), true)];
    while let Some((dir, rel, lower_visible)) = stack.pop() {
        let before = std::fs::symlink_metadata(&dir).map_err(io_err(&dir))?;
        let mut changed = false;
        let mut marked = crate::xattrs::is(&dir, "user.fuseoverlayfs.opaque", b"y")
            || crate::xattrs::is(&dir, opaque, b"y");
        let mut subdirs = Vec::new();
        for name in sorted_children(&dir)? {
            let path = dir.join(&name);
            let md = std::fs::symlink_metadata(&path).map_err(io_err(&path))?;
            if md.is_dir() {
                subdirs.push(name);
                continue;
            }
            let bytes = name.as_bytes();
            let device_marker =
                md.file_type().is_char_device() && md.rdev() == 0 && bytes == b".wh..opq";
            let file_marker = md.is_file() && bytes.starts_with(b".wh.");
            if !device_marker && !file_marker {
                continue;
            }
            std::fs::remove_file(&path).map_err(io_err(&path))?;
            changed = true;
            if device_marker || bytes == b".wh..wh..opq" {
                marked = true;
                continue;
            }
            let hidden = dir.join(std::ffi::OsStr::from_bytes(&bytes[4..]));
            if std::fs::symlink_metadata(&hidden).is_err() {
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &hidden,
                    rustix::fs::FileType::CharacterDevice,
                    rustix::fs::Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| io_err(&hidden)(e.into()))?;
            }
        }
        // Opaque only where it hides something, as the kernel's mkdir over a whiteout.
        let hides = lower_visible
            && !rel.as_os_str().is_empty()
            && crate::exec::merged::lookup(lowers, &rel).is_some();
        let keep = marked && hides;
        for name in ["user.fuseoverlayfs.opaque", "user.fuseoverlayfs.origin"] {
            remove_xattr(&dir, name)?;
        }
        if keep {
            rustix::fs::lsetxattr(&dir, opaque, b"y", rustix::fs::XattrFlags::empty())
                .map_err(|e| io_err(&dir)(e.into()))?;
        } else if marked {
            remove_xattr(&dir, opaque)?;
        }
        if changed {
            let times = std::fs::FileTimes::new()
                .set_accessed(before.accessed().map_err(io_err(&dir))?)
                .set_modified(before.modified().map_err(io_err(&dir))?);
            File::open(&dir)
                .and_then(|f| f.set_times(times))
                .map_err(io_err(&dir))?;
        }
        let below_visible = lower_visible && !keep;
        for name in subdirs {
            stack.push((dir.join(&name), rel.join(&name), below_visible));
        }
    }
    Ok(())
}

fn remove_xattr(path: &Path, name: &str) -> Result<(), DiffError> {
    match rustix::fs::lremovexattr(path, name) {
        Ok(()) | Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(()),
        Err(e) => Err(io_err(path)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_whiteout(p: &Path) -> bool {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_char_device() && m.rdev() == 0)
    }

    fn set(p: &Path, name: &str) {
        rustix::fs::lsetxattr(p, name, b"y", rustix::fs::XattrFlags::empty()).unwrap();
    }

    #[test]
    fn fuse_overlayfs_upper_dirs_read_as_the_kernels() {
        // 0/0 devices need CAP_MKNOD.
        if !testdata::require_root() {
            return;
        }
        let tmp = tempfile::TempDir::new().unwrap();
        let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
        for d in ["etc", "var/old", "home/app"] {
            std::fs::create_dir_all(lower.join(d)).unwrap();
        }
        std::fs::write(lower.join("etc/group"), "g").unwrap();
        for d in ["etc", "var/new", "home/app"] {
            std::fs::create_dir_all(upper.join(d)).unwrap();
        }
        // A whiteout as an empty `.wh.` file, where mknod was refused.
        std::fs::write(upper.join("etc/.wh.group"), "").unwrap();
        // `home/app` removed and made again: opaque, by attribute and marker file.
        set(&upper.join("home/app"), "user.fuseoverlayfs.opaque");
        std::fs::write(upper.join("home/app/.wh..wh..opq"), "").unwrap();
        // `var/new` is new: fuse-overlayfs marks it opaque too, with its marker device.
        set(&upper.join("var/new"), "user.fuseoverlayfs.opaque");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("var/new/.wh..opq"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o700),
            rustix::fs::makedev(0, 0),
        )
        .unwrap();
        let etc_mtime = std::fs::metadata(upper.join("etc"))
            .unwrap()
            .modified()
            .unwrap();

        normalize_fuse_upper(&upper, &[lower]).unwrap();

        let opaque = layer_cache::overlay::namespace().opaque();
        assert!(is_whiteout(&upper.join("etc/group")));
        assert!(!upper.join("etc/.wh.group").exists());
        assert_eq!(
            std::fs::metadata(upper.join("etc"))
                .unwrap()
                .modified()
                .unwrap(),
            etc_mtime,
            "the directory keeps its time"
        );
        assert!(crate::xattrs::is(&upper.join("home/app"), opaque, b"y"));
        assert!(!upper.join("home/app/.wh..wh..opq").exists());
        assert!(!crate::xattrs::is(&upper.join("var/new"), opaque, b"y"));
        assert!(std::fs::read_dir(upper.join("var/new"))
            .unwrap()
            .next()
            .is_none());
        for d in ["home/app", "var/new"] {
            let names = crate::xattrs::read(&upper.join(d)).unwrap();
            assert!(
                !names
                    .iter()
                    .any(|(n, _)| n.starts_with(b"user.fuseoverlayfs.")),
                "{d}"
            );
        }
        // The diff then writes what the kernel's upper dir gives.
        let mut tar = Vec::new();
        write_upperdir(&upper, &mut tar, &DiffOptions::default()).unwrap();
        let names: Vec<String> = tar::Archive::new(&tar[..])
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(
            names,
            [
                "etc/",
                "etc/.wh.group",
                "home/",
                "home/app/",
                "home/app/.wh..wh..opq",
                "var/",
                "var/new/"
            ]
        );
    }
}
