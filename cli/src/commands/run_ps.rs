//! `ps`, `stop`, `rm` and `logs` over the store's container records, in Docker's
//! output formats.

use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use layer_cache::containers::{Container, Containers, State};

use crate::format::{human_duration as human, now, parse_time};
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default: running ones only)
    #[arg(short, long)]
    all: bool,
    /// Show only ids
    #[arg(short, long)]
    quiet: bool,
    /// Do not truncate ids and commands
    #[arg(long)]
    no_trunc: bool,
    /// table (default), json (one object per line) or a Go template such as '{{.Names}}\t{{.Status}}'
    #[arg(long, value_name = "FORMAT")]
    format: Option<String>,
}

const PS_HEADERS: &[(&str, &str)] = &[
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("State", "STATE"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
];

#[derive(clap::Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait for the stop signal to end the container before SIGKILL
    #[arg(short = 't', long = "time", default_value_t = 10)]
    time: u64,
    /// Containers (name, id or id prefix)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct RmArgs {
    /// Kill and remove a running container
    #[arg(short, long)]
    force: bool,
    /// Containers (name, id or id prefix)
    #[arg(required = true)]
    containers: Vec<String>,
}

#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Follow the output until the container stops
    #[arg(short, long)]
    follow: bool,
    /// Container (name, id or id prefix)
    container: String,
}

fn containers(g: &Globals) -> Result<Containers> {
    let store = g.store()?;
    Ok(Containers::open(store.root())?)
}

fn ago(t: Option<&str>) -> String {
    crate::format::since(t)
}

fn status(c: &Container) -> String {
    match c.state {
        State::Created => "Created".into(),
        State::Running => format!(
            "Up {}",
            human(
                now()
                    - c.started_at
                        .as_deref()
                        .and_then(parse_time)
                        .unwrap_or(now())
            )
        ),
        State::Exited => format!(
            "Exited ({}) {}",
            c.exit_code.unwrap_or(0),
            ago(c.finished_at.as_deref())
        ),
    }
}

fn command_text(c: &Container, no_trunc: bool) -> String {
    let joined = c.config.args().join(" ");
    if no_trunc || joined.chars().count() <= 20 {
        return format!("\"{joined}\"");
    }
    let cut: String = joined.chars().take(19).collect();
    format!("\"{cut}…\"")
}

pub fn ps(g: &Globals, a: &PsArgs) -> Result<i32> {
    let cs = containers(g)?;
    let list: Vec<Container> = cs
        .list()?
        .into_iter()
        .filter(|c| a.all || c.state == State::Running)
        .collect();
    let default = if a.quiet {
        "{{.ID}}"
    } else {
        "table {{.ID}}\\t{{.Image}}\\t{{.Command}}\\t{{.RunningFor}}\\t{{.Status}}\\t{{.Ports}}\\t{{.Names}}"
    };
    // As Docker: -q wins over --format.
    let spec = if a.quiet { None } else { a.format.as_deref() };
    let fmt = crate::format::Format::parse(
        spec,
        &crate::format::Layout {
            default,
            headers: PS_HEADERS,
        },
    )?;
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|c| {
            serde_json::json!({
                "Command": command_text(c, a.no_trunc),
                "CreatedAt": crate::format::go_time(&c.created),
                "ID": if a.no_trunc { c.id.as_str() } else { c.short_id() },
                "Image": c.image,
                "Labels": "",
                "Mounts": "",
                "Names": c.name,
                "Networks": "",
                "Ports": ports_text(c),
                "RunningFor": ago(Some(&c.created)),
                "State": match c.state {
                    State::Created => "created",
                    State::Running => "running",
                    State::Exited => "exited",
                },
                "Status": status(c),
            })
        })
        .collect();
    let text = fmt.render(&rows)?;
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(0)
}

/// Published ports as Docker's PORTS column shows them (`0.0.0.0:8080->80/tcp`),
/// while the container runs.
fn ports_text(c: &Container) -> String {
    if c.state != State::Running {
        return String::new();
    }
    let shown: Vec<String> = c
        .config
        .ports
        .iter()
        .map(|p| {
            let (spec, proto) = p.rsplit_once('/').unwrap_or((p, "tcp"));
            let (host, ctr) = spec.rsplit_once(':').unwrap_or(("", spec));
            let host = if host.contains(':') {
                host.to_string()
            } else {
                format!("0.0.0.0:{host}")
            };
            format!("{host}->{ctr}/{proto}")
        })
        .collect();
    shown.join(", ")
}

