//! `--ssh default|ID[=SOCKET|KEY[,KEY...]]` (docker buildx's syntax) for
//! `RUN --mount=type=ssh`, checked and set up before the build starts.
//!
//! An id given key files gets an agent of its own for the build
//! ([`builder::exec::ssh_agent`]); the builder then forwards its socket like any
//! other agent socket.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use builder::exec::ssh_agent::SshAgents;

use crate::{OpsError, Result};

macro_rules! bail {
    ($($t:tt)*) => {
        return Err(OpsError::invalid(format!($($t)*)))
    };
}

pub fn parse(list: &[String]) -> Result<SshAgents> {
    let mut wanted: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for item in list {
        let (id, paths) = match item.split_once('=') {
            Some((id, paths)) => (id, paths),
            None => (item.as_str(), ""),
        };
        if id.is_empty() {
            bail!("--ssh {item:?}: the id is empty (expected default or ID[=SOCKET|KEY[,KEY...]])");
        }
        let paths: Vec<PathBuf> = paths
            .split(',')
            .filter(|p| !p.is_empty())
            .map(expand_home)
            .collect();
        let paths = if paths.is_empty() {
            match std::env::var_os("SSH_AUTH_SOCK").filter(|v| !v.is_empty()) {
                Some(v) => vec![PathBuf::from(v)],
                None => bail!(
                    "--ssh {id}: SSH_AUTH_SOCK is not set; start an agent or give --ssh {id}=SOCKET or {id}=KEYFILE"
                ),
            }
        } else {
            paths
        };
        if wanted.insert(id.to_string(), paths).is_some() {
            bail!("--ssh {id}: given twice");
        }
    }
    SshAgents::start(wanted).map_err(|e| match e.id().map(|id| format!("--ssh {id}")) {
        Some(which) => OpsError::invalid_because(which, e),
        None => OpsError::SshAgent(e),
    })
}

/// `~/x` as the shell would expand it (buildx users write `--ssh default=~/.ssh/id`).
fn expand_home(p: &str) -> PathBuf {
    match (p.strip_prefix("~/"), std::env::var_os("HOME")) {
        (Some(rest), Some(home)) => Path::new(&home).join(rest),
        _ => PathBuf::from(p),
    }
}
