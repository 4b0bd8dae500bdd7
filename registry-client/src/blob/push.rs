//! Pushing a blob: skipped when the repository has it, mounted from another
//! repository when allowed, else uploaded in one PUT or in PATCH chunks, with a
//! watchdog on the body and the sessions left open tracked for cancelling.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::{Method, Response, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use url::Url;

use super::show_duration;
use crate::client::{Client, IDLE_MIN_BYTES};
use crate::error::{Error, Result};
use crate::manifest::Descriptor;
use crate::reference::Reference;
use crate::transport::retry::retryable_status;
use crate::transport::{status_error, Host, Request};

/// Where an upload reads a blob from; `open` may be called again after a failure.
pub trait BlobSource: Send + Sync {
    fn open(
        &self,
        offset: u64,
    ) -> BoxFuture<'_, std::io::Result<Box<dyn AsyncRead + Send + Unpin>>>;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushOutcome {
    /// The registry already had it.
    Exists,
    Mounted {
        from: String,
    },
    Uploaded {
        chunks: u32,
    },
}

/// How long cancelling upload sessions may take: an interrupted command
/// should still end promptly, and the registry purges what is left anyway.
const CANCEL_WITHIN: Duration = Duration::from_secs(2);

/// An upload session the registry opened (a POST answered with a Location) and
/// that is not completed or cancelled yet.
#[derive(Clone)]
pub(crate) struct OpenUpload {
    host: Arc<Host>,
    repository: String,
    /// The latest Location (each PATCH answers with a new one).
    url: Url,
}

/// The client's upload sessions: those open, and the POSTs still opening one.
#[derive(Default)]
pub(crate) struct Uploads {
    open: std::sync::Mutex<HashMap<u64, OpenUpload>>,
    next: AtomicU64,
    /// POSTs in flight; each runs in a task of its own so that a session the
    /// registry opened is recorded even when its upload was dropped meanwhile.
    opening: AtomicUsize,
    settled: Notify,
}

impl Uploads {
    fn insert(&self, open: OpenUpload) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut m) = self.open.lock() {
            m.insert(id, open);
        }
        id
    }

    fn get(&self, id: u64) -> Option<OpenUpload> {
        self.open.lock().ok().and_then(|m| m.get(&id).cloned())
    }

    fn remove(&self, id: u64) {
        if let Ok(mut m) = self.open.lock() {
            m.remove(&id);
        }
    }

    /// Waits until no POST is in flight.
    async fn settle(&self) {
        loop {
            // Registered before the check, so a wake between the two is kept.
            let woken = self.settled.notified();
            if self.opening.load(Ordering::Acquire) == 0 {
                return;
            }
            woken.await;
        }
    }
}

/// Counts one POST in flight for as long as it lives, panics included.
struct Opening(Arc<Uploads>);

impl Opening {
    fn new(uploads: &Arc<Uploads>) -> Opening {
        uploads.opening.fetch_add(1, Ordering::AcqRel);
        Opening(uploads.clone())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        if self.0.opening.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.settled.notify_waiters();
        }
    }
}

/// What a session-opening POST got: the answer, and the session's id and
/// Location when the registry opened one (202 with a Location).
struct PostAnswer {
    resp: Response,
    session: Option<(u64, (Url, u64))>,
}

