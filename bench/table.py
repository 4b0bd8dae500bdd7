#!/usr/bin/env python3
"""Turns bench/run.sh's raw runs into the results table and the targets check.

Input rows (TSV): scenario, tool, status (ok|na|fail), wall µs, peak RSS KiB, bytes, note.
Prints the table and writes it, with the machine, versions and targets, as Markdown.
"""
import argparse
import json
import os
import statistics
import sys

MIB = 1024 * 1024


def load_runs(path):
    groups = {}  # (scenario, tool) -> dict; insertion order is the run order
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 6:
                continue
            sc, tool, status, wall, rss, nbytes = parts[:6]
            note = parts[6] if len(parts) > 6 else ""
            cpu = parts[7] if len(parts) > 7 else ""
            g = groups.setdefault((sc, tool), {"walls": [], "rss": [], "cpu": [], "bytes": 0, "na": "", "fail": ""})
            if status == "ok":
                g["walls"].append(int(wall) / 1e6)
                g["rss"].append(int(rss))
                if cpu:
                    g["cpu"].append(float(cpu))
                g["bytes"] = int(nbytes)
            elif status == "na":
                g["na"] = note
            else:
                g["fail"] = note or "failed"
    return groups


def load_kv(path):
    out = {}
    if path and os.path.exists(path):
        with open(path) as f:
            for line in f:
                if "\t" in line:
                    k, v = line.rstrip("\n").split("\t", 1)
                    out[k] = v
    return out


def load_criterion(root, since=0):
    """Median time per iteration and throughput of every criterion benchmark run since `since`."""
    out = []
    if not root or not os.path.isdir(root):
        return out
    for dirpath, _dirs, files in os.walk(root):
        if os.path.basename(dirpath) != "new" or "benchmark.json" not in files:
            continue
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                meta = json.load(f)
            with open(os.path.join(dirpath, "estimates.json")) as f:
                est = json.load(f)
        except (OSError, ValueError):
            continue
        if os.path.getmtime(os.path.join(dirpath, "estimates.json")) < since:
            continue
        secs = est["median"]["point_estimate"] / 1e9
        tp = meta.get("throughput") or {}
        rate = ""
        if "Bytes" in tp and secs > 0:
            rate = tp["Bytes"] / secs / 1e6
        elif "BytesDecimal" in tp and secs > 0:
            rate = tp["BytesDecimal"] / secs / 1e6
        elems = tp.get("Elements")
        out.append({"id": meta.get("full_id", dirpath), "secs": secs, "mbps": rate, "elements": elems,
                     "mtime": os.path.getmtime(os.path.join(dirpath, "estimates.json"))})
    out.sort(key=lambda r: r["id"])
    return out


def fmt_ratio(r):
    return f"{r:.3f}×" if r < 0.1 else f"{r:.2f}×"


def fmt_secs(s):
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.1f} ms"
    return f"{s:.2f} s"


def summarize(groups):
    """One summary per (scenario, tool): median, min, max, peak RSS, MB/s."""
    out = {}
    for key, g in groups.items():
        if g["walls"]:
            med = statistics.median(g["walls"])
            out[key] = {
                "median": med,
                "min": min(g["walls"]),
                "max": max(g["walls"]),
                "rss": max(g["rss"]) / 1024,
                "mbps": (g["bytes"] / med / 1e6) if g["bytes"] and med > 0 else None,
                "n": len(g["walls"]),
                "cpu": statistics.median(g["cpu"]) if g["cpu"] else None,
            }
    return out


def build_table(groups, summ):
    rows = ["| scenario | tool | median wall | min–max | CPU | peak RSS | MB/s | mybuild/peer |",
            "|---|---|---:|---:|---:|---:|---:|---:|"]
    for (sc, tool), g in groups.items():
        s = summ.get((sc, tool))
        if g["na"] and not s:
            rows.append(f"| {sc} | {tool} | {g['na']} | | | | | |")
            continue
        if not s:
            rows.append(f"| {sc} | {tool} | failed: {g['fail']} | | | | | |")
            continue
        ratio = ""
        mine = summ.get((sc, "mybuild"))
        if tool != "mybuild":
            if mine:
                ratio = fmt_ratio(mine["median"] / s["median"])
            elif groups.get((sc, "mybuild"), {}).get("na"):
                ratio = "n/a"
        rng = f"{fmt_secs(s['min'])} – {fmt_secs(s['max'])}"
        mbps = f"{s['mbps']:.0f}" if s["mbps"] else ""
        fail = " (some runs failed)" if g["fail"] else ""
        cpu = f"{s['cpu']:.2f} s" if s["cpu"] is not None else ""
        rss = f"{s['rss']:.1f} MiB" if s["rss"] > 0 else "–"
        rows.append(f"| {sc} | {tool}{fail} | {fmt_secs(s['median'])} | {rng} | {cpu} | {rss} | {mbps} | {ratio} |")
    return rows


