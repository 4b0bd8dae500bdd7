//! The transfer library's events into the one progress view: each
//! [`TransferEvent`] becomes an [`Event`], and live byte counters are kept per blob
//! where the view draws them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use layer_cache::Digest;
use ops::Reporter;
use registry_client::transfer::{TransferEvent, TransferReporter};

use crate::progress::{BlobBar, Event, ProgressMode};

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

    fn end_bar(&self, digest: &Digest) {
        if let Some(bar) = self.bars.lock().ok().and_then(|mut b| b.remove(digest)) {
            bar.finish_and_clear();
        }
    }
}

impl TransferReporter for TransferView {
    fn event(&self, e: TransferEvent<'_>) {
        match &e {
            TransferEvent::BlobUploading { blob } | TransferEvent::BlobDownloading { blob }
                if self.mode != ProgressMode::Quiet =>
            {
                if let (Some(bar), Ok(mut bars)) = (BlobBar::new(blob), self.bars.lock()) {
                    bars.insert(blob.digest.clone(), bar);
                }
            }
            TransferEvent::BlobBytes { blob, bytes } => {
                let bar = self
                    .bars
                    .lock()
                    .ok()
                    .and_then(|b| b.get(&blob.digest).cloned());
                if let Some(bar) = bar {
                    bar.set_position(*bytes);
                }
            }
            _ => {}
        }
        match Event::from_transfer(&e) {
            Some(said @ Event::Blob { .. }) => {
                if let Event::Blob { digest, .. } = &said {
                    self.end_bar(digest);
                }
                self.say(said)
            }
            Some(said) => self.say(said),
            None => {}
        }
    }
}

/// The process's view as the operations' reporter: their events said unless
/// quiet, and a [`TransferView`] for each transfer they start.
#[derive(Clone, Copy)]
pub struct View(pub ProgressMode);

impl Reporter for View {
    fn event(&self, e: Event<'_>) {
        if self.0 != ProgressMode::Quiet || e.always_said() {
            crate::progress::emit(&e);
        }
    }

    fn transfer(&self) -> Arc<dyn TransferReporter> {
        Arc::new(TransferView::new(self.0))
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
