//! The transfer module against a real `docker-registry` on 127.0.0.1, with a
//! small directory-backed source and sink standing in for the store.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use oci_vocab::Digest;
use registry_client::manifest::{OCI_INDEX, OCI_MANIFEST};
use registry_client::transfer::{
    self, BlobOutcome, BlobReader, BlobWrite, ImageSink, ImageSource, Registry, Transfer,
    TransferError, TransferEvent, TransferReporter,
};
use registry_client::{Client, ClientOptions, Descriptor, Manifest, Platform, Reference};
use tokio::io::AsyncSeekExt;

fn sha256(bytes: &[u8]) -> Digest {
    Digest::of(bytes)
}

/// Blobs as files named by digest; manifests by tag in memory.
struct Dir {
    root: PathBuf,
    tags: Mutex<HashMap<String, (String, Digest)>>,
    /// digest → "registry/repository" names known to hold it.
    holders: Mutex<BTreeMap<Digest, Vec<String>>>,
}

impl Dir {
    fn new(root: &Path) -> Dir {
        std::fs::create_dir_all(root.join("blobs")).unwrap();
        Dir {
            root: root.to_path_buf(),
            tags: Mutex::new(HashMap::new()),
            holders: Mutex::new(BTreeMap::new()),
        }
    }

    fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs").join(digest.hex())
    }

    fn put(&self, bytes: &[u8], media_type: &str) -> Descriptor {
        let digest = sha256(bytes);
        std::fs::write(self.path(&digest), bytes).unwrap();
        Descriptor {
            media_type: media_type.into(),
            digest,
            size: bytes.len() as u64,
            platform: None,
            urls: Vec::new(),
        }
    }

    fn get(&self, digest: &Digest) -> Option<Vec<u8>> {
        std::fs::read(self.path(digest)).ok()
    }

    fn tag(&self, tag: &str, m: &Manifest) {
        self.put(&m.bytes, &m.media_type);
        self.tags
            .lock()
            .unwrap()
            .insert(tag.into(), (m.media_type.clone(), m.digest.clone()));
    }

    fn tagged(&self, tag: &str) -> Option<(String, Digest)> {
        self.tags.lock().unwrap().get(tag).cloned()
    }

    fn key(r: &Reference) -> String {
        r.tag
            .clone()
            .or_else(|| r.digest.as_ref().map(ToString::to_string))
            .unwrap_or_default()
    }
}

fn invalid(what: &str) -> TransferError {
    TransferError::endpoint(std::io::Error::other(what.to_string()))
}

impl ImageSource for Dir {
    fn manifest<'a>(
        &'a self,
        from: &'a Reference,
        child: Option<&'a Descriptor>,
    ) -> BoxFuture<'a, transfer::Result<Manifest>> {
        Box::pin(async move {
            let (media_type, digest) = match child {
                Some(c) => (c.media_type.clone(), c.digest.clone()),
                None => self
                    .tagged(&Dir::key(from))
                    .ok_or_else(|| invalid("no such tag"))?,
            };
            let bytes = self.get(&digest).ok_or_else(|| invalid("no manifest"))?;
            Ok(Manifest::new(bytes, Some(&media_type))?)
        })
    }

    fn read_blob<'a>(
        &'a self,
        _from: &'a Reference,
        blob: &'a Descriptor,
        out: &'a mut (dyn Write + Send),
        progress: &'a (dyn Fn(u64) + Sync),
    ) -> BoxFuture<'a, transfer::Result<()>> {
        Box::pin(async move {
            let bytes = self.get(&blob.digest).ok_or_else(|| invalid("no blob"))?;
            if sha256(&bytes) != blob.digest {
                return Err(invalid("corrupt blob"));
            }
            out.write_all(&bytes).map_err(TransferError::endpoint)?;
            progress(bytes.len() as u64);
            Ok(())
        })
    }

    fn open_blob<'a>(
        &'a self,
        _from: &'a Reference,
        blob: &'a Descriptor,
        offset: u64,
    ) -> BoxFuture<'a, std::io::Result<BlobReader>> {
        Box::pin(async move {
            let mut f = tokio::fs::File::open(self.path(&blob.digest)).await?;
            f.seek(std::io::SeekFrom::Start(offset)).await?;
            Ok(Box::new(f) as BlobReader)
        })
    }

    fn mount_candidates(&self, _from: &Reference, digest: &Digest, registry: &str) -> Vec<String> {
        let prefix = format!("{registry}/");
        self.holders
            .lock()
            .unwrap()
            .get(digest)
            .into_iter()
            .flatten()
            .filter_map(|n| n.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    fn record_copied(&self, to: &Reference, digests: &[Digest]) {
        let mut h = self.holders.lock().unwrap();
        for d in digests {
            h.entry(d.clone()).or_default().push(to.name());
        }
    }
}

impl ImageSink for Dir {
    fn has_blob<'a>(
        &'a self,
        _to: &'a Reference,
        blob: &'a Descriptor,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        Box::pin(async move { Ok(self.path(&blob.digest).is_file()) })
    }

    fn has_manifest<'a>(
        &'a self,
        _to: &'a Reference,
        digest: &'a Digest,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        Box::pin(async move { Ok(self.path(digest).is_file()) })
    }

    fn write_blob<'a>(
        &'a self,
        _to: &'a Reference,
        w: BlobWrite<'a>,
    ) -> BoxFuture<'a, transfer::Result<BlobOutcome>> {
        Box::pin(async move {
            let mut bytes = Vec::new();
            let progress = |n: u64| (w.progress)(n);
            w.source
                .read_blob(w.from, w.blob, &mut bytes, &progress)
                .await?;
            if sha256(&bytes) != w.blob.digest {
                return Err(invalid("digest mismatch"));
            }
            self.put(&bytes, &w.blob.media_type);
            Ok(BlobOutcome::Written {
                chunks: 1,
                unpacked: false,
            })
        })
    }

    fn write_manifest<'a>(
        &'a self,
        to: &'a Reference,
        m: &'a Manifest,
        _upstream_index: Option<&'a Digest>,
    ) -> BoxFuture<'a, transfer::Result<()>> {
        Box::pin(async move {
            self.tag(&Dir::key(to), m);
            Ok(())
        })
    }
}

