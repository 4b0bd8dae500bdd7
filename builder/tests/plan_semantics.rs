//! ARG scoping, expansion and stage resolution of the planner, with exact values.

use builder::dockerfile::parse;
use builder::plan::{plan, Base, NoBaseInfo, PlanOptions, Platform, Source, StepGraph, StepKind};

fn run(text: &str, args: &[(&str, &str)], target: Option<&str>) -> StepGraph {
    let df = parse(text, "Dockerfile").unwrap();
    let opts = PlanOptions {
        build_args: args
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        target: target.map(str::to_string),
        target_platform: Platform::parse("linux/arm64/v8").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        all_stages: false,
        ..PlanOptions::default()
    };
    plan(&df, &opts, &NoBaseInfo).unwrap()
}

fn labels(g: &StepGraph, stage: usize) -> Vec<(String, String)> {
    g.stage(stage)
        .unwrap()
        .steps
        .iter()
        .filter_map(|s| match &s.kind {
            StepKind::Label { pairs } => Some(pairs.clone()),
            _ => None,
        })
        .flatten()
        .collect()
}

fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
    v.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn global_args_are_seen_by_from_and_only_redeclared_in_stages() {
    let g = run(
        "ARG TAG=3.20\nARG OTHER=x\nFROM alpine:$TAG\nARG TAG\nLABEL tag=$TAG other=[$OTHER]\n",
        &[],
        None,
    );
    assert_eq!(
        g.stages[0].base,
        Base::Image {
            reference: "alpine:3.20".into()
        }
    );
    assert_eq!(labels(&g, 0), pairs(&[("tag", "3.20"), ("other", "[]")]));
}

#[test]
fn build_args_override_defaults_and_env_wins_over_arg() {
    let g = run(
        "ARG TAG=3.20\nFROM alpine:$TAG\nARG TAG\nARG A=default\nARG B=b\nENV B=fromenv\nLABEL tag=$TAG a=$A b=$B\n",
        &[("TAG", "edge"), ("A", "given")],
        None,
    );
    assert_eq!(
        g.stages[0].base,
        Base::Image {
            reference: "alpine:edge".into()
        }
    );
    assert_eq!(
        labels(&g, 0),
        pairs(&[("tag", "edge"), ("a", "given"), ("b", "fromenv")])
    );
    assert!(g.warnings.is_empty());
}

#[test]
fn platform_args_are_predefined() {
    let g = run(
        "FROM --platform=$BUILDPLATFORM alpine\nARG TARGETPLATFORM\nARG TARGETVARIANT\nARG BUILDARCH\nLABEL t=$TARGETPLATFORM v=$TARGETVARIANT b=$BUILDARCH os=$TARGETOS\n",
        &[],
        None,
    );
    assert_eq!(g.stages[0].platform, Platform::parse("linux/amd64").ok());
    assert_eq!(
        labels(&g, 0),
        pairs(&[
            // arm64/v8 is normalised to arm64, as BuildKit does.
            ("t", "linux/arm64"),
            ("v", ""),
            ("b", "amd64"),
            ("os", "")
        ])
    );
}

#[test]
fn proxy_args_reach_run_without_declaration() {
    let g = run(
        "FROM alpine\nARG X=1\nRUN env\n",
        &[("https_proxy", "http://proxy:3128")],
        None,
    );
    match &g.stages[0].steps[1].kind {
        StepKind::Run { build_args, .. } => {
            assert_eq!(
                *build_args,
                pairs(&[("X", "1"), ("https_proxy", "http://proxy:3128")])
            )
        }
        other => panic!("{other:?}"),
    }
    assert!(g.warnings.is_empty());
}

#[test]
fn stages_by_name_and_index_and_mount_sources() {
    let g = run(
        "FROM alpine AS a\nRUN a\nFROM alpine AS b\nRUN b\nFROM scratch\nCOPY --from=0 /x /x\nRUN --mount=type=bind,from=b,target=/b true\nCOPY --from=busybox:1.36 /bin/sh /sh\n",
        &[],
        None,
    );
    let last = g.stages.last().unwrap();
    assert_eq!(last.base, Base::Scratch);
    assert_eq!(last.depends_on, [0, 1]);
    match &last.steps[0].kind {
        StepKind::Copy(c) => assert_eq!(c.from, Source::Stage { index: 0 }),
        other => panic!("{other:?}"),
    }
    match &last.steps[1].kind {
        StepKind::Run { mounts, .. } => {
            assert_eq!(mounts[0].from, Some(Source::Stage { index: 1 }))
        }
        other => panic!("{other:?}"),
    }
    match &last.steps[2].kind {
        StepKind::Copy(c) => assert_eq!(
            c.from,
            Source::Image {
                reference: "busybox:1.36".into()
            }
        ),
        other => panic!("{other:?}"),
    }
    let order: Vec<usize> = g.stages.iter().map(|s| s.index).collect();
    assert_eq!(order, [0, 1, 2]);
}

