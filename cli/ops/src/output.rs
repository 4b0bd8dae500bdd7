//! `--output` / `-o`: where a finished build goes besides the store, with BuildKit's
//! syntax (fields split as CSV, so `"name=a:1,b:2"` in quotes is one field):
//! `type=oci|docker,dest=FILE|-[,name=REF]`, `type=local,dest=DIR`,
//! `type=tar,dest=FILE|-`, `type=image[,name=REF][,push=true]`; a bare `PATH`
//! means `type=local,dest=PATH` and a bare `-` means `type=tar,dest=-`.
//!
//! Every key BuildKit documents for the image, oci and docker exporters either
//! changes what is written or is refused with its name: `compression`,
//! `compression-level`, `force-compression`, `oci-mediatypes`,
//! `rewrite-timestamp` and the `annotation*` keys go to
//! [`layer_cache::convert`]; `name` and `push` tag and push.

use std::path::PathBuf;

use layer_cache::convert::{Annotations, ConvertOptions};
use layer_cache::export::ImageFs;
use layer_cache::image::Compression;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::variant::ExportCodec;
use layer_cache::{ImageRef, Store};

use crate::archive::{write_tar_to, Stdout};
use crate::{OpsError, Result};

fn bad<T>(text: String) -> Result<T> {
    Err(OpsError::Invalid(text))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// The store, tagged with `names` as well as `-t`'s; `push` pushes those names.
    Image {
        names: Vec<String>,
        push: bool,
        opts: ExportOpts,
    },
    /// An archive that is an OCI layout and a docker-archive at once; `docker`:
    /// asked for as `type=docker` (which cannot hold a multi-platform index).
    Archive {
        dest: PathBuf,
        names: Vec<String>,
        docker: bool,
        opts: ExportOpts,
    },
    /// The final filesystem, unpacked into a directory.
    Local { dest: PathBuf },
    /// The final filesystem as one tar.
    Tar { dest: PathBuf },
}

/// The image exporters' keys that change the image written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOpts {
    pub compression: Option<Compression>,
    pub level: Option<u32>,
    pub force: bool,
    /// `None`: the exporter's default (OCI for oci and image, Docker for docker).
    pub oci_media_types: Option<bool>,
    /// `rewrite-timestamp=true`: SOURCE_DATE_EPOCH, read when the spec is parsed.
    pub clamp_mtime: Option<i64>,
    pub annotations: Annotations,
}

/// Splits on commas outside double quotes, as Go's csv reader (buildx) does; a
/// quoted field loses its quotes and `""` inside one is a quote.
fn csv_fields(spec: &str) -> Result<Vec<String>> {
    let mut fields = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = spec.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => fields.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return bad(format!("--output {spec:?}: a quote is not closed"));
    }
    fields.push(cur);
    Ok(fields)
}

fn parse_bool(spec: &str, key: &str, v: &str) -> Result<bool> {
    match v {
        // BuildKit reads a bare key (`force-compression=`) as true.
        "" | "true" | "1" | "True" | "TRUE" | "t" => Ok(true),
        "false" | "0" | "False" | "FALSE" | "f" => Ok(false),
        _ => bad(format!(
            "--output {spec:?}: {key}={v:?} is not true or false"
        )),
    }
}

/// Adds one annotation of `kind` (manifest, manifest-descriptor, index,
/// index-descriptor), for one platform when `platform` is given (manifest kinds
/// only, as BuildKit); the error says what is wrong.
fn add_annotation(
    a: &mut Annotations,
    kind: &str,
    platform: Option<&str>,
    key: &str,
    value: &str,
) -> std::result::Result<(), String> {
    if key.is_empty() {
        return Err("the key is empty".into());
    }
    let platform = platform
        .map(|p| oci_vocab::Platform::parse(p).map_err(|e| format!("platform {p:?}: {e}")))
        .transpose()?;
    let (k, v) = (key.to_string(), value.to_string());
    match (kind, platform) {
        ("manifest", None) => {
            a.manifest.insert(k, v);
        }
        ("manifest", Some(p)) => a.manifest_for.push((p, k, v)),
        ("manifest-descriptor", None) => {
            a.manifest_descriptor.insert(k, v);
        }
        ("manifest-descriptor", Some(p)) => a.manifest_descriptor_for.push((p, k, v)),
        ("index" | "index-descriptor", Some(_)) => {
            return Err(format!("{kind} annotations take no platform"))
        }
        ("index", None) => {
            a.index.insert(k, v);
        }
        ("index-descriptor", None) => {
            a.index_descriptor.insert(k, v);
        }
        (other, _) => return Err(format!("unknown annotation type {other:?}")),
    }
    Ok(())
}