impl Client {
    /// Makes sure the repository has the blob: skipped when present, mounted from
    /// one of `mount_from` (same registry) when allowed, else uploaded.
    pub async fn push_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        source: &dyn BlobSource,
        mount_from: &[String],
    ) -> Result<PushOutcome> {
        let host = self.host(&r.registry).await?;
        let _permit = host.limit.clone().acquire_owned().await.ok();
        if self.has_blob(r, desc).await? {
            return Ok(PushOutcome::Exists);
        }
        let what = format!("pushing blob {}", desc.digest);
        let mut session = None;
        for from in mount_from.iter().filter(|f| **f != r.repository).take(3) {
            let mut url = self.url(&host, &format!("v2/{}/blobs/uploads/", r.repository))?;
            url.query_pairs_mut()
                .append_pair("mount", &desc.digest.to_string())
                .append_pair("from", from);
            let mut scopes = Self::push_scope(&r.repository);
            scopes.push(format!("repository:{from}:pull"));
            let answer = match self.open_session(&host, &r.repository, url, scopes).await {
                Ok(a) => a,
                // A token refused for the source repository: upload instead.
                Err(Error::Unauthorized { .. } | Error::Token { .. }) => continue,
                Err(e) => return Err(e),
            };
            if let Some(opened) = answer.session {
                session = Some(opened);
                break;
            }
            match answer.resp.status() {
                StatusCode::CREATED => return Ok(PushOutcome::Mounted { from: from.clone() }),
                s => tracing::debug!("mount from {from} answered {s}; uploading instead"),
            }
        }
        let mut tries = 0;
        loop {
            let (id, opened) = match session.take() {
                Some(s) => s,
                None => {
                    let url = self.url(&host, &format!("v2/{}/blobs/uploads/", r.repository))?;
                    let scopes = Self::push_scope(&r.repository);
                    let answer = self.open_session(&host, &r.repository, url, scopes).await?;
                    match answer.session {
                        Some(s) => s,
                        None => return Err(status_error(&what, &r.registry, answer.resp).await),
                    }
                }
            };
            let result = if desc.size > self.transport.opts.chunk_threshold {
                self.upload_chunked(&host, r, desc, source, opened, id)
                    .await
            } else {
                self.upload_monolithic(&host, r, desc, source, opened.0)
                    .await
                    .map(|_| 1)
            };
            if result.is_ok() {
                self.upload_closed(id);
            } else {
                self.cancel_upload(id).await;
            }
            match result {
                Ok(chunks) => return Ok(PushOutcome::Uploaded { chunks }),
                // Digest problems are the data's fault; retrying will not help.
                Err(e @ Error::Status { status: 400, .. }) => return Err(e),
                Err(e) if tries < 1 => {
                    tracing::info!("{what}: {e}; starting a new upload");
                    tries += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Runs an upload request, failing with [`Error::Idle`] when its body moves less
    /// than [`IDLE_MIN_BYTES`] in an idle window while it is being sent. The wait for
    /// the answer once the body is out is left to the read timeout: a registry
    /// may take a while to store a large blob.
    async fn watch_body<T>(
        &self,
        request: impl std::future::Future<Output = Result<T>>,
        flow: &BodyFlow,
        what: &str,
    ) -> Result<T> {
        let idle = self.transport.opts.idle_timeout;
        let watchdog = async {
            let tick = (idle / 8).max(Duration::from_millis(20));
            let snapshot = || {
                (
                    flow.starts.load(Ordering::Relaxed),
                    flow.moved.load(Ordering::Relaxed),
                )
            };
            // The window restarts with each body and each 1 KiB it moves.
            let (mut base, mut since) = (snapshot(), Instant::now());
            loop {
                tokio::time::sleep(tick).await;
                let now = snapshot();
                if !flow.sending.load(Ordering::Relaxed)
                    || now.0 != base.0
                    || now.1 - base.1 >= IDLE_MIN_BYTES
                {
                    (base, since) = (now, Instant::now());
                } else if since.elapsed() >= idle {
                    return;
                }
            }
        };
        tokio::select! {
            r = request => r,
            () = watchdog => Err(Error::Idle {
                what: what.to_string(),
                idle: show_duration(idle),
                offset: 0,
                size: 0,
            }),
        }
    }

    /// `POST <repository>/blobs/uploads/` (a mount's too), sent from a task of
    /// its own: a caller dropped while it is in flight would otherwise lose a
    /// session the registry opened, with no Location left to cancel it by. The
    /// task records any session it gets before answering.
    async fn open_session(
        &self,
        host: &Arc<Host>,
        repository: &str,
        url: Url,
        scopes: Vec<String>,
    ) -> Result<PostAnswer> {
        let transport = self.transport.clone();
        let registry = host.registry.clone();
        let host = host.clone();
        let repository = repository.to_string();
        let opening = Opening::new(&self.uploads);
        let task = tokio::spawn(async move {
            let headers = zero_length();
            let resp = transport
                .send(
                    &host,
                    &Request::new(Method::POST, &url, &scopes)
                        .headers(&headers)
                        .body(&empty_body),
                )
                .await?;
            let mut session = None;
            if resp.status() == StatusCode::ACCEPTED {
                let (loc, min) = location(&url, &resp)?;
                let id = opening.0.insert(OpenUpload {
                    host,
                    repository,
                    url: loc.clone(),
                });
                session = Some((id, (loc, min)));
            }
            drop(opening);
            Ok(PostAnswer { resp, session })
        });
        task.await.map_err(|e| Error::Transport {
            registry,
            message: format!("opening an upload: {e}"),
        })?
    }

    fn upload_moved(&self, id: u64, url: &Url) {
        if let Some(u) = self
            .uploads
            .open
            .lock()
            .ok()
            .as_mut()
            .and_then(|m| m.get_mut(&id))
        {
            u.url = url.clone();
        }
    }

    /// The registry completed the upload: nothing left to cancel.
    fn upload_closed(&self, id: u64) {
        self.uploads.remove(id);
    }

    /// Cancels one session. The entry goes only after the DELETE, so a drop
    /// mid-way leaves it for [`Client::cancel_open_uploads`].
    async fn cancel_upload(&self, id: u64) {
        if let Some(open) = self.uploads.get(id) {
            if tokio::time::timeout(CANCEL_WITHIN, self.send_cancel(&open))
                .await
                .is_err()
            {
                tracing::debug!(url = %open.url, "cancelling the upload: no answer");
            }
        }
        self.upload_closed(id);
    }

    /// `DELETE <location>` (the distribution spec's "Canceling an upload").
    /// Best effort, logged only: the caller's own error, if any, is what matters.
    async fn send_cancel(&self, open: &OpenUpload) {
        if self.delete_upload(open, &open.url).await {
            return;
        }
        // A dropped PUT or PATCH may have left bytes that the state in our URL
        // does not count, and distribution refuses a DELETE with a stale state.
        // Its status answer (distribution 3 checks no offset there) carries
        // the current Location.
        let status = self
            .send(
                &open.host,
                Request::new(Method::GET, &open.url, &Self::push_scope(&open.repository))
                    .no_retry(),
            )
            .await;
        let fresh = status
            .ok()
            .filter(|r| r.status().is_success())
            .and_then(|r| location(&open.url, &r).ok());
        if let Some((url, _)) = fresh {
            self.delete_upload(open, &url).await;
        }
    }

    /// One DELETE of an upload URL; whether the registry accepted it.
    async fn delete_upload(&self, open: &OpenUpload, url: &Url) -> bool {
        let sent = self
            .send(
                &open.host,
                Request::new(Method::DELETE, url, &Self::push_scope(&open.repository)).no_retry(),
            )
            .await;
        match sent {
            Ok(resp) => {
                tracing::debug!(%url, status = %resp.status(), "cancelling the upload");
                resp.status().is_success()
            }
            Err(e) => {
                tracing::debug!(%url, "cancelling the upload: {e}");
                false
            }
        }
    }

    /// Cancels every upload session this client left open: those of uploads
    /// whose futures were dropped. Call it once no upload of this client runs
    /// (after an interrupt or a failed push). It waits up to two seconds for
    /// POSTs still in flight, then up to two more for the DELETEs.
    pub async fn cancel_open_uploads(&self) {
        // A POST still in flight may yet open a session.
        if tokio::time::timeout(CANCEL_WITHIN, self.uploads.settle())
            .await
            .is_err()
        {
            tracing::debug!("cancelling upload sessions: a POST is still unanswered");
        }
        let open: Vec<OpenUpload> = match self.uploads.open.lock() {
            Ok(mut m) => m.drain().map(|(_, u)| u).collect(),
            Err(_) => return,
        };
        if open.is_empty() {
            return;
        }
        let all = futures_util::future::join_all(open.iter().map(|u| self.send_cancel(u)));
        if tokio::time::timeout(CANCEL_WITHIN, all).await.is_err() {
            tracing::debug!("cancelling {} upload sessions: gave up", open.len());
        }
    }

    async fn upload_monolithic(
        &self,
        host: &Host,
        r: &Reference,
        desc: &Descriptor,
        source: &dyn BlobSource,
        mut loc: Url,
    ) -> Result<()> {
        loc.query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        let mut h = HeaderMap::new();
        h.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        h.insert(CONTENT_LENGTH, HeaderValue::from(desc.size));
        let size = desc.size;
        let flow = Arc::new(BodyFlow::default());
        let body_flow = flow.clone();
        let body = move || -> BoxFuture<'_, Result<reqwest::Body>> {
            let flow = body_flow.clone();
            Box::pin(async move { reader_body(source, 0, size, flow).await })
        };
        let what = format!("pushing blob {}", desc.digest);
        let resp = self
            .watch_body(
                self.send(
                    host,
                    Request::new(Method::PUT, &loc, &Self::push_scope(&r.repository))
                        .headers(&h)
                        .body(&body),
                ),
                &flow,
                &what,
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(
                status_error(&format!("pushing blob {}", desc.digest), &r.registry, resp).await,
            );
        }
        Ok(())
    }

    async fn upload_chunked(
        &self,
        host: &Host,
        r: &Reference,
        desc: &Descriptor,
        source: &dyn BlobSource,
        (mut loc, min_chunk): (Url, u64),
        id: u64,
    ) -> Result<u32> {
        let what = format!("pushing blob {}", desc.digest);
        let scopes = Self::push_scope(&r.repository);
        let chunk = self.transport.opts.chunk_size.max(min_chunk).max(1);
        let mut offset = 0u64;
        let mut chunks = 0u32;
        let mut failures = 0;
        while offset < desc.size {
            let len = chunk.min(desc.size - offset);
            let mut h = HeaderMap::new();
            h.insert(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            h.insert(CONTENT_LENGTH, HeaderValue::from(len));
            h.insert(
                "content-range",
                HeaderValue::from_str(&format!("{offset}-{}", offset + len - 1))
                    .map_err(|_| Error::invalid(&what, "content-range"))?,
            );
            let start = offset;
            let flow = Arc::new(BodyFlow::default());
            let body_flow = flow.clone();
            let body = move || -> BoxFuture<'_, Result<reqwest::Body>> {
                let flow = body_flow.clone();
                Box::pin(async move { reader_body(source, start, len, flow).await })
            };
            let sent = self
                .watch_body(
                    self.send(
                        host,
                        Request::new(Method::PATCH, &loc, &scopes)
                            .headers(&h)
                            .body(&body)
                            .no_retry(),
                    ),
                    &flow,
                    &what,
                )
                .await;
            match sent {
                // The upload as a whole is retried once by `push_blob`.
                Err(e @ Error::Idle { .. }) => return Err(e),
                Ok(resp)
                    if matches!(
                        resp.status(),
                        StatusCode::ACCEPTED | StatusCode::CREATED | StatusCode::NO_CONTENT
                    ) =>
                {
                    loc = location(&loc, &resp)?.0;
                    self.upload_moved(id, &loc);
                    offset = range_end(resp.headers()).unwrap_or(offset + len);
                    chunks += 1;
                    continue;
                }
                Ok(resp)
                    if !retryable_status(resp.status())
                        && resp.status() != StatusCode::RANGE_NOT_SATISFIABLE =>
                {
                    return Err(status_error(&what, &r.registry, resp).await);
                }
                Ok(resp) => tracing::info!("{what}: chunk at {offset} answered {}", resp.status()),
                Err(e) => tracing::info!("{what}: chunk at {offset}: {e}"),
            }
            failures += 1;
            let Some(wait) = self.transport.policy.next_wait(failures, None) else {
                return Err(Error::Transport {
                    registry: r.registry.clone(),
                    message: format!("{what}: chunk at byte {offset} failed {failures} times"),
                });
            };
            tokio::time::sleep(wait).await;
            // Ask the registry how much it has, and resume from there.
            let resp = self
                .send(host, Request::new(Method::GET, &loc, &scopes))
                .await?;
            if resp.status() != StatusCode::NO_CONTENT && !resp.status().is_success() {
                return Err(status_error(&what, &r.registry, resp).await);
            }
            loc = location(&loc, &resp)?.0;
            self.upload_moved(id, &loc);
            // `0-0` means zero or one byte (distribution's ambiguity): start over.
            offset = match range_end(resp.headers()) {
                Some(n) if n > 1 => n,
                _ => {
                    return Err(Error::Transport {
                        registry: r.registry.clone(),
                        message: format!("{what}: the upload has to start over"),
                    })
                }
            };
        }
        let mut done = loc.clone();
        done.query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        let resp = self
            .send(
                host,
                Request::new(Method::PUT, &done, &scopes)
                    .headers(&zero_length())
                    .body(&empty_body),
            )
            .await?;
        if resp.status() != StatusCode::CREATED {
            return Err(status_error(&what, &r.registry, resp).await);
        }
        Ok(chunks)
    }
}

fn empty_body() -> BoxFuture<'static, Result<reqwest::Body>> {
    Box::pin(async { Ok(reqwest::Body::from(Vec::new())) })
}

fn zero_length() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(CONTENT_LENGTH, HeaderValue::from(0u64));
    h
}

