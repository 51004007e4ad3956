"""bench.results_md: each benchmark replaces only its own RESULTS.md section."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results_md import replace_section_text, write_section


def test_appends_then_replaces_only_its_own_marked_section(tmp_path: Path) -> None:
    md = tmp_path / "RESULTS.md"
    write_section("a", "## A\n\nfirst a\n", md)
    write_section("b", "## B\n\nfirst b\n", md)
    write_section("a", "## A\n\nsecond a\n", md)
    text = md.read_text(encoding="utf-8")
    assert text.startswith("# Benchmark results\n")
    assert "first a" not in text and "second a" in text and "first b" in text
    assert text.index("second a") < text.index("first b"), "a section keeps its place in the file"
    assert text.count("<!-- a:begin -->") == 1 and text.count("<!-- b:end -->") == 1


def test_an_unmarked_legacy_section_is_replaced_once_and_gains_markers() -> None:
    text = "# Benchmark results\n\n## Old\n\nstale\n```\n## not a header\n```\n\n## Other\n\nkeep\n"
    new = replace_section_text(text, "old", "## Old\n\nfresh\n")
    assert "stale" not in new and "## not a header" not in new
    assert "<!-- old:begin -->\n## Old\n\nfresh\n<!-- old:end -->" in new
    assert new.endswith("## Other\n\nkeep\n")
    assert replace_section_text(new, "old", "## Old\n\nfresher\n").count("## Old") == 1


def test_a_section_without_a_title_is_refused() -> None:
    with pytest.raises(ValueError, match="title"):
        replace_section_text("", "x", "no title\n")


def test_write_results_writes_the_json_and_only_its_own_section(tmp_path: Path) -> None:
    from bench.results_md import write_results

    md = tmp_path / "RESULTS.md"
    md.write_text("# Benchmark results\n\n<!-- other:begin -->\n## Other\n\nkept\n<!-- other:end -->\n")
    out = write_results(
        "mine", {"p99_ms": 28.4}, "## Mine\n\n28.4 ms\n", results_dir=tmp_path / "r", md_path=md
    )
    assert out == tmp_path / "r" / "mine.json"
    assert json.loads(out.read_text()) == {"p99_ms": 28.4}
    text = md.read_text()
    assert "kept" in text and "<!-- mine:begin -->\n## Mine\n\n28.4 ms\n<!-- mine:end -->" in text


def test_run_header_names_the_command_time_and_machine() -> None:
    from bench.results_md import run_header

    header = run_header("search_corpus", "python -m bench.latency.search_corpus", ["--queries", "5"])
    assert header["benchmark"] == "search_corpus"
    assert header["command"] == "python -m bench.latency.search_corpus --queries 5"
    assert header["date"].endswith("Z") and header["machine"]["nproc"] >= 1
    assert run_header("x", "python -m x", [])["command"] == "python -m x"
