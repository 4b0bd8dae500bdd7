//! COPY and ADD of local content: sources from the build context or another stage's
//! snapshots are written into a fresh directory that then becomes the step's layer.
//! Parent directories that already exist in the image keep the image's owner and mode.
//!
//! Choosing what to copy ([`select`]) is separate from copying it, so the same list
//! can be hashed for the step cache. The build context is seen through its
//! `.dockerignore` (an ignored entry is absent, an ignored directory with a
//! re-included child holds just that child), `--exclude` patterns drop entries below
//! each source, and `--parents` keeps the sources' parent directories. A symlink a
//! source names is followed (inside the source root, as BuildKit does); symlinks
//! inside a copied directory are copied as links.

use std::collections::HashMap;
use std::ffi::OsString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::merged;
use crate::ignore::{MatchInfo, Matcher, PatternError};

#[derive(Debug, thiserror::Error)]
pub enum CopyError {
    #[error("source {0:?} not found")]
    NotFound(String),
    #[error("source {0:?} not found in build context or excluded by .dockerignore")]
    NotInContext(String),
    #[error("source {0:?} leaves the build context")]
    Outside(String),
    #[error("source {src:?}: symlink {link:?} points to {target:?}, outside the build context")]
    LinkOutside {
        src: String,
        link: String,
        target: String,
    },
    #[error("source {0:?}: too many levels of symbolic links")]
    LinkLoop(String),
    #[error("invalid --chmod {0:?}: expected an octal mode such as 0755 or a symbolic one such as u=rwX,go=rX")]
    Chmod(String),
    #[error("invalid pattern: {0}")]
    Pattern(#[from] PatternError),
    #[error("{}: {kind} in the build context: only regular files, directories and symlinks can be copied", path.display())]
    Special { path: PathBuf, kind: &'static str },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Only one id is mapped in this user namespace and the owner is another.
    #[error(transparent)]
    UnmappedOwner(#[from] layer_cache::overlay::UnmappedOwner),
}

/// What kind of special file `md` is, for messages.
fn special_kind(md: &std::fs::Metadata) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    if t.is_fifo() {
        "named pipe (FIFO)"
    } else if t.is_socket() {
        "socket"
    } else if t.is_char_device() {
        "character device"
    } else if t.is_block_device() {
        "block device"
    } else {
        "special file"
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CopyError + '_ {
    move |source| CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a COPY may see of its sources and how it keeps their paths.
#[derive(Debug, Clone, Copy, Default)]
pub struct SourceFilter<'a> {
    /// Sources are the build context (a missing one is reported as such).
    pub from_context: bool,
    /// The context's `.dockerignore`, matched against paths from the source root.
    pub ignore: Option<&'a Matcher>,
    /// `--exclude` patterns, matched against paths relative to each source.
    pub exclude: Option<&'a Matcher>,
    /// `--parents`: keep each source's path below the root, or below a `/./` pivot.
    pub parents: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// Devices, fifos, sockets: an error from the build context, skipped from a stage.
    Other,
}

/// One entry a COPY writes.
#[derive(Debug, Clone)]
pub struct Selected {
    /// Path in the source view (relative to its root).
    pub src: PathBuf,
    /// The file backing it on disk (in the context or one of the snapshots).
    pub real: PathBuf,
    /// Where it goes, relative to the destination directory (empty for the
    /// directory a directory source is copied into).
    pub dest: PathBuf,
    /// A file named by a source itself (not found inside a directory): when the
    /// destination is not a directory, this file becomes the destination.
    pub whole: bool,
    pub kind: EntryKind,
    /// `real`'s metadata as the selection saw it, so keying stats it once.
    pub md: std::fs::Metadata,
}

/// Equal when they write the same thing; the metadata snapshot does not count.
impl PartialEq for Selected {
    fn eq(&self, o: &Self) -> bool {
        (&self.src, &self.real, &self.dest, self.whole, self.kind)
            == (&o.src, &o.real, &o.dest, o.whole, o.kind)
    }
}

impl Eq for Selected {}

pub struct CopySpec<'a> {
    /// Where sources are read: `[context]`, or a stage's snapshots topmost first.
    pub src_layers: &'a [PathBuf],
    /// The stage's current snapshots, topmost first, to mirror existing parents.
    pub dest_layers: &'a [PathBuf],
    pub sources: &'a [String],
    pub filter: SourceFilter<'a>,
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
/// Iterative, remembering only the last `*` (a later star subsumes earlier
/// ones), so time is O(pattern × name) and the stack does not grow with either.
pub fn glob_match(pat: &[u8], name: &[u8]) -> bool {
    let (mut p, mut n) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, name index).
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if pat.get(p) == Some(&b'*') {
            p += 1;
            star = Some((p, n));
            continue;
        }
        if let Some(len) = match_one(&pat[p..], name[n]) {
            p += len;
            n += 1;
            continue;
        }
        match star {
            Some((sp, sn)) => {
                p = sp;
                n = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pat[p..].iter().all(|b| *b == b'*')
}

/// Whether the first element of `pat` (a literal, `?`, `[...]` or `\x`) matches
/// `c`; the pattern bytes it takes when it does.
fn match_one(pat: &[u8], c: u8) -> Option<usize> {
    match pat.first()? {
        b'*' => None,
        b'?' => Some(1),
        b'[' => {
            let Some(end) = pat.iter().skip(1).position(|b| *b == b']').map(|i| i + 1) else {
                return (pat[0] == c).then_some(1);
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
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            (hit != negate).then_some(end + 1)
        }
        b'\\' if pat.len() > 1 => (pat[1] == c).then_some(2),
        p => (*p == c).then_some(1),
    }
}

/// Gives `path` (in the upper directory `upper`) its owner; with only one id mapped
/// in this user namespace, another owner is named as the image sees the path.
fn lchown(upper: &Path, path: &Path, owner: (u32, u32)) -> Result<(), CopyError> {
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1)).map_err(|e| {
        if e.raw_os_error()
            .is_some_and(layer_cache::overlay::is_unmapped_owner)
        {
            let rel = path.strip_prefix(upper).unwrap_or(path);
            return CopyError::UnmappedOwner(layer_cache::overlay::UnmappedOwner {
                path: Path::new("/").join(rel),
                uid: owner.0,
                gid: owner.1,
            });
        }
        io(path)(e)
    })
}

fn set_meta(
    upper: &Path,
    path: &Path,
    mode: Option<u32>,
    owner: (u32, u32),
    mtime: Option<i64>,
) -> Result<(), CopyError> {
    let md = std::fs::symlink_metadata(path).map_err(io(path))?;
    lchown(upper, path, owner)?;
    if !md.file_type().is_symlink() {
        if let Some(m) = mode {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(m)).map_err(io(path))?;
        }
    }
    if let Some(t) = mtime {
        crate::mtime::set(path, t, 0).map_err(io(path))?;
    }
    Ok(())
}

/// Creates `rel`'s missing parents (and itself when `dir`) in the upper directory,
/// copying owner and mode from the image where the directory already exists; the
/// others are 0755 and owned by the `--chown` owner.
fn ensure_dirs(spec: &CopySpec, rel: &Path) -> Result<(), CopyError> {
    // Usually all of it exists: one lookup, not one per level (a deep tree would
    // otherwise cost depth² path walks per entry). It must be directories all the
    // way, no symlink this copy wrote on the way: the kernel checks both at once.
    if all_dirs(&spec.upper.join(rel)) {
        return Ok(());
    }
    let mut cur = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        let here = spec.upper.join(&cur);
        match here.symlink_metadata() {
            Ok(md) if md.is_dir() => continue,
            // A link or file this copy wrote gives way: nothing is written through a
            // symlink on the host side.
            Ok(_) => std::fs::remove_file(&here).map_err(io(&here))?,
            Err(_) => {}
        }
        std::fs::create_dir(&here).map_err(io(&here))?;
        match merged::lookup(spec.dest_layers, &cur).and_then(|p| std::fs::symlink_metadata(p).ok())
        {
            Some(md) if md.is_dir() => set_meta(
                spec.upper,
                &here,
                Some(md.mode() & 0o7777),
                (md.uid(), md.gid()),
                Some(md.mtime()),
            )?,
            // New directories take the `--chown` owner, as BuildKit's MkdirAll does.
            _ => set_meta(spec.upper, &here, Some(0o755), spec.owner, None)?,
        }
    }
    Ok(())
}

/// Whether `path` is a directory reached without following any symlink.
fn all_dirs(path: &Path) -> bool {
    use rustix::fs::{Mode, OFlags, ResolveFlags, CWD};
    rustix::fs::openat2(
        CWD,
        path,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS,
    )
    .is_ok()
}

/// An entry of the source view.
struct Node {
    rel: PathBuf,
    real: PathBuf,
    md: std::fs::Metadata,
    /// `.dockerignore` state handed to children.
    info: MatchInfo,
    /// Excluded by `.dockerignore` but holding a re-included descendant: present
    /// only as the parent of what it holds.
    hidden: bool,
}

impl Node {
    fn kind(&self) -> EntryKind {
        let t = self.md.file_type();
        if t.is_dir() {
            EntryKind::Dir
        } else if t.is_symlink() {
            EntryKind::Symlink
        } else if t.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        }
    }
}

