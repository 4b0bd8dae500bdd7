//! What ADD does beyond COPY, following BuildKit's `dispatchCopy` and file backend:
//!
//! * A local source that is a tar (plain, gzip, bzip2, xz or zstd, recognised by its
//!   content, never its name) is extracted into the destination directory unless
//!   `--unpack=false`. Entries keep the archive's modes and owners; `--chown`
//!   overrides owners, `--chmod` does not apply. Extraction is root-confined
//!   ([`layer_cache::unpack`]); whiteouts in the archive become overlay whiteouts, so
//!   the snapshot and the layer tar agree.
//! * An `http(s)://` source is downloaded, streamed to disk and hashed on the way
//!   (`--checksum` is checked before anything reaches the layer), as a 0600 file named
//!   after the URL path with its mtime from `Last-Modified` (else the epoch). It is not
//!   extracted unless `--unpack=true`. A URL is fetched once per build into a
//!   [`Download`] (the step cache keys the step by its content before the step runs).
//!   Its ETag / Last-Modified and digest are remembered in the store, so a later build
//!   can [`revalidate`] it: a 304 confirms the remembered content without a body.
//! * A git source (`<repo>#<ref>:<subdir>`) is resolved and checked out by
//!   [`super::git`]; its files (or the subdirectory's) are copied into the destination
//!   directory, without `.git` unless `--keep-git-dir=true`.

use std::collections::{BTreeSet, HashSet};
use std::fs::File;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use layer_cache::codec;
use layer_cache::snapshot::ScratchDir;
use layer_cache::unpack::{self, UnpackError, UnpackOptions, WhiteoutMode};
use layer_cache::url_cache::UrlMeta;
use layer_cache::{Digest, Store, StoreError};

use super::fetch::{Fetch, FetchRequest, FetchResponse};
use sha2::Digest as _;

use super::copy::{self, CopyError, CopySpec};
use super::merged;

#[derive(Debug, thiserror::Error)]
pub enum AddError {
    #[error(transparent)]
    Copy(#[from] CopyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Git(#[from] super::git::GitError),
    #[error("source can't be a URL for COPY: {0}")]
    CopyUrl(String),
    #[error("source can't be a git ref for COPY: {0}")]
    CopyGit(String),
    #[error("checksum can't be specified for multiple sources")]
    ChecksumManySources,
    #[error("checksum requires HTTP(S) or Git sources, not {0:?}")]
    ChecksumNotUrl(String),
    #[error("invalid --checksum {0:?}: expected sha256:, sha384: or sha512: and a hex digest")]
    BadChecksum(String),
    #[error("downloading {url}: {message}")]
    Fetch { url: String, message: String },
    #[error("downloading {url}: this build was given no HTTP client")]
    NoHttp { url: String },
    #[error("downloading {url}: invalid response status {status}")]
    Status { url: String, status: u16 },
    #[error(
        "downloading {url}: the server changed the content without changing its {validator}: \
         this build's cache key used the remembered content {remembered}, the body is now \
         {fetched}; build again to use the new content"
    )]
    ChangedUnderValidator {
        url: String,
        validator: String,
        remembered: String,
        fetched: String,
    },
    #[error("digest mismatch for {url}: {actual} (expected: {expected})")]
    Checksum {
        url: String,
        expected: String,
        actual: String,
    },
    #[error("extracting {archive} into {dest}: {source}")]
    Unpack {
        archive: String,
        dest: String,
        #[source]
        source: UnpackError,
    },
    #[error("extracting {archive}: entry {entry:?} would write through symlink {link} of the image, which is not supported yet")]
    ThroughImageSymlink {
        archive: String,
        entry: String,
        link: String,
    },
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AddError + '_ {
    move |source| AddError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// `http://` or `https://` and not a git repository (BuildKit's `isHTTPSource`).
pub fn is_http(src: &str) -> bool {
    (src.starts_with("http://") || src.starts_with("https://")) && !is_git(src)
}

/// Sources BuildKit would fetch with git: `git@host:repo`, `git://`, `ssh://`, and
/// http(s) URLs whose path ends in `.git` (optionally with a `#ref` fragment).
pub fn is_git(src: &str) -> bool {
    if src.starts_with("git@") || src.starts_with("git://") || src.starts_with("ssh://") {
        return true;
    }
    if let Some(rest) = src
        .strip_prefix("http://")
        .or_else(|| src.strip_prefix("https://"))
    {
        let path = rest.split(['#', '?']).next().unwrap_or_default();
        return path.trim_end_matches('/').ends_with(".git");
    }
    false
}

