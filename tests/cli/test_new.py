"""`fedsilo new`: every template makes a project that `fedsilo run` trains to completion."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from fedsilo.cli.main import main
from fedsilo.cli.new import TEMPLATES
from fedsilo.config.schema import load_config
from tests.integration.helpers import FEDSILO

HANG_GUARD = 900  # seconds: only against a hang, never a speed requirement


def fedsilo(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FEDSILO, *map(str, args)], capture_output=True, text=True,
                          timeout=HANG_GUARD)


@pytest.mark.parametrize("template", TEMPLATES)
def test_each_template_makes_a_project_that_trains(template: str, tmp_path: Path) -> None:
    name = f"my_{template.replace('-', '_')}"
    made = fedsilo("new", name, "--template", template, "--dir", tmp_path)
    assert made.returncode == 0, made.stdout + made.stderr
    project = tmp_path / name
    for file in ("fedsilo.toml", "model.py", "data.py", "README.md", "project.toml"):
        assert (project / file).is_file(), file
    assert any((project / "data").iterdir())
    assert load_config(project / "fedsilo.toml").run.name == name
    readme = (project / "README.md").read_text()
    for command in (f"fedsilo run {name}/fedsilo.toml", "fedsilo provision",
                    f"--code {name}", "--loader data:load", "factories"):
        assert command in readme, command
    assert "__PROJECT__" not in readme + (project / "fedsilo.toml").read_text()
    assert not list(project.rglob("*-tpl"))

    out = tmp_path / "results"
    run = fedsilo("run", project / "fedsilo.toml", "--output", out, "--quiet")
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(list(out.glob(f"{name}-*/model.npz"))) == 1, list(out.rglob("*"))


def test_default_template_is_pytorch_tabular(tmp_path: Path) -> None:
    assert main(["new", "proj", "--dir", str(tmp_path)]) == 0
    assert load_config(tmp_path / "proj" / "fedsilo.toml").model.framework == "torch"
    assert (tmp_path / "proj" / "data" / "hospital-a.csv").is_file()


def test_an_existing_non_empty_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    refused = fedsilo("new", "taken", "--dir", tmp_path)
    assert refused.returncode == 2
    assert "taken" in refused.stdout and "not empty" in refused.stdout
    assert sorted(p.name for p in (tmp_path / "taken").iterdir()) == ["notes.txt"]


def test_an_empty_existing_folder_is_filled(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["new", "empty", "--dir", str(tmp_path)]) == 0
    assert (tmp_path / "empty" / "fedsilo.toml").is_file()


@pytest.mark.parametrize("name", ["1st", "my project", "../escape", "a/b", "x.y", ""])
def test_a_bad_name_is_refused(name: str, tmp_path: Path,
                               capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["new", name, "--dir", str(tmp_path)]) == 2
    assert "project name" in capsys.readouterr().out
    assert list(tmp_path.iterdir()) == []


def test_an_unknown_template_is_refused_by_argparse(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["new", "proj", "--template", "tensorflow", "--dir", str(tmp_path)])
    assert exit_.value.code == 2
    assert "invalid choice: 'tensorflow'" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
