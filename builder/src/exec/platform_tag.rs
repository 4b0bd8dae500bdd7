//! A reporter adaptor for multi-platform builds: step ids made unique across the
//! platforms of one build and the platform put before the stage
//! (`#7 [linux/arm64 build] RUN ...`).

use super::{BuildEvent, BuildReporter};

/// Passes events on to `inner`, tagged with one platform.
pub struct PlatformTag<'a> {
    inner: &'a mut dyn BuildReporter,
    platform: String,
    /// Added to this platform's step ids: the largest id the earlier platforms used.
    offset: usize,
    max: usize,
}

impl<'a> PlatformTag<'a> {
    /// Ids are shifted by `offset`: [`PlatformTag::max`] of the previous platform.
    pub fn new(inner: &'a mut dyn BuildReporter, platform: String, offset: usize) -> Self {
        PlatformTag {
            inner,
            platform,
            offset,
            max: offset,
        }
    }

    /// The largest step id passed on so far (the next platform's offset).
    pub fn max(&self) -> usize {
        self.max
    }
}

impl BuildReporter for PlatformTag<'_> {
    fn event(&mut self, event: BuildEvent<'_>) {
        let offset = self.offset;
        let id = |id: usize, max: &mut usize| {
            *max = (*max).max(id + offset);
            id + offset
        };
        let mut max = self.max;
        match event {
            BuildEvent::StepStarted { id: i, stage, text } => {
                let stage = format!("{} {stage}", self.platform);
                self.inner.event(BuildEvent::StepStarted {
                    id: id(i, &mut max),
                    stage: &stage,
                    text,
                });
            }
            BuildEvent::CacheMiss {
                id: i,
                stage,
                cause,
            } => {
                let stage = format!("{} {stage}", self.platform);
                self.inner.event(BuildEvent::CacheMiss {
                    id: id(i, &mut max),
                    stage: &stage,
                    cause,
                });
            }
            BuildEvent::Output {
                id: i,
                stream,
                data,
            } => self.inner.event(BuildEvent::Output {
                id: id(i, &mut max),
                stream,
                data,
            }),
            BuildEvent::StepDone { id: i, elapsed } => self.inner.event(BuildEvent::StepDone {
                id: id(i, &mut max),
                elapsed,
            }),
            BuildEvent::StepCached { id: i, linked } => self.inner.event(BuildEvent::StepCached {
                id: id(i, &mut max),
                linked,
            }),
        }
        self.max = max;
    }
}
