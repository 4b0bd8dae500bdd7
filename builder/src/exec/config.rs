//! What the instructions that only edit the image config do to it: one place for
//! the build's executor and for `import --change`, which runs the same dispatchers
//! as a build (as `docker import --change` does).

use layer_cache::image::{ContainerConfig, HealthConfig, ImageConfig};

use super::{history, resolve_path};
use crate::dockerfile::{self, Command, Healthcheck, InstructionKind};
use crate::plan::{self, PlanOptions, StepKind};

/// What [`apply`] did with a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The config changed; the history's `created_by` for the empty layer.
    History(String),
    /// The config changed and no history is recorded (ONBUILD, as BuildKit).
    Silent,
    /// WORKDIR set the working directory to this resolved path; the directory
    /// itself is the caller's to make.
    Workdir(String),
    /// Not a config edit (RUN, COPY, ADD, ARG).
    NotConfig,
}

/// Applies one planned step's config edit to `config`.
pub fn apply(config: &mut ImageConfig, step: &StepKind) -> Applied {
    let shell = config.config.as_ref().and_then(|c| c.shell.clone());
    let argv = |command: &Command| match command {
        Command::Exec(v) => v.clone(),
        Command::Shell(s) => {
            let mut argv = shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
            argv.push(s.clone());
            argv
        }
    };
    let c = config.config.get_or_insert_with(ContainerConfig::default);
    let pairs_text = |pairs: &[(String, String)]| {
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    };
    match step {
        StepKind::Env { pairs } => {
            for (k, v) in pairs {
                // A variable already set keeps its place, as BuildKit's addEnv.
                let entry = format!("{k}={v}");
                let name = |e: &String| e.split_once('=').map_or(e.as_str(), |(n, _)| n) == k;
                match c.env.iter_mut().find(|e| name(e)) {
                    Some(e) => *e = entry,
                    None => c.env.push(entry),
                }
            }
            Applied::History(format!("ENV {}", pairs_text(pairs)))
        }
        StepKind::Label { pairs } => {
            for (k, v) in pairs {
                c.labels.insert(k.clone(), v.clone());
            }
            Applied::History(format!("LABEL {}", pairs_text(pairs)))
        }
        StepKind::Cmd { command } => {
            let argv = argv(command);
            // `CMD []` leaves no Cmd, as Go omits an empty list.
            c.cmd = (!argv.is_empty()).then(|| argv.clone());
            // BuildKit marks every CMD's arguments as escaped (Docker's field).
            c.args_escaped = Some(true);
            Applied::History(format!("CMD {}", history::quoted_list(&argv)))
        }
        StepKind::Entrypoint { command, keep_cmd } => {
            let argv = argv(command);
            c.entrypoint = (!argv.is_empty()).then(|| argv.clone());
            // BuildKit resets the CMD unless this stage set one before.
            if !keep_cmd {
                c.cmd = None;
            }
            Applied::History(format!("ENTRYPOINT {}", history::quoted_list(&argv)))
        }
        StepKind::Expose { ports } => {
            // Already `port/proto`, normalised by the plan.
            for p in ports {
                c.exposed_ports.insert(p.clone(), serde_json::json!({}));
            }
            Applied::History(format!("EXPOSE [{}]", ports.join(" ")))
        }
        StepKind::Volume { paths } => {
            for p in paths {
                c.volumes.insert(p.clone(), serde_json::json!({}));
            }
            Applied::History(format!("VOLUME {}", history::plain_list(paths)))
        }
        StepKind::User { user } => {
            c.user = Some(user.clone());
            Applied::History(format!("USER {user}"))
        }
        StepKind::Workdir { path } => {
            let wd = resolve_path(c.working_dir.as_deref(), path);
            c.working_dir = Some(wd.clone());
            Applied::Workdir(wd)
        }
        StepKind::StopSignal { signal } => {
            c.stop_signal = Some(signal.clone());
            Applied::History(format!("STOPSIGNAL {signal}"))
        }
        StepKind::Shell { shell } => {
            c.shell = Some(shell.clone());
            Applied::History(format!("SHELL {}", history::plain_list(shell)))
        }
        StepKind::Onbuild { expression } => {
            c.on_build
                .get_or_insert_with(Vec::new)
                .push(expression.clone());
            Applied::Silent
        }
        StepKind::Maintainer { name } => {
            config.author = Some(name.clone());
            Applied::History(format!("MAINTAINER {name}"))
        }
        StepKind::Healthcheck(h) => {
            let hc = health_config(h);
            let created_by = history::healthcheck(&hc);
            c.healthcheck = Some(hc);
            Applied::History(created_by)
        }
        StepKind::Arg { .. } | StepKind::Run { .. } | StepKind::Copy(_) | StepKind::Add(_) => {
            Applied::NotConfig
        }
    }
}

