//! `--secret id=ID,src=FILE` / `--secret id=ID,env=VAR` (docker buildx's syntax).

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};

/// Reads every `--secret` value; a missing file or variable fails naming it.
pub fn parse(list: &[String]) -> Result<BTreeMap<String, Vec<u8>>> {
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
                read_env(&id, &v)?
            }
            (Some("env"), None, None) => read_env(&id, &id)?,
            (Some("file") | None, Some(path), None) => {
                std::fs::read(&path).with_context(|| format!("--secret id={id}: reading {path}"))?
            }
            (None, None, None) => match std::env::var_os(&id) {
                Some(_) => read_env(&id, &id)?,
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
