//! `run`, `start` and the detached keeper: a container is created from an image
//! (its config combined with the options as Docker combines them), recorded in the
//! store (`layer_cache::containers`) and run in the build's sandbox with its
//! standard streams attached (`run_tty` for `-t`), or, detached, by a keeper:
//! `mybuild` run again as a hidden verb that owns the sandbox, writes the log and
//! records the exit code.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use builder::sandbox::{self, Mount, MountKind, Network, Outcome, SandboxSpec};
use layer_cache::containers::{Bind, Container, Containers, RunConfig, State};
use layer_cache::Store;

use crate::Globals;

/// Exit status for mybuild's own failures in the container verbs, as Docker's.
pub const OWN_ERROR: i32 = 125;
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(clap::ValueEnum, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PullPolicy {
    #[default]
    Missing,
    Always,
    Never,
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Keep standard input open and pass it to the container
    #[arg(short, long)]
    interactive: bool,
    /// Allocate a terminal for the container
    #[arg(short, long)]
    tty: bool,
    /// Remove the container when it exits
    #[arg(long)]
    rm: bool,
    /// Name of the container
    #[arg(long)]
    name: Option<String>,
    /// Set an environment variable (K=V, or K to take it from this environment)
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// Read environment variables from a file (K=V lines)
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Working directory inside the container
    #[arg(short = 'w', long = "workdir")]
    workdir: Option<String>,
    /// User (name or uid, optionally :group) the command runs as
    #[arg(short = 'u', long)]
    user: Option<String>,
    /// Replace the image's ENTRYPOINT (and clear its CMD)
    #[arg(long)]
    entrypoint: Option<String>,
    /// Bind a host directory or file: HOST:CONTAINER[:ro]
    #[arg(short = 'v', long = "volume", value_name = "HOST:CTR[:ro]")]
    volume: Vec<String>,
    /// Mount an empty tmpfs at this path
    #[arg(long, value_name = "PATH")]
    tmpfs: Vec<String>,
    /// Network: default (private, with outbound access), none, or host
    #[arg(long, alias = "net", default_value = "default")]
    network: String,
    /// Hostname inside the container (default: the short id)
    #[arg(long)]
    hostname: Option<String>,
    /// Add a line to /etc/hosts: NAME:IP
    #[arg(long = "add-host", value_name = "NAME:IP")]
    add_host: Vec<String>,
    /// Mount the container's root filesystem read-only
    #[arg(long)]
    read_only: bool,
    /// When to pull the image: missing, always or never
    #[arg(long, value_enum, default_value_t)]
    pull: PullPolicy,
    /// Platform of the image to pull (os/arch[/variant])
    #[arg(long)]
    platform: Option<String>,
    /// Run in the background; the output goes to the container's log
    #[arg(short = 'd', long)]
    detach: bool,
    /// Run the command under an init that forwards signals and reaps zombies
    #[arg(long)]
    init: bool,
    /// Memory limit (needs cgroup v2 delegation)
    #[arg(short = 'm', long, value_name = "BYTES")]
    memory: Option<String>,
    /// CPU limit (needs cgroup v2 delegation)
    #[arg(long, value_name = "N")]
    cpus: Option<String>,
    /// Publish a container's port on the host ([IP:]HOST:CTR[/tcp|udp]; default network only)
    #[arg(short = 'p', long = "publish", value_name = "HOST:CTR", value_parser = super::container_image::publish)]
    publish: Vec<String>,
    /// Image to run
    image: String,
    /// The command and its arguments (default: the image's)
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    command: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct StartArgs {
    /// Attach the container's output (and wait for it to end)
    #[arg(short, long)]
    attach: bool,
    /// Attach standard input
    #[arg(short, long)]
    interactive: bool,
    /// Containers (name, id or id prefix)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct KeeperArgs {
    id: String,
}

/// Prints an error as the container verbs do and gives Docker's 125.
pub fn own_error(e: &anyhow::Error) -> i32 {
    eprintln!("mybuild: {}", crate::error_text(e));
    OWN_ERROR
}

pub fn run(g: &Globals, a: &RunArgs) -> Result<i32> {
    match create(g, a) {
        Ok((store, cs, c)) => {
            if a.detach {
                return match spawn_keeper(g, &c) {
                    Ok(()) => {
                        println!("{}", c.id);
                        Ok(0)
                    }
                    Err(e) => Ok(own_error(&e)),
                };
            }
            let io = if a.tty {
                Io::Tty {
                    interactive: a.interactive,
                }
            } else {
                Io::Attached {
                    interactive: a.interactive,
                }
            };
            let id = c.id.clone();
            Ok(start_and_wait(&store, &cs, c, io).unwrap_or_else(|e| {
                remove_if_auto(&cs, &id);
                own_error(&e)
            }))
        }
        Err(e) => Ok(own_error(&e)),
    }
}

/// A `--rm` container that could not start is removed all the same.
fn remove_if_auto(cs: &Containers, id: &str) {
    if let Ok(c) = cs.get(id) {
        if c.config.auto_remove && c.state != State::Running {
            let _ = cs.remove(&c);
        }
    }
}

fn create(g: &Globals, a: &RunArgs) -> Result<(Store, Containers, Container)> {
    if a.memory.is_some() {
        bail!("--memory needs cgroup v2 delegation, which mybuild does not use: containers run without resource limits");
    }
    if a.cpus.is_some() {
        bail!("--cpus needs cgroup v2 delegation, which mybuild does not use: containers run without resource limits");
    }
    let network = match a.network.as_str() {
        "default" | "bridge" => "default",
        "none" => "none",
        "host" => "host",
        other => bail!("--network {other:?}: expected default, none or host"),
    };
    if !a.publish.is_empty() && network != "default" {
        bail!(
            "-p needs the default network: --network {network} has no ports of its own to publish"
        );
    }
    let store = g.store()?;
    let want = a
        .platform
        .as_deref()
        .map(|p| ops::registry::want_platform(Some(p)))
        .transpose()?;
    // A stored image for another platform than `--platform` names counts as missing.
    let stored = store.resolve(&a.image).and_then(|d| {
        let fits = match &want {
            Some(p) => store.load_image(&d)?.config.is_for(p),
            None => true,
        };
        if fits {
            Ok(d)
        } else {
            Err(layer_cache::StoreError::ImageNotFound(a.image.clone()))
        }
    });
    // A prefix two images share is the user's to fix, not a name to pull.
    if let Err(e @ layer_cache::StoreError::AmbiguousId { .. }) = stored {
        return Err(e.into());
    }
    let desc = match (a.pull, stored) {
        (PullPolicy::Always, _) | (PullPolicy::Missing, Err(_)) => {
            if a.pull == PullPolicy::Missing {
                eprintln!("Unable to find image '{}' locally", a.image);
            }
            let code = super::registry::pull_for_run(g, &a.image, a.platform.as_deref())?;
            if code != 0 {
                bail!("pulling {} was interrupted", a.image);
            }
            store.resolve(&a.image)?
        }
        (PullPolicy::Never, Err(_)) => {
            bail!(
                "Unable to find image '{}' locally: no such image, and --pull never forbids pulling it",
                a.image
            )
        }
        (_, Ok(d)) => d,
    };
    let img = store.load_image(&desc)?;
    let cfg = img.config.config.clone().unwrap_or_default();
    let (entrypoint, cmd) = match &a.entrypoint {
        Some(ep) if ep.is_empty() => (Vec::new(), a.command.clone()),
        Some(ep) => (vec![ep.clone()], a.command.clone()),
        None if !a.command.is_empty() => (
            cfg.entrypoint.clone().unwrap_or_default(),
            a.command.clone(),
        ),
        None => (
            cfg.entrypoint.clone().unwrap_or_default(),
            cfg.cmd.clone().unwrap_or_default(),
        ),
    };
    if entrypoint.is_empty() && cmd.is_empty() {
        bail!(
            "no command specified: the image {} has neither ENTRYPOINT nor CMD",
            a.image
        );
    }
    let mut env = cfg.env.clone();
    let mut set = |kv: String| {
        let key = kv
            .split_once('=')
            .map_or(kv.as_str(), |(k, _)| k)
            .to_string();
        env.retain(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) != key);
        env.push(kv);
    };
    let mut given = Vec::new();
    for f in &a.env_file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("reading env file {}", f.display()))?;
        given.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    given.extend(a.env.iter().cloned());
    for kv in given {
        if kv.contains('=') {
            set(kv);
        } else if let Ok(v) = std::env::var(&kv) {
            set(format!("{kv}={v}"));
        }
    }
    let binds = a
        .volume
        .iter()
        .map(|v| parse_volume(v))
        .collect::<Result<Vec<_>>>()?;
    for t in &a.tmpfs {
        if !t.starts_with('/') {
            bail!("--tmpfs {t}: the path must be absolute");
        }
    }
    let mut extra_hosts = Vec::new();
    for h in &a.add_host {
        let Some((name, ip)) = h.split_once(':') else {
            bail!("--add-host {h}: expected NAME:IP");
        };
        if ip.parse::<std::net::IpAddr>().is_err() && ip != "host-gateway" {
            bail!("--add-host {h}: {ip:?} is not an IP address");
        }
        let ip = if ip == "host-gateway" {
            sandbox::PRIVATE_GATEWAY.to_string()
        } else {
            ip.to_string()
        };
        extra_hosts.push((name.to_string(), ip));
    }
    let config = RunConfig {
        entrypoint,
        cmd,
        env,
        user: a.user.clone().or(cfg.user.clone()).unwrap_or_default(),
        workdir: a
            .workdir
            .clone()
            .or(cfg.working_dir.clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
        hostname: a.hostname.clone().unwrap_or_default(),
        network: network.to_string(),
        tty: a.tty,
        interactive: a.interactive,
        binds,
        tmpfs: a.tmpfs.clone(),
        extra_hosts,
        read_only: a.read_only,
        init: a.init,
        stop_signal: cfg.stop_signal.clone(),
        auto_remove: a.rm,
        ports: a.publish.clone(),
    };
    let cs = Containers::open(store.root())?;
    let c = cs.create(a.name.as_deref(), &a.image, &img.manifest_digest, config)?;
    Ok((store, cs, c))
}

/// `-v HOST:CTR[:ro|rw]`: host paths only (no named volumes).
fn parse_volume(v: &str) -> Result<Bind> {
    let parts: Vec<&str> = v.split(':').collect();
    let (host, target, mode) = match parts.as_slice() {
        [h, t] => (*h, *t, "rw"),
        [h, t, m] => (*h, *t, *m),
        _ => bail!("-v {v}: expected HOST:CONTAINER[:ro]; anonymous volumes are not supported"),
    };
    if !host.starts_with('/') && !host.starts_with('.') {
        bail!("-v {v}: named volumes are not supported ({host:?}); bind a host path, e.g. -v /srv/{host}:{target}");
    }
    if !target.starts_with('/') {
        bail!("-v {v}: the container path must be absolute");
    }
    let readonly = match mode {
        "ro" => true,
        "rw" | "" => false,
        m => bail!("-v {v}: unknown mode {m:?} (ro or rw)"),
    };
    let host = std::path::absolute(host).with_context(|| format!("-v {v}"))?;
    if !host.exists() {
        // As Docker: a missing host directory is created.
        std::fs::create_dir_all(&host).with_context(|| format!("creating {}", host.display()))?;
    }
    Ok(Bind {
        source: host,
        target: target.to_string(),
        readonly,
    })
}

/// How a start connects the container's standard streams.
pub enum Io {
    /// The caller's own streams (standard input only when interactive).
    Attached { interactive: bool },
    /// A pty between the caller's terminal and the container.
    Tty { interactive: bool },
    /// The container's log file (a keeper).
    Log,
}

/// The spec the sandbox runs a container with, from its record and its image.
fn sandbox_spec(store: &Store, cs: &Containers, c: &Container) -> Result<SandboxSpec> {
    // The same snapshots a build's steps stack on, unpacked when missing.
    let mut lowers = builder::container::image_layers(store, &c.image_digest)
        .with_context(|| format!("image {} of container {}", c.image, c.name))?
        .lowerdirs();
    let bundle = cs.bundle_dir(&c.id);
    if bundle.exists() {
        let _ = std::fs::remove_dir_all(&bundle);
    }
    std::fs::create_dir_all(&bundle).with_context(|| format!("creating {}", bundle.display()))?;
    if lowers.is_empty() {
        let empty = bundle.join("empty");
        std::fs::create_dir_all(&empty)?;
        lowers.push(empty);
    }
    let upper = cs.upper_dir(&c.id);
    // The user is looked up in the container's own files: its writes count too.
    let mut view = vec![upper.clone()];
    view.extend(lowers.iter().cloned());
    let (ids, home) = builder::users::resolve_with_home(&c.config.user, &view)?;
    let hostname = if c.config.hostname.is_empty() {
        c.short_id().to_string()
    } else {
        c.config.hostname.clone()
    };
    let mut env = c.config.env.clone();
    let has = |env: &[String], k: &str| env.iter().any(|e| e.starts_with(&format!("{k}=")));
    if !has(&env, "PATH") {
        env.insert(0, DEFAULT_PATH.into());
    }
    if !has(&env, "HOSTNAME") {
        env.insert(1, format!("HOSTNAME={hostname}"));
    }
    if c.config.tty && !has(&env, "TERM") {
        env.push("TERM=xterm".into());
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={home}"));
    }
    let network = match c.config.network.as_str() {
        "none" => Network::None,
        "host" => Network::Host,
        _ => Network::Private,
    };
    let mut hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    for (name, ip) in &c.config.extra_hosts {
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    let mut mounts: Vec<Mount> = c
        .config
        .binds
        .iter()
        .map(|b| Mount {
            target: b.target.clone(),
            kind: MountKind::Bind {
                source: b.source.clone(),
                readonly: b.readonly,
            },
        })
        .collect();
    let ports = c
        .config
        .ports
        .iter()
        .map(|p| sandbox::PortForward::parse(p).with_context(|| format!("-p {p}")))
        .collect::<Result<Vec<_>>>()?;
    mounts.extend(c.config.tmpfs.iter().map(|t| Mount {
        target: t.clone(),
        kind: MountKind::Tmpfs { size: None },
    }));
    Ok(SandboxSpec {
        lowerdirs: lowers,
        upperdir: upper,
        workdir: cs.work_dir(&c.id),
        rootfs: bundle.join("rootfs"),
        args: c.config.args(),
        env,
        cwd: c.config.workdir.clone(),
        uid: ids.uid,
        gid: ids.gid,
        additional_gids: ids.additional_gids,
        hostname,
        network,
        hosts,
        resolv_conf: sandbox::resolv_conf(network),
        mounts,
        secret_env: Vec::new(),
        insecure: false,
        ports,
    })
}

fn dup(fd: impl AsFd) -> Result<OwnedFd> {
    Ok(fd.as_fd().try_clone_to_owned()?)
}

/// Threads copying between the caller's terminal and pipes the container holds.
#[derive(Default)]
struct Pumps {
    outputs: Vec<std::thread::JoinHandle<()>>,
}

impl Pumps {
    /// Waits until the container's output has all been copied (its pipes close
    /// when the sandbox ends); the input thread is left to end with the process.
    fn finish(self) {
        for t in self.outputs {
            let _ = t.join();
        }
    }
}

/// The container's side of the caller's standard output or error: the descriptor
/// itself, unless it is a terminal, which the container gets only through a pipe
/// (a terminal's ioctls, TIOCSTI's typing included, stay out of its reach).
/// With `log`, the output is also appended there, as `docker logs` keeps an attached
/// container's output.
fn shield_output<W>(stream: W, pumps: &mut Pumps, log: Option<std::fs::File>) -> Result<OwnedFd>
where
    W: AsFd + IsTerminal + Write + Send + 'static,
{
    if log.is_none() && !stream.is_terminal() {
        return dup(&stream);
    }
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let mut stream = stream;
    let mut log = log;
    pumps.outputs.push(std::thread::spawn(move || {
        let mut r = std::fs::File::from(r);
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n) = r.read(&mut buf) {
            if n == 0 {
                break;
            }
            // A failing log does not stop the user's own output.
            if log
                .as_mut()
                .is_some_and(|l| l.write_all(&buf[..n]).is_err())
            {
                log = None;
            }
            // A closed stream (`| head`) closes the pipe: the container sees EPIPE.
            if stream
                .write_all(&buf[..n])
                .and_then(|()| stream.flush())
                .is_err()
            {
                break;
            }
        }
    }));
    Ok(w)
}

/// A container's log, opened for appending.
fn open_log(path: &Path) -> Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

/// The container's standard input (`-i` without `-t`): a pipe fed from a terminal,
/// as for the outputs, else the descriptor itself.
fn shield_input(_pumps: &mut Pumps) -> Result<OwnedFd> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return dup(&stdin);
    }
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    std::thread::spawn(move || {
        let mut w = std::fs::File::from(w);
        let _ = std::io::copy(&mut std::io::stdin().lock(), &mut w);
    });
    Ok(r)
}

