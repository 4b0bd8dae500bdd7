//! Every frontend error: its exact message, and the rendered snippet (insta snapshot).

use builder::dockerfile::{parse, ParseWarningKind};
use builder::plan::{plan, BaseInfo, NoBaseInfo, PlanOptions, Platform};

fn opts() -> PlanOptions {
    PlanOptions {
        target_platform: Platform::parse("linux/amd64").unwrap(),
        build_platform: Platform::parse("linux/amd64").unwrap(),
        ..PlanOptions::default()
    }
}

/// (message, rendered) of the first error parsing then planning `text`.
fn error_of(text: &str, opts: &PlanOptions) -> (String, String) {
    match parse(text, "Dockerfile") {
        Err(e) => (e.kind.to_string(), e.render()),
        Ok(df) => match plan(&df, opts, &NoBaseInfo) {
            Err(e) => (e.kind.to_string(), e.render()),
            Ok(_) => panic!("no error for {text:?}"),
        },
    }
}

macro_rules! error_case {
    ($name:ident, $text:expr, $msg:expr) => {
        error_case!($name, $text, $msg, opts());
    };
    ($name:ident, $text:expr, $msg:expr, $opts:expr) => {
        #[test]
        fn $name() {
            let (msg, rendered) = error_of($text, &$opts);
            assert_eq!(msg, $msg);
            insta::assert_snapshot!(rendered);
        }
    };
}

error_case!(
    unknown_instruction,
    "FROM alpine\nFOO bar\n",
    "unknown instruction: FOO"
);
error_case!(
    bad_flag,
    "FROM alpine\nCOPY --chwn=1 a /b\n",
    "unknown flag: --chwn"
);
error_case!(
    flag_without_value,
    "FROM alpine\nCOPY --from a /b\n",
    "missing a value on flag: --from"
);
error_case!(
    unterminated_heredoc,
    "FROM alpine\nRUN <<EOF\necho hi\n",
    "unterminated heredoc"
);
error_case!(
    unterminated_quote,
    "FROM alpine\nENV name='a\\'b'\n",
    "failed to process \"'a\\'b'\": unexpected end of statement while looking for matching single-quote"
);
error_case!(
    unterminated_double_quote,
    "FROM alpine\nCOPY \"src /dst\n",
    "failed to process \"\"src\": unexpected end of statement while looking for matching double-quote"
);
error_case!(
    arg_used_before_declaration_in_from,
    "FROM alpine:$TAG\nARG TAG=3.20\n",
    "FROM argument 'TAG' is not declared: base name (alpine:$TAG) expands to \"alpine:\""
);
error_case!(
    blank_base,
    "ARG IMAGE\nFROM $IMAGE\n",
    "base name ($IMAGE) should not be blank"
);
error_case!(
    invalid_stage_name,
    "FROM alpine AS 1st\n",
    "invalid name for build stage: \"1st\", name can't start with a number or contain symbols"
);
error_case!(
    from_arguments,
    "FROM alpine AS\n",
    "FROM requires either one or three arguments"
);
error_case!(
    copy_destination,
    "FROM alpine\nCOPY onlyone\n",
    "COPY requires at least two arguments, but only one was provided. Destination could not be determined"
);
error_case!(
    not_string_array,
    "FROM alpine\nCMD [\"a\", 1]\n",
    "when using JSON array syntax, arrays must be comprised of strings only"
);
error_case!(
    no_instructions,
    "# just a comment\n",
    "file with no instructions"
);
error_case!(no_stage, "RUN true\n", "no build stage in current context");
error_case!(
    onbuild_from,
    "FROM alpine\nONBUILD FROM scratch\n",
    "FROM isn't allowed as an ONBUILD trigger"
);
error_case!(
    cycle,
    "FROM alpine AS a\nCOPY --from=b /x /x\nFROM alpine AS b\nCOPY --from=a /y /y\n",
    "circular dependency detected on stage: a"
);
error_case!(
    unknown_stage_index,
    "FROM alpine\nCOPY --from=3 /x /x\n",
    "invalid stage index 3"
);
error_case!(
    unknown_target,
    "FROM alpine AS a\n",
    "target stage \"nope\" could not be found",
    PlanOptions {
        target: Some("nope".into()),
        ..opts()
    }
);
error_case!(
    from_expansion,
    "FROM alpine\nARG s=a\nCOPY --from=$s /x /x\n",
    "variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround"
);
error_case!(
    uppercase_image,
    "FROM alpine AS build\nCOPY --from=Build /x /x\n",
    "failed to parse stage name \"Build\": invalid reference format: repository name (library/Build) must be lowercase"
);
error_case!(
    bad_escape_directive,
    "# escape=x\nFROM alpine\n",
    "invalid ESCAPE 'x'. Must be ` or \\"
);
error_case!(
    healthcheck_interval,
    "FROM alpine\nHEALTHCHECK --interval=50ns CMD true\n",
    "Interval \"interval\" cannot be less than 1ms"
);
error_case!(
    required_var,
    "FROM alpine\nWORKDIR ${DIR:?must be set}\n",
    "failed to process \"${DIR:?must be set}\": DIR: must be set"
);

