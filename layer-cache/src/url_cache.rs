//! What the last download of a URL looked like, so the next build can revalidate it
//! with a conditional request instead of fetching the body again: one small JSON file
//! per URL under `cache-v1/urls/<sha256 of the URL>`, written atomically. The URL is
//! stored and hashed without its userinfo, so no credential reaches the disk.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Result, StoreError};
use crate::store::Store;

/// A URL's validators and the content they stood for at the last download.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlMeta {
    /// The URL without userinfo ([`strip_userinfo`]).
    pub url: String,
    #[serde(default)]
    pub etag: Option<String>,
    /// `Last-Modified` as the server sent it.
    #[serde(default)]
    pub last_modified: Option<String>,
    /// sha256 of the body.
    pub digest: Digest,
    /// The file name the URL gave the download.
    pub name: String,
    pub size: u64,
}

impl UrlMeta {
    /// Whether a conditional request can be made from it.
    pub fn has_validator(&self) -> bool {
        self.etag.is_some() || self.last_modified.is_some()
    }
}

/// `url` without `user[:password]@`: a user name alone may be a token.
pub fn strip_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((_, host)) => format!("{scheme}://{host}{}", &rest[end..]),
        None => url.to_string(),
    }
}

impl Store {
    fn url_meta_path(&self, url: &str) -> std::path::PathBuf {
        let name = Digest::of(strip_userinfo(url).as_bytes());
        self.cache_dir().join("urls").join(name.hex())
    }

    /// The metadata of `url`'s last download; an unreadable file counts as none (it
    /// only saves a download).
    pub fn url_meta(&self, url: &str) -> Result<Option<UrlMeta>> {
        let path = self.url_meta_path(url);
        let bytes = match fs_err::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let stripped = strip_userinfo(url);
        Ok(serde_json::from_slice::<UrlMeta>(&bytes)
            .ok()
            .filter(|m| m.url == stripped))
    }

    /// Remembers `meta` for its URL (`meta.url` is stripped of userinfo here too).
    pub fn set_url_meta(&self, meta: &UrlMeta) -> Result<()> {
        let meta = UrlMeta {
            url: strip_userinfo(&meta.url),
            ..meta.clone()
        };
        let path = self.url_meta_path(&meta.url);
        if let Some(dir) = path.parent() {
            fs_err::create_dir_all(dir)?;
        }
        let bytes = serde_json::to_vec(&meta).map_err(|e| StoreError::json("url metadata", e))?;
        self.replace_file(&path, &bytes)
    }

    /// Forgets `url` (its server stopped sending validators).
    pub fn remove_url_meta(&self, url: &str) -> Result<()> {
        let path = self.url_meta_path(url);
        match fs_err::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_round_trips_without_credentials() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let meta = UrlMeta {
            url: "https://u:secret@h.example/a/f.txt?x=1".into(),
            etag: Some("\"abc\"".into()),
            last_modified: None,
            digest: Digest::of(b"body"),
            name: "f.txt".into(),
            size: 4,
        };
        store.set_url_meta(&meta).unwrap();
        // Any credentials find the same entry, which holds none.
        let got = store
            .url_meta("https://other@h.example/a/f.txt?x=1")
            .unwrap()
            .unwrap();
        assert_eq!(got.url, "https://h.example/a/f.txt?x=1");
        assert_eq!(got.etag, meta.etag);
        let dir = store.cache_dir().join("urls");
        for e in std::fs::read_dir(&dir).unwrap() {
            let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
            assert!(!text.contains("secret") && !text.contains("u:"), "{text}");
        }
        assert_eq!(store.url_meta("https://h.example/other").unwrap(), None);
        store
            .remove_url_meta("https://h.example/a/f.txt?x=1")
            .unwrap();
        assert_eq!(
            store.url_meta("https://h.example/a/f.txt?x=1").unwrap(),
            None
        );
    }

    #[test]
    fn userinfo_is_stripped_from_the_authority_only() {
        assert_eq!(strip_userinfo("http://a:b@h:1/p"), "http://h:1/p");
        assert_eq!(strip_userinfo("http://tok@h/p@q"), "http://h/p@q");
        assert_eq!(strip_userinfo("http://h/p@q"), "http://h/p@q");
    }
}
