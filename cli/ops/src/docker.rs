//! `build --load`: an image handed to the Docker daemon through the `docker` CLI,
//! as a docker archive on `docker load`'s standard input (what buildx's `--load`
//! does with a docker-container builder).

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use layer_cache::{Digest, ImageRef, Store};

use crate::{OpsError, Result};

/// Pipes the image `digest` names, under each of `tags` (untagged without any), into
/// `docker load`; its standard output goes to `stdout`, its standard error is ours.
/// The image stays in the store whatever happens.
pub fn load(store: &Store, tags: &[ImageRef], digest: &Digest, stdout: Stdio) -> Result<()> {
    let image = match tags.first() {
        Some(t) => t.tagged_name(),
        None => digest.to_string(),
    };
    let docker = on_path("docker").ok_or_else(|| OpsError::DockerNotOnPath {
        image: image.clone(),
    })?;
    let manifest = store.resolve(&digest.to_string())?;
    let images: Vec<_> = if tags.is_empty() {
        vec![(None, manifest)]
    } else {
        tags.iter()
            .map(|t| (Some(t.clone()), manifest.clone()))
            .collect()
    };
    let mut child = Command::new(&docker)
        .arg("load")
        .stdin(Stdio::piped())
        .stdout(stdout)
        .spawn()
        .map_err(|source| OpsError::DockerLoadStart {
            docker: docker.clone(),
            source,
        })?;
    let written = match child.stdin.take() {
        Some(stdin) => {
            let mut w = std::io::BufWriter::new(stdin);
            store
                .save(&images, &mut w)
                .map_err(OpsError::from)
                .and_then(|()| w.flush().map_err(OpsError::DockerLoadWrite))
        }
        None => Ok(()),
    };
    // Its exit status first: a docker that quit early also breaks our pipe.
    let status = child.wait().map_err(|source| OpsError::DockerLoadStart {
        docker: docker.clone(),
        source,
    })?;
    if !status.success() {
        return Err(OpsError::DockerLoadFailed {
            status: status.to_string(),
            image,
        });
    }
    written
}

/// The first executable file called `name` in a PATH directory.
fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .filter(|d| !d.as_os_str().is_empty())
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}
