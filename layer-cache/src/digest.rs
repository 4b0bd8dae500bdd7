//! Streaming hashers and the verifying reader; the `Digest` type itself lives in
//! `oci-vocab`, shared with the registry client.

use std::io::{self, Read, Write};

use sha2::{Digest as _, Sha256};

pub use oci_vocab::digest::{Digest, DigestError};

/// Counts and hashes bytes as they pass.
#[derive(Default, Clone)]
pub struct Hasher {
    sha: Sha256,
    len: u64,
}

impl Hasher {
    pub fn new() -> Hasher {
        Hasher::default()
    }
    pub fn update(&mut self, data: &[u8]) {
        self.sha.update(data);
        self.len += data.len() as u64;
    }
    pub fn len(&self) -> u64 {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    pub fn finish(self) -> Digest {
        Digest::from_sha256_bytes(&self.finish_bytes())
    }
    /// The sha256 as bytes, for callers hashing many small things that need no
    /// `Digest` (and its string) for each.
    pub fn finish_bytes(self) -> [u8; 32] {
        self.sha.finalize().into()
    }
}

/// A writer that hashes everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Hasher,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        HashingWriter {
            inner,
            hasher: Hasher::new(),
        }
    }
    pub fn finish(self) -> (W, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes everything read through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Hasher,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Hasher::new(),
        }
    }
    pub fn finish(self) -> (R, Digest, u64) {
        let len = self.hasher.len();
        (self.inner, self.hasher.finish(), len)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Reads a blob and fails at EOF when its content does not match the expected digest
/// or size, so a corrupted blob can never be consumed silently to the end.
pub struct VerifyingReader<R> {
    inner: R,
    hasher: Hasher,
    expected: Digest,
    expected_size: Option<u64>,
    done: bool,
}

impl<R: Read> VerifyingReader<R> {
    pub fn new(inner: R, expected: Digest, expected_size: Option<u64>) -> Self {
        VerifyingReader {
            inner,
            hasher: Hasher::new(),
            expected,
            expected_size,
            done: false,
        }
    }
}

impl<R: Read> Read for VerifyingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.hasher.update(&buf[..n]);
            if let Some(size) = self.expected_size {
                if self.hasher.len() > size {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("blob {} is larger than its {} bytes", self.expected, size),
                    ));
                }
            }
            return Ok(n);
        }
        self.done = true;
        let hasher = std::mem::take(&mut self.hasher);
        let len = hasher.len();
        if let Some(size) = self.expected_size {
            if len != size {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("blob {} has {len} bytes, expected {size}", self.expected),
                ));
            }
        }
        let actual = hasher.finish();
        if actual != self.expected {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "blob {} failed verification: content hashes to {actual}",
                    self.expected
                ),
            ));
        }
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifying_reader_catches_corruption() {
        let expected = Digest::of(b"hello");
        let mut ok = VerifyingReader::new(&b"hello"[..], expected.clone(), Some(5));
        let mut out = Vec::new();
        assert!(ok.read_to_end(&mut out).is_ok());
        let mut bad = VerifyingReader::new(&b"hellO"[..], expected.clone(), Some(5));
        let err = bad.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("failed verification"), "{err}");
        let mut short = VerifyingReader::new(&b"hell"[..], expected, Some(5));
        assert!(short
            .read_to_end(&mut out)
            .unwrap_err()
            .to_string()
            .contains("4 bytes"));
    }
}
