//! The build context: what `docker build CONTEXT` sends. A directory; `-`, a tar on
//! standard input (plain, gzip, bzip2, xz or zstd), extracted into the store's
//! scratch space with the root-confined unpacker; or, when standard input is not
//! an archive, a Dockerfile and no context at all (`docker build - < Dockerfile`).
//!
//! Which files of the context a build sees is decided by `<Dockerfile>.dockerignore`
//! next to the Dockerfile when there is one, else `.dockerignore` at the context
//! root. As in BuildKit, the Dockerfile and ignore file are read whatever the ignore
//! rules say; COPY sees them only if the rules let it.

use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use layer_cache::codec::{self, Codec};
use layer_cache::snapshot::ScratchDir;
use layer_cache::unpack::{self, UnpackOptions, WhiteoutMode};
use layer_cache::{Store, StoreError};

use crate::ignore::{read_ignore_file, Matcher, PatternError};

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("build context {}: {source}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("build context {} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    #[error("reading the build context from standard input: {0}")]
    Stdin(#[source] io::Error),
    #[error("extracting the build context from standard input: {0}")]
    Unpack(#[from] unpack::UnpackError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("reading {}: {source}", path.display())]
    ReadIgnore {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{}: {source}", path.display())]
    IgnorePattern {
        path: PathBuf,
        #[source]
        source: PatternError,
    },
}

/// Where a build's files come from.
pub struct Context {
    dir: PathBuf,
    /// Owns an extracted or empty context; removed on drop.
    _scratch: Option<ScratchDir>,
    /// The Dockerfile, when standard input held one instead of a context.
    dockerfile: Option<String>,
}

impl Context {
    /// A context directory.
    pub fn dir(path: &Path) -> Result<Context, ContextError> {
        let dir = path.canonicalize().map_err(|source| ContextError::Open {
            path: path.to_path_buf(),
            source,
        })?;
        if !dir.is_dir() {
            return Err(ContextError::NotADirectory(path.to_path_buf()));
        }
        Ok(Context {
            dir,
            _scratch: None,
            dockerfile: None,
        })
    }

    /// `-`: a (possibly compressed) tar, extracted into the store's scratch space;
    /// anything else is taken as the Dockerfile, with an empty context.
    pub fn stdin<R: Read + Send>(store: &Store, input: R) -> Result<Context, ContextError> {
        let (codec, mut stream) = codec::decompress(BufReader::new(input), codec::ARCHIVE)
            .map_err(ContextError::Stdin)?;
        let (block, mut stream) = codec::peek(&mut stream, 512).map_err(ContextError::Stdin)?;
        let scratch = store.scratch_dir("context")?;
        if codec == Codec::Plain && !codec::is_tar_header(&block) {
            let mut text = Vec::new();
            stream.read_to_end(&mut text).map_err(ContextError::Stdin)?;
            let text = String::from_utf8_lossy(&text).into_owned();
            return Ok(Context {
                dir: scratch.path().to_path_buf(),
                _scratch: Some(scratch),
                dockerfile: Some(text),
            });
        }
        let opts = UnpackOptions {
            whiteouts: WhiteoutMode::Apply,
            // Owners are reset by COPY anyway; modes are kept.
            preserve_owner: false,
            same_permissions: true,
        };
        unpack::unpack(stream, scratch.path(), &opts)?;
        Ok(Context {
            dir: scratch.path().to_path_buf(),
            _scratch: Some(scratch),
            dockerfile: None,
        })
    }

    /// The directory COPY reads.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The Dockerfile standard input held, for `docker build - < Dockerfile`.
    pub fn stdin_dockerfile(&self) -> Option<&str> {
        self.dockerfile.as_deref()
    }

    /// The ignore rules for a build with `dockerfile` (a path on disk, when the
    /// Dockerfile is a file): `<dockerfile>.dockerignore` beside it wins over the
    /// context's `.dockerignore`. `None` when neither exists.
    pub fn ignore(&self, dockerfile: Option<&Path>) -> Result<Option<Matcher>, ContextError> {
        let mut candidates = Vec::new();
        if let Some(df) = dockerfile {
            let mut name = df.as_os_str().to_owned();
            name.push(".dockerignore");
            candidates.push(PathBuf::from(name));
        }
        candidates.push(self.dir.join(".dockerignore"));
        for path in candidates {
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let patterns = read_ignore_file(&String::from_utf8_lossy(&bytes));
                    return Matcher::new(&patterns)
                        .map(Some)
                        .map_err(|source| ContextError::IgnorePattern { path, source });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => return Err(ContextError::ReadIgnore { path, source }),
            }
        }
        Ok(None)
    }
}

/// A local directory `--build-context`: read like the build context, through the
/// `.dockerignore` at its own root (as BuildKit loads a named local context).
#[derive(Debug)]
pub struct NamedDir {
    pub dir: PathBuf,
    pub dockerignore: Option<Matcher>,
}

impl NamedDir {
    pub fn open(path: &Path) -> Result<NamedDir, ContextError> {
        let ctx = Context::dir(path)?;
        let dockerignore = ctx.ignore(None)?;
        Ok(NamedDir {
            dir: ctx.dir,
            dockerignore,
        })
    }
}
