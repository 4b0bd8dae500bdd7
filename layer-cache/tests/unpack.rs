//! Root-confined unpacking: hostile tars must fail naming the entry and leave
//! everything outside the target alone; well-formed layers land exactly.

use std::collections::BTreeSet;
use std::fs;
use std::io::{BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use layer_cache::unpack::{decompress, unpack, UnpackError, UnpackOptions, WhiteoutMode};
use tar::{EntryType, Header};
use testdata::tars::{self, RawEntry, RawTar};

/// `base/{victim, sentinel/, work/target/}`; see `testdata::tars`.
struct Sandbox {
    _base: tempfile::TempDir,
    base: PathBuf,
    target: PathBuf,
    sentinel: PathBuf,
    victim: PathBuf,
}

const VICTIM: &[u8] = b"original";

fn sandbox() -> Sandbox {
    let base_dir = tempfile::tempdir().unwrap();
    let base = base_dir.path().to_path_buf();
    let target = base.join("work/target");
    let sentinel = base.join("sentinel");
    let victim = base.join("victim");
    fs::create_dir_all(&target).unwrap();
    fs::create_dir(&sentinel).unwrap();
    fs::write(&victim, VICTIM).unwrap();
    Sandbox {
        _base: base_dir,
        base,
        target,
        sentinel,
        victim,
    }
}

impl Sandbox {
    /// Everything under `base` except the target's own content.
    fn outside(&self) -> BTreeSet<String> {
        fn walk(dir: &Path, base: &Path, skip: &Path, out: &mut BTreeSet<String>) {
            for e in fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                out.insert(p.strip_prefix(base).unwrap().display().to_string());
                let md = fs::symlink_metadata(&p).unwrap();
                if md.is_dir() && p != skip {
                    walk(&p, base, skip, out);
                }
            }
        }
        let mut out = BTreeSet::new();
        walk(&self.base, &self.base, &self.target, &mut out);
        out
    }

    fn assert_untouched(&self) {
        let expected: BTreeSet<String> = ["sentinel", "victim", "work", "work/target"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            self.outside(),
            expected,
            "something landed outside the target"
        );
        assert!(fs::read_dir(&self.sentinel).unwrap().next().is_none());
        assert_eq!(fs::read(&self.victim).unwrap(), VICTIM);
        let md = fs::symlink_metadata(&self.victim).unwrap();
        assert_eq!(md.nlink(), 1, "the victim gained a hardlink");
        assert!(self.target.is_dir());
    }
}

fn opts(whiteouts: WhiteoutMode) -> UnpackOptions {
    UnpackOptions {
        whiteouts,
        ..UnpackOptions::default()
    }
}

fn run(bytes: &[u8], root: &Path, mode: WhiteoutMode) -> Result<(), UnpackError> {
    unpack(bytes, root, &opts(mode)).map(|_| ())
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Whether a root-only test may run; skips with a reason unless CI demands all.
#[allow(clippy::print_stderr)]
fn need_root(why: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var_os("MYBUILD_TEST_REQUIRE_ALL").is_some() {
        panic!("{why} needs root and MYBUILD_TEST_REQUIRE_ALL is set");
    }
    eprintln!("skipping: {why} needs root");
    false
}

/// Unpack a hostile tar in both whiteout modes, each into a fresh sandbox:
/// it must fail, the message must quote `entry`, and nothing may change
/// outside the target.
fn assert_refused(make: impl Fn(&Sandbox) -> Vec<u8>, entry: &str) {
    for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
        let sb = sandbox();
        let bytes = make(&sb);
        let err = run(&bytes, &sb.target, mode).expect_err(&format!(
            "{mode:?}: hostile tar with {entry:?} was accepted"
        ));
        let msg = err.to_string();
        let quoted = format!("{entry:?}");
        assert!(
            msg.contains(&quoted),
            "{mode:?}: error does not name entry {quoted}: {msg}"
        );
        sb.assert_untouched();
    }
}

// ---------------------------------------------------------------- hostile

#[test]
fn refuses_dotdot_traversal() {
    assert_refused(|_| tars::dotdot_traversal(), "../evil");
}

#[test]
fn refuses_deep_dotdot() {
    assert_refused(|_| tars::deep_dotdot(), "a/../../evil");
}

