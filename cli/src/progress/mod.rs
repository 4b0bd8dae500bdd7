//! Progress for every command: sources (the build's steps, transfers, cache import
//! and export) report [`Event`]s; one view per process, chosen here from
//! `--progress`, draws them on standard error: [`tty`] (live bars), [`plain`]
//! (whole lines) or [`json`] (one object per line).

pub mod json;
pub mod plain;
pub mod timeline;
pub mod tty;

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use builder::exec::{BuildEvent, BuildReporter};
use indicatif::ProgressDrawTarget;
use registry_client::Descriptor;

pub use ops::event::{BlobAction, Event};

/// `--progress`: which view draws a command's events.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProgressMode {
    #[default]
    Auto,
    Tty,
    Plain,
    Json,
    Quiet,
}

/// The commands deciding a view; they differ only in how `auto` reads CI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// `build`: `auto` is tty on a terminal; pulls inside it draw byte counters
    /// unless CI is set (or `tty` was asked for).
    Build,
    /// `pull`, `push`: `auto` is byte counters on a terminal unless CI is set.
    Transfer,
}

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

/// Decides the view for `mode` (`quiet`: `-q`), installs it for the process and
/// returns the mode in effect (`Quiet` when quiet). `copy` has no `--progress`:
/// it gets the plain view, which [`emit`] falls back to.
pub fn start(mode: ProgressMode, quiet: bool, command: Command) -> Result<ProgressMode> {
    let cannot_draw = cannot_draw();
    // A build's -q wins over tty; a transfer's does not.
    let asked_tty = mode == ProgressMode::Tty && (command == Command::Transfer || !quiet);
    if let (true, Some(why)) = (asked_tty, cannot_draw) {
        bail!("--progress=tty: {why}");
    }
    let mode = if quiet { ProgressMode::Quiet } else { mode };
    // Byte counters only where someone watches them (not in CI), unless asked for.
    let watched = mode == ProgressMode::Tty || std::env::var_os("CI").is_none();
    let view: Box<dyn Render> = match mode {
        ProgressMode::Quiet => Box::new(plain::Plain::quiet()),
        ProgressMode::Json => Box::new(json::Json),
        ProgressMode::Plain => Box::new(plain::Plain::new()),
        _ if cannot_draw.is_some() => Box::new(plain::Plain::new()),
        ProgressMode::Tty => Box::new(tty::Tty::new(true)),
        ProgressMode::Auto if command == Command::Build => Box::new(tty::Tty::new(watched)),
        ProgressMode::Auto if watched => Box::new(tty::Tty::new(true)),
        ProgressMode::Auto => Box::new(plain::Plain::new()),
    };
    install(view);
    Ok(mode)
}

/// A view: draws each event as it comes.
pub trait Render: Send {
    fn event(&mut self, e: &Event<'_>);
    /// Whether blobs' byte counters are drawn (else not worth reporting).
    fn draws_bytes(&self) -> bool {
        false
    }
    /// Stops what is still drawn (a failed build's running steps), so what is
    /// printed next starts on a clean screen.
    fn settle(&mut self) {}
}

static VIEW: Mutex<Option<Box<dyn Render>>> = Mutex::new(None);

fn install(view: Box<dyn Render>) {
    if let Ok(mut v) = VIEW.lock() {
        *v = Some(view);
    }
}

static STARTED: OnceLock<Instant> = OnceLock::new();

/// Starts the clock events are timed by (`time_ms`, timelines): at the
/// command's start.
pub fn start_clock() {
    STARTED.get_or_init(Instant::now);
}

/// Time since [`start_clock`].
pub fn since_start() -> Duration {
    STARTED.get_or_init(Instant::now).elapsed()
}

/// Draws `e` in the process's view (plain lines if none was chosen).
pub fn emit(e: &Event<'_>) {
    timeline::record(e);
    if let Ok(mut v) = VIEW.lock() {
        v.get_or_insert_with(|| Box::new(plain::Plain::new()))
            .event(e);
    }
}

/// See [`Render::draws_bytes`].
pub fn draws_bytes() -> bool {
    VIEW.lock()
        .map(|v| v.as_ref().is_some_and(|v| v.draws_bytes()))
        .unwrap_or(false)
}

/// See [`Render::settle`].
pub fn settle() {
    if let Ok(mut v) = VIEW.lock() {
        if let Some(v) = v.as_mut() {
            v.settle();
        }
    }
}

/// A build's steps into the view; dropping it settles the view.
pub struct Steps;

impl BuildReporter for Steps {
    fn event(&mut self, event: BuildEvent<'_>) {
        emit(&Event::Build(event));
    }
}

impl Drop for Steps {
    fn drop(&mut self) {
        settle();
    }
}

/// One blob's byte counter, as [`Event::BlobBytes`] (shared by a transfer's
/// retries). It ends when the last clone is dropped (a transfer stopped by a
/// signal), if not before.
#[derive(Clone)]
pub struct BlobBar(Arc<Counter>);

struct Counter {
    blob: Descriptor,
    done: AtomicU64,
}

impl Drop for Counter {
    fn drop(&mut self) {
        emit(&Event::blob_bytes_end(&self.blob));
    }
}

impl BlobBar {
    /// A counter for `d`, or `None` when the view draws none.
    pub fn new(d: &Descriptor) -> Option<BlobBar> {
        draws_bytes().then(|| {
            BlobBar(Arc::new(Counter {
                blob: d.clone(),
                done: AtomicU64::new(0),
            }))
        })
    }

