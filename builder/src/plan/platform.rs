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
        Platform::from_oci(oci_vocab::Platform::host())
    }

    /// Parse `os/arch[/variant]`, normalised as BuildKit (containerd) does: `x86_64` →
    /// `amd64`, `aarch64` → `arm64`, `arm64/v8` → `arm64`, `arm` → `arm/v7`. `None` when a
    /// component is empty or has other characters than `[A-Za-z0-9_.-]`.
    pub fn parse(s: &str) -> Option<Platform> {
        oci_vocab::Platform::parse(s).ok().map(Platform::from_oci)
    }

    /// `os`, `arch` and `variant` (as an image config or index holds them) in the
    /// words BuildKit uses.
    pub fn normalized(os: &str, arch: &str, variant: Option<&str>) -> Platform {
        Platform::from_oci(oci_vocab::Platform::new(os, arch, variant).normalized())
    }

    /// The same platform in `oci-vocab`'s type, for its matchers.
    pub fn oci(&self) -> oci_vocab::Platform {
        oci_vocab::Platform::new(&self.os, &self.arch, self.variant.as_deref())
    }

    fn from_oci(p: oci_vocab::Platform) -> Platform {
        Platform {
            os: p.os,
            arch: p.architecture,
            variant: p.variant,
        }
    }

    /// True when a program built for `other` runs here without emulation
    /// (containerd's `Only`: arm/v7 runs arm/v6, amd64 runs 386).
    pub fn runs(&self, other: &Platform) -> bool {
        oci_vocab::Only::new(&self.oci()).matches(&other.oci())
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
    fn a_host_runs_its_own_and_older_variants() {
        let v7 = Platform::parse("linux/arm/v7").unwrap();
        assert!(v7.runs(&Platform::parse("linux/arm/v6").unwrap()));
        assert!(!Platform::parse("linux/arm/v6").unwrap().runs(&v7));
        assert!(Platform::host().runs(&Platform::host()));
    }
}
