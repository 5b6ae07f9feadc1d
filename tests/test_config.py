
import math

import pytest

import yaml
from omegaconf import OmegaConf

from gpt2.config import GROUPS, Config, ConfigError, DataConfig, ModelConfig, TrainerConfig, from_hydra

from conftest import ROOT, compose_config, run_train

CONF = ROOT / "conf"
GROUP_OPTIONS = [(group.name, option.stem) for group in sorted(CONF.iterdir()) if group.is_dir()
                 for option in sorted(group.glob("*.yaml"))]


@pytest.mark.parametrize("group,option", GROUP_OPTIONS, ids=[f"{g}={o}" for g, o in GROUP_OPTIONS])
def test_every_group_option_composes_and_validates(group, option):
    required = {("data", "text_file"): ["data.path=some.txt"], ("data", "bin"): ["data.dir=tokens"],
                **{("experiment", name): ["data.dir=tokens"] for name in (
                    "gpt2_124m", "gpt2_124m_owt", "gpt2_124m_fineweb", "speedrun_124m")}}
    extra = required.get((group, option), [])
    config = from_hydra(compose_config(f"{group}={option}", *extra))
    assert isinstance(config, Config)


def test_groups_and_experiments_exist():
    groups = {g for g, _ in GROUP_OPTIONS}
    assert groups == {"data", "model", "optim", "trainer", "logger", "experiment", "hparams_search"}
    assert {o for g, o in GROUP_OPTIONS if g == "experiment"} >= {
        "shakespeare_char_cpu", "shakespeare_char", "shakespeare_gpt2_cpu", "shakespeare_char_modern_cpu",
        "shakespeare_char_modern", "speedrun_124m", "gpt2_124m", "gpt2_124m_owt", "gpt2_124m_fineweb"}


def test_shakespeare_char_cpu_is_nanogpts_cpu_command():
    c = from_hydra(compose_config("experiment=shakespeare_char_cpu"))
    assert (c.data.tokenizer, c.data.block_size, c.data.batch_size) == ("char", 64, 12)
    assert (c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.dropout, c.model.bias) == (4, 4, 128, 0.0, False)
    assert (c.optim.lr, c.optim.min_lr, c.lr_decay_iters, c.optim.beta2, c.optim.warmup_iters) == (
        1e-3, 1e-4, 2000, 0.99, 100)
    assert (c.optim.weight_decay, c.optim.grad_clip, c.optim.beta1) == (0.1, 1.0, 0.9)
    assert (c.trainer.max_iters, c.trainer.eval_interval, c.trainer.eval_iters, c.trainer.grad_accum) == (
        2000, 250, 20, 1)
    assert (c.trainer.device, c.trainer.compile) == ("cpu", None)  # null: compiled with CUDA only


def test_shakespeare_char_is_nanogpts_baby_gpt():
    c = from_hydra(compose_config("experiment=shakespeare_char"))
    assert (c.data.tokenizer, c.data.block_size, c.data.batch_size) == ("char", 256, 64)
    assert (c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.dropout) == (6, 6, 384, 0.2)
    assert (c.trainer.max_iters, c.lr_decay_iters, c.trainer.eval_iters, c.trainer.eval_interval) == (
        5000, 5000, 200, 250)
    assert (c.optim.lr, c.optim.min_lr, c.optim.beta2, c.optim.warmup_iters) == (1e-3, 1e-4, 0.99, 100)


def test_shakespeare_gpt2_cpu_is_the_cpu_model_on_bpe():
    c = from_hydra(compose_config("experiment=shakespeare_gpt2_cpu"))
    cpu = from_hydra(compose_config("experiment=shakespeare_char_cpu"))
    assert c.data.tokenizer == "gpt2"
    assert (c.model, c.optim, c.trainer) == (cpu.model, cpu.optim, cpu.trainer)


def test_gpt2_124m_is_half_a_million_tokens_per_step_on_token_files():
    c = from_hydra(compose_config("experiment=gpt2_124m", "data.dir=data/owt"))
    assert (c.data.source, c.data.dir, c.model.n_layer, c.model.n_embd) == ("bin", "data/owt", 12, 768)
    assert c.data.batch_size * c.data.block_size * c.trainer.grad_accum == 524_288
    assert (c.optim.lr, c.optim.min_lr, c.optim.beta2, c.optim.warmup_iters, c.trainer.max_iters) == (
        6e-4, 6e-5, 0.95, 715, 19073)
    with pytest.raises(Exception, match="data.dir: data.source=bin needs the directory"):
        from_hydra(compose_config("experiment=gpt2_124m"))


