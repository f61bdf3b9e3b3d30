"""MkDocs hook: every page in docs/tutorials/ appears under Tutorials in the navigation.

Pages listed in mkdocs.yml keep their place and title; a tutorial page not listed there is
appended, titled by its first heading, so adding an example's page needs no mkdocs.yml edit.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

SECTION = "Tutorials"
FOLDER = "tutorials"


def _listed(entries: list[Any]) -> set[str]:
    found: set[str] = set()
    for entry in entries:
        value = next(iter(entry.values())) if isinstance(entry, dict) else entry
        if isinstance(value, list):
            found |= _listed(value)
        elif isinstance(value, str):
            found.add(value)
    return found


def _title(page: Path) -> str:
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return page.stem.replace("_", " ")


def on_config(config: Any) -> Any:
    """Append unlisted tutorial pages to the Tutorials section."""
    for entry in config.nav or []:
        if isinstance(entry, dict) and isinstance(entry.get(SECTION), list):
            pages = entry[SECTION]
            listed = _listed(pages)
            folder = Path(config.docs_dir) / FOLDER
            for page in sorted(folder.glob("*.md")):
                uri = f"{FOLDER}/{page.name}"
                if uri not in listed:
                    pages.append({_title(page): uri})
    return config