fn slash(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The merged source layers with `.dockerignore` applied, the way BuildKit's
/// filtered walk of the context sees them.
struct View<'a> {
    layers: &'a [PathBuf],
    ignore: Option<&'a Matcher>,
    /// The layers are a build context: a symlink may not lead out of it.
    from_context: bool,
    /// Lists the directories a walk enters ahead of it, when a second core can.
    ahead: Option<&'a merged::Ahead<'a>>,
}

impl View<'_> {
    fn root(&self) -> Option<Node> {
        let real = self.layers.first()?.clone();
        let md = std::fs::symlink_metadata(&real).ok()?;
        Some(Node {
            rel: PathBuf::new(),
            real,
            md,
            info: MatchInfo::default(),
            hidden: false,
        })
    }

    /// The entry at `rel` (cleaned), or `None` when absent or ignored.
    fn node(&self, rel: &Path) -> Option<Node> {
        if rel.as_os_str().is_empty() {
            return self.root();
        }
        // `lookup` refuses to pass through a symlinked parent, so nothing outside
        // the source root is reached.
        let real = merged::lookup(self.layers, rel)?;
        let md = std::fs::symlink_metadata(&real).ok()?;
        let Some(m) = self.ignore else {
            return Some(Node {
                rel: rel.to_path_buf(),
                real,
                md,
                info: MatchInfo::default(),
                hidden: false,
            });
        };
        let mut info = MatchInfo::default();
        let mut prefix = PathBuf::new();
        let mut excluded = false;
        let count = rel.components().count();
        for (i, c) in rel.components().enumerate() {
            prefix.push(c);
            let p = slash(&prefix);
            let (ex, next) = m.matches_in(&p, &info);
            info = next;
            excluded = ex;
            // An excluded parent the walk skips hides everything below it.
            if ex && i + 1 < count && !m.must_descend(&p) {
                return None;
            }
        }
        let mut node = Node {
            rel: rel.to_path_buf(),
            real,
            md,
            info,
            hidden: false,
        };
        if excluded {
            if !(node.md.is_dir() && m.must_descend(&slash(rel)) && self.holds_visible(&node)) {
                return None;
            }
            node.hidden = true;
        }
        Some(node)
    }

    /// The visible entries of directory `dir`, sorted by name.
    fn children(&self, dir: &Node) -> Vec<Node> {
        let listed = match self.ahead {
            Some(a) => a.entries(&dir.rel),
            None => merged::entries(self.layers, &dir.rel),
        };
        let mut out = Vec::new();
        for e in listed {
            let mut node = Node {
                rel: dir.rel.join(&e.name),
                real: e.real,
                md: e.md,
                info: MatchInfo::default(),
                hidden: false,
            };
            if let Some(m) = self.ignore {
                let p = slash(&node.rel);
                let (ex, info) = m.matches_in(&p, &dir.info);
                node.info = info;
                if ex {
                    if !(node.md.is_dir() && m.must_descend(&p) && self.holds_visible(&node)) {
                        continue;
                    }
                    node.hidden = true;
                }
            }
            out.push(node);
        }
        out
    }

    /// [`View::children`] of a directory a walk enters, whose own directories it
    /// will likely enter next: they are queued to be listed ahead.
    fn walk_children(&self, dir: &Node) -> Vec<Node> {
        let out = self.children(dir);
        if let Some(a) = self.ahead {
            let dirs: Vec<PathBuf> = out
                .iter()
                .filter(|n| n.md.is_dir())
                .map(|n| n.rel.clone())
                .collect();
            a.queue(dirs.into_iter());
        }
        out
    }

    /// Whether an excluded directory holds anything `.dockerignore` lets through,
    /// at any depth. Iterative: `children` asks this of hidden subdirectories.
    fn holds_visible(&self, dir: &Node) -> bool {
        let Some(m) = self.ignore else {
            return !merged::entries(self.layers, &dir.rel).is_empty();
        };
        let mut stack = vec![(dir.rel.clone(), dir.info.clone())];
        while let Some((rel, info)) = stack.pop() {
            for e in merged::entries(self.layers, &rel) {
                let child = rel.join(&e.name);
                let p = slash(&child);
                let (ex, child_info) = m.matches_in(&p, &info);
                if !ex {
                    return true;
                }
                if e.md.is_dir() && m.must_descend(&p) {
                    stack.push((child, child_info));
                }
            }
        }
        false
    }

    /// Expands a cleaned source pattern (globs per component) to visible entries,
    /// each with the name it was matched by. Symlinks on the way, the matches
    /// themselves included, are followed as BuildKit follows a source path: inside
    /// the source root, where an absolute target starts from the root; a link
    /// leaving the build context is an error. `src` is the source as written.
    fn expand(&self, pattern: &Path, src: &str) -> Result<Vec<(Node, OsString)>, CopyError> {
        let Some(root) = self.root() else {
            return Ok(Vec::new());
        };
        let mut current = vec![(root, OsString::new())];
        for comp in pattern.components() {
            let part = comp.as_os_str().to_string_lossy().into_owned();
            let mut next = Vec::new();
            for (base, _) in &current {
                let found: Vec<Node> = if has_glob(&part) {
                    if !base.md.is_dir() {
                        continue;
                    }
                    self.children(base)
                        .into_iter()
                        .filter(|n| {
                            let name = n.rel.file_name().unwrap_or_default();
                            glob_match(part.as_bytes(), name.as_bytes())
                        })
                        .collect()
                } else if base.md.is_dir() {
                    self.node(&base.rel.join(&part)).into_iter().collect()
                } else {
                    continue;
                };
                for n in found {
                    let name = n.rel.file_name().unwrap_or_default().to_owned();
                    if let Some(n) = self.follow(n, src)? {
                        next.push((n, name));
                    }
                }
            }
            current = next;
        }
        Ok(current)
    }

    /// `node` itself, or when it is a symlink the entry its target names (`None`
    /// when that is absent or ignored).
    fn follow(&self, node: Node, src: &str) -> Result<Option<Node>, CopyError> {
        if node.kind() != EntryKind::Symlink {
            return Ok(Some(node));
        }
        let first = std::fs::read_link(&node.real).map_err(io(&node.real))?;
        let outside = || CopyError::LinkOutside {
            src: src.to_string(),
            link: slash(&node.rel),
            target: slash(&first),
        };
        let mut done: Vec<OsString> = node
            .rel
            .parent()
            .map(|p| p.iter().map(|c| c.to_owned()).collect())
            .unwrap_or_default();
        let mut pending: Vec<OsString> = Vec::new();
        let mut target = first.clone();
        let mut hops = 0;
        loop {
            // `target` is a link's: it replaces the link's own name.
            hops += 1;
            if hops > 40 {
                return Err(CopyError::LinkLoop(src.to_string()));
            }
            if target.is_absolute() {
                if self.from_context {
                    return Err(outside());
                }
                done.clear();
            }
            let parts: Vec<OsString> = target
                .iter()
                .filter(|c| *c != "/")
                .map(|c| c.to_owned())
                .collect();
            pending.extend(parts.into_iter().rev());
            let mut next_link = None;
            while let Some(part) = pending.pop() {
                match part.to_str() {
                    Some(".") => continue,
                    Some("..") => {
                        if done.pop().is_none() && self.from_context {
                            return Err(outside());
                        }
                        continue;
                    }
                    _ => done.push(part),
                }
                let rel: PathBuf = done.iter().collect();
                let Some(real) = merged::lookup(self.layers, &rel) else {
                    return Ok(None);
                };
                if let Ok(t) = std::fs::read_link(&real) {
                    done.pop();
                    next_link = Some(t);
                    break;
                }
            }
            match next_link {
                Some(t) => target = t,
                None => break,
            }
        }
        let rel: PathBuf = done.iter().collect();
        Ok(self.node(&rel))
    }
}

