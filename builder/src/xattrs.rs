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

fn list_names(path: &Path) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::llistxattr(path, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::llistxattr(path, &mut [0u8; 0][..])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        }
    }
}

fn get(path: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::lgetxattr(path, name, &mut [0u8; 0][..])?;
                buf.resize(need.max(buf.len() * 2), 0);
            }
            // Removed between list and get.
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
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
        match r {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
            // Symlinks take no user.* attributes on Linux.
            Err(rustix::io::Errno::PERM) if name.starts_with(b"user.") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// [`copy`] between two open files: no path is looked up again.
pub fn copy_fd(src: &std::fs::File, dst: &std::fs::File) -> io::Result<()> {
    let mut names = vec![0u8; 256];
    loop {
        match rustix::fs::flistxattr(src, &mut names[..]) {
            Ok(n) => {
                names.truncate(n);
                break;
            }
            Err(rustix::io::Errno::RANGE) => {
                let need = rustix::fs::flistxattr(src, &mut [0u8; 0][..])?;
                names.resize(need.max(names.len() * 2), 0);
            }
            Err(rustix::io::Errno::NOTSUP) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let mut list = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if is_overlay(name) {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let mut value = vec![0u8; 256];
        loop {
            match rustix::fs::fgetxattr(src, name, &mut value[..]) {
                Ok(n) => {
                    value.truncate(n);
                    list.push((name, value));
                    break;
                }
                Err(rustix::io::Errno::RANGE) => {
                    let need = rustix::fs::fgetxattr(src, name, &mut [0u8; 0][..])?;
                    value.resize(need.max(value.len() * 2), 0);
                }
                // Removed between list and get.
                Err(rustix::io::Errno::NODATA) => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    // In name order, as `copy` sets them.
    list.sort();
    for (name, value) in list {
        match rustix::fs::fsetxattr(dst, name, &value, rustix::fs::XattrFlags::empty()) {
            Ok(()) | Err(rustix::io::Errno::NOTSUP) => {}
            Err(rustix::io::Errno::PERM) if name.as_bytes().starts_with(b"user.") => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