/// Every blob outcome and manifest write as a short line: `done Push sha256:…`.
#[derive(Default)]
struct Events(Mutex<Vec<String>>);

impl TransferReporter for Events {
    fn event(&self, e: TransferEvent<'_>) {
        let line = match e {
            TransferEvent::BlobExists { blob, .. } => format!("exists {}", blob.digest),
            TransferEvent::BlobSkipped { blob, .. } => format!("skipped {}", blob.digest),
            TransferEvent::BlobMounted { blob, from, .. } => {
                format!("mounted {} from {from}", blob.digest)
            }
            TransferEvent::BlobDone { action, blob, .. } => {
                format!("done {action:?} {}", blob.digest)
            }
            TransferEvent::Manifest { digest, .. } => format!("manifest {digest}"),
            _ => return,
        };
        self.0.lock().unwrap().push(line);
    }
}

impl Events {
    /// The events so far, sorted (blobs move concurrently), and forgets them.
    fn take(&self) -> Vec<String> {
        sorted(std::mem::take(&mut *self.0.lock().unwrap()))
    }
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn client(addr: &str) -> Arc<Client> {
    let mut o = ClientOptions::from_env();
    o.insecure_registries = vec![addr.to_string()];
    Arc::new(Client::new(o))
}

/// An image of a config and two layers in `dir`; returns its manifest.
fn image(dir: &Dir, seed: &str, platform: &str) -> Manifest {
    let (os, arch) = platform.split_once('/').unwrap();
    let config = format!(
        r#"{{"architecture":"{arch}","os":"{os}","rootfs":{{"type":"layers","diff_ids":[]}},"config":{{"Env":["SEED={seed}"]}}}}"#
    );
    let c = dir.put(
        config.as_bytes(),
        "application/vnd.oci.image.config.v1+json",
    );
    let layers: Vec<Descriptor> = (0..2)
        .map(|i| {
            let bytes: Vec<u8> = format!("{seed} layer {i} ")
                .bytes()
                .cycle()
                .take(10_000 + i * 3_000)
                .collect();
            dir.put(&bytes, "application/vnd.oci.image.layer.v1.tar+gzip")
        })
        .collect();
    let desc = |d: &Descriptor| {
        format!(
            r#"{{"mediaType":"{}","digest":"{}","size":{}}}"#,
            d.media_type, d.digest, d.size
        )
    };
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_MANIFEST}","config":{},"layers":[{}]}}"#,
        desc(&c),
        layers.iter().map(desc).collect::<Vec<_>>().join(",")
    );
    let m = Manifest::new(body.into_bytes(), Some(OCI_MANIFEST)).unwrap();
    dir.put(&m.bytes, OCI_MANIFEST);
    m
}

