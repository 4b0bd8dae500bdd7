//! Step cache keys and the inputs behind them.
//!
//! Keys are chained: key(step) = sha256(key(parent), the step after expansion (its
//! planned form, which carries the build args that reach a RUN), the inputs' content).
//! A stage's root is the base image's manifest digest, a constant for scratch, or the
//! base stage's final key, each mixed with the platform and the options that change
//! layers (compression, SOURCE_DATE_EPOCH). Keys depend on inputs only, never on
//! what an earlier step happened to produce, so lookup keeps working after a miss.
//!
//! For explanations each recorded step leaves a note under (parent key, instruction
//! text) with its key and an [`Inputs`] summary; the next miss compares against it.

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use layer_cache::digest::Hasher;
use layer_cache::stat_cache::StatCache;
use layer_cache::Digest;
use serde::{Deserialize, Serialize};

use crate::exec::copy::{self, CopyError};
use crate::plan::Platform;

// Raised when what a record holds changes (e.g. history text), so old records miss.
const VERSION: &[u8] = b"mybuild-cache-v2";

/// Builds a key from labelled fields; lengths are included so fields cannot run together.
#[derive(Clone)]
pub struct KeyHasher(Hasher);

impl KeyHasher {
    pub fn new(kind: &str) -> KeyHasher {
        let mut h = KeyHasher(Hasher::new());
        h.field("version", VERSION);
        h.field("kind", kind.as_bytes());
        h
    }
    pub fn field(&mut self, name: &str, value: &[u8]) -> &mut Self {
        for part in [name.as_bytes(), value] {
            self.0.update(&(part.len() as u64).to_le_bytes());
            self.0.update(part);
        }
        self
    }
    pub fn finish(self) -> Digest {
        self.0.finish()
    }
    /// The key as 64 lowercase hex digits, without a `Digest` to hold them.
    fn finish_hex(self) -> [u8; 64] {
        hex64(&self.0.finish_bytes())
    }
}

/// 32 bytes as 64 lowercase hex digits.
fn hex64(bytes: &[u8; 32]) -> [u8; 64] {
    let mut out = [0u8; 64];
    // 32 bytes always fill 64 digits.
    let _ = hex::encode_to_slice(bytes, &mut out);
    out
}

/// Selected source files, (path, digest of content and metadata), in order. The
/// paths share one buffer and digests are bytes, so a context of 100,000 files
/// costs a few MB. Written as a list of `[path, "sha256:…"]` pairs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Files {
    names: String,
    /// Where each path ends in `names`.
    ends: Vec<usize>,
    digests: Vec<[u8; 32]>,
}

impl Files {
    pub fn push(&mut self, name: &str, digest: [u8; 32]) {
        self.names.push_str(name);
        self.ends.push(self.names.len());
        self.digests.push(digest);
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8; 32])> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(a, b)| self.names.get(a..*b).unwrap_or_default())
            .zip(&self.digests)
    }

    /// Appends `other`'s files, each path behind `prefix`.
    pub fn extend_prefixed(&mut self, other: &Files, prefix: &str) {
        for (name, digest) in other.iter() {
            self.names.push_str(prefix);
            self.push(name, *digest);
        }
    }
}

impl Serialize for Files {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.iter()
                .map(|(name, d)| (name, Digest::from_sha256_bytes(d))),
        )
    }
}

impl<'de> Deserialize<'de> for Files {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let list = Vec::<(String, Digest)>::deserialize(d)?;
        let mut files = Files::default();
        for (name, digest) in list {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(digest.hex(), &mut bytes).map_err(serde::de::Error::custom)?;
            files.push(&name, bytes);
        }
        Ok(files)
    }
}

/// What every key in a build shares: platform and options that shape layers.
#[derive(Debug, Clone, Serialize)]
pub struct KeyOptions {
    pub platform: String,
    pub compression: String,
    pub source_date_epoch: Option<i64>,
}