/// Splits `TYPE[PLATFORM]` into its parts (either may be empty).
fn kind_and_platform(s: &str) -> std::result::Result<(&str, Option<&str>), String> {
    match s.split_once('[') {
        None => Ok((s, None)),
        Some((kind, rest)) => match rest.strip_suffix(']') {
            Some(p) if !p.is_empty() => Ok((kind, Some(p))),
            _ => Err(format!("{s:?}: expected TYPE[os/arch]")),
        },
    }
}

/// `annotation[-TYPE][[PLATFORM]].KEY=V`: added to `a`; `false` when `key` is no
/// annotation key.
fn output_annotation(spec: &str, key: &str, value: &str, a: &mut Annotations) -> Result<bool> {
    let Some(rest) = key.strip_prefix("annotation") else {
        return Ok(false);
    };
    if !(rest.starts_with('.') || rest.starts_with('-') || rest.starts_with('[')) {
        return Ok(false);
    }
    // The key follows the first '.' after any platform.
    let head_end = match rest.find(']') {
        Some(close) => close + 1,
        None => 0,
    };
    let Some(dot) = rest[head_end..].find('.').map(|i| i + head_end) else {
        return bad(format!(
            "--output {spec:?}: {key}: expected annotation[-TYPE].KEY"
        ));
    };
    let (head, name) = (&rest[..dot], &rest[dot + 1..]);
    let fail = |e: String| OpsError::Invalid(format!("--output {spec:?}: {key}: {e}"));
    let (kind, platform) = kind_and_platform(head.trim_start_matches('-')).map_err(fail)?;
    let kind = if kind.is_empty() { "manifest" } else { kind };
    add_annotation(a, kind, platform, name, value).map_err(fail)?;
    Ok(true)
}

/// `--annotation [TYPE[PLATFORM]:]KEY=VALUE` (buildx's form; TYPE is manifest,
/// index, manifest-descriptor or index-descriptor, manifest when absent).
pub fn parse_annotations(list: &[String]) -> Result<Annotations> {
    let mut a = Annotations::default();
    for item in list {
        let fail = |e: String| OpsError::Invalid(format!("--annotation {item:?}: {e}"));
        let Some((left, value)) = item.split_once('=') else {
            return Err(fail("expected [TYPE:]KEY=VALUE".into()));
        };
        let (kind, platform, key) = match left.split_once(':') {
            Some((head, key)) => {
                let (kind, platform) = kind_and_platform(head).map_err(fail)?;
                if is_annotation_type(kind) || (kind.is_empty() && platform.is_some()) {
                    let kind = if kind.is_empty() { "manifest" } else { kind };
                    (kind, platform, key)
                } else {
                    // A key with a colon of its own.
                    ("manifest", None, left)
                }
            }
            None => ("manifest", None, left),
        };
        add_annotation(&mut a, kind, platform, key, value).map_err(fail)?;
    }
    Ok(a)
}

fn is_annotation_type(s: &str) -> bool {
    matches!(
        s,
        "manifest" | "manifest-descriptor" | "index" | "index-descriptor"
    )
}