def test_gpt2_124m_owt_is_nanogpts_train_gpt2():
    """karpathy/nanoGPT config/train_gpt2.py over train.py's defaults (bias=False, warmup 2000, ...)."""
    c = from_hydra(compose_config("experiment=gpt2_124m_owt", "data.dir=data/owt"))
    assert (c.data.source, c.data.dir, c.data.block_size, c.data.batch_size, c.trainer.grad_accum) == (
        "bin", "data/owt", 1024, 12, 40)
    assert c.data.batch_size * c.data.block_size * c.trainer.grad_accum == 491_520
    assert (c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.bias, c.model.dropout,
            c.model.tie_embeddings, c.model.vocab_multiple) == (12, 12, 768, False, 0.0, True, 64)
    assert (c.optim.name, c.optim.schedule, c.optim.lr, c.optim.min_lr, c.optim.warmup_iters, c.lr_decay_iters) == (
        "adamw", "cosine", 6e-4, 6e-5, 2000, 600_000)
    assert (c.optim.beta1, c.optim.beta2, c.optim.weight_decay, c.optim.grad_clip) == (0.9, 0.95, 0.1, 1.0)
    assert (c.trainer.max_iters, c.trainer.eval_interval, c.trainer.eval_iters) == (600_000, 1000, 200)


def test_gpt2_124m_fineweb_is_build_nanogpts_train_gpt2():
    """karpathy/build-nanogpt train_gpt2.py: 2**19 tokens per step as B=64 x T=1024 x 8 on one GPU."""
    c = from_hydra(compose_config("experiment=gpt2_124m_fineweb", "data.dir=data/fineweb-edu-10B"))
    assert (c.data.source, c.data.block_size, c.data.batch_size, c.trainer.grad_accum) == ("bin", 1024, 64, 8)
    assert c.data.batch_size * c.data.block_size * c.trainer.grad_accum == 2**19
    assert (c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.bias, c.model.dropout,
            c.model.tie_embeddings, c.model.vocab_multiple) == (12, 12, 768, True, 0.0, True, 64)
    assert (c.optim.name, c.optim.schedule, c.optim.lr, c.optim.min_lr, c.optim.warmup_iters, c.lr_decay_iters) == (
        "adamw", "cosine", 6e-4, 6e-5, 715, 19073)
    assert (c.optim.beta1, c.optim.beta2, c.optim.weight_decay, c.optim.grad_clip) == (0.9, 0.95, 0.1, 1.0)
    assert (c.trainer.max_iters, c.trainer.eval_interval, c.trainer.eval_iters) == (19073, 250, 20)
    assert (c.trainer.hellaswag_interval, c.trainer.hellaswag_examples) == (250, 0)  # all, every 250 steps


def test_gpt2_124m_is_the_fineweb_recipe_in_smaller_micro_batches():
    old = from_hydra(compose_config("experiment=gpt2_124m", "data.dir=tokens"))
    new = from_hydra(compose_config("experiment=gpt2_124m_fineweb", "data.dir=tokens",
                                    "data.batch_size=32", "trainer.grad_accum=16", "logger.tags=[gpt2_124m]",
                                    "trainer.hellaswag_interval=0", "trainer.hellaswag_examples=500"))
    assert old == new


def test_the_modern_cpu_experiment_differs_from_its_neighbour_only_in_the_recipe():
    modern = from_hydra(compose_config("experiment=shakespeare_char_modern_cpu"))
    cpu = from_hydra(compose_config("experiment=shakespeare_char_cpu"))
    assert modern.data == cpu.data  # same data, windows and batch
    for key in ("n_layer", "n_head", "n_embd", "dropout", "bias", "block_size"):  # same model size
        assert getattr(modern.model, key) == getattr(cpu.model, key)
    assert (modern.model.rotary, modern.model.norm, modern.model.qk_norm, modern.model.activation,
            modern.model.tie_embeddings) == (True, "rmsnorm", True, "relu2", False)
    assert (modern.optim.name, modern.optim.schedule) == ("muon", "wsd")
    assert (modern.trainer.eval_interval, modern.trainer.eval_iters, modern.trainer.device) == (250, 20, "cpu")
    assert modern.trainer.max_iters < cpu.trainer.max_iters


