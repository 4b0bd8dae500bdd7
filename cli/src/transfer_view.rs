//! The transfer library's events into the one progress view: each
//! [`TransferEvent`] becomes an [`Event`], and live byte counters are kept per blob
//! where the view draws them.

use std::collections::HashMap;
use std::sync::Mutex;

use layer_cache::Digest;
use registry_client::transfer::{Action, TransferEvent, TransferReporter};

use crate::progress::{BlobAction, BlobBar, Event, ProgressMode};

/// Renders one transfer's events in its [`ProgressMode`].
pub struct TransferView {
    mode: ProgressMode,
    /// Live byte counters by blob digest.
    bars: Mutex<HashMap<Digest, BlobBar>>,
}

impl TransferView {
    pub fn new(mode: ProgressMode) -> TransferView {
        TransferView {
            mode,
            bars: Mutex::new(HashMap::new()),
        }
    }

    /// Says `e` unless the transfer is quiet (warnings and interruptions always).
    pub fn say(&self, e: Event<'_>) {
        if self.mode != ProgressMode::Quiet || e.always_said() {
            crate::progress::emit(&e);
        }
    }

    fn blob_ended(&self, digest: &Digest, e: Event<'_>) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(digest)) {
            bar.finish_and_clear();
        }
        self.say(e);
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
            TransferEvent::Start {
                action: Action::Pull,
                reference,
            } => self.say(Event::pull(reference)),
            TransferEvent::Start {
                action: Action::Push,
                reference,
            } => self.say(Event::push(reference, None)),
            // A copy says its blobs and its end.
            TransferEvent::Start { .. } | TransferEvent::Manifest { .. } => {}
            TransferEvent::BlobExists { reference, blob } => self.blob_ended(
                &blob.digest,
                Event::blob(BlobAction::Exists, reference, blob),
            ),
            TransferEvent::BlobSkipped { reference, blob } => self.blob_ended(
                &blob.digest,
                Event::blob(BlobAction::Skipped, reference, blob),
            ),
            TransferEvent::BlobMounted {
                reference,
                blob,
                from,
            } => self.blob_ended(&blob.digest, Event::mounted(reference, blob, from)),
            TransferEvent::BlobUploading { blob } | TransferEvent::BlobDownloading { blob } => {
                if self.mode != ProgressMode::Quiet {
                    if let (Some(bar), Ok(mut bars)) = (BlobBar::new(blob), self.bars.lock()) {
                        bars.insert(blob.digest.clone(), bar);
                    }
                }
            }
            TransferEvent::BlobBytes { blob, bytes } => {
                let bar = self
                    .bars
                    .lock()
                    .ok()
                    .and_then(|b| b.get(&blob.digest).cloned());
                if let Some(bar) = bar {
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
                let e = match action {
                    Action::Pull => {
                        Event::blob(BlobAction::Pulled, reference, blob).unpacked(unpacked)
                    }
                    Action::Push => Event::pushed_in(reference, blob, u64::from(chunks)),
                    Action::Copy => Event::blob(BlobAction::Copied, reference, blob),
                };
                self.blob_ended(&blob.digest, e)
            }
            TransferEvent::Finish {
                action: Action::Push,
                reference,
                digest,
                size,
            } => self.say(Event::pushed(reference, digest, size)),
            TransferEvent::Finish {
                reference,
                digest,
                size,
                ..
            } => self.say(Event::pulled(reference, digest, size)),
            TransferEvent::Interrupted {
                action,
                reference,
                left,
            } => self.say(Event::interrupted(verb(action), reference, left)),
            TransferEvent::ReplacesIndex { reference, index } => self.say(Event::warning(format!(
                "{reference} holds the multi-platform index {index} this image was pulled from; \
                 pushing replaces it with this one platform (`mybuild copy --all-platforms` \
                 moves the whole index)"
            ))),
            TransferEvent::Warning { message } => self.say(Event::warning(message)),
        }
    }
}

impl Drop for TransferView {
    fn drop(&mut self) {
        // A failed transfer leaves counters behind; end them so the error prints cleanly.
        if let Ok(bars) = self.bars.get_mut() {
            for (_, bar) in bars.drain() {
                bar.finish_and_clear();
            }
        }
    }
}
