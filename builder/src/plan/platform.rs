//! `os/arch[/variant]` platforms and the predefined platform ARGs.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Platform {
    pub os: String,
    pub arch: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this process runs on, in OCI words (`amd64`, `arm64`...).
    pub fn host() -> Platform {
        let (os, arch, variant) = layer_cache::image::host_platform();
        Platform::normalized(os, arch, variant)
    }

    /// Parse `os/arch[/variant]`, normalised as BuildKit (containerd) does: `x86_64` →
    /// `amd64`, `aarch64` → `arm64`, `arm64/v8` → `arm64`, `arm` → `arm/v7`. `None` when a
    /// component is empty or has other characters than `[A-Za-z0-9_.-]`.
    pub fn parse(s: &str) -> Option<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        };
        if !parts.iter().all(|p| ok(p)) {
            return None;
        }
        let (os, arch, variant) = match parts.as_slice() {
            [os, arch] => (os, arch, None),
            [os, arch, v] => (os, arch, Some(v.to_ascii_lowercase())),
            _ => return None,
        };
        Some(Platform::normalized(
            &os.to_ascii_lowercase(),
            &arch.to_ascii_lowercase(),
            variant.as_deref(),
        ))
    }

    /// `os`, `arch` and `variant` (as an image config or index holds them) in the
    /// words BuildKit uses.
    pub fn normalized(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        let variant = variant.filter(|v| !v.is_empty());
        let (arch, variant) = match (arch, variant) {
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v.map(str::to_string)),
            ("i386" | "i686" | "x86" | "386", v) => ("386", v.map(str::to_string)),
            ("aarch64" | "arm64", Some("8" | "v8" | "v8.0") | None) => ("arm64", None),
            ("aarch64" | "arm64", Some(v)) => ("arm64", Some(v.to_string())),
            ("armhf", _) => ("arm", Some("v7".to_string())),
            ("armel", _) => ("arm", Some("v6".to_string())),
            ("arm", None | Some("7")) => ("arm", Some("v7".to_string())),
            ("arm", Some(v @ ("5" | "6" | "8"))) => ("arm", Some(format!("v{v}"))),
            (a, v) => (a, v.map(str::to_string)),
        };
        Platform {
            os: os.to_string(),
            arch: arch.to_string(),
            variant,
        }
    }

    /// True when an image made for `os/arch/variant` (from its config) is this platform.
    /// A config without a variant matches any variant of its architecture, as many
    /// images leave it out.
    pub fn matches_image(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        let have = Platform::normalized(os, arch, variant);
        let want = Platform::normalized(&self.os, &self.arch, self.variant.as_deref());
        let variant_given = variant.is_some_and(|v| !v.is_empty());
        (os.is_empty() || have.os == want.os)
            && have.arch == want.arch
            && (!variant_given || have.variant == want.variant)
    }

    /// `(prefix + PLATFORM, OS, ARCH, VARIANT)` as build-arg pairs.
    pub fn args(&self, prefix: &str) -> Vec<(String, String)> {
        vec![
            (format!("{prefix}PLATFORM"), self.to_string()),
            (format!("{prefix}OS"), self.os.clone()),
            (format!("{prefix}ARCH"), self.arch.clone()),
            (
                format!("{prefix}VARIANT"),
                self.variant.clone().unwrap_or_default(),
            ),
        ]
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Names of the ARGs every build defines without declaring them.
pub const PLATFORM_ARGS: [&str; 8] = [
    "TARGETPLATFORM",
    "TARGETOS",
    "TARGETARCH",
    "TARGETVARIANT",
    "BUILDPLATFORM",
    "BUILDOS",
    "BUILDARCH",
    "BUILDVARIANT",
];

/// Proxy build-args usable without an ARG (and never reported as unused).
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

#[cfg(test)]
mod tests {
    use super::Platform;

    #[test]
    fn aliases_are_normalised_as_buildkit_does() {
        let p = |s| Platform::parse(s).unwrap().to_string();
        assert_eq!(p("linux/x86_64"), "linux/amd64");
        assert_eq!(p("Linux/AArch64"), "linux/arm64");
        assert_eq!(p("linux/arm64/v8"), "linux/arm64");
        assert_eq!(p("linux/arm"), "linux/arm/v7");
        assert_eq!(p("linux/armhf"), "linux/arm/v7");
        assert_eq!(p("linux/arm/6"), "linux/arm/v6");
        assert!(Platform::parse("linux").is_none());
        assert!(Platform::parse("linux/amd64,linux/arm64").is_none());
    }

    #[test]
    fn image_platforms_match_with_or_without_a_variant() {
        let arm64 = Platform::parse("linux/arm64").unwrap();
        assert!(arm64.matches_image("linux", "arm64", Some("v8")));
        assert!(arm64.matches_image("linux", "aarch64", None));
        assert!(!arm64.matches_image("linux", "amd64", None));
        let v6 = Platform::parse("linux/arm/v6").unwrap();
        assert!(!v6.matches_image("linux", "arm", Some("v7")));
        assert!(v6.matches_image("linux", "arm", None));
    }
}
