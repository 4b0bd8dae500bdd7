//! `--secret id=ID,src=FILE` / `--secret id=ID,env=VAR` (docker buildx's syntax).
//! A file is only named here; the build reads it when a step mounts it.

use std::collections::BTreeMap;

use builder::exec::secret::{Secret, MAX_SECRET_SIZE};

use crate::{OpsError, Result};

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(OpsError::invalid(format!($($t)*)))
    };
}

/// Parses every `--secret`; a missing variable fails naming it (a file is read,
/// with its size limit, only by a step that mounts it).
pub fn parse(list: &[String]) -> Result<BTreeMap<String, Secret>> {
    let mut out = BTreeMap::new();
    for item in list {
        let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
        for field in item.split(',').filter(|f| !f.is_empty()) {
            let Some((k, v)) = field.split_once('=') else {
                bail!("--secret {item:?}: expected KEY=VALUE fields, got {field:?}");
            };
            match k.trim().to_ascii_lowercase().as_str() {
                "id" => id = Some(v.to_string()),
                "type" => kind = Some(v.to_string()),
                "src" | "source" => src = Some(v.to_string()),
                "env" => env = Some(v.to_string()),
                other => bail!("--secret {item:?}: unexpected key {other:?}"),
            }
        }
        let Some(id) = id.filter(|i| !i.is_empty()) else {
            bail!("--secret {item:?}: id= is required");
        };
        let value = match (kind.as_deref(), src, env) {
            (Some("env"), Some(v), None) | (Some("env"), None, Some(v)) | (None, None, Some(v)) => {
                Secret::Value(read_env(&id, &v)?)
            }
            (Some("env"), None, None) => Secret::Value(read_env(&id, &id)?),
            (Some("file") | None, Some(path), None) => {
                // As buildx: the file must exist now, and a regular file's size is
                // checked now; its bytes are read by the step that mounts it.
                let md = std::fs::metadata(&path).map_err(|source| OpsError::SecretFile {
                    id: id.clone(),
                    path: path.clone().into(),
                    source,
                })?;
                if md.is_file() && md.len() > MAX_SECRET_SIZE {
                    bail!(
                        "--secret id={id}: {path} is larger than the {} KiB limit for a secret",
                        MAX_SECRET_SIZE / 1024
                    );
                }
                Secret::File(path.into())
            }
            (None, None, None) => match std::env::var_os(&id) {
                Some(_) => Secret::Value(read_env(&id, &id)?),
                None => bail!("--secret id={id}: give src=FILE or env=VARIABLE"),
            },
            (Some(t), _, _) if t != "env" && t != "file" => {
                bail!("--secret id={id}: unknown type {t:?} (expected file or env)")
            }
            _ => bail!("--secret id={id}: give either src= or env=, not both"),
        };
        out.insert(id, value);
    }
    Ok(out)
}

fn read_env(id: &str, var: &str) -> Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    match std::env::var_os(var) {
        Some(v) => Ok(v.into_vec()),
        None => bail!("--secret id={id}: environment variable {var} is not set"),
    }
}
