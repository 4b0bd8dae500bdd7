//! Root-confined extraction of a layer tar into a directory.
//!
//! A layer is untrusted input: whatever its headers say, nothing may be
//! created, changed or deleted outside the target directory. The rules, close
//! to what containerd's and Docker's appliers do:
//!
//! * **Names.** Entry names are cleaned lexically: a leading `./`, empty and
//!   `.` components are dropped and `a/../b` becomes `b`. A name that still
//!   climbs above the root with `..` is refused, and so is an absolute name
//!   (`/etc/passwd`): Docker would re-root it, but a layer we produce or pull
//!   never has one, so it is treated as hostile. Names come from the ustar
//!   header, a GNU long name or a PAX `path`, whichever the tar carries.
//! * **Symlinks are data.** A symlink entry may point anywhere (`x ->
//!   /etc/passwd` is legal in an image). What is checked is every *use* of a
//!   symlink already on disk while resolving a later entry's parent
//!   directories: each component is looked up under the root with
//!   `O_NOFOLLOW`, one at a time, from directory file descriptors. A relative
//!   symlink that stays beneath the root is followed (hand-made layers do
//!   write through `lib -> usr/lib`); one that climbs above the root or is
//!   absolute is refused, naming the entry, the link and its target. A tar
//!   produced by walking a filesystem never writes beneath a symlink, so
//!   refusing absolute ones costs real images nothing, while re-rooting them
//!   (containerd's choice) would quietly put files somewhere the author did
//!   not see.
//! * **The final component is never followed.** Whatever is at the entry's
//!   own name is replaced (a file over a symlink replaces the symlink), except
//!   that a directory entry over an existing directory keeps it and updates
//!   its metadata. A non-directory over a directory removes the directory.
//! * **Hardlinks** name a target inside the root, cleaned and resolved the
//!   same way; an absolute or escaping name, a missing target or a directory
//!   is refused. The target's own last component is not followed, so linking
//!   to a symlink links the symlink.
//! * **Whiteouts** (`.wh.name`, `.wh..wh..opq`) are resolved like any other
//!   entry and, per [`WhiteoutMode`], either applied or converted to the
//!   overlayfs form. They only hide content of earlier layers, never entries
//!   of the same tar. A whiteout of `.` or `..` is refused.
//! * **Overlay metadata cannot be forged.** An entry carrying an overlay
//!   xattr (`trusted.overlay.*`, `user.overlay.*`, `user.fuseoverlayfs.*`) is
//!   refused, whatever namespace this process runs in; only the unpacker itself
//!   marks a directory opaque, from a `.wh..wh..opq` entry in overlay mode, with
//!   the attribute of [`crate::overlay::namespace`].
//! * **Metadata.** Owner (when asked and running as root; `lchown` semantics),
//!   then xattrs from PAX `SCHILY.xattr.*` (an xattr the filesystem or our
//!   privileges refuse is skipped with a warning), then mode, then times.
//!   Directories get their mode and times in a final pass, after their
//!   children were written, so a read-only directory can still be filled and
//!   its mtime is not disturbed afterwards.
//!
//! File content is streamed into place; nothing is held in memory beyond a
//! copy buffer (the tar reader itself buffers PAX and GNU long-name records).

use std::collections::{HashSet, VecDeque};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::codec;
use rustix::fs::Timespec;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timestamps};
use rustix::io::Errno;
use rustix::process::{Gid, Uid};
use tar::EntryType;

/// How `.wh.` entries are treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhiteoutMode {
    /// Apply OCI whiteouts to the target tree as a layer applier would:
    /// `.wh.name` deletes `name` (from earlier layers in the same dir),
    /// `.wh..wh..opq` empties the directory of earlier content (but not
    /// entries from this same layer).
    Apply,
    /// Convert to overlayfs form for an unpacked snapshot used as an overlay
    /// lowerdir: `.wh.name` becomes a 0/0 character device `name`;
    /// `.wh..wh..opq` sets xattr `trusted.overlay.opaque=y` on the dir.
    Overlay,
}

/// What [`unpack`] does besides placing content.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    pub whiteouts: WhiteoutMode,
    /// Set uid/gid from the headers; only takes effect when running as root.
    pub preserve_owner: bool,
    /// Use the modes from the headers as they are; otherwise mask them with
    /// the process umask.
    pub same_permissions: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            preserve_owner: true,
            same_permissions: true,
        }
    }
}

/// Counters for one unpacked stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Tar entries handled, whiteouts included (PAX and GNU name records are
    /// part of the entry they describe and not counted on their own).
    pub entries: u64,
    /// Bytes of regular file content written.
    pub bytes: u64,
}

/// Caps on what one unpack may create, so a small hostile layer (a gzip bomb: a
/// few MB that inflate to many GB, or millions of empty files) is stopped before
/// it fills the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnpackLimits {
    /// Bytes of regular file content.
    pub max_bytes: u64,
    /// Tar entries, as counted in [`UnpackStats::entries`].
    pub max_entries: u64,
}

impl UnpackLimits {
    /// No limit (trusted input, such as the build context).
    pub const NONE: UnpackLimits = UnpackLimits {
        max_bytes: u64::MAX,
        max_entries: u64::MAX,
    };

    /// The default for a layer whose blob is `compressed` bytes: 10 times that plus
    /// 1 GiB of content, and 1,000,000 entries plus one per 32 compressed bytes.
    /// Real layers stay far below (gzip rarely passes 5:1 on image content, and a
    /// tar header compresses to more than 32 bytes).
    pub fn for_layer(compressed: u64) -> UnpackLimits {
        UnpackLimits {
            max_bytes: compressed.saturating_mul(10).saturating_add(1 << 30),
            max_entries: (compressed / 32).saturating_add(1_000_000),
        }
    }
}