/// Starts the container (the caller holds nothing), waits for it and records how it
/// ended. Returns the exit code the caller exits with.
pub fn start_and_wait(store: &Store, cs: &Containers, mut c: Container, io: Io) -> Result<i32> {
    let lock = cs.lock_for_run(&c)?;
    let spec = sandbox_spec(store, cs, &c)?;
    let bundle = cs.bundle_dir(&c.id);
    let exe = std::env::current_exe().context("finding the mybuild binary")?;
    let mut pumps = Pumps::default();
    // An attached container's output is kept for `logs` too, unless it goes with it.
    let kept = (!c.config.auto_remove).then(|| cs.log_path(&c.id));
    let tee = || -> Result<Option<std::fs::File>> { kept.as_deref().map(open_log).transpose() };
    let tty = match &io {
        Io::Tty { .. } => Some(super::run_tty::Pty::open()?),
        _ => None,
    };
    let attach = match (&io, &tty) {
        (Io::Tty { .. }, Some(pty)) => sandbox::Attach {
            stdin: Some(pty.secondary()?),
            stdout: pty.secondary()?,
            stderr: pty.secondary()?,
            terminal: true,
            read_only: c.config.read_only,
        },
        (Io::Log, _) => {
            let log = open_log(&cs.log_path(&c.id))?;
            sandbox::Attach {
                stdin: None,
                stdout: dup(&log)?,
                stderr: OwnedFd::from(log),
                terminal: false,
                read_only: c.config.read_only,
            }
        }
        (Io::Attached { interactive }, _) | (Io::Tty { interactive }, None) => sandbox::Attach {
            stdin: if *interactive {
                Some(shield_input(&mut pumps)?)
            } else {
                None
            },
            stdout: shield_output(std::io::stdout(), &mut pumps, tee()?)?,
            stderr: shield_output(std::io::stderr(), &mut pumps, tee()?)?,
            terminal: false,
            read_only: c.config.read_only,
        },
    };
    // Signals for mybuild go to the container from the moment it exists.
    let forward = super::run_tty::forward_signals();
    let running = sandbox::spawn_attached(&exe, &bundle, &spec, attach)?;
    forward.to(running.pid());
    c.state = State::Running;
    c.pid = Some(running.pid() as i32);
    c.exit_code = None;
    c.started_at = Some(layer_cache::containers::now());
    c.finished_at = None;
    cs.save_state(&c)?;
    if matches!(io, Io::Log) {
        keeper_started();
    }
    if let (Some(pty), Io::Tty { interactive }) = (tty, &io) {
        pty.pump(*interactive, tee()?)?;
    }
    let outcome = running.wait();
    pumps.finish();
    forward.to(0);
    let code = match &outcome {
        Ok(Outcome::Exited(code)) => *code,
        Ok(Outcome::Signaled(sig)) => 128 + sig,
        Err(_) => OWN_ERROR,
    };
    c.state = State::Exited;
    c.pid = None;
    c.exit_code = Some(code);
    c.finished_at = Some(layer_cache::containers::now());
    // Mount points made for binds and tmpfs are not the container's changes.
    if !c.config.auto_remove {
        sandbox::remove_mount_stubs(&bundle, &spec.upperdir, &spec.lowerdirs)?;
    }
    let _ = std::fs::remove_dir_all(&bundle);
    if c.config.auto_remove {
        drop(lock);
        cs.remove(&c)?;
    } else {
        cs.save_state(&c)?;
        drop(lock);
    }
    match outcome {
        Ok(_) => Ok(code),
        Err(e) => Err(e.into()),
    }
}

