"""Unit tests of the Recommend latency benchmark's helpers: percentiles, the load generator, span
aggregation, /proc parsing and the read-modify-write of bench/RESULTS.md. Fast: no services."""

from __future__ import annotations

import json
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.latency import procinfo, report, traces
from bench.latency.load import run_closed_loop, time_calls
from bench.latency.stats import percentile, round_floats, summarize_ms

# ---------------------------------------------------------------------------------------------- stats


def test_percentile_interpolates_between_ranks() -> None:
    assert percentile([1, 2, 3, 4], 50) == 2.5
    assert percentile([4, 1, 3, 2], 0) == 1
    assert percentile([4, 1, 3, 2], 100) == 4
    assert percentile([10.0], 99) == 10.0
    assert percentile([0, 10], 90) == pytest.approx(9.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=1, max_size=60),
    st.floats(min_value=0, max_value=100),
)
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)), rel=1e-9, abs=1e-6)


def test_percentile_rejects_empty_and_out_of_range() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)
    with pytest.raises(ValueError):
        percentile([1.0], -1)


def test_summarize_ms_converts_seconds_and_reports_empty_as_such() -> None:
    s = summarize_ms([0.001, 0.002, 0.003, 0.010])
    assert s["n"] == 4
    assert s["p50_ms"] == pytest.approx(2.5)
    assert s["mean_ms"] == pytest.approx(4.0)
    assert s["max_ms"] == pytest.approx(10.0) and s["min_ms"] == pytest.approx(1.0)
    assert s["p99_ms"] == pytest.approx(float(np.percentile([1, 2, 3, 10], 99)))
    assert summarize_ms([]) == {"n": 0}


def test_round_floats_recurses() -> None:
    assert round_floats({"a": [1.23456, {"b": 2.0001}], "c": "x", "d": 3}, 2) == {
        "a": [1.23, {"b": 2.0}],
        "c": "x",
        "d": 3,
    }


# ----------------------------------------------------------------------------------------------- load


def test_closed_loop_never_exceeds_its_concurrency_and_reaches_it() -> None:
    lock = threading.Lock()
    now = {"in": 0, "peak": 0}

    def make(_: int):  # type: ignore[no-untyped-def]
        def call(item: int) -> None:
            with lock:
                now["in"] += 1
                now["peak"] = max(now["peak"], now["in"])
            time.sleep(0.002)
            with lock:
                now["in"] -= 1

        return call

    result = run_closed_loop(make, list(range(7)), concurrency=4, requests=80, warmup=8)
    assert now["peak"] == 4  # observed by the calls themselves, warm-up included
    assert result.max_in_flight <= 4
    assert result.ok == 80 and result.errors == 0
    assert result.concurrency == 4
    # 80 calls of >= 2 ms over 4 callers take >= 40 ms; closed loop, so throughput is bounded by that.
    assert result.wall_s >= 0.04
    assert result.throughput_rps == pytest.approx(80 / result.wall_s)


def test_closed_loop_sends_each_measured_item_in_order_after_the_warmup() -> None:
    seen: list[int] = []
    lock = threading.Lock()

    def make(_: int):  # type: ignore[no-untyped-def]
        def call(item: int) -> None:
            with lock:
                seen.append(item)

        return call

    items = list(range(10))
    run_closed_loop(make, items, concurrency=1, requests=25, warmup=3)
    warm, measured = seen[:3], seen[3:]
    assert measured == [i % 10 for i in range(25)]
    assert warm == [(25 + n) % 10 for n in range(3)]


def test_closed_loop_builds_one_caller_per_thread_in_that_thread() -> None:
    built: dict[int, int] = {}

    def make(index: int):  # type: ignore[no-untyped-def]
        built[index] = threading.get_ident()
        return lambda item: None

    run_closed_loop(make, [1], concurrency=3, requests=9)
    assert sorted(built) == [0, 1, 2]
    assert len(set(built.values())) == 3 and threading.get_ident() not in built.values()


