"""The "## Recommend latency" section of bench/RESULTS.md, rendered from the results JSON.

Written through bench.results_md.write_section under the key `KEY`: only this section is replaced,
every other byte of the file stays as it was.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SECTION = "## Recommend latency"
KEY = "recommend_latency"


def _ms(summary: Mapping[str, Any] | None, key: str) -> str:
    if not summary or key not in summary:
        return "–"
    return f"{float(summary[key]):.2f}"


def _yes(met: bool) -> str:
    return "yes" if met else "**no**"


def render(result: Mapping[str, Any]) -> str:
    m, sc, req = result["machine"], result["scale"], result["request"]
    floor, configs = result["floor"], result["configs"]
    load = m.get("load_during", {})
    lines = [
        SECTION,
        "",
        f"Measured {m['date_utc']} on {m['nproc']} cores ({m['cpu_model']}, {m['mem_total_gb']} GB RAM), "
        f"Python {m['python']}. **Shared machine**: the 2 cores are shared with other engineers' jobs; load "
        f"average before the run {m.get('load_before')}, during the measured phases "
        f"{load.get('mean', '–')} mean / {load.get('max', '–')} max / {load.get('min', '–')} min (1-minute "
        f"average, sampled every {load.get('every_s', '–')} s). Configurations run one after the other, "
        "so they did not see the same load: compare CPU ms per request (less load-sensitive) as well as "
        "latency.",
        "",
        "```",
        str(result["command"]),
        "```",
        "",
        f"Scale: **{sc['creators']:,} creators** in the index ({sc['index_dim']}-d, "
        f"{sc['index_mb']:.0f} MB on disk), {sc['fans']:,} fans ({sc['fans_with_follows']:,} with follows, "
        f"{sc['follow_pairs']:,} follow pairs), {sc['posts']:,} posts (not indexed by retrieval yet), "
        f"{sc['days']} days of events; models trained with the `{sc['trainer_config']}` config. Build: "
        f"generate {_secs(sc.get('generate_s'))}, train {_secs(sc.get('train_s'))}"
        + (f" ({sc['train_note']})" if sc.get("train_note") else "")
        + ".",
        "",
        f"Request: `Recommend(k={req['k']})` for {req['sampled_fans']} fans sampled deterministically "
        f"(seed {req['seed']}) among fans with at least one follow; ranking asks retrieval for "
        f"{req['retrieve_k']} candidates, the two-tower ANN query has limit {req['two_tower_n']}, "
        f"hnsw_ef {req['hnsw_ef']}, filter = the fan's follows, no payload (item ids from the index's map)"
        + (
            f"; qdrant-edge search pool of {req['engine_search_threads']} thread(s) per shard"
            if "engine_search_threads" in req
            else ""
        )
        + f". Client: {result['client']['channels']}; "
        f"{result['client']['warmup']} warm-up requests then {result['client']['requests']} measured "
        "requests per level, closed loop. A degraded page (fallback or short) counts as an error.",
        "",
        _code_line(result),
        "",
        "Configurations:",
        "",
    ]
    for name, c in configs.items():
        lines.append(f"- **{name}**: {c['label']}.")
    lines += [
        "",
        "### End to end (client → ranking [→ retrieval], gRPC on loopback)",
        "",
        "| config | callers | p50 ms | p90 ms | p99 ms | mean ms | max ms | throughput rps | errors | "
        "CPU ms/req ranking | CPU ms/req retrieval | CPU ms/req client |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, c in configs.items():
        for level, s in c["levels"].items():
            cpu = s.get("cpu_ms_per_request", {})
            retrieval_cpu = f"{cpu['retrieval']:.2f}" if "retrieval" in cpu else "(in ranking)"
            lines.append(
                f"| {name} | {level} | {_ms(s, 'p50_ms')} | {_ms(s, 'p90_ms')} | {_ms(s, 'p99_ms')} | "
                f"{_ms(s, 'mean_ms')} | {_ms(s, 'max_ms')} | {s['throughput_rps']:.1f} | {s['errors']} | "
                f"{cpu.get('ranking', 0):.2f} | {retrieval_cpu} | {cpu.get('client', 0):.2f} |"
            )
    lines += [
        "",
        "### Goals (issue 3)",
        "",
        "| config | Recommend p50 (1 caller) vs its floor | p50 ≤ 2× floor | p99 at 4 callers "
        "| p99 ≤ 25 ms |",
        "|---|---|---|---|---|",
    ]
    for name, c in configs.items():
        g1, g2 = c["goals"]["p50_within_2x_floor"], c["goals"]["p99_at_4_callers_le_25ms"]
        lines.append(
            f"| {name} | {g1['recommend_p50_ms']:.2f} ms vs {g1['floor_p50_ms']:.2f} ms "
            f"({len(c['hops'])} hop{'s' if len(c['hops']) > 1 else ''}) = {g1['ratio']:.2f}× | "
            f"{_yes(g1['met'])} | {g2['p99_ms']:.2f} ms | {_yes(g2['met'])} |"
        )
    lines += [
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
        "| **floor, two hops (mesh) = sum of the p50s marked yes** | "
        f"**{floor['sum_p50_ms']:.2f}** | | | | |",
        f"| **floor, one hop (co-located)** | **{floor.get('sum_p50_ms_one_hop', 0):.2f}** | | | | |",
        "",
        f"implicit ALS: {floor['als']['factors']} factors, fit on {floor['als']['nnz']:,} follow pairs "
        f"in {floor['als']['fit_s']:.1f} s (1 thread); `recommend(N=10)` scores all "
        f"{sc['creators']:,} creators in-process, no filter pushdown, no network. "
        f"A RetrieveResponse of {req['retrieve_k']} candidates is "
        f"{floor.get('retrieve_response_bytes_mean', 0):,.0f} bytes on the wire.",
        "",
    ]
    if floor.get("engine_configs"):
        lines += [
            "The two-tower query (same limit, ef, follows filter) with the served search pool and with the "
            f"{floor['engine_default_pool']} threads qdrant-edge starts on this machine when given no size "
            "(what "
            "retrieval had before KINDRED_ENGINE_SEARCH_THREADS), each reading the item ids from the "
            "payload (what retrieval asked before kindred.vectorstore.edge.EdgeIndex kept them) and "
            "reading no payload; CPU = every thread of the process, the search pool included; each on its "
            "own copy of the index:",
            "",
            "| engine search pool (threads) | payload | p50 ms | p99 ms | CPU ms per query |",
            "|---:|---|---:|---:|---:|",
        ]
        for e in floor["engine_configs"]:
            lat = e["latency"]
            lines.append(
                f"| {e['search_threads']} | {e['payload']} | "
                f"{_ms(lat, 'p50_ms')} | {_ms(lat, 'p99_ms')} | {e['cpu_ms_per_query']:.3f} |"
            )
        lines.append("")
    lines += _stage_sections({n: c for n, c in configs.items() if c.get("stages")})
    lines += _alternated_section(result.get("alternated_rounds"))
    lines += [
        "### Resident memory after the levels",
        "",
        "| config | process | VmRSS MB | VmHWM (peak) MB |",
        "|---|---|---:|---:|",
    ]
    for name, c in configs.items():
        for proc, s in c["memory_mb"].items():
            lines.append(f"| {name} | {proc} | {s['rss_mb']:.0f} | {s['hwm_mb']:.0f} |")
    lines += [
        "",
        f"Total benchmark time {result['runtime_s']:.0f} s. "
        "Raw numbers: bench/results/recommend_latency.json.",
        "",
    ]
    return "\n".join(lines)


def _alternated_section(ab: Mapping[str, Any] | None) -> list[str]:
    """The alternated baseline-vs-mesh rounds (`--ab-rounds`), when they ran."""
    if not ab:
        return []
    before, after = ab["before"], ab["after"]
    lines = [
        f"### {before} vs {after}, alternated rounds ({ab['callers']} callers)",
        "",
        f"{len(ab['rounds'])} rounds after the levels above, each side started afresh and serving "
        f"{ab['requests_per_side']} requests, the order swapped every round: the configurations above "
        "ran once each, minutes apart, on a machine whose speed drifts; these pairs ran back to back. "
        "Service CPU = every service process of the side, per request.",
        "",
        f"| round | first | {before} p50 ms | {after} p50 ms | {before} p99 ms | {after} p99 ms "
        f"| {before} CPU ms/req | {after} CPU ms/req |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for i, r in enumerate(ab["rounds"], start=1):
        b, a = r[before], r[after]
        lines.append(
            f"| {i} | {r['order'][0]} | {b['p50_ms']:.2f} | {a['p50_ms']:.2f} | {b['p99_ms']:.2f} "
            f"| {a['p99_ms']:.2f} | {b['service_cpu_ms_per_request']:.2f} "
            f"| {a['service_cpu_ms_per_request']:.2f} |"
        )
    ratio = {k: "–" if v is None else f"{v:.3f}" for k, v in ab["median_ratio"].items()}
    lines += [
        "",
        f"Median of the per-round ratios {after}/{before}: p50 {ratio['p50_ms']}, p99 "
        f"{ratio['p99_ms']}, service CPU per request {ratio['service_cpu_ms_per_request']}.",
        "",
    ]
    return lines


def _stage_sections(configs: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    names = list(configs)
    any_stages = next(iter(configs.values()))["stages"]
    lines += [
        f"### Where the time goes (traced samples: {any_stages['requests']} requests, 1 caller)",
        "",
        "Services restarted with KINDRED_TRACE_FILE for these samples only (writing spans costs time: the "
        "untraced levels above are the numbers), warmed by one pass over the sampled fans. Exclusive = "
        "what a stage did itself (children subtracted); exclusive means add up to the root span. Mean "
        "exclusive ms per request, per configuration (– = the stage does not exist there):",
        "",
        "| stage | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    keys: list[str] = []
    for c in configs.values():
        keys += [k for k in c["stages"]["stages"] if k not in keys]
    for key in keys:
        cells = []
        for c in configs.values():
            s = c["stages"]["stages"].get(key)
            cells.append("–" if s is None else f"{s['exclusive_mean_ms']:.3f}")
        lines.append(f"| `{key}` | " + " | ".join(cells) + " |")
    lines.append(
        "| **client-side latency of the traced sample, p50 / mean** | "
        + " | ".join(
            f"**{_ms(c['stages'].get('client'), 'p50_ms')} / {_ms(c['stages'].get('client'), 'mean_ms')}**"
            for c in configs.values()
        )
        + " |"
    )
    lines.append(
        "| client → ranking hop and client stub (client mean minus ranking's server span mean) | "
        + " | ".join(f"{c['stages'].get('outside_ranking_server_mean_ms', 0):.3f}" for c in configs.values())
        + " |"
    )
    lines.append("")
    for name, c in configs.items():
        st = c["stages"]
        lines += [
            f"<details><summary>{name}: every stage, inclusive and exclusive</summary>",
            "",
            "| stage | service | in % of requests | spans/request | incl. p50 ms | incl. p99 ms "
            "| excl. mean ms | share of root |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for key, s in st["stages"].items():
            share = 100.0 * s["in_requests"] / st["requests"] if st["requests"] else 0.0
            lines.append(
                f"| `{key}` | {s['service']} | {share:.0f} | {s['spans_per_request']:.2f} | "
                f"{_ms(s['inclusive'], 'p50_ms')} | {_ms(s['inclusive'], 'p99_ms')} | "
                f"{s['exclusive_mean_ms']:.3f} | {100 * s['share_of_root']:.1f}% |"
            )
        lines += ["", "</details>", ""]
    return lines


def _code_line(result: Mapping[str, Any]) -> str:
    code = result.get("code") or {}
    line = f"Code: commit `{str(code.get('commit', '?'))[:12]}`"
    changed = code.get("uncommitted_service_files") or []
    if changed:
        line += f" plus uncommitted changes to {len(changed)} service files (the working tree as measured)"
    if code.get("baseline_commit"):
        line += f"; baseline (before) = commit `{str(code['baseline_commit'])[:12]}`"
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
