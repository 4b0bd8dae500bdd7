//! What every command reports, as data: the one schema `--progress=json` writes
//! (one object per line, `event` naming it) and the tty and plain views draw.
//! Fields marked `skip` only shape the text views; JSON keeps its documented fields.

use std::sync::Arc;

use builder::exec::BuildEvent;
use layer_cache::Digest;
use registry_client::transfer::{Action, TransferEvent, TransferReporter};
use registry_client::{Descriptor, Reference};
use serde::Serialize;

/// Where an operation's events go; the CLI renders them.
pub trait Reporter: Send + Sync {
    fn event(&self, e: Event<'_>);
    /// A reporter for one transfer's events (a pull or push it starts).
    fn transfer(&self) -> Arc<dyn TransferReporter>;
}

#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event<'a> {
    /// A build check's finding (a `warning` event, as transfer warnings).
    #[serde(rename = "warning")]
    Lint {
        rule: &'a str,
        line: usize,
        message: &'a str,
        url: &'a str,
    },
    /// The build's result.
    Image {
        digest: Digest,
        tags: Vec<String>,
    },

    // Transfers: the start of a pull, push or copy.
    Pull {
        #[serde(rename = "ref")]
        reference: String,
    },
    Push {
        #[serde(rename = "ref")]
        reference: String,
        /// The local image pushed, when the text view names it.
        #[serde(skip)]
        image: Option<String>,
    },
    Copy {
        #[serde(rename = "ref")]
        reference: String,
        dest: String,
    },
    /// Bytes moved so far for one blob; drawn by the tty view only.
    #[serde(skip)]
    BlobBytes {
        digest: &'a Digest,
        size: u64,
        done: u64,
    },
    /// A blob's byte counter is gone (its transfer ended either way).
    #[serde(skip)]
    BlobBytesEnd {
        digest: &'a Digest,
    },
    /// One blob's outcome.
    Blob {
        action: BlobAction,
        #[serde(rename = "ref")]
        reference: String,
        digest: Digest,
        size: u64,
        /// A layer a build's pull also unpacked into its snapshot.
        #[serde(skip_serializing_if = "is_false")]
        unpacked: bool,
        /// `mounted`: the repository mounted from.
        #[serde(skip)]
        from: Option<String>,
        /// `pushed`: upload chunks (more than one is said).
        #[serde(skip)]
        chunks: u64,
    },
    Pulled {
        #[serde(rename = "ref")]
        reference: String,
        digest: Digest,
        size: u64,
    },
    Pushed {
        #[serde(rename = "ref")]
        reference: String,
        digest: Digest,
        size: u64,
        /// The tag or digest part of the reference, as the text view says it.
        #[serde(skip)]
        shown: String,
    },
    Copied {
        #[serde(rename = "ref")]
        reference: String,
        dest: String,
        digest: Digest,
    },
    /// Stopped by a signal: `action` (`pull`, `push`, `copy`) and what that left.
    Interrupted {
        action: &'a str,
        #[serde(rename = "ref")]
        reference: String,
        left: String,
    },
    Warning {
        message: String,
    },

    // Build cache import and export.
    #[serde(rename = "cache-import")]
    CacheImport {
        source: String,
        records: u64,
        layers: u64,
        size: u64,
        /// Records left out because their layer was missing.
        #[serde(skip)]
        skipped: u64,
    },
    /// Layers of imported caches the build fetched (after the build).
    #[serde(rename = "cache-fetched")]
    CacheFetched {
        layers: u64,
        size: u64,
    },
    #[serde(rename = "cache-export")]
    CacheExport {
        dest: String,
        mode: &'a str,
        records: u64,
        layers: u64,
        size: u64,
    },
    #[serde(rename = "cache-exported")]
    CacheExported {
        dest: String,
        digest: Digest,
    },

    /// A build's steps, as the builder reports and serializes them (`step_started`,
    /// `output`, `step_done`, `step_cached`, `cache_miss`). Untagged: the builder's
    /// event carries its own `event` name (serde wants untagged variants last).
    #[serde(untagged)]
    Build(BuildEvent<'a>),
}

/// What happened to a blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BlobAction {
    /// Pull: already in the store.
    Exists,
    Pulled,
    /// Push or copy: the registry has it.
    Skipped,
    /// Push or copy: mounted from another repository of the registry.
    Mounted,
    Pushed,
    Copied,
}