fn entry(node: Node, dest: PathBuf, whole: bool) -> Selected {
    Selected {
        kind: node.kind(),
        src: node.rel,
        real: node.real,
        dest,
        whole,
        md: node.md,
    }
}

/// Where [`select_each`] hands each entry, in order.
pub type Sink<'a> = dyn FnMut(Selected) -> Result<(), CopyError> + 'a;

/// Filters that apply below a copy root (`--parents` include pattern, `--exclude`).
struct Below<'a> {
    include: Option<&'a Matcher>,
    exclude: Option<&'a Matcher>,
}

/// Walks a directory from its `children`, handing `out` what is kept with paths
/// relative to the copy root (`below`); returns how many. Entries dropped by a
/// filter are not written, but a directory holding a kept entry is written first,
/// as its parent. The open directories are a stack on the heap, so depth costs
/// memory, not call stack, and only the open directories' entries are held.
#[allow(clippy::too_many_arguments)]
fn walk(
    view: &View,
    children: Vec<Node>,
    below: &Path,
    f: &Below,
    inc: &MatchInfo,
    exc: &MatchInfo,
    pending: &mut Vec<Selected>,
    out: &mut Sink,
) -> Result<usize, CopyError> {
    let mut kept = 0;
    struct Frame {
        children: std::vec::IntoIter<Node>,
        below: PathBuf,
        inc: MatchInfo,
        exc: MatchInfo,
        /// `pending`'s length before this directory was entered.
        depth: usize,
    }
    let mut stack = vec![Frame {
        children: children.into_iter(),
        below: below.to_path_buf(),
        inc: inc.clone(),
        exc: exc.clone(),
        depth: pending.len(),
    }];
    while let Some(top) = stack.last_mut() {
        let Some(child) = top.children.next() else {
            let depth = top.depth;
            stack.pop();
            pending.truncate(depth);
            continue;
        };
        let rel = top.below.join(child.rel.file_name().unwrap_or_default());
        // Only the filters match on text.
        let p = if f.include.is_some() || f.exclude.is_some() {
            slash(&rel)
        } else {
            String::new()
        };
        let is_dir = child.md.is_dir();
        let mut keep = !child.hidden;
        let mut descend = is_dir;
        let (mut inc_info, mut exc_info) = (MatchInfo::default(), MatchInfo::default());
        if let Some(m) = f.include {
            let (hit, info) = m.matches_in(&p, &top.inc);
            inc_info = info;
            if !hit {
                keep = false;
                descend &= m.could_match_below(&p);
            }
        }
        if let Some(m) = f.exclude {
            let (hit, info) = m.matches_in(&p, &top.exc);
            exc_info = info;
            if hit {
                keep = false;
                descend &= m.must_descend(&p);
            }
        }
        let children = descend.then(|| view.walk_children(&child));
        // `rel` is the entry's destination, and the frame's when it is entered.
        let (dest, rel) = if descend {
            (rel.clone(), rel)
        } else {
            (rel, PathBuf::new())
        };
        if keep {
            for p in pending.drain(..) {
                out(p)?;
                kept += 1;
            }
            out(entry(child, dest, false))?;
            kept += 1;
        } else if descend {
            pending.push(entry(child, dest, false));
        }
        if let Some(children) = children {
            // Entered after `child` was pushed to `pending` when it is not kept.
            let depth = pending.len() - usize::from(!keep);
            stack.push(Frame {
                children: children.into_iter(),
                below: rel,
                inc: inc_info,
                exc: exc_info,
                depth,
            });
        }
    }
    Ok(kept)
}

