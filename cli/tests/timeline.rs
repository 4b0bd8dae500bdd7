//! `build --timeline`: the SVG (or HTML) picture of a build's steps.

mod common;

use common::*;

/// The step bars of a timeline: each `rect` whose class starts with `step`,
/// as (class, title).
fn step_bars(svg: &str) -> Vec<(String, String)> {
    let doc = roxmltree::Document::parse(svg).unwrap_or_else(|e| panic!("{e}: {svg}"));
    doc.descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter_map(|n| {
            let class = n.attribute("class")?;
            class.starts_with("step ").then(|| {
                let title = n
                    .children()
                    .find(|c| c.has_tag_name("title"))
                    .and_then(|t| t.text())
                    .unwrap_or_default();
                (class.to_string(), title.to_string())
            })
        })
        .collect()
}

fn lanes(svg: &str) -> Vec<String> {
    let doc = roxmltree::Document::parse(svg).expect("svg");
    doc.descendants()
        .filter(|n| n.attribute("class") == Some("lane"))
        .filter_map(|n| n.text().map(str::to_string))
        .collect()
}

#[test]
fn a_build_timeline_has_one_bar_per_step_in_its_stages_lane() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(
        tmp.path(),
        "FROM busybox AS a\nRUN echo a > /a\n\
         FROM busybox AS b\nRUN echo b > /b\n\
         FROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        &[],
    );
    let svg = tmp.path().join("t.svg");
    let (_, err) = ok(mybuild(&root)
        .args(["build", "--progress=json", "-t", "tl:1", "--timeline"])
        .arg(&svg)
        .arg(&ctx));
    let started: Vec<serde_json::Value> = err
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .collect();
    // Every event says when it happened, in order.
    let times: Vec<u64> = started
        .iter()
        .map(|v| v["time_ms"].as_u64().expect("time_ms"))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    let steps = started
        .iter()
        .filter(|v| v["event"] == "step_started")
        .count();
    assert_eq!(steps, 4, "{err}");
    let text = std::fs::read_to_string(&svg).expect("svg");
    let bars = step_bars(&text);
    assert_eq!(bars.len(), steps, "{text}");
    assert!(bars.iter().all(|(c, _)| c == "step ran"), "{bars:?}");
    // Stages a and b run side by side, in either order.
    assert!(
        bars.iter()
            .any(|(_, t)| t.contains(" [a] RUN echo a > /a: ")),
        "{bars:?}"
    );
    let mut lanes = lanes(&text);
    assert_eq!(lanes.pop().as_deref(), Some("stage-2"), "{text}");
    lanes.sort();
    assert_eq!(lanes, ["a", "b"], "{text}");
    assert!(text.contains("critical path: #"), "{text}");

    // Rebuilt, every step cached; drawn into an HTML page.
    let html = tmp.path().join("t.html");
    ok(mybuild(&root)
        .args(["build", "-t", "tl:1", "--timeline"])
        .arg(&html)
        .arg(&ctx));
    let page = std::fs::read_to_string(&html).expect("html");
    assert!(page.starts_with("<!DOCTYPE html>"), "{page}");
    let at = page.find("<svg").expect("svg in the page");
    let end = page.rfind("</svg>").expect("svg end") + "</svg>".len();
    let bars = step_bars(&page[at..end]);
    assert_eq!(bars.len(), 4, "{page}");
    assert!(bars.iter().all(|(c, _)| c == "step cached"), "{bars:?}");
}

#[test]
fn a_failed_build_still_draws_its_timeline_with_the_failed_step() {
    let Some((tmp, root)) = setup() else { return };
    let ctx = context(tmp.path(), "FROM busybox\nRUN echo ok\nRUN exit 3\n", &[]);
    let svg = tmp.path().join("fail.svg");
    let err = fails(
        mybuild(&root)
            .args(["build", "--progress=plain", "--timeline"])
            .arg(&svg)
            .arg(&ctx),
    );
    assert!(err.contains("exit code: 3"), "{err}");
    let bars = step_bars(&std::fs::read_to_string(&svg).expect("svg"));
    let classes: Vec<&str> = bars.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(classes, ["step ran", "step failed"], "{bars:?}");
    // A path it cannot write is an error of its own, after the build.
    let err = fails(
        mybuild(&root)
            .args(["build", "--timeline", "/nonexistent/dir/t.svg"])
            .arg(context(tmp.path(), "FROM busybox\n", &[])),
    );
    assert!(
        err.contains("writing the timeline /nonexistent/dir/t.svg"),
        "{err}"
    );
}
