//! Pull, push and copy: which manifests and blobs move, in what order, and what
//! is reported. Sources and sinks do the reading and writing.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::{
    Action, BlobOutcome, BlobWrite, ImageSink, ImageSource, NoReport, Result, TransferError,
    TransferEvent, TransferReporter,
};
use crate::manifest::select_platform;
use crate::{Descriptor, Manifest, ManifestBody, Platform, Reference};
use oci_vocab::Digest;

/// How transfers run: who hears of them, and how many blobs move at once.
#[derive(Clone)]
pub struct Transfer {
    pub reporter: Arc<dyn TransferReporter>,
    /// Blobs of one image in flight at once (each in its own task).
    pub concurrency: usize,
}

impl Transfer {
    pub fn new(reporter: Arc<dyn TransferReporter>, concurrency: usize) -> Transfer {
        Transfer {
            reporter,
            concurrency: concurrency.max(1),
        }
    }

    /// A transfer that reports nothing.
    pub fn quiet(concurrency: usize) -> Transfer {
        Transfer::new(Arc::new(NoReport), concurrency)
    }

    fn say(&self, e: TransferEvent<'_>) {
        self.reporter.event(e);
    }
}

/// What a pull stored.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The single-platform image manifest.
    pub manifest: Manifest,
    /// The multi-platform index it was picked from, if any.
    pub index: Option<Digest>,
}

/// The platform's manifest when `m` is an index, else `m` itself.
async fn resolve_platform(
    source: &dyn ImageSource,
    r: &Reference,
    m: Manifest,
    want: &Platform,
) -> Result<Manifest> {
    let ManifestBody::Index { manifests } = m.body()? else {
        return Ok(m);
    };
    let chosen = select_platform(&manifests, want).ok_or_else(|| {
        let have: Vec<String> = manifests
            .iter()
            .filter_map(|d| d.platform.as_ref().map(|p| p.to_string()))
            .collect();
        TransferError::NoPlatform {
            reference: r.to_string(),
            want: want.to_string(),
            have: have.join(", "),
        }
    })?;
    let child = source.manifest(r, Some(chosen)).await?;
    if child.is_index() {
        return Err(TransferError::NestedIndex {
            reference: r.to_string(),
        });
    }
    Ok(child)
}

