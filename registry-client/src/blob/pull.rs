//! Pulling a blob: streamed into a writer, its size and digest checked, a
//! broken or idle connection resumed with a Range request.

use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt};

use tokio_util::bytes::Bytes;

use super::{show_duration, IdleWatch};
use crate::client::Client;
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::transport::http::transport;
use crate::transport::{status_error, Request};
use oci_vocab::Digest;

impl Client {
    /// Streams a blob into `out`, verifying size and digest; a broken connection
    /// resumes with a Range request. `out` is written off the runtime's threads
    /// (in batches, under `block_in_place`), so a slow disk or a layer unpacked
    /// on the way does not hold up other transfers.
    pub async fn pull_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        out: &mut (dyn std::io::Write + Send),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        self.pull_blob_with(r, desc, out, progress, Verify::Digest)
            .await
    }

    /// [`Client::pull_blob`] checking the size only: for a writer that hashes
    /// what it is given and commits nothing that differs from `desc.digest`, so
    /// the blob is hashed once, not twice.
    pub async fn pull_blob_unhashed(
        &self,
        r: &Reference,
        desc: &Descriptor,
        out: &mut (dyn std::io::Write + Send),
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<()> {
        self.pull_blob_with(r, desc, out, progress, Verify::SizeOnly)
            .await
    }

    async fn pull_blob_with(
        &self,
        r: &Reference,
        desc: &Descriptor,
        out: &mut (dyn std::io::Write + Send),
        progress: &(dyn Fn(u64) + Sync),
        verify: Verify,
    ) -> Result<()> {
        let mut sink = Sink::Borrowed {
            out,
            buf: Vec::with_capacity(BATCH),
        };
        let pulled = self.pull_into(r, desc, &mut sink, progress, verify).await;
        let flushed = sink.finish().await;
        pulled?;
        flushed.map_err(|e| Error::io(format!("blob {}", desc.digest), e))
    }

    /// [`Client::pull_blob`] into a writer it owns: `out` moves to a blocking
    /// thread fed through a bounded channel, so the disk and the network work at
    /// the same time; it is flushed and handed back once the blob is verified.
    pub async fn pull_blob_into<W: std::io::Write + Send + 'static>(
        &self,
        r: &Reference,
        desc: &Descriptor,
        out: W,
        progress: &(dyn Fn(u64) + Sync),
    ) -> Result<W> {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(CHANNEL_CHUNKS);
        let writer = tokio::task::spawn_blocking(move || {
            let mut out = out;
            while let Some(b) = rx.blocking_recv() {
                out.write_all(&b)?;
            }
            out.flush()?;
            Ok::<W, std::io::Error>(out)
        });
        let mut sink = Sink::Thread { tx };
        let pulled = self
            .pull_into(r, desc, &mut sink, progress, Verify::Digest)
            .await;
        drop(sink);
        let what = || format!("blob {}", desc.digest);
        let written = writer
            .await
            .map_err(|e| Error::io(what(), std::io::Error::other(e)))?;
        match (pulled, written) {
            // The writer's own error explains a refused send.
            (Err(Error::Io { .. }), Err(e)) | (Ok(()), Err(e)) => Err(Error::io(what(), e)),
            (Err(e), _) => Err(e),
            (Ok(()), Ok(out)) => Ok(out),
        }
    }

    async fn pull_into(
        &self,
        r: &Reference,
        desc: &Descriptor,
        out: &mut Sink<'_>,
        progress: &(dyn Fn(u64) + Sync),
        verify: Verify,
    ) -> Result<()> {
        let host = self.host(&r.registry).await?;
        let _permit = host.limit.clone().acquire_owned().await.ok();
        let url = self.url(&host, &format!("v2/{}/blobs/{}", r.repository, desc.digest))?;
        let what = format!("blob {}", desc.digest);
        let scopes = Self::pull_scope(&r.repository);
        let mut hasher = (verify == Verify::Digest).then(Sha256::new);
        let mut offset = 0u64;
        let mut attempts = 0;
        let mut idle_resumed = false;
        loop {
            let mut h = HeaderMap::new();
            if offset > 0 {
                h.insert(
                    "range",
                    HeaderValue::from_str(&format!("bytes={offset}-"))
                        .map_err(|_| Error::invalid(&what, "range"))?,
                );
            }
            let resp = self
                .send(&host, Request::new(Method::GET, &url, &scopes).headers(&h))
                .await?;
            let mut skip = match resp.status() {
                StatusCode::OK => offset,
                StatusCode::PARTIAL_CONTENT => 0,
                _ => return Err(status_error(&what, &r.registry, resp).await),
            };
            let mut stream = resp.bytes_stream();
            let mut broken = None;
            let mut watch = IdleWatch::new(self.transport.opts.idle_timeout);
            let mut idle = false;
            loop {
                let Some(next) = watch.next(&mut stream).await else {
                    idle = true;
                    break;
                };
                let Some(chunk) = next else { break };
                let chunk = match chunk {
                    Ok(c) => {
                        watch.moved(c.len());
                        c
                    }
                    Err(e) => {
                        broken = Some(transport(&r.registry, &e));
                        break;
                    }
                };
                let mut data = chunk;
                if skip > 0 {
                    let n = skip.min(data.len() as u64) as usize;
                    data = data.slice(n..);
                    skip -= n as u64;
                }
                if offset + data.len() as u64 > desc.size {
                    return Err(Error::SizeMismatch {
                        digest: desc.digest.clone(),
                        expected: desc.size,
                        actual: offset + data.len() as u64,
                    });
                }
                if let Some(h) = hasher.as_mut() {
                    h.update(&data);
                }
                let len = data.len() as u64;
                out.write(data).await.map_err(|e| Error::io(&what, e))?;
                offset += len;
                progress(offset);
            }
            if idle {
                let err = Error::Idle {
                    what: what.clone(),
                    idle: show_duration(self.transport.opts.idle_timeout),
                    offset,
                    size: desc.size,
                };
                // Resumed once: a stuck connection may be one bad path; twice is
                // the registry.
                if idle_resumed {
                    return Err(err);
                }
                idle_resumed = true;
                tracing::info!("{err}; resuming at byte {offset}");
                continue;
            }
            if offset < desc.size {
                let err = broken.unwrap_or_else(|| Error::SizeMismatch {
                    digest: desc.digest.clone(),
                    expected: desc.size,
                    actual: offset,
                });
                attempts += 1;
                let Some(wait) = self.transport.policy.next_wait(attempts, None) else {
                    return Err(err);
                };
                tracing::info!("{what}: {err}; resuming at byte {offset}");
                tokio::time::sleep(wait).await;
                continue;
            }
            if let Some(h) = hasher {
                let actual = Digest::from_sha256_bytes(&h.finalize());
                if actual != desc.digest {
                    return Err(Error::DigestMismatch {
                        digest: desc.digest.clone(),
                        actual,
                        size: offset,
                    });
                }
            }
            return Ok(());
        }
    }

    /// A streaming reader of a blob, for registry-to-registry copies.
    pub async fn open_blob(
        &self,
        r: &Reference,
        digest: &Digest,
        offset: u64,
    ) -> Result<Box<dyn AsyncRead + Send + Unpin>> {
        let host = self.host(&r.registry).await?;
        let url = self.url(&host, &format!("v2/{}/blobs/{digest}", r.repository))?;
        let mut h = HeaderMap::new();
        if offset > 0 {
            h.insert(
                "range",
                HeaderValue::from_str(&format!("bytes={offset}-"))
                    .map_err(|_| Error::invalid(digest.to_string(), "range"))?,
            );
        }
        let resp = self
            .send(
                &host,
                Request::new(Method::GET, &url, &Self::pull_scope(&r.repository)).headers(&h),
            )
            .await?;
        let skip = match resp.status() {
            StatusCode::OK => offset,
            StatusCode::PARTIAL_CONTENT => 0,
            _ => return Err(status_error(&format!("blob {digest}"), &r.registry, resp).await),
        };
        let what = format!("blob {digest}");
        let idle = self.transport.opts.idle_timeout;
        let stream = futures_util::stream::unfold(
            (Box::pin(resp.bytes_stream()), IdleWatch::new(idle), false),
            move |(mut stream, mut watch, done)| {
                let what = what.clone();
                async move {
                    if done {
                        return None;
                    }
                    match watch.next(&mut stream).await {
                        None => {
                            let e = Error::Idle {
                                what,
                                idle: show_duration(watch.timeout),
                                offset: 0,
                                size: 0,
                            };
                            let e =
                                std::io::Error::new(std::io::ErrorKind::TimedOut, e.to_string());
                            Some((Err(e), (stream, watch, true)))
                        }
                        Some(None) => None,
                        Some(Some(c)) => {
                            if let Ok(b) = &c {
                                watch.moved(b.len());
                            }
                            Some((c.map_err(std::io::Error::other), (stream, watch, false)))
                        }
                    }
                }
            },
        );
        let mut reader = tokio_util::io::StreamReader::new(Box::pin(stream));
        if skip > 0 {
            tokio::io::copy(&mut (&mut reader).take(skip), &mut tokio::io::sink())
                .await
                .map_err(|e| Error::io(format!("blob {digest}"), e))?;
        }
        Ok(Box::new(reader))
    }
}

