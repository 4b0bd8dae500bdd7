//! Pull into the store, push from it, copy between registries, and the base
//! puller of a build: registry-client runs the transfers; this wires the store in
//! ([`crate::store_io`]) and tells every step to a reporter. Signals are the
//! caller's: each future here can be dropped at any await.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use layer_cache::convert::ConvertOptions;
use layer_cache::oci_spec::image::Descriptor as OciDescriptor;
use layer_cache::{Digest, Store};
use registry_client::auth::{CredentialStore, Credentials};
use registry_client::reference::normalize_registry;
use registry_client::transfer::{
    self, Action, Registry, Transfer, TransferEvent, TransferReporter,
};
use registry_client::{Client, ClientOptions, Descriptor, Manifest, Platform, Reference};

use crate::store_io::StoreIo;
use crate::{OpsError, Reporter, Result};

/// A client for the environment's registries, with `insecure` hosts allowed
/// plain HTTP or unverified HTTPS.
pub fn client(insecure: &[String]) -> Arc<Client> {
    Arc::new(Client::new(client_options(insecure)))
}

/// The environment's client options, with `insecure` hosts.
pub fn client_options(insecure: &[String]) -> ClientOptions {
    let mut o = ClientOptions::from_env();
    o.insecure_registries = insecure.iter().map(|h| normalize_registry(h)).collect();
    o
}

/// The runtime transfers run on.
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(OpsError::Runtime)
}

/// `--platform` for a pull or copy: the host's when none is given.
pub fn want_platform(p: Option<&str>) -> Result<Platform> {
    Ok(match p {
        Some(p) => Platform::parse(p)?,
        None => Platform::host(),
    })
}

/// Transfers with `client`'s concurrency, told to `reporter`.
fn transfer(client: &Client, reporter: Arc<dyn TransferReporter>) -> Transfer {
    Transfer::new(reporter, client.options().max_concurrent_per_host)
}

/// Pulls `r` into the store and tags it; returns the stored manifest's digest.
pub async fn pull_into_store(
    store: &Store,
    client: &Arc<Client>,
    r: &Reference,
    platform: &Platform,
    reporter: Arc<dyn TransferReporter>,
    unpack: bool,
) -> Result<Digest> {
    let _lock = store.usage_lock()?;
    let io = Arc::new(StoreIo::new(store));
    let pulled = transfer::pull(
        &transfer(client, reporter),
        Arc::new(Registry::new(client.clone())),
        io.clone(),
        r,
        platform,
        unpack,
    )
    .await?;
    io.save_sources();
    Ok(pulled.manifest.digest)
}

/// Pushes a manifest whose config and layers are in the store (the build cache's
/// artifact) to `dest`, as `push` sends an image.
pub async fn push_manifest(
    store: &Store,
    client: &Arc<Client>,
    dest: &Reference,
    m: &Manifest,
    reporter: Arc<dyn TransferReporter>,
) -> Result<()> {
    let io = Arc::new(StoreIo::new(store));
    let t = transfer(client, reporter);
    let sink = Arc::new(Registry::new(client.clone()));
    transfer::push_tree(&t, io.clone(), sink, dest, dest, m).await?;
    io.save_sources();
    Ok(())
}

/// Pulls one blob of `r`'s repository into the store, verified, without progress
/// output (a build's imported cache layer, fetched while steps run).
pub async fn pull_blob_quietly(
    store: &Store,
    client: &Arc<Client>,
    r: &Reference,
    d: &Descriptor,
) -> Result<()> {
    let t = Transfer::quiet(1);
    let source = Registry::new(client.clone());
    transfer::transfer_blob(&t, &source, &StoreIo::blobs_only(store), r, d, None).await?;
    Ok(())
}

/// Pushes a stored image to `dest`, its layers converted as `convert` says (built
/// layers are compressed here, as they leave); returns the pushed manifest.
pub async fn push_from_store(
    store: &Store,
    client: &Arc<Client>,
    image: &str,
    dest: &Reference,
    convert: &ConvertOptions,
    reporter: Arc<dyn TransferReporter>,
) -> Result<OciDescriptor> {
    let io = Arc::new(StoreIo::new(store));
    // The converted documents are untagged blobs until the push ends.
    let _usage = store.usage_lock()?;
    let stored = store.resolve(image)?;
    let leaving = {
        let store = store.clone();
        let convert = convert.clone();
        tokio::task::spawn_blocking(move || store.convert_image(&stored, &convert))
            .await
            .map_err(|e| OpsError::invalid(format!("compressing {image}: {e}")))??
    };
    let (m, upstream) = io.image_of(&leaving)?;
    let mut dest = dest.clone();
    if dest.tag.is_none() && dest.digest.is_none() {
        dest.tag = Some("latest".into());
    }
    let t = transfer(client, reporter);
    let sink = Arc::new(Registry::new(client.clone()));
    transfer::push(&t, io.clone(), sink, &dest, &dest, &m, upstream.as_ref()).await?;
    io.save_sources();
    Ok(layer_cache::image::descriptor(
        &m.media_type,
        &m.digest,
        m.bytes.len() as u64,
    ))
}