/// A signal by name (`SIGTERM`, `TERM`) or number, as STOPSIGNAL allows.
fn signal_number(name: &str) -> Option<i32> {
    if let Ok(n) = name.parse::<i32>() {
        return Some(n);
    }
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Some(match bare {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "WINCH" => libc::SIGWINCH,
        "STOP" => libc::SIGSTOP,
        "CONT" => libc::SIGCONT,
        "PWR" => libc::SIGPWR,
        _ => return None,
    })
}

/// Waits until nobody runs the container any more, at most `limit`.
fn wait_stopped(cs: &Containers, id: &str, limit: Duration) -> Result<bool> {
    let until = Instant::now() + limit;
    loop {
        if cs.get(id)?.state != State::Running {
            return Ok(true);
        }
        if Instant::now() >= until {
            return Ok(false);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends the container's stop signal, then SIGKILL after `grace`.
fn stop_one(cs: &Containers, c: &Container, grace: Duration) -> Result<()> {
    let Some(pid) = c.pid.filter(|_| c.state == State::Running) else {
        return Ok(());
    };
    let sig = c
        .config
        .stop_signal
        .as_deref()
        .and_then(signal_number)
        .unwrap_or(libc::SIGTERM);
    // SAFETY: kill has no memory effects; the run lock says `pid` is the container's.
    unsafe { libc::kill(pid, sig) };
    if wait_stopped(cs, &c.id, grace)? {
        return Ok(());
    }
    // SAFETY: as above; SIGKILL of the sandbox's outer process ends the whole sandbox.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    if !wait_stopped(cs, &c.id, Duration::from_secs(10))? {
        return Err(anyhow!("container {} did not stop", c.name));
    }
    Ok(())
}

pub fn stop(g: &Globals, a: &StopArgs) -> Result<i32> {
    let cs = containers(g)?;
    let mut code = 0;
    for name in &a.containers {
        match cs
            .lookup(name)
            .map_err(anyhow::Error::from)
            .and_then(|c| stop_one(&cs, &c, Duration::from_secs(a.time)))
        {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("mybuild: {}", crate::error_text(&e));
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn rm(g: &Globals, a: &RmArgs) -> Result<i32> {
    let cs = containers(g)?;
    let mut code = 0;
    for name in &a.containers {
        let done = cs.lookup(name).map_err(anyhow::Error::from).and_then(|c| {
            if c.state == State::Running {
                if !a.force {
                    return Err(anyhow!(
                        "cannot remove container {name}: container is running: stop the container before removing or force remove"
                    ));
                }
                stop_one(&cs, &c, Duration::ZERO)?;
            }
            let c = cs.get(&c.id)?;
            cs.remove(&c)?;
            Ok(())
        });
        match done {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("mybuild: {}", crate::error_text(&e));
                code = 1;
            }
        }
    }
    Ok(code)
}

pub fn logs(g: &Globals, a: &LogsArgs) -> Result<i32> {
    let cs = containers(g)?;
    let c = cs.lookup(&a.container)?;
    let path = cs.log_path(&c.id);
    let mut file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("{}", path.display()))),
    };
    let mut out = std::io::stdout().lock();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf)?;
        if n > 0 {
            out.write_all(&buf[..n])?;
            continue;
        }
        out.flush()?;
        if !a.follow {
            return Ok(0);
        }
        if cs
            .get(&c.id)
            .map(|c| c.state != State::Running)
            .unwrap_or(true)
        {
            // Whatever was written between the last read and the end.
            let pos = file.stream_position()?;
            file.seek(std::io::SeekFrom::Start(pos))?;
            let n = file.read(&mut buf)?;
            if n == 0 {
                return Ok(0);
            }
            out.write_all(&buf[..n])?;
            continue;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn times_and_durations_read_as_docker_writes_them() {
        assert_eq!(super::parse_time("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            super::parse_time("2023-11-14T22:13:20Z"),
            Some(1_700_000_000)
        );
        assert_eq!(super::human(5), "5 seconds");
        assert_eq!(super::human(90), "About a minute");
        assert_eq!(super::signal_number("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(super::signal_number("usr1"), Some(libc::SIGUSR1));
        assert_eq!(super::signal_number("9"), Some(9));
    }
}
