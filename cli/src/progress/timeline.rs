//! `build --timeline FILE.svg|FILE.html`: the build's events, recorded as they
//! are drawn, as bars on a time axis: one lane per stage, a step's bar coloured
//! by how it ended (ran, cached, failed), a lane of pulls and pushes, and the
//! chain of bars that decided the build's length (the critical path).
//! Nothing is recorded unless a timeline was asked for.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};
use builder::exec::BuildEvent;

use super::{since_start, Event};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ran,
    Cached,
    /// Started and never ended: the build failed (or stopped) while it ran.
    Failed,
    /// A pull or push.
    Transfer,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Ran => "ran",
            State::Cached => "cached",
            State::Failed => "failed",
            State::Transfer => "transfer",
        }
    }

    fn colour(self) -> &'static str {
        match self {
            State::Ran => "#3b8f4e",
            State::Cached => "#8aa4c8",
            State::Failed => "#c8413b",
            State::Transfer => "#c69026",
        }
    }
}

#[derive(Debug, Clone)]
struct Bar {
    /// The step's number (`#N`); none for a transfer.
    step: Option<usize>,
    lane: String,
    label: String,
    start: Duration,
    end: Option<Duration>,
    state: State,
}

/// The events a timeline is drawn from.
#[derive(Default)]
pub struct Recorder {
    bars: Vec<Bar>,
    steps: HashMap<usize, usize>,
    /// Open transfers by reference.
    transfers: HashMap<String, usize>,
}

static RECORDER: Mutex<Option<Recorder>> = Mutex::new(None);
/// Set while a timeline is recorded: every other command's events (byte counters
/// included) pass with one atomic load.
static RECORDING: AtomicBool = AtomicBool::new(false);

/// Starts recording every event emitted from now on.
pub fn start() {
    if let Ok(mut r) = RECORDER.lock() {
        *r = Some(Recorder::default());
        RECORDING.store(true, Ordering::Release);
    }
}

/// Records `e` when a timeline is being recorded.
pub(super) fn record(e: &Event<'_>) {
    if !RECORDING.load(Ordering::Acquire) {
        return;
    }
    if let Ok(mut r) = RECORDER.lock() {
        if let Some(r) = r.as_mut() {
            r.event(e, since_start());
        }
    }
}

/// Draws what was recorded into `path`: an HTML page when it ends in `.html`
/// or `.htm`, else an SVG picture.
pub fn write(path: &Path) -> Result<()> {
    RECORDING.store(false, Ordering::Release);
    let recorder = RECORDER.lock().ok().and_then(|mut r| r.take());
    let Some(recorder) = recorder else {
        return Ok(());
    };
    let svg = recorder.svg(since_start());
    let html = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("html") || e.eq_ignore_ascii_case("htm"));
    let text = if html {
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
             <title>mybuild build timeline</title></head>\n<body>\n{svg}</body></html>\n"
        )
    } else {
        svg
    };
    std::fs::write(path, text).with_context(|| format!("writing the timeline {}", path.display()))
}

impl Recorder {
    fn event(&mut self, e: &Event<'_>, now: Duration) {
        match e {
            Event::Build(BuildEvent::StepStarted { id, stage, text }) => {
                self.steps.insert(*id, self.bars.len());
                self.bars.push(Bar {
                    step: Some(*id),
                    lane: stage.to_string(),
                    label: text.to_string(),
                    start: now,
                    end: None,
                    state: State::Failed,
                });
            }
            Event::Build(BuildEvent::StepDone { id, .. }) => self.end_step(*id, now, State::Ran),
            Event::Build(BuildEvent::StepCached { id, .. }) => {
                self.end_step(*id, now, State::Cached)
            }
            Event::Pull { reference } => self.open_transfer(format!("pull {reference}"), now),
            Event::Push { reference, .. } => self.open_transfer(format!("push {reference}"), now),
            Event::Pulled { reference, .. } => {
                self.close_transfer(&format!("pull {reference}"), now)
            }
            Event::Pushed { reference, .. } => {
                self.close_transfer(&format!("push {reference}"), now)
            }
            Event::Interrupted {
                action, reference, ..
            } => self.close_transfer(&format!("{action} {reference}"), now),
            _ => {}
        }
    }

    fn end_step(&mut self, id: usize, now: Duration, state: State) {
        if let Some(bar) = self.steps.get(&id).and_then(|&i| self.bars.get_mut(i)) {
            bar.end = Some(now);
            bar.state = state;
        }
    }

    fn open_transfer(&mut self, label: String, now: Duration) {
        self.transfers.insert(label.clone(), self.bars.len());
        self.bars.push(Bar {
            step: None,
            lane: "pull / push".into(),
            label,
            start: now,
            end: None,
            state: State::Transfer,
        });
    }