impl KeyOptions {
    /// These options for a stage built for `platform`, named in its normalised form
    /// (`linux/arm64/v8` is `linux/arm64`), so one platform always gives one key.
    pub fn for_platform(&self, platform: &Platform) -> KeyOptions {
        KeyOptions {
            platform: platform.normalized().to_string(),
            ..self.clone()
        }
    }

    fn bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

pub fn scratch_key(opts: &KeyOptions) -> Digest {
    let mut h = KeyHasher::new("scratch");
    h.field("options", &opts.bytes());
    h.finish()
}

/// A base image is known by its manifest digest, not its name.
pub fn image_key(manifest: &Digest, opts: &KeyOptions) -> Digest {
    let mut h = KeyHasher::new("image");
    h.field("manifest", manifest.to_string().as_bytes())
        .field("options", &opts.bytes());
    h.finish()
}

/// A step's key from its parent's, its planned (expanded) form, and its inputs.
pub fn step_key(parent: &Digest, step_json: &str, inputs: &Inputs) -> Digest {
    let mut h = KeyHasher::new("step");
    h.field("parent", parent.to_string().as_bytes())
        .field("step", step_json.as_bytes())
        .field("inputs", inputs.digest().to_string().as_bytes());
    h.finish()
}

/// The key of a `--link` step's layer on its own. Such a layer is made without
/// looking at the image below, so the parent's key is left out; `resolved` carries
/// what the step still takes from its parent (destination after WORKDIR, owner ids
/// a `--chown` name resolves to). Options are mixed in directly, as no root carries
/// them here.
pub fn link_key(step_json: &str, inputs: &Inputs, resolved: &str, opts: &KeyOptions) -> Digest {
    let mut h = KeyHasher::new("link-layer");
    h.field("step", step_json.as_bytes())
        .field("inputs", inputs.digest().to_string().as_bytes())
        .field("resolved", resolved.as_bytes())
        .field("options", &opts.bytes());
    h.finish()
}

/// The finished image: the target stage's key, what the driver adds at the end, and
/// the digest of its config without times.
pub fn final_key(target: &Digest, labels: &BTreeMap<String, String>, config: &Digest) -> Digest {
    let mut h = KeyHasher::new("final");
    h.field("target", target.to_string().as_bytes())
        .field("labels", &serde_json::to_vec(labels).unwrap_or_default())
        .field("config", config.to_string().as_bytes());
    h.finish()
}

/// A step's inputs besides its text, summarised so a later miss can name what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inputs {
    /// Selected source files: (path, digest of content and metadata), in order.
    #[serde(default)]
    pub files: Files,
    /// Build args reaching the step.
    #[serde(default)]
    pub args: Vec<(String, String)>,
    /// Other named inputs: a source stage's key, an image digest, the network.
    #[serde(default)]
    pub other: Vec<(String, String)>,
}

impl Inputs {
    pub fn digest(&self) -> Digest {
        let mut h = KeyHasher::new("inputs");
        for (p, d) in self.files.iter() {
            h.field("file", p.as_bytes()).field("entry", &hex64(d));
        }
        for (k, v) in &self.args {
            h.field("arg", k.as_bytes()).field("value", v.as_bytes());
        }
        for (k, v) in &self.other {
            h.field("other", k.as_bytes()).field("value", v.as_bytes());
        }
        h.finish()
    }

