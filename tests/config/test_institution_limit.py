"""The institution cap (fedsilo.limits.MAX_INSTITUTIONS): a simulation of 10,000 institutions
is declared like any other; one more is refused with a message naming the limit."""

import pytest
from pydantic import ValidationError

from fedsilo.config.schema import RunConfig
from fedsilo.limits import MAX_INSTITUTIONS


def config(k: int) -> dict:
    return {"data": {"task": "multiclass", "target": "y", "loader": "somewhere:load",
                     "institutions": [{"name": f"inst-{i:05d}"} for i in range(k)]},
            "model": {"kind": "mlp"}}


def test_ten_thousand_named_institutions_are_accepted():
    assert MAX_INSTITUTIONS == 10_000
    cfg = RunConfig.model_validate(config(MAX_INSTITUTIONS))
    assert cfg.data.declared_institutions() == MAX_INSTITUTIONS


def test_one_more_is_refused_naming_the_limit():
    with pytest.raises(ValidationError, match=str(MAX_INSTITUTIONS)):
        RunConfig.model_validate(config(MAX_INSTITUTIONS + 1))
