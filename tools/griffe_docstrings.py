"""A griffe extension that lets mkdocstrings render normguard's docstrings as written.

The docstrings are written for ``help()`` and doctest: Google-style sections with a few
reStructuredText habits. This extension rewrites, for the documentation site only (the
sources are not touched):

* ``Example:`` headings into ``Examples:``, so that ``>>>`` lines are shown as code (and not
  read as Markdown, where ``['below_floor']`` looks like a link);
* an argument entry naming several arguments (``a, b, c: text``) into one entry per name;
* Sphinx roles (``:class:`~normguard.options.GuardOptions```) into inline code.

mkdocs.yml loads it with ``extensions: [tools/griffe_docstrings.py:DocstringTidy]``.

Example:
    >>> print(tidy("Args:\\n    a, b: shared text.\\n\\nExample:"))
    Args:
        a: shared text.
        b: shared text.
    <BLANKLINE>
    Examples:
    >>> tidy("see :class:`~normguard.options.GuardOptions` and :mod:`normguard.actions`")
    'see `GuardOptions` and `normguard.actions`'
"""

from __future__ import annotations

import re
from typing import Any

try:  # the site build has griffe (mkdocstrings[python]); the doctest above does not need it
    from griffe import Extension
except ImportError:  # pragma: no cover - only without the docs extra
    Extension = object  # type: ignore[assignment,misc]

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj|ref):`(~?)([^`]+)`")
_EXAMPLE = re.compile(r"^(\s*)Example:\s*$", re.MULTILINE)
_SHARED_ENTRY = re.compile(r"^(\s*)((?:\w+,\s*)+\w+):[ \t]")


def _role(match: re.Match[str]) -> str:
    target = match.group(2)
    return f"`{target.rsplit('.', 1)[-1] if match.group(1) else target}`"


def _split_shared_entries(text: str) -> str:
    """``a, b: text`` (with its continuation lines) -> one entry per name."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        match = _SHARED_ENTRY.match(lines[i])
        if match is None:
            out.append(lines[i])
            i += 1
            continue
        indent = match.group(1)
        names = [n.strip() for n in match.group(2).split(",")]
        body = [lines[i][match.end() :]]
        i += 1
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > len(indent):
            body.append(lines[i])
            i += 1
        for name in names:
            out.append(f"{indent}{name}: {body[0]}")
            out.extend(body[1:])
    return "\n".join(out)


def tidy(text: str) -> str:
    """The docstring ``text`` as mkdocstrings' Google-style parser reads it best."""
    text = _EXAMPLE.sub(r"\1Examples:", text)
    text = _split_shared_entries(text)
    return _ROLE.sub(_role, text)


class DocstringTidy(Extension):  # type: ignore[misc]
    """Rewrite every docstring with :func:`tidy` as griffe loads it."""

    def on_instance(self, *, obj: Any, **kwargs: Any) -> None:
        docstring = getattr(obj, "docstring", None)
        if docstring is not None:
            docstring.value = tidy(docstring.value)