def test_speedrun_124m_is_modded_nanogpts_record_5():
    c = from_hydra(compose_config("experiment=speedrun_124m", "data.dir=data/fineweb"))
    assert (c.model.n_layer, c.model.n_head, c.model.n_embd, c.model.bias) == (12, 12, 768, False)
    assert (c.model.rotary, c.model.norm, c.model.qk_norm, c.model.activation, c.model.zero_init,
            c.model.tie_embeddings) == (True, "rmsnorm", True, "relu2", True, True)
    assert c.data.batch_size * c.data.block_size * c.trainer.grad_accum == 524_288
    assert (c.optim.name, c.optim.schedule, c.optim.warmup_iters, c.trainer.max_iters) == ("muon", "wsd", 0, 5100)
    assert round(c.optim.warmdown_frac * c.trainer.max_iters) == 1450 and c.optim.min_lr == 0
    assert (c.optim.lr, c.optim.muon_lr * 0.2, c.optim.muon_lr_scaling) == (0.0036, 0.00036, "match_rms_adamw")


@pytest.mark.parametrize("overrides,message", [
    (["optim=muon", "trainer.parallel=fsdp"], "optim.name: muon orthogonalises whole matrices, which "
                                             "trainer.parallel=fsdp shards over the processes: use trainer.parallel=ddp"),
    (["optim.embedding_lr=0.1"], "optim.embedding_lr: applies with optim.name=muon"),
    (["optim.muon_lr=0.05"], "optim.muon_lr: applies with optim.name=muon (optim=muon); AdamW alone has one LR"),
    (["optim.warmdown_frac=0.2"], "optim.warmdown_frac: applies with optim.schedule=wsd"),
    (["optim.name=sgd"], "optim.name: must be adamw or muon, got 'sgd'"),
    (["optim.schedule=linear"], "optim.schedule: must be cosine or wsd, got 'linear'"),
    (["optim.warmdown_frac=1.5"], "optim.warmdown_frac: must be in [0, 1], got 1.5"),
    (["optim.muon_momentum=1.0"], "optim.muon_momentum: must be in [0, 1), got 1.0"),
    (["model.norm=batchnorm"], "model.norm: must be layernorm or rmsnorm, got 'batchnorm'"),
    (["model.activation=swish"], "model.activation: must be gelu or relu2, got 'swish'"),
    (["model.rotary=true", "model.n_embd=132", "model.n_head=4"], "model.rotary: needs an even head size"),
])
def test_the_recipe_options_are_checked_in_one_line(overrides, message):
    with pytest.raises(ConfigError) as err:
        from_hydra(compose_config(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_overrides_reach_the_dataclasses():
    c = from_hydra(compose_config("data.block_size=32", "model=baby", "trainer.max_iters=7"))
    assert c.data.block_size == 32 and c.model.n_embd == 384 and c.lr_decay_iters == 7


def test_derived_values_are_resolved_the_same_from_hydra_and_from_code():
    hydra = from_hydra(compose_config("trainer.max_iters=7", "trainer.eval_interval=3", "data.block_size=32"))
    code = Config(data=DataConfig(block_size=32), trainer=TrainerConfig(max_iters=7, eval_interval=3))
    assert hydra == code
    for c in (hydra, code):
        assert (c.optim.lr_decay_iters, c.trainer.ckpt_interval, c.model.block_size) == (None, None, None)
        assert (c.lr_decay_iters, c.trainer.ckpt_every, c.model_block_size) == (7, 3, 32)
    explicit = from_hydra(compose_config("optim.lr_decay_iters=50", "trainer.ckpt_interval=0", "model.block_size=128"))
    assert (explicit.lr_decay_iters, explicit.trainer.ckpt_every, explicit.model_block_size) == (50, 0, 128)


@pytest.mark.parametrize("overrides, warmup", [
    (("trainer.max_iters=40", "optim.warmup_iters=100"), 4),   # longer than the run: a tenth of it
    (("trainer.max_iters=40", "optim.warmup_iters=40"), 4),    # as long: never decays either
    (("trainer.max_iters=40", "optim.warmup_iters=39"), 39),   # shorter: as asked
    (("trainer.max_iters=40", "optim.warmup_iters=100", "optim.decay_lr=false"), 100),  # no schedule
    (("trainer.max_iters=40", "optim.warmup_iters=30", "optim.lr_decay_iters=30"), 30),
])
def test_a_warmup_not_shorter_than_the_run_is_a_tenth_of_it(overrides, warmup):
    from gpt2.train.optim import LRSchedule

    config = from_hydra(compose_config(*overrides))
    assert config.warmup_iters == warmup
    schedule = LRSchedule.from_config(config.optim, config.lr_decay_iters, config.warmup_iters)
    if config.optim.decay_lr and warmup < config.lr_decay_iters - 1:
        assert schedule(warmup) == config.optim.lr and schedule(39) < config.optim.lr  # peaks, then decays


def test_a_decay_that_ends_before_the_warmup_is_refused():
    with pytest.raises(ConfigError) as err:
        from_hydra(compose_config("optim.warmup_iters=100", "optim.lr_decay_iters=50"))
    assert str(err.value) == ("optim.lr_decay_iters: the decay would end (50) before the warmup does "
                              "(optim.warmup_iters=100): raise optim.lr_decay_iters or lower optim.warmup_iters")


def test_the_default_run_is_the_schema_defaults():
    assert from_hydra(compose_config()) == Config()


def test_group_options_hold_only_what_differs_from_the_schema():
    for group, schema in GROUPS.items():
        defaults = OmegaConf.to_container(OmegaConf.structured(schema))
        for path in sorted((CONF / group).glob("*.yaml")):
            values = {k: v for k, v in (yaml.safe_load(path.read_text()) or {}).items() if k != "defaults"}
            repeated = [k for k, v in values.items() if defaults.get(k) == v]
            assert not repeated, f"{path.name} repeats schema defaults: {repeated}"


def test_model_context_must_hold_a_training_window():
    with pytest.raises(ConfigError, match=r"model.block_size: the model's context \(32\) must hold a whole "
                                          r"training window \(data.block_size=64\)"):
        from_hydra(compose_config("model.block_size=32"))
    with pytest.raises(ConfigError, match="model.block_size: must be >= 1"):
        Config(model=ModelConfig(block_size=0))


@pytest.mark.parametrize("override,message", [
    ("data.block_szie=64", "Could not override 'data.block_szie'. (Key 'block_szie' not in 'DataConfig')"),
    ("model=bigg", "In 'config': Could not find 'model/bigg'"),
    ("trainer.max_iters=abc", "Value 'abc' of type 'str' could not be converted to Integer"),
])
def test_composition_errors_are_one_line_config_errors(override, message):
    with pytest.raises(ConfigError) as err:
        compose_config(override)
    assert message in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("override,message", [
    ("data.batch_size=0", "data.batch_size: must be >= 1, got 0"),
    ("model.n_head=5", "model.n_head: model.n_embd (128) must be divisible by model.n_head (5)"),
    ("data.tokenizer=bpe", "data.tokenizer: must be 'gpt2' or 'char'"),
    ("data.train_frac=1.0", "data.train_frac: must be between 0 and 1"),
    ("optim.min_lr=1.0", "optim.min_lr: must be between 0 and optim.lr"),
    ("trainer.device=tpu", "trainer.device: must be auto, cpu, cuda, cuda:N or mps"),
    ("+data.foo=1", "data.foo: unknown config key"),
    ("+foo=1", "foo: unknown config key"),
    ("trainer.hellaswag_interval=-1", "trainer.hellaswag_interval: must be >= 0, got -1"),
    ("trainer.hellaswag_examples=-5", "trainer.hellaswag_examples: must be >= 0, got -5"),
    ("trainer.hellaswag_examples=100", "trainer.hellaswag_examples: applies with trainer.hellaswag_interval > 0"),
])
def test_invalid_values_name_the_key(override, message):
    with pytest.raises(ConfigError) as err:
        from_hydra(compose_config(override))
    assert message in str(err.value)


def test_hellaswag_during_training_needs_gpt2_tokens():
    with pytest.raises(ConfigError) as err:
        from_hydra(compose_config("data.tokenizer=char", "trainer.hellaswag_interval=100"))
    assert str(err.value) == ("trainer.hellaswag_interval: HellaSwag is scored in GPT-2 tokens: use "
                              "data.tokenizer=gpt2 (or trainer.hellaswag_interval=0)")
    config = from_hydra(compose_config("trainer.hellaswag_interval=100", "trainer.hellaswag_examples=0"))
    assert (config.trainer.hellaswag_interval, config.trainer.hellaswag_examples) == (100, 0)  # 0: all
    assert from_hydra(compose_config("data=bin", "data.dir=tokens", "trainer.hellaswag_interval=100"))  # the
    # token files' manifest says which tokenizer: checked when they are opened


def test_dataclasses_check_themselves():
    with pytest.raises(ConfigError, match="model.n_head"):
        ModelConfig(n_head=3, n_embd=128)
    with pytest.raises(ConfigError, match="data.block_size: must be >= 1"):
        DataConfig(block_size=0)


@pytest.mark.parametrize("override,message", [
    ("data.block_szie=64", "Key 'block_szie' not in 'DataConfig'"),
    ("data.batch_size=0", "data.batch_size: must be >= 1, got 0"),
    ("model.n_head=5", "model.n_head: model.n_embd (128) must be divisible by model.n_head (5)"),
    ("model=bigg", "Could not find 'model/bigg'"),
])
@pytest.mark.slow
def test_train_py_rejects_bad_overrides_before_any_work(tmp_path, override, message):
    result = run_train(tmp_path / "run", override, "logger=none")
    assert result.returncode == 1
    output = result.stdout + result.stderr
    assert message in output and "Traceback" not in output
    assert len(output.strip().splitlines()) <= 12  # a short message, not a stack trace
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_help_lists_the_groups(tmp_path):
    result = run_train(tmp_path, "--help")
    assert result.returncode == 0
    for group in ("data:", "model:", "optim:", "trainer:", "logger:", "experiment:"):
        assert group in result.stdout
    assert "shakespeare_char_cpu" in result.stdout


def test_min_val_frac_is_a_share_and_zero_accepts_any_validation_split():
    assert DataConfig().min_val_frac == 0.001
    assert from_hydra(compose_config("data.min_val_frac=0")).data.min_val_frac == 0.0
    for bad in (-0.1, 1.0):
        with pytest.raises(ConfigError, match=rf"^data.min_val_frac: must be at least 0 and under 1 \(0 accepts "
                                              rf"any validation split\), got {bad}$"):
            DataConfig(min_val_frac=bad)


@pytest.mark.parametrize("override", ["data.seed=99999999999999999999999", "trainer.seed=-9223372036854775809",
                                      "trainer.max_iters=9223372036854775808"])
def test_an_integer_beyond_64_bits_is_one_line(override):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as err:
        from_hydra(compose_config(override))
    assert str(err.value) == (f"{key}: {int(value)} is out of range (a 64-bit integer: -9,223,372,036,854,775,808 "
                              f"to 9,223,372,036,854,775,807)")


LR = {"type": "float", "low": 1e-4, "high": 1e-2, "log": True}


@pytest.mark.parametrize("key", ["data.path", "data.dir", "data.data_dir", "data.mirror", "model.init_from",
                                 "trainer.resume", "hparams_search.storage"])
def test_an_empty_path_is_refused_not_read_as_the_current_directory(key):
    """`data.path=$UNSET` reaches the config as '': one line naming the key, never the working directory."""
    from gpt2.config import OptunaConfig

    group, name = key.split(".")
    schema = {**GROUPS, "hparams_search": OptunaConfig}[group]
    with pytest.raises(ConfigError) as err:
        schema(**{name: "", **({"params": {"optim.lr": LR}} if group == "hparams_search" else {})})
    assert str(err.value) == f"{key}: an empty path; is a shell variable unset?"


def test_an_empty_override_is_an_empty_path():
    from gpt2.config import OptunaConfig

    with pytest.raises(ConfigError, match=r"^data.path: an empty path; is a shell variable unset\?$"):
        from_hydra(compose_config("data.path="))
    with pytest.raises(ConfigError, match=r"^hparams_search.study_name: an empty name; is a shell variable unset\? "):
        OptunaConfig(study_name="", params={"optim.lr": LR})


@pytest.mark.parametrize("key", ["optim.lr", "optim.weight_decay", "model.logit_softcap", "trainer.peak_tflops",
                                 "data.train_frac", "optim.beta2"])
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_a_float_setting_that_is_not_finite_is_one_line(key, value):
    group, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"^{key}: must be "):
        Config(**{group: GROUPS[group](**{name: value})})



@pytest.mark.parametrize("key, spec, message", [
    ("optim.lr", {**LR, "low": 0.01, "high": 0.001}, "low (0.01) > high (0.001)"),
    ("optim.lr", {**LR, "low": 0.0}, "log: true needs low > 0, got 0.0"),
    ("model.n_layer", {"type": "int", "low": -2, "high": 6, "log": True}, "log: true needs low > 0, got -2"),
    ("optim.lr", {**LR, "step": 1e-4}, "step and log: true do not combine (Optuna draws on a grid or "
                                       "log-uniformly, not both)"),
    ("model.dropout", {"type": "float", "low": 0.0, "high": 0.2, "step": 0.3},
     "step (0.3) does not divide high - low (0.2 - 0.0): Optuna would move high"),
    ("model.n_layer", {"type": "int", "low": 2, "high": 7, "step": 2},
     "step (2) does not divide high - low (7 - 2): Optuna would move high"),
    ("model.n_layer", {"type": "int", "low": 2, "high": 8, "step": 0}, "step must be > 0, got 0"),
    ("model.n_layer", {"type": "int", "low": 2.5, "high": 6}, "low must be a finite integer, got 2.5"),
    ("optim.lr", {**LR, "high": float("nan")}, "high must be a finite number, got nan"),
    ("optim.lr", {**LR, "high": "1e-2"}, "high must be a finite number, got '1e-2'"),
    ("optim.lr", {**LR, "log": "yes"}, "log must be true or false, got 'yes'"),
    ("model.n_layer", {"type": "int", "low": 2}, "int needs high"),
    ("model.n_embd", {"type": "categorical", "choices": []}, "choices must be a non-empty list, got []"),
    ("model.n_embd", {"type": "categorical"}, "choices must be a non-empty list, got None"),
    ("model.n_embd", {"type": "categorical", "choices": [64, 64]}, "choices repeat a value: [64, 64]"),
    ("model.n_embd", {"type": "categorical", "choices": [[64]]}, "choice [64]: a choice is a number, a string, "
                                                                  "a boolean or null"),
    ("model.n_layer", {"type": "int", "low": 2, "high": 6, "lgo": True},
     "unknown key 'lgo' (type int takes low, high, log, step)"),
    ("model.n_embd", {"type": "categorical", "choices": [64], "low": 1}, "unknown key 'low' (type categorical "
                                                                         "takes choices)"),
    ("model.n_layer", {"type": "integer", "low": 2, "high": 6}, "needs type float, int or categorical"),
    ("model.n_layer", 4, "needs type float, int or categorical"),
    ("optim.lrr", LR, "not a config key (see `python train.py --cfg job` for the valid keys)"),
    ("optim", LR, "not a config key (see `python train.py --cfg job` for the valid keys)"),
    ("hparams_search.n_trials", {"type": "int", "low": 1, "high": 4}, "not a config key (see `python train.py "
                                                                       "--cfg job` for the valid keys)"),
    ("model.n_layer", {"type": "float", "low": 2, "high": 6}, "type float does not fit model.n_layer (of type int)"),
    ("model.n_embd", {"type": "categorical", "choices": [64, "big"]},
     "choice 'big' does not fit model.n_embd (of type int)"),
    ("model.block_size", {"type": "categorical", "choices": [None, 1.5]},
     "choice 1.5 does not fit model.block_size (of type Optional[int])"),
])
def test_a_bad_search_space_is_one_line_naming_the_parameter(key, spec, message):
    """Checked whole when the config is built, before any trial (Optuna would raise mid-study, or
    warn and move `high`, or every trial would fail)."""
    from gpt2.config import OptunaConfig

    with pytest.raises(ConfigError) as err:
        Config(hparams_search=OptunaConfig(params={"optim.lr": LR, key: spec}))
    assert str(err.value) == f"hparams_search.params.{key}: {message}"


@pytest.mark.parametrize("override, message", [
    ("hparams_search.params={optim.lr:{type:float,low:0.01,high:0.001}}",
     "hparams_search.params.optim.lr: low (0.01) > high (0.001)"),
    ("hparams_search.storage=", "hparams_search.storage: an empty path; is a shell variable unset?"),
])
def test_a_composed_search_is_checked_before_the_study_starts(override, message):
    with pytest.raises(ConfigError) as err:
        from_hydra(compose_config("hparams_search=shakespeare_optuna", override))
    assert str(err.value) == message


def test_a_search_over_nothing_is_refused():
    from gpt2.config import OptunaConfig

    with pytest.raises(ConfigError, match=r"^hparams_search.params: no parameter to search"):
        OptunaConfig()
    good = {"optim.lr": LR, "model.n_layer": {"type": "int", "low": 2, "high": 8, "step": 2},
            "model.dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.05},
            "model.block_size": {"type": "categorical", "choices": [None, 64]}}
    assert Config(hparams_search=OptunaConfig(params=good)).hparams_search.params == good