/// Why an unpack failed; every variant names the entry or path concerned.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot open unpack target {}: {source}", root.display())]
    Root {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading layer tar into {}: {source}", root.display())]
    Stream {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    /// `what` is "name" for the entry's own name, "hardlink target" for a link.
    #[error(
        "tar entry {entry:?}: {what} {path:?} is absolute, which would land outside the target"
    )]
    AbsolutePath {
        entry: String,
        what: &'static str,
        path: String,
    },
    #[error("tar entry {entry:?}: {what} {path:?} climbs above the target with `..`")]
    EscapesRoot {
        entry: String,
        what: &'static str,
        path: String,
    },
    #[error("tar entry {entry:?} would go through symlink {link:?} -> {target:?}, which leaves the target")]
    SymlinkEscape {
        entry: String,
        link: String,
        target: String,
    },
    #[error("tar entry {entry:?}: too many levels of symlinks resolving {path:?}")]
    SymlinkLoop { entry: String, path: String },
    #[error("tar entry {entry:?}: {path:?} is in the way and is not a directory")]
    NotADirectory { entry: String, path: String },
    #[error("tar entry {entry:?}: {reason}")]
    InvalidName { entry: String, reason: &'static str },
    #[error("tar entry {entry:?}: hardlink target {target:?} does not exist in the target")]
    HardlinkTargetMissing { entry: String, target: String },
    #[error("tar entry {entry:?}: hardlink target {target:?} is a directory")]
    HardlinkToDirectory { entry: String, target: String },
    #[error(
        "tar entry {entry:?} carries xattr {key:?}; overlay metadata cannot come from a layer"
    )]
    ForbiddenXattr { entry: String, key: String },
    /// The owner is not mapped in this user namespace (only one id is).
    #[error("tar entry {entry:?}: {source}")]
    UnmappedOwner {
        entry: String,
        #[source]
        source: crate::overlay::UnmappedOwner,
    },
    #[error("tar entry {entry:?} is a whiteout of an invalid name")]
    InvalidWhiteout { entry: String },
    #[error("tar entry {entry:?} names the target root itself but is not a directory")]
    RootNotDirectory { entry: String },
    #[error("tar entry {entry:?} has unsupported type {kind:?}")]
    UnsupportedType { entry: String, kind: char },
    #[error("tar entry {entry:?}: invalid header field {field}: {source}")]
    Header {
        entry: String,
        field: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("tar entry {entry:?}: the layer unpacks to more than {limit} bytes of file content, its limit (by default 10 times the compressed size plus 1 GiB; MYBUILD_UNPACK_MAX_BYTES changes it)")]
    TooLarge { entry: String, limit: u64 },
    #[error("tar entry {entry:?}: the layer has more than {limit} entries, its limit (by default 1,000,000 plus one per 32 compressed bytes; MYBUILD_UNPACK_MAX_ENTRIES changes it)")]
    TooManyEntries { entry: String, limit: u64 },
    #[error("tar entry {entry:?}: {op} {path:?}: {source}")]
    Io {
        entry: String,
        op: &'static str,
        path: String,
        #[source]
        source: io::Error,
    },
}

/// Sniff gzip / zstd / plain from the first bytes and return a reader of the
/// uncompressed stream.
pub fn decompress<'a, R: BufRead + Send + 'a>(reader: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(codec::decompress(reader, codec::LAYER)?.1)
}

/// Unpack an uncompressed tar stream into `root` (which must exist), without limits.
pub fn unpack<R: Read>(
    reader: R,
    root: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, UnpackError> {
    unpack_limited(reader, root, opts, UnpackLimits::NONE)
}

/// [`unpack`], failing once the content or the entry count passes `limits`
/// (what was written so far stays; callers unpack into a scratch directory).
pub fn unpack_limited<R: Read>(
    reader: R,
    root: &Path,
    opts: &UnpackOptions,
    limits: UnpackLimits,
) -> Result<UnpackStats, UnpackError> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| UnpackError::Root {
        root: root.to_path_buf(),
        source: e.into(),
    })?;
    let mut u = Unpacker {
        root: root_fd,
        opts,
        chown: opts.preserve_owner && rustix::process::geteuid().is_root(),
        umask: if opts.same_permissions {
            0
        } else {
            process_umask()
        },
        layer_paths: HashSet::new(),
        layer_ancestors: HashSet::new(),
        dirs: Vec::new(),
        stats: UnpackStats::default(),
        limits,
    };
    let stream_err = |source| UnpackError::Stream {
        root: root.to_path_buf(),
        source,
    };
    let mut archive = tar::Archive::new(reader);
    for entry in archive.entries().map_err(stream_err)? {
        let mut entry = entry.map_err(stream_err)?;
        u.entry(&mut entry)?;
    }
    u.finish_dirs()?;
    Ok(u.stats)
}

/// The umask without changing it (`umask(2)` can only read by writing, which
/// races with other threads): Linux reports it in `/proc/self/status`.
fn process_umask() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o022)
}

/// Components of a cleaned, root-relative path.
type Comps = Vec<Vec<u8>>;