/// Checks `--checksum` the way BuildKit's frontend does, before anything runs.
pub fn validate_checksum(sources: &[String], checksum: &str) -> Result<(), AddError> {
    if sources.len() != 1 {
        return Err(AddError::ChecksumManySources);
    }
    if is_git(&sources[0]) {
        return Ok(super::git::validate_checksum(checksum)?);
    }
    if !is_http(&sources[0]) {
        return Err(AddError::ChecksumNotUrl(sources[0].clone()));
    }
    Expected::parse(checksum).map(|_| ())
}

/// A parsed `--checksum`: algorithm and lowercase hex.
struct Expected {
    algo: &'static str,
    hex: String,
}

impl Expected {
    fn parse(s: &str) -> Result<Expected, AddError> {
        let bad = || AddError::BadChecksum(s.to_string());
        let (algo, hex) = s.split_once(':').ok_or_else(bad)?;
        let (algo, len) = match algo {
            "sha256" => ("sha256", 64),
            "sha384" => ("sha384", 96),
            "sha512" => ("sha512", 128),
            _ => return Err(bad()),
        };
        if hex.len() != len || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(Expected {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

impl Hasher {
    fn new(algo: &str) -> Hasher {
        match algo {
            "sha384" => Hasher::Sha384(sha2::Sha384::new()),
            "sha512" => Hasher::Sha512(sha2::Sha512::new()),
            _ => Hasher::Sha256(sha2::Sha256::new()),
        }
    }
    fn update(&mut self, b: &[u8]) {
        match self {
            Hasher::Sha256(h) => h.update(b),
            Hasher::Sha384(h) => h.update(b),
            Hasher::Sha512(h) => h.update(b),
        }
    }
    fn finish(self) -> String {
        match self {
            Hasher::Sha256(h) => format!("sha256:{}", hex::encode(h.finalize())),
            Hasher::Sha384(h) => format!("sha384:{}", hex::encode(h.finalize())),
            Hasher::Sha512(h) => format!("sha512:{}", hex::encode(h.finalize())),
        }
    }
}

/// A URL's body downloaded into a scratch directory of the store (removed when
/// dropped), as the 0600 file ADD copies, with what the step cache keys it by.
pub struct Download {
    pub url: String,
    dir: ScratchDir,
    /// The file name the URL gives ([`url_file_name`]).
    pub name: String,
    /// sha256 of the body, `sha256:<hex>`.
    pub digest: String,
    /// `Last-Modified` in Unix seconds (0 when absent): the file's mtime.
    pub mtime: i64,
}

impl Download {
    pub fn path(&self) -> PathBuf {
        self.dir.path().join(&self.name)
    }

    pub fn content(&self) -> UrlContent {
        UrlContent {
            url: self.url.clone(),
            name: self.name.clone(),
            digest: self.digest.clone(),
            mtime: self.mtime,
        }
    }
}

/// What the step cache keys a URL by, whether its body is here ([`Download`]) or a
/// 304 confirmed the remembered one ([`Unchanged`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlContent {
    pub url: String,
    pub name: String,
    /// `sha256:<hex>` of the body.
    pub digest: String,
    /// The file's mtime (from `Last-Modified`, else 0).
    pub mtime: i64,
}

/// A URL the server said is unchanged since the remembered download.
#[derive(Debug, Clone)]
pub struct Unchanged {
    pub content: UrlContent,
    /// The validator it was checked with, for messages (`ETag "…"`).
    pub validator: String,
}

pub enum Revalidated {
    Unchanged(Unchanged),
    /// The server sent a body (the content changed, or it ignored the condition).
    Fetched(Download),
}

/// Downloads `url` into a fresh scratch directory, streamed and hashed while written;
/// with `checksum` the body must match it. Its validators are remembered in the store.
pub fn fetch(
    store: &Store,
    http: &dyn Fetch,
    url: &str,
    checksum: Option<&str>,
) -> Result<Download, AddError> {
    let resp = get(http, url, None)?;
    save(store, url, resp, checksum)
}

/// Asks whether `url` still has the content `meta` remembers: `If-None-Match` with its
/// ETag, else `If-Modified-Since` with its Last-Modified. A 304 costs no body; any
/// other success is downloaded as [`fetch`] does.
pub fn revalidate(
    store: &Store,
    http: &dyn Fetch,
    url: &str,
    meta: &UrlMeta,
) -> Result<Revalidated, AddError> {
    let resp = get(http, url, Some(meta))?;
    if resp.status != 304 {
        return save(store, url, resp, None).map(Revalidated::Fetched);
    }
    let validator = match (&meta.etag, &meta.last_modified) {
        (Some(e), _) => format!("ETag {e}"),
        (None, Some(lm)) => format!("Last-Modified ({lm})"),
        (None, None) => "validators".to_string(),
    };
    Ok(Revalidated::Unchanged(Unchanged {
        content: remembered(url, meta),
        validator,
    }))
}

/// The content `meta` remembers for `url`.
pub fn remembered(url: &str, meta: &UrlMeta) -> UrlContent {
    UrlContent {
        url: url.to_string(),
        name: meta.name.clone(),
        digest: meta.digest.to_string(),
        mtime: meta
            .last_modified
            .as_deref()
            .and_then(parse_http_date)
            .unwrap_or(0),
    }
}

/// Streams a successful response into a scratch directory and remembers its validators
/// (or forgets old ones when it has none).
fn save(
    store: &Store,
    url: &str,
    resp: FetchResponse,
    checksum: Option<&str>,
) -> Result<Download, AddError> {
    let dir = store.scratch_dir("add-url")?;
    let got = download(url, resp, dir.path(), checksum)?;
    if got.etag.is_some() || got.last_modified.is_some() {
        // A digest we wrote ourselves always parses; a failure only costs revalidation.
        if let Ok(digest) = got.sha256.parse::<Digest>() {
            store.set_url_meta(&UrlMeta {
                url: url.to_string(),
                etag: got.etag.clone(),
                last_modified: got.last_modified.clone(),
                digest,
                name: got.name.clone(),
                size: got.size,
            })?;
        }
    } else {
        store.remove_url_meta(url)?;
    }
    Ok(Download {
        url: url.to_string(),
        dir,
        name: got.name,
        digest: got.sha256,
        mtime: got.mtime,
    })
}

/// Checks an earlier download against `--checksum` (re-hashing the local file when
/// the algorithm is not sha256).
pub fn verify(dl: &Download, checksum: &str) -> Result<(), AddError> {
    let expected = Expected::parse(checksum)?;
    let want = format!("{}:{}", expected.algo, expected.hex);
    let actual = if expected.algo == "sha256" {
        dl.digest.clone()
    } else {
        let path = dl.path();
        let mut f = File::open(&path).map_err(io(&path))?;
        let mut h = Hasher::new(expected.algo);
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => h.update(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io(&path)(e)),
            }
        }
        h.finish()
    };
    if actual != want {
        return Err(AddError::Checksum {
            url: redact(&dl.url),
            expected: want,
            actual,
        });
    }
    Ok(())
}

/// The ADD step's inputs, as `copy_step` resolved them.
pub struct AddSpec<'a> {
    /// The COPY-equivalent spec (context sources, destination, owner, chmod, upper).
    pub copy: CopySpec<'a>,
    /// `--chown` was given: it then overrides owners from archives.
    pub chown_given: bool,
    pub unpack: Option<bool>,
    pub checksum: Option<&'a str>,
    /// URLs already downloaded in this build (already checked against `checksum`);
    /// others are fetched here.
    pub downloads: &'a [std::sync::Arc<Download>],
    /// Git sources checked out for this step, by source.
    pub git: &'a [(String, super::git::Checkout)],
    /// Fetches URLs not in `downloads`.
    pub http: Option<&'a dyn Fetch>,
}

