"""Data beyond one CSV: Parquet tables, .npz arrays, folders of images and the institution's
own loader each run end to end, and federated image normalisation equals the pooled one."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from fedsilo.config.schema import RunConfig, parse_config
from fedsilo.core.params import digest
from fedsilo.data.arrays import ArrayData, read_image_folder
from fedsilo.data.loading import read_source, read_table
from fedsilo.errors import ConfigError, DataError
from fedsilo.simulation.run import run_simulation
from tests.conftest import EXAMPLES, example_module

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DIGITS = EXAMPLES / "digits_images"
HEART = EXAMPLES / "heart_disease"
SITES = 3


@pytest.fixture(scope="module")
def image_sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits example's image folders, written by its own script (3 sites)."""
    out = tmp_path_factory.mktemp("digits") / "data"
    example_module(DIGITS, "prepare_data").write_sites(out, sites=SITES, alpha=0.3, seed=0)
    return out


@pytest.fixture(autouse=True)
def example_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(DIGITS))  # `fedsilo run` does this for the config folder


def digits_config(institutions: list[dict[str, Any]], base: Path, rounds: int = 2,
                  sections: dict[str, Any] | None = None, **data: Any) -> RunConfig:
    return parse_config({
        "run": {"name": "sources", "rounds": rounds, "compare": False, "seed": 0},
        "data": {"task": "multiclass", "institutions": institutions, **data},
        "model": {"factory": "digits_cnn:cnn", "args": {"channels": 4}},
        "client": {"epochs": 1, "batch_size": 32, "lr": 0.05},
        "store": {"enabled": False}, **(sections or {})}, base)


def folders(root: Path) -> list[dict[str, Any]]:
    return [{"name": f"site-{k}", "path": str(root / f"site-{k}")} for k in range(SITES)]


def run_digest(cfg: RunConfig) -> str:
    return digest(run_simulation(cfg, write=False).history.params)


@pytest.fixture(scope="module")
def folder_digest(image_sites: Path) -> str:
    sys.path.insert(0, str(DIGITS))
    try:
        return run_digest(digits_config(folders(image_sites), image_sites))
    finally:
        sys.path.remove(str(DIGITS))


def test_image_folders_train_a_cnn_by_factory(image_sites: Path) -> None:
    result = run_simulation(digits_config(folders(image_sites), image_sites), write=False)
    assert result.feature_names == ["channel_0"]  # one grayscale channel
    assert result.final["accuracy"] > 0.2  # ten classes: chance is 0.1


def test_npz_institutions_equal_the_same_images_as_folders(image_sites: Path, tmp_path: Path,
                                                          folder_digest: str) -> None:
    sources = []
    for k in range(SITES):
        data = read_image_folder(image_sites / f"site-{k}")
        np.savez(tmp_path / f"site-{k}.npz", x=data.x, y=data.y.astype(int))
        sources.append({"name": f"site-{k}", "path": f"site-{k}.npz"})
    assert run_digest(digits_config(sources, tmp_path)) == folder_digest


def load_tensor_dataset(name: str, args: dict[str, Any]) -> torch.utils.data.Dataset:
    """A user's loader: a torch Dataset of (image tensor, label tensor) pairs."""
    data = read_image_folder(Path(args["root"]) / name)
    return torch.utils.data.TensorDataset(torch.from_numpy(data.x),
                                          torch.from_numpy(data.y.astype(np.int64)))


def test_a_custom_loader_equals_the_folders_it_reads(image_sites: Path,
                                                     folder_digest: str) -> None:
    cfg = digits_config([{"name": f"site-{k}"} for k in range(SITES)], image_sites,
                        loader="tests.data.test_sources:load_tensor_dataset",
                        loader_args={"root": str(image_sites)})
    assert run_digest(cfg) == folder_digest


def heart(tmp_path: Path, suffix: str) -> RunConfig:
    raw = tomllib.loads((HEART / "heart_disease.toml").read_text())
    raw["run"].update(rounds=2, compare=False)
    raw["store"] = {"enabled": False}
    if suffix != ".csv":
        for inst in raw["data"]["institutions"]:
            table = read_table(HEART / inst["path"], raw["data"]["columns"], ("?", ""))
            table.to_parquet(tmp_path / f"{inst['name']}{suffix}")
            inst["path"] = f"{inst['name']}{suffix}"
        raw["data"].pop("columns")
    return parse_config(raw, tmp_path if suffix != ".csv" else HEART)


def test_parquet_institutions_equal_their_csv_files(tmp_path: Path) -> None:
    assert run_digest(heart(tmp_path, ".parquet")) == run_digest(heart(tmp_path, ".csv"))


def test_image_normalisation_is_the_pooled_mean_and_deviation(image_sites: Path) -> None:
    from fedsilo.session import run_session
    from fedsilo.transport.inprocess import InProcessTransport

    cfg = digits_config(folders(image_sites), image_sites)
    from fedsilo.client.institution import Institution
    from fedsilo.config.build import build_schema

    tables = {f"site-{k}": read_source(image_sites / f"site-{k}") for k in range(SITES)}
    members = {n: Institution(n, t) for n, t in tables.items()}
    schema = build_schema(cfg, next(iter(tables.values())))
    session = run_session(cfg.model_copy(update={"run": cfg.run.model_copy(
        update={"rounds": 1})}), InProcessTransport(dict(members)), schema, "norm")
    pixels = np.concatenate([m.split(session.setup["data"]).train.x.ravel()  # type: ignore[union-attr]
                             for m in members.values()]).astype(np.float64)
    pre = session.preprocessor
    assert pre.means["channel_0"] == pytest.approx(pixels.mean(), rel=1e-12)
    assert pre.stds["channel_0"] == pytest.approx(pixels.std(), rel=1e-9)


