"""gpt2/run/compose.py: `compose()` (the config train.py composes), its one-line ConfigErrors for
whatever Hydra refuses (the exact line for each kind), `hydra_error_line`, and `register_configs`
(the run-directory resolvers and the schema/* entries in Hydra's ConfigStore).
tests/test_config.py checks the schemas' values and rules; this file checks the glue."""

from __future__ import annotations

import pytest
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError

from gpt2.config import GROUPS, DataConfig
from gpt2.errors import ConfigError
from gpt2.run import rundir
from gpt2.run.compose import compose, hydra_error_line, register_configs


def test_compose_without_overrides_is_the_default_run():
    cfg = compose()
    assert set(cfg) == {"data", "model", "optim", "trainer", "logger", "hparams_search"}  # no hydra node
    assert cfg.hparams_search is None
    assert (cfg.model.n_layer, cfg.model.n_head, cfg.model.n_embd) == (4, 4, 128)
    assert (cfg.data.source, cfg.data.tokenizer, cfg.data.path) == ("text", "gpt2", None)
    assert OmegaConf.get_type(cfg.data) is DataConfig  # a structured config: typed by its schema


def test_compose_applies_value_and_group_overrides():
    cfg = compose("data=shakespeare_char", "model.n_layer=2", "optim.lr=0.01", 'data.path="~/corpus.txt"')
    assert (cfg.data.tokenizer, cfg.model.n_layer, cfg.optim.lr) == ("char", 2, 0.01)
    assert cfg.data.path == "~/corpus.txt"  # quoted (Hydra cannot parse a bare ~), kept as written
    assert compose().data.tokenizer == "gpt2"  # nothing carries over from one compose to the next


def test_an_experiment_overrides_the_groups_it_names():
    cfg = compose("experiment=shakespeare_char_cpu", "trainer.max_iters=3")
    assert (cfg.data.tokenizer, cfg.trainer.max_iters, cfg.trainer.device) == ("char", 3, "cpu")


QUOTES = "(a value with special characters needs quotes: "


@pytest.mark.parametrize("override, line", [
    ("model.n_layr=2", "Could not override 'model.n_layr'. (Key 'n_layr' not in 'ModelConfig')"),
    ("trainer=nope", "In 'config': Could not find 'trainer/nope' (options: default)"),
    ("model=huge", "In 'config': Could not find 'model/huge' (options: baby, gpt2, modern, tiny)"),
    ("optim.lr=fast", "Error merging override optim.lr=fast (Value 'fast' of type 'str' could not be "
                      "converted to Float)"),
    ("data.block_size=1.5", "Error merging override data.block_size=1.5 (Value '1.5' of type 'float' could "
                            "not be converted to Integer)"),
    ("trainer.max_iters=[1,2", "trainer.max_iters=[1,2: no viable alternative at input '[1,2' "
                               f"{QUOTES}'trainer.max_iters=\"[1,2\"')"),
    ("data.path='a", f"data.path='a: cannot be parsed {QUOTES}'data.path=\"'\"'\"'a\"')"),  # a shell word
    ("data.path=~/corpus.txt", f"data.path=~/corpus.txt: cannot be parsed {QUOTES}'data.path=\"~/corpus.txt\"')"),
    ("+data.block_size=3", "Could not append to config. An item is already at 'data.block_size'."),
    ("~model.nope", "Could not delete from config. 'model.nope' does not exist."),
], ids=["unknown key", "unknown group option", "unknown model option", "wrong type float", "wrong type int",
        "bad syntax", "unclosed quote", "bare tilde", "append existing", "delete missing"])
def test_what_hydra_refuses_is_a_one_line_config_error(override, line):
    with pytest.raises(ConfigError) as err:
        compose(override)
    assert str(err.value) == line
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained traceback


def test_hydra_error_line_is_none_for_other_exceptions():
    for exc in (ValueError("Config group override must be a string"), KeyError("model"), OSError(2, "x")):
        assert hydra_error_line(exc) is None


def test_hydra_error_line_of_an_omegaconf_error_is_its_first_line():
    with pytest.raises(ConfigAttributeError) as err:
        OmegaConf.structured(DataConfig).nope  # noqa: B018 (the access raises)
    assert hydra_error_line(err.value) == "Key 'nope' not in 'DataConfig'"


def test_hydra_error_line_names_the_type_when_there_is_no_message_and_adds_the_cause():
    assert hydra_error_line(HydraException()) == "HydraException"
    try:
        raise HydraException("first line\nsecond line") from ValueError("the cause\nmore")
    except HydraException as exc:
        assert hydra_error_line(exc) == "first line (the cause)"


def test_register_configs_registers_the_run_directory_resolvers(monkeypatch):
    for name in ("run_stamp", "unique_tag"):
        OmegaConf.clear_resolver(name)
        assert not OmegaConf.has_resolver(name)
    register_configs()
    assert OmegaConf.has_resolver("run_stamp") and OmegaConf.has_resolver("unique_tag")
    monkeypatch.setenv(rundir.STAMP_ENV, "2024-05-06/07-08-09-beef")
    monkeypatch.setenv(rundir.TAG_ENV, "beef")
    dirs = OmegaConf.create({"run": "outputs/${run_stamp:}", "sweep": "multirun/x-${unique_tag:}"})
    assert (dirs.run, dirs.sweep) == ("outputs/2024-05-06/07-08-09-beef", "multirun/x-beef")


def test_register_configs_stores_the_root_schema_and_one_schema_per_group(monkeypatch):
    repo = ConfigStore.instance().repo
    monkeypatch.delitem(repo, "schema")
    monkeypatch.delitem(repo, "config_schema.yaml")
    register_configs()
    assert sorted(repo["schema"]) == sorted(f"{group}.yaml" for group in GROUPS)
    for group, schema in GROUPS.items():
        node = repo["schema"][f"{group}.yaml"]
        assert node.group == "schema" and OmegaConf.get_type(node.node) is schema
    assert set(repo["config_schema.yaml"].node) >= set(GROUPS)
    register_configs()  # idempotent: a second call (every compose() makes one) replaces, never fails
    assert sorted(repo["schema"]) == sorted(f"{group}.yaml" for group in GROUPS)
