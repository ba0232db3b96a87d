"""Compact storage of the suite's results: one xz-compressed JSON-lines file per task and grid.

A result (one run: its numbers, events, verdicts and per-epoch trace, see ``harness.py``) is one
line of ``<root>/<task>.jsonl.xz``. A finished run is appended at once as its own xz stream
(``lzma`` reads concatenated streams as one file), under an advisory lock, so two runners can
share a file; :func:`compact` rewrites a file as one sorted stream, which is what is committed.
When a run is saved twice (``--force``), the later line wins.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> root = Path(tempfile.mkdtemp())
    >>> append(root, {"task": "t", "noise": 0.0, "seed": 0, "arm": "none", "x": 1})
    >>> append(root, {"task": "t", "noise": 0.0, "seed": 0, "arm": "none", "x": 2})
    >>> [r["x"] for r in load(root)]
    [2]
    >>> compact(store_path(root, "t")); [r["x"] for r in load(root)]
    [2]
"""

from __future__ import annotations

import fcntl
import json
import lzma
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SUFFIX = ".jsonl.xz"
_cache: dict[Path, tuple[tuple[int, int], list[dict[str, Any]]]] = {}


def store_path(root: Path, task: str) -> Path:
    """The file that holds ``task``'s results under ``root``."""
    return Path(root) / f"{task}{SUFFIX}"


def run_key(result: dict[str, Any]) -> tuple[Any, ...]:
    """What identifies a run: task, noise kind, optimizer, noise level, seed, arm."""
    return (
        result["task"],
        result.get("noise_kind", "uniform"),
        result.get("optimizer", "adamw"),
        float(result["noise"]),
        int(result["seed"]),
        result["arm"],
    )


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def read(path: Path) -> list[dict[str, Any]]:
    """Every result in one file, later duplicates replacing earlier ones (order of first appearance)."""
    path = Path(path)
    if not path.exists():
        return []
    st = path.stat()
    stamp = (st.st_mtime_ns, st.st_size)
    hit = _cache.get(path)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    with lzma.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                out[run_key(r)] = r
    results = list(out.values())
    _cache[path] = (stamp, results)
    return results


def load(root: Path) -> list[dict[str, Any]]:
    """Every result of every task file under ``root`` (files in name order)."""
    return [r for path in sorted(Path(root).glob(f"*{SUFFIX}")) for r in read(path)]


def append(root: Path, result: dict[str, Any]) -> None:
    """Append one result to its task's file (one xz stream, written in one call, under a lock)."""
    path = store_path(root, result["task"])
    blob = lzma.compress((json.dumps(result, separators=(",", ":"), ensure_ascii=False) + "\n").encode())
    with _locked(path), open(path, "ab") as f:
        f.write(blob)


def compact(path: Path) -> None:
    """Rewrite a file as one xz stream, one line per run (the last saved), sorted by run key."""
    path = Path(path)
    with _locked(path):
        _cache.pop(path, None)
        results = sorted(read(path), key=lambda r: tuple(str(k) for k in run_key(r)))
        tmp = path.with_name(path.name + ".tmp")
        with lzma.open(tmp, "wt", encoding="utf-8", preset=9 | lzma.PRESET_EXTREME) as f:
            for r in results:
                f.write(json.dumps(r, separators=(",", ":"), ensure_ascii=False) + "\n")
        os.replace(tmp, path)
        _cache.pop(path, None)


def import_json_dir(root: Path) -> int:
    """Move the one-JSON-file-per-run results under ``root/<task>/`` into ``root/<task>.jsonl.xz``
    (the suite's layout before this module); returns how many files were moved and deleted."""
    moved = 0
    for folder in sorted(p for p in Path(root).iterdir() if p.is_dir()):
        files = sorted(folder.glob("*.json"))
        for f in files:
            append(root, json.loads(f.read_text()))
        compact(store_path(root, folder.name))
        for f in files:
            f.unlink()
        moved += len(files)
        if not any(folder.iterdir()):
            folder.rmdir()
    return moved


def find(root: Path | None, key: tuple[Any, ...]) -> dict[str, Any] | None:
    """The saved result with this :func:`run_key` under ``root`` (None if absent)."""
    if root is None:
        return None
    for r in read(store_path(root, key[0])):
        if run_key(r) == key:
            return r
    return None


__all__ = ["SUFFIX", "append", "compact", "find", "import_json_dir", "load", "read", "run_key", "store_path"]
