//! The live view: a spinner with a timer per running step and a byte bar per
//! blob in transfer; a step's output and every other line scroll above them.
//! One indicatif `MultiProgress` holds it all, so nothing else draws on the screen.

use std::collections::BTreeMap;
use std::time::Duration;

use builder::exec::BuildEvent;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use layer_cache::Digest;

use super::{text, Event, Partial, Render};

pub struct Tty {
    multi: MultiProgress,
    /// Whether a bar was added since the last settle: lines then go above the bars.
    drawn: bool,
    /// Draw blobs' byte counters (else their lines only).
    bytes: bool,
    steps: BTreeMap<usize, (ProgressBar, String)>,
    blobs: BTreeMap<Digest, ProgressBar>,
    partial: Partial,
}

fn multi() -> MultiProgress {
    MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10))
}

fn done_style() -> ProgressStyle {
    ProgressStyle::with_template("✔ #{prefix} {wide_msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
}

impl Tty {
    pub fn new(bytes: bool) -> Tty {
        Tty {
            multi: multi(),
            drawn: false,
            bytes,
            steps: BTreeMap::new(),
            blobs: BTreeMap::new(),
            partial: Partial::default(),
        }
    }

    fn println(&self, line: &str) {
        if self.drawn {
            let _ = self.multi.println(line);
        } else {
            eprintln!("{line}");
        }
    }

    fn add(&mut self, bar: ProgressBar) -> ProgressBar {
        self.drawn = true;
        self.multi.add(bar)
    }
}

impl Render for Tty {
    fn event(&mut self, e: &Event<'_>) {
        match e {
            Event::Build(BuildEvent::StepStarted { id, stage, text }) => {
                let bar = self.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} #{prefix} {wide_msg} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                let label = format!("[{stage}] {}", text.lines().next().unwrap_or(""));
                bar.set_prefix(id.to_string());
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                self.steps.insert(*id, (bar, label));
            }
            Event::Build(BuildEvent::StepDone { id, elapsed }) => {
                if let Some(rest) = self.partial.rest(*id) {
                    self.println(&format!("#{id} {rest}"));
                }
                if let Some((bar, label)) = self.steps.remove(id) {
                    bar.set_style(done_style());
                    bar.finish_with_message(format!("{label} {:.1}s", elapsed.as_secs_f64()));
                }
            }
            Event::Build(BuildEvent::StepCached { id, .. }) => {
                if let Some((bar, label)) = self.steps.remove(id) {
                    bar.set_style(done_style());
                    bar.finish_with_message(format!("{label} CACHED"));
                }
            }
            Event::BlobBytes { digest, size, done } if self.bytes => {
                let bar = match self.blobs.get(*digest) {
                    Some(bar) => bar.clone(),
                    None => {
                        let bar = self.add(ProgressBar::new(*size));
                        bar.set_style(
                            ProgressStyle::with_template(
                                "{prefix}: {bytes:>10}/{total_bytes:<10} {wide_bar}",
                            )
                            .unwrap_or_else(|_| ProgressStyle::default_bar()),
                        );
                        bar.set_prefix(digest.short().to_string());
                        self.blobs.insert((*digest).clone(), bar.clone());
                        bar
                    }
                };
                bar.set_position(*done);
            }
            Event::BlobBytesEnd { digest } => {
                if let Some(bar) = self.blobs.remove(*digest) {
                    bar.finish_and_clear();
                }
            }
            e => {
                for line in text(e, &mut self.partial) {
                    self.println(&line);
                }
            }
        }
    }

    fn draws_bytes(&self) -> bool {
        self.bytes
    }

    fn settle(&mut self) {
        // A failed build leaves bars running; stop them so the error prints cleanly.
        for (bar, _) in self.steps.values() {
            bar.abandon();
        }
        for bar in self.blobs.values() {
            bar.finish_and_clear();
        }
        self.steps.clear();
        self.blobs.clear();
        // The finished steps stay on screen as they are; later lines go below.
        self.multi = multi();
        self.drawn = false;
    }
}