def test_closed_loop_counts_errors_without_recording_their_latency() -> None:
    def make(_: int):  # type: ignore[no-untyped-def]
        def call(item: int) -> None:
            if item % 3 == 0:
                raise RuntimeError(f"boom {item}")

        return call

    result = run_closed_loop(make, list(range(9)), concurrency=2, requests=30)
    assert result.errors == 10 and result.ok == 20
    assert result.error_samples and all("boom" in s for s in result.error_samples)
    summary = result.summary()
    assert summary["n"] == 20 and summary["errors"] == 10


def test_closed_loop_measures_with_the_given_clock() -> None:
    ticks = iter(range(0, 10_000))

    def clock() -> float:
        return float(next(ticks))

    result = run_closed_loop(lambda _: lambda item: None, [0], concurrency=1, requests=5, clock=clock)
    assert result.latencies_s == [1.0] * 5  # each call spans exactly two consecutive clock reads


def test_closed_loop_reports_a_caller_that_cannot_be_built() -> None:
    def make(index: int):  # type: ignore[no-untyped-def]
        if index == 1:
            raise OSError("no channel")
        return lambda item: None

    with pytest.raises(RuntimeError, match="no channel"):
        run_closed_loop(make, [0], concurrency=2, requests=4)


def test_closed_loop_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        run_closed_loop(lambda _: lambda i: None, [0], concurrency=0, requests=1)
    with pytest.raises(ValueError):
        run_closed_loop(lambda _: lambda i: None, [], concurrency=1, requests=1)


def test_time_calls_repeats_over_items() -> None:
    calls: list[str] = []
    out = time_calls(calls.append, ["a", "b"], repeat=3, warmup=1)
    assert calls == ["a", "a", "b", "a", "b", "a", "b"]
    assert len(out) == 6 and all(x >= 0 for x in out)


# --------------------------------------------------------------------------------------------- traces


def _span(name: str, sid: str, parent: str | None, start: int, end: int, trace: str = "t1", **kw: object):  # type: ignore[no-untyped-def]
    return {
        "name": name,
        "trace_id": trace,
        "span_id": sid,
        "parent_span_id": parent,
        "service": kw.get("service", "ranking_svc"),
        "kind": kw.get("kind", "INTERNAL"),
        "start_ns": start,
        "end_ns": end,
        "attributes": kw.get("attributes", {}),
    }


def _recommend_trace(trace: str, scale: int) -> list[dict[str, object]]:
    ms = 1_000_000 * scale
    return [
        _span("/kindred.v1.RankingService/Recommend", "r", None, 0, 10 * ms, trace, kind="SERVER"),
        _span("ranking.call_retrieval", "c", "r", 1 * ms, 7 * ms, trace),
        _span(
            "/kindred.v1.RetrievalService/Retrieve",
            "rs",
            "c",
            2 * ms,
            6 * ms,
            trace,
            kind="SERVER",
            service="retrieval_svc",
        ),
        _span(
            "onnx.run",
            "u",
            "rs",
            2 * ms,
            3 * ms,
            trace,
            service="retrieval_svc",
            attributes={"kindred.model.name": "two_tower_user"},
        ),
        _span(
            "qdrant.query",
            "q1",
            "rs",
            3 * ms,
            4 * ms,
            trace,
            service="retrieval_svc",
            attributes={"kindred.retrieval.source": "popular"},
        ),
        _span(
            "qdrant.query",
            "q2",
            "rs",
            4 * ms,
            5 * ms,
            trace,
            service="retrieval_svc",
            attributes={"kindred.retrieval.source": "popular"},
        ),
        _span("onnx.run", "k", "r", 8 * ms, 9 * ms, trace, attributes={"kindred.model.name": "ranker"}),
    ]


