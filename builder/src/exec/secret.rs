//! `--secret` values: a file is read only when a step mounts it, and only up to
//! [`MAX_SECRET_SIZE`], so `src=/dev/zero` or a huge file costs nothing until used
//! and then fails fast.

use std::io::Read;
use std::path::PathBuf;

/// BuildKit's limit on one secret (`secrets.MaxSecretSize`): 500 KiB.
pub const MAX_SECRET_SIZE: u64 = 500 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {id}: {}: {source}", path.display())]
    Read {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret {id}: {} is larger than the {} KiB limit for a secret", path.display(), MAX_SECRET_SIZE / 1024)]
    TooLarge { id: String, path: PathBuf },
}

/// Where a secret's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Secret {
    /// Known already (from an environment variable).
    Value(Vec<u8>),
    /// A file, read when a step mounts the secret.
    File(PathBuf),
}

impl Secret {
    /// The value; a file is read now, at most [`MAX_SECRET_SIZE`] bytes.
    pub fn read(&self, id: &str) -> Result<Vec<u8>, SecretError> {
        let path = match self {
            Secret::Value(v) => return Ok(v.clone()),
            Secret::File(p) => p,
        };
        let read_err = |source| SecretError::Read {
            id: id.to_string(),
            path: path.clone(),
            source,
        };
        let f = std::fs::File::open(path).map_err(read_err)?;
        let mut value = Vec::new();
        f.take(MAX_SECRET_SIZE + 1)
            .read_to_end(&mut value)
            .map_err(read_err)?;
        if value.len() as u64 > MAX_SECRET_SIZE {
            return Err(SecretError::TooLarge {
                id: id.to_string(),
                path: path.clone(),
            });
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_is_read_up_to_the_limit_only() {
        let tmp = tempfile::TempDir::new().unwrap();
        let small = tmp.path().join("small");
        std::fs::write(&small, vec![b'a'; MAX_SECRET_SIZE as usize]).unwrap();
        let v = Secret::File(small).read("s").unwrap();
        assert_eq!(v.len() as u64, MAX_SECRET_SIZE);
        let e = Secret::File("/dev/zero".into()).read("z").unwrap_err();
        assert_eq!(
            e.to_string(),
            "secret z: /dev/zero is larger than the 500 KiB limit for a secret"
        );
        let e = Secret::File(tmp.path().join("missing"))
            .read("m")
            .unwrap_err();
        assert!(e.to_string().starts_with("secret m: "), "{e}");
    }
}
