//! `RUN --mount`: each mount's fields, checked as BuildKit checks them, become a
//! sandbox mount. Nothing a mount shows is written to the step's upperdir: binds,
//! caches, tmpfs, secrets and ssh agent sockets are mounted over mount points that
//! live in the sandbox's private lowerdir, so neither their content nor their
//! targets reach the layer.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use layer_cache::cache_mounts::{CacheInit, CacheMount, Sharing};
use layer_cache::error::AtPath;
use layer_cache::snapshot::ScratchDir;

use super::*;
use crate::plan::RunMount;
use crate::sandbox::{resolve_in_layers, Mount, MountKind};

/// The mounts of one RUN and what keeps them valid until the step ends.
pub(super) struct Prepared {
    pub mounts: Vec<Mount>,
    /// `type=secret,env=NAME`: (NAME, index into `secrets`).
    pub secret_env: Vec<(String, usize)>,
    /// The values [`MountKind::Secret`] and `secret_env` refer to; handed to the
    /// sandbox through a pipe, never written to disk.
    pub secrets: Vec<Vec<u8>>,
    /// `SSH_AUTH_SOCK` for the command: the first ssh mount's target.
    pub ssh_auth_sock: Option<String>,
    _agents: Vec<super::ssh::AgentProxy>,
    _caches: Vec<CacheMount>,
    _scratch: Vec<ScratchDir>,
}

/// The ids of a RUN's `type=cache` mounts (a mount without `id=` is known by its
/// target), as the step would open them; mounts that do not parse are left to the
/// step to report.
pub(super) fn cache_ids(mounts: &[RunMount], workdir: Option<&str>) -> Vec<String> {
    mounts
        .iter()
        .filter_map(|rm| parse_fields(&rm.mount).ok())
        .filter(|f| f.kind == "cache")
        .filter_map(|f| {
            let target = f
                .target
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| resolve_path(workdir, t));
            f.id.filter(|s| !s.is_empty()).or(target)
        })
        .collect()
}

/// The fields of one `--mount`.
#[derive(Default)]
struct Fields {
    kind: String,
    target: Option<String>,
    source: Option<String>,
    id: Option<String>,
    readonly: Option<bool>,
    sharing: Option<String>,
    mode: Option<u32>,
    uid: Option<u32>,
    gid: Option<u32>,
    size: Option<u64>,
    required: bool,
    env: Option<String>,
}

fn parse_bool(v: Option<&str>) -> Result<bool, String> {
    match v.map(str::to_ascii_lowercase).as_deref() {
        None | Some("") | Some("true") | Some("1") => Ok(true),
        Some("false") | Some("0") => Ok(false),
        Some(other) => Err(format!("invalid boolean value {other:?}")),
    }
}

fn parse_num(key: &str, v: &str, radix: u32) -> Result<u32, String> {
    u32::from_str_radix(v, radix).map_err(|_| format!("invalid {key} {v:?}"))
}

/// `size=` as docker's RAMInBytes: a number with an optional k/m/g/t suffix (powers of 1024).
fn parse_size(v: &str) -> Result<u64, String> {
    let lower = v.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(lower.len());
    let (num, unit) = lower.split_at(digits);
    let mult: u64 = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return Err(format!("invalid size {v:?}")),
    };
    let n: f64 = num.parse().map_err(|_| format!("invalid size {v:?}"))?;
    Ok((n * mult as f64) as u64)
}

