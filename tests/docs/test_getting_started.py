"""Every code block of docs/getting-started.md works, in order, in a fresh folder.

Each block carries a marker: `run` (bash or Python, run with the project's environment),
`file PATH` (written there for the blocks after it), `fragment` (checked without running:
a config against the schema, Python compiled), `output` (shown, not run) and `install` (the
README's two commands, which CI runs itself: they must stay word for word the README's).
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedsilo.config.schema import parse_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "getting-started.md"
BLOCK = re.compile(r"<!-- block: (\w+)(?: (\S+))? -->\n```(\w*)\n(.*?)\n```", re.DOTALL)
KINDS = {"run", "file", "fragment", "output", "install"}


def blocks(text: str) -> list[tuple[str, str, str, str]]:
    """(kind, argument, language, code) of each marked block."""
    return [(m[1], m[2] or "", m[3], m[4]) for m in BLOCK.finditer(text)]


def fences(text: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith("```")) // 2


def readme_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up: the two commands", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.*?)\n```", section, re.DOTALL)


def test_every_block_is_marked() -> None:
    text = PAGE.read_text()
    found = blocks(text)
    assert len(found) == fences(text), "a code block without a <!-- block: KIND --> marker"
    assert {kind for kind, *_ in found} <= KINDS


def test_install_blocks_are_the_readmes_two_commands() -> None:
    installs = [code for kind, _, _, code in blocks(PAGE.read_text()) if kind == "install"]
    assert installs == readme_commands()
    assert len(installs) == 2


@pytest.mark.integration
@pytest.mark.slow
def test_the_page_runs_in_a_fresh_folder(tmp_path: Path) -> None:
    venv = Path(sys.prefix)
    if not (venv / "bin" / "fedsilo").exists():
        pytest.skip("the tests do not run in an environment with the fedsilo command "
                    "(scripts/setup-tests.sh makes one)")
    (tmp_path / ".venv").symlink_to(venv)
    ran = 0
    for kind, argument, language, code in blocks(PAGE.read_text()):
        if kind == "file":
            (tmp_path / argument).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / argument).write_text(code + "\n")
        elif kind == "fragment" and language == "toml":
            parse_config(tomllib.loads(code), tmp_path, "getting-started fragment")
        elif kind == "fragment":
            compile(code, "getting-started fragment", "exec")
        elif kind == "run":
            command = (["bash", "-euo", "pipefail", "-c", code] if language == "bash"
                       else [str(tmp_path / ".venv" / "bin" / "python"), "-c", code])
            done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True,
                                  timeout=1800)  # a hang guard only
            assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
            assert "Traceback" not in done.stderr, done.stderr
            ran += 1
    assert ran >= 4
    results = tmp_path / "results"
    for run in ("heart-disease", "my-consortium"):  # the demo's and the own CSVs' runs
        folders = list(results.glob(f"{run}-*"))
        assert folders and all((p / "comparison.json").is_file() for p in folders), run