/// Lists what a COPY of `sources` from `layers` writes, in order (parents before
/// their contents), after `.dockerignore`, `--exclude` and `--parents` are
/// applied. Pure over the source files: the step cache can hash the result.
pub fn select(
    layers: &[PathBuf],
    sources: &[String],
    filter: &SourceFilter,
) -> Result<Vec<Selected>, CopyError> {
    let mut out = Vec::new();
    select_each(layers, sources, filter, &mut |s| {
        out.push(s);
        Ok(())
    })?;
    Ok(out)
}

/// [`select`], handing each entry to `out` as the walk finds it instead of
/// listing them all, so a large context is never held in memory at once.
pub fn select_each(
    layers: &[PathBuf],
    sources: &[String],
    filter: &SourceFilter,
    out: &mut Sink,
) -> Result<(), CopyError> {
    let ahead = merged::Ahead::new(layers);
    let parallel = std::thread::available_parallelism().is_ok_and(|n| n.get() > 1);
    /// Ends the helper however the walk ends (an error, a panic in `out`).
    struct Stop<'s, 'a>(&'s merged::Ahead<'a>);
    impl Drop for Stop<'_, '_> {
        fn drop(&mut self) {
            self.0.stop();
        }
    }
    std::thread::scope(|scope| {
        if parallel {
            scope.spawn(|| ahead.help());
        }
        let _stop = Stop(&ahead);
        let view = View {
            layers,
            ignore: filter.ignore.filter(|m| !m.is_empty()),
            from_context: filter.from_context,
            ahead: parallel.then_some(&ahead),
        };
        select_view(&view, sources, filter, out)
    })
}

