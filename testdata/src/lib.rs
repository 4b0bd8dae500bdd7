//! Test fixtures: busybox base images, hostile tars, a registry on a free port.
//!
//! Tests that need root or an outside tool call [`require_tool`] / [`require_root`]:
//! with `MYBUILD_TEST_REQUIRE_ALL` set (as CI sets it) a missing requirement fails
//! the test; otherwise the test prints why and skips itself.

pub mod git;
pub mod http;
pub mod images;
pub mod probe;
pub mod pty;
pub mod registry;
pub mod rootless;
pub mod tars;

use std::path::PathBuf;

fn require_all() -> bool {
    std::env::var_os("MYBUILD_TEST_REQUIRE_ALL").is_some_and(|v| !v.is_empty() && v != "0")
}

/// True when the tool is on PATH. Otherwise panics under `MYBUILD_TEST_REQUIRE_ALL`,
/// or prints the reason and returns false so the test can return early.
pub fn require_tool(tool: &str) -> bool {
    if which(tool).is_some() {
        return true;
    }
    let msg = format!("{tool} is not installed (apt-get install it; .ci/run does)");
    if require_all() {
        panic!("MYBUILD_TEST_REQUIRE_ALL is set but {msg}");
    }
    eprintln!("skipping: {msg}");
    false
}

/// True when running as root; same skip rules as [`require_tool`].
pub fn require_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    if require_all() {
        panic!("MYBUILD_TEST_REQUIRE_ALL is set but the test needs root");
    }
    eprintln!("skipping: this test needs root");
    false
}

pub fn which(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}