fn health_config(h: &Healthcheck) -> HealthConfig {
    let nanos = |d: &Option<std::time::Duration>| {
        d.map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
    };
    match h {
        Healthcheck::None => HealthConfig {
            test: Some(vec!["NONE".into()]),
            ..HealthConfig::default()
        },
        Healthcheck::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => HealthConfig {
            test: Some(test.clone()),
            interval: nanos(interval),
            timeout: nanos(timeout),
            start_period: nanos(start_period),
            start_interval: nanos(start_interval),
            // Zero means "inherit" and Go omits it, as the durations.
            retries: retries.filter(|r| *r != 0).map(i64::from),
            ..HealthConfig::default()
        },
    }
}

/// Why an `import --change` line was refused.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error("--change {line:?}: {keyword} needs an argument")]
    Empty { line: String, keyword: String },
    #[error(
        "--change {line:?}: {keyword} is not supported here (use CMD, ENTRYPOINT, ENV, EXPOSE, \
         HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)"
    )]
    Unsupported { line: String, keyword: String },
    #[error("--change {line:?}: {message}")]
    Parse { line: String, message: String },
    #[error("--change: {0}")]
    Plan(String),
}

/// The config `docker import --change` makes: each line is a Dockerfile
/// instruction among those Docker allows there, dispatched in order as in a build
/// (so ENV values expand in later lines, and ENTRYPOINT clears a CMD that no
/// earlier line set).
pub fn from_changes(lines: &[String]) -> Result<ContainerConfig, ChangeError> {
    let mut config = ImageConfig::default();
    apply_changes(&mut config, lines)?;
    let mut config = config.config.unwrap_or_default();
    // Docker's import dispatches CMD with the classic builder, which marks
    // arguments escaped on Windows only; BuildKit's mark is for builds.
    config.args_escaped = None;
    Ok(config)
}

/// The instructions `docker import --change` and `docker commit --change` take
/// (Docker's `validCommitCommands`).
fn is_change_instruction(kind: &InstructionKind) -> bool {
    matches!(
        kind,
        InstructionKind::Cmd { .. }
            | InstructionKind::Entrypoint { .. }
            | InstructionKind::Healthcheck(_)
            | InstructionKind::Env { .. }
            | InstructionKind::Expose { .. }
            | InstructionKind::Label { .. }
            | InstructionKind::Onbuild { .. }
            | InstructionKind::StopSignal { .. }
            | InstructionKind::User { .. }
            | InstructionKind::Volume { .. }
            | InstructionKind::Workdir { .. }
    )
}

/// The image `apply_changes` plans its lines on, so that they expand against
/// the config's own environment.
const CHANGE_BASE: &str = "mybuild-change-base";

/// Answers the environment of [`CHANGE_BASE`]: the config being changed.
struct ConfigEnv(Vec<(String, String)>);

impl plan::BaseInfo for ConfigEnv {
    fn env(&self, image: &str, _: Option<&plan::Platform>) -> Vec<(String, String)> {
        if image == CHANGE_BASE {
            self.0.clone()
        } else {
            Vec::new()
        }
    }
}