    fn close_transfer(&mut self, label: &str, now: Duration) {
        if let Some(bar) = self
            .transfers
            .remove(label)
            .and_then(|i| self.bars.get_mut(i))
        {
            bar.end = Some(now);
        }
    }

    /// The bars with every open one ended at `now`.
    fn closed(&self, now: Duration) -> Vec<Bar> {
        self.bars
            .iter()
            .cloned()
            .map(|mut b| {
                b.end = Some(b.end.unwrap_or(now).max(b.start));
                b
            })
            .collect()
    }

    fn svg(&self, now: Duration) -> String {
        let bars = self.closed(now);
        let critical = critical_path(&bars);
        let total = bars
            .iter()
            .filter_map(|b| b.end)
            .max()
            .unwrap_or_default()
            .max(Duration::from_millis(1));
        // Lanes in order of first appearance; transfers last.
        let mut lanes: Vec<&str> = Vec::new();
        for b in bars.iter().filter(|b| b.step.is_some()) {
            if !lanes.contains(&b.lane.as_str()) {
                lanes.push(&b.lane);
            }
        }
        if bars.iter().any(|b| b.step.is_none()) {
            lanes.push("pull / push");
        }
        const LEFT: f64 = 160.0;
        const PLOT: f64 = 900.0;
        const LANE: f64 = 28.0;
        const TOP: f64 = 40.0;
        let height = TOP + LANE * lanes.len() as f64 + 60.0;
        let width = LEFT + PLOT + 20.0;
        let x = |d: Duration| LEFT + PLOT * d.as_secs_f64() / total.as_secs_f64();
        let mut s = String::new();
        let _ = writeln!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" \
             viewBox=\"0 0 {width} {height}\" font-family=\"sans-serif\" font-size=\"11\">"
        );
        let _ = writeln!(
            s,
            "<title>mybuild build timeline: {} steps in {}</title>",
            bars.iter().filter(|b| b.step.is_some()).count(),
            secs(total)
        );
        // The time axis: about ten ticks at 1, 2 or 5 times a power of ten.
        let tick = nice_tick(total.as_secs_f64() / 10.0);
        let axis_y = TOP + LANE * lanes.len() as f64 + 4.0;
        let _ = writeln!(
            s,
            "<line x1=\"{LEFT}\" y1=\"{axis_y}\" x2=\"{}\" y2=\"{axis_y}\" stroke=\"#555\"/>",
            LEFT + PLOT
        );
        let mut t = 0.0;
        while t <= total.as_secs_f64() + 1e-9 {
            let tx = x(Duration::from_secs_f64(t));
            let _ = writeln!(
                s,
                "<line x1=\"{tx:.1}\" y1=\"{}\" x2=\"{tx:.1}\" y2=\"{axis_y}\" stroke=\"#ddd\"/>\
                 <text x=\"{tx:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                TOP - 6.0,
                axis_y + 14.0,
                trim_secs(t)
            );
            t += tick;
        }
        for (i, lane) in lanes.iter().enumerate() {
            let y = TOP + LANE * i as f64;
            let _ = writeln!(
                s,
                "<text class=\"lane\" x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
                LEFT - 8.0,
                y + LANE / 2.0 + 4.0,
                escape(lane)
            );
        }
        for (i, b) in bars.iter().enumerate() {
            let lane = lanes.iter().position(|l| *l == b.lane).unwrap_or(0);
            let y = TOP + LANE * lane as f64 + 4.0;
            let (start, end) = (b.start, b.end.unwrap_or(b.start));
            let x0 = x(start);
            let w = (x(end) - x0).max(2.0);
            let class = match b.step {
                Some(_) => format!("step {}", b.state.name()),
                None => "transfer".to_string(),
            };
            let on_path = critical.contains(&i);
            let stroke = if on_path {
                " stroke=\"#111\" stroke-width=\"2\""
            } else {
                ""
            };
            let name = match b.step {
                Some(id) => format!("#{id} [{}] {}", b.lane, b.label),
                None => b.label.clone(),
            };
            let _ = writeln!(
                s,
                "<rect class=\"{class}\" x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" \
                 height=\"{:.1}\" rx=\"2\" fill=\"{}\" fill-opacity=\"0.85\"{stroke}>\
                 <title>{}: {} ({}{})</title></rect>",
                LANE - 8.0,
                b.state.colour(),
                escape(&name),
                secs(end.saturating_sub(start)),
                b.state.name(),
                if on_path { ", critical path" } else { "" }
            );
            if let (Some(id), true) = (b.step, w >= 24.0) {
                let _ = writeln!(
                    s,
                    "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#fff\">#{id}</text>",
                    x0 + 3.0,
                    y + LANE / 2.0 + 1.0
                );
            }
        }
        let path_text = critical
            .iter()
            .rev()
            .map(|&i| match bars[i].step {
                Some(id) => format!("#{id}"),
                None => bars[i].label.clone(),
            })
            .collect::<Vec<_>>()
            .join(" → ");
        let _ = writeln!(
            s,
            "<text class=\"critical-path\" x=\"{LEFT}\" y=\"{:.1}\">critical path: {} \
             (outlined); ran <tspan fill=\"{}\">■</tspan> cached <tspan fill=\"{}\">■</tspan> \
             failed <tspan fill=\"{}\">■</tspan> pull/push <tspan fill=\"{}\">■</tspan></text>",
            axis_y + 36.0,
            escape(&path_text),
            State::Ran.colour(),
            State::Cached.colour(),
            State::Failed.colour(),
            State::Transfer.colour(),
        );
        s.push_str("</svg>\n");
        s
    }
}

