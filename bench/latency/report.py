"""The "## Recommend latency" section of bench/RESULTS.md, rendered from the results JSON.

Other benchmarks write other `## ` sections of the same file, so the file is read, only our section
is replaced (or appended), and it is written back atomically; every other byte stays as it was.
A `## ` line inside a fenced code block is not a section header. Our section also ends at a line that
opens an HTML comment (`<!-- other:begin -->` markers some writers put around their sections), so such
a marker is never swallowed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SECTION = "## Recommend latency"
FILE_HEADER = "# Benchmark results\n"


def _boundaries(lines: Sequence[str]) -> list[int]:
    """Lines where a section may start or must end: `## ` headers and `<!--` markers, outside fences."""
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith(("## ", "<!--")):
            out.append(i)
    return out


def replace_section_text(text: str, section: str, header: str = SECTION) -> str:
    """`text` with the section titled `header` replaced by `section` (appended if absent)."""
    body = section.rstrip("\n") + "\n"
    if not body.startswith(header):
        raise ValueError(f"section must start with {header!r}")
    if not text.strip():
        return FILE_HEADER + "\n" + body
    lines = text.splitlines(keepends=True)
    bounds = _boundaries(lines)
    start = next((i for i in bounds if lines[i].rstrip("\r\n") == header), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + body
    end = next((i for i in bounds if i > start), len(lines))
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + body + ("\n" + tail if tail else "")


def write_section(md_path: Path, section: str, header: str = SECTION) -> None:
    text = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    new = replace_section_text(text, section, header)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = md_path.with_name(f".{md_path.name}.{os.getpid()}.tmp")
    tmp.write_text(new, encoding="utf-8")
    os.replace(tmp, md_path)


def _ms(summary: Mapping[str, Any] | None, key: str) -> str:
    if not summary or key not in summary:
        return "–"
    return f"{float(summary[key]):.2f}"


def render(result: Mapping[str, Any]) -> str:
    m, sc, req = result["machine"], result["scale"], result["request"]
    floor, goals = result["floor"], result["goals"]
    load = m.get("load_during", {})
    lines = [
        SECTION,
        "",
        f"Measured {m['date_utc']} on {m['nproc']} cores ({m['cpu_model']}, {m['mem_total_gb']} GB RAM), "
        f"Python {m['python']}. **Noisy machine**: the 2 cores are shared with other engineers' jobs; load "
        f"average before the run {m.get('load_before')}, during the measured phases "
        f"{load.get('mean', '–')} mean / {load.get('max', '–')} max (1-minute average, sampled every "
        f"{load.get('every_s', '–')} s).",
        "",
        "```",
        str(result["command"]),
        "```",
        "",
        f"Scale: **{sc['creators']:,} creators** in the index ({sc['index_dim']}-d, "
        f"{sc['index_mb']:.0f} MB on disk), {sc['fans']:,} fans ({sc['fans_with_follows']:,} with follows, "
        f"{sc['follow_pairs']:,} follow "
        f"pairs), {sc['posts']:,} posts (not indexed by retrieval yet), {sc['days']} days of events; "
        f"models trained with the `{sc['trainer_config']}` config. Build: generate "
        f"{_secs(sc.get('generate_s'))}, train {_secs(sc.get('train_s'))}.",
        "",
        f"Request: `Recommend(k={req['k']})` for {req['sampled_fans']} fans sampled deterministically "
        f"(seed {req['seed']}) among fans with at least one follow; ranking asks retrieval for "
        f"{req['retrieve_k']} candidates, the two-tower ANN query has limit {req['two_tower_n']}, "
        f"hnsw_ef {req['hnsw_ef']}, filter = the fan's follows. Client: {result['client']['channels']}; "
        f"{result['client']['warmup']} warm-up requests then {result['client']['requests']} measured "
        "requests per level, closed loop.",
        "",
        _code_line(result),
        "",
        "### End to end (client → ranking → retrieval, gRPC on loopback)",
        "",
        "| callers | p50 ms | p90 ms | p99 ms | mean ms | max ms | throughput rps | errors | "
        "CPU ms/req ranking | CPU ms/req retrieval | CPU ms/req client |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for level, s in result["levels"].items():
        cpu = s.get("cpu_ms_per_request", {})
        lines.append(
            f"| {level} | {_ms(s, 'p50_ms')} | {_ms(s, 'p90_ms')} | {_ms(s, 'p99_ms')} | {_ms(s, 'mean_ms')} "
            f"| {_ms(s, 'max_ms')} | {s['throughput_rps']:.1f} | {s['errors']} | "
            f"{cpu.get('ranking', 0):.2f} | {cpu.get('retrieval', 0):.2f} | {cpu.get('client', 0):.2f} |"
        )
    lines += [
        "",
        "### Goals (issue 3)",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    g1, g2 = goals["p50_within_2x_floor"], goals["p99_at_4_callers_le_25ms"]
    lines += [
        f"| Recommend p50 ≤ 2× floor (1 caller) | p50 {g1['recommend_p50_ms']:.2f} ms vs floor "
        f"{g1['floor_p50_ms']:.2f} ms = {g1['ratio']:.2f}× | {'yes' if g1['met'] else '**no**'} |",
        f"| p99 ≤ 25 ms at 4 callers | p99 {g2['p99_ms']:.2f} ms | {'yes' if g2['met'] else '**no**'} |",
        "",
        "### The floor (same run)",
        "",
        "| component | p50 ms | p99 ms | mean ms | n | in the floor sum |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for entry in floor["components"].values():
        s = entry["latency"]
        lines.append(
            f"| {entry['label']} | {_ms(s, 'p50_ms')} | {_ms(s, 'p99_ms')} | {_ms(s, 'mean_ms')} | "
            f"{int(s.get('n', 0))} | {'yes' if entry['in_floor'] else 'no'} |"
        )
    lines += [
        f"| **floor = sum of the p50s marked yes** | **{floor['sum_p50_ms']:.2f}** | | | | |",
        "",
        f"implicit ALS: {floor['als']['factors']} factors, fit on {floor['als']['nnz']:,} follow pairs "
        f"in {floor['als']['fit_s']:.1f} s (1 thread); `recommend(N=10)` scores all "
        f"{sc['creators']:,} creators in-process, no filter pushdown, no network. "
        f"A RetrieveResponse of {req['retrieve_k']} candidates is "
        f"{floor.get('retrieve_response_bytes_mean', 0):,.0f} bytes on the wire.",
        "",
    ]
    st = result["stages"]
    lines += [
        f"### Where the time goes (traced sample: {st['requests']} requests, 1 caller)",
        "",
        f"Services restarted with KINDRED_TRACE_FILE for this sample only (writing spans costs time: the "
        f"untraced levels above are the numbers). Client-side latency of the traced sample: p50 "
        f"{_ms(st.get('client'), 'p50_ms')} ms, p99 {_ms(st.get('client'), 'p99_ms')} ms; client time "
        "outside ranking's server span (client → ranking hop): "
        f"{st.get('outside_ranking_server_p50_ms', 0):.2f} ms between the p50s, "
        f"{st.get('outside_ranking_server_mean_ms', 0):.2f} ms between the means. "
        "Inclusive = the span with its children; exclusive = what the stage did itself (children "
        "subtracted); exclusive means add up to the root span.",
        "",
        "| stage | service | in % of requests | spans/request | incl. p50 ms | incl. p99 ms | excl. mean ms "
        "| share of root |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for key, s in st["stages"].items():
        share = 100.0 * s["in_requests"] / st["requests"] if st["requests"] else 0.0
        lines.append(
            f"| `{key}` | {s['service']} | {share:.0f} | {s['spans_per_request']:.2f} | "
            f"{_ms(s['inclusive'], 'p50_ms')} | {_ms(s['inclusive'], 'p99_ms')} | "
            f"{s['exclusive_mean_ms']:.3f} | {100 * s['share_of_root']:.1f}% |"
        )
    mem = result["memory_mb"]
    lines += [
        "",
        "### Resident memory after the run",
        "",
        "| service | VmRSS MB | VmHWM (peak) MB |",
        "|---|---:|---:|",
    ]
    for name, s in mem.items():
        lines.append(f"| {name} | {s['rss_mb']:.0f} | {s['hwm_mb']:.0f} |")
    lines += [
        "",
        f"Total benchmark time {result['runtime_s']:.0f} s. "
        "Raw numbers: bench/results/recommend_latency.json.",
        "",
    ]
    return "\n".join(lines)


def _code_line(result: Mapping[str, Any]) -> str:
    code = result.get("code") or {}
    line = f"Code: commit `{str(code.get('commit', '?'))[:12]}`"
    changed = code.get("uncommitted_service_files") or []
    if changed:
        line += f" plus uncommitted changes to {len(changed)} service files (the working tree as measured)"
    degraded = (result.get("floor") or {}).get("retrieval_degraded_sources") or {}
    if degraded:
        parts = [
            f"{name} ({v['fans']} of {result['request']['sampled_fans']} fans: {v['example']})"
            for name, v in degraded.items()
        ]
        line += ". Candidate sources degraded with this data: " + "; ".join(parts)
    return line + "."


def _secs(value: object) -> str:
    if value is None:
        return "not measured in this run (data reused)"
    return f"{float(value):.0f} s"  # type: ignore[arg-type]