fn parse_fields(m: &crate::dockerfile::Mount) -> Result<Fields, String> {
    let mut f = Fields {
        kind: m.kind().to_ascii_lowercase(),
        ..Fields::default()
    };
    for (k, v) in &m.options {
        let val = v.as_deref().unwrap_or("");
        match k.as_str() {
            "type" | "from" => {}
            "target" | "dst" | "destination" => f.target = Some(val.to_string()),
            "source" | "src" => f.source = Some(val.to_string()),
            "id" => f.id = Some(val.to_string()),
            "readonly" | "ro" => f.readonly = Some(parse_bool(v.as_deref())?),
            "readwrite" | "rw" => f.readonly = Some(!parse_bool(v.as_deref())?),
            "required" => f.required = parse_bool(v.as_deref())?,
            "sharing" => f.sharing = Some(val.to_ascii_lowercase()),
            "mode" => f.mode = Some(parse_num("mode", val, 8)?),
            "uid" => f.uid = Some(parse_num("uid", val, 10)?),
            "gid" => f.gid = Some(parse_num("gid", val, 10)?),
            "size" => f.size = Some(parse_size(val)?),
            "env" => f.env = Some(val.to_string()),
            other => return Err(format!("unexpected key '{other}'")),
        }
    }
    Ok(f)
}