pub fn parse(spec: &str) -> Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output::Tar { dest: "-".into() }
        } else {
            Output::Local { dest: spec.into() }
        });
    }
    let (mut kind, mut dest) = (None, None);
    let mut names = Vec::new();
    let mut push = false;
    let mut opts = ExportOpts::default();
    // Keys only the image exporters (image, oci, docker) take, for the check below.
    let mut image_keys = Vec::new();
    let mut rewrite = false;
    for field in csv_fields(spec)? {
        let Some((k, v)) = field.split_once('=') else {
            return bad(format!("--output {spec:?}: {field:?} is not KEY=VALUE"));
        };
        let k = k.trim();
        if output_annotation(spec, k, v, &mut opts.annotations)? {
            image_keys.push(k.to_string());
            continue;
        }
        match k {
            "type" => kind = Some(v.to_string()),
            "dest" => dest = Some(PathBuf::from(v)),
            "name" => {
                names.extend(v.split(',').filter(|n| !n.is_empty()).map(str::to_string));
                image_keys.push(k.to_string());
            }
            "push" => {
                push = parse_bool(spec, k, v)?;
                image_keys.push(k.to_string());
            }
            "tar" => {
                if !parse_bool(spec, k, v)? {
                    return bad(format!("--output {spec:?}: tar=false: writing an unpacked OCI layout directory is not supported; use type=oci,dest=FILE.tar"));
                }
                image_keys.push(k.to_string());
            }
            "store" => {
                if !parse_bool(spec, k, v)? {
                    return bad(format!(
                        "--output {spec:?}: store=false: the built image is always kept in the store"
                    ));
                }
                image_keys.push(k.to_string());
            }
            "unpack" => {
                return bad(format!(
                    "--output {spec:?}: unpack is not supported: the store unpacks a layer when a build or run first uses it"
                ))
            }
            "compression" => {
                opts.compression = Some(match v {
                    "gzip" => Compression::Gzip,
                    "zstd" => Compression::Zstd,
                    "uncompressed" => Compression::None,
                    "estargz" => {
                        return bad(format!(
                            "--output {spec:?}: compression=estargz is not supported; use gzip, zstd or uncompressed"
                        ))
                    }
                    _ => {
                        return bad(format!(
                            "--output {spec:?}: compression={v:?}: expected uncompressed, gzip or zstd"
                        ))
                    }
                });
                image_keys.push(k.to_string());
            }
            "compression-level" => {
                let Ok(level) = v.parse::<u32>() else {
                    return bad(format!(
                        "--output {spec:?}: compression-level={v:?} is not a number"
                    ));
                };
                opts.level = Some(level);
                image_keys.push(k.to_string());
            }
            "force-compression" => {
                opts.force = parse_bool(spec, k, v)?;
                image_keys.push(k.to_string());
            }
            "oci-mediatypes" => {
                opts.oci_media_types = Some(parse_bool(spec, k, v)?);
                image_keys.push(k.to_string());
            }
            "rewrite-timestamp" => {
                rewrite = parse_bool(spec, k, v)?;
                image_keys.push(k.to_string());
            }
            other => return bad(format!("--output {spec:?}: unknown key {other:?}")),
        }
    }
    let need_dest = |what: &str| -> Result<PathBuf> {
        dest.clone()
            .ok_or_else(|| OpsError::Invalid(format!("--output type={what} needs dest=PATH")))
    };
    // BuildKit's default codec is gzip: force-compression alone re-encodes to it.
    if opts.force && opts.compression.is_none() {
        opts.compression = Some(Compression::Gzip);
    }
    let codec = ExportCodec {
        compression: opts.compression.unwrap_or(Compression::Gzip),
        level: opts.level,
    };
    if let (Some(why), Some(l)) = (codec.level_error(), opts.level) {
        return bad(format!("--output {spec:?}: compression-level={l}: {why}"));
    }
    if opts.oci_media_types == Some(false) && opts.compression == Some(Compression::Zstd) {
        return bad(format!(
            "--output {spec:?}: compression=zstd needs oci-mediatypes=true (Docker schema 2 has no zstd layer type)"
        ));
    }
    let is_image_exporter = matches!(kind.as_deref(), Some("image" | "oci" | "docker"));
    if !is_image_exporter {
        if let Some(k) = image_keys.first() {
            return bad(format!(
                "--output {spec:?}: {k} is a key of type=image, oci and docker only"
            ));
        }
    }
    if rewrite {
        opts.clamp_mtime = Some(source_date_epoch(spec)?);
    }
    match kind.as_deref() {
        Some("registry") => {
            bad("--output type=registry: use --push or type=image,push=true".into())
        }
        Some("image") if dest.is_some() => bad(format!(
            "--output {spec:?}: dest is not a key of type=image (use type=oci or docker to write a file)"
        )),
        Some("image") => Ok(Output::Image { names, push, opts }),
        Some(k @ ("oci" | "docker")) => {
            if push {
                return bad(format!(
                    "--output {spec:?}: push=true is a key of type=image (or use --push)"
                ));
            }
            Ok(Output::Archive {
                dest: need_dest(k)?,
                names,
                docker: k == "docker",
                opts,
            })
        }
        Some("local") => Ok(Output::Local {
            dest: need_dest("local")?,
        }),
        Some("tar") => Ok(Output::Tar {
            dest: need_dest("tar")?,
        }),
        Some(other) => bad(format!(
            "--output type={other}: expected oci, docker, local, tar or image"
        )),
        None => bad(format!("--output {spec:?}: missing type=")),
    }
}

