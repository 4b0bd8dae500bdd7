//! registry-client against a real `docker-registry` on 127.0.0.1, with the
//! fault proxy in front where a test needs a misbehaving registry.

use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use oci_vocab::Digest;
use registry_client::auth::{CredentialStore, Credentials};
use registry_client::manifest::OCI_MANIFEST;
use registry_client::{
    BlobSource, Client, ClientOptions, Descriptor, Error, Manifest, PushOutcome, Reference,
};
use testdata::registry::{Fault, FaultKind, FaultProxy, Registry, RegistryOptions};
use tokio::io::AsyncRead;

fn registry_available() -> bool {
    testdata::require_tool("docker-registry")
}

/// A client that reads no credentials of the user running the tests and
/// retries quickly.
fn client(dir: &std::path::Path) -> Client {
    Client::new(ClientOptions {
        credentials: CredentialStore {
            path: dir.join("config.json"),
        },
        retry_base: Duration::from_millis(10),
        ..ClientOptions::from_env()
    })
}

struct Bytes(Vec<u8>);

impl BlobSource for Bytes {
    fn open(
        &self,
        offset: u64,
    ) -> BoxFuture<'_, std::io::Result<Box<dyn AsyncRead + Send + Unpin>>> {
        let rest = self.0[offset as usize..].to_vec();
        Box::pin(async move {
            Ok(Box::new(std::io::Cursor::new(rest)) as Box<dyn AsyncRead + Send + Unpin>)
        })
    }
}

fn descriptor(media_type: &str, bytes: &[u8]) -> Descriptor {
    serde_json::from_value(serde_json::json!({
        "mediaType": media_type,
        "digest": Digest::of(bytes),
        "size": bytes.len(),
    }))
    .expect("descriptor")
}

/// A registry and a client with its own credential store; `None` to skip.
fn setup() -> Option<(Registry, tempfile::TempDir, Client)> {
    if !registry_available() {
        return None;
    }
    let reg = Registry::start();
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    Some((reg, tmp, c))
}

fn reference(s: &str) -> Reference {
    Reference::parse(s).expect("reference")
}