impl Exec<'_> {
    /// The snapshot stack a `from=` names, topmost first; the context when absent.
    fn mount_layers(
        &mut self,
        from: Option<&Source>,
        done: &BTreeMap<usize, StageState>,
        location: &str,
    ) -> Result<Vec<PathBuf>, BuildError> {
        Ok(match from {
            None | Some(Source::Context) => vec![self.req.context.clone()],
            Some(from @ Source::NamedContext { .. }) => self
                .context_dir(from)?
                .iter()
                .map(|(d, _)| d.to_path_buf())
                .collect(),
            Some(Source::Stage { index }) => {
                done.get(index).map(|s| s.topmost_first()).ok_or_else(|| {
                    StoreError::invalid(
                        "build plan",
                        format!("stage {index} used before it was built"),
                    )
                })?
            }
            Some(Source::Image { reference }) => {
                self.base_image(reference, location)?.topmost_first()
            }
        })
    }

    /// The build context as BuildKit shows it to a bind mount: `[context]`, or with
    /// a `.dockerignore` that hides something, a mask layer of whiteouts for what it
    /// hides on top (kept alive in `scratch`), so nothing is copied.
    /// A named local context is shown the same way, through its own `.dockerignore`.
    fn context_view(
        &self,
        context: &Path,
        ignore: Option<&crate::ignore::Matcher>,
        scratch: &mut Vec<ScratchDir>,
    ) -> Result<Vec<PathBuf>, BuildError> {
        let context = context.to_path_buf();
        let hidden = match ignore {
            Some(m) => copy::ignored_paths(&context, m),
            None => Vec::new(),
        };
        if hidden.is_empty() {
            return Ok(vec![context]);
        }
        let mask = self.store.scratch_dir("mount-context")?;
        build_mask(&context, mask.path(), &hidden)?;
        let top = mask.path().to_path_buf();
        scratch.push(mask);
        Ok(vec![top, context])
    }

    /// Checks and sets up every mount of a RUN.
    pub(super) fn prepare_mounts(
        &mut self,
        st: &StageState,
        mounts: &[RunMount],
        done: &BTreeMap<usize, StageState>,
        location: &str,
        text: &str,
    ) -> Result<Prepared, BuildError> {
        let mut out = Prepared {
            mounts: Vec::new(),
            secret_env: Vec::new(),
            secrets: Vec::new(),
            ssh_auth_sock: None,
            _agents: Vec::new(),
            _caches: Vec::new(),
            _scratch: Vec::new(),
        };
        let workdir = st
            .config
            .config
            .as_ref()
            .and_then(|c| c.working_dir.clone());
        let mut ssh_count = 0;
        for rm in mounts {
            let raw = rm.mount.raw.clone();
            let e = MountErr {
                location,
                step: text,
                raw: &raw,
            };
            let err = |message: String| e.err(message);
            let f = parse_fields(&rm.mount).map_err(&err)?;
            let target = f
                .target
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| resolve_path(workdir.as_deref(), t));
            let need_target = || {
                target
                    .clone()
                    .ok_or_else(|| err("mount target is required".into()))
            };
            match f.kind.as_str() {
                "bind" => self.bind_mount(rm, &f, need_target()?, done, &mut out, &e)?,
                "cache" => self.cache_mount(rm, &f, need_target()?, done, &mut out, &e)?,
                "tmpfs" => {
                    let target = need_target()?;
                    out.mounts.push(Mount {
                        target,
                        kind: MountKind::Tmpfs { size: f.size },
                    });
                }
                "secret" => self.secret_mount(&f, target.as_deref(), &mut out, &e)?,
                "ssh" => self.ssh_mount(&f, target.clone(), &mut ssh_count, &mut out, &e)?,
                other => return Err(err(format!("unsupported mount type {other:?}"))),
            }
        }
        Ok(out)
    }

    /// `type=bind`: the context, a stage or an image; read-only unless asked, and
    /// then writes go to a scratch upper that is thrown away.
    fn bind_mount(
        &mut self,
        rm: &RunMount,
        f: &Fields,
        target: String,
        done: &BTreeMap<usize, StageState>,
        out: &mut Prepared,
        m: &MountErr,
    ) -> Result<(), BuildError> {
        let context = self.context_dir(rm.from.as_ref().unwrap_or(&Source::Context))?;
        let from_context = context.is_some();
        let layers = match context {
            Some((dir, ignore)) => self.context_view(dir, ignore, &mut out._scratch)?,
            None => self.mount_layers(rm.from.as_ref(), done, m.location)?,
        };
        let source = resolve_in_layers(&layers, f.source.as_deref().unwrap_or("/"));
        let rel = PathBuf::from(source.trim_start_matches('/'));
        let Some(real) = merged::lookup(&layers, &rel) else {
            return Err(m.err(format!("source {source} not found")));
        };
        let is_dir = std::fs::metadata(&real)
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let readonly = f.readonly.unwrap_or(true);
        let kind = if readonly && layers.len() == 1 && from_context {
            // A single directory (the context): bind the path itself.
            MountKind::Bind {
                source: real,
                readonly: true,
            }
        } else {
            let mut layers = layers;
            let scratch = if readonly && layers.len() > 1 {
                None
            } else if readonly {
                // A read-only overlay needs two lowerdirs.
                let empty = self.store.scratch_dir("mount-empty")?;
                layers.push(empty.path().to_path_buf());
                out._scratch.push(empty);
                None
            } else {
                // Writes go to a scratch upperdir that is thrown away.
                let s = self.store.scratch_dir("mount-rw")?;
                for d in ["upper", "work"] {
                    let p = s.path().join(d);
                    fs_err::create_dir(&p).map_err(StoreError::from)?;
                }
                let p = s.path().to_path_buf();
                out._scratch.push(s);
                Some(p)
            };
            // Overlay options are split on ',' and ':'; a path holding one
            // would be read as something else.
            if let Some(bad) = layers
                .iter()
                .chain(&scratch)
                .find(|p| p.to_string_lossy().contains([',', ':']))
            {
                return Err(m.err(format!(
                        "{} contains ',' or ':', which an overlay mount cannot take; move the context or the store",
                        bad.display()
                    )));
            }
            MountKind::Layers {
                layers,
                source,
                scratch,
                is_dir,
            }
        };
        out.mounts.push(Mount { target, kind });
        Ok(())
    }

    /// `type=cache`: a store cache directory by id, seeded from `from=` when new.
    fn cache_mount(
        &mut self,
        rm: &RunMount,
        f: &Fields,
        target: String,
        done: &BTreeMap<usize, StageState>,
        out: &mut Prepared,
        m: &MountErr,
    ) -> Result<(), BuildError> {
        let id =
            f.id.clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| target.clone());
        let sharing = match f.sharing.as_deref() {
            None | Some("shared") => Sharing::Shared,
            Some("private") => Sharing::Private,
            Some("locked") => Sharing::Locked,
            Some(other) => {
                return Err(m.err(format!(
                    "unrecognized sharing {other:?}: expected shared, private or locked"
                )))
            }
        };
        let init = CacheInit {
            uid: f.uid.unwrap_or(0),
            gid: f.gid.unwrap_or(0),
            mode: f.mode.unwrap_or(0o755),
        };
        let seed_layers = match &rm.from {
            Some(from) => Some(self.mount_layers(Some(from), done, m.location)?),
            None => None,
        };
        let seed_source = f.source.clone().unwrap_or_else(|| "/".into());
        let cache = self
            .store
            .open_cache_mount(&id, sharing, init, &mut |dir| {
                // An imported copy (`--cache-from`) first; one that fails to restore
                // is reported by its source and leaves the directory empty.
                if let Some(source) = self.req.cache_mount_source {
                    if source.restore(&id, dir) {
                        return Ok(());
                    }
                }
                let Some(layers) = &seed_layers else {
                    return Ok(());
                };
                let src = resolve_in_layers(layers, &seed_source);
                copy::copy(&copy::CopySpec {
                    src_layers: layers,
                    dest_layers: &[],
                    sources: &[src],
                    filter: copy::SourceFilter::default(),
                    contents: &[],
                    dest: "/",
                    owner: (init.uid, init.gid),
                    chmod: None,
                    upper: dir,
                })
                .map_err(|e| std::io::Error::other(format!("seeding the cache: {e}")))
            })
            .map_err(|e| {
                // The directory is made with the cache's owner; with one id mapped in
                // this user namespace, any other fails.
                if einval(&e) && layer_cache::overlay::in_user_namespace() {
                    let owner = layer_cache::overlay::UnmappedOwner {
                        path: PathBuf::from(&target),
                        uid: init.uid,
                        gid: init.gid,
                    };
                    return m.err(owner.to_string());
                }
                m.err(e.to_string())
            })?;
        out.mounts.push(Mount {
            target,
            kind: MountKind::Bind {
                source: cache.path().to_path_buf(),
                readonly: f.readonly.unwrap_or(false),
            },
        });
        out._caches.push(cache);
        Ok(())
    }

    /// `type=secret`: a file under /run/secrets, or an environment variable with `env=`.
    fn secret_mount(
        &mut self,
        f: &Fields,
        target: Option<&str>,
        out: &mut Prepared,
        m: &MountErr,
    ) -> Result<(), BuildError> {
        let id =
            f.id.clone()
                .filter(|s| !s.is_empty())
                .or_else(|| {
                    target
                        .and_then(|t| t.rsplit('/').next())
                        .map(str::to_string)
                })
                .ok_or_else(|| m.err("secret needs an id or a target".into()))?;
        let Some(source) = self.req.secrets.get(&id) else {
            if f.required {
                return Err(m.err(format!(
                    "secret {id} is required but was not given (pass --secret id={id},src=FILE)"
                )));
            }
            return Ok(());
        };
        let value = source.read(&id).map_err(|e| m.err(e.to_string()))?;
        let index = out.secrets.len();
        if let Some(name) = f.env.as_deref().filter(|n| !n.is_empty()) {
            if std::str::from_utf8(&value).is_err() || value.contains(&0) {
                return Err(m.err(format!(
                        "secret {id} is not UTF-8 text without NUL bytes and cannot be an environment variable"
                    )));
            }
            out.secret_env.push((name.to_string(), index));
        }
        out.secrets.push(value);
        // With env= and no target the secret is not a file.
        let file_target = match (&target, &f.env) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(format!("/run/secrets/{id}")),
            (None, Some(_)) => None,
        };
        if let Some(target) = file_target {
            out.mounts.push(Mount {
                target,
                kind: MountKind::Secret {
                    index,
                    mode: f.mode.unwrap_or(0o400) & 0o7777,
                    uid: f.uid.unwrap_or(0),
                    gid: f.gid.unwrap_or(0),
                },
            });
        }
        Ok(())
    }

    /// `type=ssh`: a socket forwarding to the agent given by `--ssh`.
    fn ssh_mount(
        &mut self,
        f: &Fields,
        target: Option<String>,
        ssh_count: &mut usize,
        out: &mut Prepared,
        m: &MountErr,
    ) -> Result<(), BuildError> {
        // As BuildKit: targets are numbered among the step's ssh mounts and
        // SSH_AUTH_SOCK names the first, whether or not it is skipped.
        let target = target
            .clone()
            .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{}", *ssh_count));
        *ssh_count += 1;
        if out.ssh_auth_sock.is_none() {
            out.ssh_auth_sock = Some(target.clone());
        }
        let id =
            f.id.clone()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "default".into());
        let Some(agent) = self.req.ssh.get(&id) else {
            if f.required {
                return Err(m.err(format!(
                    "ssh agent {id} is required but was not given (pass --ssh {id}=SOCKET)"
                )));
            }
            return Ok(());
        };
        let dir = self.store.scratch_dir("ssh")?;
        let proxy = super::ssh::AgentProxy::start(
            agent,
            dir,
            f.uid.unwrap_or(0),
            f.gid.unwrap_or(0),
            f.mode.unwrap_or(0o600),
        )
        .map_err(|e| {
            m.err(format!(
                "ssh agent {id}: forwarding {}: {e}",
                agent.display()
            ))
        })?;
        out.mounts.push(Mount {
            target,
            kind: MountKind::Bind {
                source: proxy.socket().to_path_buf(),
                readonly: true,
            },
        });
        out._agents.push(proxy);
        Ok(())
    }
}

