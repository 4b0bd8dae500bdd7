//! Whole lines, no cursor movement: `#N [stage] INSTRUCTION`, a step's output
//! prefixed by its number, `#N DONE 0.3s`, `#N CACHED`; one line per blob.

use std::io::Write;

use super::{text, Event, Partial, Render};

pub struct Plain {
    /// Only what is said even when quiet (warnings, interruptions).
    quiet: bool,
    partial: Partial,
}

impl Plain {
    pub fn new() -> Plain {
        Plain {
            quiet: false,
            partial: Partial::default(),
        }
    }

    pub fn quiet() -> Plain {
        Plain {
            quiet: true,
            partial: Partial::default(),
        }
    }

    /// The lines for `e`, written to `out`.
    pub fn write(&mut self, e: &Event<'_>, out: &mut impl Write) {
        if self.quiet && !e.always_said() {
            return;
        }
        for line in text(e, &mut self.partial) {
            let _ = writeln!(out, "{line}");
        }
    }
}

impl Render for Plain {
    fn event(&mut self, e: &Event<'_>) {
        self.write(e, &mut std::io::stderr().lock());
    }
}
