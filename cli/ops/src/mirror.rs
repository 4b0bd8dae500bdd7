//! Mirroring: `copy` between any two ends (a registry, an OCI layout directory,
//! an OCI archive, a Docker archive), and every tag of a repository.
//!
//! Registry to registry streams blob by blob ([`crate::registry::copy`]). Any
//! other pair goes through a scratch store in a temporary directory, so the one
//! archive reader and writer serve here too: a source is pulled, loaded
//! ([`layer_cache::Store::load`]) or, for a layout directory, streamed as a tar
//! into the same loader; the destination is pushed, saved
//! ([`layer_cache::Store::save`]) or written as a layout ([`LayoutDir`]). The
//! user's store is never touched.
//!
//! Digests are kept wherever the format carries the manifest: registries, OCI
//! layouts and OCI archives. A Docker archive holds configs and layers only
//! (`manifest.json` names no manifest), so a source read from one gets a new
//! manifest digest; layers and config keep theirs. Archives written here are OCI
//! and Docker archives at once, as `save` writes them, so reading one back as
//! `oci-archive:` keeps the digest.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use layer_cache::image::{canonical_json, descriptor_digest, REF_NAME_ANNOTATION};
use layer_cache::layout::LayoutDir;
use layer_cache::oci_spec::image::Descriptor as OciDescriptor;
use layer_cache::{Digest, ImageRef, Store};
use registry_client::transfer::{self, Registry, Transfer, TransferReporter};
use registry_client::{Client, Platform, Reference};
use serde_json::Value;

use crate::store_io::{local_name, StoreIo};
use crate::{OpsError, Result};

/// One end of a copy, named as skopeo names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// `[docker://]REF`
    Registry(Reference),
    /// `oci:DIR[:TAG]`: an OCI image layout directory; TAG is the
    /// `org.opencontainers.image.ref.name` of its index entry.
    OciDir { dir: PathBuf, tag: Option<String> },
    /// `oci-archive:FILE[:TAG]`: that layout as a tar.
    OciArchive { file: PathBuf, tag: Option<String> },
    /// `docker-archive:FILE[:NAME]`: a `docker save` tar; NAME is its RepoTag.
    DockerArchive { file: PathBuf, name: Option<String> },
}

impl End {
    /// Parses an end: a transport prefix, else a registry reference. The path
    /// ends at the first `:` after the prefix, as containers/image reads it.
    pub fn parse(s: &str) -> Result<End> {
        let split = |rest: &str| -> (PathBuf, Option<String>) {
            match rest.split_once(':') {
                Some((p, t)) if !t.is_empty() => (PathBuf::from(p), Some(t.to_string())),
                Some((p, _)) => (PathBuf::from(p), None),
                None => (PathBuf::from(rest), None),
            }
        };
        let path_of = |kind: &str, rest: &str| -> Result<(PathBuf, Option<String>)> {
            let (p, t) = split(rest);
            if p.as_os_str().is_empty() {
                return Err(OpsError::invalid(format!("{s:?}: {kind}: needs a path")));
            }
            Ok((p, t))
        };
        if let Some(rest) = s.strip_prefix("docker://") {
            return Ok(End::Registry(Reference::parse(rest)?));
        }
        if let Some(rest) = s.strip_prefix("oci:") {
            let (dir, tag) = path_of("oci", rest)?;
            return Ok(End::OciDir { dir, tag });
        }
        if let Some(rest) = s.strip_prefix("oci-archive:") {
            let (file, tag) = path_of("oci-archive", rest)?;
            return Ok(End::OciArchive { file, tag });
        }
        if let Some(rest) = s.strip_prefix("docker-archive:") {
            let (file, name) = path_of("docker-archive", rest)?;
            if let Some(n) = &name {
                // A RepoTag: checked now rather than after the copy.
                ImageRef::parse(n)?;
            }
            return Ok(End::DockerArchive { file, name });
        }
        Ok(End::Registry(Reference::parse(s)?))
    }

    pub fn registry(&self) -> Option<&Reference> {
        match self {
            End::Registry(r) => Some(r),
            _ => None,
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let with = |f: &mut fmt::Formatter<'_>, kind: &str, p: &Path, t: &Option<String>| {
            write!(f, "{kind}:{}", p.display())?;
            match t {
                Some(t) => write!(f, ":{t}"),
                None => Ok(()),
            }
        };
        match self {
            End::Registry(r) => write!(f, "{r}"),
            End::OciDir { dir, tag } => with(f, "oci", dir, tag),
            End::OciArchive { file, tag } => with(f, "oci-archive", file, tag),
            End::DockerArchive { file, name } => with(f, "docker-archive", file, name),
        }
    }
}

