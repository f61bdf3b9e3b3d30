"""Run configuration: TOML -> validated, typed objects; builders for strategies by name."""

from fedsilo.config.schema import RunConfig, load_config

__all__ = ["RunConfig", "load_config"]