/// Performs ADD into `spec.copy.upper`: what is not an archive is copied as COPY
/// would (heredocs included), then archives are extracted and URLs fetched, in
/// source order.
pub fn add(store: &Store, spec: &AddSpec) -> Result<(), AddError> {
    let base = &spec.copy;
    let many =
        base.sources.len() + base.contents.len() > 1 || base.sources.iter().any(|s| has_glob(s));
    // A download is copied on its own; with several sources the destination is a
    // directory, so say so.
    let dir_dest = if many && !base.dest.ends_with('/') {
        format!("{}/", base.dest)
    } else {
        base.dest.to_string()
    };
    let local: Vec<String> = base
        .sources
        .iter()
        .filter(|s| !is_http(s) && !is_git(s))
        .cloned()
        .collect();
    let selected = copy::select(base.src_layers, &local, &base.filter)?;
    // A file named by a source itself is an archive candidate (BuildKit unpacks only
    // those, never archives found inside a copied directory).
    let (archives, rest): (Vec<_>, Vec<_>) = selected.into_iter().partition(|e| {
        spec.unpack != Some(false)
            && e.whole
            && e.kind == copy::EntryKind::File
            && is_archive(&e.real)
    });
    // Beside an archive, a URL or a git source (which fill the destination as a
    // directory), several sources go into the destination as a directory; plain
    // files alone follow COPY's rules.
    let mixed = many && (!archives.is_empty() || local.len() != base.sources.len());
    if mixed {
        let into_dir = CopySpec {
            dest: &dir_dest,
            chmod: base.chmod.clone(),
            ..*base
        };
        copy::copy_selection(&into_dir, &rest)?;
    } else {
        copy::copy_selection(base, &rest)?;
    }
    let mut archives = archives.into_iter().peekable();
    for src in base.sources {
        if is_git(src) {
            if let Some((_, co)) = spec.git.iter().find(|(s, _)| s == src) {
                copy_checkout(spec, &co.root)?;
            }
            continue;
        }
        if is_http(src) {
            let fetched;
            let dl = match spec.downloads.iter().find(|d| d.url == *src) {
                Some(d) => d.as_ref(),
                None => {
                    let http = spec
                        .http
                        .ok_or_else(|| AddError::NoHttp { url: redact(src) })?;
                    fetched = fetch(store, http, src, spec.checksum)?;
                    &fetched
                }
            };
            let file = dl.path();
            if spec.unpack == Some(true) && is_archive(&file) {
                extract(store, spec, &file, src)?;
            } else {
                copy_download(spec, dl.dir.path(), &dl.name, &dir_dest)?;
            }
            continue;
        }
        // The archives this source matched (select keeps source order).
        while let Some(e) = archives.next_if(|e| matches_source(src, &e.src)) {
            extract(store, spec, &e.real, &e.src.to_string_lossy())?;
        }
    }
    for e in archives {
        extract(store, spec, &e.real, &e.src.to_string_lossy())?;
    }
    Ok(())
}