async fn reader_body(
    source: &dyn BlobSource,
    offset: u64,
    len: u64,
    flow: Arc<BodyFlow>,
) -> Result<reqwest::Body> {
    let reader = source
        .open(offset)
        .await
        .map_err(|e| Error::io("opening blob for upload", e))?;
    let generation = flow.starts.fetch_add(1, Ordering::Relaxed) + 1;
    flow.sending.store(true, Ordering::Relaxed);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader.take(len), 256 << 10);
    // Counts what the connection takes; hyper stops polling a body the peer
    // does not read.
    let stream = CountedBody {
        inner: stream,
        flow,
        generation,
    };
    Ok(reqwest::Body::wrap_stream(stream))
}

/// How far the current upload body has been taken by the connection.
#[derive(Default)]
struct BodyFlow {
    /// Bytes handed to the connection, over every attempt.
    moved: AtomicU64,
    /// A body is being sent and has not ended.
    sending: std::sync::atomic::AtomicBool,
    /// Bodies started (a retry starts another).
    starts: AtomicU64,
}

struct CountedBody<S> {
    inner: S,
    flow: Arc<BodyFlow>,
    /// Which of the flow's bodies this is: a late drop of an earlier one must not
    /// mark a newer one done.
    generation: u64,
}

impl<S> CountedBody<S> {
    fn done(&self) {
        if self.flow.starts.load(Ordering::Relaxed) == self.generation {
            self.flow.sending.store(false, Ordering::Relaxed);
        }
    }
}

