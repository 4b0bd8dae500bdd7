pub mod archive;
pub mod build;
pub mod cache;
pub mod check;
pub mod container_image;
pub mod history;
pub mod parse;
pub mod registry;
pub mod remote;
pub mod run;
pub mod run_ps;
pub mod run_tty;
pub mod shell;
pub mod store;

/// Human-readable byte counts as docker prints them (1000-based).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes}B")
    } else {
        format!("{v:.3}{}", UNITS[u]).replace(".000", "")
    }
}