/// Pushes a config and a layer and returns the image manifest naming them.
async fn push_image(c: &Client, r: &Reference) -> Manifest {
    let config =
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#;
    let layer = b"not really a tar, but a blob all the same".to_vec();
    let cd = descriptor("application/vnd.oci.image.config.v1+json", config);
    let ld = descriptor("application/vnd.oci.image.layer.v1.tar", &layer);
    c.push_blob(r, &cd, &Bytes(config.to_vec()), &[])
        .await
        .expect("push config");
    c.push_blob(r, &ld, &Bytes(layer), &[])
        .await
        .expect("push layer");
    let body = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": cd.media_type, "digest": cd.digest, "size": cd.size},
        "layers": [{"mediaType": ld.media_type, "digest": ld.digest, "size": ld.size}],
    });
    Manifest::new(serde_json::to_vec(&body).expect("json"), Some(OCI_MANIFEST)).expect("manifest")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pushed_blob_is_found_by_head_and_not_uploaded_again() {
    let Some((reg, _tmp, c)) = setup() else {
        return;
    };
    let r = reference(&format!("{}/blobs/a:1", reg.addr));
    let data = vec![7u8; 100_000];
    let d = descriptor("application/octet-stream", &data);
    assert!(!c.has_blob(&r, &d).await.unwrap());
    let first = c
        .push_blob(&r, &d, &Bytes(data.clone()), &[])
        .await
        .unwrap();
    assert_eq!(first, PushOutcome::Uploaded { chunks: 1 });
    assert!(c.has_blob(&r, &d).await.unwrap());
    let again = c
        .push_blob(&r, &d, &Bytes(data.clone()), &[])
        .await
        .unwrap();
    assert_eq!(again, PushOutcome::Exists);
    // Another repository of the same registry mounts it instead of uploading.
    let other = reference(&format!("{}/blobs/b:1", reg.addr));
    let mounted = c
        .push_blob(&other, &d, &Bytes(data.clone()), &["blobs/a".to_string()])
        .await
        .unwrap();
    assert_eq!(
        mounted,
        PushOutcome::Mounted {
            from: "blobs/a".into()
        }
    );
    let mut back = Vec::new();
    c.pull_blob(&other, &d, &mut back, &|_| {}).await.unwrap();
    assert_eq!(back, data);
    let owned = c.pull_blob_into(&r, &d, Vec::new(), &|_| {}).await.unwrap();
    assert_eq!(owned, data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_put_by_tag_reads_back_by_tag_and_by_digest() {
    let Some((reg, _tmp, c)) = setup() else {
        return;
    };
    let r = reference(&format!("{}/app:v1", reg.addr));
    let m = push_image(&c, &r).await;
    assert_eq!(c.put_manifest(&r, &m).await.unwrap(), m.digest);
    let by_tag = c.get_manifest(&r).await.unwrap();
    assert_eq!(
        (by_tag.bytes.clone(), by_tag.digest.clone()),
        (m.bytes.clone(), m.digest.clone())
    );
    let by_digest = c
        .get_manifest(&reference(&format!("{}/app@{}", reg.addr, m.digest)))
        .await
        .unwrap();
    assert_eq!(by_digest.bytes, m.bytes);
    assert_eq!(c.manifest_digest(&r).await.unwrap(), m.digest);
    assert!(c.has_manifest(&r, &m.digest).await.unwrap());
    assert_eq!(c.list_tags(&r).await.unwrap(), ["v1"]);
    assert_eq!(c.delete_manifest(&r).await.unwrap(), m.digest);
    assert!(!c.has_manifest(&r, &m.digest).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupted_blob_fails_its_digest_check() {
    if !registry_available() {
        return;
    }
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    let r = reference(&format!("{}/corrupt:1", proxy.addr));
    let data = b"the registry will flip the first byte of this".to_vec();
    let d = descriptor("application/octet-stream", &data);
    c.push_blob(&r, &d, &Bytes(data), &[]).await.unwrap();
    proxy.add(Fault::new("GET", d.digest.hex(), FaultKind::Corrupt, 1));
    let mut out = Vec::new();
    let err = c.pull_blob(&r, &d, &mut out, &|_| {}).await.unwrap_err();
    match &err {
        Error::DigestMismatch { digest, actual, .. } => {
            assert_eq!(digest, &d.digest);
            assert_ne!(actual, &d.digest);
        }
        e => panic!("expected a digest mismatch, got {e}"),
    }
    assert!(
        err.to_string().contains("the registry sent wrong data"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_with_retry_after_is_waited_out_and_retried() {
    if !registry_available() {
        return;
    }
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    let r = reference(&format!("{}/retry:1", proxy.addr));
    let m = push_image(&c, &r).await;
    c.put_manifest(&r, &m).await.unwrap();
    proxy.clear_log();
    proxy.add(Fault::new(
        "GET",
        "/manifests/1",
        FaultKind::Unavailable {
            retry_after: "1".into(),
        },
        1,
    ));
    let started = Instant::now();
    let got = c.get_manifest(&r).await.unwrap();
    assert_eq!(got.digest, m.digest);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured"
    );
    let gets: Vec<String> = proxy
        .requests()
        .into_iter()
        .filter(|q| q.starts_with("GET /v2/retry/manifests/1"))
        .collect();
    assert_eq!(gets.len(), 2, "{gets:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registry_failing_for_good_names_the_url_and_the_attempts() {
    if !registry_available() {
        return;
    }
    let reg = Registry::start();
    let proxy = FaultProxy::start(&reg.addr);
    let tmp = tempfile::tempdir().unwrap();
    let c = Client::new(ClientOptions {
        max_attempts: 3,
        ..client(tmp.path()).options().clone()
    });
    let r = reference(&format!("{}/down:1", proxy.addr));
    proxy.add(Fault::new(
        "GET",
        "/manifests/1",
        FaultKind::Status(503),
        10,
    ));
    let err = c.get_manifest(&r).await.unwrap_err();
    let resp = err.response().expect("a registry error");
    assert_eq!((resp.status, resp.attempts), (503, 3));
    let text = err.to_string();
    assert!(
        text.contains("registry answered 503")
            && text.contains(&format!("http://{}/v2/down/manifests/1", proxy.addr))
            && text.contains("after 3 attempts"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifest_unknown_carries_its_code_and_url() {
    let Some((reg, _tmp, c)) = setup() else {
        return;
    };
    let r = reference(&format!("{}/app:v1", reg.addr));
    let m = push_image(&c, &r).await;
    c.put_manifest(&r, &m).await.unwrap();
    let missing = reference(&format!("{}/app:missing", reg.addr));
    let err = c.get_manifest(&missing).await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
    assert_eq!(err.codes(), ["MANIFEST_UNKNOWN"]);
    let resp = err.response().unwrap();
    let url = format!("http://{}/v2/app/manifests/missing", reg.addr);
    assert_eq!(
        (resp.status, resp.url.as_str(), resp.attempts),
        (404, url.as_str(), 1)
    );
    let text = err.to_string();
    assert!(
        text.contains("MANIFEST_UNKNOWN") && text.contains(&url) && text.contains("not found"),
        "{text}"
    );
    assert!(!text.contains("attempts"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn htpasswd_auth_takes_the_right_password_only() {
    if !registry_available() || !testdata::require_tool("htpasswd") {
        return;
    }
    let reg = Registry::start_with(&RegistryOptions {
        basic_auth: Some(("alice".into(), "s3cret".into())),
        ..RegistryOptions::default()
    });
    let tmp = tempfile::tempdir().unwrap();
    let r = reference(&format!("{}/private:1", reg.addr));
    let data = b"private bytes".to_vec();
    let d = descriptor("application/octet-stream", &data);

    let anonymous = client(tmp.path());
    let err = anonymous.has_blob(&r, &d).await.unwrap_err();
    assert!(matches!(err, Error::Unauthorized { .. }), "{err:?}");
    assert!(err.to_string().contains("authentication required"), "{err}");

    let with = |password: &str| {
        Client::new(ClientOptions {
            credential_override: Some((
                reg.addr.clone(),
                Credentials::Basic {
                    username: "alice".into(),
                    password: password.into(),
                },
            )),
            ..client(tmp.path()).options().clone()
        })
    };
    let wrong = with("guess");
    assert!(wrong.check_login(&reg.addr).await.is_err());
    let right = with("s3cret");
    right.check_login(&reg.addr).await.unwrap();
    right.push_blob(&r, &d, &Bytes(data), &[]).await.unwrap();
    assert!(right.has_blob(&r, &d).await.unwrap());
}

/// Upload sessions the registry holds for `repo`.
fn upload_sessions(reg: &Registry, repo: &str) -> Vec<String> {
    let dir = reg
        .data_dir()
        .join("docker/registry/v2/repositories")
        .join(repo)
        .join("_uploads");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter(|e| e.path().join("startedat").exists() || e.path().join("data").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Pushes a `size`-byte blob to `repo` through a proxy holding the request that
/// `fault` names, drops the push once it is held, and checks that the registry
/// has the session open then and that `cancel_open_uploads` DELETEs it.
async fn dropped_push_is_cancelled(repo: &str, size: usize, fault: Fault) {
    let reg = Registry::start();
    let proxy = std::sync::Arc::new(FaultProxy::start(&reg.addr));
    let tmp = tempfile::tempdir().unwrap();
    let c = client(tmp.path());
    let r = reference(&format!("{}/{repo}:1", proxy.addr));
    let data = Bytes(vec![3u8; size]);
    let d = descriptor("application/octet-stream", &data.0);
    proxy.add(fault);
    let held = {
        let p = proxy.clone();
        tokio::task::spawn_blocking(move || p.wait_stalled())
    };
    tokio::select! {
        res = c.push_blob(&r, &d, &data, &[]) => panic!("the held push ended: {res:?}"),
        _ = held => {}
    }
    assert_eq!(upload_sessions(&reg, repo).len(), 1);
    c.cancel_open_uploads().await;
    let delete = format!("DELETE /v2/{repo}/blobs/uploads/");
    assert!(
        proxy.requests().iter().any(|q| q.starts_with(&delete)),
        "{:?}",
        proxy.requests()
    );
    assert_eq!(upload_sessions(&reg, repo), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_dropped_while_its_post_is_unanswered_still_cancels_the_session() {
    if !registry_available() {
        return;
    }
    // The registry opens the session; its answer, with the Location, reaches us
    // only after the push was dropped.
    let by = std::time::Duration::from_millis(600);
    let fault = Fault::new("POST", "/blobs/uploads/", FaultKind::Delay { by }, 1);
    dropped_push_is_cancelled("opening", 4096, fault).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_upload_is_cancelled_with_a_delete() {
    if !registry_available() {
        return;
    }
    // Dropped mid-PUT: the session is still open.
    let fault = Fault::new(
        "PUT",
        "/blobs/uploads/",
        FaultKind::Stall { after: 1024 },
        1,
    );
    dropped_push_is_cancelled("cancel", 256 << 10, fault).await;
}