/// Applies `--change` lines (Docker's `import`/`commit` set of instructions, each
/// checked by name before anything is applied) to `config`, in order, as a build
/// dispatches them on an image with this config: ENV merges into the existing
/// environment and later lines expand against it; ENTRYPOINT clears the config's
/// CMD unless a line before it set one. Returns what each line applied, in order.
pub fn apply_changes(
    config: &mut ImageConfig,
    lines: &[String],
) -> Result<Vec<Applied>, ChangeError> {
    let mut text = format!("FROM {CHANGE_BASE}\n");
    for line in lines {
        let line = line.trim();
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        let keyword = word.to_ascii_uppercase();
        if rest.trim().is_empty() {
            return Err(ChangeError::Empty {
                line: line.to_string(),
                keyword,
            });
        }
        let df =
            dockerfile::parse(&format!("FROM scratch\n{line}\n"), "--change").map_err(|e| {
                ChangeError::Parse {
                    line: line.to_string(),
                    message: e.kind.to_string(),
                }
            })?;
        let instructions: Vec<_> = df.stages.iter().flat_map(|s| &s.instructions).collect();
        let allowed = matches!(instructions.as_slice(), [i] if is_change_instruction(&i.kind));
        if !allowed {
            return Err(ChangeError::Unsupported {
                line: line.to_string(),
                keyword,
            });
        }
        text.push_str(line);
        text.push('\n');
    }
    let env = config
        .config
        .as_ref()
        .map(|c| {
            c.env
                .iter()
                .map(|e| {
                    let (k, v) = e.split_once('=').unwrap_or((e.as_str(), ""));
                    (k.to_string(), v.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    let df = dockerfile::parse(&text, "--change").map_err(|e| ChangeError::Plan(e.render()))?;
    let graph = plan::plan(&df, &PlanOptions::default(), &ConfigEnv(env))
        .map_err(|e| ChangeError::Plan(e.render()))?;
    let mut applied = Vec::new();
    for stage in &graph.stages {
        for step in &stage.steps {
            applied.push(apply(config, &step.kind));
        }
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changes(lines: &[&str]) -> Result<ContainerConfig, ChangeError> {
        from_changes(&lines.iter().map(|l| l.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn applies_changes_as_a_build_would() {
        let c = changes(&[
            "ENV PATH=/usr/bin:/bin",
            r#"ENV A="x y" B=2"#,
            "ENV PATH=/bin C=$A",
            r#"CMD ["/bin/sh"]"#,
            "entrypoint echo hi",
            "EXPOSE 80 53/udp",
            "WORKDIR /app",
            "WORKDIR sub",
        ])
        .unwrap();
        assert_eq!(c.env, vec!["PATH=/bin", "A=x y", "B=2", "C=x y"]);
        // A CMD set by an earlier change stays, as in a build's stage.
        assert_eq!(c.cmd, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(
            c.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
        assert_eq!(c.working_dir.as_deref(), Some("/app/sub"));
    }

    #[test]
    fn an_imported_cmd_is_not_marked_escaped_as_dockers_import_does() {
        let c = from_changes(&["CMD echo hi".to_string()]).unwrap();
        assert_eq!(
            c.cmd,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert_eq!(c.args_escaped, None);
    }

    #[test]
    fn entrypoint_clears_a_cmd_no_earlier_step_set() {
        let mut config = ImageConfig::default();
        config.config.get_or_insert_with(Default::default).cmd = Some(vec!["sh".into()]);
        let entrypoint = |keep_cmd| StepKind::Entrypoint {
            command: Command::Exec(vec!["/bin/x".into()]),
            keep_cmd,
        };
        apply(&mut config, &entrypoint(true));
        let c = config.config.as_ref().unwrap();
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        apply(&mut config, &entrypoint(false));
        let c = config.config.as_ref().unwrap();
        assert_eq!(c.cmd, None);
        assert_eq!(c.entrypoint, Some(vec!["/bin/x".to_string()]));
    }

    #[test]
    fn refuses_what_docker_import_refuses() {
        let err = changes(&["RUN true"]).unwrap_err().to_string();
        assert!(err.contains("RUN is not supported"), "{err}");
        let err = changes(&["FROM x"]).unwrap_err().to_string();
        assert!(err.contains("FROM is not supported"), "{err}");
        let err = changes(&["CMD"]).unwrap_err().to_string();
        assert!(err.contains("CMD needs an argument"), "{err}");
        let err = changes(&["STOPSIGNAL NOPE"]).unwrap_err().to_string();
        assert!(err.contains("NOPE"), "{err}");
    }
}