fn blobs_of(m: &Manifest) -> Vec<Descriptor> {
    match m.body().unwrap() {
        registry_client::ManifestBody::Image { config, layers } => {
            std::iter::once(config).chain(layers).collect()
        }
        registry_client::ManifestBody::Index { .. } => panic!("image expected"),
    }
}

/// What a blob outcome says for each blob of `m`, plus the manifest write.
fn expect(m: &Manifest, what: impl Fn(&Digest) -> String) -> Vec<String> {
    let mut want: Vec<String> = blobs_of(m).iter().map(|d| what(&d.digest)).collect();
    want.push(format!("manifest {}", m.digest));
    sorted(want)
}

struct Setup {
    server: testdata::registry::Registry,
    addr: String,
    registry: Arc<Registry>,
    events: Arc<Events>,
    t: Transfer,
    tmp: tempfile::TempDir,
}

fn setup() -> Option<Setup> {
    if !testdata::require_tool("docker-registry") {
        return None;
    }
    let reg = testdata::registry::Registry::start();
    let addr = reg.addr.clone();
    let events = Arc::new(Events::default());
    Some(Setup {
        registry: Arc::new(Registry::new(client(&addr))),
        t: Transfer::new(events.clone(), 4),
        events,
        addr,
        server: reg,
        tmp: tempfile::tempdir().unwrap(),
    })
}

