"""Resident memory of a process, read from /proc/<pid>/status (Linux).

VmRSS is the resident set now, VmHWM its peak ("high water mark") over the process's life; both
include shared pages the process touched (e.g. mmapped index files and shared libraries).
"""

from __future__ import annotations

import os
from pathlib import Path

FIELDS = ("VmRSS", "VmHWM")


def parse_status(text: str, fields: tuple[str, ...] = FIELDS) -> dict[str, int]:
    """{"VmRSS": kB, ...} from the text of a /proc/<pid>/status file; absent fields are left out."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        if not sep or key not in fields:
            continue
        parts = rest.split()
        if len(parts) != 2 or parts[1] != "kB":
            raise ValueError(f"unexpected {key} line in /proc status: {line!r}")
        out[key] = int(parts[0])
    return out


def memory_mb(pid: int, proc_root: Path = Path("/proc")) -> dict[str, float]:
    """{"rss_mb", "hwm_mb"} of a running process (MiB); FileNotFoundError if it is gone."""
    kb = parse_status((proc_root / str(pid) / "status").read_text(encoding="ascii", errors="replace"))
    return {"rss_mb": kb.get("VmRSS", 0) / 1024.0, "hwm_mb": kb.get("VmHWM", 0) / 1024.0}


def parse_stat_cpu_ticks(text: str) -> int:
    """utime + stime (clock ticks) from the text of /proc/<pid>/stat.

    The command name (field 2) is in parentheses and may contain spaces, so fields are counted from
    the last ')': utime and stime are fields 14 and 15 of the file.
    """
    rest = text[text.rindex(")") + 2 :].split()
    return int(rest[11]) + int(rest[12])  # rest[0] is field 3 (state)


def cpu_seconds(pid: int, proc_root: Path = Path("/proc")) -> float:
    """User + system CPU time the process has used so far (its threads included, not its children)."""
    ticks = parse_stat_cpu_ticks(
        (proc_root / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    )
    return ticks / os.sysconf("SC_CLK_TCK")
