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
        let (head, rest) = peek(BufReader::new(input), 6).map_err(ContextError::Stdin)?;
        let compressed = compression(&head).is_some();
        let stream = io::Cursor::new(head).chain(rest);
        let mut stream = decompress(stream).map_err(ContextError::Stdin)?;
        let (block, rest) = peek(&mut stream, 512).map_err(ContextError::Stdin)?;
        let scratch = store.scratch_dir("context")?;
        if !compressed && !is_tar_header(&block) {
            let mut text = block;
            rest.read_to_end(&mut text).map_err(ContextError::Stdin)?;
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
        unpack::unpack(io::Cursor::new(block).chain(rest), scratch.path(), &opts)?;
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

/// Reads up to `n` bytes (fewer only at the end of input) and returns them with
/// the rest of the reader.
fn peek<R: Read>(mut r: R, n: usize) -> io::Result<(Vec<u8>, R)> {
    let mut buf = vec![0u8; n];
    let mut got = 0;
    while got < n {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok((buf, r))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

fn compression(head: &[u8]) -> Option<Compression> {
    if head.starts_with(&[0x1f, 0x8b]) {
        Some(Compression::Gzip)
    } else if head.starts_with(b"BZh") {
        Some(Compression::Bzip2)
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Some(Compression::Xz)
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Some(Compression::Zstd)
    } else {
        None
    }
}

/// A reader of the uncompressed stream, for the compressions `docker build -`
/// accepts (gzip, bzip2, xz, zstd) or none.
pub fn decompress<'a, R: Read + Send + 'a>(r: R) -> io::Result<Box<dyn Read + Send + 'a>> {
    let (head, rest) = peek(r, 6)?;
    let kind = compression(&head);
    let stream = io::Cursor::new(head).chain(rest);
    Ok(match kind {
        Some(Compression::Gzip) => Box::new(flate2::read::MultiGzDecoder::new(stream)),
        Some(Compression::Bzip2) => Box::new(bzip2::read::MultiBzDecoder::new(stream)),
        Some(Compression::Xz) => Box::new(liblzma::read::XzDecoder::new_multi_decoder(stream)),
        Some(Compression::Zstd) => Box::new(zstd::stream::read::Decoder::new(stream)?),
        None => Box::new(stream),
    })
}

/// Whether a 512-byte block is a tar header: the ustar magic, or a valid checksum
/// (old v7 tars have no magic).
fn is_tar_header(block: &[u8]) -> bool {
    if block.len() < 512 {
        // A tar is at least one header; a short input can only be an empty tar
        // (all zeroes), which is no context either way.
        return false;
    }
    if &block[257..262] == b"ustar" {
        return true;
    }
    let field = String::from_utf8_lossy(&block[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = block
        .iter()
        .enumerate()
        .map(|(i, b)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(*b)
            }
        })
        .sum();
    sum == want
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_tar_headers_and_compressions() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(0);
        h.set_cksum();
        b.append_data(&mut h, "x", io::empty()).unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(is_tar_header(&bytes[..512]));
        assert!(!is_tar_header(&[b'F'; 512]));
        assert_eq!(compression(b"BZh91AY"), Some(Compression::Bzip2));
        assert_eq!(compression(b"FROM x"), None);
    }

    #[test]
    fn decompresses_every_accepted_format() {
        use std::io::Write;
        let data = b"the same bytes in every wrapper".repeat(50);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&data).unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
        bz.write_all(&data).unwrap();
        let mut xz = liblzma::write::XzEncoder::new(Vec::new(), 6);
        xz.write_all(&data).unwrap();
        let wrapped = [
            ("plain", data.clone()),
            ("gzip", gz.finish().unwrap()),
            ("bzip2", bz.finish().unwrap()),
            ("xz", xz.finish().unwrap()),
            ("zstd", zstd::encode_all(&data[..], 3).unwrap()),
        ];
        for (name, bytes) in wrapped {
            let mut out = Vec::new();
            decompress(&bytes[..])
                .unwrap()
                .read_to_end(&mut out)
                .unwrap();
            assert_eq!(out, data, "{name}");
        }
    }
}