    /// What differs from an earlier summary, most specific first; `None` when equal.
    pub fn explain_change(&self, old: &Inputs) -> Option<String> {
        let old_args: BTreeMap<&str, &str> = old
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let new_args: BTreeMap<&str, &str> = self
            .args
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let mut parts = Vec::new();
        for (k, v) in &new_args {
            match old_args.get(k) {
                Some(o) if o != v => parts.push(format!("build arg {k} changed {o}→{v}")),
                None => parts.push(format!("build arg {k}={v} is new")),
                _ => {}
            }
        }
        for k in old_args.keys() {
            if !new_args.contains_key(k) {
                parts.push(format!("build arg {k} is no longer set"));
            }
        }
        let old_files: BTreeMap<&str, &[u8; 32]> = old.files.iter().collect();
        let new_files: BTreeMap<&str, &[u8; 32]> = self.files.iter().collect();
        let mut files = Vec::new();
        for (p, d) in &new_files {
            match old_files.get(p) {
                Some(o) if o != d => files.push(format!("{p} changed")),
                None => files.push(format!("{p} added")),
                _ => {}
            }
        }
        for p in old_files.keys() {
            if !new_files.contains_key(p) {
                files.push(format!("{p} removed"));
            }
        }
        if files.len() > 3 {
            let more = files.len() - 3;
            files.truncate(3);
            files.push(format!("and {more} more"));
        }
        parts.extend(files);
        let old_other: BTreeMap<&str, &str> = old
            .other
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        for (k, v) in &self.other {
            match old_other.get(k.as_str()) {
                Some(o) if o != v => parts.push(format!("{k} changed")),
                None => parts.push(format!("{k} is new")),
                _ => {}
            }
        }
        (!parts.is_empty()).then(|| parts.join(", "))
    }
}

/// The note left for (parent key, instruction text) when a step is recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StepNote {
    pub key: Digest,
    pub step_json: String,
    pub inputs: Inputs,
}

pub fn step_note_name(parent: &Digest, text: &str) -> Digest {
    let mut h = KeyHasher::new("step-note");
    h.field("parent", parent.to_string().as_bytes())
        .field("text", text.as_bytes());
    h.finish()
}

/// The note naming the digest a base image reference had at the last build.
pub fn base_note_name(reference: &str) -> Digest {
    let mut h = KeyHasher::new("base-note");
    h.field("reference", reference.as_bytes());
    h.finish()
}

/// The entries COPY/ADD would write, as [`copy::select`] lists them (after
/// `.dockerignore`, `--exclude` and `--parents`), each hashed by source path,
/// destination, type, mode, owner, xattrs, size, content and symlink target (not mtime).
/// Regular files go through the stat cache when one is given. Entries are hashed as
/// the walk finds them, so only the result is held for a large context.
pub fn copy_inputs(
    src_layers: &[PathBuf],
    sources: &[String],
    filter: &copy::SourceFilter<'_>,
    mut stat: Option<&mut StatCache>,
) -> Result<Files, CopyError> {
    let mut out = Files::default();
    // Each entry's hashers start from the same fields: begun once, cloned per entry.
    let selected = KeyHasher::new("selected");
    let entry = KeyHasher::new("entry");
    copy::select_each(src_layers, sources, filter, &mut |sel| {
        let name = sel.src.to_string_lossy();
        let mut h = selected.clone();
        h.field("dest", sel.dest.as_os_str().as_bytes())
            .field("whole", &[u8::from(sel.whole)])
            .field(
                "entry",
                &entry_digest(entry.clone(), &sel.real, &sel.md, &name, &mut stat)?,
            );
        out.push(&name, h.0.finish_bytes());
        Ok(())
    })?;
    Ok(out)
}

