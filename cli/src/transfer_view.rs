//! How pulls, pushes and copies are shown: plain lines, JSON events or live
//! byte counters, drawn from the transfer library's events.

use std::collections::HashMap;
use std::sync::Mutex;

use registry_client::transfer::{Action, TransferEvent, TransferReporter};
use registry_client::{Descriptor, Reference};

use crate::commands::human_size;

/// How transfers are shown: `Auto` is byte counters per blob in a terminal
/// (plain lines otherwise, and in CI); `Tty` is byte counters in CI too;
/// `Json` is one JSON line per event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

impl ProgressMode {
    /// The mode for a build's (or pull's, push's) `--progress` value.
    pub fn for_build(progress: &str, quiet: bool) -> ProgressMode {
        match progress {
            _ if quiet => ProgressMode::Quiet,
            "quiet" => ProgressMode::Quiet,
            "json" => ProgressMode::Json,
            "plain" => ProgressMode::Plain,
            "tty" => ProgressMode::Tty,
            _ => ProgressMode::Auto,
        }
    }
}

/// The first 12 hex digits of a digest.
pub fn short(d: &str) -> &str {
    let hex = d.strip_prefix("sha256:").unwrap_or(d);
    &hex[..hex.len().min(12)]
}

/// Renders transfer events in one [`ProgressMode`].
pub struct TransferView {
    mode: ProgressMode,
    multi: Option<indicatif::MultiProgress>,
    /// Live byte counters by blob digest.
    bars: Mutex<HashMap<String, indicatif::ProgressBar>>,
}

impl TransferView {
    pub fn new(mode: ProgressMode) -> TransferView {
        TransferView {
            mode,
            multi: live_progress(mode).then(|| {
                indicatif::MultiProgress::with_draw_target(
                    indicatif::ProgressDrawTarget::stderr_with_hz(10),
                )
            }),
            bars: Mutex::new(HashMap::new()),
        }
    }

    pub fn line(&self, text: String) {
        match (&self.multi, self.mode) {
            (_, ProgressMode::Quiet | ProgressMode::Json) => {}
            (Some(m), _) => {
                let _ = m.println(text);
            }
            (None, _) => eprintln!("{text}"),
        }
    }

    /// A warning: always shown (a JSON event in JSON mode), even when quiet.
    fn warn(&self, text: &str) {
        match (&self.multi, self.mode) {
            (_, ProgressMode::Json) => crate::progress::Json::emit(&serde_json::json!({
                "event": "warning", "message": text,
            })),
            (Some(m), _) => {
                let _ = m.println(format!("warning: {text}"));
            }
            (None, _) => eprintln!("warning: {text}"),
        }
    }

    /// One blob's outcome: `action` names it in JSON, `text` says it in a line;
    /// JSON's `unpacked: true` marks a layer a build pull also unpacked.
    fn blob(&self, r: &Reference, d: &Descriptor, action: &str, text: String, unpacked: bool) {
        self.clear_bar(&d.digest);
        if self.mode == ProgressMode::Json {
            let mut event = serde_json::json!({
                "event": "blob", "action": action, "ref": r.to_string(),
                "digest": d.digest, "size": d.size,
            });
            if unpacked {
                event["unpacked"] = true.into();
            }
            crate::progress::Json::emit(&event);
        } else {
            self.line(format!("{}: {text}", short(&d.digest)));
        }
    }

    /// The end of a pull or push (`action`: `pulled`, `pushed`): the manifest's digest.
    fn finish(&self, action: &str, r: &Reference, digest: &str, size: u64) {
        match self.mode {
            ProgressMode::Json => crate::progress::Json::emit(&serde_json::json!({
                "event": action, "ref": r.to_string(), "digest": digest, "size": size,
            })),
            ProgressMode::Quiet => {}
            _ if action == "pushed" => {
                self.line(format!("{}: digest: {digest} size: {size}", r.reference()))
            }
            _ => self.line(format!("Digest: {digest}")),
        }
    }

    /// Says the work was stopped by a signal, and what that left.
    fn interrupted(&self, action: &str, r: &Reference, left: &str) {
        if self.mode == ProgressMode::Json {
            crate::progress::Json::emit(&serde_json::json!({
                "event": "interrupted", "action": action, "ref": r.to_string(), "left": left,
            }));
        } else {
            eprintln!("error: {action} of {r} interrupted: {left}");
        }
    }