def targets(groups, summ, crit):
    """(name, verdict, figures) per target from the issue; verdict is met / NOT met / not measured."""
    def med(sc, tool):
        s = summ.get((sc, tool))
        return s["median"] if s else None

    def why_missing(sc):
        g = groups.get((sc, "mybuild"))
        if g and g["na"]:
            return g["na"].replace("mybuild: ", "")
        if g and g["fail"]:
            return "mybuild's run failed"
        return "scenario not run"

    out = []

    def ratio_target(name, sc, peer, limit, extra_abs=None):
        m, p = med(sc, "mybuild"), med(sc, peer)
        if m is None or p is None:
            out.append((name, "not measured", why_missing(sc) if m is None else f"no {peer} figure"))
            return
        r = m / p
        ok = r <= limit
        fig = f"{fmt_secs(m)} vs {fmt_secs(p)} = {fmt_ratio(r)}"
        if extra_abs is not None:
            ok = ok and m <= extra_abs
            fig += f"; absolute {fmt_secs(m)} (limit {fmt_secs(extra_abs)})"
        out.append((name, "met" if ok else "NOT met", fig))

    def rss_target(sc, limit_mib=64):
        g = summ.get((sc, "mybuild"))
        name = f"{sc}: peak RSS ≤ {limit_mib} MiB"
        if g is None:
            out.append((name, "not measured", why_missing(sc)))
        else:
            out.append((name, "met" if g["rss"] <= limit_mib else "NOT met", f"{g['rss']:.1f} MiB"))

    def information(name, sc, peer):
        """A row reported against its peer with no fixed target."""
        m, p = med(sc, "mybuild"), med(sc, peer)
        if m is None or p is None:
            out.append((name, "not measured", why_missing(sc) if m is None else f"no {peer} figure"))
        else:
            out.append((name, "information", f"{fmt_secs(m)} vs {fmt_secs(p)} = {fmt_ratio(m / p)}"))

    ratio_target("A no-op rebuild ≤ 0.02× buildah, at most 15 ms", "A no-op rebuild", "buildah", 0.02, 0.015)
    ratio_target("A cold ≤ 0.15× buildah", "A cold", "buildah", 0.15)
    ratio_target("A one-file change ≤ 0.1× buildah", "A one-file change", "buildah", 0.1)
    ratio_target("B build ≤ 0.4× buildah (gzip)", "B cold (gzip)", "buildah", 0.4)
    ratio_target("B build ≤ 0.3× buildah (zstd)", "B cold (zstd)", "buildah", 0.3)
    # mybuild's one `build --push` against buildah's build then push, timed together
    ratio_target("B build + push ≤ 0.4× buildah bud + buildah push (gzip)", "B build + push (gzip)", "buildah", 0.4)
    ratio_target("D cold ≤ 0.2× buildah", "D cold", "buildah", 0.2)
    m = med("D no-op rebuild", "mybuild")
    if m is None:
        out.append(("D no-op rebuild at most 150 ms", "not measured", why_missing("D no-op rebuild")))
    else:
        out.append(("D no-op rebuild at most 150 ms", "met" if m <= 0.150 else "NOT met", fmt_secs(m)))
    for sc in ("D cold", "D no-op rebuild"):
        rss_target(sc)
    for sc in ("E build", "E push", "E pull"):
        rss_target(sc)
    ratio_target("F fresh store, --cache-from type=registry rebuild of A ≤ 0.3× buildah --cache-from",
                 "F rebuild from registry cache", "buildah", 0.3)
    ratio_target("K fresh store with exported cache mounts ≤ 0.3× the same rebuild without them",
                 "K rebuild, fresh store", "no-cache-mounts", 0.3)
    information("(no target) G push, many layers, against skopeo copy", "G push", "skopeo")
    information("(no target) G pull, many layers, against skopeo copy", "G pull", "skopeo")

    m, p = summ.get(("L gzip -6", "mybuild")), summ.get(("L gzip -6", "pigz -6"))
    if m and p and m["mbps"] and p["mbps"]:
        r = m["mbps"] / p["mbps"]
        out.append(("layer pipeline ≥ 80 % of pigz -6", "met" if r >= 0.8 else "NOT met",
                    f"mybuild import (tar→gzip→sha256→store) {m['mbps']:.0f} MB/s vs pigz -6 {p['mbps']:.0f} MB/s = {r * 100:.0f} %"))
    else:
        out.append(("layer pipeline ≥ 80 % of pigz -6", "not measured", why_missing("L gzip -6")))
    m = summ.get(("L zstd -3", "mybuild"))
    if m and m["mbps"]:
        out.append(("layer pipeline ≥ 300 MB/s with zstd", "met" if m["mbps"] >= 300 else "NOT met",
                    f"mybuild import --compression zstd {m['mbps']:.0f} MB/s"))
    else:
        out.append(("layer pipeline ≥ 300 MB/s with zstd", "not measured", why_missing("L zstd -3")))
    sha = [c for c in crit if c["id"].startswith("sha256")]
    if sha and sha[0]["mbps"]:
        best = max(c["mbps"] for c in sha)
        out.append(("sha256 ≥ 1.5 GB/s", "met" if best >= 1500 else "NOT met",
                    f"layer-cache Hasher {best:.0f} MB/s (criterion, in memory)"))
    else:
        out.append(("sha256 ≥ 1.5 GB/s", "not measured", "criterion benchmarks not run (M)"))

    c, s1, s2 = med("C cold", "mybuild"), med("C stage s1 alone", "mybuild"), med("C stage s2 alone", "mybuild")
    if None not in (c, s1, s2):
        r = c / (s1 + s2)
        cpu = summ[("C cold", "mybuild")]["cpu"]
        par = f"; CPU {cpu:.2f} s in {fmt_secs(c)} wall = {cpu / c:.2f} cores busy" if cpu else ""
        out.append(("C stages overlap: cold ≤ 0.6× the stages alone", "met" if r <= 0.6 else "NOT met",
                    f"{fmt_secs(c)} vs {fmt_secs(s1)} + {fmt_secs(s2)} = {r:.2f}×{par}"))
    else:
        out.append(("C stages overlap: cold ≤ 0.6× the stages alone", "not measured", why_missing("C cold")))

    def per_step(name, sc, peer, limit):
        m, p = med(sc, "mybuild"), med(sc, peer)
        if m is None or p is None:
            out.append((name, "not measured", why_missing(sc) if m is None else f"no {peer} figure"))
            return
        d = (m - p) / 20
        out.append((name, "met" if d <= limit else "NOT met",
                    f"{fmt_secs(m)} vs {peer} {fmt_secs(p)} over 20 RUNs = {d * 1000:.1f} ms per RUN"))

    per_step("confinement ≤ 5 ms per RUN", "S 20 RUNs, no network", "unconfined", 0.005)
    per_step("private network ≤ 20 ms per RUN", "S 20 RUNs, default network", "network-none", 0.020)

    m = med("U A no-op rebuild (rootless)", "mybuild")
    if m is not None:
        out.append(("rootless A no-op rebuild under 50 ms", "met" if m < 0.05 else "NOT met", fmt_secs(m)))
    else:
        out.append(("rootless A no-op rebuild under 50 ms", "not measured", why_missing("U A no-op rebuild (rootless)")))
    for sc, root_sc in (("U A cold (rootless)", "A cold"), ("U C cold (rootless)", "C cold")):
        name = f"rootless {root_sc} ≤ 1.2× root's"
        m, r = med(sc, "mybuild"), med(root_sc, "mybuild")
        if m is None or r is None:
            out.append((name, "not measured", why_missing(sc) if m is None else "no root figure"))
        else:
            out.append((name, "met" if m / r <= 1.2 else "NOT met",
                        f"{fmt_secs(m)} vs {fmt_secs(r)} = {fmt_ratio(m / r)}"))

    ratio_target("run --rm busybox true ≤ 0.3× podman, under 50 ms", "X run --rm busybox true", "podman", 0.3, 0.05)
    ratio_target("(same, --network none) ≤ 0.3× podman, under 50 ms", "X run --rm, --network none", "podman", 0.3, 0.05)
    ratio_target("R push ≤ 0.5× skopeo", "R push", "skopeo", 0.5)
    ratio_target("R pull ≤ 0.5× skopeo", "R pull", "skopeo", 0.5)
    ratio_target("R pull into the store unpacked ≤ 0.5× buildah pull", "R pull (unpacked)", "buildah", 0.5)
    m = med("R no-op push", "mybuild")
    if m is not None:
        out.append(("no-op push under 100 ms", "met" if m < 0.1 else "NOT met", fmt_secs(m)))
    else:
        out.append(("no-op push under 100 ms", "not measured", why_missing("R no-op push")))

    # Rows timed by hyperfine (X) carry no RSS (0).
    mine = [(k[0], v["rss"]) for k, v in summ.items() if k[1] == "mybuild" and v["rss"] > 0]
    if mine:
        worst = max(mine, key=lambda x: x[1])
        over = [f"{sc} {r:.0f} MiB" for sc, r in mine if r > 64]
        out.append(("peak RSS ≤ 64 MiB in every scenario", "met" if not over else "NOT met",
                    f"highest: {worst[0]} {worst[1]:.1f} MiB" + (f"; over: {', '.join(over)}" if over else "")))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--results", required=True)
    ap.add_argument("--machine")
    ap.add_argument("--versions")
    ap.add_argument("--criterion")
    ap.add_argument("--since", type=float, default=0, help="ignore criterion results older than this (Unix time)")
    ap.add_argument("--notes", help="Markdown with the hand-written analysis of what bounds each target")
    ap.add_argument("--out")
    a = ap.parse_args()

    groups = load_runs(a.results)
    summ = summarize(groups)
    machine = load_kv(a.machine)
    versions = load_kv(a.versions)
    crit = load_criterion(a.criterion, a.since)
    table = build_table(groups, summ)

    if machine.get("mode") == "smoke":
        print("smoke mode: tiny sizes, one run, debug build — these figures check the harness, they measure nothing")
    print("\n".join(table))
    if crit:
        print()
        for c in crit:
            print(f"criterion {c['id']}: {fmt_secs(c['secs'])}" + (f", {c['mbps']:.0f} MB/s" if c["mbps"] else ""))
    tg = targets(groups, summ, crit)
    print()
    for name, verdict, fig in tg:
        print(f"{verdict:>12}  {name}: {fig}")

    if not a.out:
        return 0
    md = ["# Benchmark results", "",
          "Written by `bench/run.sh` (do not edit by hand; the analysis below the targets is kept in "
          "`bench/ANALYSIS.md`). Wall times are medians over alternating runs (mybuild, peer, mybuild, …); "
          "peak RSS is the largest single process of the command's tree (wait4 rusage via GNU time); "
          "CPU is the median user+sys time of the tree; "
          "MB/s is the scenario's data (context, tar or compressed image) over the median wall time. "
          "The last column is mybuild's median over this row's median.", "",
          "## Machine", ""]
    for k in ("date", "mode", "cpu", "cores", "sha_ni", "memory", "kernel", "os", "workarea", "storage", "load", "runs", "features"):
        if k in machine:
            md.append(f"- {k}: {machine[k]}")
    md += ["", "Tools:", ""]
    for k, v in versions.items():
        md.append(f"- {k}: {v}")
    md += ["", "Data:", ""]
    for k, label in (("a", "A context"), ("b", "B context"), ("c", "C stages"), ("d", "D context"),
                     ("e", "E layer"), ("g", "G image"), ("k", "K cache mount")):
        if k in machine:
            md.append(f"- {label}: {machine[k]}")
    md += ["", "## Table", ""] + table
    if crit:
        md += ["", "## Micro-benchmarks (criterion, `cargo bench`)", "",
               "| benchmark | median per iteration | MB/s | elements |", "|---|---:|---:|---:|"]
        for c in crit:
            mbps = f"{c['mbps']:.0f}" if c["mbps"] else ""
            md.append(f"| {c['id']} | {fmt_secs(c['secs'])} | {mbps} | {c['elements'] or ''} |")
    md += ["", "## Targets", "", "| target | verdict | figures |", "|---|---|---|"]
    for name, verdict, fig in tg:
        md.append(f"| {name} | **{verdict}** | {fig} |")
    if a.notes and os.path.exists(a.notes):
        with open(a.notes) as f:
            md += ["", f.read().rstrip()]
    with open(a.out, "w") as f:
        f.write("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