/// SOURCE_DATE_EPOCH for `rewrite-timestamp=true`; BuildKit only logs a warning
/// on its daemon when it is unset and writes the layers unchanged, so it is an
/// error here instead.
fn source_date_epoch(spec: &str) -> Result<i64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v.trim().parse::<i64>().map_err(|_| {
            OpsError::Invalid(format!(
                "--output {spec:?}: rewrite-timestamp=true: SOURCE_DATE_EPOCH={v:?} is not a number of seconds"
            ))
        }),
        Err(_) => bad(format!(
            "--output {spec:?}: rewrite-timestamp=true needs SOURCE_DATE_EPOCH to be set"
        )),
    }
}

/// Index annotations need an index: refused before a single-platform build runs,
/// as BuildKit refuses them.
pub fn check_annotations(outputs: &[Output], global: &Annotations, platforms: usize) -> Result<()> {
    if platforms > 1 {
        return Ok(());
    }
    let has_index = |a: &Annotations| !a.index.is_empty() || !a.index_descriptor.is_empty();
    let in_outputs = outputs.iter().any(|o| match o {
        Output::Image { opts, .. } | Output::Archive { opts, .. } => has_index(&opts.annotations),
        _ => false,
    });
    if has_index(global) || in_outputs {
        return bad("index annotations not supported for single platform export (index and index-descriptor annotations need several --platform values)".into());
    }
    Ok(())
}

/// What the build says of every image it writes out: `--annotation`s, its base
/// images' diff_ids (for `rewrite-timestamp`) and `--compression`.
pub struct BuildExport<'a> {
    pub annotations: &'a Annotations,
    pub base_diff_ids: &'a [Vec<layer_cache::Digest>],
    pub codec: &'a ExportCodec,
}

impl ExportOpts {
    /// The codec this exporter's layers leave in: its own `compression` keys,
    /// else `build`'s (the build's `--compression`).
    pub fn codec(&self, build: &ExportCodec) -> ExportCodec {
        match self.compression {
            Some(compression) => ExportCodec {
                compression,
                level: self.level,
            },
            None => ExportCodec {
                compression: build.compression,
                level: self.level.or(build.level),
            },
        }
    }

    /// The layer keys of a conversion for bytes that leave the machine. Layers
    /// built here are stored uncompressed and get the codec; layers that came
    /// compressed (a base image's) keep theirs unless `force-compression`, as
    /// BuildKit does.
    pub fn leaving(&self, build: &ExportCodec) -> ConvertOptions {
        let codec = self.codec(build);
        ConvertOptions {
            compression: self.force.then_some(codec.compression),
            uncompressed_to: Some(codec.compression),
            level: codec.level,
            force: self.force,
            ..ConvertOptions::default()
        }
    }

    /// The conversion for an exporter whose default media types are OCI (`oci`)
    /// or Docker's, with the build's annotations (`--annotation`) under its own.
    pub fn convert_options(&self, build: &BuildExport<'_>, oci_default: bool) -> ConvertOptions {
        ConvertOptions {
            oci_media_types: Some(self.oci_media_types.unwrap_or(oci_default)),
            oci_for_zstd: self.oci_media_types.is_none(),
            clamp_mtime: self.clamp_mtime,
            base_diff_ids: build.base_diff_ids.to_vec(),
            annotations: build.annotations.merged(&self.annotations),
            ..self.leaving(build.codec)
        }
    }

    /// The conversion a `type=image` output's image gets in the store: annotations,
    /// asked-for media types and clamped times, but no codec (layers are
    /// compressed when they leave).
    pub fn stored_options(
        &self,
        global: &Annotations,
        base_diff_ids: &[Vec<layer_cache::Digest>],
    ) -> ConvertOptions {
        ConvertOptions {
            oci_media_types: self.oci_media_types,
            clamp_mtime: self.clamp_mtime,
            base_diff_ids: base_diff_ids.to_vec(),
            annotations: global.merged(&self.annotations),
            ..ConvertOptions::default()
        }
    }
}

