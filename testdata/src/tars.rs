//! Tar fixtures for the layer unpacker: a raw tar writer and hostile archives.
//!
//! The `tar` crate's builder refuses to write names with `..` or a leading `/`,
//! which is exactly what a hostile layer carries, so [`RawTar`] fills the header
//! fields by hand and only uses the crate for the checksum.
//!
//! Every hostile fixture assumes the layout the unpack tests build:
//!
//! ```text
//! base/
//!   victim        a file that must keep its content and link count
//!   sentinel/     a directory that must stay empty
//!   work/
//!     target/     the unpack root
//! ```
//!
//! so `..` from the root is `base/work` and `../..` is `base`. Fixtures that need
//! an absolute path outside the root take it as an argument, so a test can point
//! it into its own temporary directory instead of `/tmp` or `/etc`.

use std::path::Path;

use tar::{EntryType, Header};

/// A tar stream written header by header, without the `tar` crate's name checks.
#[derive(Debug, Default, Clone)]
pub struct RawTar {
    buf: Vec<u8>,
}

/// Fields of one raw entry; [`RawTar::entry`] writes it.
#[derive(Debug, Clone)]
pub struct RawEntry<'a> {
    pub name: &'a [u8],
    pub kind: EntryType,
    pub mode: u32,
    pub link: &'a [u8],
    pub data: &'a [u8],
    pub uid: u64,
    pub gid: u64,
    pub mtime: u64,
    pub dev: (u32, u32),
}

impl<'a> RawEntry<'a> {
    pub fn new(name: &'a [u8], kind: EntryType) -> RawEntry<'a> {
        let mode = match kind {
            EntryType::Directory => 0o755,
            EntryType::Symlink => 0o777,
            _ => 0o644,
        };
        RawEntry {
            name,
            kind,
            mode,
            link: b"",
            data: b"",
            uid: 0,
            gid: 0,
            mtime: 1_600_000_000,
            dev: (0, 0),
        }
    }
}

impl RawTar {
    pub fn new() -> RawTar {
        RawTar::default()
    }

    /// Append one header (name and link name up to 100 bytes) and its data.
    pub fn entry(&mut self, e: &RawEntry<'_>) -> &mut RawTar {
        assert!(e.name.len() <= 100, "raw name longer than 100 bytes");
        assert!(e.link.len() <= 100, "raw link name longer than 100 bytes");
        let mut h = Header::new_ustar();
        h.as_old_mut().name[..e.name.len()].copy_from_slice(e.name);
        h.as_old_mut().linkname[..e.link.len()].copy_from_slice(e.link);
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_uid(e.uid);
        h.set_gid(e.gid);
        h.set_mtime(e.mtime);
        h.set_size(e.data.len() as u64);
        h.set_device_major(e.dev.0)
            .expect("ustar header has device fields");
        h.set_device_minor(e.dev.1)
            .expect("ustar header has device fields");
        h.set_cksum();
        self.buf.extend_from_slice(h.as_bytes());
        self.data(e.data);
        self
    }

    pub fn file(&mut self, name: &[u8], data: &[u8]) -> &mut RawTar {
        self.entry(&RawEntry {
            data,
            ..RawEntry::new(name, EntryType::Regular)
        })
    }

    pub fn file_mode(&mut self, name: &[u8], data: &[u8], mode: u32) -> &mut RawTar {
        self.entry(&RawEntry {
            data,
            mode,
            ..RawEntry::new(name, EntryType::Regular)
        })
    }

    pub fn dir(&mut self, name: &[u8]) -> &mut RawTar {
        self.entry(&RawEntry::new(name, EntryType::Directory))
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8]) -> &mut RawTar {
        self.entry(&RawEntry {
            link: target,
            ..RawEntry::new(name, EntryType::Symlink)
        })
    }

    pub fn hardlink(&mut self, name: &[u8], target: &[u8]) -> &mut RawTar {
        self.entry(&RawEntry {
            link: target,
            ..RawEntry::new(name, EntryType::Link)
        })
    }

    pub fn char_dev(&mut self, name: &[u8], major: u32, minor: u32) -> &mut RawTar {
        self.entry(&RawEntry {
            dev: (major, minor),
            mode: 0o600,
            ..RawEntry::new(name, EntryType::Char)
        })
    }