def test_secure_preprocessing_of_images_sums_the_same_statistics(image_sites: Path) -> None:
    plain = digits_config(folders(image_sites), image_sites, rounds=1)
    secure = digits_config(folders(image_sites), image_sites, rounds=1,
                           sections={"aggregation": {"secure": "secagg+", "threshold": 2}},
                           levels={"label": [str(d) for d in range(10)]})
    a = run_simulation(plain, write=False)
    b = run_simulation(secure, write=False)
    assert b.final["accuracy"] == pytest.approx(a.final["accuracy"], abs=0.05)


# refusals: each names the problem (never a value) before any training ---------------------

def test_an_npz_without_labels_is_refused_naming_the_arrays(tmp_path: Path) -> None:
    np.savez(tmp_path / "a.npz", inputs=np.zeros((4, 1, 8, 8)))
    with pytest.raises(DataError, match=r"a.npz: no array named \['x', 'y'\].*'inputs'"):
        read_source(tmp_path / "a.npz")


def test_an_npz_with_pickled_objects_is_refused(tmp_path: Path) -> None:
    np.savez(tmp_path / "p.npz", x=np.array([{"a": 1}, {"b": 2}], dtype=object), y=[0, 1])
    with pytest.raises(DataError, match="plain arrays"):
        read_source(tmp_path / "p.npz")


def test_images_of_two_sizes_are_refused(tmp_path: Path) -> None:
    for label, size in (("a", 8), ("b", 9)):
        (tmp_path / "imgs" / label).mkdir(parents=True)
        Image.fromarray(np.zeros((size, size), np.uint8)).save(tmp_path / "imgs" / label / "0.png")
    with pytest.raises(DataError, match="images of 2 sizes"):
        read_source(tmp_path / "imgs")


def test_a_folder_without_images_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty" / "cat").mkdir(parents=True)
    with pytest.raises(DataError, match="no images in class subfolders"):
        read_source(tmp_path / "empty")


def test_inputs_of_another_shape_than_declared_are_refused(image_sites: Path) -> None:
    cfg = digits_config(folders(image_sites), image_sites, shape=[1, 9, 9])
    with pytest.raises(DataError, match=r"inputs shaped \[1, 8, 8\], the run's are \[1, 9, 9\]"):
        run_simulation(cfg, write=False)


def failing_loader(name: str, args: dict[str, Any]) -> Any:
    raise ValueError("patient 4711 has a glucose of 312")


def wrong_loader(name: str, args: dict[str, Any]) -> Any:
    return [1, 2, 3]


def test_a_failing_loader_is_refused_without_its_text(image_sites: Path) -> None:
    cfg = digits_config([{"name": "site-0"}], image_sites,
                        loader="tests.data.test_sources:failing_loader")
    with pytest.raises(DataError, match="failed with ValueError") as info:
        run_simulation(cfg, write=False)
    assert "4711" not in str(info.value) and "312" not in str(info.value)


def test_a_loader_returning_something_else_is_refused(image_sites: Path) -> None:
    cfg = digits_config([{"name": "site-0"}], image_sites,
                        loader="tests.data.test_sources:wrong_loader")
    with pytest.raises(DataError, match=r"must yield \(input, label\) pairs"):
        run_simulation(cfg, write=False)


def test_an_institution_without_a_path_or_loader_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"have no path"):
        digits_config([{"name": "site-0"}], Path("."))


def test_array_data_where_a_table_is_declared_is_refused(image_sites: Path) -> None:
    table = pd.DataFrame({"a": [1.0, 2.0, 3.0], "label": [0, 1, 0]})
    cfg = digits_config(folders(image_sites), image_sites)
    tables = {"site-0": read_source(image_sites / "site-0"), "site-1": table}
    with pytest.raises(DataError, match="holds a table, the run reads array data"):
        run_simulation(cfg, write=False, tables=tables)
    assert isinstance(tables["site-0"], ArrayData)


def test_sixteen_bit_images_are_scaled_not_clipped(tmp_path: Path) -> None:
    folder = tmp_path / "scans" / "a"
    folder.mkdir(parents=True)
    pixels = np.array([[1000, 30000], [65535, 100]], dtype=np.uint16)
    Image.fromarray(pixels).save(folder / "0.png")
    data = read_image_folder(tmp_path / "scans")
    np.testing.assert_allclose(data.x[0, 0], pixels / 65535.0, rtol=1e-6)


def test_an_unreadable_image_is_refused_without_its_name(tmp_path: Path) -> None:
    folder = tmp_path / "imgs" / "a"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(folder / "0.png")
    (folder / "patient-4711.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="image 2 of 2 cannot be read") as info:
        read_source(tmp_path / "imgs")
    assert "4711" not in str(info.value)


def test_parquet_missing_markers_count_in_category_columns(tmp_path: Path) -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0],
                          "c": pd.Categorical(["a", " ?", "b"])})
    frame.to_parquet(tmp_path / "t.parquet")
    read = read_source(tmp_path / "t.parquet")
    assert isinstance(read, pd.DataFrame) and read["c"].isna().tolist() == [False, True, False]
