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
        let (os, arch, _) = layer_cache::image::host_platform();
        Platform {
            os: os.to_string(),
            arch: arch.to_string(),
            variant: None,
        }
    }

    /// Parse `os/arch[/variant]`; `None` when a component is empty or has other characters
    /// than `[A-Za-z0-9_.-]`.
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
        match parts.as_slice() {
            [os, arch] => Some(Platform {
                os: os.to_ascii_lowercase(),
                arch: arch.to_ascii_lowercase(),
                variant: None,
            }),
            [os, arch, v] => Some(Platform {
                os: os.to_ascii_lowercase(),
                arch: arch.to_ascii_lowercase(),
                variant: Some(v.to_ascii_lowercase()),
            }),
            _ => None,
        }
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