impl Event<'static> {
    /// What a transfer's event says, or `None` for what only byte counters draw
    /// (a copy's start and manifests say nothing).
    pub fn from_transfer(e: &TransferEvent<'_>) -> Option<Event<'static>> {
        Some(match *e {
            TransferEvent::Start {
                action: Action::Pull,
                reference,
            } => Event::pull(reference),
            TransferEvent::Start {
                action: Action::Push,
                reference,
            } => Event::push(reference, None),
            // A copy says its blobs and its end.
            TransferEvent::Start { .. } | TransferEvent::Manifest { .. } => return None,
            TransferEvent::BlobUploading { .. }
            | TransferEvent::BlobDownloading { .. }
            | TransferEvent::BlobBytes { .. } => return None,
            TransferEvent::BlobExists { reference, blob } => {
                Event::blob(BlobAction::Exists, reference, blob)
            }
            TransferEvent::BlobSkipped { reference, blob } => {
                Event::blob(BlobAction::Skipped, reference, blob)
            }
            TransferEvent::BlobMounted {
                reference,
                blob,
                from,
            } => Event::mounted(reference, blob, from),
            TransferEvent::BlobDone {
                action,
                reference,
                blob,
                chunks,
                unpacked,
            } => match action {
                Action::Pull => Event::blob(BlobAction::Pulled, reference, blob).unpacked(unpacked),
                Action::Push => Event::pushed_in(reference, blob, u64::from(chunks)),
                Action::Copy => Event::blob(BlobAction::Copied, reference, blob),
            },
            TransferEvent::Finish {
                action: Action::Push,
                reference,
                digest,
                size,
            } => Event::pushed(reference, digest, size),
            TransferEvent::Finish {
                reference,
                digest,
                size,
                ..
            } => Event::pulled(reference, digest, size),
            TransferEvent::Interrupted {
                action,
                reference,
                left,
            } => Event::interrupted(verb(action), reference, left),
            TransferEvent::ReplacesIndex { reference, index } => Event::warning(format!(
                "{reference} holds the multi-platform index {index} this image was pulled from; \
                 pushing replaces it with this one platform (`mybuild copy --all-platforms` \
                 moves the whole index)"
            )),
            TransferEvent::Warning { message } => Event::warning(message),
        })
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Copy => "copy",
    }
}

impl<'a> Event<'a> {
    pub fn lint(w: &'a builder::lint::LintWarning) -> Event<'a> {
        Event::Lint {
            rule: w.rule,
            line: w.line,
            message: &w.detail,
            url: &w.url,
        }
    }

    /// The start of a pull of `r`.
    pub fn pull(r: &Reference) -> Event<'static> {
        Event::Pull {
            reference: r.to_string(),
        }
    }

