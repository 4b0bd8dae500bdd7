//! The RUN step: checks its flags, runs the command in the sandbox on an overlay of
//! the stage's snapshots, with its `--mount`s, and turns the upperdir into a layer.

use super::*;
use std::os::unix::fs::PermissionsExt;

use crate::dockerfile::ast::parse_heredoc_word;
use crate::dockerfile::Heredoc;
use crate::plan::RunMount;
use crate::sandbox::{Mount, MountKind};

/// Where a heredoc that starts with `#!` is mounted to be executed, as in BuildKit.
const HEREDOC_DIR: &str = "/dev/pipes";

/// What a RUN executes once its heredocs are applied, as BuildKit's `dispatchRun`
/// does: `RUN <<EOF` alone runs the body with the shell (or, with a `#!` line, as a
/// script file); anything else gets the heredocs appended for the shell to read.
enum Script {
    Argv(Vec<String>),
    /// Run `file` (name, content) mounted under [`HEREDOC_DIR`], through the shell.
    File(String, String),
}

fn heredoc_script(command: &str, files: &[Heredoc]) -> Option<Script> {
    let first = files.first()?;
    let alone = parse_heredoc_word(command.trim()).ok().flatten().is_some();
    if alone {
        let data = first.chomped();
        if data.starts_with("#!") {
            return Some(Script::File(first.name.clone(), data));
        }
        return Some(Script::Argv(vec![data]));
    }
    // The shell itself reads the heredocs, `<<-` and quoting included.
    let mut full = command.to_string();
    for f in files {
        full.push('\n');
        full.push_str(&f.content);
        full.push_str(&f.name);
    }
    Some(Script::Argv(vec![full]))
}

fn heredoc_script_for(command: &Command, files: &[Heredoc]) -> Option<Script> {
    match command {
        Command::Shell(s) => heredoc_script(s, files),
        Command::Exec(_) => None,
    }
}