/// Whether `path` (as select reports it) came from source pattern `src`.
fn matches_source(src: &str, path: &Path) -> bool {
    let Some(pattern) = clean_rel(src) else {
        return false;
    };
    let (p, n): (Vec<_>, Vec<_>) = (pattern.components().collect(), path.components().collect());
    p.len() == n.len()
        && p.iter().zip(&n).all(|(a, b)| {
            copy::glob_match(
                a.as_os_str().as_encoded_bytes(),
                b.as_os_str().as_encoded_bytes(),
            )
        })
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

fn clean_rel(p: &str) -> Option<PathBuf> {
    copy::clean_rel(p)
}

/// Copies a git checkout's contents into the destination, which is a directory (as
/// `COPY <dir>/ <dest>` copies a directory's contents). Owners are `--chown`'s (else
/// root), `--chmod` applies, the commit's mtimes are kept.
fn copy_checkout(spec: &AddSpec, root: &Path) -> Result<(), AddError> {
    let dest = match spec.copy.dest.ends_with('/') {
        true => spec.copy.dest.to_string(),
        false => format!("{}/", spec.copy.dest),
    };
    copy::copy(&CopySpec {
        src_layers: &[root.to_path_buf()],
        sources: &[".".to_string()],
        filter: copy::SourceFilter {
            exclude: spec.copy.filter.exclude,
            ..copy::SourceFilter::default()
        },
        contents: &[],
        dest: &dest,
        chmod: spec.copy.chmod.clone(),
        ..spec.copy
    })?;
    Ok(())
}

/// Copies a downloaded file (its name is literal: glob characters are escaped).
fn copy_download(spec: &AddSpec, dir: &Path, name: &str, dest: &str) -> Result<(), AddError> {
    let literal = if has_glob(name) {
        name.chars()
            .flat_map(|c| {
                let esc = matches!(c, '*' | '?' | '[' | '\\');
                esc.then_some('\\').into_iter().chain([c])
            })
            .collect()
    } else {
        name.to_string()
    };
    copy::copy(&CopySpec {
        src_layers: &[dir.to_path_buf()],
        sources: std::slice::from_ref(&literal),
        filter: copy::SourceFilter::default(),
        contents: &[],
        dest,
        chmod: spec.copy.chmod.clone(),
        ..spec.copy
    })?;
    Ok(())
}

/// Wraps `reader` in the decompressor its first bytes call for (Docker's
/// `DecompressStream`: gzip, bzip2, xz, zstd; anything else is read as is).
fn decompress<'a>(reader: BufReader<File>) -> std::io::Result<Box<dyn Read + Send + 'a>> {
    Ok(codec::decompress(reader, codec::ARCHIVE)?.1)
}

/// BuildKit's `isArchivePath`: a regular file (not followed if a symlink) whose
/// decompressed content starts with a valid tar header.
pub fn is_archive(path: &Path) -> bool {
    let Ok(md) = std::fs::symlink_metadata(path) else {
        return false;
    };
    if !md.is_file() {
        return false;
    }
    let Ok(f) = File::open(path) else {
        return false;
    };
    let Ok(mut r) = decompress(BufReader::new(f)) else {
        return false;
    };
    let mut block = [0u8; 512];
    matches!(codec::read_up_to(&mut r, &mut block), Ok(n) if n == block.len())
        && codec::is_tar_header(&block)
}

/// Extracts the archive at `file` into the destination directory of the upper.
fn extract(store: &Store, spec: &AddSpec, file: &Path, shown: &str) -> Result<(), AddError> {
    let base = &spec.copy;
    let dest_rel = clean_rel(base.dest).unwrap_or_default();
    // The destination is always a directory; make it (and its parents) the way COPY
    // does, keeping the image's owner and mode for those that exist.
    let dest_dir = format!("/{}/", dest_rel.display());
    copy::copy(&CopySpec {
        sources: &[],
        contents: &[],
        dest: &dest_dir,
        chmod: base.chmod.clone(),
        ..*base
    })?;
    let f = File::open(file).map_err(io(file))?;
    // The same caps as a base layer's unpack: a small archive that inflates to
    // gigabytes is stopped before it fills the disk.
    let limits = store.layer_unpack_limits(f.metadata().map_err(io(file))?.len());
    let mirrored = prepare_parents(spec, file, shown, &dest_rel, limits.max_entries)?;
    let root = base.upper.join(&dest_rel);
    let reader = decompress(BufReader::new(f)).map_err(io(file))?;
    let opts = UnpackOptions {
        whiteouts: WhiteoutMode::Overlay,
        preserve_owner: true,
        same_permissions: true,
    };
    // Docker and BuildKit skip an archive's `.` entry: the destination directory
    // keeps its metadata, so put it back after the unpacker applied it.
    let before = root.symlink_metadata().map_err(io(&root))?;
    unpack::unpack_limited(reader, &root, &opts, limits).map_err(|source| AddError::Unpack {
        archive: shown.to_string(),
        dest: dest_dir.clone(),
        source,
    })?;
    std::os::unix::fs::lchown(&root, Some(before.uid()), Some(before.gid())).map_err(io(&root))?;
    std::fs::set_permissions(
        &root,
        std::fs::Permissions::from_mode(before.mode() & 0o7777),
    )
    .map_err(io(&root))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(before.mtime().max(0) as u64);
    File::open(&root)
        .and_then(|d| d.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t)))
        .map_err(io(&root))?;
    if spec.chown_given {
        chown_tree(&root, &mirrored, base.owner)?;
    }
    Ok(())
}

