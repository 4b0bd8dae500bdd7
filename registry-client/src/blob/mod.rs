//! Blob transfers: [`pull`] streams a blob into a writer with Range resume and
//! an idle watchdog; [`push`] uploads one with sessions, mounts and chunks.

pub mod pull;
pub mod push;

use std::time::{Duration, Instant};

use futures_util::StreamExt;

use crate::client::IDLE_MIN_BYTES;

pub(crate) fn show_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Tracks one body transfer's progress: idle once a window of `timeout` passes
/// with fewer than [`IDLE_MIN_BYTES`] moved.
pub(crate) struct IdleWatch {
    pub(crate) timeout: Duration,
    since: Instant,
    bytes: u64,
}

impl IdleWatch {
    pub(crate) fn new(timeout: Duration) -> IdleWatch {
        IdleWatch {
            timeout,
            since: Instant::now(),
            bytes: 0,
        }
    }

    pub(crate) fn moved(&mut self, n: usize) {
        self.bytes += n as u64;
        if self.bytes >= IDLE_MIN_BYTES {
            self.since = Instant::now();
            self.bytes = 0;
        }
    }

    /// The stream's next item, or `None` when the transfer went idle first.
    pub(crate) async fn next<S: futures_util::Stream + Unpin>(
        &self,
        stream: &mut S,
    ) -> Option<Option<S::Item>> {
        let deadline = tokio::time::Instant::from_std(self.since + self.timeout);
        tokio::time::timeout_at(deadline, stream.next()).await.ok()
    }
}
