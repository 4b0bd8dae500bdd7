//! Holds the dependency direction between workspace crates (ARCHITECTURE.md).

use std::collections::BTreeMap;
use std::process::Command;

#[test]
fn crate_dependencies_point_the_right_way() {
    let out = Command::new(env!("CARGO"))
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo metadata");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let mut deps: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for p in meta["packages"].as_array().expect("packages") {
        let name = p["name"].as_str().expect("name").to_string();
        let list = p["dependencies"]
            .as_array()
            .expect("deps")
            .iter()
            .map(|d| {
                (
                    d["name"].as_str().expect("dep name").to_string(),
                    d["kind"].as_str().map(str::to_string),
                )
            })
            .collect();
        deps.insert(name, list);
    }
    let normal = |krate: &str| -> Vec<String> {
        deps[krate]
            .iter()
            .filter(|(_, kind)| kind.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    };
    for lib in [
        "oci-vocab",
        "layer-cache",
        "registry-client",
        "builder",
        "mybuild-ops",
    ] {
        let d = normal(lib);
        for banned in [
            "mybuild",
            "clap",
            "indicatif",
            "anyhow",
            "miette",
            "testdata",
        ] {
            assert!(
                !d.contains(&banned.to_string()),
                "{lib} must not depend on {banned}"
            );
        }
    }
    // The shared vocabulary depends on no crate of ours, so every library can use it.
    let ours: Vec<String> = deps.keys().cloned().collect();
    // Fixtures too, so any crate's tests can use them without a second copy of it.
    for leaf in ["oci-vocab", "testdata"] {
        for (dep, _) in &deps[leaf] {
            assert!(!ours.contains(dep), "{leaf} must not depend on {dep}");
        }
    }
    for lib in ["layer-cache", "registry-client"] {
        assert!(
            normal(lib).contains(&"oci-vocab".to_string()),
            "{lib} takes its digests, references, platforms and media types from oci-vocab"
        );
    }
    assert!(!normal("layer-cache").contains(&"registry-client".to_string()));
    assert!(!normal("registry-client").contains(&"layer-cache".to_string()));
    assert!(!normal("builder").contains(&"registry-client".to_string()));
    assert!(!normal("mybuild").contains(&"testdata".to_string()));
    // The operations sit between the binary and every library: they may use all of
    // them, and only the binary uses them.
    for dep in normal("mybuild-ops") {
        assert!(
            ["layer-cache", "registry-client", "builder", "oci-vocab"].contains(&dep.as_str())
                || !ours.contains(&dep),
            "mybuild-ops must not depend on {dep}"
        );
    }
    for (krate, list) in &deps {
        if krate != "mybuild" {
            assert!(
                !list.iter().any(|(d, _)| d == "mybuild-ops"),
                "only the binary may depend on mybuild-ops, not {krate}"
            );
        }
    }
    assert!(normal("mybuild").contains(&"mybuild-ops".to_string()));
}
