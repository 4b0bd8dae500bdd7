//! `--output` / `-o`: where a finished build goes besides the store, with BuildKit's
//! syntax: `type=oci|docker,dest=FILE|-[,name=REF]`, `type=local,dest=DIR`,
//! `type=tar,dest=FILE|-`, `type=image`; a bare `PATH` means `type=local,dest=PATH`
//! and a bare `-` means `type=tar,dest=-`.

use std::path::PathBuf;

use layer_cache::export::ImageFs;
use layer_cache::oci_spec::image::Descriptor;
use layer_cache::{ImageRef, Store};

use crate::archive::{write_tar_to, Stdout};
use crate::{OpsError, Result};

fn bad<T>(text: String) -> Result<T> {
    Err(OpsError::Invalid(text))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Only the store (the default).
    Image,
    /// An archive that is an OCI layout and a docker-archive at once; `docker`:
    /// asked for as `type=docker` (which cannot hold a multi-platform index).
    Archive {
        dest: PathBuf,
        name: Option<String>,
        docker: bool,
    },
    /// The final filesystem, unpacked into a directory.
    Local { dest: PathBuf },
    /// The final filesystem as one tar.
    Tar { dest: PathBuf },
}

pub fn parse(spec: &str) -> Result<Output> {
    if !spec.contains('=') {
        return Ok(if spec == "-" {
            Output::Tar { dest: "-".into() }
        } else {
            Output::Local { dest: spec.into() }
        });
    }
    let (mut kind, mut dest, mut name) = (None, None, None);
    for field in spec.split(',') {
        let Some((k, v)) = field.split_once('=') else {
            return bad(format!("--output {spec:?}: {field:?} is not KEY=VALUE"));
        };
        match k.trim() {
            "type" => kind = Some(v.to_string()),
            "dest" => dest = Some(PathBuf::from(v)),
            "name" => name = Some(v.to_string()),
            // BuildKit's image-exporter keys that change nothing for a local store.
            "push" | "tar" | "compression" | "oci-mediatypes" | "unpack" | "store" => {
                if k == "push" && v == "true" {
                    return bad("--output push=true: use --push".into());
                }
                if k == "tar" && v == "false" {
                    return bad("--output tar=false: writing an unpacked OCI layout directory is not supported; use type=oci,dest=FILE.tar".into());
                }
            }
            other => return bad(format!("--output {spec:?}: unknown key {other:?}")),
        }
    }
    let need_dest = |what: &str| -> Result<PathBuf> {
        dest.clone()
            .ok_or_else(|| OpsError::Invalid(format!("--output type={what} needs dest=PATH")))
    };
    match kind.as_deref() {
        Some("registry") => bad("--output type=registry: use --push".into()),
        Some("image") => Ok(Output::Image),
        Some(k @ ("oci" | "docker")) => Ok(Output::Archive {
            dest: need_dest(k)?,
            name,
            docker: k == "docker",
        }),
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

/// Writes the built image where `out` says. `tags` name the image in archives.
/// For a multi-platform index, filesystems go one subdirectory per platform.
/// `dest=-` writes to `stdout`.
pub fn write(
    store: &Store,
    out: &Output,
    manifest: &Descriptor,
    tags: &[ImageRef],
    stdout: Stdout<'_>,
) -> Result<()> {
    let fs = ImageFs::new(store, manifest)?;
    match out {
        Output::Image => Ok(()),
        Output::Archive {
            docker: true, dest, ..
        } if fs.is_multi_platform() => bad(format!(
            "--output type=docker,dest={}: docker exporter does not currently support \
             exporting manifest lists; use type=oci",
            dest.display()
        )),
        Output::Archive { dest, name, .. } => {
            let name = match name {
                Some(n) => Some(ImageRef::parse(n)?),
                None => tags.first().cloned(),
            };
            write_tar_to(Some(dest), stdout, |w| {
                Ok(store.save(&[(name, manifest.clone())], w)?)
            })
        }
        Output::Local { dest } => Ok(fs.unpack_into(store, dest)?),
        Output::Tar { dest } => {
            // Flatten in a scratch directory of the store, then stream it as one tar.
            let flat = fs.flatten(store)?;
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
                name: Some("x:1".into()),
                docker: false,
            }
        );
        assert_eq!(
            parse("type=docker,dest=-").unwrap(),
            Output::Archive {
                dest: "-".into(),
                name: None,
                docker: true,
            }
        );
        assert_eq!(parse("type=image").unwrap(), Output::Image);
        let e = parse("type=local").unwrap_err().to_string();
        assert!(e.contains("needs dest=PATH"), "{e}");
        let e = parse("type=registry").unwrap_err().to_string();
        assert!(e.contains("--push"), "{e}");
        let e = parse("type=oci,dest=x,bogus=1").unwrap_err().to_string();
        assert!(e.contains("unknown key \"bogus\""), "{e}");
        let e = parse("type=zip,dest=x").unwrap_err().to_string();
        assert!(e.contains("type=zip"), "{e}");
    }
}
