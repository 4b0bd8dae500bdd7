//! `import -c`: Dockerfile instructions applied to the imported image's config,
//! as `docker import --change` accepts them.

use anyhow::{bail, Context, Result};
use layer_cache::image::ContainerConfig;

/// Applies one `--change` line such as `ENV PATH=/bin` or `CMD ["/bin/sh"]`.
pub fn apply(cfg: &mut ContainerConfig, line: &str) -> Result<()> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    let kw = word.to_ascii_uppercase();
    if rest.is_empty() {
        bail!("--change {line:?}: {kw} needs an argument");
    }
    match kw.as_str() {
        "ENV" => {
            for (k, v) in key_values(rest, &kw)? {
                cfg.env.retain(|e| e.split_once('=').map(|(ek, _)| ek) != Some(k.as_str()));
                cfg.env.push(format!("{k}={v}"));
            }
        }
        "LABEL" => {
            for (k, v) in key_values(rest, &kw)? {
                cfg.labels.insert(k, v);
            }
        }
        "CMD" => cfg.cmd = Some(command(rest)),
        "ENTRYPOINT" => cfg.entrypoint = Some(command(rest)),
        "WORKDIR" => cfg.working_dir = Some(rest.to_string()),
        "USER" => cfg.user = Some(rest.to_string()),
        "STOPSIGNAL" => cfg.stop_signal = Some(rest.to_string()),
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                let port = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                cfg.exposed_ports.insert(port, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols = match serde_json::from_str::<Vec<String>>(rest) {
                Ok(v) => v,
                Err(_) => rest.split_whitespace().map(str::to_string).collect(),
            };
            for v in vols {
                cfg.volumes.insert(v, serde_json::json!({}));
            }
        }
        "ONBUILD" => cfg.on_build.get_or_insert_with(Vec::new).push(rest.to_string()),
        other => bail!(
            "--change {line:?}: {other} is not supported here (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)"
        ),
    }
    Ok(())
}

/// Exec form when the argument is a JSON string array, else `/bin/sh -c` shell form.
fn command(rest: &str) -> Vec<String> {
    match serde_json::from_str::<Vec<String>>(rest) {
        Ok(v) => v,
        Err(_) => vec!["/bin/sh".into(), "-c".into(), rest.into()],
    }
}

/// `k=v k2="v 2"` pairs, or the legacy `k value with spaces` form.
fn key_values(rest: &str, kw: &str) -> Result<Vec<(String, String)>> {
    let first = rest.split_whitespace().next().unwrap_or("");
    if !first.contains('=') {
        let (k, v) = rest
            .split_once(char::is_whitespace)
            .with_context(|| format!("{kw} {rest:?}: expected KEY=VALUE"))?;
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for word in split_words(rest)? {
        let (k, v) = word
            .split_once('=')
            .with_context(|| format!("{kw} {rest:?}: {word:?} is not KEY=VALUE"))?;
        if k.is_empty() {
            bail!("{kw} {rest:?}: empty key");
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

/// Whitespace-separated words with double/single quotes and backslash escapes removed.
fn split_words(s: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                in_word = true;
                let q = c;
                loop {
                    match chars.next() {
                        Some(x) if x == q => break,
                        Some('\\') if q == '"' => cur.extend(chars.next()),
                        Some(x) => cur.push(x),
                        None => bail!("unterminated quote in {s:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_changes_like_docker_import() {
        let mut c = ContainerConfig::default();
        apply(&mut c, "ENV PATH=/usr/bin:/bin").unwrap();
        apply(&mut c, r#"ENV A="x y" B=2"#).unwrap();
        apply(&mut c, "ENV PATH=/bin").unwrap();
        apply(&mut c, r#"CMD ["/bin/sh"]"#).unwrap();
        apply(&mut c, "entrypoint echo hi").unwrap();
        apply(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(c.env, vec!["A=x y", "B=2", "PATH=/bin"]);
        assert_eq!(c.cmd, Some(vec!["/bin/sh".to_string()]));
        assert_eq!(
            c.entrypoint,
            Some(vec!["/bin/sh".into(), "-c".into(), "echo hi".into()])
        );
        assert!(c.exposed_ports.contains_key("80/tcp") && c.exposed_ports.contains_key("53/udp"));
        let err = apply(&mut c, "RUN true").unwrap_err().to_string();
        assert!(err.contains("RUN is not supported"), "{err}");
    }
}