/// The name a staged image has in the scratch store.
fn stage_ref() -> Result<Reference> {
    Ok(Reference::parse("localhost/mybuild-copy:staged")?)
}

/// Copies `src` to `dst`; returns the digest of what was written (the index's
/// with `all_platforms` when the source is one, else the platform image's).
pub async fn copy(
    client: &Arc<Client>,
    src: &End,
    dst: &End,
    want: &Platform,
    all_platforms: bool,
    reporter: Arc<dyn TransferReporter>,
) -> Result<Digest> {
    if let (End::Registry(s), End::Registry(d)) = (src, dst) {
        let d = crate::registry::copy_destination(s, d);
        return crate::registry::copy(client, s, &d, want, all_platforms, reporter).await;
    }
    let scratch = tempfile::Builder::new()
        .prefix("mybuild-copy-")
        .tempdir()
        .map_err(OpsError::io(
            "creating a scratch directory in",
            std::env::temp_dir(),
        ))?;
    let store = Store::open(scratch.path().join("store"))?;
    let t = Transfer::new(reporter, client.options().max_concurrent_per_host);
    let desc = stage(&store, client, &t, src, want, all_platforms).await?;
    write(&store, client, &t, src, &desc, dst).await?;
    Ok(descriptor_digest(&desc)?)
}

/// Puts the image `src` names into the scratch store; returns its descriptor.
async fn stage(
    store: &Store,
    client: &Arc<Client>,
    t: &Transfer,
    src: &End,
    want: &Platform,
    all_platforms: bool,
) -> Result<OciDescriptor> {
    let staged = stage_ref()?;
    let (loaded, tag) = match src {
        End::Registry(r) => {
            let io = Arc::new(StoreIo::new(store));
            let registry = Arc::new(Registry::new(client.clone()));
            transfer::copy(t, registry, io, r, &staged, want, all_platforms).await?;
            return Ok(store.resolve(&local_name(&staged))?);
        }
        End::OciArchive { file, tag } => (load_file(store, file)?, tag.as_deref()),
        End::DockerArchive { file, name } => (load_file(store, file)?, name.as_deref()),
        End::OciDir { dir, tag } => (load_dir(store, dir)?, tag.as_deref()),
    };
    let picked = pick(&loaded, tag).ok_or_else(|| {
        let names: Vec<String> = loaded
            .iter()
            .map(|l| l.name.clone().unwrap_or_else(|| "(untagged)".into()))
            .collect();
        OpsError::invalid(match tag {
            Some(t) => format!(
                "{src}: no image named {t:?} (it holds {})",
                names.join(", ")
            ),
            None => format!(
                "{src}: holds {} images ({}); name one with :TAG",
                loaded.len(),
                names.join(", ")
            ),
        })
    })?;
    Ok(picked.descriptor.clone())
}

/// The loaded image `tag` names (its ref.name, or its name in full or familiar
/// form), or without a tag the only image (one image under several names counts once).
fn pick<'a>(
    loaded: &'a [layer_cache::archive::Loaded],
    tag: Option<&str>,
) -> Option<&'a layer_cache::archive::Loaded> {
    let Some(t) = tag else {
        let first = loaded.first()?;
        return loaded
            .iter()
            .all(|l| l.descriptor.digest() == first.descriptor.digest())
            .then_some(first);
    };
    let wanted = ImageRef::parse(t).ok().map(|r| r.tagged_name());
    let same_name = |n: &str| {
        n == t || (wanted.is_some() && ImageRef::parse(n).ok().map(|r| r.tagged_name()) == wanted)
    };
    loaded
        .iter()
        .find(|l| l.ref_name.as_deref() == Some(t) || l.name.as_deref().is_some_and(same_name))
}

fn load_file(store: &Store, file: &Path) -> Result<Vec<layer_cache::archive::Loaded>> {
    let f = std::fs::File::open(file).map_err(OpsError::io("opening", file))?;
    Ok(store.load(f, &file.display().to_string())?)
}