fn select_view(
    view: &View,
    sources: &[String],
    filter: &SourceFilter,
    out: &mut Sink,
) -> Result<(), CopyError> {
    let exclude = filter.exclude.filter(|m| !m.is_empty());
    let missing = |src: &str| {
        if filter.from_context {
            CopyError::NotInContext(src.to_string())
        } else {
            CopyError::NotFound(src.to_string())
        }
    };
    for src in sources {
        let mut count = 0;
        let mut pending = Vec::new();
        if filter.parents {
            // BuildKit: the part before the first `/./` is the root the kept path
            // starts from; without one, the source root.
            let (root, pattern) = match src.split_once("/./") {
                Some((r, p)) => (r, p),
                None => ("", src.as_str()),
            };
            let root = clean_rel(root).ok_or_else(|| CopyError::Outside(src.clone()))?;
            let pattern = clean_rel(pattern).ok_or_else(|| CopyError::Outside(src.clone()))?;
            let pattern = slash(&pattern);
            let include = Matcher::new(&[pattern.as_str()])?;
            let below = Below {
                include: (!pattern.is_empty()).then_some(&include),
                exclude,
            };
            for (node, _) in view.expand(&root, src)? {
                if node.md.is_dir() {
                    let empty = MatchInfo::default();
                    count += walk(
                        view,
                        view.walk_children(&node),
                        Path::new(""),
                        &below,
                        &empty,
                        &empty,
                        &mut pending,
                        out,
                    )?;
                }
            }
        } else {
            let pattern = clean_rel(src).ok_or_else(|| CopyError::Outside(src.clone()))?;
            let matches = view.expand(&pattern, src)?;
            if matches.is_empty() {
                return Err(missing(src));
            }
            let below = Below {
                include: None,
                exclude,
            };
            for (node, named) in matches {
                if node.md.is_dir() {
                    // A directory source copies its contents, not itself; this
                    // entry stands for the destination directory it fills.
                    let empty = MatchInfo::default();
                    let children = view.walk_children(&node);
                    out(entry(node, PathBuf::new(), false))?;
                    walk(
                        view,
                        children,
                        Path::new(""),
                        &below,
                        &empty,
                        &empty,
                        &mut pending,
                        out,
                    )?;
                    continue;
                }
                // Under the name the source gave, also when it was a followed link.
                let name = PathBuf::from(named);
                if exclude.is_some_and(|m| m.matches(&slash(&name))) {
                    continue;
                }
                out(entry(node, name, true))?;
            }
            continue;
        }
        if count == 0 {
            return Err(missing(src));
        }
    }
    Ok(())
}

/// The paths of the context at `root` that `.dockerignore` hides (the topmost hidden
/// entry of each hidden subtree), so a view of the context can mask them. An
/// ignored directory holding a re-included entry is not hidden, only its other
/// entries are.
pub fn ignored_paths(root: &Path, ignore: &Matcher) -> Vec<PathBuf> {
    let layers = [root.to_path_buf()];
    let view = View {
        layers: &layers,
        ignore: Some(ignore).filter(|m| !m.is_empty()),
        from_context: true,
        ahead: None,
    };
    let mut out = Vec::new();
    if view.ignore.is_none() {
        return out;
    }
    let Some(top) = view.root() else {
        return out;
    };
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        let visible = view.children(&dir);
        let shown: std::collections::BTreeSet<_> = visible
            .iter()
            .filter_map(|n| n.rel.file_name().map(|s| s.to_owned()))
            .collect();
        for name in merged::list(&layers, &dir.rel) {
            if !shown.contains(&name) {
                out.push(dir.rel.join(name));
            }
        }
        stack.extend(visible.into_iter().filter(|n| n.md.is_dir()));
    }
    out
}

