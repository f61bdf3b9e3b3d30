"""MkDocs hook: the Python API page lists exactly the public names of `fedsilo`.

Replaces the `<!-- api-members -->` marker of reference/api.md with one mkdocstrings block per
name in `fedsilo._EXPORTS` (the curated public API), grouped by defining module, so a name
added to or removed from the package's API appears on or leaves the page by itself.
"""

from __future__ import annotations

from typing import Any

MARKER = "<!-- api-members -->"
PAGE = "reference/api.md"


def members() -> str:
    """Markdown: a heading per defining module, a `:::` block per public name."""
    import fedsilo

    by_module: dict[str, list[str]] = {}
    for name, module in fedsilo._EXPORTS.items():
        by_module.setdefault(module, []).append(name)
    out = []
    for module in sorted(by_module):
        out += [f"## `{module}`", ""]
        for name in sorted(by_module[module]):
            out += [f"::: {module}.{name}", "    options:", "      heading_level: 3", ""]
    return "\n".join(out)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    """Fill the API page's marker."""
    if page.file.src_uri != PAGE:
        return markdown
    return markdown.replace(MARKER, members())