fn platform(p: &str) -> Platform {
    Platform::parse(p).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_skips_existing_blobs_and_pull_returns_the_same_bytes() {
    let Some(s) = setup() else { return };
    let local = Arc::new(Dir::new(&s.tmp.path().join("local")));
    let m = image(&local, "one", "linux/amd64");
    let r = Reference::parse(&format!("{}/app/one:1", s.addr)).unwrap();

    transfer::push_tree(&s.t, local.clone(), s.registry.clone(), &r, &r, &m)
        .await
        .unwrap();
    assert_eq!(s.events.take(), expect(&m, |d| format!("done Push {d}")));

    // Again: the registry has every blob, so one HEAD each and no upload.
    transfer::push_tree(&s.t, local.clone(), s.registry.clone(), &r, &r, &m)
        .await
        .unwrap();
    assert_eq!(s.events.take(), expect(&m, |d| format!("skipped {d}")));

    // Back into an empty directory: the same manifest and bytes.
    let back = Arc::new(Dir::new(&s.tmp.path().join("back")));
    let amd64 = platform("linux/amd64");
    let pulled = transfer::pull(&s.t, s.registry.clone(), back.clone(), &r, &amd64, false)
        .await
        .unwrap();
    assert_eq!(pulled.manifest.digest, m.digest);
    assert_eq!(pulled.manifest.bytes, m.bytes);
    assert_eq!(pulled.index, None);
    assert_eq!(
        back.tagged("1"),
        Some((OCI_MANIFEST.into(), m.digest.clone()))
    );
    for d in blobs_of(&m) {
        assert_eq!(back.get(&d.digest), local.get(&d.digest), "{}", d.digest);
    }
    assert_eq!(s.events.take(), expect(&m, |d| format!("done Pull {d}")));

    // A pull of what the sink has fetches nothing.
    transfer::pull(&s.t, s.registry.clone(), back, &r, &amd64, false)
        .await
        .unwrap();
    assert_eq!(s.events.take(), expect(&m, |d| format!("exists {d}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_to_another_repository_mounts_every_blob() {
    let Some(s) = setup() else { return };
    let local = Arc::new(Dir::new(&s.tmp.path().join("local")));
    let m = image(&local, "two", "linux/amd64");
    let src = Reference::parse(&format!("{}/src/app:1", s.addr)).unwrap();
    let dst = Reference::parse(&format!("{}/dst/app:copy", s.addr)).unwrap();
    transfer::push_tree(&s.t, local.clone(), s.registry.clone(), &src, &src, &m)
        .await
        .unwrap();
    s.events.take();

    let digest = transfer::copy(
        &s.t,
        s.registry.clone(),
        s.registry.clone(),
        &src,
        &dst,
        &platform("linux/amd64"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(digest, m.digest);
    assert_eq!(
        s.events.take(),
        expect(&m, |d| format!("mounted {d} from src/app"))
    );
    let copied = s.registry.client().get_manifest(&dst).await.unwrap();
    assert_eq!(copied.bytes, m.bytes);

    // From the directory to a third repository: its record of where the
    // blobs went (the first push) makes them mounts too.
    let third = Reference::parse(&format!("{}/third/app:1", s.addr)).unwrap();
    transfer::push_tree(&s.t, local, s.registry.clone(), &third, &third, &m)
        .await
        .unwrap();
    assert_eq!(
        s.events.take(),
        expect(&m, |d| format!("mounted {d} from src/app"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_of_two_platforms_pulls_only_the_one_asked_for() {
    let Some(s) = setup() else { return };
    let local = Arc::new(Dir::new(&s.tmp.path().join("local")));
    let amd = image(&local, "amd", "linux/amd64");
    let arm = image(&local, "arm", "linux/arm64");
    let entry = |m: &Manifest, arch: &str| {
        format!(
            r#"{{"mediaType":"{OCI_MANIFEST}","digest":"{}","size":{},"platform":{{"os":"linux","architecture":"{arch}"}}}}"#,
            m.digest,
            m.bytes.len()
        )
    };
    let body = format!(
        r#"{{"schemaVersion":2,"mediaType":"{OCI_INDEX}","manifests":[{},{}]}}"#,
        entry(&amd, "amd64"),
        entry(&arm, "arm64")
    );
    let index = Manifest::new(body.into_bytes(), Some(OCI_INDEX)).unwrap();
    let r = Reference::parse(&format!("{}/multi/app:1", s.addr)).unwrap();
    transfer::push_tree(&s.t, local.clone(), s.registry.clone(), &r, &r, &index)
        .await
        .unwrap();
    let mut want = expect(&amd, |d| format!("done Push {d}"));
    want.extend(expect(&arm, |d| format!("done Push {d}")));
    want.push(format!("manifest {}", index.digest));
    assert_eq!(s.events.take(), sorted(want));
    assert_eq!(
        s.registry.client().manifest_digest(&r).await.unwrap(),
        index.digest
    );

    // Pushed again: the registry has both entries (HEAD), so no blob is looked at.
    transfer::push_tree(&s.t, local.clone(), s.registry.clone(), &r, &r, &index)
        .await
        .unwrap();
    assert_eq!(s.events.take(), vec![format!("manifest {}", index.digest)]);

    let back = Arc::new(Dir::new(&s.tmp.path().join("back")));
    let pulled = transfer::pull(
        &s.t,
        s.registry.clone(),
        back.clone(),
        &r,
        &platform("linux/arm64/v8"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(pulled.manifest.digest, arm.digest);
    assert_eq!(pulled.index.as_ref(), Some(&index.digest));
    assert_eq!(
        back.tagged("1"),
        Some((OCI_MANIFEST.into(), arm.digest.clone()))
    );
    for d in blobs_of(&arm) {
        assert_eq!(back.get(&d.digest), local.get(&d.digest));
    }
    for d in blobs_of(&amd) {
        assert!(back.get(&d.digest).is_none(), "{} was pulled", d.digest);
    }

    // A platform the index lacks: the error names what it has.
    let err = transfer::pull(
        &s.t,
        s.registry.clone(),
        back,
        &r,
        &platform("linux/s390x"),
        false,
    )
    .await
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{r}: no image for platform linux/s390x (it has linux/amd64, linux/arm64)")
    );
}

/// A directory sink with a hook run before each blob is written (in the
/// transfer's task, as a slow unpack would run), that "unpacks" layers as they
/// stream: a blob handed a diff_id is reported unpacked.
struct Hooked {
    dir: Dir,
    /// What `layer_diff_ids` answers (checked asked once the config is in).
    diff_ids: Vec<Option<Digest>>,
    before_write: Box<BeforeWrite>,
}

type BeforeWrite = dyn Fn(&Dir, &BlobWrite<'_>) + Send + Sync;

impl ImageSink for Hooked {
    fn has_blob<'a>(
        &'a self,
        to: &'a Reference,
        blob: &'a Descriptor,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        self.dir.has_blob(to, blob)
    }

    fn has_manifest<'a>(
        &'a self,
        to: &'a Reference,
        digest: &'a Digest,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        self.dir.has_manifest(to, digest)
    }

    fn write_blob<'a>(
        &'a self,
        to: &'a Reference,
        w: BlobWrite<'a>,
    ) -> BoxFuture<'a, transfer::Result<BlobOutcome>> {
        (self.before_write)(&self.dir, &w);
        let unpacking = w.unpack_as.is_some();
        Box::pin(async move {
            match self.dir.write_blob(to, w).await? {
                BlobOutcome::Written { chunks, .. } => Ok(BlobOutcome::Written {
                    chunks,
                    unpacked: unpacking,
                }),
                other => Ok(other),
            }
        })
    }

    fn layer_diff_ids(&self, config: &Descriptor, layers: usize) -> Vec<Option<Digest>> {
        // Asked only once the config is in.
        assert!(
            self.dir.get(&config.digest).is_some(),
            "config not stored yet"
        );
        assert_eq!(layers, self.diff_ids.len());
        self.diff_ids.clone()
    }

    fn write_manifest<'a>(
        &'a self,
        to: &'a Reference,
        m: &'a Manifest,
        upstream_index: Option<&'a Digest>,
    ) -> BoxFuture<'a, transfer::Result<()>> {
        self.dir.write_manifest(to, m, upstream_index)
    }
}

/// Says which blobs a pull reported as unpacked.
#[derive(Default)]
struct Unpacked(Mutex<Vec<(Digest, bool)>>);

impl TransferReporter for Unpacked {
    fn event(&self, e: TransferEvent<'_>) {
        if let TransferEvent::BlobDone { blob, unpacked, .. } = e {
            self.0.lock().unwrap().push((blob.digest.clone(), unpacked));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unpacking_pull_stores_the_config_first_and_hands_each_layer_its_diff_id() {
    let Some(s) = setup() else { return };
    let local = Arc::new(Dir::new(&s.tmp.path().join("local")));
    let m = image(&local, "unpack", "linux/amd64");
    let r = Reference::parse(&format!("{}/app/unpack:1", s.addr)).unwrap();
    transfer::push_tree(&s.t, local, s.registry.clone(), &r, &r, &m)
        .await
        .unwrap();
    let blobs = blobs_of(&m);
    let (config, layers) = (&blobs[0], &blobs[1..]);
    // Stand-in diff_ids: the second layer's is unknown, so it is only stored.
    let ids = vec![Some(Digest::of(b"1")), None];
    let writes = Arc::new(Mutex::new(Vec::new()));
    let seen = writes.clone();
    let sink = Arc::new(Hooked {
        dir: Dir::new(&s.tmp.path().join("back")),
        diff_ids: ids.clone(),
        before_write: Box::new(move |_, w| {
            let arrived = (w.blob.digest.clone(), w.unpack_as.cloned());
            seen.lock().unwrap().push(arrived);
        }),
    });
    let report = Arc::new(Unpacked::default());
    let t = Transfer::new(report.clone(), 4);
    transfer::pull(
        &t,
        s.registry.clone(),
        sink.clone(),
        &r,
        &platform("linux/amd64"),
        true,
    )
    .await
    .unwrap();
    let writes = writes.lock().unwrap().clone();
    assert_eq!(writes[0], (config.digest.clone(), None), "{writes:?}");
    let mut rest = writes[1..].to_vec();
    rest.sort();
    let mut want: Vec<(Digest, Option<Digest>)> = layers
        .iter()
        .map(|l| l.digest.clone())
        .zip(ids.iter().cloned())
        .collect();
    want.sort();
    assert_eq!(rest, want);
    let mut told = report.0.lock().unwrap().clone();
    told.sort();
    let mut want = vec![
        (config.digest.clone(), false),
        (layers[0].digest.clone(), true),
        (layers[1].digest.clone(), false),
    ];
    want.sort();
    assert_eq!(told, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_layer_stuck_in_its_sink_does_not_stall_the_other_layers() {
    let Some(s) = setup() else { return };
    let local = Arc::new(Dir::new(&s.tmp.path().join("local")));
    let m = image(&local, "stuck", "linux/amd64");
    let r = Reference::parse(&format!("{}/app/stuck:1", s.addr)).unwrap();
    transfer::push_tree(&s.t, local, s.registry.clone(), &r, &r, &m)
        .await
        .unwrap();
    let blobs = blobs_of(&m);
    // Writing one blob blocks its thread, as a slow unpack does, until another
    // blob has been written (or ten seconds pass).
    let (slow, wait_for) = (blobs[1].digest.clone(), blobs[2].digest.clone());
    let saw_other = Arc::new(Mutex::new(None));
    let saw = saw_other.clone();
    let sink = Arc::new(Hooked {
        dir: Dir::new(&s.tmp.path().join("back")),
        diff_ids: Vec::new(),
        before_write: Box::new(move |dir, w| {
            if w.blob.digest == slow {
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while dir.get(&wait_for).is_none() && std::time::Instant::now() < deadline {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                *saw.lock().unwrap() = Some(dir.get(&wait_for).is_some());
            }
        }),
    });
    transfer::pull(
        &s.t,
        s.registry.clone(),
        sink.clone(),
        &r,
        &platform("linux/amd64"),
        false,
    )
    .await
    .unwrap();
    assert_eq!(*saw_other.lock().unwrap(), Some(true));
}

/// A directory sink that hashes each blob itself, as the store's ingest does,
/// and so tells the transfer not to hash on the way.
struct Verifying {
    dir: Dir,
}

impl ImageSink for Verifying {
    fn verifies_digests(&self) -> bool {
        true
    }

    fn has_blob<'a>(
        &'a self,
        to: &'a Reference,
        blob: &'a Descriptor,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        self.dir.has_blob(to, blob)
    }

    fn has_manifest<'a>(
        &'a self,
        to: &'a Reference,
        digest: &'a Digest,
    ) -> BoxFuture<'a, transfer::Result<bool>> {
        self.dir.has_manifest(to, digest)
    }

    fn write_blob<'a>(
        &'a self,
        _to: &'a Reference,
        w: BlobWrite<'a>,
    ) -> BoxFuture<'a, transfer::Result<BlobOutcome>> {
        Box::pin(async move {
            let mut bytes = Vec::new();
            let progress = |n: u64| (w.progress)(n);
            w.read_into(&mut bytes, &progress).await?;
            let actual = sha256(&bytes);
            if actual != w.blob.digest {
                return Err(invalid(&format!(
                    "sink: blob {} hashes to {actual}, not stored",
                    w.blob.digest
                )));
            }
            self.dir.put(&bytes, &w.blob.media_type);
            Ok(BlobOutcome::Written {
                chunks: 1,
                unpacked: false,
            })
        })
    }

    fn write_manifest<'a>(
        &'a self,
        to: &'a Reference,
        m: &'a Manifest,
        upstream_index: Option<&'a Digest>,
    ) -> BoxFuture<'a, transfer::Result<()>> {
        self.dir.write_manifest(to, m, upstream_index)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verifying_sink_alone_hashes_a_corrupted_blob_and_commits_nothing() {
    let Some(s) = setup() else { return };
    let local = Arc::new(Dir::new(&s.tmp.path().join("local")));
    let m = image(&local, "corrupt", "linux/amd64");
    let r = Reference::parse(&format!("{}/app/corrupt:1", s.addr)).unwrap();
    transfer::push_tree(&s.t, local.clone(), s.registry.clone(), &r, &r, &m)
        .await
        .unwrap();
    // One byte of a layer changed where the registry keeps it: same size, so
    // only a hash can tell.
    let layer = blobs_of(&m)[1].clone();
    let data = s
        .server
        .data_dir()
        .join("docker/registry/v2/blobs/sha256")
        .join(&layer.digest.hex()[..2])
        .join(layer.digest.hex())
        .join("data");
    let mut bytes = std::fs::read(&data).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&data, &bytes).unwrap();
    let actual = sha256(&bytes);
    let amd64 = platform("linux/amd64");

    // The verifying sink gets the bytes unhashed: its own check fails, naming
    // both digests, and neither the blob nor the tag is kept.
    let sink = Arc::new(Verifying {
        dir: Dir::new(&s.tmp.path().join("verifying")),
    });
    let err = transfer::pull(&s.t, s.registry.clone(), sink.clone(), &r, &amd64, false)
        .await
        .unwrap_err();
    assert!(matches!(err, TransferError::Endpoint(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        format!("sink: blob {} hashes to {actual}, not stored", layer.digest)
    );
    assert!(sink.dir.get(&layer.digest).is_none());
    assert!(sink.dir.get(&actual).is_none());
    assert_eq!(sink.dir.tagged("1"), None);

    // A sink that does not verify is still protected by the client's hash.
    let plain = Arc::new(Dir::new(&s.tmp.path().join("plain")));
    let err = transfer::pull(&s.t, s.registry.clone(), plain.clone(), &r, &amd64, false)
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            TransferError::Registry(registry_client::Error::DigestMismatch { digest, actual: a, .. })
                if *digest == layer.digest && *a == actual
        ),
        "{err:?}"
    );
    assert!(plain.get(&layer.digest).is_none());
    assert_eq!(plain.tagged("1"), None);
}