impl<S> Drop for CountedBody<S> {
    /// A body dropped unfinished (an answer came early, or the request failed) is
    /// not being sent any more.
    fn drop(&mut self) {
        self.done();
    }
}

impl<S> futures_util::Stream for CountedBody<S>
where
    S: futures_util::Stream<Item = std::io::Result<tokio_util::bytes::Bytes>> + Unpin,
{
    type Item = std::io::Result<tokio_util::bytes::Bytes>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_next(cx);
        match &polled {
            std::task::Poll::Ready(Some(Ok(b))) => {
                self.flow.moved.fetch_add(b.len() as u64, Ordering::Relaxed);
            }
            std::task::Poll::Ready(_) => self.done(),
            std::task::Poll::Pending => {}
        }
        polled
    }
}

/// The upload Location resolved against the request URL (query kept), and the
/// registry's minimum chunk size.
fn location(req: &Url, resp: &Response) -> Result<(Url, u64)> {
    let loc = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| Error::invalid("upload", "the registry sent no Location"))?;
    let url = req
        .join(loc)
        .map_err(|e| Error::invalid("upload Location", e.to_string()))?;
    let min = resp
        .headers()
        .get("oci-chunk-min-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    Ok((url, min))
}

/// `Range: 0-1234` (inclusive) → next offset 1235.
fn range_end(h: &HeaderMap) -> Option<u64> {
    let v = h.get("range")?.to_str().ok()?;
    let v = v.trim().trim_start_matches("bytes=");
    let (_, end) = v.split_once('-')?;
    end.trim().parse::<u64>().ok().map(|e| e + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_ranges() {
        let mut h = HeaderMap::new();
        h.insert("range", HeaderValue::from_static("0-1023"));
        assert_eq!(range_end(&h), Some(1024));
        h.insert("range", HeaderValue::from_static("bytes=0-9"));
        assert_eq!(range_end(&h), Some(10));
    }
}
