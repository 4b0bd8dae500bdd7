//! commit and diff: a container's writable layer against its image
//! ([`builder::container`] does the work), and `-p` values for run. The verbs
//! resolve a container to its image's manifest digest and upper directory, then
//! call these.

use std::io::Write;
use std::path::Path;

use anyhow::{bail, Result};
use builder::container::{self, CommitOptions};
use builder::sandbox::PortForward;
use layer_cache::containers::{Container, ContainerError, Containers, RunLock};
use layer_cache::image::ContainerConfig;
use layer_cache::layer::LayerOptions;
use layer_cache::{Digest, ImageRef, Store};

#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// Apply a Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message
    #[arg(short, long)]
    pub message: Option<String>,
    /// Author (e.g. "Ann <ann@example.com>")
    #[arg(short, long)]
    pub author: Option<String>,
    /// Container name or id
    pub container: String,
    /// Name for the new image (REPOSITORY[:TAG]); without one the image is untagged
    pub image: Option<String>,
}

/// `commit`: the image `image` plus the container's upper directory `upper` as a
/// new image, tagged as `a.image` says; prints its id (the manifest digest) as
/// `import` does. `config` is the container's config as it was run (`None`: the
/// image's).
pub fn commit(
    store: &Store,
    image: &Digest,
    upper: &Path,
    config: Option<ContainerConfig>,
    a: &CommitArgs,
) -> Result<i32> {
    let name = a.image.as_deref().map(ImageRef::parse).transpose()?;
    if let (Some(n), Some(given)) = (&name, &a.image) {
        if n.digest.is_some() {
            bail!("commit: {given:?}: the new image's name cannot have a digest");
        }
    }
    // Held across commit and tag, so a prune in between cannot take the new blobs.
    let _usage = store.usage_lock()?;
    let desc = container::commit(
        store,
        image,
        upper,
        &CommitOptions {
            changes: a.changes.clone(),
            message: a.message.clone(),
            author: a.author.clone(),
            config,
            layer: LayerOptions::default(),
            created: None,
        },
    )?;
    if let Some(n) = &name {
        store.set_tag(n, &desc)?;
    }
    println!("{}", layer_cache::image::descriptor_digest(&desc)?);
    Ok(0)
}

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    /// Container name or id
    pub container: String,
}

/// The container `name`, held against `start` while the caller works on its layer.
fn stopped_container(
    g: &crate::Globals,
    name: &str,
    verb: &str,
) -> Result<(Store, Containers, Container, RunLock)> {
    let store = g.store()?;
    let cs = Containers::open(store.root())?;
    let c = cs.lookup(name)?;
    let lock = cs.lock_for_run(&c).map_err(|e| match e {
        ContainerError::AlreadyRunning(_) => anyhow::anyhow!(
            "{verb} {name}: the container is running; stop it first (mybuild cannot pause a container)"
        ),
        other => other.into(),
    })?;
    Ok((store, cs, c, lock))
}

/// The `commit` verb: the container's writable layer on its image, with the
/// container's command, environment, user and directory as its config.
pub fn commit_verb(g: &crate::Globals, a: &CommitArgs) -> Result<i32> {
    let (store, cs, c, _lock) = stopped_container(g, &a.container, "commit")?;
    let img = store.load_image(&layer_cache::image::descriptor(
        layer_cache::image::OCI_MANIFEST,
        &c.image_digest,
        0,
    ))?;
    let mut config = img.config.config.clone().unwrap_or_default();
    let r = &c.config;
    config.entrypoint = (!r.entrypoint.is_empty()).then(|| r.entrypoint.clone());
    config.cmd = (!r.cmd.is_empty()).then(|| r.cmd.clone());
    config.env = r.env.clone();
    config.user = (!r.user.is_empty()).then(|| r.user.clone());
    config.working_dir = (!r.workdir.is_empty()).then(|| r.workdir.clone());
    commit(
        &store,
        &c.image_digest,
        &cs.upper_dir(&c.id),
        Some(config),
        a,
    )
}

/// The `diff` verb.
pub fn diff_verb(g: &crate::Globals, a: &DiffArgs) -> Result<i32> {
    let store = g.store()?;
    let cs = Containers::open(store.root())?;
    let c = cs.lookup(&a.container)?;
    diff(&store, &c.image_digest, &cs.upper_dir(&c.id))
}

/// `diff`: the container's changes, one `A`/`C`/`D` line each, as `docker diff`.
pub fn diff(store: &Store, image: &Digest, upper: &Path) -> Result<i32> {
    let changes = container::changes(store, image, upper)?;
    let mut out = std::io::stdout().lock();
    for c in &changes {
        writeln!(out, "{c}")?;
    }
    Ok(0)
}

/// clap's value parser for `run -p`/`--publish`.
/// The value is kept as given (the container's record holds it) once it parses.
pub fn publish(value: &str) -> std::result::Result<String, String> {
    PortForward::parse(value)
        .map(|_| value.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        commit: CommitArgs,
        #[arg(short = 'p', long = "publish", value_parser = publish)]
        ports: Vec<String>,
    }

    #[test]
    fn parses_dockers_commit_and_publish_flags() {
        let cli = Cli::try_parse_from([
            "x",
            "-c",
            "CMD [\"x\"]",
            "--change=ENV A=1",
            "-m",
            "msg",
            "-a",
            "Ann",
            "-p",
            "127.0.0.1:8080:80",
            "c1",
            "img:2",
        ])
        .expect("parse");
        assert_eq!(cli.commit.changes, ["CMD [\"x\"]", "ENV A=1"]);
        assert_eq!(cli.commit.message.as_deref(), Some("msg"));
        assert_eq!(cli.commit.author.as_deref(), Some("Ann"));
        assert_eq!(cli.commit.container, "c1");
        assert_eq!(cli.commit.image.as_deref(), Some("img:2"));
        assert_eq!(cli.ports, ["127.0.0.1:8080:80"]);
        let err = Cli::try_parse_from(["x", "-p", "80", "c1"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("a host port is needed"), "{err}");
    }
}
