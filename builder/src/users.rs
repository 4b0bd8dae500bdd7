//! USER and `--chown` resolution through the image's own `/etc/passwd` and
//! `/etc/group`, read from the merged view of snapshot directories (topmost first).

use std::path::PathBuf;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    #[error("invalid user {0:?}")]
    Invalid(String),
}

/// uid, gid and supplementary groups for a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

/// Reads a file of the image as a process inside it would: `path` is resolved in the
/// merged view of `lowerdirs` (topmost first), symlinks followed but never out of
/// the image's root, whiteouts and opaque directories honoured. `None` when it is
/// missing or not a regular file.
pub fn read_merged(lowerdirs: &[PathBuf], path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let real = crate::exec::merged::resolve(lowerdirs, path)?;
    if !std::fs::symlink_metadata(&real).ok()?.is_file() {
        return None;
    }
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&real)
        .ok()?;
    let mut out = Vec::new();
    // A passwd or group file is small; a huge one is not read whole.
    (&mut f).take(MAX_ID_FILE).read_to_end(&mut out).ok()?;
    Some(out)
}

/// The most of `/etc/passwd` or `/etc/group` read.
const MAX_ID_FILE: u64 = 64 << 20;

fn lookup_line<'a>(file: &'a str, name: &str) -> Option<Vec<&'a str>> {
    file.lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
}

fn numeric(s: &str) -> Option<u32> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// Resolves `user[:group]` (names or numbers) as Docker does for USER and RUN.
pub fn resolve(spec: &str, lowerdirs: &[PathBuf]) -> Result<Ids, UserError> {
    resolve_with_home(spec, lowerdirs).map(|(ids, _)| ids)
}

/// [`resolve`], and the home directory a process of that user gets when the image
/// sets no HOME, as runc picks it: the passwd entry's, else /root for uid 0 and /
/// for others. The image's passwd and group are read once.
pub fn resolve_with_home(spec: &str, lowerdirs: &[PathBuf]) -> Result<(Ids, String), UserError> {
    let passwd =
        read_merged(lowerdirs, "/etc/passwd").map(|b| String::from_utf8_lossy(&b).into_owned());
    let group =
        read_merged(lowerdirs, "/etc/group").map(|b| String::from_utf8_lossy(&b).into_owned());
    let (ids, home) = resolve_entry(spec, passwd.as_deref(), group.as_deref())?;
    let home = home.unwrap_or_else(|| if ids.uid == 0 { "/root" } else { "/" }.to_string());
    Ok((ids, home))
}

pub fn resolve_in(spec: &str, passwd: Option<&str>, group: Option<&str>) -> Result<Ids, UserError> {
    resolve_entry(spec, passwd, group).map(|(ids, _)| ids)
}

/// The ids, and the passwd entry's home directory when it names one.
fn resolve_entry(
    spec: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<(Ids, Option<String>), UserError> {
    let unset = spec.is_empty();
    let spec = if unset { "root" } else { spec };
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if user.is_empty() {
        return Err(UserError::Invalid(spec.to_string()));
    }
    let entry = passwd.and_then(|p| {
        lookup_line(p, user).or_else(|| {
            numeric(user).and_then(|n| {
                p.lines()
                    .map(|l| l.split(':').collect::<Vec<_>>())
                    .find(|f| f.len() >= 4 && numeric(f[2]) == Some(n))
            })
        })
    });
    let (uid, primary_gid, username) = match (&entry, numeric(user)) {
        (Some(f), _) if f.len() >= 4 => (
            numeric(f[2]).ok_or_else(|| UserError::Invalid(spec.to_string()))?,
            numeric(f[3]).unwrap_or(0),
            Some(f[0]),
        ),
        (_, Some(n)) => (n, 0, None),
        // No USER at all runs as 0:0, with or without a passwd file (FROM scratch).
        _ if unset => (0, 0, None),
        _ => return Err(UserError::NoUser(user.to_string())),
    };
    let gid = match grp {
        None => primary_gid,
        Some("") => return Err(UserError::Invalid(spec.to_string())),
        Some(g) => match numeric(g) {
            Some(n) => n,
            None => group
                .and_then(|gf| lookup_line(gf, g))
                .and_then(|f| numeric(f[2]))
                .ok_or_else(|| UserError::NoGroup(g.to_string()))?,
        },
    };
    // Supplementary groups apply only when the group was not given explicitly.
    let mut additional_gids = Vec::new();
    if grp.is_none() {
        if let (Some(name), Some(gf)) = (username, group) {
            for f in gf.lines().map(|l| l.split(':').collect::<Vec<_>>()) {
                if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                    if let Some(g) = numeric(f[2]) {
                        if g != gid && !additional_gids.contains(&g) {
                            additional_gids.push(g);
                        }
                    }
                }
            }
        }
    }
    let home = entry
        .as_ref()
        .and_then(|f| f.get(5))
        .filter(|h| !h.is_empty())
        .map(|h| h.to_string());
    Ok((
        Ids {
            uid,
            gid,
            additional_gids,
        },
        home,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:app\nappgrp:x:1001:\n";

    #[test]
    fn resolves_names_numbers_and_groups() {
        let r = |s| resolve_in(s, Some(PASSWD), Some(GROUP));
        assert_eq!(
            r("app"),
            Ok(Ids {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![50]
            })
        );
        assert_eq!(
            r("1000"),
            Ok(Ids {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![50]
            })
        );
        assert_eq!(
            r("app:staff"),
            Ok(Ids {
                uid: 1000,
                gid: 50,
                additional_gids: vec![]
            })
        );
        assert_eq!(
            r("4242:7"),
            Ok(Ids {
                uid: 4242,
                gid: 7,
                additional_gids: vec![]
            })
        );
        assert_eq!(
            r(""),
            Ok(Ids {
                uid: 0,
                gid: 0,
                additional_gids: vec![]
            })
        );
        assert_eq!(
            r("nobody").unwrap_err().to_string(),
            "unable to find user nobody: no matching entries in passwd file"
        );
        assert_eq!(
            r("app:nogrp").unwrap_err().to_string(),
            "unable to find group nogrp: no matching entries in group file"
        );
    }
}