def test_stage_breakdown_sums_per_request_and_subtracts_children() -> None:
    spans = _recommend_trace("t1", 1) + _recommend_trace("t2", 2)
    spans.append(_span("/grpc.health.v1.Health/Check", "h", None, 0, 5, "t3", kind="SERVER"))  # not a request
    out = traces.stage_breakdown(spans)
    assert out["requests"] == 2
    assert out["root"] == "server /kindred.v1.RankingService/Recommend"
    st_ = out["stages"]
    assert set(st_) == {
        "server /kindred.v1.RankingService/Recommend",
        "ranking.call_retrieval",
        "server /kindred.v1.RetrievalService/Retrieve",
        "onnx.run[two_tower_user]",
        "qdrant.query[popular]",
        "onnx.run[ranker]",
    }
    q = st_["qdrant.query[popular]"]
    assert q["spans_per_request"] == 2 and q["in_requests"] == 2
    assert q["inclusive"]["p50_ms"] == pytest.approx(3.0)  # 2 ms and 4 ms per request
    root = st_["server /kindred.v1.RankingService/Recommend"]
    assert root["inclusive"]["mean_ms"] == pytest.approx(15.0)
    assert root["exclusive_mean_ms"] == pytest.approx(15.0 - 6 * 1.5 - 1 * 1.5)
    assert st_["ranking.call_retrieval"]["exclusive_mean_ms"] == pytest.approx(2 * 1.5)
    total = sum(s["exclusive_mean_ms"] for s in st_.values())
    assert total == pytest.approx(root["inclusive"]["mean_ms"])
    assert sum(s["share_of_root"] for s in st_.values()) == pytest.approx(1.0)
    assert st_["onnx.run[two_tower_user]"]["service"] == "retrieval_svc"


def test_stage_key_qualifies_shared_names() -> None:
    assert (
        traces.stage_key({"name": "online_store.get", "service": "ranking_svc"})
        == "online_store.get[ranking_svc]"
    )
    assert (
        traces.stage_key(
            {"name": "online_store.get", "attributes": {"kindred.online_store.namespace": "fan"}}
        )
        == "online_store.get[fan]"
    )
    assert traces.stage_key({"name": "/a.B/C", "kind": "CLIENT"}) == "client /a.B/C"
    assert traces.stage_key({"name": "retrieval.retrieve"}) == "retrieval.retrieve"


def test_read_spans_skips_a_torn_last_line(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps({"name": "a"}) + "\n\n" + '{"name": "b", "tr')
    assert [s["name"] for s in traces.read_spans(path)] == ["a"]
    assert traces.read_spans(tmp_path / "missing.jsonl") == []
    assert traces.stage_breakdown([]) == {"requests": 0, "root": None, "stages": {}}


# ------------------------------------------------------------------------------------------- procinfo


def test_parse_status_reads_kb_fields() -> None:
    text = "Name:\tpython\nVmPeak:\t  999 kB\nVmHWM:\t  2048 kB\nVmRSS:\t    1024 kB\nThreads:\t3\n"
    assert procinfo.parse_status(text) == {"VmRSS": 1024, "VmHWM": 2048}
    with pytest.raises(ValueError):
        procinfo.parse_status("VmRSS:\t12 MB\n")


def test_memory_of_this_process_grows_with_an_allocation() -> None:
    before = procinfo.memory_mb(os.getpid())
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    after = procinfo.memory_mb(os.getpid())
    assert after["rss_mb"] - before["rss_mb"] > 40
    assert after["hwm_mb"] >= after["rss_mb"] > 0
    del block


def test_cpu_ticks_parse_past_a_command_name_with_spaces_and_parentheses() -> None:
    fields = ["S"] + [str(i) for i in range(4, 14)] + ["70", "30"] + ["0"] * 30
    text = "1234 (we ird) name) " + " ".join(fields)
    assert procinfo.parse_stat_cpu_ticks(text) == 100


def test_cpu_seconds_of_this_process_grow_with_work() -> None:
    before = procinfo.cpu_seconds(os.getpid())
    t0 = time.process_time()
    x = 0
    while time.process_time() - t0 < 0.15:
        x += random.random() > 2
    assert procinfo.cpu_seconds(os.getpid()) - before >= 0.1


# --------------------------------------------------------------------------------------------- report