/// A copy's destination: `dst`, tagged as `src` (or `latest`) when it names no
/// tag or digest.
pub fn copy_destination(src: &Reference, dst: &Reference) -> Reference {
    let mut dst = dst.clone();
    if dst.tag.is_none() && dst.digest.is_none() {
        dst.tag = Some(src.tag.clone().unwrap_or_else(|| "latest".into()));
    }
    dst
}

/// Copies `src` to `dst` between registries (one platform, or all of them);
/// returns the digest written.
pub async fn copy(
    client: &Arc<Client>,
    src: &Reference,
    dst: &Reference,
    want: &Platform,
    all_platforms: bool,
    reporter: Arc<dyn TransferReporter>,
) -> Result<Digest> {
    let registry = Arc::new(Registry::new(client.clone()));
    let t = transfer(client, reporter);
    let copied = transfer::copy(
        &t,
        registry.clone(),
        registry,
        src,
        dst,
        want,
        all_platforms,
    );
    Ok(copied.await?)
}

/// Pulls bases for a build: missing ones always, all of them with `--pull`.
pub struct BasePuller {
    store: Store,
    client: Arc<Client>,
    rt: tokio::runtime::Runtime,
    always: bool,
    reporter: Arc<dyn Reporter>,
    done: Mutex<BTreeSet<String>>,
    pub errors: Mutex<Vec<String>>,
}

impl BasePuller {
    pub fn new(
        store: &Store,
        always: bool,
        client: Arc<Client>,
        reporter: Arc<dyn Reporter>,
    ) -> Result<BasePuller> {
        Ok(BasePuller {
            store: store.clone(),
            client,
            rt: runtime()?,
            always,
            reporter,
            done: Default::default(),
            errors: Default::default(),
        })
    }

    /// Makes `reference` available in the store (pulling it when needed).
    pub fn ensure(&self, reference: &str, platform: Option<Platform>) {
        let Ok(mut done) = self.done.lock() else {
            return;
        };
        let platform = platform.unwrap_or_else(Platform::host);
        if !done.insert(format!("{reference} {platform}")) {
            return;
        }
        // A stored image of another platform is pulled again for this one.
        let stored = self.store.resolve(reference).ok().map(|d| {
            self.store
                .load_image(&d)
                .map_or(true, |img| img.config.is_for(&platform))
        });
        if !self.always && stored == Some(true) {
            return;
        }
        let Ok(r) = Reference::parse(reference) else {
            return;
        };
        let view = self.reporter.transfer();
        view.event(TransferEvent::Start {
            action: Action::Pull,
            reference: &r,
        });
        if let Err(e) = self.rt.block_on(pull_into_store(
            &self.store,
            &self.client,
            &r,
            &platform,
            view,
            true,
        )) {
            if let Ok(mut errs) = self.errors.lock() {
                errs.push(format!("pulling {reference}: {}", crate::chain_text(&e)));
            }
        }
    }

    /// Pushes a stored image to the registry its name says (`build --push`).
    pub fn push(
        &self,
        store: &Store,
        image: &str,
        convert: &ConvertOptions,
    ) -> Result<OciDescriptor> {
        let dest = Reference::parse(image)?;
        let view = self.reporter.transfer();
        view.event(TransferEvent::Start {
            action: Action::Push,
            reference: &dest,
        });
        self.rt.block_on(async {
            let pushed = push_from_store(store, &self.client, image, &dest, convert, view).await;
            // A failed blob drops its siblings mid-upload: cancel their sessions.
            self.client.cancel_open_uploads().await;
            pushed
        })
    }
}

/// Checks `username` and `password` against `registry`, then keeps them where
/// Docker keeps credentials; returns where that is.
pub fn login(
    registry: &str,
    username: &str,
    password: &str,
    insecure: &[String],
) -> Result<String> {
    let mut o = client_options(insecure);
    o.credential_override = Some((
        registry.to_string(),
        Credentials::Basic {
            username: username.to_string(),
            password: password.to_string(),
        },
    ));
    let client = Client::new(o);
    match runtime()?.block_on(client.check_login(registry)) {
        Ok(()) => {}
        Err(registry_client::Error::Unauthorized { .. }) => {
            return Err(OpsError::LoginRefused {
                registry: registry.to_string(),
                username: username.to_string(),
            })
        }
        Err(source) => {
            return Err(OpsError::Login {
                registry: registry.to_string(),
                username: username.to_string(),
                source: Box::new(source),
            })
        }
    }
    let store = CredentialStore::from_env();
    store.store(registry, username, password)?;
    Ok(registry_client::auth::describe(&store, registry))
}
