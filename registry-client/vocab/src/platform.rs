//! Platforms (`os/arch[/variant]`), normalised and matched with the rules of
//! containerd's `platforms` package: `Normalize` (os lowercased; `x86_64` → `amd64`,
//! `aarch64` → `arm64`, `armhf` → `arm/v7`, `armel` → `arm/v6`, `i386` → `386`;
//! `arm64/v8` → `arm64`, `arm` → `arm/v7`, `amd64/v1` → `amd64`), `Only` (a platform
//! and those it runs: arm/v7 runs v6 and v5, arm64 runs arm/v8 down to v5, amd64/v3
//! runs v2, v1 and 386) and `Ordered`'s preference when picking from an index.
//!
//! Beyond containerd: `i686` and `x86` are also `386` (as the store always read them),
//! and a platform must be written as `os/arch[/variant]` (containerd also takes a bare
//! os or arch and fills in the host's).

use std::fmt;

/// An image's platform, with OCI's field names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

/// A platform string that is not `os/arch[/variant]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("platform {input:?}: expected os/arch[/variant]")]
pub struct PlatformError {
    pub input: String,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]` (each of `[A-Za-z0-9_.-]`) and normalises it.
    pub fn parse(s: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| ok(p)) {
            return Err(PlatformError {
                input: s.to_string(),
            });
        }
        Ok(Platform::new(parts[0], parts[1], parts.get(2).copied()).normalized())
    }

    /// The platform this process runs on, normalised.
    pub fn host() -> Platform {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            "loongarch64" => "loong64",
            other => other,
        };
        Platform::new("linux", arch, None).normalized()
    }

    /// containerd's `Normalize`.
    pub fn normalized(&self) -> Platform {
        let os = match self.os.to_ascii_lowercase().as_str() {
            // Only Linux images are built and run here, as containerd takes the host's.
            "" => "linux".to_string(),
            "macos" => "darwin".to_string(),
            other => other.to_string(),
        };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().unwrap_or("").to_ascii_lowercase();
        let (arch, variant) = match arch.as_str() {
            "i386" | "i686" | "x86" | "386" => ("386".to_string(), String::new()),
            "x86_64" | "x86-64" | "amd64" => {
                let v = if variant == "v1" {
                    String::new()
                } else {
                    variant
                };
                ("amd64".to_string(), v)
            }
            "aarch64" | "arm64" => {
                let v = if matches!(variant.as_str(), "8" | "v8") {
                    String::new()
                } else {
                    variant
                };
                ("arm64".to_string(), v)
            }
            "armhf" => ("arm".to_string(), "v7".to_string()),
            "armel" => ("arm".to_string(), "v6".to_string()),
            "arm" => {
                let v = match variant.as_str() {
                    "" | "7" => "v7".to_string(),
                    "5" | "6" | "8" => format!("v{variant}"),
                    _ => variant,
                };
                ("arm".to_string(), v)
            }
            _ => (arch, variant),
        };
        Platform {
            os,
            architecture: arch,
            variant: Some(variant).filter(|v| !v.is_empty()),
        }
    }

    /// The same platform once both are normalised (containerd's `OnlyStrict`).
    pub fn is(&self, other: &Platform) -> bool {
        self.normalized() == other.normalized()
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

impl From<&oci_spec::image::Platform> for Platform {
    fn from(p: &oci_spec::image::Platform) -> Platform {
        Platform::new(
            &p.os().to_string(),
            &p.architecture().to_string(),
            p.variant().as_deref(),
        )
    }
}

/// containerd's `Only`: a platform and the platforms it can run, best first.
#[derive(Debug, Clone)]
pub struct Only {
    vector: Vec<Platform>,
}

impl Only {
    pub fn new(want: &Platform) -> Only {
        Only {
            vector: vector(want.normalized())
                .iter()
                .map(Platform::normalized)
                .collect(),
        }
    }

    /// Whether an image for `p` runs on the wanted platform.
    pub fn matches(&self, p: &Platform) -> bool {
        self.rank(p).is_some()
    }

    /// How good a match `p` is, `0` best (`Ordered`'s order); `None` when it is none.
    pub fn rank(&self, p: &Platform) -> Option<usize> {
        let p = p.normalized();
        self.vector.iter().position(|m| *m == p)
    }

    /// The best of `items` (the first of equals), as containerd picks an index entry.
    pub fn select<'a, T>(
        &self,
        items: &'a [T],
        platform_of: impl Fn(&T) -> Option<Platform>,
    ) -> Option<&'a T> {
        items
            .iter()
            .filter_map(|i| Some((self.rank(&platform_of(i)?)?, i)))
            .min_by_key(|(rank, _)| *rank)
            .map(|(_, i)| i)
    }
}

fn variant_number(v: &str) -> Option<u32> {
    v.strip_prefix('v').unwrap_or(v).parse().ok()
}

/// containerd's `platformVector`.
fn vector(p: Platform) -> Vec<Platform> {
    let with = |arch: &str, variant: Option<String>| Platform {
        os: p.os.clone(),
        architecture: arch.to_string(),
        variant,
    };
    let variant = p.variant.clone().unwrap_or_default();
    let mut out = vec![p.clone()];
    match p.architecture.as_str() {
        "amd64" => {
            if let Some(n) = variant_number(&variant).filter(|n| *n > 1) {
                out.extend((1..n).rev().map(|n| with("amd64", Some(format!("v{n}")))));
            }
            out.push(with("386", None));
        }
        "arm" => {
            if let Some(n) = variant_number(&variant).filter(|n| *n > 5) {
                out.extend((5..n).rev().map(|n| with("arm", Some(format!("v{n}")))));
            }
        }
        "arm64" => {
            let mut variant = if variant.is_empty() {
                "v8".to_string()
            } else {
                variant
            };
            let (major, minor) = match variant.split_once('.') {
                Some((major, minor)) => (major, Some(minor)),
                None => (variant.as_str(), None),
            };
            if let Some(mut major) = variant_number(major).filter(|m| *m >= 8) {
                // containerd reads a minor only in the four-character `vX.Y` form.
                let mut minor: u32 = match minor {
                    Some(m) if variant.len() == 4 => m.parse().unwrap_or(0),
                    _ => 0,
                };
                let name = |major: u32, minor: u32| match minor {
                    0 => format!("v{major}"),
                    m => format!("v{major}.{m}"),
                };
                if major == 9 {
                    out.extend((0..minor).rev().map(|m| with("arm64", Some(name(9, m)))));
                    // v9.0 forked from v8.5: v9.x runs v8.(x+5).
                    minor += 5;
                    major = 8;
                    out.push(with("arm64", Some(format!("v8.{minor}"))));
                }
                out.extend(
                    (0..minor)
                        .rev()
                        .map(|m| with("arm64", Some(name(major, m)))),
                );
            }
            if variant.starts_with("v8.") || variant.starts_with("v9.") {
                variant = "v8".to_string();
            }
            out.extend(vector(with("arm", Some(variant))));
        }
        _ => {}
    }
    out
}

/// Whether a stored image whose config names `image` serves a build or run for
/// `want`, as Docker decides (moby's `OnlyPlatformWithFallback`): containerd's
/// [`Only`], and a config without a variant stands for any variant of its
/// architecture (many images leave it out). A config naming no architecture is taken
/// as it is.
pub fn image_is_for(image: &Platform, want: &Platform) -> bool {
    if image.architecture.is_empty() || Only::new(want).matches(image) {
        return true;
    }
    if image.variant.as_deref().is_some_and(|v| !v.is_empty()) {
        return false;
    }
    let (have, want) = (image.normalized(), want.normalized());
    have.os == want.os && have.architecture == want.architecture
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap_or_else(|e| panic!("{e}"))
    }

    /// containerd's platforms_test.go `TestParseSelector` normalisations.
    #[test]
    fn normalises_as_containerd() {
        for (input, want) in [
            ("linux/x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("Linux/AArch64", "linux/arm64"),
            ("linux/arm64/v8", "linux/arm64"),
            ("linux/aarch64/8", "linux/arm64"),
            ("linux/arm64/v8.2", "linux/arm64/v8.2"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/6", "linux/arm/v6"),
            ("linux/arm/v5", "linux/arm/v5"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("macOS/arm64", "darwin/arm64"),
            ("windows/amd64", "windows/amd64"),
        ] {
            assert_eq!(p(input).to_string(), want, "{input}");
        }
        for bad in [
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v1/x",
            "linux/amd64,linux/arm64",
        ] {
            let err = Platform::parse(bad).unwrap_err().to_string();
            assert!(err.contains("expected os/arch[/variant]"), "{err}");
        }
        assert_eq!(Platform::host(), Platform::host().normalized());
        assert_eq!(Platform::host().os, "linux");
    }

    /// containerd's compare_test.go `TestOnly` cases.
    #[test]
    fn only_matches_what_the_platform_runs() {
        let cases: &[(&str, &[&str], &[&str])] = &[
            (
                "linux/amd64",
                &["linux/amd64", "linux/386", "linux/amd64/v1"],
                &["linux/amd64/v2", "linux/arm64", "windows/amd64"],
            ),
            (
                "linux/amd64/v3",
                &[
                    "linux/amd64/v3",
                    "linux/amd64/v2",
                    "linux/amd64",
                    "linux/386",
                ],
                &["linux/amd64/v4"],
            ),
            ("linux/386", &["linux/386"], &["linux/amd64"]),
            (
                "linux/arm/v7",
                &["linux/arm", "linux/arm/v6", "linux/arm/v5", "linux/armel"],
                &["linux/arm/v8", "linux/arm64"],
            ),
            (
                "linux/arm/v6",
                &["linux/arm/v6", "linux/arm/v5"],
                &["linux/arm/v7", "linux/arm"],
            ),
            (
                "linux/arm64",
                &[
                    "linux/arm64",
                    "linux/arm64/v8",
                    "linux/aarch64",
                    "linux/arm/v8",
                    "linux/arm/v7",
                    "linux/arm/v5",
                ],
                &["linux/arm64/v8.1", "linux/arm64/v9", "linux/amd64"],
            ),
            (
                "linux/arm64/v8.2",
                &[
                    "linux/arm64/v8.2",
                    "linux/arm64/v8.1",
                    "linux/arm64",
                    "linux/arm/v8",
                    "linux/arm/v7",
                ],
                &["linux/arm64/v8.3", "linux/arm64/v9"],
            ),
            (
                "linux/arm64/v9.1",
                &[
                    "linux/arm64/v9.1",
                    "linux/arm64/v9",
                    "linux/arm64/v8.6",
                    "linux/arm64/v8.1",
                    "linux/arm64",
                    "linux/arm/v7",
                ],
                &["linux/arm64/v9.2", "linux/arm64/v8.7"],
            ),
        ];
        for (want, yes, no) in cases {
            let only = Only::new(&p(want));
            for y in *yes {
                assert!(only.matches(&p(y)), "{want} should run {y}");
            }
            for n in *no {
                assert!(!only.matches(&p(n)), "{want} should not run {n}");
            }
        }
    }

    /// The registry client read `arm64` as `arm64/v8` and the builder as `arm64`;
    /// both forms are one platform.
    #[test]
    fn arm64_and_arm64_v8_are_one_platform() {
        assert!(p("linux/arm64").is(&p("linux/arm64/v8")));
        assert!(Platform::new("linux", "aarch64", None).is(&Platform::new(
            "linux",
            "arm64",
            Some("v8")
        )));
        assert_eq!(p("linux/arm64/v8"), p("linux/arm64"));
        assert!(!p("linux/arm/v6").is(&p("linux/arm/v7")));
    }

    #[test]
    fn select_prefers_the_exact_platform_then_the_compatible_ones() {
        let index = [
            Platform::new("unknown", "unknown", None),
            Platform::new("linux", "arm", Some("v6")),
            Platform::new("linux", "arm", Some("v7")),
            Platform::new("linux", "amd64", None),
            Platform::new("linux", "arm64", Some("v8")),
        ];
        let pick = |want: &str| {
            Only::new(&p(want))
                .select(&index, |p| Some(p.clone()))
                .map(ToString::to_string)
        };
        assert_eq!(pick("linux/arm/v7").as_deref(), Some("linux/arm/v7"));
        assert_eq!(pick("linux/arm/v6").as_deref(), Some("linux/arm/v6"));
        assert_eq!(pick("linux/arm64").as_deref(), Some("linux/arm64/v8"));
        assert_eq!(pick("linux/x86_64").as_deref(), Some("linux/amd64"));
        assert_eq!(pick("linux/s390x"), None);
        let only_v6 = [Platform::new("linux", "arm", Some("v6"))];
        assert!(Only::new(&p("linux/arm/v7"))
            .select(&only_v6, |p| Some(p.clone()))
            .is_some());
    }

    /// The builder took a config without a variant as any variant; the base puller
    /// took `arm` without a variant as `arm/v7` only. Docker's rule (Only, then the
    /// variant-less fallback) decides both.
    #[test]
    fn a_stored_image_is_for_the_platform_as_docker_decides() {
        let is_for = |os: &str, arch: &str, variant: Option<&str>, want: &str| {
            image_is_for(&Platform::new(os, arch, variant), &p(want))
        };
        assert!(is_for("linux", "arm64", Some("v8"), "linux/arm64"));
        assert!(is_for("linux", "aarch64", None, "linux/arm64"));
        assert!(is_for("linux", "arm", None, "linux/arm/v6"));
        assert!(!is_for("linux", "arm", Some("v7"), "linux/arm/v6"));
        assert!(is_for("linux", "arm", Some("v6"), "linux/arm/v7"));
        assert!(!is_for("linux", "amd64", None, "linux/arm64"));
        assert!(!is_for("windows", "amd64", None, "linux/amd64"));
        assert!(is_for("", "", None, "linux/s390x"));
        assert!(is_for("", "amd64", None, "linux/amd64"));
    }
}
