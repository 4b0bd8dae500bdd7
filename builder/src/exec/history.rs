//! History `created_by` text as BuildKit writes it. BuildKit formats most entries
//! with Go's `fmt` verbs, so these mirror `%q` and `%v` of a string slice, `%+v` of
//! the healthcheck settings and `time.Duration`'s text.

use layer_cache::image::HealthConfig;

use crate::dockerfile::ast::go_quote;

/// Go's `%q` of a `[]string`: `["a" "b c"]`.
pub(super) fn quoted_list(items: &[String]) -> String {
    let parts: Vec<String> = items.iter().map(|s| go_quote(s)).collect();
    format!("[{}]", parts.join(" "))
}

/// Go's `%v` of a `[]string`: `[a b c]`.
pub(super) fn plain_list(items: &[String]) -> String {
    format!("[{}]", items.join(" "))
}

/// Go's `time.Duration.String()` of `ns` nanoseconds: `0s`, `500ms`, `1m30s`.
fn go_duration(ns: i64) -> String {
    if ns == 0 {
        return "0s".into();
    }
    let sign = if ns < 0 { "-" } else { "" };
    let u = ns.unsigned_abs();
    // The integer part and up to `digits` fraction digits, trailing zeros dropped.
    let fixed = |v: u64, div: u64, digits: usize| {
        let (int, frac) = (v / div, v % div);
        if frac == 0 {
            int.to_string()
        } else {
            let f = format!("{frac:0digits$}");
            format!("{int}.{}", f.trim_end_matches('0'))
        }
    };
    let body = if u < 1_000 {
        format!("{u}ns")
    } else if u < 1_000_000 {
        format!("{}µs", fixed(u, 1_000, 3))
    } else if u < 1_000_000_000 {
        format!("{}ms", fixed(u, 1_000_000, 6))
    } else {
        let secs = u / 1_000_000_000;
        let s = fixed(u % 60_000_000_000, 1_000_000_000, 9);
        let (h, m) = (secs / 3600, (secs / 60) % 60);
        if h > 0 {
            format!("{h}h{m}m{s}s")
        } else if m > 0 {
            format!("{m}m{s}s")
        } else {
            format!("{s}s")
        }
    };
    format!("{sign}{body}")
}

/// `HEALTHCHECK` as BuildKit records it: Go's `%+v` of the settings.
pub(super) fn healthcheck(h: &HealthConfig) -> String {
    let d = |v: Option<i64>| go_duration(v.unwrap_or(0));
    format!(
        "HEALTHCHECK {{Test:{} Interval:{} Timeout:{} StartPeriod:{} StartInterval:{} Retries:{}}}",
        plain_list(h.test.as_deref().unwrap_or_default()),
        d(h.interval),
        d(h.timeout),
        d(h.start_period),
        d(h.start_interval),
        h.retries.unwrap_or(0)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_formatted_as_go_does() {
        let v = vec!["/bin/sh".to_string(), "-c".into(), "echo \"a\"\tb".into()];
        assert_eq!(quoted_list(&v), r#"["/bin/sh" "-c" "echo \"a\"\tb"]"#);
        assert_eq!(quoted_list(&[]), "[]");
        assert_eq!(quoted_list(&["é\u{1}".into()]), r#"["é\x01"]"#);
        assert_eq!(plain_list(&["/data".into(), "/x".into()]), "[/data /x]");
    }

    #[test]
    fn durations_are_formatted_as_go_does() {
        for (ns, want) in [
            (0, "0s"),
            (30_000_000_000, "30s"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (1_500_000, "1.5ms"),
            (2_000, "2µs"),
            (7, "7ns"),
            (61_250_000_000, "1m1.25s"),
        ] {
            assert_eq!(go_duration(ns), want, "{ns}");
        }
    }

    #[test]
    fn healthcheck_is_recorded_as_go_prints_the_settings() {
        let h = HealthConfig {
            test: Some(vec!["CMD-SHELL".into(), "curl -f http://localhost/".into()]),
            interval: Some(30_000_000_000),
            retries: Some(3),
            ..HealthConfig::default()
        };
        assert_eq!(
            healthcheck(&h),
            "HEALTHCHECK {Test:[CMD-SHELL curl -f http://localhost/] Interval:30s Timeout:0s \
             StartPeriod:0s StartInterval:0s Retries:3}"
        );
    }
}