/// What a pull checks of the bytes it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    /// Size and sha256.
    Digest,
    /// Size only: the writer hashes (see [`Client::pull_blob_unhashed`]).
    SizeOnly,
}

/// Bytes gathered before a borrowed writer is called: few enough calls that
/// leaving the runtime thread for each costs nothing measurable.
const BATCH: usize = 1 << 20;
/// Chunks (reqwest's, up to some tens of KiB) queued for a writer thread.
const CHANNEL_CHUNKS: usize = 64;

/// Where pulled bytes go, never written on a runtime thread.
enum Sink<'a> {
    /// A borrowed writer, called with batches under `block_in_place` (directly
    /// on a current-thread runtime, which has no other thread to hand over to).
    Borrowed {
        out: &'a mut (dyn std::io::Write + Send),
        buf: Vec<u8>,
    },
    /// A writer thread.
    Thread {
        tx: tokio::sync::mpsc::Sender<Bytes>,
    },
}

impl Sink<'_> {
    async fn write(&mut self, data: Bytes) -> std::io::Result<()> {
        match self {
            Sink::Borrowed { out, buf } => {
                buf.extend_from_slice(&data);
                if buf.len() >= BATCH {
                    write_blocking(&mut **out, buf)?;
                }
                Ok(())
            }
            Sink::Thread { tx } => tx
                .send(data)
                .await
                .map_err(|_| std::io::Error::other("the writer stopped")),
        }
    }

    /// Writes what is still batched.
    async fn finish(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Borrowed { out, buf } if !buf.is_empty() => write_blocking(&mut **out, buf),
            _ => Ok(()),
        }
    }
}

fn write_blocking(out: &mut (dyn std::io::Write + Send), buf: &mut Vec<u8>) -> std::io::Result<()> {
    let multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    let r = if multi_thread {
        tokio::task::block_in_place(|| out.write_all(buf))
    } else {
        out.write_all(buf)
    };
    buf.clear();
    r
}