impl Exec<'_> {
    /// `/etc/hosts` for RUN steps: localhost, the step's hostname, and `--add-host`s.
    pub(super) fn hosts_file(&self) -> String {
        let mut hosts = String::from(
            "127.0.0.1\tlocalhost mybuild\n::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        for (host, ip) in &self.req.extra_hosts {
            hosts.push_str(&format!("{ip}\t{host}\n"));
        }
        hosts
    }

    /// `args` after the stage's SHELL (default `/bin/sh -c`).
    fn with_shell(&self, st: &StageState, args: Vec<String>) -> Vec<String> {
        let mut shell = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.shell.clone())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        shell.extend(args);
        shell
    }

    pub(super) fn run_step(
        &mut self,
        id: usize,
        st: &mut StageState,
        kind: &StepKind,
        done: &BTreeMap<usize, StageState>,
        location: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        let unsupported = |what: &str| BuildError::Unsupported {
            location: location.to_string(),
            step: text.to_string(),
            what: what.to_string(),
        };
        let StepKind::Run {
            command,
            files,
            mounts,
            network,
            security,
            devices,
            build_args,
            history_args,
        } = kind
        else {
            return Ok(());
        };
        let insecure = match security.as_deref() {
            None | Some("sandbox") => false,
            Some("insecure") if self.req.allow.security_insecure => true,
            Some("insecure") => {
                return Err(BuildError::Entitlement {
                    location: location.to_string(),
                    step: text.to_string(),
                    what: "RUN --security=insecure".into(),
                    entitlement: "security.insecure",
                })
            }
            Some(other) => return Err(unsupported(&format!("RUN --security={other}"))),
        };
        if !devices.is_empty() {
            return Err(unsupported("RUN --device"));
        }
        let network = match network.as_deref() {
            None | Some("default") => self.req.network,
            Some("none") => Network::None,
            Some("host") if self.req.allow.network_host => Network::Host,
            Some("host") => {
                return Err(BuildError::Entitlement {
                    location: location.to_string(),
                    step: text.to_string(),
                    what: "RUN --network=host".into(),
                    entitlement: "network.host",
                })
            }
            Some(other) => return Err(unsupported(&format!("RUN --network={other}"))),
        };
        let run = RunArgs {
            build_args,
            history_args,
            network,
            insecure,
        };
        self.run(id, st, command, files, mounts, done, &run, location, text)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        id: usize,
        st: &mut StageState,
        command: &Command,
        files: &[Heredoc],
        mounts: &[RunMount],
        done: &BTreeMap<usize, StageState>,
        run: &RunArgs,
        location: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        let work = self.store.scratch_dir("run")?;
        let mut extra_mounts: Vec<Mount> = Vec::new();
        let argv = match (command, heredoc_script_for(command, files)) {
            (Command::Shell(_), Some(Script::Argv(args))) => self.with_shell(st, args),
            (Command::Shell(_), Some(Script::File(name, data))) => {
                let dir = work.path().join("heredoc");
                fs_err::create_dir_all(&dir).map_err(StoreError::from)?;
                let file = dir.join("script");
                fs_err::write(&file, data).map_err(StoreError::from)?;
                fs_err::set_permissions(&file, std::fs::Permissions::from_mode(0o755))
                    .map_err(StoreError::from)?;
                let target = format!("{HEREDOC_DIR}/{}", name.replace('/', "_"));
                extra_mounts.push(Mount {
                    target: target.clone(),
                    kind: MountKind::Bind {
                        source: file,
                        readonly: true,
                    },
                });
                self.with_shell(st, vec![target])
            }
            _ => self.argv(st, command),
        };
        let prepared = self.prepare_mounts(st, mounts, done, location, text)?;
        let cfg = st.config.config.clone().unwrap_or_default();
        let mut env = cfg.env.clone();
        // ARG values reach RUN but never the config. The plan gives each as RUN sees
        // it (an ENV set after the ARG already replaced it; an ARG declared after an
        // ENV wins, as in BuildKit).
        let network = run.network;
        for (k, v) in run.build_args {
            env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()));
            env.push(format!("{k}={v}"));
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.into());
        }
        // As BuildKit, an SSH_AUTH_SOCK the image or an ARG already sets is kept.
        if let Some(sock) = &prepared.ssh_auth_sock {
            if !env.iter().any(|e| e.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={sock}"));
            }
        }
        let lowers = st.topmost_first();
        let (ids, home) = users::resolve_with_home(cfg.user.as_deref().unwrap_or(""), &lowers)
            .map_err(|e| BuildError::User {
                location: location.to_string(),
                step: text.to_string(),
                source: e,
            })?;
        // As runc does for a process without HOME; only the process sees it.
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={home}"));
        }
        let upper = self.store.scratch_dir("upper")?;
        let empty = self.store.scratch_dir("empty")?;
        let bundle = work.path().join("bundle");
        let overlay_work = work.path().join("work");
        for d in [&bundle, &overlay_work] {
            fs_err::create_dir_all(d).map_err(StoreError::from)?;
        }
        let spec = SandboxSpec {
            lowerdirs: if lowers.is_empty() {
                vec![empty.path().to_path_buf()]
            } else {
                lowers
            },
            upperdir: upper.path().to_path_buf(),
            workdir: overlay_work,
            rootfs: bundle.join("rootfs"),
            args: argv.clone(),
            env,
            cwd: cfg.working_dir.clone().unwrap_or_else(|| "/".into()),
            uid: ids.uid,
            gid: ids.gid,
            additional_gids: ids.additional_gids,
            hostname: "mybuild".into(),
            network,
            hosts: self.hosts_file(),
            resolv_conf: sandbox::resolv_conf(network),
            mounts: prepared
                .mounts
                .iter()
                .chain(&extra_mounts)
                .cloned()
                .collect(),
            // Secrets given as variables reach this process only, never the config
            // or the spec file.
            secret_env: prepared.secret_env.clone(),
            insecure: run.insecure,
            ports: Vec::new(),
        };
        let secrets: Vec<&[u8]> = prepared.secrets.iter().map(Vec::as_slice).collect();
        let reporter = &mut *self.reporter;
        let outcome = sandbox::run_with_secrets(
            &self.req.exe,
            &bundle,
            &spec,
            &secrets,
            &mut |stream, data| reporter.event(BuildEvent::Output { id, stream, data }),
        )
        .map_err(|e| match e {
            SandboxError::ExecFormat { program } => BuildError::ExecFormat {
                location: location.to_string(),
                step: text.to_string(),
                program,
                why: exec_format_cause(self.platform),
            },
            e => BuildError::Sandbox {
                location: location.to_string(),
                step: text.to_string(),
                source: e,
            },
        })?;
        let code = match outcome {
            Outcome::Exited(0) => None,
            Outcome::Exited(c) => Some(c),
            Outcome::Signaled(s) => Some(128 + s),
        };
        if let Some(code) = code {
            return Err(BuildError::RunFailed {
                location: location.to_string(),
                step: text.to_string(),
                command: argv.join(" "),
                code,
            });
        }
        drop(prepared);
        sandbox::remove_mount_stubs(&bundle, upper.path(), &st.topmost_first()).map_err(|e| {
            BuildError::Sandbox {
                location: location.to_string(),
                step: text.to_string(),
                source: e,
            }
        })?;
        let created_by = format!("RUN {} # buildkit", run_created_by(&argv, run.history_args));
        self.commit_layer(st, upper, created_by)
    }
}