/// The keeper's standard output is the pipe `run -d` waits on: it says the container
/// started, then points elsewhere so the caller can go.
fn keeper_started() {
    let mut out = std::io::stdout();
    let _ = out.write_all(b"started\n");
    let _ = out.flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        let _ = rustix::stdio::dup2_stdout(&null);
        let _ = rustix::stdio::dup2_stderr(&null);
    }
}

/// Runs the container in a keeper, `mybuild __container-keeper ID`, in a session of
/// its own, and waits until it says the container runs (or why not).
pub fn spawn_keeper(g: &Globals, c: &Container) -> Result<()> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().context("finding the mybuild binary")?;
    let mut cmd = std::process::Command::new(exe);
    cmd.arg("--root")
        .arg(&g.root)
        .arg(KEEPER_VERB)
        .arg(&c.id)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    cmd.process_group(0);
    let mut child = cmd.spawn().context("starting the container's keeper")?;
    let mut said = String::new();
    if let Some(mut out) = child.stdout.take() {
        let mut buf = [0u8; 8];
        let n = out.read(&mut buf).unwrap_or(0);
        said = String::from_utf8_lossy(&buf[..n]).into_owned();
    }
    if said.starts_with("started") {
        // The keeper lives on; its stderr pipe closes with us.
        return Ok(());
    }
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let _ = child.wait();
    let err = err.trim();
    Err(anyhow!("{}", err.strip_prefix("mybuild: ").unwrap_or(err)))
}