/// Runs each job in its own task, at most `limit` at once; the first failure
/// ends the rest (dropping the set aborts them).
async fn run_all<F>(limit: usize, jobs: Vec<(Digest, F)>) -> Result<Vec<Digest>>
where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    let mut set = JoinSet::new();
    let mut names = std::collections::HashMap::new();
    for (digest, job) in jobs {
        let permits = permits.clone();
        let name = digest.clone();
        let task = set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            job.await.map(|()| digest)
        });
        names.insert(task.id(), name);
    }
    let mut done = Vec::new();
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(result) => done.push(result?),
            Err(e) => {
                // Every task was named at spawn; an unnamed one still fails whole.
                let Some(digest) = names.remove(&e.id()) else {
                    return Err(TransferError::endpoint(e));
                };
                return Err(TransferError::Task {
                    digest,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(done)
}

/// Pulls one blob of `from` into `sink` unless it is there; with `unpack_as`
/// (the layer's diff_id) the sink may unpack it on the way.
pub async fn transfer_blob(
    t: &Transfer,
    source: &dyn ImageSource,
    sink: &dyn ImageSink,
    from: &Reference,
    blob: &Descriptor,
    unpack_as: Option<&Digest>,
) -> Result<()> {
    if sink.has_blob(from, blob).await? {
        t.say(TransferEvent::BlobExists {
            reference: from,
            blob,
        });
        return Ok(());
    }
    t.say(TransferEvent::BlobDownloading { blob });
    let reporter = t.reporter.clone();
    let b = blob.clone();
    let outcome = sink
        .write_blob(
            from,
            BlobWrite {
                blob,
                source,
                from,
                mount_from: &[],
                unpack_as,
                progress: Arc::new(move |bytes| {
                    reporter.event(TransferEvent::BlobBytes { blob: &b, bytes })
                }),
                sink_verifies: sink.verifies_digests(),
            },
        )
        .await?;
    blob_outcome(t, Action::Pull, from, blob, outcome);
    Ok(())
}

fn blob_outcome(t: &Transfer, action: Action, r: &Reference, blob: &Descriptor, o: BlobOutcome) {
    t.say(match &o {
        BlobOutcome::Exists if action == Action::Pull => {
            TransferEvent::BlobExists { reference: r, blob }
        }
        BlobOutcome::Exists => TransferEvent::BlobSkipped { reference: r, blob },
        BlobOutcome::Mounted { from } => TransferEvent::BlobMounted {
            reference: r,
            blob,
            from,
        },
        BlobOutcome::Written { chunks, unpacked } => TransferEvent::BlobDone {
            action,
            reference: r,
            blob,
            chunks: *chunks,
            unpacked: *unpacked,
        },
    });
}

/// Pulls `r` from `source` into `sink`: the manifest for `platform` (picked
/// from an index), its config and layers, then the manifest under `r`. With
/// `unpack`, the config comes first: its diff_ids let the sink unpack each
/// layer while it downloads instead of reading it back afterwards.
pub async fn pull(
    t: &Transfer,
    source: Arc<dyn ImageSource>,
    sink: Arc<dyn ImageSink>,
    r: &Reference,
    platform: &Platform,
    unpack: bool,
) -> Result<Pulled> {
    let top = source.manifest(r, None).await?;
    let index = top.is_index().then(|| top.digest.clone());
    let m = resolve_platform(&*source, r, top, platform).await?;
    let ManifestBody::Image { config, layers } = m.body()? else {
        return Err(TransferError::NotAnImage {
            reference: r.to_string(),
        });
    };
    let mut diff_ids = Vec::new();
    if unpack {
        transfer_blob(t, &*source, &*sink, r, &config, None).await?;
        diff_ids = sink.layer_diff_ids(&config, layers.len());
    }
    let jobs = layers
        .iter()
        .enumerate()
        .map(|(i, d)| (d.clone(), diff_ids.get(i).cloned().flatten()))
        .chain((!unpack).then(|| (config.clone(), None)))
        .map(|(d, diff_id)| {
            let (t, source, sink, r) = (t.clone(), source.clone(), sink.clone(), r.clone());
            let digest = d.digest.clone();
            let job =
                async move { transfer_blob(&t, &*source, &*sink, &r, &d, diff_id.as_ref()).await };
            (digest, job)
        })
        .collect();
    run_all(t.concurrency, jobs).await?;
    let blobs: Vec<Digest> = std::iter::once(&config)
        .chain(&layers)
        .map(|d| d.digest.clone())
        .collect();
    sink.record_pulled(r, &blobs);
    write_manifest(t, &*sink, r, &m, index.as_ref()).await?;
    Ok(Pulled { manifest: m, index })
}

async fn write_manifest(
    t: &Transfer,
    sink: &dyn ImageSink,
    to: &Reference,
    m: &Manifest,
    upstream_index: Option<&Digest>,
) -> Result<()> {
    sink.write_manifest(to, m, upstream_index).await?;
    t.say(TransferEvent::Manifest {
        reference: to,
        digest: &m.digest,
    });
    Ok(())
}

/// Sends an image manifest's config and layers to `to` (each skipped when
/// there, mounted when a known repository of that registry holds it).
async fn push_blobs(
    t: &Transfer,
    action: Action,
    source: &Arc<dyn ImageSource>,
    sink: &Arc<dyn ImageSink>,
    from: &Reference,
    to: &Reference,
    m: &Manifest,
) -> Result<()> {
    let ManifestBody::Image { config, layers } = m.body()? else {
        return Ok(());
    };
    let jobs = std::iter::once(config)
        .chain(layers)
        .map(|d| {
            let mounts = source.mount_candidates(from, &d.digest, &to.registry);
            let (t, source, sink) = (t.clone(), source.clone(), sink.clone());
            let (from, to) = (from.clone(), to.clone());
            let digest = d.digest.clone();
            let job = async move {
                source.check_blob(&from, &d)?;
                t.say(TransferEvent::BlobUploading { blob: &d });
                let reporter = t.reporter.clone();
                let b = d.clone();
                let outcome = sink
                    .write_blob(
                        &to,
                        BlobWrite {
                            blob: &d,
                            source: &*source,
                            from: &from,
                            mount_from: &mounts,
                            unpack_as: None,
                            progress: Arc::new(move |bytes| {
                                reporter.event(TransferEvent::BlobBytes { blob: &b, bytes })
                            }),
                            sink_verifies: sink.verifies_digests(),
                        },
                    )
                    .await?;
                blob_outcome(&t, action, &to, &d, outcome);
                Ok(())
            };
            (digest, job)
        })
        .collect();
    let done = run_all(t.concurrency, jobs).await?;
    source.record_copied(to, &done);
    Ok(())
}

/// Pushes a manifest tree to `to`: an index's entries first (each skipped
/// when `to`'s repository has it), an image's blobs, then the manifest itself.
pub async fn push_tree(
    t: &Transfer,
    source: Arc<dyn ImageSource>,
    sink: Arc<dyn ImageSink>,
    from: &Reference,
    to: &Reference,
    m: &Manifest,
) -> Result<()> {
    if let ManifestBody::Index { manifests } = m.body()? {
        for child in &manifests {
            if sink.has_manifest(to, &child.digest).await? {
                continue;
            }
            let cm = source.manifest(from, Some(child)).await?;
            Box::pin(push_tree(
                t,
                source.clone(),
                sink.clone(),
                from,
                &to.with_reference(None, None),
                &cm,
            ))
            .await?;
        }
    } else {
        push_blobs(t, Action::Push, &source, &sink, from, to, m).await?;
    }
    write_manifest(t, &*sink, to, m, None).await
}

/// Pushes a single-platform image as [`push_tree`] does. When `to`'s tag holds
/// `upstream_index`, the index the image was picked from, that is said first:
/// the push replaces the index (and its other platforms) with this one platform.
pub async fn push(
    t: &Transfer,
    source: Arc<dyn ImageSource>,
    sink: Arc<dyn ImageSink>,
    from: &Reference,
    to: &Reference,
    m: &Manifest,
    upstream_index: Option<&Digest>,
) -> Result<()> {
    if let (Some(index), Some(_)) = (upstream_index, &to.tag) {
        if sink.manifest_digest(to).await.as_ref() == Some(index) {
            t.say(TransferEvent::ReplacesIndex {
                reference: to,
                index,
            });
        }
    }
    push_tree(t, source, sink, from, to, m).await
}

/// Copies `from` to `to`: with `all_platforms` a whole index (each entry, then
/// the index, keeping its digest), else the image for `platform`. Returns the
/// digest of the manifest written under `to`.
pub async fn copy(
    t: &Transfer,
    source: Arc<dyn ImageSource>,
    sink: Arc<dyn ImageSink>,
    from: &Reference,
    to: &Reference,
    platform: &Platform,
    all_platforms: bool,
) -> Result<Digest> {
    let top = source.manifest(from, None).await?;
    if top.is_index() && all_platforms {
        if let ManifestBody::Index { manifests } = top.body()? {
            for child in &manifests {
                let cm = source.manifest(from, Some(child)).await?;
                let child_to = to.with_reference(None, None);
                push_blobs(t, Action::Copy, &source, &sink, from, &child_to, &cm).await?;
                write_manifest(t, &*sink, &child_to, &cm, None).await?;
            }
        }
        write_manifest(t, &*sink, to, &top, None).await?;
        Ok(top.digest)
    } else {
        let m = resolve_platform(&*source, from, top, platform).await?;
        push_blobs(t, Action::Copy, &source, &sink, from, to, &m).await?;
        write_manifest(t, &*sink, to, &m, None).await?;
        Ok(m.digest)
    }
}