#[test]
fn continuation_at_end_of_file_is_a_warning() {
    // BuildKit accepts it (parser corpus case `continue-at-eof`), so this is not an error.
    let df = parse("FROM alpine\nRUN something \\", "Dockerfile").unwrap();
    let w: Vec<_> = df
        .warnings
        .iter()
        .filter(|w| w.kind == ParseWarningKind::ContinuationAtEof)
        .collect();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].short, "file ends in a line continuation");
    assert_eq!(w[0].line, 2);
}

#[test]
fn unconsumed_build_arg_warns() {
    let df = parse("FROM alpine\nARG used\n", "Dockerfile").unwrap();
    let mut o = opts();
    o.build_args.insert("used".into(), "1".into());
    o.build_args.insert("unused".into(), "2".into());
    o.build_args.insert("HTTP_PROXY".into(), "http://p".into());
    let g = plan(&df, &o, &NoBaseInfo).unwrap();
    let msgs: Vec<_> = g.warnings.iter().map(|w| w.message.as_str()).collect();
    assert_eq!(
        msgs,
        ["[Warning] One or more build-args [unused] were not consumed"]
    );
}

struct Bases;
impl BaseInfo for Bases {
    fn onbuild(&self, image: &str, _p: Option<&Platform>) -> Vec<String> {
        if image == "onbuild-base" {
            vec!["RUN echo triggered".into(), "COPY . /app".into()]
        } else {
            Vec::new()
        }
    }
}

const MULTI: &str = r#"# syntax=docker/dockerfile:1
ARG GO_VERSION=1.22
ARG BASE=alpine:3.20
FROM golang:${GO_VERSION} AS build
ARG GO_VERSION
ARG TARGETARCH
ENV CGO_ENABLED=0 GOARCH=$TARGETARCH
WORKDIR /src
RUN --mount=type=cache,target=/root/.cache/go-build go build -o /out/app .

FROM build AS test
RUN go test ./...

FROM $BASE AS unused
RUN echo never

FROM onbuild-base AS final
COPY --from=build --chown=app:app /out/app /usr/local/bin/app
COPY <<EOF /etc/motd
built with go ${GO_VERSION:-unknown}

EOF
EXPOSE 8080/tcp ${PORTS}
LABEL version="$GO_VERSION"
USER app
ENTRYPOINT ["/usr/local/bin/app"]
"#;

#[test]
fn step_graph_multi_stage_default_target() {
    let df = parse(MULTI, "Dockerfile").unwrap();
    let mut o = opts();
    o.build_args.insert("PORTS".into(), "9090 9091".into());
    let g = plan(&df, &o, &Bases).unwrap();
    // `test` and `unused` are pruned: final needs only build.
    let kept: Vec<_> = g
        .stages
        .iter()
        .map(|s| s.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(kept, ["build", "final"]);
    insta::assert_json_snapshot!(g);
}

#[test]
fn step_graph_target_test() {
    let df = parse(MULTI, "Dockerfile").unwrap();
    let mut o = opts();
    o.target = Some("test".into());
    o.build_args.insert("GO_VERSION".into(), "1.23".into());
    let g = plan(&df, &o, &Bases).unwrap();
    let kept: Vec<_> = g
        .stages
        .iter()
        .map(|s| s.name.clone().unwrap_or_default())
        .collect();
    assert_eq!(kept, ["build", "test"]);
    insta::assert_json_snapshot!(g);
}
