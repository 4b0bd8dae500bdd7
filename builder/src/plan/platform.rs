//! The predefined platform ARGs over the one platform type ([`oci_vocab::Platform`],
//! parsed and normalised with containerd's rules), and the plan's JSON form of it.

pub use oci_vocab::Platform;

/// `(prefix + PLATFORM, OS, ARCH, VARIANT)` as build-arg pairs, as BuildKit's
/// `platformArgs` sets them from the normalised platform: `linux/arm64/v8` gives
/// ARCH `arm64` and an empty VARIANT, `linux/arm` gives VARIANT `v7`.
pub fn platform_args(platform: &Platform, prefix: &str) -> Vec<(String, String)> {
    let p = platform.normalized();
    vec![
        (format!("{prefix}PLATFORM"), p.to_string()),
        (format!("{prefix}OS"), p.os),
        (format!("{prefix}ARCH"), p.architecture),
        (format!("{prefix}VARIANT"), p.variant.unwrap_or_default()),
    ]
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

/// A stage's platform in `parse --plan` JSON: `{"os", "arch", "variant"}` with a
/// null variant, the shape that output has always had.
pub(super) mod plan_json {
    use super::Platform;
    use serde::{Serialize, Serializer};

    #[derive(Serialize)]
    struct Shown<'a> {
        os: &'a str,
        arch: &'a str,
        variant: Option<&'a str>,
    }

    fn shown(p: &Platform) -> Shown<'_> {
        Shown {
            os: &p.os,
            arch: &p.architecture,
            variant: p.variant.as_deref(),
        }
    }

    pub fn one<S: Serializer>(p: &Platform, s: S) -> Result<S::Ok, S::Error> {
        shown(p).serialize(s)
    }

    pub fn optional<S: Serializer>(p: &Option<Platform>, s: S) -> Result<S::Ok, S::Error> {
        p.as_ref().map(shown).serialize(s)
    }
}

#[cfg(test)]
mod tests {
    use super::{platform_args, Platform};

    fn args(s: &str, prefix: &str) -> Vec<(String, String)> {
        platform_args(
            &Platform::parse(s).unwrap_or_else(|e| panic!("{e}")),
            prefix,
        )
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// BuildKit sets TARGET*/BUILD* from the containerd-normalised platform:
    /// no variant for amd64 or arm64 (`v8` is dropped), `v7` for a bare `arm`.
    #[test]
    fn platform_args_are_buildkits_from_the_normalised_platform() {
        assert_eq!(
            args("linux/amd64", "TARGET"),
            pairs(&[
                ("TARGETPLATFORM", "linux/amd64"),
                ("TARGETOS", "linux"),
                ("TARGETARCH", "amd64"),
                ("TARGETVARIANT", ""),
            ])
        );
        let arm64 = pairs(&[
            ("BUILDPLATFORM", "linux/arm64"),
            ("BUILDOS", "linux"),
            ("BUILDARCH", "arm64"),
            ("BUILDVARIANT", ""),
        ]);
        assert_eq!(args("linux/arm64/v8", "BUILD"), arm64);
        assert_eq!(args("linux/aarch64", "BUILD"), arm64);
        // A platform made without parsing is normalised all the same.
        let raw = Platform::new("Linux", "aarch64", Some("8"));
        assert_eq!(platform_args(&raw, "BUILD"), arm64);
        assert_eq!(
            args("linux/arm", "TARGET"),
            pairs(&[
                ("TARGETPLATFORM", "linux/arm/v7"),
                ("TARGETOS", "linux"),
                ("TARGETARCH", "arm"),
                ("TARGETVARIANT", "v7"),
            ])
        );
        assert_eq!(args("linux/arm64/v8.2", "TARGET")[3].1, "v8.2");
    }
}
