"""Hydra glue: the schemas and the run-directory resolvers registered with Hydra (`register_configs`),
`compose()` for scripts and tests (the config train.py would compose), and Hydra's or OmegaConf's
composition errors in one line (`hydra_error_line`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf

from gpt2.config import GROUPS, Config
from gpt2.errors import ConfigError
from gpt2.run.record import shell_override
from gpt2.run.rundir import run_stamp, unique_tag


def register_configs() -> None:
    """Store the root schema and one schema per group (conf/*.yaml extend them by name), and the
    `${unique_tag:}` resolver of default run directories."""
    OmegaConf.register_new_resolver("unique_tag", unique_tag, replace=True, use_cache=True)
    OmegaConf.register_new_resolver("run_stamp", run_stamp, replace=True, use_cache=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for group, schema in GROUPS.items():
        cs.store(name=group, group="schema", node=schema)


CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def compose(*overrides: str) -> DictConfig:
    """The config train.py would compose from conf/ with these overrides (for scripts and tests); an
    override Hydra refuses (unknown key or option, wrong type, bad syntax) is a one-line ConfigError."""
    from hydra import compose as hydra_compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        try:
            return hydra_compose(config_name="config", overrides=list(overrides))
        except Exception as exc:
            line = hydra_error_line(exc)
            if line is None:
                raise
            raise ConfigError(line) from None


def hydra_error_line(exc: BaseException) -> Optional[str]:
    """One line for an error Hydra or OmegaConf raise while composing (an unknown key or option, a
    wrong type, bad override syntax), or None for any other exception."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(exc, (HydraException, OmegaConfBaseException)):
        return None
    text = str(exc)
    line = text.splitlines()[0] if text else type(exc).__name__
    options = re.search(r"Available options in '[^']*':\n((?:\t.*\n?)+)", text)
    if options:
        line += f" (options: {', '.join(o.strip() for o in options.group(1).splitlines() if o.strip())})"
    if isinstance(getattr(exc, "override", None), str):  # bad override syntax: say which override
        key, _, value = exc.override.partition("=")
        detail = "cannot be parsed" if exc.override in line else line
        line = f"{exc.override}: {detail} (a value with special characters needs quotes: {shell_override(key, value)})"
    cause = exc.__cause__
    if cause is not None and str(cause):
        line += f" ({str(cause).splitlines()[0]})"
    return line