/// Directories an archive writes into without naming them must keep the image's
/// owner and mode, as they would in BuildKit where the archive is applied onto the
/// image itself: those that exist in the image are created in the upper first. A
/// relative symlink of the image on the way (`lib -> usr/lib`) is copied into the
/// upper so the unpacker follows it, as BuildKit follows it; an absolute one, or a
/// directory entry landing on an image symlink, is refused rather than shadowed.
/// Returns the mirrored directories the archive does not name (relative to the
/// destination). Costs one extra decompression pass when the image is not empty.
fn prepare_parents(
    spec: &AddSpec,
    file: &Path,
    shown: &str,
    dest_rel: &Path,
    max_entries: u64,
) -> Result<BTreeSet<PathBuf>, AddError> {
    let base = &spec.copy;
    let mut walk = ParentWalk {
        spec,
        shown,
        dest_rel,
        layers: std::iter::once(base.upper.to_path_buf())
            .chain(base.dest_layers.iter().cloned())
            .collect(),
        done: HashSet::new(),
        mirrored: BTreeSet::new(),
    };
    if base.dest_layers.is_empty() {
        return Ok(walk.mirrored);
    }
    let f = File::open(file).map_err(io(file))?;
    let reader = decompress(BufReader::new(f)).map_err(io(file))?;
    let mut archive = tar::Archive::new(reader);
    let mut named = HashSet::new();
    let Ok(entries) = archive.entries() else {
        return Ok(walk.mirrored);
    };
    for (n, entry) in entries.enumerate() {
        // A broken or hostile archive (too many entries included) is reported
        // by the unpacker itself.
        if n as u64 >= max_entries {
            break;
        }
        let Ok(entry) = entry else { break };
        let Ok(path) = entry.path() else { continue };
        let Some(rel) = clean_rel(&path.to_string_lossy()) else {
            continue;
        };
        if entry.header().entry_type().is_dir() {
            walk.leaf_dir(&rel)?;
            named.insert(rel.clone());
        }
        if let Some(parent) = rel.parent() {
            walk.parents(&rel, parent)?;
        }
    }
    walk.mirrored.retain(|p| !named.contains(p));
    Ok(walk.mirrored)
}