    /// The start of a pull or push (`action`) of `r`.
    fn start(&self, action: &str, r: &Reference) {
        if self.mode == ProgressMode::Json {
            crate::progress::Json::emit(&serde_json::json!({
                "event": action, "ref": r.to_string(),
            }));
        } else {
            self.line(format!("{action}ing {r}"));
        }
    }

    fn add_bar(&self, d: &Descriptor) {
        let Some(m) = self.multi.as_ref() else {
            return;
        };
        let bar = m.add(indicatif::ProgressBar::new(d.size));
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix}: {bytes:>10}/{total_bytes:<10} {wide_bar}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_prefix(short(&d.digest).to_string());
        if let Ok(mut bars) = self.bars.lock() {
            bars.insert(d.digest.clone(), bar);
        }
    }

    fn clear_bar(&self, digest: &str) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(digest)) {
            bar.finish_and_clear();
        }
    }
}

fn verb(a: Action) -> &'static str {
    match a {
        Action::Pull => "pull",
        Action::Push => "push",
        Action::Copy => "copy",
    }
}

impl TransferReporter for TransferView {
    fn event(&self, e: TransferEvent<'_>) {
        match e {
            TransferEvent::Start { action, reference } => self.start(verb(action), reference),
            TransferEvent::BlobExists { reference, blob } => {
                self.blob(reference, blob, "exists", "already exists".into(), false)
            }
            TransferEvent::BlobSkipped { reference, blob } => {
                self.blob(reference, blob, "skipped", "skipped (exists)".into(), false)
            }
            TransferEvent::BlobMounted {
                reference,
                blob,
                from,
            } => self.blob(
                reference,
                blob,
                "mounted",
                format!("mounted from {from}"),
                false,
            ),
            TransferEvent::BlobUploading { blob } | TransferEvent::BlobDownloading { blob } => {
                self.add_bar(blob)
            }
            TransferEvent::BlobBytes { blob, bytes } => {
                if let Some(bar) = self
                    .bars
                    .lock()
                    .ok()
                    .and_then(|b| b.get(&blob.digest).cloned())
                {
                    bar.set_position(bytes);
                }
            }
            TransferEvent::BlobDone {
                action,
                reference,
                blob,
                chunks,
                unpacked,
            } => {
                let size = human_size(blob.size);
                let (name, text) = match action {
                    Action::Pull if unpacked => ("pulled", format!("pulled {size}, unpacked")),
                    Action::Pull => ("pulled", format!("pulled {size}")),
                    Action::Push if chunks > 1 => {
                        ("pushed", format!("pushed {size} in {chunks} chunks"))
                    }
                    Action::Push => ("pushed", format!("pushed {size}")),
                    Action::Copy => ("copied", format!("copied {size}")),
                };
                self.blob(reference, blob, name, text, unpacked)
            }
            TransferEvent::Manifest { .. } => {}
            TransferEvent::Finish {
                action,
                reference,
                digest,
                size,
            } => {
                let name = if action == Action::Push {
                    "pushed"
                } else {
                    "pulled"
                };
                self.finish(name, reference, digest, size)
            }
            TransferEvent::Interrupted {
                action,
                reference,
                left,
            } => self.interrupted(verb(action), reference, left),
            TransferEvent::ReplacesIndex { reference, index } => self.warn(&format!(
                "{reference} holds the multi-platform index {index} this image was pulled from; \
                 pushing replaces it with this one platform (`mybuild copy --all-platforms` \
                 moves the whole index)"
            )),
            TransferEvent::Warning { message } => self.warn(message),
        }
    }
}

impl Drop for TransferView {
    fn drop(&mut self) {
        // A failed transfer leaves bars behind; clear them so the error prints cleanly.
        if let Ok(bars) = self.bars.get_mut() {
            for (_, bar) in bars.drain() {
                bar.finish_and_clear();
            }
        }
    }
}

/// Live progress only where it can be drawn, and (unless asked for by name)
/// where someone watches it: not in CI.
fn live_progress(mode: ProgressMode) -> bool {
    let watched = match mode {
        ProgressMode::Tty => true,
        ProgressMode::Auto => std::env::var_os("CI").is_none(),
        _ => false,
    };
    watched && crate::progress::cannot_draw().is_none()
}
