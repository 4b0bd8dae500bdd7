//! Base images from Debian's `busybox-static`: a rootfs tarball with `/bin/busybox`,
//! relative applet links, and the usual top-level directories and account files.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Where busybox-static installs its binary.
pub fn busybox_binary() -> Option<PathBuf> {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

const APPLETS: &[&str] = &[
    "sh",
    "ls",
    "cat",
    "echo",
    "mkdir",
    "rm",
    "cp",
    "mv",
    "ln",
    "touch",
    "chmod",
    "chown",
    "id",
    "env",
    "true",
    "false",
    "test",
    "[",
    "sleep",
    "head",
    "tail",
    "wc",
    "grep",
    "sed",
    "stat",
    "readlink",
    "find",
    "tar",
    "hostname",
    "ps",
    "ip",
    "printf",
    "sha256sum",
    "seq",
    "uname",
];

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// Writes a busybox rootfs tar to `out`. Panics (test fixture) when busybox is missing.
pub fn write_busybox_rootfs(out: impl Write) -> std::io::Result<()> {
    let bin =
        busybox_binary().ok_or_else(|| std::io::Error::other("busybox-static is not installed"))?;
    let mut b = tar::Builder::new(out);
    for (dir, mode) in [
        ("bin", 0o755),
        ("dev", 0o755),
        ("etc", 0o755),
        ("proc", 0o555),
        ("root", 0o700),
        ("sys", 0o555),
        ("tmp", 0o1777),
        ("usr", 0o755),
        ("usr/bin", 0o755),
        ("var", 0o755),
    ] {
        let mut h = header(tar::EntryType::Directory, mode, 0);
        b.append_data(&mut h, format!("{dir}/"), std::io::empty())?;
    }
    let data = std::fs::read(&bin)?;
    let mut h = header(tar::EntryType::Regular, 0o755, data.len() as u64);
    b.append_data(&mut h, "bin/busybox", &data[..])?;
    for a in APPLETS {
        let mut h = header(tar::EntryType::Symlink, 0o777, 0);
        b.append_link(&mut h, format!("bin/{a}"), "busybox")?;
    }
    for (path, body) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n"),
        ("etc/group", "root:x:0:\nnogroup:x:65534:\napp:x:1000:\n"),
    ] {
        let mut h = header(tar::EntryType::Regular, 0o644, body.len() as u64);
        b.append_data(&mut h, path, body.as_bytes())?;
    }
    b.into_inner()?.flush()
}

/// Writes the rootfs tar to a file under `dir` and returns its path.
pub fn busybox_rootfs_file(dir: &Path) -> std::io::Result<PathBuf> {
    let path = dir.join("busybox-rootfs.tar");
    let f = std::fs::File::create(&path)?;
    write_busybox_rootfs(std::io::BufWriter::new(f))?;
    Ok(path)
}

/// A 64-byte ELF header for an aarch64 executable: enough for the kernel to refuse
/// it with ENOEXEC on another architecture.
pub fn aarch64_elf() -> Vec<u8> {
    let mut h = vec![0u8; 64];
    h[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
    h[16] = 2; // ET_EXEC
    h[18] = 0xb7; // EM_AARCH64
    h[20] = 1; // EV_CURRENT
    h[52] = 64; // e_ehsize
    h
}