/// What a RUN is run with besides its command.
struct RunArgs<'a> {
    build_args: &'a [(String, String)],
    history_args: &'a [(String, String)],
    network: Network,
    /// `--security=insecure`, allowed by the build's entitlements.
    insecure: bool,
}

/// A RUN's history text as BuildKit's `runCommandString` writes it: `|N K=V ...` for
/// the stage's ARGs when it has any, then the argv (shell included) joined by spaces,
/// exec form too.
fn run_created_by(argv: &[String], args: &[(String, String)]) -> String {
    let mut parts = Vec::new();
    if !args.is_empty() {
        parts.push(format!("|{}", args.len()));
        parts.extend(args.iter().map(|(k, v)| format!("{k}={v}")));
    }
    parts.extend(argv.iter().cloned());
    parts.join(" ")
}

/// Why a RUN command could not be executed (ENOEXEC), for a stage built for `platform`.
fn exec_format_cause(platform: &Platform) -> String {
    let host = Platform::host();
    if oci_vocab::Only::new(&host).matches(platform) {
        return "not a program this kernel can run (a script without #! or a binary for \
                another architecture)"
            .to_string();
    }
    format!(
        "this stage's platform {platform} cannot run on this {host} host without an \
         emulator registered in binfmt_misc (e.g. qemu-user-static); a stage for another \
         platform can only COPY, or build with FROM --platform=$BUILDPLATFORM and \
         cross-compile for $TARGETARCH"
    )
}

#[cfg(test)]
mod tests {
    use super::{heredoc_script, Script};
    use crate::dockerfile::Heredoc;

    fn doc(name: &str, content: &str, chomp: bool) -> Heredoc {
        Heredoc {
            name: name.into(),
            content: content.into(),
            expand: true,
            chomp,
            fd: 0,
        }
    }

    fn argv(s: Option<Script>) -> Vec<String> {
        match s {
            Some(Script::Argv(v)) => v,
            _ => panic!("expected argv"),
        }
    }

    #[test]
    fn a_lone_heredoc_runs_its_body() {
        let files = [doc("EOF", "\techo a\n", true)];
        assert_eq!(argv(heredoc_script("<<-EOF", &files)), ["echo a\n"]);
        let files = [doc("EOF", "#!/bin/sh\necho a\n", false)];
        match heredoc_script("<<EOF", &files) {
            Some(Script::File(name, data)) => {
                assert_eq!(name, "EOF");
                assert_eq!(data, "#!/bin/sh\necho a\n");
            }
            _ => panic!("expected a script file"),
        }
    }

    #[test]
    fn other_heredocs_are_handed_to_the_shell() {
        let files = [doc("A", "x\n", false), doc("B", "\ty\n", true)];
        assert_eq!(
            argv(heredoc_script("cat <<A && cat <<-B", &files)),
            ["cat <<A && cat <<-B\nx\nA\n\ty\nB"]
        );
        let files = [doc("EOF", "echo hi\n", false)];
        assert_eq!(
            argv(heredoc_script("<<EOF sh", &files)),
            ["<<EOF sh\necho hi\nEOF"]
        );
        assert!(heredoc_script("echo", &[]).is_none());
    }
}
