//! The RUN step: checks its flags, runs the command in the sandbox on an overlay of
//! the stage's snapshots, and turns the upperdir into a layer.

use super::*;

impl Exec<'_> {
    pub(super) fn run_step(
        &mut self,
        id: usize,
        st: &mut StageState,
        kind: &StepKind,
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
        } = kind
        else {
            return Ok(());
        };
        if !files.is_empty() {
            return Err(unsupported("RUN with a heredoc"));
        }
        if !mounts.is_empty() {
            return Err(unsupported("RUN --mount"));
        }
        if security.as_deref().is_some_and(|s| s != "sandbox") {
            return Err(unsupported("RUN --security=insecure"));
        }
        if !devices.is_empty() {
            return Err(unsupported("RUN --device"));
        }
        let network = match network.as_deref() {
            None | Some("default") => self.req.network,
            Some("none") => Network::None,
            Some("host") => Network::Host,
            Some(other) => return Err(unsupported(&format!("RUN --network={other}"))),
        };
        self.run(id, st, command, build_args, network, location, text)
    }

    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        id: usize,
        st: &mut StageState,
        command: &Command,
        build_args: &[(String, String)],
        network: Network,
        location: &str,
        text: &str,
    ) -> Result<(), BuildError> {
        let argv = self.argv(st, command);
        let cfg = st.config.config.clone().unwrap_or_default();
        let mut env = cfg.env.clone();
        // ARG values reach RUN but never the config; ENV wins over an ARG of the same name.
        for (k, v) in build_args {
            if !env
                .iter()
                .any(|e| e.split_once('=').map(|(n, _)| n) == Some(k.as_str()))
            {
                env.push(format!("{k}={v}"));
            }
        }
        if !env.iter().any(|e| e.starts_with("PATH=")) {
            env.push(DEFAULT_PATH.into());
        }
        let lowers = st.topmost_first();
        let ids = users::resolve(cfg.user.as_deref().unwrap_or(""), &lowers).map_err(|e| {
            BuildError::User {
                location: location.to_string(),
                step: text.to_string(),
                source: e,
            }
        })?;
        let work = self.store.scratch_dir("run")?;
        let upper = self.store.scratch_dir("upper")?;
        let empty = self.store.scratch_dir("empty")?;
        let bundle = work.path().join("bundle");
        let overlay_work = work.path().join("work");
        for d in [&bundle, &overlay_work] {
            std::fs::create_dir_all(d).map_err(|e| StoreError::io(d, e))?;
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
            hosts: "127.0.0.1\tlocalhost mybuild\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                .into(),
            resolv_conf: match network {
                Network::Host => std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default(),
                Network::None => String::new(),
            },
            mounts: Vec::new(),
        };
        let reporter = &mut *self.reporter;
        let outcome = sandbox::run(&self.req.exe, &bundle, &spec, &mut |stream, data| {
            reporter.event(BuildEvent::Output { id, stream, data })
        })
        .map_err(|e| BuildError::Sandbox {
            location: location.to_string(),
            step: text.to_string(),
            source: e,
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
        let created_by = match command {
            Command::Shell(_) => format!("RUN {} # buildkit", argv.join(" ")),
            Command::Exec(v) => format!("RUN {} # buildkit", json(v)),
        };
        self.commit_layer(st, upper, created_by)
    }
}
