"""The documentation site builds with `mkdocs build --strict` (every warning an error: broken
links, pages missing from the navigation, docstrings mkdocstrings cannot read) and carries
its generated pages: the configuration reference from the schema and the Python API."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("mkdocs", reason="needs mkdocs (the docs extra: pip install -e '.[docs]')")
pytest.importorskip("material", reason="needs mkdocs-material (the docs extra)")
pytest.importorskip("mkdocstrings_handlers.python",
                    reason="needs mkdocstrings-python (the docs extra)")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The site, built once for this module's tests."""
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir",
                           str(out)], cwd=ROOT, capture_output=True, text=True, env=env,
                          timeout=900)  # a hang guard only
    assert done.returncode == 0, done.stdout + done.stderr
    return out


def page(site: Path, uri: str) -> str:
    return (site / uri / "index.html").read_text(encoding="utf-8")


def test_configuration_reference_lists_the_schema(site: Path) -> None:
    text = page(site, "reference/configuration")
    for key in ("rounds", "strategy", "noise_multiplier", "label_holder", "buffer_size",
                "[[data.institutions]]", "[data.partition]"):
        assert key in text, key
    # a refused value with the message the schema really gives
    assert "run.rounds: Input should be greater than or equal to 1 (found 0)" in text
    assert "unknown key &#39;run.roundz&#39;" in text or "unknown key 'run.roundz'" in text


def test_api_reference_documents_the_public_names(site: Path) -> None:
    import fedsilo

    text = page(site, "reference/api")
    for name in fedsilo.__all__:
        assert f'id="{fedsilo._EXPORTS[name]}.{name}"' in text, name


def test_every_tutorial_and_how_to_page_is_built(site: Path) -> None:
    for folder in ("tutorials", "how-to", "explanation"):
        for source in (ROOT / "docs" / folder).glob("*.md"):
            uri = folder if source.stem == "index" else f"{folder}/{source.stem}"
            assert (site / uri / "index.html").is_file(), source


def test_benchmark_page_names_its_scripts(site: Path) -> None:
    text = page(site, "benchmarks")
    assert "simulation_digits.py" in text and "run_all.py" in text
    assert "<!-- benchmark-results -->" not in text