/// A layout directory read by the archive loader: its files streamed as a tar
/// through a pipe (blobs verified on the way in, as for an archive).
fn load_dir(store: &Store, dir: &Path) -> Result<Vec<layer_cache::archive::Loaded>> {
    if !dir.join("index.json").is_file() {
        return Err(OpsError::invalid(format!(
            "oci:{}: not an OCI image layout (no index.json)",
            dir.display()
        )));
    }
    let (reader, writer) = std::io::pipe().map_err(OpsError::io("making a pipe for", dir))?;
    let root = dir.to_path_buf();
    let feeder = std::thread::spawn(move || -> std::io::Result<()> {
        let mut b = tar::Builder::new(writer);
        b.follow_symlinks(false);
        // The layout's own files only (a store's root is a layout too, with
        // snapshots and records beside it).
        for file in ["oci-layout", "index.json"] {
            let path = root.join(file);
            if path.is_file() {
                b.append_path_with_name(&path, file)?;
            }
        }
        let blobs = root.join("blobs");
        if blobs.is_dir() {
            b.append_dir_all("blobs", &blobs)?;
        }
        b.into_inner().map(drop)
    });
    let loaded = store.load(reader, &format!("oci:{}", dir.display()));
    let fed = feeder
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the reader thread panicked")));
    // The loader's own error says more than the broken pipe it leaves the feeder.
    let loaded = loaded?;
    fed.map_err(OpsError::io("reading", dir))?;
    Ok(loaded)
}

/// Writes the staged image `desc` to `dst`.
async fn write(
    store: &Store,
    client: &Arc<Client>,
    t: &Transfer,
    src: &End,
    desc: &OciDescriptor,
    dst: &End,
) -> Result<()> {
    match dst {
        End::Registry(to) => {
            let mut to = to.clone();
            if to.tag.is_none() && to.digest.is_none() {
                to.tag = Some(source_tag(src).unwrap_or_else(|| "latest".into()));
            }
            let staged = stage_ref()?;
            // The staged name, then the descriptor found by that name.
            let io = Arc::new(StoreIo::new(store));
            store.set_tag(&ImageRef::parse(&local_name(&staged))?, desc)?;
            let (m, _) = io.image(&local_name(&staged))?;
            let sink = Arc::new(Registry::new(client.clone()));
            transfer::push_tree(t, io, sink, &staged, &to, &m).await?;
            Ok(())
        }
        End::OciArchive { file, tag } => {
            let mut entry = desc.clone();
            if let Some(tag) = tag {
                let mut ann = entry.annotations().clone().unwrap_or_default();
                ann.insert(REF_NAME_ANNOTATION.into(), tag.clone());
                entry.set_annotations(Some(ann));
            }
            save_to(store, file, &[(None, entry)])
        }
        End::DockerArchive { file, name } => {
            let name = match name {
                Some(n) => Some(ImageRef::parse(n)?),
                None => src
                    .registry()
                    .map(|r| ImageRef::parse(&local_name(r)))
                    .transpose()?,
            };
            save_to(store, file, &[(name, desc.clone())])
        }
        End::OciDir { dir, tag } => write_layout(store, desc, dir, tag.as_deref()),
    }
}

/// The tag a source names, for a destination that names none.
fn source_tag(src: &End) -> Option<String> {
    match src {
        End::Registry(r) => r.tag.clone(),
        End::OciDir { tag, .. } | End::OciArchive { tag, .. } => {
            tag.clone().filter(|t| !t.contains([':', '/']))
        }
        End::DockerArchive { name, .. } => name
            .as_deref()
            .and_then(|n| ImageRef::parse(n).ok())
            .and_then(|r| r.tag),
    }
}

fn save_to(store: &Store, file: &Path, images: &[(Option<ImageRef>, OciDescriptor)]) -> Result<()> {
    let no_stdout = || -> Result<Box<dyn std::io::Write>> { Err(OpsError::ArchiveToTerminal) };
    crate::archive::write_tar_to(Some(file), &no_stdout, |w| Ok(store.save(images, w)?))
}

/// Adds the image to the layout at `dir` (created when missing), replacing the
/// entry that had its TAG; other entries and their blobs stay.
fn write_layout(store: &Store, desc: &OciDescriptor, dir: &Path, tag: Option<&str>) -> Result<()> {
    let layout_err = |e: layer_cache::layout::LayoutError| {
        OpsError::invalid_because(
            format!("writing oci:{}", dir.display()),
            OpsError::invalid(e.to_string()),
        )
    };
    let mut layout = LayoutDir::create(dir).map_err(layout_err)?;
    let mut blobs = BTreeSet::new();
    store.reachable_from(desc, &mut blobs)?;
    for d in &blobs {
        let size = store.blob_size(d)?;
        let r = store.open_blob(d, size)?;
        layout.add_blob(d, size, r).map_err(layout_err)?;
    }
    let old = layout
        .read_index(layer_cache::archive::MAX_ARCHIVE_JSON)
        .map_err(layout_err)?;
    let mut manifests: Vec<Value> = old
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v.get("manifests").and_then(Value::as_array).cloned())
        .unwrap_or_default();
    let mut entry = serde_json::json!({
        "mediaType": desc.media_type().to_string(),
        "digest": descriptor_digest(desc)?.to_string(),
        "size": desc.size(),
    });
    let ref_name = |m: &Value| {
        m.pointer("/annotations/org.opencontainers.image.ref.name")
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    match tag {
        Some(tag) => {
            manifests.retain(|m| ref_name(m).as_deref() != Some(tag));
            entry["annotations"] = serde_json::json!({ REF_NAME_ANNOTATION: tag });
        }
        // The same image untagged again is listed once.
        None => manifests.retain(|m| ref_name(m).is_some() || m["digest"] != entry["digest"]),
    }
    manifests.push(entry);
    let doc = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": layer_cache::image::OCI_INDEX,
        "manifests": manifests,
    });
    layout
        .write_index(&canonical_json(&doc)?)
        .map_err(layout_err)?;
    Ok(())
}

