//! Setting a path's access and modification times without following a final
//! symlink: COPY keeps source times, ADD of git sources sets the commit time.

use std::io;
use std::path::Path;

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

/// Sets both times of `path` (the link itself when it is a symlink).
pub fn set(path: &Path, secs: i64, nanos: i64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: nanos as _,
    };
    let times = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}