struct ParentWalk<'s, 'a> {
    spec: &'s AddSpec<'a>,
    shown: &'s str,
    dest_rel: &'s Path,
    /// The upper, then the image's snapshots: the view the archive lands on.
    layers: Vec<PathBuf>,
    /// Parent paths (as the archive writes them) already prepared.
    done: HashSet<PathBuf>,
    mirrored: BTreeSet<PathBuf>,
}

impl ParentWalk<'_, '_> {
    fn image_md(&self, rel: &Path) -> Option<std::fs::Metadata> {
        merged::lookup(&self.layers, &self.dest_rel.join(rel))
            .and_then(|p| std::fs::symlink_metadata(p).ok())
    }

    fn through_symlink(&self, entry: &Path, link: &Path) -> AddError {
        AddError::ThroughImageSymlink {
            archive: self.shown.to_string(),
            entry: entry.to_string_lossy().into_owned(),
            link: format!("/{}", self.dest_rel.join(link).display()),
        }
    }

    /// A directory entry on an image symlink: BuildKit writes through it; refuse.
    fn leaf_dir(&self, rel: &Path) -> Result<(), AddError> {
        match self.image_md(rel) {
            Some(m) if m.file_type().is_symlink() => Err(self.through_symlink(rel, rel)),
            _ => Ok(()),
        }
    }

    /// Prepares the directories `entry` is written under, resolving image symlinks.
    fn parents(&mut self, entry: &Path, parent: &Path) -> Result<(), AddError> {
        if parent.as_os_str().is_empty() || !self.done.insert(parent.to_path_buf()) {
            return Ok(());
        }
        let mut pending: std::collections::VecDeque<std::ffi::OsString> = parent
            .components()
            .map(|c| c.as_os_str().to_os_string())
            .collect();
        let mut resolved = PathBuf::new();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            if c == ".." {
                if !resolved.pop() {
                    // Leaves the destination: the unpacker refuses it.
                    return Ok(());
                }
                continue;
            }
            if c.is_empty() || c == "." {
                continue;
            }
            let next = resolved.join(&c);
            match self.image_md(&next) {
                Some(m) if m.is_dir() => {
                    self.mirror_dir(&next)?;
                    resolved = next;
                }
                Some(m) if m.file_type().is_symlink() => {
                    let real = merged::lookup(&self.layers, &self.dest_rel.join(&next))
                        .ok_or_else(|| self.through_symlink(entry, &next))?;
                    let target = std::fs::read_link(&real).map_err(io(&real))?;
                    hops += 1;
                    if target.is_absolute() || hops > 40 {
                        return Err(self.through_symlink(entry, &next));
                    }
                    self.copy_symlink(&next, &real, &m)?;
                    for t in target.components().rev() {
                        pending.push_front(t.as_os_str().to_os_string());
                    }
                }
                // Missing: the unpacker creates it; not a directory: it reports that.
                _ => return Ok(()),
            }
        }
        Ok(())
    }

    fn mirror_dir(&mut self, rel: &Path) -> Result<(), AddError> {
        let base = &self.spec.copy;
        if base
            .upper
            .join(self.dest_rel)
            .join(rel)
            .symlink_metadata()
            .is_ok()
        {
            return Ok(());
        }
        copy::copy(&CopySpec {
            sources: &[],
            contents: &[],
            dest: &format!("/{}/", self.dest_rel.join(rel).display()),
            chmod: base.chmod.clone(),
            ..*base
        })?;
        self.mirrored.insert(rel.to_path_buf());
        Ok(())
    }

    /// Puts the image's symlink into the upper (same target, owner and time).
    fn copy_symlink(
        &self,
        rel: &Path,
        real: &Path,
        md: &std::fs::Metadata,
    ) -> Result<(), AddError> {
        let at = self.spec.copy.upper.join(self.dest_rel).join(rel);
        if at.symlink_metadata().is_ok() {
            return Ok(());
        }
        let target = std::fs::read_link(real).map_err(io(real))?;
        std::os::unix::fs::symlink(&target, &at).map_err(io(&at))?;
        std::os::unix::fs::lchown(&at, Some(md.uid()), Some(md.gid())).map_err(io(&at))?;
        crate::mtime::set(&at, md.mtime(), md.mtime_nsec()).map_err(io(&at))?;
        Ok(())
    }
}