/// Writes one selected entry at `target_rel` in the upper directory; directories'
/// mode and times are set afterwards (`dirs`), once their contents are written.
fn place(
    spec: &CopySpec,
    e: &Selected,
    target_rel: &Path,
    dirs: &mut Vec<(PathBuf, u32, i64)>,
    links: &mut HashMap<(u64, u64), PathBuf>,
    fresh_dest: &mut bool,
) -> Result<(), CopyError> {
    if e.kind == EntryKind::Other {
        if spec.filter.from_context {
            return Err(CopyError::Special {
                path: e.src.clone(),
                kind: special_kind(&e.md),
            });
        }
        // Devices, fifos and sockets of another stage are skipped.
        return Ok(());
    }
    if e.kind == EntryKind::Dir && e.dest.as_os_str().is_empty() {
        // The destination a directory source fills. As BuildKit's copy: when the
        // step creates it, it takes the source directory's mode and time (an
        // existing one keeps its own).
        ensure_dirs(spec, target_rel)?;
        // (The source root is a snapshot's root, not a directory of its own: 0755.)
        let root_source = e.src.as_os_str().is_empty();
        if std::mem::take(fresh_dest) && !target_rel.as_os_str().is_empty() && !root_source {
            let md = std::fs::symlink_metadata(&e.real).map_err(io(&e.real))?;
            dirs.push((
                spec.upper.join(target_rel),
                mode_for(spec, md.mode(), true),
                md.mtime(),
            ));
        }
        return Ok(());
    }
    if let Some(parent) = target_rel.parent() {
        ensure_dirs(spec, parent)?;
    }
    let target = spec.upper.join(target_rel);
    if e.kind == EntryKind::File {
        return place_file(spec, e, target, links);
    }
    let md = std::fs::symlink_metadata(&e.real).map_err(io(&e.real))?;
    let existing = target.symlink_metadata().ok();
    if e.kind == EntryKind::Dir {
        match existing {
            Some(m) if m.is_dir() => {}
            Some(_) => {
                std::fs::remove_file(&target).map_err(io(&target))?;
                std::fs::create_dir(&target).map_err(io(&target))?;
            }
            None => std::fs::create_dir(&target).map_err(io(&target))?,
        }
        lchown(spec.upper, &target, spec.owner)?;
        crate::xattrs::copy(&e.real, &target).map_err(io(&target))?;
        dirs.push((target, mode_for(spec, md.mode(), true), md.mtime()));
        return Ok(());
    }
    match existing {
        Some(m) if m.is_dir() => std::fs::remove_dir_all(&target).map_err(io(&target))?,
        Some(_) => std::fs::remove_file(&target).map_err(io(&target))?,
        None => {}
    }
    let link = std::fs::read_link(&e.real).map_err(io(&e.real))?;
    std::os::unix::fs::symlink(&link, &target).map_err(io(&target))?;
    set_meta(spec.upper, &target, None, spec.owner, Some(md.mtime()))?;
    // After the chown, which drops security.capability.
    crate::xattrs::copy(&e.real, &target).map_err(io(&target))?;
    Ok(())
}

/// Removes what an earlier entry of this copy left at `target`.
fn clear(target: &Path) -> Result<(), CopyError> {
    match target.symlink_metadata() {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(target).map_err(io(target)),
        Ok(_) => std::fs::remove_file(target).map_err(io(target)),
        Err(_) => Ok(()),
    }
}

/// Writes regular file `e` at `target` with its content, the copy's owner and
/// mode, its mtime and its xattrs, through one descriptor on each side: a large
/// context costs no path walk per step. `e.md` is the stat the selection just
/// took.
fn place_file(
    spec: &CopySpec,
    e: &Selected,
    target: PathBuf,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<(), CopyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let md = &e.md;
    // Two names of one inode stay one inode, as BuildKit's copy keeps hardlinks.
    let inode = (md.nlink() > 1).then(|| (md.dev(), md.ino()));
    if let Some(first) = inode.and_then(|i| links.get(&i)).filter(|f| **f != target) {
        clear(&target)?;
        std::fs::hard_link(first, &target).map_err(io(&target))?;
        return Ok(());
    }
    let src = std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&e.real)
        .map_err(io(&e.real))?;
    let create = || {
        std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&target)
    };
    // Nearly always new: what is there (from an earlier source) is only looked at
    // when creating fails.
    let mut dst = match create() {
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
            clear(&target)?;
            create()
        }
        r => r,
    }
    .map_err(io(&target))?;
    if let Some(i) = inode {
        links.insert(i, target.clone());
    }
    copy_content(&src, &mut dst).map_err(io(&target))?;
    rustix::fs::fchown(
        &dst,
        Some(rustix::fs::Uid::from_raw(spec.owner.0)),
        Some(rustix::fs::Gid::from_raw(spec.owner.1)),
    )
    .map_err(|errno| {
        if layer_cache::overlay::is_unmapped_owner(errno.raw_os_error()) {
            let rel = target.strip_prefix(spec.upper).unwrap_or(&target);
            return CopyError::UnmappedOwner(layer_cache::overlay::UnmappedOwner {
                path: Path::new("/").join(rel),
                uid: spec.owner.0,
                gid: spec.owner.1,
            });
        }
        io(&target)(errno.into())
    })?;
    // After the chown, which clears set-id bits.
    let mode = mode_for(spec, md.mode(), false);
    rustix::fs::fchmod(&dst, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| io(&target)(e.into()))?;
    let t = rustix::fs::Timespec {
        tv_sec: md.mtime(),
        tv_nsec: 0,
    };
    let times = rustix::fs::Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::futimens(&dst, &times).map_err(|e| io(&target)(e.into()))?;
    // After the chown, which drops security.capability.
    crate::xattrs::copy_fd(&src, &dst).map_err(io(&target))
}