fn show(comps: &[Vec<u8>]) -> String {
    String::from_utf8_lossy(&comps.join(&b'/')).into_owned()
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Why a name could not be cleaned into a root-relative path.
enum NameProblem {
    Absolute,
    Escapes,
    Nul,
}

/// Clean a tar name lexically into components beneath the root.
fn clean(name: &[u8]) -> Result<Comps, NameProblem> {
    if name.contains(&0) {
        return Err(NameProblem::Nul);
    }
    if name.starts_with(b"/") {
        return Err(NameProblem::Absolute);
    }
    let mut out: Comps = Vec::new();
    for c in name.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                if out.pop().is_none() {
                    return Err(NameProblem::Escapes);
                }
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// Metadata of one entry, gathered before its content is read.
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    times: Timestamps,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A directory whose mode and times are set in the final pass.
struct PendingDir {
    entry: String,
    path: Comps,
    mode: u32,
    times: Timestamps,
}

struct Unpacker<'o> {
    root: OwnedFd,
    opts: &'o UnpackOptions,
    chown: bool,
    umask: u32,
    /// Resolved paths written by this tar, for whiteouts that must only hide
    /// earlier layers.
    /// Joined with `/` rather than kept as components: one allocation per
    /// entry matters for layers with many files.
    layer_paths: HashSet<Vec<u8>>,
    /// Every proper ancestor of `layer_paths`, joined the same way.
    layer_ancestors: HashSet<Vec<u8>>,
    dirs: Vec<PendingDir>,
    stats: UnpackStats,
    limits: UnpackLimits,
}

/// A resolved parent directory: an `O_PATH` descriptor and its path under the root.
struct Parent {
    fd: OwnedFd,
    path: Comps,
}

impl Parent {
    fn child(&self, name: &[u8]) -> Comps {
        let mut p = self.path.clone();
        p.push(name.to_vec());
        p
    }
}

/// How [`Unpacker::resolve_dir`] treats what it finds on the way.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    /// Create missing directories and follow in-root symlinks.
    Create,
    /// Stop (`None`) at a missing component; follow in-root symlinks.
    Existing,
    /// Stop at a missing component or at any symlink.
    Physical,
}

const MAX_SYMLINKS: u32 = 40;
const WHITEOUT_PREFIX: &[u8] = b".wh.";
const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";

