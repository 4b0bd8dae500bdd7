//! One JSON object per line on standard error, for tools (the schema is in the
//! README): every event but the byte counters.

use std::io::Write;

use super::{Event, Render};

pub struct Json;

/// Writes `e` as one line to `out`, with `time_ms`: when it happened, in
/// milliseconds since the command started.
pub fn write(e: &Event<'_>, out: &mut impl Write) {
    if let Some(mut v) = e.to_json() {
        if let Some(o) = v.as_object_mut() {
            let ms = super::since_start().as_millis() as u64;
            o.insert("time_ms".into(), ms.into());
        }
        let _ = serde_json::to_writer(&mut *out, &v);
        let _ = out.write_all(b"\n");
    }
}

impl Render for Json {
    fn event(&mut self, e: &Event<'_>) {
        write(e, &mut std::io::stderr().lock());
    }
}