/// A codec by its flag name (`gzip`, `zstd`, `uncompressed`); clap checked it.
pub fn codec_name(name: &str) -> Compression {
    match name {
        "zstd" => Compression::Zstd,
        "uncompressed" => Compression::None,
        _ => Compression::Gzip,
    }
}

/// The first `type=image` output's keys (the default keys when there is none).
pub fn first_image_opts(outputs: &[Output]) -> ExportOpts {
    outputs
        .iter()
        .find_map(|o| match o {
            Output::Image { opts, .. } => Some(opts.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// The built image converted for the store: `--annotation`s and the first
/// `type=image` output's keys (media types change only when asked). The
/// descriptor to tag.
pub fn stored_image(
    store: &Store,
    outputs: &[Output],
    built: &Descriptor,
    global: &Annotations,
    base_diff_ids: &[Vec<layer_cache::Digest>],
) -> Result<Descriptor> {
    let convert = first_image_opts(outputs).stored_options(global, base_diff_ids);
    if convert
        == (ConvertOptions {
            base_diff_ids: convert.base_diff_ids.clone(),
            ..ConvertOptions::default()
        })
    {
        return Ok(built.clone());
    }
    Ok(store.convert_image(built, &convert)?)
}

/// Writes the built image where `out` says (`type=image` is tagged and pushed by
/// the build's finish). `tags` name the image in archives that name none.
/// For a multi-platform index, filesystems go one subdirectory per platform.
/// `dest=-` writes to `stdout`.
pub fn write(
    store: &Store,
    out: &Output,
    built: &Descriptor,
    build: &BuildExport<'_>,
    tags: &[ImageRef],
    stdout: Stdout<'_>,
) -> Result<()> {
    match out {
        Output::Image { .. } => Ok(()),
        Output::Archive {
            docker: true, dest, ..
        } if ImageFs::new(store, built)?.is_multi_platform() => bad(format!(
            "--output type=docker,dest={}: docker exporter does not currently support \
             exporting manifest lists; use type=oci",
            dest.display()
        )),
        Output::Archive {
            dest,
            names,
            docker,
            opts,
        } => {
            let _usage = store.usage_lock()?;
            let convert = opts.convert_options(build, !docker);
            let image = store.convert_image(built, &convert)?;
            let mut named = Vec::new();
            for n in names {
                named.push((Some(ImageRef::parse(n)?), image.clone()));
            }
            if named.is_empty() {
                named.push((tags.first().cloned(), image));
            }
            write_tar_to(Some(dest), stdout, |w| Ok(store.save(&named, w)?))
        }
        Output::Local { dest } => Ok(ImageFs::new(store, built)?.unpack_into(store, dest)?),
        Output::Tar { dest } => {
            // Flatten in a scratch directory of the store, then stream it as one tar.
            let flat = ImageFs::new(store, built)?.flatten(store)?;
            write_tar_to(Some(dest), stdout, |w| Ok(flat.write_tar(w)?))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_buildkit_output_specs() {
        assert_eq!(parse("out").unwrap(), Output::Local { dest: "out".into() });
        assert_eq!(parse("-").unwrap(), Output::Tar { dest: "-".into() });
        assert_eq!(
            parse("type=oci,dest=a.tar,name=x:1").unwrap(),
            Output::Archive {
                dest: "a.tar".into(),
                names: vec!["x:1".into()],
                docker: false,
                opts: ExportOpts::default(),
            }
        );
        assert_eq!(
            parse("type=docker,dest=-").unwrap(),
            Output::Archive {
                dest: "-".into(),
                names: vec![],
                docker: true,
                opts: ExportOpts::default(),
            }
        );
        assert_eq!(
            parse("type=image").unwrap(),
            Output::Image {
                names: vec![],
                push: false,
                opts: ExportOpts::default()
            }
        );
        let e = parse("type=local").unwrap_err().to_string();
        assert!(e.contains("needs dest=PATH"), "{e}");
        let e = parse("type=registry").unwrap_err().to_string();
        assert!(e.contains("--push"), "{e}");
        let e = parse("type=oci,dest=x,bogus=1").unwrap_err().to_string();
        assert!(e.contains("unknown key \"bogus\""), "{e}");
        let e = parse("type=zip,dest=x").unwrap_err().to_string();
        assert!(e.contains("type=zip"), "{e}");
    }

    #[test]
    fn names_and_image_keys() {
        let Output::Image { names, push, opts } =
            parse(r#"type=image,"name=a:1,b:2",push=true,compression=zstd,compression-level=5,force-compression=true"#)
                .unwrap()
        else {
            panic!("not an image output")
        };
        assert_eq!(names, ["a:1", "b:2"]);
        assert!(push && opts.force);
        assert_eq!(
            (opts.compression, opts.level),
            (Some(Compression::Zstd), Some(5))
        );
        let Output::Archive { opts, .. } = parse(
            "type=oci,dest=x,annotation.a=1,annotation-manifest.b=2,annotation-index.c=3,\
             annotation-manifest-descriptor.d=4,annotation-index-descriptor.e=5,oci-mediatypes=false",
        )
        .unwrap() else {
            panic!("not an archive")
        };
        let a = &opts.annotations;
        assert_eq!(a.manifest.len(), 2);
        assert_eq!(a.index["c"], "3");
        assert_eq!(a.manifest_descriptor["d"], "4");
        assert_eq!(a.index_descriptor["e"], "5");
        assert_eq!(opts.oci_media_types, Some(false));
        for (spec, key) in [
            ("type=oci,dest=x,compression=estargz", "estargz"),
            ("type=oci,dest=x,push=true", "push=true"),
            ("type=local,dest=x,compression=gzip", "compression"),
            ("type=tar,dest=x,annotation.a=1", "annotation.a"),
            (
                "type=oci,dest=x,compression=zstd,oci-mediatypes=false",
                "oci-mediatypes",
            ),
            (
                "type=oci,dest=x,compression=gzip,compression-level=12",
                "compression-level",
            ),
            ("type=image,unpack=true", "unpack"),
            ("type=image,store=false", "store=false"),
            ("type=image,annotation-bogus.a=1", "bogus"),
            ("type=image,push-by-digest=true", "push-by-digest"),
            ("type=image,dest=x", "dest"),
        ] {
            let e = parse(spec).unwrap_err().to_string();
            assert!(e.contains(key), "{spec}: {e}");
        }
    }

    #[test]
    fn annotation_flags() {
        let a = parse_annotations(&[
            "a=1".into(),
            "index:b=2".into(),
            "manifest-descriptor:c=3".into(),
            "index-descriptor:d=4".into(),
            "manifest:org.opencontainers.image.url=http://x:1/y".into(),
        ])
        .unwrap();
        assert_eq!(a.manifest["a"], "1");
        assert_eq!(a.manifest["org.opencontainers.image.url"], "http://x:1/y");
        assert_eq!(a.index["b"], "2");
        assert_eq!(a.manifest_descriptor["c"], "3");
        assert_eq!(a.index_descriptor["d"], "4");
        assert!(parse_annotations(&["novalue".into()]).is_err());
        let a = parse_annotations(&[
            "manifest[linux/arm64]:p=1".into(),
            "[linux/amd64]:q=2".into(),
            "manifest-descriptor[linux/arm64/v8]:r=3".into(),
        ])
        .unwrap();
        assert_eq!(a.manifest_for.len(), 2);
        assert_eq!(a.manifest_for[0].0.to_string(), "linux/arm64");
        assert_eq!(
            (a.manifest_for[1].1.as_str(), a.manifest_for[1].2.as_str()),
            ("q", "2")
        );
        assert_eq!(a.manifest_descriptor_for.len(), 1);
        let e = parse_annotations(&["index[linux/amd64]:x=1".into()]).unwrap_err();
        assert!(e.to_string().contains("take no platform"), "{e}");
        let Output::Archive { opts, .. } = parse(
            "type=oci,dest=x,annotation[linux/amd64].a.b=1,annotation-manifest-descriptor[linux/arm64].c=2",
        )
        .unwrap() else {
            panic!("not an archive")
        };
        let a = opts.annotations;
        assert_eq!(a.manifest_for[0].1, "a.b");
        assert_eq!(a.manifest_descriptor_for[0].0.to_string(), "linux/arm64");
    }
}