def _fake_result() -> dict[str, object]:
    lat = {"n": 10, "p50_ms": 5.0, "p90_ms": 6.0, "p99_ms": 30.0, "mean_ms": 5.5, "max_ms": 31.0}
    return {
        "command": "python bench/bench_recommend_latency.py --quick",
        "machine": {
            "date_utc": "2026-01-01T00:00:00Z",
            "nproc": 2,
            "cpu_model": "CPU X",
            "mem_total_gb": 8,
            "python": "3.11",
            "load_before": [1.0],
            "load_during": {"mean": 2.5, "max": 3.0, "every_s": 5},
        },
        "code": {
            "commit": "abcdef1234567890",
            "uncommitted_service_files": ["ranking_svc/x.py"],
            "baseline_commit": "0123456789abcdef",
        },
        "scale": {
            "creators": 1000,
            "index_dim": 16,
            "index_mb": 3.0,
            "fans": 100,
            "fans_with_follows": 90,
            "follow_pairs": 500,
            "posts": 2000,
            "days": 7,
            "trainer_config": "tiny",
            "generate_s": 12.0,
            "train_s": None,
        },
        "request": {
            "k": 10,
            "retrieve_k": 100,
            "two_tower_n": 56,
            "hnsw_ef": 224,
            "sampled_fans": 50,
            "seed": 7,
        },
        "client": {"channels": "one channel per caller", "warmup": 20, "requests": 100},
        "configs": {
            "baseline": _fake_config("two services at commit 0123 (before)", ["ranking", "retrieval"], lat),
            "colocated": _fake_config("ranking with retrieval in its process", ["ranking"], lat),
        },
        "floor": {
            "components": {"grpc": {"label": "empty gRPC", "latency": lat, "in_floor": True}},
            "sum_p50_ms": 2.0,
            "sum_p50_ms_one_hop": 1.5,
            "als": {"factors": 64, "nnz": 500, "fit_s": 0.1},
            "retrieval_degraded_sources": {"trending": {"fans": 50, "example": "failed: LookupError"}},
        },
        "runtime_s": 60.0,
    }


def _fake_config(label: str, hops: list[str], lat: dict[str, float]) -> dict[str, object]:
    cpu = {"ranking": 2.0, **({"retrieval": 3.0} if "retrieval" in hops else {}), "client": 0.5}
    level = {**lat, "throughput_rps": 100.0, "errors": 0, "cpu_ms_per_request": cpu}
    floor = 2.0 if len(hops) == 2 else 1.5
    return {
        "label": label,
        "hops": hops,
        "levels": {"1": level, "4": level, "16": level},
        "floor_p50_ms": floor,
        "goals": {
            "p50_within_2x_floor": {
                "recommend_p50_ms": 5.0,
                "floor_p50_ms": floor,
                "ratio": 5.0 / floor,
                "met": False,
            },
            "p99_at_4_callers_le_25ms": {"p99_ms": 30.0, "met": False},
        },
        "stages": {
            "requests": 2,
            "client": lat,
            "outside_ranking_server_mean_ms": 0.5,
            "stages": {
                "onnx.run[ranker]": {
                    "service": "ranking_svc",
                    "in_requests": 2,
                    "spans_per_request": 1.0,
                    "inclusive": lat,
                    "exclusive_mean_ms": 0.2,
                    "share_of_root": 0.1,
                },
                **(
                    {
                        "client /kindred.v1.RetrievalService/Retrieve": {
                            "service": "ranking_svc",
                            "in_requests": 2,
                            "spans_per_request": 1.0,
                            "inclusive": lat,
                            "exclusive_mean_ms": 1.25,
                            "share_of_root": 0.2,
                        }
                    }
                    if "retrieval" in hops
                    else {}
                ),
            },
        },
        "memory_mb": {h: {"rss_mb": 250.0, "hwm_mb": 260.0} for h in hops},
    }


