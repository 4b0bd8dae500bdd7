//! Extended attributes of files in snapshots, contexts and upper directories,
//! never following symlinks.

use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Overlay's own attributes (whiteouts, opaque dirs) describe the snapshot, not the
/// file: the kernel's in either namespace (`trusted.overlay.*`, `user.overlay.*`)
/// and fuse-overlayfs's (`user.fuseoverlayfs.*`).
pub fn is_overlay(name: &[u8]) -> bool {
    layer_cache::overlay::is_overlay_xattr(name)
}

/// The bytes a list or get call gives, in a buffer grown until they fit (the
/// call with an empty buffer says how much is needed).
fn sized(
    mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>,
) -> rustix::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = call(&mut [0u8; 0][..])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A name list's result: no support is no names.
fn names(r: rustix::io::Result<Vec<u8>>) -> io::Result<Vec<u8>> {
    match r {
        Err(rustix::io::Errno::NOTSUP) => Ok(Vec::new()),
        r => Ok(r?),
    }
}

/// A value's result: `None` when it was removed between list and get.
fn value(r: rustix::io::Result<Vec<u8>>) -> io::Result<Option<Vec<u8>>> {
    match r {
        Err(rustix::io::Errno::NODATA) => Ok(None),
        r => Ok(Some(r?)),
    }
}

/// A set's result: a filesystem without xattrs, or a symlink refusing `user.*`
/// (Linux), drops the attribute, as BuildKit does.
fn set_result(name: &[u8], r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Ok(()) | Err(rustix::io::Errno::NOTSUP) => Ok(()),
        Err(rustix::io::Errno::PERM) if name.starts_with(b"user.") => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn list_names(path: &Path) -> io::Result<Vec<u8>> {
    names(sized(|b| rustix::fs::llistxattr(path, b)))
}

fn get(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    value(sized(|b| rustix::fs::lgetxattr(path, name, b)))
}

/// All attributes of `path`, sorted by name.
pub fn read(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = list_names(path)?;
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if let Some(value) = get(path, name)? {
            out.push((name.to_vec(), value));
        }
    }
    out.sort();
    Ok(out)
}

/// Whether attribute `name` of `path` holds exactly `want`.
pub fn is(path: &Path, name: &str, want: &[u8]) -> bool {
    matches!(get(path, name.as_bytes()), Ok(Some(v)) if v == want)
}

/// Copies `src`'s attributes (overlay's own excepted) onto `dst`, as COPY keeps them.
/// A filesystem without xattr support, or a namespace the destination refuses
/// (e.g. `security.selinux` without a policy), drops that attribute, as BuildKit does.
pub fn copy(src: &Path, dst: &Path) -> io::Result<()> {
    for (name, value) in read(src)? {
        if is_overlay(&name) {
            continue;
        }
        let r = rustix::fs::lsetxattr(
            dst,
            OsStr::from_bytes(&name),
            &value,
            rustix::fs::XattrFlags::empty(),
        );
        set_result(&name, r)?;
    }
    Ok(())
}

/// [`copy`] between two open files: no path is looked up again.
pub fn copy_fd(src: &std::fs::File, dst: &std::fs::File) -> io::Result<()> {
    let names = names(sized(|b| rustix::fs::flistxattr(src, b)))?;
    let mut list = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if is_overlay(name) {
            continue;
        }
        let key = OsStr::from_bytes(name);
        if let Some(v) = value(sized(|b| rustix::fs::fgetxattr(src, key, b)))? {
            list.push((name, v));
        }
    }
    // In name order, as `copy` sets them.
    list.sort();
    for (name, v) in list {
        let r = rustix::fs::fsetxattr(
            dst,
            OsStr::from_bytes(name),
            &v,
            rustix::fs::XattrFlags::empty(),
        );
        set_result(name, r)?;
    }
    Ok(())
}