#[test]
fn refuses_absolute_path_naming_it() {
    for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
        let sb = sandbox();
        let name = format!("{}/x", sb.sentinel.display());
        let err = run(&tars::absolute_path(&sb.sentinel), &sb.target, mode).unwrap_err();
        assert!(matches!(err, UnpackError::AbsolutePath { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{name:?}")), "{err}");
        sb.assert_untouched();
    }
}

#[test]
fn refuses_symlink_to_root_then_file() {
    for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
        let sb = sandbox();
        let entry = format!(
            "evil/{}/x",
            sb.sentinel.display().to_string().trim_start_matches('/')
        );
        let err = run(
            &tars::symlink_to_root_then_file(&sb.sentinel),
            &sb.target,
            mode,
        )
        .unwrap_err();
        assert!(matches!(err, UnpackError::SymlinkEscape { .. }), "{err}");
        assert!(err.to_string().contains(&format!("{entry:?}")), "{err}");
        sb.assert_untouched();
        // The symlink itself is data and stays.
        assert_eq!(
            fs::read_link(sb.target.join("evil")).unwrap(),
            Path::new("/")
        );
    }
}

#[test]
fn refuses_absolute_symlinked_dir_then_file() {
    assert_refused(
        |sb| tars::symlink_absolute_dir_then_file(&sb.sentinel),
        "evil/x",
    );
}

#[test]
fn refuses_symlink_to_parent_then_file() {
    assert_refused(|_| tars::symlink_to_parent_then_file(), "up/evil");
}

#[test]
fn refuses_symlink_chain_escape() {
    assert_refused(|_| tars::symlink_chain(), "a/evil");
}

#[test]
fn refuses_symlink_loop() {
    let make = |_: &Sandbox| {
        RawTar::new()
            .symlink(b"a", b"b")
            .symlink(b"b", b"a")
            .file(b"a/x", b"")
            .finish()
    };
    assert_refused(make, "a/x");
}

#[test]
fn refuses_hardlink_to_absolute_path() {
    assert_refused(|sb| tars::hardlink_absolute(&sb.victim), "pw");
}

#[test]
fn refuses_hardlink_dotdot() {
    assert_refused(|_| tars::hardlink_dotdot(), "pw");
}

#[test]
fn refuses_hardlink_through_symlinked_dir() {
    assert_refused(|_| tars::hardlink_through_symlinked_dir(), "pw");
}

#[test]
fn refuses_hardlink_to_missing_target() {
    assert_refused(|_| tars::hardlink_missing_target(), "pw");
}

#[test]
fn refuses_write_under_dir_replaced_by_symlink() {
    assert_refused(|_| tars::dir_replaced_by_symlink(), "d/evil");
}

#[test]
fn refuses_whiteout_escaping_with_dotdot() {
    assert_refused(|_| tars::whiteout_dotdot(), "../../.wh.victim");
}

#[test]
fn refuses_whiteout_of_parent() {
    assert_refused(|_| tars::whiteout_of_parent(), ".wh...");
}

#[test]
fn refuses_whiteout_through_symlink() {
    assert_refused(|_| tars::whiteout_through_symlink(), "d/.wh.victim");
}

#[test]
fn refuses_opaque_marker_through_symlink() {
    assert_refused(|_| tars::opaque_through_symlink(), "d/.wh..wh..opq");
}

#[test]
fn refuses_pax_path_override_escape() {
    assert_refused(|_| tars::pax_path_escape(), "../../x");
}

#[test]
fn refuses_pax_linkpath_escape() {
    assert_refused(|_| tars::pax_linkpath_escape(), "pw");
}

#[test]
fn refuses_gnu_longname_escape() {
    assert_refused(|_| tars::gnu_longname_escape(), "../../x");
}

#[test]
fn refuses_forged_overlay_xattr() {
    assert_refused(|_| tars::forged_overlay_xattr(), "d/");
    let sb = sandbox();
    let err = run(
        &tars::forged_overlay_xattr(),
        &sb.target,
        WhiteoutMode::Overlay,
    )
    .unwrap_err();
    assert!(matches!(err, UnpackError::ForbiddenXattr { .. }), "{err}");
    assert!(!sb.target.join("d").exists());
}

#[test]
fn refuses_user_namespace_overlay_xattrs_from_a_layer() {
    // Whatever namespace the unpacker runs in, neither the kernel's unprivileged
    // opaque mark nor fuse-overlayfs's may come from a layer.
    for key in [
        "SCHILY.xattr.user.overlay.opaque",
        "SCHILY.xattr.user.fuseoverlayfs.opaque",
    ] {
        let bytes = RawTar::new().pax(&[(key, b"y")]).dir(b"d/").finish();
        for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
            let sb = sandbox();
            let err = run(&bytes, &sb.target, mode).unwrap_err();
            assert!(
                matches!(err, UnpackError::ForbiddenXattr { .. }),
                "{key}: {err}"
            );
            assert!(!sb.target.join("d").exists(), "{key}");
        }
    }
}