    /// A PAX extended header (`x`) that applies to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut RawTar {
        let mut body = Vec::new();
        for (key, value) in records {
            body.extend_from_slice(&pax_record(key, value));
        }
        self.entry(&RawEntry {
            data: &body,
            ..RawEntry::new(b"PaxHeaders/entry", EntryType::XHeader)
        })
    }

    /// A GNU long-name header (`L`) that renames the next entry.
    pub fn gnu_longname(&mut self, name: &[u8]) -> &mut RawTar {
        let mut data = name.to_vec();
        data.push(0);
        self.entry(&RawEntry {
            data: &data,
            ..RawEntry::new(b"././@LongLink", EntryType::GNULongName)
        })
    }

    /// A GNU long-link header (`K`) that sets the next entry's link name.
    pub fn gnu_longlink(&mut self, target: &[u8]) -> &mut RawTar {
        let mut data = target.to_vec();
        data.push(0);
        self.entry(&RawEntry {
            data: &data,
            ..RawEntry::new(b"././@LongLink", EntryType::GNULongLink)
        })
    }

    /// The archive with its two terminating zero blocks.
    pub fn finish(&self) -> Vec<u8> {
        let mut out = self.buf.clone();
        out.resize(out.len() + 1024, 0);
        out
    }

    fn data(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.buf.resize(self.buf.len() + pad, 0);
    }
}

/// One `"<len> <key>=<value>\n"` PAX record; the length counts itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // space, '=', newline
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// `path` without its leading `/`, for writing "through" a symlink to `/`.
fn strip_root(path: &Path) -> String {
    path.to_string_lossy().trim_start_matches('/').to_string()
}

// ---- hostile archives ----

/// `../evil`: a plain parent-directory escape.
pub fn dotdot_traversal() -> Vec<u8> {
    RawTar::new().file(b"../evil", b"pwned").finish()
}

/// `a/../../evil`: an escape that only shows after cleaning.
pub fn deep_dotdot() -> Vec<u8> {
    RawTar::new()
        .dir(b"a/")
        .file(b"a/../../evil", b"pwned")
        .finish()
}

/// An absolute entry name, `<outside>/x`.
pub fn absolute_path(outside: &Path) -> Vec<u8> {
    let name = format!("{}/x", outside.display());
    RawTar::new().file(name.as_bytes(), b"pwned").finish()
}

/// `evil -> /`, then `evil/<outside>/x` written through it.
pub fn symlink_to_root_then_file(outside: &Path) -> Vec<u8> {
    let name = format!("evil/{}/x", strip_root(outside));
    RawTar::new()
        .symlink(b"evil", b"/")
        .file(name.as_bytes(), b"pwned")
        .finish()
}

/// `evil -> <outside>` (absolute), then `evil/x`.
pub fn symlink_absolute_dir_then_file(outside: &Path) -> Vec<u8> {
    RawTar::new()
        .symlink(b"evil", outside.to_string_lossy().as_bytes())
        .file(b"evil/x", b"pwned")
        .finish()
}

/// `up -> ..`, then `up/evil`.
pub fn symlink_to_parent_then_file() -> Vec<u8> {
    RawTar::new()
        .symlink(b"up", b"..")
        .file(b"up/evil", b"pwned")
        .finish()
}

/// `a -> b`, `b -> ../..`, then `a/evil`: the escape is one hop away.
pub fn symlink_chain() -> Vec<u8> {
    RawTar::new()
        .symlink(b"a", b"b")
        .symlink(b"b", b"../..")
        .file(b"a/evil", b"pwned")
        .finish()
}

/// `pw` hardlinked to an absolute path (think `/etc/passwd`).
pub fn hardlink_absolute(victim: &Path) -> Vec<u8> {
    RawTar::new()
        .hardlink(b"pw", victim.to_string_lossy().as_bytes())
        .finish()
}

/// `pw` hardlinked to `../../victim`, then content written to `pw`.
pub fn hardlink_dotdot() -> Vec<u8> {
    RawTar::new()
        .hardlink(b"pw", b"../../victim")
        .file(b"pw", b"pwned")
        .finish()
}

/// `d -> ../..`, then `pw` hardlinked to `d/victim`.
pub fn hardlink_through_symlinked_dir() -> Vec<u8> {
    RawTar::new()
        .symlink(b"d", b"../..")
        .hardlink(b"pw", b"d/victim")
        .finish()
}

