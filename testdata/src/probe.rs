//! The confinement probe (`probe/probe.c`): a static program the sandbox tests copy
//! into a build context and run in RUN. Never run it on the host: it tries `mount`
//! and other calls the sandbox must refuse.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Compiles the probe statically into `dir/probe` with the host's C compiler.
pub fn build(dir: &Path) -> std::io::Result<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("probe/probe.c");
    let out = dir.join("probe");
    let st = Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()?;
    if !st.success() {
        return Err(std::io::Error::other(format!(
            "cc -static {}: {st}",
            src.display()
        )));
    }
    Ok(out)
}

/// The `PROBE key=value` lines of a probe run's output, in order.
pub fn values(output: &str) -> Vec<(String, String)> {
    output
        .lines()
        .filter_map(|l| l.split_once("PROBE ").map(|(_, kv)| kv))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The value of `key` in a probe run's output.
pub fn value(output: &str, key: &str) -> Option<String> {
    values(output)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}
