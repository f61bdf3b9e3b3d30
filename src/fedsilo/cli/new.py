"""`fedsilo new NAME [--template T] [--dir PARENT]`: a runnable project folder, as `flwr new`.

Copies src/fedsilo/templates/<T>/ (run config, model factory, data loader, sample data,
README, provisioning file) to PARENT/NAME, writing NAME where the templates hold
`__PROJECT__`; the templates' Python files are stored as `*.py-tpl` (neither imported nor
type-checked as part of fedsilo) and copied as `*.py`. Then `fedsilo run NAME/fedsilo.toml`
trains it.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

from rich.console import Console

from fedsilo.errors import ConfigError

TEMPLATES_DIR = Path(__file__).resolve().parents[1] / "templates"
TEMPLATES = ("pytorch-tabular", "pytorch-images", "sklearn")
PLACEHOLDER = "__PROJECT__"
TEXT = (".toml", ".md")  # files where the placeholder is replaced; the rest are copied as is
CODE = ".py-tpl"  # a template's Python file, copied as .py
NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    new = sub.add_parser("new", help="create a runnable project from a template")
    new.add_argument("name", metavar="NAME",
                     help="the project's folder and run name (letters, digits, '_', '-')")
    new.add_argument("--template", choices=TEMPLATES, default=TEMPLATES[0],
                     help=f"what to start from (default: {TEMPLATES[0]})")
    new.add_argument("--dir", type=Path, default=Path("."), metavar="PARENT",
                     help="the folder to create NAME in (default: the current folder)")


def create(name: str, template: str, parent: Path) -> Path:
    """Write project `name` from `template` into parent/name and return that folder.

    Raises:
        ConfigError: a bad name or template, or parent/name exists and is not empty.
    """
    if not NAME.fullmatch(name):
        raise ConfigError(f"project name '{name}' must start with a letter and hold only "
                          f"letters, digits, '_' and '-' (at most 64 characters)")
    source = TEMPLATES_DIR / template
    if template not in TEMPLATES or not source.is_dir():
        raise ConfigError(f"unknown template '{template}' (choose from {', '.join(TEMPLATES)})")
    target = parent / name
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ConfigError(f"{target} already exists and is not empty: choose another name "
                          f"or --dir")
    shutil.copytree(source, target, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for path in list(target.rglob("*")):
        if path.is_file() and path.suffix in TEXT:
            path.write_text(path.read_text().replace(PLACEHOLDER, name))
        elif path.is_file() and path.suffix == CODE:
            path.rename(path.with_suffix(".py"))
    return target


def new_cmd(args: argparse.Namespace, console: Console) -> int:
    target = create(args.name, args.template, args.dir)
    console.print(f"created {target} (template {args.template}); train it with\n"
                  f"  fedsilo run {target / 'fedsilo.toml'}\n"
                  f"and see {target / 'README.md'} for deployment", highlight=False)
    return 0
