"""The results folder's config.json never carries the run store's password (a reader of the
results folder is not a database administrator)."""

import json

from fedsilo.config.schema import load_config
from fedsilo.simulation.run import run_simulation, write_results
from tests.integration.helpers import heart_config

SECRET = "S3cr3t-pw"


def test_config_json_hides_the_store_password(tmp_path):
    cfg = load_config(heart_config(tmp_path, rounds=1, compare=False))
    result = run_simulation(cfg, write=False)
    result.config = cfg.model_copy(update={"store": cfg.store.model_copy(update={
        "url": f"postgresql+psycopg://fedsilo:{SECRET}@db.example/fedsilo"})})
    folder = tmp_path / "results"
    folder.mkdir()
    write_results(result, folder)
    text = (folder / "config.json").read_text()
    assert SECRET not in text
    assert json.loads(text)["store"]["url"].startswith("postgresql+psycopg://fedsilo:***@")
