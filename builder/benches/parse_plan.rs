//! Parse and plan generated Dockerfiles of 2,500 to 10,000 lines (target: 10,000 lines in
//! under 20 ms, linear in size).

use builder::dockerfile::parse;
use builder::plan::{plan, NoBaseInfo, PlanOptions, Platform};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;

/// A multi-stage Dockerfile of about `lines` lines using most instruction forms.
fn generate(lines: usize) -> String {
    let mut s =
        String::from("# syntax=docker/dockerfile:1\nARG BASE=alpine:3.20\nARG VERSION=1.0\n");
    let mut stage = 0;
    while s.lines().count() < lines {
        if stage == 0 {
            s.push_str("FROM $BASE AS s0\n");
        } else {
            s.push_str(&format!("FROM s{} AS s{stage}\n", stage - 1));
        }
        s.push_str("ARG VERSION\nENV APP_HOME=/opt/app PATH=/opt/app/bin:$PATH\n");
        for i in 0..40 {
            s.push_str(&format!(
                "RUN set -eux; \\\n    echo step {i} version $VERSION; \\\n    apk add --no-cache curl\n\
                 COPY --chown=app:app --chmod=644 src/{i}/ ${{APP_HOME}}/src/{i}/\n\
                 LABEL step{i}=\"${{VERSION}}-{i}\" org.example.n=\"{i}\"\n\
                 RUN --mount=type=cache,target=/root/.cache <<EOF\n\
                 echo heredoc {i}\n\
                 EOF\n"
            ));
        }
        s.push_str("WORKDIR ${APP_HOME}\nEXPOSE 8080/tcp\nUSER app\nCMD [\"app\", \"serve\"]\n");
        stage += 1;
    }
    s
}

fn bench(c: &mut Criterion) {
    let opts = PlanOptions {
        target_platform: Platform::parse("linux/amd64").unwrap_or_else(|_| Platform::host()),
        build_platform: Platform::parse("linux/amd64").unwrap_or_else(|_| Platform::host()),
        ..PlanOptions::default()
    };
    let mut g = c.benchmark_group("parse_plan");
    for lines in [2_500, 5_000, 10_000] {
        let text = generate(lines);
        g.throughput(Throughput::Elements(text.lines().count() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(lines), &text, |b, text| {
            b.iter(|| {
                let df = parse(black_box(text), "Dockerfile").ok();
                df.and_then(|df| plan(&df, &opts, &NoBaseInfo).ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
