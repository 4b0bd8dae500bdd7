//! A registry as an image source and sink, through [`Client`]'s public calls.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::{BlobOutcome, BlobReader, BlobWrite, ImageSink, ImageSource, Progress, Result};
use oci_vocab::Digest;

use crate::{BlobSource, Client, Descriptor, Manifest, PushOutcome, Reference};

/// A registry, read and written by reference.
#[derive(Clone)]
pub struct Registry {
    client: Arc<Client>,
}

impl Registry {
    pub fn new(client: Arc<Client>) -> Registry {
        Registry { client }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }
}

impl ImageSource for Registry {
    fn manifest<'a>(
        &'a self,
        from: &'a Reference,
        child: Option<&'a Descriptor>,
    ) -> BoxFuture<'a, Result<Manifest>> {
        Box::pin(async move {
            Ok(match child {
                None => self.client.get_manifest(from).await?,
                Some(c) => {
                    self.client
                        .get_manifest(&from.with_reference(None, Some(c.digest.clone())))
                        .await?
                }
            })
        })
    }

    fn read_blob<'a>(
        &'a self,
        from: &'a Reference,
        blob: &'a Descriptor,
        out: &'a mut (dyn std::io::Write + Send),
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move { Ok(self.client.pull_blob(from, blob, out, progress).await?) })
    }

    fn read_blob_unhashed<'a>(
        &'a self,
        from: &'a Reference,
        blob: &'a Descriptor,
        out: &'a mut (dyn std::io::Write + Send),
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            Ok(self
                .client
                .pull_blob_unhashed(from, blob, out, progress)
                .await?)
        })
    }

    fn open_blob<'a>(
        &'a self,
        from: &'a Reference,
        blob: &'a Descriptor,
        offset: u64,
    ) -> BoxFuture<'a, std::io::Result<BlobReader>> {
        Box::pin(async move {
            self.client
                .open_blob(from, &blob.digest, offset)
                .await
                .map_err(std::io::Error::other)
        })
    }

    /// The source repository itself, when the destination is on the same registry.
    fn mount_candidates(&self, from: &Reference, _digest: &Digest, registry: &str) -> Vec<String> {
        if from.registry == registry {
            vec![from.repository.clone()]
        } else {
            Vec::new()
        }
    }
}

/// A source's blob as [`Client::push_blob`] reads it, counting into `progress`.
struct Upload<'a> {
    source: &'a dyn ImageSource,
    from: &'a Reference,
    blob: &'a Descriptor,
    progress: Progress,
}

impl BlobSource for Upload<'_> {
    fn open(&self, offset: u64) -> BoxFuture<'_, std::io::Result<BlobReader>> {
        Box::pin(async move {
            let r = self.source.open_blob(self.from, self.blob, offset).await?;
            // A retry starts again from where the registry stands.
            (self.progress)(offset);
            Ok(Box::new(Counted {
                inner: r,
                at: offset,
                progress: self.progress.clone(),
            }) as BlobReader)
        })
    }
}

struct Counted {
    inner: BlobReader,
    at: u64,
    progress: Progress,
}

impl tokio::io::AsyncRead for Counted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let res = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Ok(())) = &res {
            let n = (buf.filled().len() - before) as u64;
            if n > 0 {
                self.at += n;
                (self.progress)(self.at);
            }
        }
        res
    }
}

impl ImageSink for Registry {
    fn has_blob<'a>(
        &'a self,
        to: &'a Reference,
        blob: &'a Descriptor,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.client.has_blob(to, blob).await?) })
    }

    fn has_manifest<'a>(
        &'a self,
        to: &'a Reference,
        digest: &'a Digest,
    ) -> BoxFuture<'a, Result<bool>> {
        Box::pin(async move { Ok(self.client.has_manifest(to, digest).await?) })
    }

    fn manifest_digest<'a>(&'a self, to: &'a Reference) -> BoxFuture<'a, Option<Digest>> {
        Box::pin(async move { self.client.manifest_digest(to).await.ok() })
    }

    /// Skips a blob the repository has (one HEAD), else mounts or uploads it.
    fn write_blob<'a>(
        &'a self,
        to: &'a Reference,
        w: BlobWrite<'a>,
    ) -> BoxFuture<'a, Result<BlobOutcome>> {
        Box::pin(async move {
            let upload = Upload {
                source: w.source,
                from: w.from,
                blob: w.blob,
                progress: w.progress.clone(),
            };
            Ok(
                match self
                    .client
                    .push_blob(to, w.blob, &upload, w.mount_from)
                    .await?
                {
                    PushOutcome::Exists => BlobOutcome::Exists,
                    PushOutcome::Mounted { from } => BlobOutcome::Mounted { from },
                    PushOutcome::Uploaded { chunks } => BlobOutcome::Written {
                        chunks,
                        unpacked: false,
                    },
                },
            )
        })
    }

    fn write_manifest<'a>(
        &'a self,
        to: &'a Reference,
        m: &'a Manifest,
        _upstream_index: Option<&'a Digest>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.client.put_manifest(to, m).await?;
            Ok(())
        })
    }
}