/// The hidden verb the keeper runs as.
pub const KEEPER_VERB: &str = "__container-keeper";

pub fn keeper(g: &Globals, a: &KeeperArgs) -> Result<i32> {
    let store = g.store()?;
    let cs = Containers::open(store.root())?;
    let c = cs.get(&a.id)?;
    // ^C and hang-ups of the terminal `run -d` was typed in are not the container's.
    match start_and_wait(&store, &cs, c, Io::Log) {
        Ok(code) => Ok(code),
        Err(e) => {
            remove_if_auto(&cs, &a.id);
            Ok(own_error(&e))
        }
    }
}

pub fn start(g: &Globals, a: &StartArgs) -> Result<i32> {
    let store = match g.store() {
        Ok(s) => s,
        Err(e) => return Ok(own_error(&e)),
    };
    let cs = Containers::open(store.root())?;
    let attach = a.attach || a.interactive;
    if attach && a.containers.len() > 1 {
        return Ok(own_error(&anyhow!(
            "you cannot start and attach multiple containers at once"
        )));
    }
    let mut code = 0;
    for name in &a.containers {
        let c = match cs.lookup(name) {
            Ok(c) => c,
            Err(e) => {
                eprintln!("mybuild: {e}");
                code = 1;
                continue;
            }
        };
        if c.state == State::Running {
            if !attach {
                println!("{name}");
                continue;
            }
            return Ok(own_error(&anyhow!("container {name} is already running")));
        }
        if attach {
            let io = if c.config.tty && std::io::stdin().is_terminal() {
                Io::Tty {
                    interactive: a.interactive,
                }
            } else {
                Io::Attached {
                    interactive: a.interactive,
                }
            };
            return Ok(start_and_wait(&store, &cs, c, io).unwrap_or_else(|e| own_error(&e)));
        }
        match spawn_keeper(g, &c) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("mybuild: {}", crate::error_text(&e));
                code = 1;
            }
        }
    }
    Ok(code)
}