#[test]
fn refuses_chardev_named_dotdot() {
    assert_refused(|_| tars::chardev_dotdot(), "..");
}

#[test]
fn refuses_non_directory_at_the_root() {
    assert_refused(|_| RawTar::new().file(b"./", b"x").finish(), "./");
}

#[test]
fn file_replaces_symlink_instead_of_writing_through_it() {
    for mode in [WhiteoutMode::Apply, WhiteoutMode::Overlay] {
        let sb = sandbox();
        run(&tars::file_over_symlink(&sb.victim), &sb.target, mode).unwrap();
        sb.assert_untouched();
        let f = sb.target.join("f");
        assert!(fs::symlink_metadata(&f).unwrap().file_type().is_file());
        assert_eq!(fs::read(&f).unwrap(), b"replaced");
    }
}

#[test]
fn directory_replaces_symlink_instead_of_following_it() {
    let sb = sandbox();
    let bytes = RawTar::new()
        .symlink(b"d", b"../../sentinel")
        .dir(b"d/")
        .file(b"d/file", b"inside")
        .finish();
    run(&bytes, &sb.target, WhiteoutMode::Apply).unwrap();
    sb.assert_untouched();
    assert!(fs::symlink_metadata(sb.target.join("d")).unwrap().is_dir());
    assert_eq!(fs::read(sb.target.join("d/file")).unwrap(), b"inside");
}

#[test]
fn hardlink_replacing_file_does_not_write_into_the_shared_inode() {
    let sb = sandbox();
    let bytes = RawTar::new()
        .file(b"a", b"first")
        .hardlink(b"b", b"a")
        .file(b"b", b"second")
        .finish();
    run(&bytes, &sb.target, WhiteoutMode::Apply).unwrap();
    assert_eq!(fs::read(sb.target.join("a")).unwrap(), b"first");
    assert_eq!(fs::read(sb.target.join("b")).unwrap(), b"second");
}

// ---------------------------------------------------------------- well-formed

fn header(kind: EntryType, mode: u32, size: u64, mtime: u64) -> Header {
    let mut h = Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h
}