fn path_fd_flags() -> OFlags {
    OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

fn read_dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

impl Unpacker<'_> {
    fn io_err(&self, entry: &str, op: &'static str, path: &[Vec<u8>], e: Errno) -> UnpackError {
        UnpackError::Io {
            entry: entry.to_string(),
            op,
            path: show(path),
            source: e.into(),
        }
    }

    fn name_err(entry: &str, what: &'static str, name: &[u8], p: NameProblem) -> UnpackError {
        match p {
            NameProblem::Absolute => UnpackError::AbsolutePath {
                entry: entry.to_string(),
                what,
                path: lossy(name),
            },
            NameProblem::Escapes => UnpackError::EscapesRoot {
                entry: entry.to_string(),
                what,
                path: lossy(name),
            },
            NameProblem::Nul => UnpackError::InvalidName {
                entry: entry.to_string(),
                reason: "name or link target contains a nul byte",
            },
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), UnpackError> {
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            // Global PAX records carry no entry of their own; nothing we use.
            return Ok(());
        }
        let raw_name = entry.path_bytes().into_owned();
        let name = lossy(&raw_name);
        self.stats.entries += 1;
        if self.stats.entries > self.limits.max_entries {
            return Err(UnpackError::TooManyEntries {
                entry: name,
                limit: self.limits.max_entries,
            });
        }

        let meta = self.meta(entry, &name)?;
        let comps = clean(&raw_name).map_err(|p| Self::name_err(&name, "name", &raw_name, p))?;
        let Some((last, parent_comps)) = comps.split_last() else {
            // The root itself (`./`): keep the caller's directory as it is.
            return if kind.is_dir() {
                Ok(())
            } else {
                Err(UnpackError::RootNotDirectory { entry: name })
            };
        };

        if let Some(rest) = last.strip_prefix(WHITEOUT_PREFIX) {
            return self.whiteout(&name, parent_comps, last, rest, &meta);
        }

        match kind {
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                // Refused before anything is written when the header alone says so.
                if entry.size() > self.limits.max_bytes.saturating_sub(self.stats.bytes) {
                    return Err(UnpackError::TooLarge {
                        entry: name,
                        limit: self.limits.max_bytes,
                    });
                }
                let parent = self.resolve_parent(&name, parent_comps)?;
                self.regular(entry, &name, &parent, last, &meta)
            }
            EntryType::Directory => {
                let parent = self.resolve_parent(&name, parent_comps)?;
                self.directory(&name, &parent, last, &meta)
            }
            EntryType::Symlink => {
                let target = entry.link_name_bytes().map(|c| c.into_owned());
                let target = target.unwrap_or_default();
                if target.is_empty() || target.contains(&0) {
                    return Err(UnpackError::InvalidName {
                        entry: name,
                        reason: "symlink target is empty or contains a nul byte",
                    });
                }
                let parent = self.resolve_parent(&name, parent_comps)?;
                self.symlink(&name, &parent, last, &target, &meta)
            }
            EntryType::Link => {
                let target = entry.link_name_bytes().map(|c| c.into_owned());
                let target = target.unwrap_or_default();
                self.hardlink(&name, &comps, &target)
            }
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                let parent = self.resolve_parent(&name, parent_comps)?;
                self.special(entry, &name, &parent, last, kind, &meta)
            }
            other => Err(UnpackError::UnsupportedType {
                entry: name,
                kind: char::from(other.as_byte()),
            }),
        }
    }

    fn meta<R: Read>(
        &self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<Meta, UnpackError> {
        let header_err = |field, source| UnpackError::Header {
            entry: name.to_string(),
            field,
            source,
        };
        let h = entry.header();
        let mode = h.mode().map_err(|e| header_err("mode", e))? & 0o7777;
        // The tar crate has already applied PAX `uid` / `gid` to the header.
        let uid = h.uid().map_err(|e| header_err("uid", e))?;
        let gid = h.gid().map_err(|e| header_err("gid", e))?;
        let too_big = || io::Error::new(io::ErrorKind::InvalidData, "id out of range");
        let uid = u32::try_from(uid)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| header_err("uid", too_big()))?;
        let gid = u32::try_from(gid)
            .ok()
            .filter(|&v| v != u32::MAX)
            .ok_or_else(|| header_err("gid", too_big()))?;
        let mtime = h.mtime().map_err(|e| header_err("mtime", e))?;
        let mut mtime = Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
            tv_nsec: 0,
        };
        let mut atime = None;
        let mut xattrs = Vec::new();
        let pax = entry
            .pax_extensions()
            .map_err(|e| header_err("pax extensions", e))?;
        if let Some(pax) = pax {
            for ext in pax {
                let ext = ext.map_err(|e| header_err("pax extensions", e))?;
                let key = ext.key_bytes();
                if let Some(attr) = key.strip_prefix(b"SCHILY.xattr.") {
                    if crate::overlay::is_overlay_xattr(attr) {
                        return Err(UnpackError::ForbiddenXattr {
                            entry: name.to_string(),
                            key: lossy(attr),
                        });
                    }
                    xattrs.push((attr.to_vec(), ext.value_bytes().to_vec()));
                } else if key == b"mtime" {
                    match parse_pax_time(ext.value_bytes()) {
                        Some(t) => mtime = t,
                        None => tracing::warn!(entry = name, "ignoring unparsable pax mtime"),
                    }
                } else if key == b"atime" {
                    atime = parse_pax_time(ext.value_bytes());
                }
            }
        }
        Ok(Meta {
            mode: mode & !self.umask,
            uid,
            gid,
            times: Timestamps {
                last_access: atime.unwrap_or(mtime),
                last_modification: mtime,
            },
            xattrs,
        })
    }

    /// Resolve `comps` to a directory under the root, one component at a time,
    /// never following a symlink out of the root. See [`Walk`].
    fn resolve_dir(
        &self,
        entry: &str,
        comps: &[Vec<u8>],
        walk: Walk,
    ) -> Result<Option<Parent>, UnpackError> {
        let mut stack: Vec<OwnedFd> = Vec::new();
        let mut path: Comps = Vec::new();
        let mut pending: VecDeque<Vec<u8>> = comps.iter().cloned().collect();
        let mut hops = 0;
        // The last symlink followed, to name it if `..` then climbs out.
        let mut via: Option<(Comps, Vec<u8>)> = None;
        while let Some(c) = pending.pop_front() {
            if c.is_empty() || c == b"." {
                continue;
            }
            if c == b".." {
                // Only symlink targets bring `..` here: entry names are cleaned.
                if stack.pop().is_none() {
                    let (link, target) = via.unwrap_or_default();
                    return Err(UnpackError::SymlinkEscape {
                        entry: entry.to_string(),
                        link: show(&link),
                        target: lossy(&target),
                    });
                }
                path.pop();
                continue;
            }
            let dir: BorrowedFd<'_> = stack.last().map_or(self.root.as_fd(), |f| f.as_fd());
            // `path` names this component until it turns out not to be entered:
            // no copy of the path per step, so a deep entry costs O(depth).
            path.push(c.clone());
            let here = &path;
            let st = match rustix::fs::statat(dir, os(&c), AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => Some(FileType::from_raw_mode(st.st_mode)),
                Err(Errno::NOENT) => None,
                Err(e) => return Err(self.io_err(entry, "inspecting", here, e)),
            };
            match st {
                Some(FileType::Directory) => {}
                Some(FileType::Symlink) => {
                    if walk == Walk::Physical {
                        return Ok(None);
                    }
                    hops += 1;
                    if hops > MAX_SYMLINKS {
                        return Err(UnpackError::SymlinkLoop {
                            entry: entry.to_string(),
                            path: show(here),
                        });
                    }
                    let target = rustix::fs::readlinkat(dir, os(&c), Vec::new())
                        .map_err(|e| self.io_err(entry, "reading symlink", here, e))?
                        .into_bytes();
                    if target.starts_with(b"/") {
                        return Err(UnpackError::SymlinkEscape {
                            entry: entry.to_string(),
                            link: show(here),
                            target: lossy(&target),
                        });
                    }
                    for t in target.split(|&b| b == b'/').rev() {
                        pending.push_front(t.to_vec());
                    }
                    via = Some((here.clone(), target));
                    path.pop();
                    continue;
                }
                Some(_) => {
                    return Err(UnpackError::NotADirectory {
                        entry: entry.to_string(),
                        path: show(here),
                    })
                }
                None if walk == Walk::Create => {
                    // Docker and containerd create missing parents as 0755.
                    match rustix::fs::mkdirat(dir, os(&c), Mode::from_raw_mode(0o755)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(self.io_err(entry, "creating directory", here, e)),
                    }
                }
                None => return Ok(None),
            }
            let fd = rustix::fs::openat(dir, os(&c), path_fd_flags(), Mode::empty())
                .map_err(|e| self.io_err(entry, "opening directory", here, e))?;
            stack.push(fd);
        }
        let fd = match stack.pop() {
            Some(fd) => fd,
            None => rustix::fs::openat(&self.root, ".", path_fd_flags(), Mode::empty())
                .map_err(|e| self.io_err(entry, "opening directory", &[], e))?,
        };
        Ok(Some(Parent { fd, path }))
    }

    fn resolve_parent(&self, entry: &str, comps: &[Vec<u8>]) -> Result<Parent, UnpackError> {
        match self.resolve_dir(entry, comps, Walk::Create)? {
            Some(p) => Ok(p),
            // Create mode only returns None for a symlink under Walk::Physical.
            None => Err(UnpackError::NotADirectory {
                entry: entry.to_string(),
                path: show(comps),
            }),
        }
    }

    fn record(&mut self, path: Comps) {
        // Ancestors are recorded together, so the first one already known ends the
        // climb: O(depth) per entry, not O(depth²).
        let mut end = path.len();
        while end > 0 {
            end -= 1;
            if !self.layer_ancestors.insert(path[..end].join(&b'/')) {
                break;
            }
        }
        self.layer_paths.insert(path.join(&b'/'));
    }

    fn file_type_at(
        &self,
        entry: &str,
        parent: &Parent,
        name: &[u8],
    ) -> Result<Option<FileType>, UnpackError> {
        match rustix::fs::statat(&parent.fd, os(name), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(self.io_err(entry, "inspecting", &parent.child(name), e)),
        }
    }

    /// Remove whatever is at `name` (a directory with its content), without
    /// following symlinks. Absent is fine.
    fn remove(&self, entry: &str, parent: &Parent, name: &[u8]) -> Result<(), UnpackError> {
        match self.file_type_at(entry, parent, name)? {
            None => Ok(()),
            Some(FileType::Directory) => remove_tree(parent.fd.as_fd(), name)
                .map_err(|e| self.io_err(entry, "removing directory", &parent.child(name), e)),
            Some(_) => rustix::fs::unlinkat(&parent.fd, os(name), AtFlags::empty())
                .map_err(|e| self.io_err(entry, "removing", &parent.child(name), e)),
        }
    }

    fn regular<R: Read>(
        &mut self,
        content: &mut R,
        entry: &str,
        parent: &Parent,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let path = parent.child(name);
        let room = self.limits.max_bytes.saturating_sub(self.stats.bytes);
        let too_large = || UnpackError::TooLarge {
            entry: entry.to_string(),
            limit: self.limits.max_bytes,
        };
        self.remove(entry, parent, name)?;
        // O_EXCL after the removal: never write into something already there,
        // be it a symlink or an inode shared by a hardlink.
        let fd = rustix::fs::openat(
            &parent.fd,
            os(name),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| self.io_err(entry, "creating file", &path, e))?;
        let mut file = File::from(fd);
        // One byte past the room tells a stream that would overrun (the header's
        // size is not trusted: sparse entries expand).
        let n = io::copy(&mut content.take(room.saturating_add(1)), &mut file).map_err(|e| {
            UnpackError::Io {
                entry: entry.to_string(),
                op: "writing content of",
                path: show(&path),
                source: e,
            }
        })?;
        if n > room {
            drop(file);
            let _ = rustix::fs::unlinkat(&parent.fd, os(name), AtFlags::empty());
            return Err(too_large());
        }
        self.stats.bytes += n;
        self.chown_at(entry, parent, name, meta)?;
        self.xattrs_fd(entry, &path, file.as_fd(), meta);
        rustix::fs::fchmod(&file, Mode::from_raw_mode(meta.mode))
            .map_err(|e| self.io_err(entry, "setting mode of", &path, e))?;
        rustix::fs::futimens(&file, &meta.times)
            .map_err(|e| self.io_err(entry, "setting times of", &path, e))?;
        self.record(path);
        Ok(())
    }

    fn directory(
        &mut self,
        entry: &str,
        parent: &Parent,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let path = parent.child(name);
        match self.file_type_at(entry, parent, name)? {
            Some(FileType::Directory) => {}
            existing => {
                if existing.is_some() {
                    self.remove(entry, parent, name)?;
                }
                // Owner-only until the final pass sets the real mode.
                rustix::fs::mkdirat(&parent.fd, os(name), Mode::from_raw_mode(0o700))
                    .map_err(|e| self.io_err(entry, "creating directory", &path, e))?;
            }
        }
        let fd = rustix::fs::openat(&parent.fd, os(name), read_dir_flags(), Mode::empty())
            .map_err(|e| self.io_err(entry, "opening directory", &path, e))?;
        self.chown_at(entry, parent, name, meta)?;
        self.xattrs_fd(entry, &path, fd.as_fd(), meta);
        self.dirs.push(PendingDir {
            entry: entry.to_string(),
            path: path.clone(),
            mode: meta.mode,
            times: meta.times.clone(),
        });
        self.record(path);
        Ok(())
    }

    fn symlink(
        &mut self,
        entry: &str,
        parent: &Parent,
        name: &[u8],
        target: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let path = parent.child(name);
        self.remove(entry, parent, name)?;
        rustix::fs::symlinkat(os(target), &parent.fd, os(name))
            .map_err(|e| self.io_err(entry, "creating symlink", &path, e))?;
        self.chown_at(entry, parent, name, meta)?;
        self.xattrs_at(entry, parent, name, meta);
        self.times_at(entry, parent, name, meta)?;
        self.record(path);
        Ok(())
    }

    fn hardlink(
        &mut self,
        entry: &str,
        comps: &[Vec<u8>],
        target: &[u8],
    ) -> Result<(), UnpackError> {
        let tcomps =
            clean(target).map_err(|p| Self::name_err(entry, "hardlink target", target, p))?;
        let Some((tname, tparent)) = tcomps.split_last() else {
            return Err(UnpackError::HardlinkToDirectory {
                entry: entry.to_string(),
                target: lossy(target),
            });
        };
        let missing = || UnpackError::HardlinkTargetMissing {
            entry: entry.to_string(),
            target: lossy(target),
        };
        let tp = self
            .resolve_dir(entry, tparent, Walk::Existing)?
            .ok_or_else(missing)?;
        match self.file_type_at(entry, &tp, tname)? {
            None => return Err(missing()),
            Some(FileType::Directory) => {
                return Err(UnpackError::HardlinkToDirectory {
                    entry: entry.to_string(),
                    target: lossy(target),
                })
            }
            Some(_) => {}
        }
        let Some((name, parent_comps)) = comps.split_last() else {
            return Err(UnpackError::RootNotDirectory {
                entry: entry.to_string(),
            });
        };
        let parent = self.resolve_parent(entry, parent_comps)?;
        let path = parent.child(name);
        if path == tp.child(tname) {
            // A link to itself: already in place.
            return Ok(());
        }
        self.remove(entry, &parent, name)?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
        rustix::fs::linkat(&tp.fd, os(tname), &parent.fd, os(name), AtFlags::empty())
            .map_err(|e| self.io_err(entry, "creating hardlink", &path, e))?;
        // The inode already carries its metadata from the target's entry.
        self.record(path);
        Ok(())
    }

    fn special<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name_str: &str,
        parent: &Parent,
        name: &[u8],
        kind: EntryType,
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        let path = parent.child(name);
        let header_err = |source| UnpackError::Header {
            entry: name_str.to_string(),
            field: "device number",
            source,
        };
        let (ft, dev) = match kind {
            EntryType::Fifo => (FileType::Fifo, 0),
            _ => {
                let major = entry.header().device_major().map_err(header_err)?;
                let minor = entry.header().device_minor().map_err(header_err)?;
                let ft = if kind == EntryType::Char {
                    FileType::CharacterDevice
                } else {
                    FileType::BlockDevice
                };
                (
                    ft,
                    rustix::fs::makedev(major.unwrap_or(0), minor.unwrap_or(0)),
                )
            }
        };
        self.remove(name_str, parent, name)?;
        match rustix::fs::mknodat(
            &parent.fd,
            os(name),
            ft,
            Mode::from_raw_mode(meta.mode),
            dev,
        ) {
            Ok(()) => {}
            Err(Errno::PERM | Errno::ACCESS) if ft != FileType::Fifo => {
                tracing::warn!(
                    entry = name_str,
                    "skipping device node: creating devices is not permitted here"
                );
                return Ok(());
            }
            Err(e) => return Err(self.io_err(name_str, "creating device node", &path, e)),
        }
        self.chown_at(name_str, parent, name, meta)?;
        self.xattrs_at(name_str, parent, name, meta);
        // Just created by mknod above, so not a symlink: chmodat may follow.
        rustix::fs::chmodat(
            &parent.fd,
            os(name),
            Mode::from_raw_mode(meta.mode),
            AtFlags::empty(),
        )
        .map_err(|e| self.io_err(name_str, "setting mode of", &path, e))?;
        self.times_at(name_str, parent, name, meta)?;
        self.record(path);
        Ok(())
    }

    fn whiteout(
        &mut self,
        entry: &str,
        parent_comps: &[Vec<u8>],
        last: &[u8],
        hidden: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if last == OPAQUE_MARKER {
            return self.opaque(entry, parent_comps);
        }
        if hidden.starts_with(WHITEOUT_PREFIX) {
            // Other aufs metadata (`.wh..wh.plnk`, `.wh..wh.aufs`): not content.
            tracing::debug!(entry, "skipping aufs metadata entry");
            return Ok(());
        }
        if hidden.is_empty() || hidden == b"." || hidden == b".." {
            return Err(UnpackError::InvalidWhiteout {
                entry: entry.to_string(),
            });
        }
        let walk = match self.opts.whiteouts {
            WhiteoutMode::Apply => Walk::Existing,
            WhiteoutMode::Overlay => Walk::Create,
        };
        let Some(parent) = self.resolve_dir(entry, parent_comps, walk)? else {
            // Nothing beneath a missing directory to hide.
            return Ok(());
        };
        let path = parent.child(hidden);
        if self.layer_paths.contains(&path.join(&b'/')) {
            // Whiteouts only hide earlier layers, never this one.
            return Ok(());
        }
        match self.opts.whiteouts {
            WhiteoutMode::Apply => self.remove(entry, &parent, hidden),
            WhiteoutMode::Overlay => {
                self.remove(entry, &parent, hidden)?;
                rustix::fs::mknodat(
                    &parent.fd,
                    os(hidden),
                    FileType::CharacterDevice,
                    Mode::empty(),
                    rustix::fs::makedev(0, 0),
                )
                .map_err(|e| self.io_err(entry, "creating whiteout device", &path, e))?;
                self.chown_at(entry, &parent, hidden, meta)?;
                self.times_at(entry, &parent, hidden, meta)
            }
        }
    }

    fn opaque(&mut self, entry: &str, dir_comps: &[Vec<u8>]) -> Result<(), UnpackError> {
        let walk = match self.opts.whiteouts {
            WhiteoutMode::Apply => Walk::Existing,
            WhiteoutMode::Overlay => Walk::Create,
        };
        let Some(dir) = self.resolve_dir(entry, dir_comps, walk)? else {
            return Ok(());
        };
        let fd = rustix::fs::openat(&dir.fd, ".", read_dir_flags(), Mode::empty())
            .map_err(|e| self.io_err(entry, "opening directory", &dir.path, e))?;
        match self.opts.whiteouts {
            WhiteoutMode::Overlay => rustix::fs::fsetxattr(
                &fd,
                crate::overlay::namespace().opaque(),
                b"y",
                rustix::fs::XattrFlags::empty(),
            )
            .map_err(|e| self.io_err(entry, "marking opaque", &dir.path, e)),
            WhiteoutMode::Apply => self
                .clear_earlier(fd.as_fd(), &dir.path)
                .map_err(|(path, e)| self.io_err(entry, "emptying opaque directory", &path, e)),
        }
    }

    /// Remove everything beneath `dir` that this tar did not write. Open
    /// directories are a stack on the heap, so depth costs memory, not call stack.
    fn clear_earlier(&self, dir: BorrowedFd<'_>, path: &[Vec<u8>]) -> Result<(), (Comps, Errno)> {
        let children = list_dir(dir).map_err(|e| (path.to_vec(), e))?;
        let mut stack: Vec<OpenDir> = vec![(None, path.to_vec(), children.into_iter())];
        while let Some((fd, path, children)) = stack.last_mut() {
            let Some((child, ft)) = children.next() else {
                stack.pop();
                continue;
            };
            let here = fd.as_ref().map_or(dir, |f| f.as_fd());
            let mut cpath = path.clone();
            cpath.push(child.clone());
            let ft = match ft {
                FileType::Unknown => {
                    match rustix::fs::statat(here, os(&child), AtFlags::SYMLINK_NOFOLLOW) {
                        Ok(st) => FileType::from_raw_mode(st.st_mode),
                        Err(e) => return Err((cpath, e)),
                    }
                }
                ft => ft,
            };
            let key = cpath.join(&b'/');
            let ours = self.layer_paths.contains(&key);
            if ft == FileType::Directory {
                if ours || self.layer_ancestors.contains(&key) {
                    let sub = rustix::fs::openat(here, os(&child), read_dir_flags(), Mode::empty())
                        .map_err(|e| (cpath.clone(), e))?;
                    let list = list_dir(sub.as_fd()).map_err(|e| (cpath.clone(), e))?;
                    stack.push((Some(sub), cpath, list.into_iter()));
                } else {
                    remove_tree(here, &child).map_err(|e| (cpath, e))?;
                }
            } else if !ours {
                rustix::fs::unlinkat(here, os(&child), AtFlags::empty()).map_err(|e| (cpath, e))?;
            }
        }
        Ok(())
    }

    fn chown_at(
        &self,
        entry: &str,
        parent: &Parent,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        if !self.chown {
            return Ok(());
        }
        rustix::fs::chownat(
            &parent.fd,
            os(name),
            Some(Uid::from_raw(meta.uid)),
            Some(Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|e| {
            if crate::overlay::is_unmapped_owner(e.raw_os_error()) {
                return UnpackError::UnmappedOwner {
                    entry: entry.to_string(),
                    source: crate::overlay::UnmappedOwner {
                        path: PathBuf::from(format!("/{}", show(&parent.child(name)))),
                        uid: meta.uid,
                        gid: meta.gid,
                    },
                };
            }
            self.io_err(entry, "changing owner of", &parent.child(name), e)
        })
    }

    fn times_at(
        &self,
        entry: &str,
        parent: &Parent,
        name: &[u8],
        meta: &Meta,
    ) -> Result<(), UnpackError> {
        rustix::fs::utimensat(&parent.fd, os(name), &meta.times, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.io_err(entry, "setting times of", &parent.child(name), e))
    }

    fn xattrs_fd(&self, entry: &str, path: &[Vec<u8>], fd: BorrowedFd<'_>, meta: &Meta) {
        for (key, value) in &meta.xattrs {
            let r = rustix::fs::fsetxattr(fd, os(key), value, rustix::fs::XattrFlags::empty());
            warn_xattr(entry, path, key, r);
        }
    }

    /// Xattrs on something we cannot open (a symlink, a device): address it
    /// through the parent's descriptor in /proc, which pins the directory, and
    /// `lsetxattr`, which does not follow the last component.
    fn xattrs_at(&self, entry: &str, parent: &Parent, name: &[u8], meta: &Meta) {
        if meta.xattrs.is_empty() {
            return;
        }
        let mut proc = format!(
            "/proc/self/fd/{}/",
            std::os::fd::AsRawFd::as_raw_fd(&parent.fd)
        )
        .into_bytes();
        proc.extend_from_slice(name);
        let path = parent.child(name);
        for (key, value) in &meta.xattrs {
            let r =
                rustix::fs::lsetxattr(os(&proc), os(key), value, rustix::fs::XattrFlags::empty());
            warn_xattr(entry, &path, key, r);
        }
    }

    /// Directory modes and times, after all content is in place. Deepest
    /// entries of the tar come last, so walking backwards sets children before
    /// a parent can become unwritable or get its mtime bumped.
    fn finish_dirs(&mut self) -> Result<(), UnpackError> {
        let dirs = std::mem::take(&mut self.dirs);
        for d in dirs.iter().rev() {
            let Some((name, parent_comps)) = d.path.split_last() else {
                continue;
            };
            // Later entries may have removed or replaced the directory; then
            // there is nothing left to finish.
            let Some(parent) = self.resolve_dir(&d.entry, parent_comps, Walk::Physical)? else {
                continue;
            };
            let fd = match rustix::fs::openat(&parent.fd, os(name), read_dir_flags(), Mode::empty())
            {
                Ok(fd) => fd,
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP) => continue,
                Err(e) => return Err(self.io_err(&d.entry, "opening directory", &d.path, e)),
            };
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(d.mode))
                .map_err(|e| self.io_err(&d.entry, "setting mode of", &d.path, e))?;
            rustix::fs::futimens(&fd, &d.times)
                .map_err(|e| self.io_err(&d.entry, "setting times of", &d.path, e))?;
        }
        Ok(())
    }
}