def test_render_shows_every_configuration_with_its_own_floor_and_the_goals() -> None:
    from bench.results_md import replace_section_text

    text = report.render(_fake_result())
    assert text.startswith(report.SECTION + "\n")
    assert "| baseline | 4 | 5.00 | 6.00 | 30.00 |" in text and "| colocated | 16 | 5.00 |" in text
    assert "| 3.00 | 0.50 |" in text and "| (in ranking) | 0.50 |" in text  # CPU per process
    assert "5.00 ms vs 2.00 ms (2 hops) = 2.50×" in text and "5.00 ms vs 1.50 ms (1 hop) = 3.33×" in text
    assert "| 30.00 ms | **no** |" in text
    # Per-stage before/after: one column per configuration, "–" where a stage does not exist.
    assert "| `onnx.run[ranker]` | 0.200 | 0.200 |" in text
    assert "| `client /kindred.v1.RetrievalService/Retrieve` | 1.250 | – |" in text
    assert "| colocated | ranking | 250 | 260 |" in text and "| baseline | retrieval | 250 | 260 |" in text
    assert "trending (50 of 50 fans" in text and "abcdef123456" in text and "`0123456789ab`" in text
    assert "not measured in this run" in text  # train_s None: reused data says so
    # The section goes through bench.results_md and replaces itself cleanly.
    once = replace_section_text("", report.KEY, text)
    assert replace_section_text(once, report.KEY, text) == once and once.count(report.SECTION) == 1


def test_render_keeps_a_configuration_without_a_traced_sample_out_of_the_stage_table() -> None:
    """The co-located replicas' configuration has levels and memory but no traced stages (a request's
    stages are one co-located process's)."""
    result = _fake_result()
    lat = {"n": 10, "p50_ms": 4.0, "p90_ms": 5.0, "p99_ms": 20.0, "mean_ms": 4.5, "max_ms": 21.0}
    replicas = {**_fake_config("2 co-located ranking processes", ["ranking"], lat), "stages": None}
    replicas["memory_mb"] = {"ranking r0": {"rss_mb": 300.0, "hwm_mb": 310.0}}
    result["configs"] = {**result["configs"], "colocated_x2": replicas}  # type: ignore[dict-item]
    text = report.render(result)
    assert "| colocated_x2 | 4 | 4.00 | 5.00 | 20.00 |" in text
    assert "| colocated_x2 | ranking r0 | 300 | 310 |" in text
    assert "| stage | baseline | colocated |" in text  # the stage table names only the traced ones


def test_alternated_rounds_report_the_median_of_per_round_ratios() -> None:
    from bench.bench_recommend_latency import median_of_ratios

    def side(p50: float, p99: float, cpu: float) -> dict[str, float]:
        return {"p50_ms": p50, "p99_ms": p99, "service_cpu_ms_per_request": cpu}

    rounds = [
        {"order": ["baseline", "mesh"], "baseline": side(10, 40, 6.0), "mesh": side(9, 30, 5.4)},
        {"order": ["mesh", "baseline"], "baseline": side(20, 50, 8.0), "mesh": side(20, 60, 8.0)},
        {"order": ["baseline", "mesh"], "baseline": side(10, 20, 5.0), "mesh": side(8, 19, 4.0)},
    ]
    assert median_of_ratios(rounds, "baseline", "mesh", "p99_ms") == pytest.approx(0.95)  # 0.75, 1.2, 0.95
    assert median_of_ratios(rounds[:2], "baseline", "mesh", "p50_ms") == pytest.approx((0.9 + 1.0) / 2)
    assert median_of_ratios([], "baseline", "mesh", "p50_ms") is None
    result = _fake_result()
    ratios = {k: median_of_ratios(rounds, "baseline", "mesh", k) for k in rounds[0]["mesh"]}
    result["alternated_rounds"] = {
        "before": "baseline",
        "after": "mesh",
        "callers": 4,
        "requests_per_side": 1000,
        "rounds": rounds,
        "median_ratio": ratios,
    }
    text = report.render(result)
    assert "### baseline vs mesh, alternated rounds (4 callers)" in text
    assert "| 2 | mesh | 20.00 | 20.00 | 50.00 | 60.00 | 8.00 | 8.00 |" in text
    assert "p99 0.950, service CPU per request 0.900." in text
    assert "alternated rounds" not in report.render(_fake_result())  # only when they ran


# ------------------------------------------------------------------------------------ replica sweep