/// `pw` hardlinked to a name that is not in the archive or the root.
pub fn hardlink_missing_target() -> Vec<u8> {
    RawTar::new().hardlink(b"pw", b"no/such/file").finish()
}

/// `d/` as a directory, then `d -> ../../sentinel` replacing it, then `d/evil`.
pub fn dir_replaced_by_symlink() -> Vec<u8> {
    RawTar::new()
        .dir(b"d/")
        .file(b"d/ok", b"fine")
        .symlink(b"d", b"../../sentinel")
        .file(b"d/evil", b"pwned")
        .finish()
}

/// `../../.wh.victim`: a whiteout that would delete a file outside the root.
pub fn whiteout_dotdot() -> Vec<u8> {
    RawTar::new().file(b"../../.wh.victim", b"").finish()
}

/// `.wh...`: a whiteout of `..`, i.e. of the root's parent.
pub fn whiteout_of_parent() -> Vec<u8> {
    RawTar::new().file(b".wh...", b"").finish()
}

/// `d -> ../..`, then `d/.wh.victim`: a whiteout through a symlinked dir.
pub fn whiteout_through_symlink() -> Vec<u8> {
    RawTar::new()
        .symlink(b"d", b"../..")
        .file(b"d/.wh.victim", b"")
        .finish()
}

/// `d -> ../..`, then `d/.wh..wh..opq`: an opaque marker that would empty `base`.
pub fn opaque_through_symlink() -> Vec<u8> {
    RawTar::new()
        .symlink(b"d", b"../..")
        .file(b"d/.wh..wh..opq", b"")
        .finish()
}

/// A PAX `path=../../x` overriding an innocent ustar name.
pub fn pax_path_escape() -> Vec<u8> {
    RawTar::new()
        .pax(&[("path", b"../../x")])
        .file(b"innocent", b"pwned")
        .finish()
}

/// A PAX `linkpath=../../victim` on a hardlink with an innocent ustar link name.
pub fn pax_linkpath_escape() -> Vec<u8> {
    RawTar::new()
        .file(b"innocent", b"fine")
        .pax(&[("linkpath", b"../../victim")])
        .hardlink(b"pw", b"innocent")
        .finish()
}

/// A GNU long name `../../x`.
pub fn gnu_longname_escape() -> Vec<u8> {
    RawTar::new()
        .gnu_longname(b"../../x")
        .file(b"innocent", b"pwned")
        .finish()
}

/// A directory carrying `trusted.overlay.opaque=y` in its PAX xattrs.
pub fn forged_overlay_xattr() -> Vec<u8> {
    RawTar::new()
        .pax(&[("SCHILY.xattr.trusted.overlay.opaque", b"y")])
        .dir(b"d/")
        .finish()
}

/// A 0/0 character device (the overlay whiteout form) named `..`.
pub fn chardev_dotdot() -> Vec<u8> {
    RawTar::new().char_dev(b"..", 0, 0).finish()
}

/// `f -> <victim>` (absolute), then a regular file `f`: the file must replace
/// the symlink, not write through it. Not an error.
pub fn file_over_symlink(victim: &Path) -> Vec<u8> {
    RawTar::new()
        .symlink(b"f", victim.to_string_lossy().as_bytes())
        .file(b"f", b"replaced")
        .finish()
}

// ---- well-formed archives ----

/// A tar built with the `tar` crate's own builder, for well-formed content.
pub fn build(f: impl FnOnce(&mut tar::Builder<Vec<u8>>) -> std::io::Result<()>) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    f(&mut b).expect("building a tar in memory");
    b.into_inner().expect("finishing a tar in memory")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        let rec = pax_record("path", b"../x");
        assert_eq!(rec, b"13 path=../x\n");
        let long = vec![b'a'; 95];
        let rec = pax_record("path", &long);
        let text = String::from_utf8(rec.clone()).unwrap();
        let len: usize = text.split(' ').next().unwrap().parse().unwrap();
        assert_eq!(len, rec.len());
    }

    #[test]
    fn raw_names_survive_the_tar_reader() {
        let bytes = pax_path_escape();
        let mut ar = tar::Archive::new(&bytes[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        assert_eq!(&*e.path_bytes(), b"../../x");
    }
}