fn warn_xattr(entry: &str, path: &[Vec<u8>], key: &[u8], r: rustix::io::Result<()>) {
    if let Err(e) = r {
        tracing::warn!(
            entry,
            path = show(path),
            xattr = %lossy(key),
            error = %e,
            "skipping xattr the target does not accept"
        );
    }
}

/// Children of a directory (without `.` and `..`) with their types as the
/// directory reports them.
fn list_dir(dir: BorrowedFd<'_>) -> rustix::io::Result<Vec<(Vec<u8>, FileType)>> {
    let mut out = Vec::new();
    for ent in rustix::fs::Dir::read_from(dir)? {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), ent.file_type()));
    }
    Ok(out)
}

/// A directory being emptied: its descriptor (`None` for the starting one), its
/// path and the children left to look at.
type OpenDir = (
    Option<OwnedFd>,
    Comps,
    std::vec::IntoIter<(Vec<u8>, FileType)>,
);

/// Remove the directory `name` beneath `parent` and everything in it, by
/// descriptor, never following a symlink. Iterative: a stack of open directories
/// on the heap, so a deep tree cannot overflow the call stack.
fn remove_tree(parent: BorrowedFd<'_>, name: &[u8]) -> rustix::io::Result<()> {
    let open = |at: BorrowedFd<'_>, name: &[u8]| -> rustix::io::Result<_> {
        let fd = rustix::fs::openat(at, os(name), read_dir_flags(), Mode::empty())?;
        let list = list_dir(fd.as_fd())?;
        Ok((fd, name.to_vec(), list.into_iter()))
    };
    let mut stack = vec![open(parent, name)?];
    while let Some((dir, _, children)) = stack.last_mut() {
        let Some((child, ft)) = children.next() else {
            let Some((fd, name, _)) = stack.pop() else {
                break;
            };
            drop(fd);
            let up = stack.last().map_or(parent, |(fd, _, _)| fd.as_fd());
            rustix::fs::unlinkat(up, os(&name), AtFlags::REMOVEDIR)?;
            continue;
        };
        let is_dir = match ft {
            FileType::Directory => true,
            FileType::Unknown => {
                let st = rustix::fs::statat(&*dir, os(&child), AtFlags::SYMLINK_NOFOLLOW)?;
                FileType::from_raw_mode(st.st_mode) == FileType::Directory
            }
            _ => false,
        };
        if is_dir {
            let next = open(dir.as_fd(), &child)?;
            stack.push(next);
        } else {
            rustix::fs::unlinkat(&*dir, os(&child), AtFlags::empty())?;
        }
    }
    Ok(())
}

