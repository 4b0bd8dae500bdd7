//! `--ssh default|ID[=SOCKET|KEY[,KEY...]]` (docker buildx's syntax): agent sockets
//! for `RUN --mount=type=ssh`, checked before the build starts.

use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::PathBuf;

use anyhow::{bail, Result};

/// Maps each id to its agent socket; an id alone means `$SSH_AUTH_SOCK`.
pub fn parse(list: &[String]) -> Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for item in list {
        let (id, paths) = match item.split_once('=') {
            Some((id, paths)) => (id, paths),
            None => (item.as_str(), ""),
        };
        if id.is_empty() {
            bail!("--ssh {item:?}: the id is empty (expected default or ID[=SOCKET])");
        }
        let paths: Vec<&str> = paths.split(',').filter(|p| !p.is_empty()).collect();
        let socket = match paths.as_slice() {
            [] => match std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty()) {
                Some(v) => PathBuf::from(v),
                None => bail!(
                    "--ssh {id}: SSH_AUTH_SOCK is not set; start an agent or give --ssh {id}=SOCKET"
                ),
            },
            [one] => PathBuf::from(one),
            _ => bail!(
                "--ssh {id}: key files are not supported; load them into an ssh-agent (ssh-add) and pass its socket"
            ),
        };
        let md = match std::fs::metadata(&socket) {
            Ok(md) => md,
            Err(e) => bail!("--ssh {id}: {}: {e}", socket.display()),
        };
        if !md.file_type().is_socket() {
            bail!(
                "--ssh {id}: {} is not a socket; key files are not supported, load them into an ssh-agent (ssh-add) and pass its socket",
                socket.display()
            );
        }
        if out.insert(id.to_string(), socket).is_some() {
            bail!("--ssh {id}: given twice");
        }
    }
    Ok(out)
}