    pub fn set_position(&self, n: u64) {
        self.0.done.store(n, Ordering::Relaxed);
        emit(&Event::blob_bytes(&self.0.blob, n));
    }

    pub fn finish_and_clear(&self) {
        emit(&Event::blob_bytes_end(&self.0.blob));
    }
}

/// Steps' output not yet ended by a newline, per step.
#[derive(Default)]
pub struct Partial(BTreeMap<usize, Vec<u8>>);

impl Partial {
    /// The whole lines `data` completes for step `id`.
    fn lines(&mut self, id: usize, data: &[u8]) -> Vec<String> {
        let buf = self.0.entry(id).or_default();
        buf.extend_from_slice(data);
        let mut lines = Vec::new();
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            lines.push(String::from_utf8_lossy(&line[..line.len() - 1]).into_owned());
        }
        lines
    }

    /// What is left of step `id`'s output, when it ends.
    fn rest(&mut self, id: usize) -> Option<String> {
        self.0
            .remove(&id)
            .filter(|r| !r.is_empty())
            .map(|r| String::from_utf8_lossy(&r).into_owned())
    }
}

fn secs(d: std::time::Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

fn plural(n: u64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

/// The lines the text views print for `e` (a step's output is held in `partial`
/// until a line is whole). Byte counters have none.
pub fn text(e: &Event<'_>, partial: &mut Partial) -> Vec<String> {
    use crate::commands::human_size;
    match e {
        Event::Build(BuildEvent::StepStarted { id, stage, text }) => {
            vec![format!("#{id} [{stage}] {text}")]
        }
        Event::Build(BuildEvent::Output { id, data, .. }) => partial
            .lines(*id, data)
            .into_iter()
            .map(|l| format!("#{id} {l}"))
            .collect(),
        Event::Build(BuildEvent::StepDone { id, elapsed }) => partial
            .rest(*id)
            .map(|r| format!("#{id} {r}"))
            .into_iter()
            .chain([format!("#{id} DONE {}", secs(*elapsed))])
            .collect(),
        Event::Build(BuildEvent::StepCached { id, .. }) => vec![format!("#{id} CACHED")],
        // An instruction never built before is no news (a first build).
        Event::Build(BuildEvent::CacheMiss { cause, .. })
            if cause.ends_with(builder::exec::NEW_INSTRUCTION) =>
        {
            vec![]
        }
        Event::Build(BuildEvent::CacheMiss { id, cause, .. }) => {
            vec![format!("#{id} (cache miss: {cause})")]
        }
        Event::Lint {
            rule,
            line,
            message,
            ..
        } => vec![format!(" - {rule}: {message} (line {line})")],
        Event::Image { digest, tags } => std::iter::once(format!("writing image {digest} done"))
            .chain(tags.iter().map(|t| format!("naming to {t} done")))
            .collect(),
        Event::Pull { reference } => vec![format!("pulling {reference}")],
        Event::Push {
            reference,
            image: Some(image),
        } => vec![format!("pushing {image} to {reference}")],
        Event::Push { reference, .. } => vec![format!("pushing {reference}")],
        // A copy says its blobs and its end.
        Event::Copy { .. } => vec![],
        Event::BlobBytes { .. } | Event::BlobBytesEnd { .. } => vec![],
        Event::Blob {
            action,
            digest,
            size,
            unpacked,
            from,
            chunks,
            ..
        } => {
            let size = human_size(*size);
            let what = match action {
                BlobAction::Exists => "already exists".to_string(),
                BlobAction::Pulled if *unpacked => format!("pulled {size}, unpacked"),
                BlobAction::Pulled => format!("pulled {size}"),
                BlobAction::Skipped => "skipped (exists)".to_string(),
                BlobAction::Mounted => format!("mounted from {}", from.as_deref().unwrap_or("")),
                BlobAction::Pushed if *chunks > 1 => format!("pushed {size} in {chunks} chunks"),
                BlobAction::Pushed => format!("pushed {size}"),
                BlobAction::Copied => format!("copied {size}"),
            };
            vec![format!("{}: {what}", digest.short())]
        }
        Event::Pulled { digest, .. } => vec![format!("Digest: {digest}")],
        Event::Pushed {
            digest,
            size,
            shown,
            ..
        } => vec![format!("{shown}: digest: {digest} size: {size}")],
        Event::Copied {
            reference, dest, ..
        } => vec![format!("copied {reference} to {dest}")],
        Event::Interrupted {
            action,
            reference,
            left,
        } => vec![format!(
            "error: {action} of {reference} interrupted: {left}"
        )],
        Event::Warning { message } => vec![format!("warning: {message}")],
        Event::CacheImport {
            source,
            records,
            layers,
            size,
            skipped,
        } => vec![format!(
            "importing cache from {source}: {records} record{}, {layers} layer{} ({}), \
             fetched when used{}",
            plural(*records),
            plural(*layers),
            human_size(*size),
            if *skipped > 0 {
                format!(" ({skipped} records without their layer skipped)")
            } else {
                String::new()
            }
        )],
        Event::CacheFetched { layers, size } => vec![format!(
            "imported cache: fetched {layers} layer{} ({}) used by cached steps",
            plural(*layers),
            human_size(*size)
        )],
        Event::CacheExport {
            dest,
            mode,
            records,
            layers,
            size,
        } => vec![format!(
            "exporting cache to {dest} (mode={mode}): {records} record{}, {layers} layer{} ({})",
            plural(*records),
            plural(*layers),
            human_size(*size)
        )],
        Event::CacheExported { dest, digest } => {
            vec![format!("exporting cache to {dest}: done ({digest})")]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use builder::sandbox::Stream;
    use layer_cache::Digest;
    use registry_client::Reference;
    use std::time::Duration;

    fn said(e: &Event<'_>) -> Vec<String> {
        text(e, &mut Partial::default())
    }

    #[test]
    fn text_lines_say_what_json_leaves_out() {
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
        assert_eq!(
            said(&Event::mounted(&r, &d, "a/c")),
            ["abababababab: mounted from a/c"]
        );
        let e = Event::pushed_in(&r, &d, 3);
        assert_eq!(said(&e), ["abababababab: pushed 2.500MB in 3 chunks"]);
        let e = Event::blob(BlobAction::Pulled, &r, &d).unpacked(true);
        assert_eq!(said(&e), ["abababababab: pulled 2.500MB, unpacked"]);
        let e = Event::push(&r, Some("app:1"));
        assert_eq!(said(&e), ["pushing app:1 to 127.0.0.1:5000/a/b:1"]);
        let e = Event::pushed(&r, &Digest::of(b""), 7);
        assert_eq!(
            said(&e),
            [format!("1: digest: {} size: 7", Digest::of(b""))]
        );
        assert!(said(&Event::blob_bytes(&d, 5)).is_empty());
    }

    #[test]
    fn a_steps_output_is_said_in_whole_lines_and_its_rest_when_it_ends() {
        let mut partial = Partial::default();
        let mut say = |e: Event<'_>| text(&e, &mut partial);
        let out = |data| {
            Event::Build(BuildEvent::Output {
                id: 2,
                stream: Stream::Stdout,
                data,
            })
        };
        assert_eq!(say(out(b"one\ntw")), ["#2 one"]);
        // A character split between chunks is whole again.
        assert!(say(out(b"o \xc3")).is_empty());
        assert_eq!(say(out(b"\xa9\nthree")), ["#2 two é"]);
        let done = Event::Build(BuildEvent::StepDone {
            id: 2,
            elapsed: Duration::from_millis(1260),
        });
        assert_eq!(say(done), ["#2 three", "#2 DONE 1.3s"]);
    }
}