/// A PAX time: decimal seconds with an optional fraction, possibly negative.
fn parse_pax_time(v: &[u8]) -> Option<Timespec> {
    let s = std::str::from_utf8(v).ok()?;
    let (neg, s) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut secs: i64 = secs.parse().ok()?;
    let mut digits: String = frac.chars().take(9).collect();
    while digits.len() < 9 {
        digits.push('0');
    }
    let mut nsec: i64 = digits.parse().ok()?;
    if neg {
        secs = -secs;
        if nsec > 0 {
            secs -= 1;
            nsec = 1_000_000_000 - nsec;
        }
    }
    Some(Timespec {
        tv_sec: secs,
        tv_nsec: nsec as _,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn comps(s: &str) -> Comps {
        s.split('/').map(|c| c.as_bytes().to_vec()).collect()
    }

    #[test]
    fn clean_strips_dots_and_refuses_escapes() {
        assert_eq!(clean(b"./a//b/./c").ok(), Some(comps("a/b/c")));
        assert_eq!(clean(b"a/../b").ok(), Some(comps("b")));
        assert_eq!(clean(b"./").ok(), Some(Vec::new()));
        assert!(matches!(clean(b"../x"), Err(NameProblem::Escapes)));
        assert!(matches!(clean(b"a/../../x"), Err(NameProblem::Escapes)));
        assert!(matches!(clean(b".."), Err(NameProblem::Escapes)));
        assert!(matches!(clean(b"/etc/passwd"), Err(NameProblem::Absolute)));
        assert!(matches!(clean(b"a\0b"), Err(NameProblem::Nul)));
    }

    #[test]
    fn pax_times_parse() {
        let t = parse_pax_time(b"1700000000.5").map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t, Some((1_700_000_000, 500_000_000)));
        let t = parse_pax_time(b"-1.25").map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t, Some((-2, 750_000_000)));
        let t = parse_pax_time(b"42").map(|t| (t.tv_sec, t.tv_nsec));
        assert_eq!(t, Some((42, 0)));
        assert!(parse_pax_time(b"x1").is_none());
        assert!(parse_pax_time(b"1.x").is_none());
    }

    #[test]
    fn decompress_passes_short_plain_input_through() {
        let mut out = Vec::new();
        let mut r = decompress(&b"ab"[..]).unwrap();
        r.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }
}
