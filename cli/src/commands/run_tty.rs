//! The terminal side of `run -t`: a pty whose secondary end is the container's
//! terminal, the user's terminal in raw mode while it runs (restored on every way
//! out: a guard that drops on return, error and unwinding), window size changes
//! (SIGWINCH) passed on, and mybuild's own signals forwarded to the container.
//!
//! rustix's `pty` and `termios` modules do the calls (already a dependency, safe
//! wrappers over posix_openpt/grantpt/ptsname and tcgetattr/cfmakeraw), so no unsafe
//! code here but the signal handlers, which must be plain functions.

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicI32, Ordering};

use anyhow::{Context, Result};
use rustix::fs::{Mode, OFlags};
use rustix::pty::OpenptFlags;
use rustix::termios::{self, OptionalActions};

/// The sandbox process that mybuild's SIGINT/SIGTERM/SIGHUP/SIGQUIT go to (0: none).
static FORWARD_TO: AtomicI32 = AtomicI32::new(0);
/// The write end of the SIGWINCH self-pipe (-1: none).
static WINCH_FD: AtomicI32 = AtomicI32::new(-1);

extern "C" fn forward(sig: libc::c_int) {
    let pid = FORWARD_TO.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

extern "C" fn winch(_: libc::c_int) {
    let fd = WINCH_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        // SAFETY: write of one byte from a static buffer is async-signal-safe.
        unsafe { libc::write(fd, b"w".as_ptr().cast(), 1) };
    }
}

fn install(sig: libc::c_int, handler: extern "C" fn(libc::c_int)) {
    // SAFETY: a zeroed sigaction with a plain handler; SA_RESTART so reads and
    // waits elsewhere are not interrupted.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = handler as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// While a container runs, mybuild's signals are the container's: ^C without a
/// terminal, `kill` of mybuild, a hang-up.
pub struct Forward;

pub fn forward_signals() -> Forward {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
        install(sig, forward);
    }
    Forward
}

impl Forward {
    /// Sends the signals to `pid` from now on (0: drop them).
    pub fn to(&self, pid: u32) {
        FORWARD_TO.store(pid as i32, Ordering::Relaxed);
    }
}

/// A pty for the container, sized as the user's terminal.
pub struct Pty {
    primary: OwnedFd,
    secondary: OwnedFd,
}

impl Pty {
    pub fn open() -> Result<Pty> {
        let primary =
            rustix::pty::openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC)
                .context("opening a pty")?;
        rustix::pty::grantpt(&primary).context("pty grantpt")?;
        rustix::pty::unlockpt(&primary).context("pty unlockpt")?;
        let name = rustix::pty::ptsname(&primary, Vec::new()).context("pty name")?;
        let secondary = rustix::fs::open(
            name.as_c_str(),
            OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .context("opening the pty's terminal")?;
        let pty = Pty { primary, secondary };
        pty.copy_size();
        Ok(pty)
    }

    /// A descriptor of the container's side.
    pub fn secondary(&self) -> Result<OwnedFd> {
        Ok(self.secondary.try_clone()?)
    }

    /// The user's window size onto the pty (the kernel then signals the container).
    fn copy_size(&self) {
        if let Ok(size) = termios::tcgetwinsize(std::io::stdin()) {
            let _ = termios::tcsetwinsize(&self.primary, size);
        }
    }

    /// Copies between the user's terminal and the pty until the container's side is
    /// closed by everything in the container; the user's terminal is raw meanwhile.
    pub fn pump(self, interactive: bool, mut log: Option<std::fs::File>) -> Result<()> {
        use rustix::event::{poll, PollFd, PollFlags};
        let Pty { primary, secondary } = self;
        // Only the container holds its side from now on: its end is our EOF.
        drop(secondary);
        let _raw = RawMode::enter();
        let (winch_r, winch_w) = rustix::pipe::pipe_with(
            rustix::pipe::PipeFlags::CLOEXEC | rustix::pipe::PipeFlags::NONBLOCK,
        )
        .context("pipe")?;
        WINCH_FD.store(winch_w.as_raw_fd(), Ordering::Relaxed);
        install(libc::SIGWINCH, winch);
        let size_source = Pty {
            primary: primary.try_clone()?,
            secondary: primary.try_clone()?,
        };
        let stdin = std::io::stdin();
        let mut stdin_open = interactive;
        let mut out = std::io::stdout();
        let mut buf = vec![0u8; 32 * 1024];
        let result = loop {
            let mut fds = vec![
                PollFd::new(&primary, PollFlags::IN),
                PollFd::new(&winch_r, PollFlags::IN),
            ];
            if stdin_open {
                fds.push(PollFd::new(&stdin, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => break Err(anyhow::Error::new(e).context("poll")),
            }
            let ready: Vec<PollFlags> = fds.iter().map(|f| f.revents()).collect();
            drop(fds);
            if !ready[1].is_empty() {
                let mut b = [0u8; 64];
                while matches!(rustix::io::read(&winch_r, &mut b), Ok(n) if n > 0) {}
                size_source.copy_size();
            }
            if stdin_open && !ready[2].is_empty() {
                match rustix::io::read(&stdin, &mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => {
                        if write_all(&primary, &buf[..n]).is_err() {
                            stdin_open = false;
                        }
                    }
                }
            }
            if !ready[0].is_empty() {
                match rustix::io::read(&primary, &mut buf) {
                    Ok(0) => break Ok(()),
                    Ok(n) => {
                        if log
                            .as_mut()
                            .is_some_and(|l| l.write_all(&buf[..n]).is_err())
                        {
                            log = None;
                        }
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    Err(rustix::io::Errno::INTR) | Err(rustix::io::Errno::AGAIN) => {}
                    // EIO: every holder of the container's side closed it.
                    Err(_) => break Ok(()),
                }
            }
        };
        WINCH_FD.store(-1, Ordering::Relaxed);
        result
    }
}

fn write_all(fd: impl AsFd, mut data: &[u8]) -> rustix::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(&fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The user's terminal in raw mode until dropped (a no-op when stdin is no terminal).
struct RawMode {
    saved: Option<termios::Termios>,
}

impl RawMode {
    fn enter() -> RawMode {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return RawMode { saved: None };
        }
        let Ok(saved) = termios::tcgetattr(&stdin) else {
            return RawMode { saved: None };
        };
        let mut raw = saved.clone();
        raw.make_raw();
        let _ = termios::tcsetattr(&stdin, OptionalActions::Now, &raw);
        RawMode { saved: Some(saved) }
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        if let Some(saved) = &self.saved {
            let _ = termios::tcsetattr(std::io::stdin(), OptionalActions::Now, saved);
        }
    }
}
