//! Streaming an archive to a path the user named: a regular file is written beside
//! its target and renamed over it, so a failure leaves no partial archive; a
//! device or FIFO is written into, never replaced.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

/// Why the destination could not be written (each names its path).
#[derive(Debug, thiserror::Error)]
pub enum WriteToError {
    #[error("invalid destination file: {}: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("destination file {} is a directory", path.display())]
    Directory { path: PathBuf },
    /// `what` is the action, e.g. "opening", "writing".
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// How an archive reaches an existing `dest`.
enum Dest {
    /// A regular file (or none yet): written beside it and renamed over it, so a
    /// reader never sees half an archive. Through a symlink, the link's target.
    Replace(PathBuf),
    /// Anything else that is not a directory: opened and written in place.
    Into,
}

impl Dest {
    fn of(path: &Path) -> Result<Dest, WriteToError> {
        let link = std::fs::symlink_metadata(path)
            .ok()
            .is_some_and(|m| m.file_type().is_symlink());
        match std::fs::metadata(path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(if link {
                Dest::Into
            } else {
                Dest::Replace(path.into())
            }),
            Err(source) => Err(WriteToError::Invalid {
                path: path.into(),
                source,
            }),
            Ok(m) if m.is_dir() => Err(WriteToError::Directory { path: path.into() }),
            Ok(m) if m.is_file() && link => Ok(Dest::Replace(
                std::fs::canonicalize(path).map_err(io("resolving", path))?,
            )),
            Ok(m) if m.is_file() => Ok(Dest::Replace(path.into())),
            Ok(_) => Ok(Dest::Into),
        }
    }
}

fn io<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(std::io::Error) -> WriteToError + 'p {
    move |source| WriteToError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Streams what `write` writes to `path` (see the module docs); the writer's
/// errors pass through as they are.
pub fn write_to_path<E: From<WriteToError>>(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> Result<(), E>,
) -> Result<(), E> {
    match Dest::of(path)? {
        Dest::Replace(path) => {
            let dir = path
                .parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            let tmp =
                tempfile::NamedTempFile::new_in(dir).map_err(io("creating a file in", dir))?;
            let mut w = BufWriter::new(tmp.as_file());
            write(&mut w)?;
            w.flush().map_err(io("writing", &path))?;
            drop(w);
            tmp.as_file().sync_all().map_err(io("writing", &path))?;
            tmp.persist(&path)
                .map_err(|e| io("writing", &path)(e.error))?;
        }
        Dest::Into => {
            // A device, FIFO or dangling symlink: opened and written, as buildx's
            // os.Create does; never renamed over.
            let f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)
                .map_err(io("opening", path))?;
            let mut w = BufWriter::new(f);
            write(&mut w)?;
            w.flush().map_err(io("writing", path))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    enum E {
        Dest(WriteToError),
        Writer,
    }
    impl From<WriteToError> for E {
        fn from(e: WriteToError) -> E {
            E::Dest(e)
        }
    }

    #[test]
    fn a_failed_writer_leaves_the_old_file_and_a_directory_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("out.tar");
        std::fs::write(&path, b"old").expect("write");
        let r = write_to_path(&path, |w| {
            w.write_all(b"half").map_err(|_| E::Writer)?;
            Err(E::Writer)
        });
        assert!(matches!(r, Err(E::Writer)));
        assert_eq!(std::fs::read(&path).expect("read"), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).expect("ls").count(), 1);
        let r = write_to_path(dir.path(), |_| Ok::<(), E>(()));
        assert!(
            matches!(r, Err(E::Dest(WriteToError::Directory { .. }))),
            "{r:?}"
        );
    }
}
