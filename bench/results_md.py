"""One section per benchmark in bench/RESULTS.md, replaced in place by the benchmark that owns it.

Each benchmark writes only its own section, delimited by `<!-- key:begin -->` / `<!-- key:end -->`
markers, so every other byte of the file stays as it was. A section written before the markers
existed (a bare `## Title` up to the next `## ` header or `<!--` marker, outside code fences) is
found by its title and replaced once; from then on it carries markers. The file is written
atomically (tmp + rename), so a benchmark interrupted mid-write never leaves half a file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from kindred.fileio import write_text_atomic

RESULTS_MD = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_DIR = Path(__file__).resolve().parent / "results"
FILE_HEADER = "# Benchmark results\n"


def _boundaries(lines: Sequence[str]) -> list[int]:
    """Lines where an unmarked section may start or must end: `## ` headers and `<!--` markers."""
    out, fenced = [], False
    for i, line in enumerate(lines):
        if line.lstrip().startswith("```"):
            fenced = not fenced
        elif not fenced and line.startswith(("## ", "<!--")):
            out.append(i)
    return out


def replace_section_text(text: str, key: str, section: str) -> str:
    """`text` with benchmark `key`'s section replaced by `section` (appended if absent).

    `section` must start with its `## ` title line; the markers are added here.
    """
    if not section.startswith("## "):
        raise ValueError("a section must start with its '## ' title line")
    begin, end = f"<!-- {key}:begin -->", f"<!-- {key}:end -->"
    block = f"{begin}\n{section.strip(chr(10))}\n{end}\n"
    if not text.strip():
        return FILE_HEADER + "\n" + block
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        return head + block.rstrip("\n") + rest.split(end, 1)[1]
    title = section.splitlines()[0].rstrip()
    lines = text.splitlines(keepends=True)
    bounds = _boundaries(lines)
    start = next((i for i in bounds if lines[i].rstrip("\r\n") == title), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + block
    stop = next((i for i in bounds if i > start), len(lines))
    tail = "".join(lines[stop:])
    return "".join(lines[:start]) + block + ("\n" + tail if tail else "")


def write_section(key: str, section: str, md_path: Path = RESULTS_MD) -> None:
    """Replace (or append) benchmark `key`'s section of `md_path`, atomically."""
    text = md_path.read_text(encoding="utf-8") if md_path.is_file() else ""
    new = replace_section_text(text, key, section)
    write_text_atomic(md_path, new)


def run_header(benchmark: str, invocation: str, argv: Sequence[str] | None) -> dict[str, Any]:
    """The fields every result file starts with: its name, the command that produced it (`invocation`
    and the arguments, `argv` or the process's own), the UTC time and the machine."""
    import sys
    import time

    from bench.latency.machine import describe

    args = list(argv) if argv is not None else sys.argv[1:]
    return {
        "benchmark": benchmark,
        "command": " ".join([invocation, *args]),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": describe(),
    }


def write_results(
    key: str,
    result: Mapping[str, Any],
    section: str,
    *,
    results_dir: Path = RESULTS_DIR,
    md_path: Path = RESULTS_MD,
) -> Path:
    """A benchmark's two outputs: `result` as `results_dir/<key>.json` and `section` as its RESULTS.md
    section (both atomically); returns the JSON's path."""
    results_dir.mkdir(parents=True, exist_ok=True)
    out = results_dir / f"{key}.json"
    write_text_atomic(out, json.dumps(result, indent=2) + "\n")
    write_section(key, section, md_path)
    return out