/// `--chown` on an archive: every extracted entry gets the owner, except the image's
/// directories the archive only passed through (`keep`, relative to `root`).
/// `chown` clears set-id bits, so the mode is put back afterwards.
fn chown_tree(root: &Path, keep: &BTreeSet<PathBuf>, owner: (u32, u32)) -> Result<(), AddError> {
    // A stack of directories still to visit: depth costs heap, not call stack.
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        let dir = root.join(&rel);
        let rd = std::fs::read_dir(&dir).map_err(io(&dir))?;
        for e in rd {
            let e = e.map_err(io(&dir))?;
            let p = e.path();
            let child = rel.join(e.file_name());
            let md = p.symlink_metadata().map_err(io(&p))?;
            if md.is_dir() {
                todo.push(child.clone());
            }
            if keep.contains(&child) {
                continue;
            }
            // Overlay whiteouts (0/0 character devices) carry no ownership.
            if md.file_type().is_char_device() && md.rdev() == 0 {
                continue;
            }
            std::os::unix::fs::lchown(&p, Some(owner.0), Some(owner.1)).map_err(io(&p))?;
            if !md.file_type().is_symlink() && md.mode() & 0o6000 != 0 {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(md.mode() & 0o7777))
                    .map_err(io(&p))?;
            }
        }
    }
    Ok(())
}

/// `url` for messages: a password in it is replaced, as BuildKit does.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or_default();
            let shown = if userinfo.contains(':') {
                format!("{user}:xxxxx")
            } else {
                user.to_string()
            };
            format!("{scheme}://{shown}@{host}{}", &rest[end..])
        }
        None => url.to_string(),
    }
}

/// The file name BuildKit gives a download: the last element of the URL's path,
/// percent-decoded, or `__unnamed__`.
pub fn url_file_name(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split(['#', '?']).next().unwrap_or_default();
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    let decoded = percent_decode(path);
    let trimmed = decoded.trim_end_matches('/');
    match trimmed.rsplit('/').next() {
        Some(base) if !base.is_empty() && base != "." && base != ".." => base.to_string(),
        _ => "__unnamed__".to_string(),
    }
}

fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// What [`download`] wrote.
struct Downloaded {
    name: String,
    sha256: String,
    mtime: i64,
    size: u64,
    etag: Option<String>,
    last_modified: Option<String>,
}

/// `url` without its userinfo, and the user and password it held (percent-decoded).
fn split_userinfo(url: &str) -> (String, Option<(String, String)>) {
    let plain = layer_cache::url_cache::strip_userinfo(url);
    if plain == url {
        return (plain, None);
    }
    let userinfo = url
        .split_once("://")
        .map(|(_, rest)| &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())])
        .and_then(|authority| authority.rsplit_once('@'))
        .map(|(userinfo, _)| userinfo)
        .unwrap_or_default();
    let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    (
        plain,
        Some((percent_decode(user), percent_decode(password))),
    )
}

/// GETs `url`, conditionally when `validators` are given; a 2xx answer, or a 304 to a
/// conditional request.
fn get(
    http: &dyn Fetch,
    url: &str,
    validators: Option<&UrlMeta>,
) -> Result<FetchResponse, AddError> {
    // As Go's client does for BuildKit: userinfo becomes Basic auth, never part of the
    // request line.
    let (plain, credentials) = split_userinfo(url);
    let mut req = FetchRequest {
        url: &plain,
        basic_auth: credentials.as_ref().map(|(u, p)| (u.as_str(), p.as_str())),
        ..FetchRequest::default()
    };
    if let Some(m) = validators {
        // As BuildKit: If-Modified-Since only when there is no ETag.
        match (&m.etag, &m.last_modified) {
            (Some(etag), _) => req.if_none_match = Some(etag),
            (None, Some(lm)) => req.if_modified_since = Some(lm),
            (None, None) => {}
        }
    }
    let resp = http.get(&req).map_err(|e| AddError::Fetch {
        url: redact(url),
        message: e.to_string(),
    })?;
    let status = resp.status;
    let not_modified = status == 304 && validators.is_some();
    if !(200..300).contains(&status) && !not_modified {
        return Err(AddError::Status {
            url: redact(url),
            status,
        });
    }
    Ok(resp)
}