    /// The start of a push to `r`; `image`: the local image, when it is named.
    pub fn push(r: &Reference, image: Option<&str>) -> Event<'static> {
        Event::Push {
            reference: r.to_string(),
            image: image.map(str::to_string),
        }
    }

    /// The start of a copy of `src` to `dest`.
    pub fn copy(src: &Reference, dest: &Reference) -> Event<'static> {
        Event::Copy {
            reference: src.to_string(),
            dest: dest.to_string(),
        }
    }

    /// `done` of `d`'s bytes moved.
    pub fn blob_bytes(d: &'a Descriptor, done: u64) -> Event<'a> {
        Event::BlobBytes {
            digest: &d.digest,
            size: d.size,
            done,
        }
    }

    /// `d`'s byte counter ends.
    pub fn blob_bytes_end(d: &'a Descriptor) -> Event<'a> {
        Event::BlobBytesEnd { digest: &d.digest }
    }

    /// One blob of `r` (the pull's source, the push's or copy's destination) done.
    pub fn blob(action: BlobAction, r: &Reference, d: &Descriptor) -> Event<'static> {
        Event::Blob {
            action,
            reference: r.to_string(),
            digest: d.digest.clone(),
            size: d.size,
            unpacked: false,
            from: None,
            chunks: 0,
        }
    }

    /// A pulled layer that was also unpacked into its snapshot.
    pub fn unpacked(mut self, yes: bool) -> Self {
        if let Event::Blob { unpacked, .. } = &mut self {
            *unpacked = yes;
        }
        self
    }

    /// A blob mounted from repository `repo`.
    pub fn mounted(r: &Reference, d: &Descriptor, repo: &str) -> Event<'static> {
        let mut e = Event::blob(BlobAction::Mounted, r, d);
        if let Event::Blob { from, .. } = &mut e {
            *from = Some(repo.to_string());
        }
        e
    }

    /// A blob uploaded in `n` chunks.
    pub fn pushed_in(r: &Reference, d: &Descriptor, n: u64) -> Event<'static> {
        let mut e = Event::blob(BlobAction::Pushed, r, d);
        if let Event::Blob { chunks, .. } = &mut e {
            *chunks = n;
        }
        e
    }

    /// The end of a pull of `r`: the stored manifest.
    pub fn pulled(r: &Reference, digest: &Digest, size: u64) -> Event<'static> {
        Event::Pulled {
            reference: r.to_string(),
            digest: digest.clone(),
            size,
        }
    }

    /// The end of a push to `r`: the manifest sent.
    pub fn pushed(r: &Reference, digest: &Digest, size: u64) -> Event<'static> {
        Event::Pushed {
            reference: r.to_string(),
            digest: digest.clone(),
            size,
            shown: r.reference(),
        }
    }

    /// The end of a copy of `src` to `dest`.
    pub fn copied(src: &Reference, dest: &Reference, digest: &Digest) -> Event<'static> {
        Event::Copied {
            reference: src.to_string(),
            dest: dest.to_string(),
            digest: digest.clone(),
        }
    }

    /// `action` (`pull`, `push`, `copy`) of `r` stopped by a signal, leaving `left`.
    pub fn interrupted(action: &'a str, r: &Reference, left: &str) -> Event<'a> {
        Event::Interrupted {
            action,
            reference: r.to_string(),
            left: left.to_string(),
        }
    }

    pub fn warning(message: impl Into<String>) -> Event<'static> {
        Event::Warning {
            message: message.into(),
        }
    }

    /// Whether this is worth a line even when progress is quiet.
    pub fn always_said(&self) -> bool {
        matches!(self, Event::Warning { .. } | Event::Interrupted { .. })
    }

    /// The event as one JSON line's object, keys sorted (as they always were);
    /// `None` for events JSON leaves out (byte counters).
    pub fn to_json(&self) -> Option<serde_json::Value> {
        match self {
            Event::BlobBytes { .. } | Event::BlobBytesEnd { .. } => None,
            e => serde_json::to_value(e).ok(),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(e: &Event<'_>) -> String {
        e.to_json().map(|v| format!("{v}\n")).unwrap_or_default()
    }

    #[test]
    fn json_lines_keep_sorted_keys_and_leave_out_what_only_text_says() {
        let r = Reference::parse("127.0.0.1:5000/a/b:1").expect("ref");
        let d = Descriptor {
            digest: format!("sha256:{}", "ab".repeat(32))
                .parse()
                .expect("digest"),
            size: 2_500_000,
            media_type: String::new(),
            platform: None,
            urls: Vec::new(),
        };
        let e = Event::mounted(&r, &d, "a/c");
        assert_eq!(
            json(&e),
            format!(
                "{{\"action\":\"mounted\",\"digest\":\"{}\",\"event\":\"blob\",\
                 \"ref\":\"127.0.0.1:5000/a/b:1\",\"size\":2500000}}\n",
                d.digest
            )
        );
        let e = Event::blob(BlobAction::Pulled, &r, &d).unpacked(true);
        assert!(json(&e).contains("\"unpacked\":true"), "{}", json(&e));
        let e = Event::push(&r, Some("app:1"));
        assert_eq!(
            json(&e),
            "{\"event\":\"push\",\"ref\":\"127.0.0.1:5000/a/b:1\"}\n"
        );
        // Byte counters are drawn, never written as JSON.
        assert_eq!(json(&Event::blob_bytes(&d, 5)), "");
        let e = Event::Build(BuildEvent::Output {
            id: 1,
            stream: builder::sandbox::Stream::Stderr,
            data: b"\xff",
        });
        assert_eq!(
            json(&e),
            "{\"data\":\"\u{fffd}\",\"event\":\"output\",\"id\":1,\"stream\":\"stderr\"}\n"
        );
    }
}