#[test]
fn unpacks_a_normal_layer() {
    let long_dir = "d".repeat(60);
    let long_name = format!("{long_dir}/{}", "f".repeat(80));
    let bytes = tars::build(|b| {
        let mut h = header(EntryType::Directory, 0o750, 0, 1_000_000);
        b.append_data(&mut h, "dir/", &b""[..])?;
        let mut h = header(EntryType::Regular, 0o755, 5, 1_100_000);
        h.set_uid(1234);
        h.set_gid(5678);
        b.append_data(&mut h, "dir/exe", &b"#!/sh"[..])?;
        let mut h = header(EntryType::Regular, 0o4711, 3, 1_200_000);
        b.append_data(&mut h, "dir/suid", &b"abc"[..])?;
        let mut h = header(EntryType::Regular, 0o600, 4, 1_300_000);
        b.append_data(&mut h, "./secret", &b"1234"[..])?;
        let mut h = header(EntryType::Symlink, 0o777, 0, 1_400_000);
        b.append_link(&mut h, "passwd", "/etc/passwd")?;
        let mut h = header(EntryType::Symlink, 0o777, 0, 1_400_000);
        b.append_link(&mut h, "rel", "dir/exe")?;
        let mut h = header(EntryType::Link, 0o755, 0, 1_100_000);
        b.append_link(&mut h, "dir/hard", "dir/exe")?;
        // Implicit parent: no entry for `implicit/`.
        let mut h = header(EntryType::Regular, 0o644, 2, 1_500_000);
        b.append_data(&mut h, "implicit/child", &b"ok"[..])?;
        // Longer than 100 bytes: the builder writes a GNU long name.
        let mut h = header(EntryType::Regular, 0o644, 4, 1_600_000);
        b.append_data(&mut h, &long_name, &b"long"[..])?;
        Ok(())
    });
    let sb = sandbox();
    let stats = unpack(&bytes[..], &sb.target, &UnpackOptions::default()).unwrap();
    assert_eq!(stats.entries, 9);
    assert_eq!(stats.bytes, 5 + 3 + 4 + 2 + 4);
    sb.assert_untouched();
    let t = &sb.target;

    let dir = fs::symlink_metadata(t.join("dir")).unwrap();
    assert!(dir.is_dir());
    assert_eq!(dir.permissions().mode() & 0o7777, 0o750);
    // Set after its children were written.
    assert_eq!(dir.mtime(), 1_000_000);

    let exe = fs::symlink_metadata(t.join("dir/exe")).unwrap();
    assert_eq!(exe.permissions().mode() & 0o7777, 0o755);
    assert_eq!(exe.mtime(), 1_100_000);
    assert_eq!(fs::read(t.join("dir/exe")).unwrap(), b"#!/sh");
    if is_root() {
        assert_eq!((exe.uid(), exe.gid()), (1234, 5678));
    }
    let suid = fs::symlink_metadata(t.join("dir/suid")).unwrap();
    assert_eq!(suid.permissions().mode() & 0o7777, 0o4711);
    let secret = fs::symlink_metadata(t.join("secret")).unwrap();
    assert_eq!(secret.permissions().mode() & 0o7777, 0o600);

    // Absolute symlink targets are data, kept verbatim.
    assert_eq!(
        fs::read_link(t.join("passwd")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert_eq!(fs::read_link(t.join("rel")).unwrap(), Path::new("dir/exe"));
    let link = fs::symlink_metadata(t.join("passwd")).unwrap();
    assert_eq!(link.mtime(), 1_400_000);

    let hard = fs::symlink_metadata(t.join("dir/hard")).unwrap();
    assert_eq!(hard.ino(), exe.ino());
    assert_eq!(hard.nlink(), 2);

    let implicit = fs::symlink_metadata(t.join("implicit")).unwrap();
    assert_eq!(implicit.permissions().mode() & 0o777, 0o755);
    assert_eq!(fs::read(t.join(&long_name)).unwrap(), b"long");
}

#[test]
fn unpacks_pax_long_name_and_times() {
    let long = format!("{}/{}", "p".repeat(120), "q".repeat(40));
    let bytes = RawTar::new()
        .pax(&[("path", long.as_bytes()), ("mtime", b"1700000000.25")])
        .file(b"short", b"pax")
        .finish();
    let sb = sandbox();
    unpack(&bytes[..], &sb.target, &UnpackOptions::default()).unwrap();
    let p = sb.target.join(&long);
    assert_eq!(fs::read(&p).unwrap(), b"pax");
    let md = fs::metadata(&p).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_700_000_000, 250_000_000));
    assert!(!sb.target.join("short").exists());
}