/// Writes `resp`'s body into `dir` (streamed, hashed on the way) under the URL's file
/// name. On a checksum mismatch the file is removed and an error names both digests.
fn download(
    url: &str,
    resp: FetchResponse,
    dir: &Path,
    checksum: Option<&str>,
) -> Result<Downloaded, AddError> {
    let expected = checksum.map(Expected::parse).transpose()?;
    let fetch_err = |message: String| AddError::Fetch {
        url: redact(url),
        message,
    };
    let etag = resp.etag;
    let last_modified = resp.last_modified;
    let mtime = last_modified
        .as_deref()
        .and_then(parse_http_date)
        .unwrap_or(0);
    let name = url_file_name(url);
    let path = dir.join(&name);
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(io(&path))?;
    // sha256 always (the cache key), the checksum's algorithm too when it differs.
    let mut sha256 = Hasher::new("sha256");
    let mut hasher = expected
        .as_ref()
        .filter(|e| e.algo != "sha256")
        .map(|e| Hasher::new(e.algo));
    let mut body = resp.body;
    let mut buf = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(fetch_err(e.to_string())),
        };
        size += n as u64;
        sha256.update(&buf[..n]);
        if let Some(h) = hasher.as_mut() {
            h.update(&buf[..n]);
        }
        out.write_all(&buf[..n]).map_err(io(&path))?;
    }
    drop(out);
    let sha256 = sha256.finish();
    let actual = hasher.map_or_else(|| sha256.clone(), Hasher::finish);
    if let Some(e) = expected {
        let want = format!("{}:{}", e.algo, e.hex);
        if actual != want {
            let _ = std::fs::remove_file(&path);
            return Err(AddError::Checksum {
                url: redact(url),
                expected: want,
                actual,
            });
        }
    }
    // umask may have narrowed the mode at creation.
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(io(&path))?;
    let f = File::options().write(true).open(&path).map_err(io(&path))?;
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.max(0) as u64);
    f.set_times(std::fs::FileTimes::new().set_accessed(t).set_modified(t))
        .map_err(io(&path))?;
    Ok(Downloaded {
        name,
        sha256,
        mtime,
        size,
        etag,
        last_modified,
    })
}

/// An HTTP date (IMF-fixdate `Sun, 06 Nov 1994 08:49:37 GMT`, RFC 850
/// `Sunday, 06-Nov-94 08:49:37 GMT` or asctime `Sun Nov  6 08:49:37 1994`) as Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    let t = httpdate::parse_http_date(s.trim()).ok()?;
    Some(match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => -(e.duration().as_secs() as i64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_parse_in_all_three_forms() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(
            parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("Sun Nov  6 08:49:37 1994"), Some(784111777));
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn passwords_are_kept_out_of_messages() {
        assert_eq!(redact("https://u:secret@h/f"), "https://u:xxxxx@h/f");
        assert_eq!(
            split_userinfo("https://u%40x:p%3Aw@h:8/f@g?q"),
            (
                "https://h:8/f@g?q".to_string(),
                Some(("u@x".to_string(), "p:w".to_string()))
            )
        );
        assert_eq!(
            split_userinfo("https://h/a@b"),
            ("https://h/a@b".into(), None)
        );
        assert_eq!(
            split_userinfo("http://tok@h/"),
            ("http://h/".into(), Some(("tok".into(), String::new())))
        );
        assert_eq!(redact("https://h/a@b"), "https://h/a@b");
        assert_eq!(redact("http://tok@h/"), "http://tok@h/");
    }

    #[test]
    fn url_file_names_follow_buildkit() {
        assert_eq!(url_file_name("https://h/a/b.tar.gz?x=1#f"), "b.tar.gz");
        assert_eq!(url_file_name("http://h/dir/"), "dir");
        assert_eq!(url_file_name("http://h/"), "__unnamed__");
        assert_eq!(url_file_name("http://h"), "__unnamed__");
        assert_eq!(url_file_name("http://h/a%20b"), "a b");
    }

    #[test]
    fn git_sources_are_told_apart_from_http() {
        assert!(is_git("git@github.com:o/r.git"));
        assert!(is_git("https://github.com/o/r.git#main"));
        assert!(!is_http("https://github.com/o/r.git"));
        assert!(is_http("https://example.com/r.tar.gz"));
    }

    #[test]
    fn checksums_parse_like_digests() {
        let ok = format!("sha256:{}", "ab".repeat(32));
        assert!(Expected::parse(&ok).is_ok());
        assert!(Expected::parse("sha256:abc").is_err());
        assert!(Expected::parse("md5:00").is_err());
    }
}