#[test]
fn target_prunes_and_onbuild_of_a_stage_runs_in_its_children() {
    let text = "FROM alpine AS base\nONBUILD RUN echo child\nFROM base AS child\nRUN two\nFROM alpine AS other\n";
    let g = run(text, &[], Some("CHILD"));
    let names: Vec<_> = g.stages.iter().map(|s| s.name.clone().unwrap()).collect();
    assert_eq!(names, ["base", "child"]);
    let child = g.stage(1).unwrap();
    assert!(child.steps[0].onbuild);
    assert_eq!(
        child.steps[0].kind,
        StepKind::Run {
            command: builder::dockerfile::Command::Shell("echo child".into()),
            files: vec![],
            mounts: vec![],
            network: None,
            security: None,
            devices: vec![],
            build_args: vec![],
            history_args: vec![],
        }
    );
}

#[test]
fn expansion_applies_where_buildkit_applies_it() {
    let g = run(
        "FROM alpine\nENV D=/data P=80 U=app\nWORKDIR $D\nUSER ${U}:${U}\nEXPOSE $P ${P}/udp\nVOLUME [\"$D/v\"]\nSTOPSIGNAL SIG${U:+TERM}\nCOPY ${D}/a* $D/\nRUN echo $D\nCMD echo $D\n",
        &[],
        None,
    );
    let kinds: Vec<&StepKind> = g.stages[0].steps.iter().map(|s| &s.kind).collect();
    assert_eq!(
        *kinds[1],
        StepKind::Workdir {
            path: "/data".into()
        }
    );
    assert_eq!(
        *kinds[2],
        StepKind::User {
            user: "app:app".into()
        }
    );
    assert_eq!(
        *kinds[3],
        StepKind::Expose {
            ports: vec!["80/tcp".into(), "80/udp".into()]
        }
    );
    assert_eq!(
        *kinds[4],
        StepKind::Volume {
            paths: vec!["/data/v".into()]
        }
    );
    assert_eq!(
        *kinds[5],
        StepKind::StopSignal {
            signal: "SIGTERM".into()
        }
    );
    match kinds[6] {
        StepKind::Copy(c) => {
            assert_eq!(c.sources, ["/data/a*"]);
            assert_eq!(c.dest, "/data/");
        }
        other => panic!("{other:?}"),
    }
    // RUN and CMD shell forms are left to the shell.
    match kinds[7] {
        StepKind::Run { command, .. } => {
            assert_eq!(
                *command,
                builder::dockerfile::Command::Shell("echo $D".into())
            )
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn named_contexts_resolve_before_stages_and_images() {
    use builder::plan::NamedContext;
    let text = "FROM busybox AS src\nRUN make\n\
                FROM alpine:latest\n\
                COPY --from=src /a /a\n\
                COPY --from=dir /b /b\n\
                RUN --mount=from=docker.io/library/tools,target=/t true\n";
    let df = parse(text, "Dockerfile").unwrap();
    let mut opts = PlanOptions::default();
    for (name, nc) in [
        ("src", NamedContext::Local),
        ("dir", NamedContext::Local),
        (
            "alpine",
            NamedContext::Image {
                reference: "busybox:1".into(),
            },
        ),
        (
            "tools",
            NamedContext::Image {
                reference: "busybox:2".into(),
            },
        ),
    ] {
        opts.named_contexts.insert(name.to_string(), nc);
    }
    let g = plan(&df, &opts, &NoBaseInfo).unwrap();
    // The stage `src` is replaced by the context: not needed, not built.
    assert_eq!(g.stages.len(), 1);
    let last = g.stage(1).unwrap();
    assert_eq!(
        last.base,
        Base::Image {
            reference: "busybox:1".into()
        }
    );
    let froms: Vec<Source> = last
        .steps
        .iter()
        .flat_map(|s| match &s.kind {
            StepKind::Copy(c) => vec![c.from.clone()],
            StepKind::Run { mounts, .. } => mounts.iter().filter_map(|m| m.from.clone()).collect(),
            _ => Vec::new(),
        })
        .collect();
    assert_eq!(
        froms,
        vec![
            Source::NamedContext { name: "src".into() },
            Source::NamedContext { name: "dir".into() },
            Source::Image {
                reference: "busybox:2".into()
            },
        ]
    );
    // A directory is no base.
    let df = parse("FROM dir\n", "Dockerfile").unwrap();
    let err = plan(&df, &opts, &NoBaseInfo).unwrap_err();
    assert!(err.to_string().contains("is a local directory"), "{err}");
}

/// `parse --plan` shows a stage's platforms as `{"os", "arch", "variant"}`, a missing
/// variant as null, whatever the platform type's own serde form.
#[test]
fn plan_json_shows_platforms_as_os_arch_variant() {
    let g = run(
        "FROM --platform=linux/armhf alpine AS a\nFROM alpine\n",
        &[],
        Some("a"),
    );
    let stage = serde_json::to_value(&g.stages[0]).unwrap();
    assert_eq!(
        stage["platform"],
        serde_json::json!({"os": "linux", "arch": "arm", "variant": "v7"})
    );
    assert_eq!(stage["stage_platform"], stage["platform"]);
    let g = run("FROM alpine\n", &[], None);
    let stage = serde_json::to_value(&g.stages[0]).unwrap();
    assert_eq!(stage["platform"], serde_json::Value::Null);
    assert_eq!(
        stage["stage_platform"],
        serde_json::json!({"os": "linux", "arch": "arm64", "variant": null})
    );
}