/// The chain of bars that decided the build's length, last first: from the bar
/// that ended last, each step back is the bar that ended last before this one
/// started (what it waited for), in any lane.
fn critical_path(bars: &[Bar]) -> Vec<usize> {
    // A bar starts a moment after what it waited for ended.
    const SLACK: Duration = Duration::from_millis(5);
    let end = |b: &Bar| b.end.unwrap_or(b.start);
    let Some(mut at) = (0..bars.len()).max_by_key(|&i| (end(&bars[i]), i)) else {
        return Vec::new();
    };
    let mut path = vec![at];
    loop {
        let start = bars[at].start + SLACK;
        let before = (0..bars.len())
            .filter(|&i| !path.contains(&i) && end(&bars[i]) <= start)
            .max_by_key(|&i| (end(&bars[i]), i));
        match before {
            Some(i) => {
                path.push(i);
                at = i;
            }
            None => return path,
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `rough` seconds.
fn nice_tick(rough: f64) -> f64 {
    let rough = rough.max(0.001);
    let pow = 10f64.powf(rough.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * pow)
        .find(|t| *t >= rough)
        .unwrap_or(10.0 * pow)
}

fn trim_secs(t: f64) -> String {
    let s = format!("{t:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}s")
}

fn secs(d: Duration) -> String {
    format!("{:.2}s", d.as_secs_f64())
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            // Not allowed in XML 1.0 text.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn steps_become_bars_and_the_critical_path_follows_what_waited() {
        let mut r = Recorder::default();
        let started = |id, stage| {
            Event::Build(BuildEvent::StepStarted {
                id,
                stage,
                text: "RUN x",
            })
        };
        // Two stages in parallel: `a` (#1, 100 ms) and `b` (#2, 300 ms);
        // the final stage's #3 waits for both, and #4 fails.
        r.event(&started(1, "a"), ms(0));
        r.event(&started(2, "b"), ms(0));
        r.event(
            &Event::Build(BuildEvent::StepCached {
                id: 1,
                linked: false,
            }),
            ms(100),
        );
        r.event(
            &Event::Build(BuildEvent::StepDone {
                id: 2,
                elapsed: ms(300),
            }),
            ms(300),
        );
        r.event(&started(3, "final"), ms(301));
        r.event(
            &Event::Build(BuildEvent::StepDone {
                id: 3,
                elapsed: ms(99),
            }),
            ms(400),
        );
        r.event(&started(4, "final"), ms(401));
        let bars = r.closed(ms(500));
        assert_eq!(bars[3].state, State::Failed);
        assert_eq!(bars[0].state, State::Cached);
        let path: Vec<Option<usize>> = critical_path(&bars)
            .into_iter()
            .map(|i| bars[i].step)
            .collect();
        assert_eq!(path, vec![Some(4), Some(3), Some(2)]);
        let svg = r.svg(ms(500));
        assert_eq!(svg.matches("<rect class=\"step ").count(), 4);
        assert!(svg.contains("critical path: #2 → #3 → #4"), "{svg}");
        assert!(svg.contains("class=\"step failed\""), "{svg}");
    }

    #[test]
    fn ticks_are_round() {
        assert_eq!(nice_tick(0.13), 0.2);
        assert_eq!(nice_tick(3.0), 5.0);
        assert_eq!(nice_tick(10.0), 10.0);
        assert_eq!(trim_secs(1.5), "1.5s");
        assert_eq!(escape("a<&\"b\u{1}"), "a&lt;&amp;&quot;b\u{fffd}");
    }
}