/// One entry's metadata and content, hashed into `h` (begun as an "entry" key), in hex.
fn entry_digest(
    mut h: KeyHasher,
    real: &Path,
    md: &std::fs::Metadata,
    name: &str,
    stat: &mut Option<&mut StatCache>,
) -> Result<[u8; 64], CopyError> {
    let io = |source| CopyError::Io {
        path: real.to_path_buf(),
        source,
    };
    let ft = md.file_type();
    // A regular file's content digest and xattrs come from the stat cache when its
    // stat is unchanged: neither is read again.
    let (content, xattrs) = match stat.as_deref_mut() {
        Some(c) if ft.is_file() => {
            let (d, x) = c
                .file_sha256(name, real, md, || crate::xattrs::read(real))
                .map_err(io)?;
            (Some(d), x)
        }
        _ => (None, crate::xattrs::read(real).map_err(io)?),
    };
    h.field("mode", &md.mode().to_le_bytes())
        .field("uid", &md.uid().to_le_bytes())
        .field("gid", &md.gid().to_le_bytes());
    for (name, value) in xattrs {
        if !crate::xattrs::is_overlay(&name) {
            h.field("xattr", &name).field("value", &value);
        }
    }
    if ft.is_symlink() {
        let target = std::fs::read_link(real).map_err(io)?;
        h.field("symlink", target.as_os_str().as_bytes());
    } else if ft.is_file() {
        let mut hex = [0u8; 64];
        match content {
            Some(sha) => {
                let _ = hex::encode_to_slice(sha, &mut hex);
            }
            None => {
                let mut f = std::fs::File::open(real).map_err(io)?;
                let mut hasher = layer_cache::digest::HashingWriter::new(std::io::sink());
                std::io::copy(&mut f, &mut hasher).map_err(io)?;
                hex.copy_from_slice(hasher.finish().1.hex().as_bytes());
            }
        }
        h.field("size", &md.len().to_le_bytes())
            .field("sha256", &hex);
    }
    Ok(h.finish_hex())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> KeyOptions {
        KeyOptions {
            platform: "linux/amd64".into(),
            compression: "gzip".into(),
            source_date_epoch: None,
        }
    }

    /// A step's key on a scratch stage built for `platform`.
    fn key_for(platform: &Platform, compression: &str) -> Digest {
        let opts = KeyOptions {
            compression: compression.into(),
            ..opts()
        }
        .for_platform(platform);
        step_key(&scratch_key(&opts), "{}", &Inputs::default())
    }

    fn parse(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One platform gives one key however it is written; arm/v6 and arm/v7 are two.
    #[test]
    fn arm64_and_arm64_v8_share_step_keys_arm_v6_and_v7_do_not() {
        let key = |p: &Platform| key_for(p, "gzip");
        assert_eq!(key(&parse("linux/arm64")), key(&parse("linux/arm64/v8")));
        assert_eq!(key(&parse("linux/arm64")), key(&parse("linux/aarch64")));
        // A platform made without parsing is normalised into the key all the same.
        let raw = Platform::new("linux", "arm64", Some("v8"));
        assert_eq!(key(&raw), key(&parse("linux/arm64")));
        assert_eq!(key(&parse("linux/arm")), key(&parse("linux/arm/v7")));
        assert_ne!(key(&parse("linux/arm/v6")), key(&parse("linux/arm/v7")));
        assert_ne!(key(&parse("linux/arm64")), key(&parse("linux/amd64")));
    }

    /// A platform enters keys as its normalised `os/arch[/variant]` text, so the
    /// keys recorded by earlier builds still hit (digests taken before the builder
    /// shared oci-vocab's platform type). A change here must raise `VERSION`.
    #[test]
    fn step_keys_for_a_platform_are_the_ones_earlier_builds_recorded() {
        for (platform, want) in [
            (
                "linux/arm64/v8",
                "b197cedff41c00c5f56ab01a42815b47520e12901ec65fe8531f535c591c5859",
            ),
            (
                "linux/amd64",
                "0a7b424c2888f57f34530e3082368c9fe73667f3988bf60f02f757cdd8398254",
            ),
            (
                "linux/arm",
                "fd3b193f144537b8f8d725d5ca85298268ba40c42206388922cb76bd74be2a9d",
            ),
        ] {
            assert_eq!(
                key_for(&parse(platform), "Gzip/None").hex(),
                want,
                "{platform}"
            );
        }
    }

    #[test]
    fn keys_chain_through_parents_and_inputs() {
        let root = scratch_key(&opts());
        let other_root = image_key(&Digest::of(b"manifest"), &opts());
        assert_ne!(root, other_root);
        let none = Inputs::default();
        let a = step_key(&root, r#"{"step":"env"}"#, &none);
        let b = step_key(&a, r#"{"step":"run"}"#, &none);
        // Same step on another parent, or with other inputs: another key.
        assert_ne!(step_key(&other_root, r#"{"step":"env"}"#, &none), a);
        let with_arg = Inputs {
            args: vec![("V".into(), "1".into())],
            ..Inputs::default()
        };
        assert_ne!(step_key(&a, r#"{"step":"run"}"#, &with_arg), b);
        // Deterministic.
        assert_eq!(step_key(&a, r#"{"step":"run"}"#, &none), b);
        // Options reach every key through the root.
        let sde = KeyOptions {
            source_date_epoch: Some(0),
            ..opts()
        };
        assert_ne!(scratch_key(&sde), root);
        // A link key ignores the parent but not the options or what was resolved.
        let l = link_key(r#"{"step":"copy"}"#, &none, "dest /a", &opts());
        assert_eq!(l, link_key(r#"{"step":"copy"}"#, &none, "dest /a", &opts()));
        assert_ne!(l, link_key(r#"{"step":"copy"}"#, &none, "dest /b", &opts()));
        assert_ne!(l, link_key(r#"{"step":"copy"}"#, &none, "dest /a", &sde));
        assert_ne!(l, step_key(&root, r#"{"step":"copy"}"#, &none));
        // Field boundaries are unambiguous.
        let mut x = KeyHasher::new("t");
        x.field("a", b"bc");
        let mut y = KeyHasher::new("t");
        y.field("ab", b"c");
        assert_ne!(x.finish(), y.finish());
    }

    /// Notes written before `Files` (a list of pairs) still read, and are written
    /// the same way.
    #[test]
    fn files_are_written_as_the_pairs_they_were() {
        let old: Vec<(String, Digest)> = vec![
            ("a/b".into(), Digest::of(b"x")),
            ("mount 0:é".into(), Digest::of(b"y")),
        ];
        let json = serde_json::to_string(&old).unwrap();
        let files: Files = serde_json::from_str(&json).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(serde_json::to_string(&files).unwrap(), json);
        let names: Vec<&str> = files.iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["a/b", "mount 0:é"]);
        let mut prefixed = Files::default();
        prefixed.extend_prefixed(&files, "mount 1:");
        assert_eq!(prefixed.iter().next().map(|(n, _)| n), Some("mount 1:a/b"));
    }

    fn ctx_filter() -> crate::exec::copy::SourceFilter<'static> {
        crate::exec::copy::SourceFilter {
            from_context: true,
            ..Default::default()
        }
    }

    #[test]
    fn copy_inputs_ignore_mtime_and_see_content_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let ctx = tmp.path().to_path_buf();
        std::fs::create_dir_all(ctx.join("src/sub")).unwrap();
        std::fs::write(ctx.join("src/sub/a.txt"), "a").unwrap();
        std::os::unix::fs::symlink("sub/a.txt", ctx.join("src/link")).unwrap();
        let layers = vec![ctx.clone()];
        let sources = vec!["src".to_string()];
        let first = copy_inputs(&layers, &sources, &ctx_filter(), None).unwrap();
        let names: Vec<&str> = first.iter().map(|(p, _)| p).collect();
        assert_eq!(names, ["src", "src/link", "src/sub", "src/sub/a.txt"]);
        let f = std::fs::File::options()
            .write(true)
            .open(ctx.join("src/sub/a.txt"))
            .unwrap();
        f.set_modified(std::time::UNIX_EPOCH).unwrap();
        assert_eq!(
            copy_inputs(&layers, &sources, &ctx_filter(), None).unwrap(),
            first
        );
        std::fs::set_permissions(
            ctx.join("src/sub/a.txt"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        let changed = Inputs {
            files: copy_inputs(&layers, &sources, &ctx_filter(), None).unwrap(),
            ..Inputs::default()
        };
        let old = Inputs {
            files: first,
            ..Inputs::default()
        };
        assert_eq!(
            changed.explain_change(&old).as_deref(),
            Some("src/sub/a.txt changed")
        );
        assert!(matches!(
            copy_inputs(&layers, &["nope".to_string()], &ctx_filter(), None),
            Err(CopyError::NotInContext(_))
        ));
    }
}
