//! The one error of the operations: what failed, naming the path, reference or
//! digest concerned, with the library error beneath as its source. The CLI prints
//! the chain on one line (`what: cause`).

use std::path::PathBuf;

use layer_cache::Digest;

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] layer_cache::StoreError),
    #[error(transparent)]
    Registry(#[from] registry_client::Error),
    #[error(transparent)]
    Transfer(#[from] registry_client::transfer::TransferError),
    #[error(transparent)]
    Reference(#[from] oci_vocab::ReferenceError),
    #[error(transparent)]
    Platform(#[from] oci_vocab::PlatformError),
    /// Boxed: the builder's error is large, and every `Result` here carries this.
    #[error(transparent)]
    Build(Box<builder::exec::BuildError>),
    #[error(transparent)]
    Context(#[from] builder::context::ContextError),
    /// A command-line value that does not parse; the text names the option.
    #[error("{0}")]
    Invalid(String),
    /// A command-line value that does not parse, for the reason beneath.
    #[error("{what}")]
    InvalidBecause {
        what: String,
        #[source]
        source: Box<OpsError>,
    },
    #[error("{verb} {}", path.display())]
    Io {
        verb: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}")]
    Stdin {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{reference}: stored manifest digest differs from the registry's")]
    ManifestDigestMismatch { reference: String },
    #[error("index entry {digest} is not in the store")]
    IndexEntryMissing {
        digest: Digest,
        #[source]
        source: layer_cache::StoreError,
    },
    #[error("blob {digest} is not in the store")]
    BlobMissing { digest: Digest },
    #[error("exporting cache mount {id:?}")]
    CacheMountExport {
        id: String,
        #[source]
        source: builder::layer::WriteLayerError,
    },
    #[error("unpacking cache mount part {digest}")]
    CacheMountPart {
        digest: Digest,
        #[source]
        source: layer_cache::unpack::UnpackError,
    },
    #[error("copying blob {digest}")]
    CopyBlob {
        digest: Digest,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    CacheArtifact(#[from] layer_cache::cache_artifact::CacheArtifactError),
    #[error("no registry client")]
    NoRegistryClient,
    /// A `--cache-from` registry has no such cache.
    #[error("not found")]
    CacheNotFound,
    #[error("exporting cache to {dest}")]
    CacheExport {
        dest: String,
        #[source]
        source: Box<OpsError>,
    },
    #[error(transparent)]
    Export(#[from] layer_cache::export::ExportError),
    #[error(transparent)]
    WriteTo(#[from] layer_cache::write_to::WriteToError),
    #[error(transparent)]
    Change(#[from] builder::exec::config::ChangeError),
    /// Writing an archive to standard output.
    #[error(transparent)]
    Stdout(std::io::Error),
    #[error("refusing to write an archive to a terminal; name a file or redirect")]
    ArchiveToTerminal,
    #[error("cannot import as {name:?}: a name takes a tag, not a digest")]
    ImportWithDigest { name: String },
    #[error("cannot tag {name:?}: a new name takes a tag, not a digest")]
    TagWithDigest { name: String },
    #[error("{what}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("building for {platform}")]
    BuildFor {
        platform: String,
        #[source]
        source: Box<builder::exec::BuildError>,
    },
    #[error(transparent)]
    Serialize(serde_json::Error),
    #[error("--secret id={id}: reading {}", path.display())]
    SecretFile {
        id: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    SshAgent(#[from] builder::exec::ssh_agent::SshAgentError),
    #[error(
        "logging in to {registry} as {username}: the registry refused the username or password"
    )]
    LoginRefused { registry: String, username: String },
    #[error("logging in to {registry} as {username}")]
    Login {
        registry: String,
        username: String,
        #[source]
        source: Box<registry_client::Error>,
    },
    #[error("starting the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error(
        "--load: docker is not on PATH; the image is in mybuild's store as {image} \
         (`mybuild save {image} | docker load` loads it where docker is)"
    )]
    DockerNotOnPath { image: String },
    #[error("--load: running {} load", docker.display())]
    DockerLoadStart {
        docker: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--load: writing the archive to docker load")]
    DockerLoadWrite(#[source] std::io::Error),
    #[error("--load: docker load failed ({status}); the image is in mybuild's store as {image}")]
    DockerLoadFailed { status: String, image: String },
}

pub type Result<T, E = OpsError> = std::result::Result<T, E>;

impl From<builder::exec::BuildError> for OpsError {
    fn from(e: builder::exec::BuildError) -> OpsError {
        OpsError::Build(Box::new(e))
    }
}

impl OpsError {
    pub(crate) fn invalid(text: impl Into<String>) -> OpsError {
        OpsError::Invalid(text.into())
    }

    pub(crate) fn invalid_because(
        text: impl Into<String>,
        source: impl Into<OpsError>,
    ) -> OpsError {
        OpsError::InvalidBecause {
            what: text.into(),
            source: Box::new(source.into()),
        }
    }

    pub(crate) fn io(
        verb: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> OpsError {
        let path = path.into();
        move |source| OpsError::Io { verb, path, source }
    }
}

/// `e` and its causes joined by `: `, as the CLI's `{:#}` of an error chain reads
/// (for warnings that carry an error inside their text).
pub fn chain_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}