/// Where a RUN mount is, for its errors.
struct MountErr<'a> {
    location: &'a str,
    step: &'a str,
    raw: &'a str,
}

impl MountErr<'_> {
    fn err(&self, message: String) -> BuildError {
        BuildError::Mount {
            location: self.location.to_string(),
            step: self.step.to_string(),
            mount: self.raw.to_string(),
            message,
        }
    }
}

/// Whether `e` or an error it wraps is `EINVAL` from the system.
fn einval(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::raw_os_error)
            == Some(libc::EINVAL)
        {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Makes `mask` a layer that hides `hidden` (paths relative to `context`) with
/// overlay whiteouts; its directories carry the context's owner, mode and times, as
/// the topmost layer's directories are what the overlay shows.
fn build_mask(context: &Path, mask: &Path, hidden: &[PathBuf]) -> Result<(), StoreError> {
    let mut dirs = vec![PathBuf::new()];
    for rel in hidden {
        let mut cur = PathBuf::new();
        if let Some(parent) = rel.parent() {
            for c in parent.components() {
                cur.push(c);
                let p = mask.join(&cur);
                if p.symlink_metadata().is_err() {
                    fs_err::create_dir(&p)?;
                    dirs.push(cur.clone());
                }
            }
        }
        let p = mask.join(rel);
        // A 0/0 character device is overlay's whiteout.
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &p,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .at(&p)?;
    }
    // Deepest first, so setting a directory's times is not undone below it.
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    for rel in dirs {
        let (src, dst) = (context.join(&rel), mask.join(&rel));
        let md = fs_err::metadata(&src)?;
        std::os::unix::fs::chown(&dst, Some(md.uid()), Some(md.gid())).at(&dst)?;
        fs_err::set_permissions(&dst, std::fs::Permissions::from_mode(md.mode() & 0o7777))?;
        let times = std::fs::FileTimes::new()
            .set_accessed(md.accessed().at(&src)?)
            .set_modified(md.modified().at(&src)?);
        fs_err::File::open(&dst)?.set_times(times).at(&dst)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_parse_like_docker() {
        assert_eq!(super::parse_size("1024"), Ok(1024));
        assert_eq!(super::parse_size("64m"), Ok(64 << 20));
        assert_eq!(super::parse_size("1GiB"), Ok(1 << 30));
        assert!(super::parse_size("lots").is_err());
    }
}