#[test]
fn writes_through_in_root_relative_symlinks() {
    let bytes = RawTar::new()
        .dir(b"usr/")
        .dir(b"usr/lib/")
        .symlink(b"lib", b"usr/lib")
        .file(b"lib/libc.so", b"elf")
        .symlink(b"usr/lib64", b"../usr/./lib")
        .file(b"usr/lib64/ld.so", b"ld")
        .finish();
    let sb = sandbox();
    run(&bytes, &sb.target, WhiteoutMode::Apply).unwrap();
    assert_eq!(fs::read(sb.target.join("usr/lib/libc.so")).unwrap(), b"elf");
    assert_eq!(fs::read(sb.target.join("usr/lib/ld.so")).unwrap(), b"ld");
    sb.assert_untouched();
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn applies_user_xattrs() {
    let bytes = RawTar::new()
        .pax(&[("SCHILY.xattr.user.mybuild", b"hello")])
        .file(b"f", b"x")
        .pax(&[("SCHILY.xattr.user.dir", b"d")])
        .dir(b"d/")
        // Linux refuses user.* on symlinks: skipped with a warning, not fatal.
        .pax(&[("SCHILY.xattr.user.link", b"l")])
        .symlink(b"l", b"f")
        .finish();
    let sb = sandbox();
    run(&bytes, &sb.target, WhiteoutMode::Apply).unwrap();
    assert_eq!(
        xattr(&sb.target.join("f"), "user.mybuild").as_deref(),
        Some(&b"hello"[..])
    );
    assert_eq!(
        xattr(&sb.target.join("d"), "user.dir").as_deref(),
        Some(&b"d"[..])
    );
    assert_eq!(fs::read_link(sb.target.join("l")).unwrap(), Path::new("f"));
}

#[test]
fn applies_trusted_xattrs_to_symlinks_as_root() {
    if !need_root("setting trusted.* xattrs") {
        return;
    }
    let bytes = RawTar::new()
        .pax(&[("SCHILY.xattr.trusted.mybuild", b"t")])
        .symlink(b"l", b"/nowhere")
        .finish();
    let sb = sandbox();
    run(&bytes, &sb.target, WhiteoutMode::Apply).unwrap();
    assert_eq!(
        xattr(&sb.target.join("l"), "trusted.mybuild").as_deref(),
        Some(&b"t"[..])
    );
}

#[test]
fn replaces_existing_entries_like_docker() {
    let sb = sandbox();
    let t = &sb.target;
    let first = RawTar::new()
        .dir(b"was_dir/")
        .file(b"was_dir/inner", b"x")
        .file(b"was_file", b"x")
        .dir(b"keep/")
        .file(b"keep/old", b"x")
        .finish();
    run(&first, t, WhiteoutMode::Apply).unwrap();
    let second = RawTar::new()
        .file(b"was_dir", b"now a file")
        .dir(b"was_file/")
        .entry(&RawEntry {
            mode: 0o700,
            ..RawEntry::new(b"keep/", EntryType::Directory)
        })
        .finish();
    run(&second, t, WhiteoutMode::Apply).unwrap();
    assert_eq!(fs::read(t.join("was_dir")).unwrap(), b"now a file");
    assert!(fs::symlink_metadata(t.join("was_file")).unwrap().is_dir());
    // A directory over a directory keeps its content and takes the new mode.
    assert!(t.join("keep/old").exists());
    let keep = fs::metadata(t.join("keep")).unwrap();
    assert_eq!(keep.permissions().mode() & 0o7777, 0o700);
}

#[test]
fn masks_modes_with_umask_unless_same_permissions() {
    let bytes = RawTar::new().file_mode(b"f", b"", 0o777).finish();
    let sb = sandbox();
    let o = UnpackOptions {
        same_permissions: false,
        ..UnpackOptions::default()
    };
    unpack(&bytes[..], &sb.target, &o).unwrap();
    let umask = fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| {
            l.strip_prefix("Umask:")
                .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
        })
        .unwrap();
    let mode = fs::metadata(sb.target.join("f"))
        .unwrap()
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o777 & !umask);
}

#[test]
fn whiteout_apply_deletes_earlier_content() {
    let sb = sandbox();
    let t = &sb.target;
    let lower = RawTar::new()
        .dir(b"a/")
        .file(b"a/f1", b"1")
        .file(b"a/f2", b"2")
        .dir(b"gone/")
        .file(b"gone/inner", b"x")
        .finish();
    run(&lower, t, WhiteoutMode::Apply).unwrap();
    let upper = RawTar::new()
        .file(b"a/.wh.f1", b"")
        .file(b".wh.gone", b"")
        .file(b"a/.wh.never-existed", b"")
        .file(b"no-such-dir/.wh.x", b"")
        // Same layer: the whiteout must not hide `fresh`.
        .file(b"fresh", b"new")
        .file(b".wh.fresh", b"")
        .finish();
    let stats = run_stats(&upper, t, WhiteoutMode::Apply);
    assert_eq!(stats.entries, 6);
    assert!(!t.join("a/f1").exists());
    assert!(t.join("a/f2").exists());
    assert!(!t.join("gone").exists());
    assert!(!t.join("no-such-dir").exists());
    assert!(!t.join("a/.wh.f1").exists());
    assert_eq!(fs::read(t.join("fresh")).unwrap(), b"new");
    sb.assert_untouched();
}

fn run_stats(bytes: &[u8], root: &Path, mode: WhiteoutMode) -> layer_cache::unpack::UnpackStats {
    unpack(bytes, root, &opts(mode)).unwrap()
}

#[test]
fn opaque_apply_empties_earlier_content_only() {
    let sb = sandbox();
    let t = &sb.target;
    let lower = RawTar::new()
        .dir(b"d/")
        .file(b"d/old", b"x")
        .dir(b"d/sub/")
        .file(b"d/sub/old2", b"x")
        .dir(b"d/gone/")
        .file(b"d/gone/x", b"x")
        .file(b"outside-d", b"x")
        .finish();
    run(&lower, t, WhiteoutMode::Apply).unwrap();
    // The marker after some new content, to show order does not matter.
    let upper = RawTar::new()
        .dir(b"d/")
        .file(b"d/new", b"n")
        .dir(b"d/sub/")
        .file(b"d/.wh..wh..opq", b"")
        .file(b"d/sub/new2", b"n")
        .finish();
    run(&upper, t, WhiteoutMode::Apply).unwrap();
    let mut names: Vec<String> = walk_names(&t.join("d"));
    names.sort();
    assert_eq!(names, ["new", "sub", "sub/new2"]);
    assert!(t.join("outside-d").exists());
}

