"""MkDocs hooks for normguard's site (mkdocs.yml: ``hooks: [tools/mkdocs_hooks.py]``).

The pages link files of the repository outside ``docs/`` by their relative path (for example
``../benchmarks/RESULTS.md``), which works where the pages are read on a code host. The site
has no copy of those files, so on the site such a link becomes a link into the repository at
``repo_url`` when mkdocs.yml sets one, and otherwise the path as inline code; MkDocs then has
no broken link to report. Links to pages and images inside ``docs/`` are left alone, and a
relative link to a file that does not exist anywhere stays as written, so ``--strict`` still
fails on it.

Example:
    >>> from pathlib import Path
    >>> docs = Path(__file__).resolve().parents[1] / "docs"
    >>> outside_links("[results](../benchmarks/RESULTS.md)", docs / "measurements.md", "")
    '`benchmarks/RESULTS.md` (results)'
    >>> outside_links("[the demo](getting-started.md#the-demo)", docs / "index.md", "https://example.org/repo")
    '[the demo](getting-started.md#the-demo)'
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
_LINK = re.compile(r"(?<!!)\[([^\]]+)\]\(([^)\s#]+)(#[^)\s]*)?\)")


def outside_links(markdown: str, page: Path, repo_url: str) -> str:
    """``markdown`` with its relative links to repository files outside ``docs/`` made site-safe."""

    def replace(match: re.Match[str]) -> str:
        text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        if re.match(r"^[a-z][a-z0-9+.-]*:", target) or target.startswith("/"):
            return match.group(0)  # an absolute URL or a site path
        path = (page.parent / target).resolve()
        if path.is_relative_to(DOCS) or not path.is_relative_to(ROOT) or not path.exists():
            return match.group(0)
        relative = path.relative_to(ROOT).as_posix()
        if repo_url:
            return f"[{text}]({repo_url.rstrip('/')}/blob/main/{relative}{anchor})"
        return f"`{relative}`" if text.strip("`") == relative else f"`{relative}` ({text})"

    return _LINK.sub(replace, markdown)


def on_page_markdown(markdown: str, *, page: Any, config: Any, files: Any) -> str:
    return outside_links(markdown, Path(page.file.abs_src_path), config.get("repo_url") or "")
