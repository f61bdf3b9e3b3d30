"""A vertical run's config, as the parties and the server use it: the recipe every party
trains by, the open task's description of the run, and the run's one round event."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fedsilo.config.schema import RunConfig
from fedsilo.engine.events import RoundEvent
from fedsilo.vertical.local import Layout, model_seed
from fedsilo.vertical.protocols import Recipe


def vertical_recipe(cfg: RunConfig) -> Recipe:
    """The recipe every party trains by: [model] kind and [vertical]'s settings."""
    assert cfg.vertical is not None
    v = cfg.vertical
    return Recipe(str(cfg.model.kind), cfg.data.task, v.epochs, v.lr, v.batch_size, v.noise,
                  cfg.model.hidden[0] if cfg.model.hidden else 0, model_seed(cfg.run.seed))


def vertical_event(cfg: RunConfig, evaluation: Mapping[str, Mapping[str, float]],
                   seconds: float = 0.0) -> RoundEvent:
    """The run's one round event: the label holder's test metrics of the vertical model."""
    assert cfg.vertical is not None
    metrics = evaluation[cfg.vertical.label_holder]
    return RoundEvent(cfg.vertical.epochs, cfg.vertical.epochs,
                      tuple(i.name for i in cfg.data.institutions), {},
                      {"vertical": {"protocol": vertical_recipe(cfg).protocol}},
                      evaluation, metrics, seconds=seconds)


def vertical_layout(cfg: RunConfig) -> Layout:
    """What every party agrees on about the tables."""
    d = cfg.data
    assert d.id is not None
    return Layout(d.id, d.target, d.task, d.positive_above, tuple(d.exclude), d.test_fraction,
                  cfg.run.seed)


def open_spec(cfg: RunConfig) -> dict[str, Any]:
    """The run, as each party's open task carries it (vertical_party.Spec)."""
    assert cfg.vertical is not None and cfg.data.id is not None
    holder = cfg.vertical.label_holder
    others = sorted(i.name for i in cfg.data.institutions if i.name != holder)
    return {"parties": [holder, *others], "label_holder": holder,
            "layout": vertical_layout(cfg).to_dict(), "recipe": vertical_recipe(cfg).to_dict()}