fn walk_names(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            out.push(p.strip_prefix(base).unwrap().display().to_string());
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                walk(&p, base, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

#[test]
fn overlay_mode_converts_whiteouts() {
    if !need_root("creating 0/0 whiteout devices and trusted.* xattrs") {
        return;
    }
    let sb = sandbox();
    let t = &sb.target;
    let bytes = RawTar::new()
        .dir(b"a/")
        .file(b"a/.wh.gone", b"")
        .dir(b"d/")
        .file(b"d/.wh..wh..opq", b"")
        .file(b"d/keep", b"k")
        .file(b"implicit/.wh..wh..opq", b"")
        .finish();
    run(&bytes, t, WhiteoutMode::Overlay).unwrap();
    let wh = fs::symlink_metadata(t.join("a/gone")).unwrap();
    assert!(wh.file_type().is_char_device());
    assert_eq!(wh.rdev(), 0);
    assert!(!t.join("a/.wh.gone").exists());
    assert_eq!(
        xattr(&t.join("d"), layer_cache::overlay::namespace().opaque()).as_deref(),
        Some(&b"y"[..])
    );
    assert_eq!(
        xattr(
            &t.join("implicit"),
            layer_cache::overlay::namespace().opaque()
        )
        .as_deref(),
        Some(&b"y"[..])
    );
    assert!(!t.join("d/.wh..wh..opq").exists());
    assert_eq!(fs::read(t.join("d/keep")).unwrap(), b"k");
    sb.assert_untouched();
}

#[test]
fn creates_device_nodes_as_root() {
    if !need_root("mknod of character and block devices") {
        return;
    }
    let bytes = RawTar::new()
        .char_dev(b"null", 1, 3)
        .entry(&RawEntry::new(b"pipe", EntryType::Fifo))
        .finish();
    let sb = sandbox();
    run(&bytes, &sb.target, WhiteoutMode::Apply).unwrap();
    let null = fs::symlink_metadata(sb.target.join("null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
    assert!(fs::symlink_metadata(sb.target.join("pipe"))
        .unwrap()
        .file_type()
        .is_fifo());
}

fn simple_layer() -> Vec<u8> {
    RawTar::new()
        .dir(b"etc/")
        .file(b"etc/hostname", b"box")
        .finish()
}

fn unpack_compressed(compressed: &[u8]) -> Sandbox {
    let sb = sandbox();
    let reader = decompress(BufReader::new(compressed)).unwrap();
    unpack(reader, &sb.target, &UnpackOptions::default()).unwrap();
    assert_eq!(fs::read(sb.target.join("etc/hostname")).unwrap(), b"box");
    sb
}

#[test]
fn sniffs_gzip() {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&simple_layer()).unwrap();
    unpack_compressed(&enc.finish().unwrap());
}

#[test]
fn sniffs_zstd() {
    let z = zstd::stream::encode_all(&simple_layer()[..], 3).unwrap();
    unpack_compressed(&z);
}

#[test]
fn sniffs_plain() {
    unpack_compressed(&simple_layer());
}

#[test]
fn decompress_reads_magic_split_across_reads() {
    // A reader that hands out one byte at a time.
    struct Trickle(Vec<u8>, usize);
    impl Read for Trickle {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 >= self.0.len() || buf.is_empty() {
                return Ok(0);
            }
            buf[0] = self.0[self.1];
            self.1 += 1;
            Ok(1)
        }
    }
    let z = zstd::stream::encode_all(&simple_layer()[..], 3).unwrap();
    let reader = std::io::BufReader::with_capacity(1, Trickle(z, 0));
    let mut out = Vec::new();
    decompress(reader).unwrap().read_to_end(&mut out).unwrap();
    assert_eq!(out, simple_layer());
}

#[test]
fn missing_root_is_an_error_naming_it() {
    let sb = sandbox();
    let root = sb.base.join("does-not-exist");
    let err = unpack(&simple_layer()[..], &root, &UnpackOptions::default()).unwrap_err();
    assert!(err.to_string().contains("does-not-exist"), "{err}");
}

#[test]
fn truncated_stream_is_an_error() {
    let mut bytes = simple_layer();
    bytes.truncate(512 + 100);
    let sb = sandbox();
    assert!(unpack(&bytes[..], &sb.target, &UnpackOptions::default()).is_err());
}