/// `src`'s content into the new file `dst`: in the kernel where it can be.
fn copy_content(src: &std::fs::File, dst: &mut std::fs::File) -> std::io::Result<()> {
    let mut copied = 0u64;
    loop {
        match rustix::fs::copy_file_range(src, None, &*dst, None, 1 << 30) {
            Ok(0) => return Ok(()),
            Ok(n) => copied += n as u64,
            // Across filesystems or where the kernel cannot: by reads and writes.
            Err(_) if copied == 0 => {
                std::io::copy(&mut &*src, dst)?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Performs the copy into `spec.upper`.
pub fn copy(spec: &CopySpec) -> Result<(), CopyError> {
    // Each entry is written as the walk finds it: a large context is never listed
    // whole in memory.
    let mut placer = Placer::new(spec)?;
    select_each(spec.src_layers, spec.sources, &spec.filter, &mut |e| {
        placer.place(&e)
    })?;
    placer.finish()
}

/// Writes what [`select`] chose (for `spec`'s sources) and `spec`'s heredoc files
/// into `spec.upper`.
pub fn copy_selection(spec: &CopySpec, selected: &[Selected]) -> Result<(), CopyError> {
    let mut placer = Placer::new(spec)?;
    for e in selected {
        placer.place(e)?;
    }
    placer.finish()
}

/// Writes selected entries one by one, as [`copy_selection`] does for a list.
struct Placer<'s, 'a> {
    spec: &'s CopySpec<'a>,
    dest_rel: PathBuf,
    dest_is_dir: bool,
    fresh_dest: bool,
    dirs: Vec<(PathBuf, u32, i64)>,
    links: HashMap<(u64, u64), PathBuf>,
}

impl<'s, 'a> Placer<'s, 'a> {
    fn new(spec: &'s CopySpec<'a>) -> Result<Self, CopyError> {
        // The destination follows the image's symlinks, never out of its root.
        let dest_rel = clean_rel(&crate::sandbox::resolve_in_layers(
            spec.dest_layers,
            spec.dest,
        ))
        .unwrap_or_default();
        // As BuildKit's copy, each source in turn: a file goes into the destination
        // only when that is a directory by then (named with a trailing slash, in the
        // image, or made by an earlier directory source of this step); else the file
        // becomes the destination and a later one replaces it. Several sources or a
        // glob do not make it a directory: `COPY target/*.jar app.jar` gives the
        // file app.jar.
        let dest_is_dir = spec.dest.ends_with('/')
            || spec.dest.ends_with("/.")
            || spec.filter.parents
            || dest_rel.as_os_str().is_empty()
            || merged::lookup(spec.dest_layers, &dest_rel)
                .and_then(|p| std::fs::symlink_metadata(p).ok())
                .is_some_and(|m| m.is_dir());
        // The destination directory is new: the first directory source gives it its mode.
        let fresh_dest = spec.upper.join(&dest_rel).symlink_metadata().is_err()
            && merged::lookup(spec.dest_layers, &dest_rel)
                .and_then(|p| std::fs::symlink_metadata(p).ok())
                .is_none();
        if dest_is_dir {
            ensure_dirs(spec, &dest_rel)?;
        }
        Ok(Placer {
            spec,
            dest_rel,
            dest_is_dir,
            fresh_dest,
            dirs: Vec::new(),
            links: HashMap::new(),
        })
    }

    fn dir_by_now(&self) -> bool {
        self.dest_is_dir
            || self
                .spec
                .upper
                .join(&self.dest_rel)
                .symlink_metadata()
                .is_ok_and(|m| m.is_dir())
    }

    fn place(&mut self, e: &Selected) -> Result<(), CopyError> {
        let target_rel = if e.whole && !self.dir_by_now() {
            self.dest_rel.clone()
        } else {
            self.dest_rel.join(&e.dest)
        };
        place(
            self.spec,
            e,
            &target_rel,
            &mut self.dirs,
            &mut self.links,
            &mut self.fresh_dest,
        )
    }

    fn finish(self) -> Result<(), CopyError> {
        let spec = self.spec;
        // Deepest first, so setting a directory's times is not undone by its children.
        for (dir, mode, mtime) in self.dirs.iter().rev() {
            set_meta(spec.upper, dir, Some(*mode), spec.owner, Some(*mtime))?;
        }
        for (name, data) in spec.contents {
            let target_rel = if self.dir_by_now() {
                self.dest_rel.join(name)
            } else {
                self.dest_rel.clone()
            };
            if let Some(parent) = target_rel.parent() {
                ensure_dirs(spec, parent)?;
            }
            let target = spec.upper.join(&target_rel);
            std::fs::write(&target, data).map_err(io(&target))?;
            set_meta(
                spec.upper,
                &target,
                Some(mode_for(spec, 0o644, false)),
                spec.owner,
                None,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    /// Listing ahead on a second thread changes nothing a walk gives, in order,
    /// with `.dockerignore`, `--exclude`, whiteouts and an opaque-free lower layer.
    #[test]
    fn a_walk_listed_ahead_gives_what_one_thread_gives() {
        use super::{merged, select_view, SourceFilter, View};
        let tmp = tempfile::TempDir::new().unwrap();
        let (upper, lower) = (tmp.path().join("upper"), tmp.path().join("lower"));
        for d in 0..20 {
            for f in 0..15 {
                for layer in [&upper, &lower] {
                    let p = layer.join(format!("src/d{d:02}/s{}/f{f}", f % 3));
                    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
                    std::fs::write(p, "x").unwrap();
                }
            }
        }
        std::fs::write(lower.join("src/d03/only-below"), "x").unwrap();
        // A whiteout needs mknod: without it the upper file just shadows.
        let _ = rustix::fs::mknodat(
            rustix::fs::CWD,
            upper.join("src/d04/gone"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        );
        std::fs::write(lower.join("src/d04/gone"), "x").unwrap();
        let ignore = crate::ignore::Matcher::new(&["src/d1*", "!src/d15/s1"]).unwrap();
        let exclude = crate::ignore::Matcher::new(&["d0*/s2"]).unwrap();
        for layers in [vec![upper.clone()], vec![upper.clone(), lower.clone()]] {
            let filter = SourceFilter {
                ignore: Some(&ignore),
                exclude: Some(&exclude),
                ..Default::default()
            };
            let run = |ahead: Option<&merged::Ahead>| {
                let view = View {
                    layers: &layers,
                    ignore: Some(&ignore),
                    from_context: false,
                    ahead,
                };
                let mut got = Vec::new();
                select_view(&view, &["src".to_string()], &filter, &mut |s| {
                    got.push((s.src, s.dest));
                    Ok(())
                })
                .unwrap();
                got
            };
            let one = run(None);
            let ahead = merged::Ahead::new(&layers);
            let two = std::thread::scope(|scope| {
                scope.spawn(|| ahead.help());
                let got = run(Some(&ahead));
                ahead.stop();
                got
            });
            assert!(one.len() > 100, "{}", one.len());
            assert_eq!(one, two);
        }
    }

    #[test]
    fn a_1500_level_tree_is_walked_without_deep_recursion() {
        let tmp = tempfile::TempDir::new().unwrap();
        let mut deep = tmp.path().join("src");
        for _ in 0..1500 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::write(deep.join("leaf"), "x").unwrap();
        // A small stack: a walk that recursed per level would overflow it.
        let layers = vec![tmp.path().to_path_buf()];
        let found = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || {
                let mut n = 0usize;
                let mut leaf = false;
                let filter = crate::exec::copy::SourceFilter::default();
                crate::exec::copy::select_each(&layers, &["src".to_string()], &filter, &mut |s| {
                    n += 1;
                    leaf |= s.src.ends_with("d/leaf");
                    Ok(())
                })
                .unwrap();
                (n, leaf)
            })
            .unwrap()
            .join()
            .unwrap();
        // The source directory, its 1,500 levels and the file.
        assert_eq!(found, (1502, true));
    }

    #[test]
    fn ignored_paths_are_the_topmost_hidden_entries() {
        let tmp = tempfile::TempDir::new().unwrap();
        for f in ["a/keep", "a/x.key", "logs/1.log", "logs/keep.me", "top.key"] {
            let p = tmp.path().join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        std::fs::create_dir_all(tmp.path().join("deps/deep/er")).unwrap();
        let m =
            crate::ignore::Matcher::new(&["**/*.key", "logs", "!logs/keep.me", "deps"]).unwrap();
        let mut got = super::ignored_paths(tmp.path(), &m);
        got.sort();
        let want: Vec<std::path::PathBuf> = ["a/x.key", "deps", "logs/1.log", "top.key"]
            .iter()
            .map(Into::into)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn globs_match_like_filepath_match() {
        assert!(glob_match(b"*.txt", b"a.txt"));
        assert!(!glob_match(b"*.txt", b"a.txt.bak"));
        assert!(glob_match(b"f?le[0-9]", b"file7"));
        assert!(!glob_match(b"[!a]*", b"abc"));
        assert!(glob_match(b"\\*", b"*"));
    }

    #[test]
    fn glob_match_is_iterative_and_polynomial() {
        let pat = format!("{}y", "*".repeat(5000));
        assert!(glob_match(pat.as_bytes(), b"xxxy"));
        assert!(!glob_match(pat.as_bytes(), "x".repeat(200).as_bytes()));
        assert!(glob_match(b"a*[0-9]?\\*", b"abc5z*"));
        assert!(!glob_match(b"a*[!0-9]", b"ab5"));
        assert!(glob_match(b"[ab", b"[ab"));
        assert!(glob_match(b"", b""));
        assert!(!glob_match(b"", b"a"));
        assert!(glob_match(b"**", b""));
    }
}
