//! Which extended-attribute namespace overlayfs keeps its own metadata in.
//!
//! In the initial user namespace overlay uses `trusted.overlay.*`. Inside any other
//! user namespace `trusted.*` cannot be set, so overlay is mounted with `userxattr`
//! and opaque directories carry `user.overlay.opaque`. The choice is made once per
//! process, from `/proc/self/uid_map`: every snapshot this process writes and every
//! overlay it mounts use the same one.

use std::sync::OnceLock;

/// Where overlay's own attributes live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrNamespace {
    /// `trusted.overlay.*`: the initial user namespace.
    Trusted,
    /// `user.overlay.*`, with the `userxattr` mount option: any other user namespace.
    User,
}

impl XattrNamespace {
    /// The attribute that marks a directory opaque (value `y`).
    pub fn opaque(self) -> &'static str {
        match self {
            XattrNamespace::Trusted => "trusted.overlay.opaque",
            XattrNamespace::User => "user.overlay.opaque",
        }
    }

    /// The extra overlay mount option this namespace needs, if any.
    pub fn mount_option(self) -> Option<&'static str> {
        match self {
            XattrNamespace::Trusted => None,
            XattrNamespace::User => Some("userxattr"),
        }
    }
}

/// The namespace for this process, read once from `/proc/self/uid_map`. When the
/// file cannot be read the process is taken to be in the initial namespace, where
/// mybuild has always run.
pub fn namespace() -> XattrNamespace {
    static NS: OnceLock<XattrNamespace> = OnceLock::new();
    *NS.get_or_init(|| match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(text) => namespace_from_uid_map(&text),
        Err(_) => XattrNamespace::Trusted,
    })
}

/// Whether this process runs in a user namespace other than the initial one.
pub fn in_user_namespace() -> bool {
    namespace() == XattrNamespace::User
}

/// The initial user namespace maps every id onto itself in one line:
/// `0 0 4294967295`. Anything else is a namespace of its own.
pub fn namespace_from_uid_map(text: &str) -> XattrNamespace {
    let lines: Vec<Vec<&str>> = text
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| !f.is_empty())
        .collect();
    match lines.as_slice() {
        [only] if only.as_slice() == ["0", "0", "4294967295"] => XattrNamespace::Trusted,
        _ => XattrNamespace::User,
    }
}

/// Attribute prefixes overlay implementations keep their metadata under: the
/// kernel's in either namespace and fuse-overlayfs's own. They describe a snapshot,
/// never a file, so they are neither written into a layer nor taken from one.
pub const OVERLAY_XATTR_PREFIXES: &[&[u8]] = &[
    b"trusted.overlay.",
    b"user.overlay.",
    b"user.fuseoverlayfs.",
];

/// Whether `name` is overlay metadata (see [`OVERLAY_XATTR_PREFIXES`]).
pub fn is_overlay_xattr(name: &[u8]) -> bool {
    OVERLAY_XATTR_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// A chown the user namespace cannot express: with only one id mapped, giving a
/// file any other owner fails with `EINVAL`.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot give {} owner {uid}:{gid}: only one id is mapped in this user namespace; add \
     subordinate ids for your user (usermod --add-subuids 100000-165535 --add-subgids \
     100000-165535 $USER) and retry",
    path.display()
)]
pub struct UnmappedOwner {
    pub path: std::path::PathBuf,
    pub uid: u32,
    pub gid: u32,
}

/// Whether a chown that failed with `errno` failed because the owner is not mapped
/// in this user namespace (`EINVAL` there; in the initial namespace every id is).
pub fn is_unmapped_owner(errno: i32) -> bool {
    errno == libc::EINVAL && in_user_namespace()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_initial_namespace_is_the_identity_map_of_every_id() {
        assert_eq!(
            namespace_from_uid_map("         0          0 4294967295\n"),
            XattrNamespace::Trusted
        );
    }

    #[test]
    fn any_other_map_is_a_user_namespace() {
        // A user mapped to root with a subordinate range, as newuidmap writes it.
        let ranged = "         0       1001          1\n         1     200000      65536\n";
        assert_eq!(namespace_from_uid_map(ranged), XattrNamespace::User);
        // A single id, as without subordinate ranges.
        assert_eq!(namespace_from_uid_map("0 1002 1\n"), XattrNamespace::User);
        // A full map that is not the identity (a nested namespace).
        assert_eq!(
            namespace_from_uid_map("0 1 4294967295\n"),
            XattrNamespace::User
        );
        // No map at all: a namespace whose map was never written.
        assert_eq!(namespace_from_uid_map(""), XattrNamespace::User);
    }

    #[test]
    fn each_namespace_names_its_opaque_attribute_and_mount_option() {
        assert_eq!(XattrNamespace::Trusted.opaque(), "trusted.overlay.opaque");
        assert_eq!(XattrNamespace::User.opaque(), "user.overlay.opaque");
        assert_eq!(XattrNamespace::Trusted.mount_option(), None);
        assert_eq!(XattrNamespace::User.mount_option(), Some("userxattr"));
    }

    #[test]
    fn an_unmapped_owner_says_how_to_map_more_ids() {
        let e = UnmappedOwner {
            path: "/etc/app".into(),
            uid: 1000,
            gid: 1000,
        };
        assert_eq!(
            e.to_string(),
            "cannot give /etc/app owner 1000:1000: only one id is mapped in this user \
             namespace; add subordinate ids for your user (usermod --add-subuids \
             100000-165535 --add-subgids 100000-165535 $USER) and retry"
        );
    }

    #[test]
    fn overlay_attributes_of_every_implementation_are_recognised() {
        assert!(is_overlay_xattr(b"trusted.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.overlay.opaque"));
        assert!(is_overlay_xattr(b"user.fuseoverlayfs.origin"));
        assert!(!is_overlay_xattr(b"user.mime_type"));
        assert!(!is_overlay_xattr(b"security.capability"));
    }
}
