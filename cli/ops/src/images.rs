//! The data of `images` (with Docker's `--filter`s), `history` and `rmi` by id.

use std::collections::BTreeMap;

use layer_cache::image::descriptor_digest;
use layer_cache::{Digest, ImageRef, Store};

use crate::{OpsError, Result};

/// One tagged image, as `images` lists it.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    /// Familiar repository (`busybox`, `localhost:5000/app`).
    pub repository: String,
    pub tag: String,
    /// The image id: the digest of the manifest (or index) the tag names.
    pub id: Digest,
    /// RFC 3339, as the config says; `None` when the image cannot be read.
    pub created: Option<String>,
    /// Manifest, config and layers as stored; `None` when the image cannot be read.
    pub size: Option<u64>,
    pub labels: BTreeMap<String, String>,
}

/// `images --filter`s, combined as Docker does: `reference` values are ORed,
/// every `label` must match, and different keys are ANDed.
#[derive(Debug, Default)]
pub struct ImageFilters {
    references: Vec<String>,
    labels: Vec<(String, Option<String>)>,
    dangling: Option<bool>,
    /// Created strictly before / after these instants (seconds since the epoch).
    before: Option<i64>,
    since: Option<i64>,
}

impl ImageFilters {
    /// Parses `KEY=VALUE` filters; `before`/`since` name images in `store`.
    pub fn parse(store: &Store, filters: &[String]) -> Result<ImageFilters> {
        let mut f = ImageFilters::default();
        for spec in filters {
            let Some((key, value)) = spec.split_once('=') else {
                return Err(OpsError::invalid(format!(
                    "bad format of filter (expected name=value): {spec:?}"
                )));
            };
            match key {
                "reference" => {
                    // Checked now, so a bad pattern fails even with no images.
                    path_match(value, "")?;
                    f.references.push(value.to_string());
                }
                "label" => f.labels.push(match value.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (value.to_string(), None),
                }),
                "dangling" => {
                    f.dangling = Some(match value.to_ascii_lowercase().as_str() {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(OpsError::invalid(format!(
                                "invalid filter 'dangling={value}': expected true or false"
                            )))
                        }
                    })
                }
                "before" | "since" => {
                    let t = created_of(store, value)?;
                    if key == "before" {
                        f.before = Some(f.before.map_or(t, |b| b.min(t)));
                    } else {
                        f.since = Some(f.since.map_or(t, |s| s.max(t)));
                    }
                }
                other => {
                    return Err(OpsError::invalid(format!(
                        "invalid filter '{other}' (images take reference, label, dangling, before, since)"
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Adds a `reference` pattern (the `images REPO[:TAG]` argument).
    pub fn add_reference(&mut self, pattern: &str) -> Result<()> {
        path_match(pattern, "")?;
        self.references.push(pattern.to_string());
        Ok(())
    }

    fn keeps(&self, i: &ImageInfo) -> Result<bool> {
        if !self.references.is_empty() {
            let full = format!("{}:{}", i.repository, i.tag);
            let mut any = false;
            for p in &self.references {
                if path_match(p, &full)? || path_match(p, &i.repository)? {
                    any = true;
                    break;
                }
            }
            if !any {
                return Ok(false);
            }
        }
        // Every listed image has a tag: none is dangling.
        if self.dangling == Some(true) {
            return Ok(false);
        }
        for (k, v) in &self.labels {
            match (i.labels.get(k), v) {
                (None, _) => return Ok(false),
                (Some(have), Some(want)) if have != want => return Ok(false),
                _ => {}
            }
        }
        if self.before.is_some() || self.since.is_some() {
            let Some(t) = i.created.as_deref().and_then(parse_time) else {
                return Ok(false);
            };
            if self.before.is_some_and(|b| t >= b) || self.since.is_some_and(|s| t <= s) {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

fn created_of(store: &Store, image: &str) -> Result<i64> {
    let desc = store.resolve(image)?;
    let (created, _) = store.image_summary(&desc)?;
    parse_time(&created).ok_or_else(|| {
        OpsError::invalid(format!(
            "image {image} has no creation time to compare with ({created:?})"
        ))
    })
}

/// Every tag that passes `filters`, newest first as Docker lists them (then by name).
pub fn list(store: &Store, filters: &ImageFilters) -> Result<Vec<ImageInfo>> {
    let mut rows = Vec::new();
    for t in store.tags()? {
        let (repo, tag) = t.name.rsplit_once(':').unwrap_or((&t.name, ""));
        let summary = store.image_summary(&t.descriptor).ok();
        let labels = store
            .load_image(&t.descriptor)
            .ok()
            .and_then(|img| img.config.config.map(|c| c.labels))
            .unwrap_or_default();
        let info = ImageInfo {
            repository: repo.to_string(),
            tag: tag.to_string(),
            id: descriptor_digest(&t.descriptor)?,
            created: summary
                .as_ref()
                .map(|(c, _)| c.clone())
                .filter(|c| !c.is_empty()),
            size: summary.map(|(_, s)| s),
            labels,
        };
        if filters.keeps(&info)? {
            rows.push(info);
        }
    }
    // Stable: equal times keep the tags' name order.
    rows.sort_by_key(|i| std::cmp::Reverse(i.created.as_deref().and_then(parse_time)));
    Ok(rows)
}

/// One line of `history`, newest first.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// The image id on the newest line only (`<missing>` elsewhere, as Docker shows
    /// for images it did not build step by step).
    pub id: Option<Digest>,
    pub created: Option<String>,
    pub created_by: String,
    /// The stored (compressed) size of the layer the step made; 0 for an empty layer.
    pub size: u64,
    pub comment: String,
}

/// `history`: the config's history joined with the manifest's layers.
pub fn history(store: &Store, image: &str) -> Result<Vec<HistoryRow>> {
    let desc = store.resolve(image)?;
    let id = descriptor_digest(&desc)?;
    let img = store.load_image(&desc)?;
    let mut layers = img.manifest.layers().iter().map(|l| l.size());
    let mut rows: Vec<HistoryRow> = Vec::new();
    for h in &img.config.history {
        let size = if h.empty_layer {
            0
        } else {
            layers.next().unwrap_or(0)
        };
        rows.push(HistoryRow {
            id: None,
            created: h.created.clone(),
            created_by: h.created_by.clone().unwrap_or_default(),
            size,
            comment: h.comment.clone().unwrap_or_default(),
        });
    }
    // Layers the history does not describe still get a line each.
    for size in layers {
        rows.push(HistoryRow {
            id: None,
            created: img.config.created.clone(),
            created_by: String::new(),
            size,
            comment: String::new(),
        });
    }
    rows.reverse();
    if let Some(top) = rows.first_mut() {
        top.id = Some(id);
    }
    Ok(rows)
}

/// What `rmi NAME` removes: the tags of the image `name` names as an id (prefix),
/// or `None` when it is a tag or `name@digest` (which removes one tag).
pub fn tags_of_id(store: &Store, name: &str) -> Result<Option<(Digest, Vec<ImageRef>)>> {
    let Some(id) = store.resolve_id(name)? else {
        return Ok(None);
    };
    let mut refs = Vec::new();
    for n in store.tag_names(&id)? {
        refs.push(ImageRef::parse(&n)?);
    }
    Ok(Some((id, refs)))
}

/// Seconds since the epoch of an RFC 3339 time (`2023-11-14T22:13:20Z`, with
/// fractions and a numeric offset allowed).
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if s.len() < 20 || !s.is_char_boundary(19) {
        return None;
    }
    let n = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, m, d) = (n(0..4)?, n(5..7)?, n(8..10)?);
    let (hh, mm, ss) = (n(11..13)?, n(14..16)?, n(17..19)?);
    let mut rest = &s[19..];
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(frac.len());
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        o if o.len() == 6 && (o.starts_with('+') || o.starts_with('-')) => {
            let h: i64 = o.get(1..3)?.parse().ok()?;
            let m: i64 = o.get(4..6)?.parse().ok()?;
            let sign = if o.starts_with('-') { -1 } else { 1 };
            sign * (h * 3600 + m * 60)
        }
        _ => return None,
    };
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Docker's `path.Match` (Go's `path` package), which `reference=` filters use:
/// `*` any run of non-`/` characters, `?` one, `[...]` a class (`[^...]`
/// negated, ranges, `\` escapes). Ours because glob crates add `**` and braces,
/// which Docker takes literally.
pub fn path_match(pattern: &str, name: &str) -> Result<bool> {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    if !pattern_ok(&p) {
        return Err(OpsError::invalid(format!(
            "syntax error in pattern {pattern:?}"
        )));
    }
    Ok(match_from(&p, &n))
}

fn pattern_ok(p: &[char]) -> bool {
    let mut i = 0;
    while i < p.len() {
        match p[i] {
            '\\' if i + 1 >= p.len() => return false,
            '\\' => i += 2,
            '[' => match class_match(p, i, 'a') {
                Some((_, next)) => i = next,
                None => return false,
            },
            _ => i += 1,
        }
    }
    true
}

fn match_from(p: &[char], n: &[char]) -> bool {
    let (mut pi, mut ni) = (0, 0);
    // Where to resume after the last `*`: (pattern index after it, name index).
    let mut star: Option<(usize, usize)> = None;
    loop {
        if pi < p.len() {
            let step = match p[pi] {
                '*' => {
                    star = Some((pi + 1, ni));
                    pi += 1;
                    continue;
                }
                _ if ni >= n.len() => None,
                '?' => (n[ni] != '/').then_some(pi + 1),
                '[' => match class_match(p, pi, n[ni]) {
                    Some((true, next)) if n[ni] != '/' => Some(next),
                    _ => None,
                },
                '\\' => (p.get(pi + 1) == Some(&n[ni])).then_some(pi + 2),
                c => (c == n[ni]).then_some(pi + 1),
            };
            if let Some(next) = step {
                pi = next;
                ni += 1;
                continue;
            }
        } else if ni == n.len() {
            return true;
        }
        // A mismatch: the last star takes one more character, never a `/`.
        match star {
            Some((sp, sn)) if sn < n.len() && n[sn] != '/' => {
                star = Some((sp, sn + 1));
                pi = sp;
                ni = sn + 1;
            }
            _ => return false,
        }
    }
}

/// Whether the class at `p[start] == '['` matches `c`, and the index after it;
/// `None` when the class is malformed.
fn class_match(p: &[char], start: usize, c: char) -> Option<(bool, usize)> {
    let mut i = start + 1;
    let negated = p.get(i) == Some(&'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let mut hi = lo;
        if p.get(i) == Some(&'-') && p.get(i + 1).is_some_and(|&x| x != ']') {
            i += 1;
            hi = if p[i] == '\\' {
                i += 1;
                *p.get(i)?
            } else {
                p[i]
            };
            i += 1;
        }
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negated, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_match_is_gos() {
        let cases = [
            ("busybox", "busybox", true),
            ("busy*", "busybox", true),
            ("*", "team/app", false),
            ("*/*", "team/app", true),
            ("team/*", "team/app", true),
            ("localhost:5000/*", "localhost:5000/app", true),
            ("b?sybox", "busybox", true),
            ("[a-c]usybox", "busybox", true),
            ("[^b]usybox", "busybox", false),
            ("*:1", "app:1", true),
            ("*box", "busybox", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("a\\*", "a*", true),
            ("a\\*", "ab", false),
        ];
        for (p, n, want) in cases {
            assert_eq!(path_match(p, n).unwrap(), want, "{p} {n}");
        }
        assert!(path_match("[a-", "a").is_err());
        assert!(path_match("a\\", "a").is_err());
    }

    #[test]
    fn times_parse_with_fractions_and_offsets() {
        assert_eq!(parse_time("2023-11-14T22:13:20Z"), Some(1_700_000_000));
        assert_eq!(
            parse_time("2023-11-14T23:13:20.123456789+01:00"),
            Some(1_700_000_000)
        );
        assert_eq!(parse_time("yesterday"), None);
    }
}