/// A repository reference for `--all-tags`: one that names no tag or digest.
pub fn repository(r: &Reference, what: &str) -> Result<Reference> {
    if r.tag.is_some() || r.digest.is_some() {
        return Err(OpsError::invalid(format!(
            "{what} {r}: --all-tags takes a repository, without a tag or digest"
        )));
    }
    Ok(r.clone())
}

/// The tags of `repo`, sorted, each once.
pub async fn tags(client: &Arc<Client>, repo: &Reference) -> Result<Vec<String>> {
    let mut tags = client.list_tags(repo).await?;
    tags.sort();
    tags.dedup();
    Ok(tags)
}

/// `copy --all-tags`: every tag of `src` to the same tag of `dst`, each whole
/// (an index with every platform, as crane copies). `each` is told every tag
/// copied and its digest. The tag list is read once, at the start.
pub async fn copy_all_tags(
    client: &Arc<Client>,
    src: &Reference,
    dst: &Reference,
    reporter: Arc<dyn TransferReporter>,
    each: &(dyn Fn(&str, &Digest) + Sync),
) -> Result<Vec<(String, Digest)>> {
    let mut done = Vec::new();
    for tag in tags(client, src).await? {
        let from = src.with_reference(Some(tag.clone()), None);
        let to = dst.with_reference(Some(tag.clone()), None);
        let d = crate::registry::copy(
            client,
            &from,
            &to,
            &Platform::host(),
            true,
            reporter.clone(),
        )
        .await?;
        each(&tag, &d);
        done.push((tag, d));
    }
    Ok(done)
}

/// `pull --all-tags`: every tag of `repo` into the store, for `platform`.
pub async fn pull_all_tags(
    store: &Store,
    client: &Arc<Client>,
    repo: &Reference,
    platform: &Platform,
    reporter: Arc<dyn TransferReporter>,
    each: &(dyn Fn(&Reference, &Digest) + Sync),
) -> Result<Vec<(String, Digest)>> {
    let mut done = Vec::new();
    for tag in tags(client, repo).await? {
        let r = repo.with_reference(Some(tag.clone()), None);
        reporter.event(transfer::TransferEvent::Start {
            action: transfer::Action::Pull,
            reference: &r,
        });
        let d =
            crate::registry::pull_into_store(store, client, &r, platform, reporter.clone(), false)
                .await?;
        reporter.event(transfer::TransferEvent::Finish {
            action: transfer::Action::Pull,
            reference: &r,
            digest: &d,
            size: store.blob_size(&d)?.unwrap_or_default(),
        });
        each(&r, &d);
        done.push((tag, d));
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ends_parse_as_skopeo_names_them() {
        assert_eq!(
            End::parse("oci:/tmp/x:1").unwrap(),
            End::OciDir {
                dir: "/tmp/x".into(),
                tag: Some("1".into())
            }
        );
        assert_eq!(
            End::parse("oci-archive:a.tar").unwrap(),
            End::OciArchive {
                file: "a.tar".into(),
                tag: None
            }
        );
        assert_eq!(
            End::parse("docker-archive:a.tar:app:2").unwrap(),
            End::DockerArchive {
                file: "a.tar".into(),
                name: Some("app:2".into())
            }
        );
        let r = End::parse("docker://localhost:5000/a:1").unwrap();
        assert_eq!(r.to_string(), "localhost:5000/a:1");
        assert!(matches!(
            End::parse("localhost:5000/a:1").unwrap(),
            End::Registry(_)
        ));
        assert!(End::parse("oci-archive:").is_err());
        assert_eq!(
            End::parse("oci:/tmp/x:1").unwrap().to_string(),
            "oci:/tmp/x:1"
        );
    }
}
