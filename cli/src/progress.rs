//! Build progress renderers besides plain: a live terminal view and JSON lines.
//! The builder only emits [`BuildEvent`]s; everything here is presentation.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use builder::exec::{BuildEvent, BuildReporter};
use builder::sandbox::Stream;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Why live progress cannot be drawn on standard error, or `None` when it can.
/// indicatif draws nothing where TERM is unset or `dumb`, and then also drops
/// the lines printed above its bars, so such a terminal must get plain output.
pub fn cannot_draw() -> Option<&'static str> {
    if !std::io::stderr().is_terminal() {
        Some("standard error is not a terminal")
    } else if ProgressDrawTarget::stderr().is_hidden() {
        Some("TERM is unset or dumb, so the terminal cannot show progress")
    } else {
        None
    }
}

/// Live steps with timers; a step's output scrolls above the bars, prefixed by step.
pub struct Tty {
    multi: MultiProgress,
    bars: BTreeMap<usize, (ProgressBar, String)>,
    partial: BTreeMap<usize, Vec<u8>>,
}

impl Tty {
    pub fn new() -> Tty {
        Tty {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(10)),
            bars: BTreeMap::new(),
            partial: BTreeMap::new(),
        }
    }

    fn line(&self, id: usize, text: &str) {
        let _ = self.multi.println(format!("#{id} {text}"));
    }
}

impl BuildReporter for Tty {
    fn event(&mut self, event: BuildEvent<'_>) {
        match event {
            BuildEvent::StepStarted { id, stage, text } => {
                let bar = self.multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} #{prefix} {wide_msg} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                let label = format!("[{stage}] {}", first_line(text));
                bar.set_prefix(id.to_string());
                bar.set_message(label.clone());
                bar.enable_steady_tick(Duration::from_millis(100));
                self.bars.insert(id, (bar, label));
            }
            BuildEvent::Output {
                id,
                stream: _,
                data,
            } => {
                let buf = self.partial.entry(id).or_default();
                buf.extend_from_slice(data);
                let mut lines = Vec::new();
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
                }
                for l in lines {
                    self.line(id, &l);
                }
            }
            BuildEvent::StepDone { id, elapsed } => {
                if let Some(rest) = self.partial.remove(&id).filter(|r| !r.is_empty()) {
                    self.line(id, &String::from_utf8_lossy(&rest));
                }
                if let Some((bar, label)) = self.bars.remove(&id) {
                    bar.set_style(
                        ProgressStyle::with_template("✔ #{prefix} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.finish_with_message(format!("{label} {:.1}s", elapsed.as_secs_f64()));
                }
            }
            BuildEvent::StepCached { id, .. } => {
                if let Some((bar, label)) = self.bars.remove(&id) {
                    bar.set_style(
                        ProgressStyle::with_template("✔ #{prefix} {wide_msg}")
                            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                    );
                    bar.finish_with_message(format!("{label} CACHED"));
                }
            }
            // An instruction never built before is no news (a first build).
            BuildEvent::CacheMiss { cause, .. }
                if cause.ends_with(builder::exec::NEW_INSTRUCTION) => {}
            BuildEvent::CacheMiss { id, cause, .. } => {
                self.line(id, &format!("(cache miss: {cause})"));
            }
        }
    }
}

impl Drop for Tty {
    fn drop(&mut self) {
        // A failed build leaves bars running; stop them so the error prints cleanly.
        for (bar, _) in self.bars.values() {
            bar.abandon();
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// One JSON object per line on stderr, for tools.
pub struct Json;

impl Json {
    pub fn emit(value: &serde_json::Value) {
        let mut err = std::io::stderr().lock();
        let _ = serde_json::to_writer(&mut err, value);
        let _ = err.write_all(b"\n");
    }
}

impl BuildReporter for Json {
    fn event(&mut self, event: BuildEvent<'_>) {
        let v = match event {
            BuildEvent::StepStarted { id, stage, text } => serde_json::json!({
                "event": "step_started", "id": id, "stage": stage, "text": text,
            }),
            BuildEvent::Output { id, stream, data } => serde_json::json!({
                "event": "output",
                "id": id,
                "stream": match stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr" },
                "data": String::from_utf8_lossy(data),
            }),
            BuildEvent::StepDone { id, elapsed } => serde_json::json!({
                "event": "step_done", "id": id, "elapsed_ms": elapsed.as_millis() as u64,
            }),
            BuildEvent::StepCached { id, linked } => serde_json::json!({
                "event": "step_cached", "id": id, "link_layer": linked,
            }),
            BuildEvent::CacheMiss { id, stage, cause } => serde_json::json!({
                "event": "cache_miss", "id": id, "stage": stage, "cause": cause,
            }),
        };
        Json::emit(&v);
    }
}