def test_replica_sweep_alternates_every_combination_and_refuses_bad_lists() -> None:
    import argparse

    from bench.latency.replica_sweep import positive_ints, schedule

    order = schedule([1, 2], [2, 8], rounds=3)
    first = [(1, 2), (1, 8), (2, 2), (2, 8)]
    assert order == first + first[::-1] + first  # each round has all four; odd rounds reversed
    assert positive_ints("1, 2,4") == [1, 2, 4]
    for bad in ("", "0,1", "2,2", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_ints(bad)


def test_replica_sweep_section_lists_each_round_of_each_combination() -> None:
    from bench.latency.replica_sweep import render, summary

    def levels(p99_4: float) -> dict[str, object]:
        return {
            lv: {
                "p50_ms": 10.0,
                "p99_ms": p99_4 if lv == "4" else 50.0,
                "throughput_rps": 200.0,
                "cpu_ms_per_request": {"ranking": 9.0, "client": 0.7},
            }
            for lv in ("1", "4", "16")
        }

    result = {
        "command": "python -m bench.latency.replica_sweep --rounds 2",
        "date": "2026-11-26T22:00:00Z",
        "machine": {"cpu_model": "AMD EPYC", "nproc": 2},
        "load_average": [1.0, 1.0, 1.0],
        "data_dir": "c100000-f5000-d14-s7-bench",
        "requests": 1500,
        "combinations": [
            {"replicas": 2, "server_threads": 8, "rounds": [summary(levels(36.8)), summary(levels(40.1))]},
        ],
    }
    text = render(result)
    assert text.startswith("## Recommend — replicas per node")
    row = next(line for line in text.splitlines() if line.startswith("| 2 | 8 |"))
    assert "36.8 / 40.1" in row and "200.0 / 200.0" in row


# ------------------------------------------------------------------------------ search gate A/B


def test_search_gate_ab_alternates_and_reports_medians_and_every_round() -> None:
    from bench.latency.search_gate_ab import CONFIGS, medians, render, rounds_order

    names = list(CONFIGS)
    assert rounds_order(names, 3) == [names, names[::-1], names]
    # The gated configuration is the bench server's own flag; the served one changes nothing.
    assert CONFIGS["served"] == ({}, ()) and CONFIGS["gated"][1] == ("--gate-search",)

    def run(p50: float, p99: float) -> dict[str, float]:
        return {"p50_ms": p50, "p99_ms": p99, "throughput_rps": 150.0, "server_cpu_ms_per_call": 7.0}

    runs = {"served": [run(25.0, 35.0), run(27.0, 36.0), run(26.0, 40.0)], "gated": [run(28.0, 34.0)]}
    med = medians(runs)
    assert med["served"]["p50_ms"] == 26.0 and med["served"]["p99_ms"] == 36.0
    assert med["gated"]["p99_ms"] == 34.0
    text = render(
        {
            "command": "python -m bench.latency.search_gate_ab --rounds 3",
            "date": "2026-11-27T20:10:00Z",
            "machine": {"cpu_model": "Intel Xeon", "nproc": 2},
            "load_average": [2.0, 2.0, 2.0],
            "work": "c100000-p1000000-u10000",
            "query_encoder": "int8",
            "callers": 4,
            "requests": 1500,
            "rounds": 3,
            "runs": runs,
            "median": med,
        }
    )
    assert text.startswith("## Search — compute gate, alternated")
    served = next(line for line in text.splitlines() if line.startswith("| served |"))
    assert "**26.0** (25.0 / 27.0 / 26.0)" in served and "**36.0** (35.0 / 36.0 / 40.0)" in served


# ------------------------------------------------------------------------------ search corpus


def test_search_corpus_counts_document_frequencies_and_postings_per_query() -> None:
    from bench.latency.search_corpus import document_frequencies, postings, render, timing_summary

    df = document_frequencies([["a", "b", "a"], ["b"], ["c", "b"]])
    assert df == {"a": 1, "b": 3, "c": 1}  # a repeat inside one document counts once
    assert postings(df, ["b", "b", "a", "zzz"]) == 4  # distinct query tokens; an unknown one reads none
    t = timing_summary([1.0, 2.0, 3.0], [100, 200, 300])
    assert t["correlation_with_postings"] == 1.0 and t["ns_per_posting"] == 10_000.0
    catalogue = {
        "work": "c100000-p1000000-u10000",
        "queries": 3,
        "vocabulary": {"documents": 1_100_000, "creators": 100_000, "bm25_terms": 666, "name_trigrams": 547},
        "postings_per_query": {
            "bm25": {"mean": 90_000.0, "median": 80_000.0, "max": 260_000.0},
            "name": {"mean": 98_000.0, "median": 60_000.0, "max": 290_000.0},
            "word_initial_trigram_share": 0.44,
        },
        "engine": {"bm25": t},
    }
    real = {**catalogue, "vocabulary": {**catalogue["vocabulary"], "bm25_terms": 40_831}}
    del real["engine"]  # no index built for it: no engine rows, the postings row all the same
    text = render(
        {
            "command": "python -m bench.latency.search_corpus",
            "date": "2026-11-27T20:50:00Z",
            "machine": {"cpu_model": "Intel Xeon", "nproc": 2},
            "queries": 3,
            "catalogues": {"generated": catalogue, "real": real},
        }
    )
    rows = text.splitlines()
    generated_row = next(line for line in rows if line.startswith("| generated | 1,100,000"))
    assert "**666**" in generated_row and "**547**" in generated_row and "44%" in generated_row
    assert "90,000 / 80,000 / 260,000" in generated_row
    assert any(line.startswith("| real |") and "**40,831**" in line for line in rows)
    assert "| generated | bm25 | 2.00 | 1.00 |" in text and "| real | bm25 |" not in text


# ------------------------------------------------------------------------------ real words, text A/B


def test_real_text_splits_sentences_and_mixes_real_names() -> None:
    from bench.latency.real_text import mixed_names, sentences

    assert sentences("Cells grow. T cells die! Is p53 2.5 fold? 3 mice.") == [
        "Cells grow.",
        "T cells die!",
        "Is p53 2.5 fold?",
        "3 mice.",
    ]
    real = ["The Cure", "Björk", "Sonic Youth", "Daft Punk"]
    names = mixed_names(real, 50, np.random.default_rng(0))
    assert names[:4] == real and len(names) == 50
    heads, lasts = {"The", "Björk", "Sonic", "Daft"}, {"Cure", "Björk", "Youth", "Punk"}
    for name in names[4:]:  # the leading word(s) of one real name, the last word of another
        *head, last = name.split()
        assert " ".join(head) in heads and last in lasts
    assert mixed_names(real, 2, np.random.default_rng(0)) == real[:2]


def test_with_real_text_replaces_only_the_words() -> None:
    from bench.latency.real_text import TextPool, with_real_text
    from kindred.data.generate import GeneratorConfig, build_world

    catalogue = build_world(GeneratorConfig(fans=5, creators=30, days=1, seed=3)).catalogue
    before_creators, before_posts = list(catalogue.creators), list(catalogue.posts)
    pool = TextPool(
        titles=["Title one", "Title two"],
        sentences=["Alpha beta.", "Gamma delta.", "Epsilon zeta."],
        names=["Real Name", "Other Band"],
    )
    with_real_text(catalogue, pool)
    assert len(catalogue.creators) == len(before_creators) and len(catalogue.posts) == len(before_posts)
    for old, new in zip(before_creators, catalogue.creators, strict=True):
        assert new.description in pool.sentences
        assert (new.creator_id, new.category, new.tags, new.tiers) == (
            old.creator_id,
            old.category,
            old.tags,
            old.tiers,
        )
    assert {"Real Name", "Other Band"} <= {c.name for c in catalogue.creators}
    for old, new in zip(before_posts, catalogue.posts, strict=True):
        assert new.title in pool.titles
        used = new.text.split(". ")
        assert 2 <= len(used) <= 4 and all(s.rstrip(".") + "." in pool.sentences for s in used)
        assert (new.post_id, new.creator_id, new.access_level, new.published_at) == (
            old.post_id,
            old.creator_id,
            old.access_level,
            old.published_at,
        )


def test_search_bench_names_a_directory_per_text_and_refuses_an_unknown_text() -> None:
    from bench.bench_search_latency import build_catalogue, work_dir

    assert work_dir(10, 20, 5).name == "c10-p20-u5"
    assert work_dir(10, 20, 5, "real").name == "c10-p20-u5-real"
    with pytest.raises(ValueError, match="text must be one of"):
        build_catalogue(10, 20, seed=1, back_days=1.0, text="lorem")


def test_search_text_ab_reports_each_catalogue_and_deployment_and_the_goal() -> None:
    from bench.latency.search_gate_ab import medians, rounds_order
    from bench.latency.search_text_ab import ONE_PROCESS, render, replicas_name, run_key

    pairs = [("generated", ONE_PROCESS), ("real", ONE_PROCESS), ("generated", replicas_name(2))]
    assert rounds_order(pairs, 2) == [pairs, pairs[::-1]]

    def run(p99: float) -> dict[str, float]:
        return {"p50_ms": 20.0, "p99_ms": p99, "throughput_rps": 150.0, "server_cpu_ms_per_call": 6.0}

    runs = {
        run_key("generated", ONE_PROCESS): [run(36.0), run(38.0)],
        run_key("real", ONE_PROCESS): [run(28.0), run(31.0)],
        run_key("real", replicas_name(2)): [run(25.0), run(26.0)],
    }
    text = render(
        {
            "command": "python -m bench.latency.search_text_ab --rounds 2",
            "date": "2026-11-27T23:00:00Z",
            "machine": {"cpu_model": "AMD EPYC", "nproc": 2},
            "load_average": [2.0, 2.0, 2.0],
            "scale": "100,000 creators, 1,000,000 posts, 10,000 real encodings",
            "works": {"generated": "c100000-p1000000-u10000", "real": "c100000-p1000000-u10000-real"},
            "query_encoder": "int8",
            "callers": 4,
            "requests": 1500,
            "rounds": 2,
            "replicas": 2,
            "goal_p99_ms": 30.0,
            "runs": runs,
            "median": medians(runs),
        }
    )
    assert text.startswith("## Search — generated and real words, alternated")
    assert "| real, one process | **20.0** (20.0 / 20.0) | **29.5** (28.0 / 31.0) |" in text
    assert "generated, one process not met (37.0 ms), real, one process met (29.5 ms)" in text
    assert "real, 2 replicas met (25.5 ms)" in text


def test_search_text_ab_names_the_common_terms_share_of_each_cell() -> None:
    import argparse

    from bench.latency.search_text_ab import ONE_PROCESS, parse_share, render, run_key, search_params

    assert run_key("real", ONE_PROCESS) == "real, one process"
    assert run_key("real", ONE_PROCESS, 0.1) == "real, one process, common terms over 10% cut"
    assert parse_share("none") is None and parse_share("0.2") == 0.2
    for bad in ("0", "1", "-0.5"):
        with pytest.raises(argparse.ArgumentTypeError):
            parse_share(bad)
    # What the server is given: SearchParams fields, none for the uncut cell.
    assert search_params(None) is None and search_params(0.1) == {"bm25_common_share": 0.1}
    run = {"p50_ms": 20.0, "p99_ms": 28.0, "throughput_rps": 150.0, "server_cpu_ms_per_call": 6.0}
    result = {
        "command": "c",
        "date": "d",
        "machine": {},
        "load_average": [],
        "scale": "s",
        "works": {"generated": "g", "real": "r"},
        "query_encoder": "int8",
        "callers": 4,
        "requests": 10,
        "rounds": 1,
        "replicas": 0,
        "goal_p99_ms": 30.0,
    }
    cut = {run_key("real", ONE_PROCESS, 0.1): [run]}
    with_cut = render(
        {**result, "bm25_common_shares": [None, 0.1], "runs": cut, "median": {k: run for k in cut}}
    )
    assert "served with SearchParams.bm25_common_share" in with_cut
    plain = {run_key("real", ONE_PROCESS): [run]}
    without = render(
        {**result, "bm25_common_shares": [None], "runs": plain, "median": {k: run for k in plain}}
    )
    assert "bm25_common_share" not in without
