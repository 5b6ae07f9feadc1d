import pytest
import torch

from gpt2.config import OptimConfig
from gpt2.model.gpt import GPT, GPTConfig
from gpt2.train.optim import LRSchedule, build_optimizer, param_groups


def schedule(**kw) -> LRSchedule:
    return LRSchedule.from_config(OptimConfig(**{"lr": 1e-3, "min_lr": 1e-4, "warmup_iters": 100, **kw}), 2000)


def test_lr_schedule_warmup_cosine_floor():
    lr = schedule()
    assert lr(0) == pytest.approx(1e-3 / 101)
    assert lr(99) == pytest.approx(1e-3 * 100 / 101)
    assert lr(100) == pytest.approx(1e-3)
    assert lr(1050) == pytest.approx((1e-3 + 1e-4) / 2)  # half way down the cosine
    assert lr(2000) == pytest.approx(1e-4)
    assert lr(5000) == pytest.approx(1e-4)
    lrs = [lr(i) for i in range(100, 2001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))  # monotone decay


def test_constant_lr():
    assert schedule(decay_lr=False, lr=0.3, min_lr=0.1)(7) == 0.3


def test_moving_the_decay_end_continues_from_the_current_lr():
    lr = schedule()
    at_1000 = lr(1000)
    lr.decay_to(1000, 4000)
    assert lr(1000) == at_1000  # no jump at the resume point
    lrs = [lr(i) for i in range(1000, 4001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(1e-4)
    assert lr(2500) == pytest.approx(1e-4 + 0.5 * (at_1000 - 1e-4))  # half way down the new cosine
    finished = schedule()
    finished.decay_to(2000, 4000)  # a finished run extended: stays at min_lr, never back up
    assert all(finished(i) == pytest.approx(1e-4) for i in range(2000, 4001, 100))


def test_moving_the_decay_end_during_warmup_keeps_the_warmup():
    lr = schedule()
    lr.decay_to(50, 4000)
    assert lr(50) == pytest.approx(1e-3 * 51 / 101) and lr(100) == pytest.approx(1e-3)
    assert lr(2050) == pytest.approx((1e-3 + 1e-4) / 2)


def test_schedule_state_round_trip():
    lr = schedule()
    lr.decay_to(1000, 4000)
    again = schedule()
    again.load_state_dict(lr.state_dict())
    assert [again(i) for i in range(0, 5000, 7)] == [lr(i) for i in range(0, 5000, 7)]



def without(key: str):
    return lambda state: state.pop(key)


@pytest.mark.parametrize("change, reason", [
    (without("decay_iters"), "it has no 'decay_iters'"),
    (without("anchor_lr"), "it has no 'anchor_lr'"),
    (lambda s: s.update(lr="3e-4"), "'lr' must be a finite number > 0, got '3e-4'"),
    (lambda s: s.update(min_lr=float("nan")), "'min_lr' must be a finite number >= 0, got nan"),
    (lambda s: s.update(warmup_iters=1.5), "'warmup_iters' must be an integer >= 0, got 1.5"),
    (lambda s: s.update(decay_iters=None), "'decay_iters' must be an integer >= 0, got None"),
    (lambda s: s.update(decay="yes"), "'decay' must be true or false, got 'yes'"),
    (lambda s: s.update(anchor_iter=True), "'anchor_iter' must be None or an integer >= 0, got True"),
    (lambda s: s.update(anchor_iter=5), "'anchor_iter' and 'anchor_lr' are set together, got 5 and None"),
    (lambda s: s.update(kind=["wsd"]), "'kind' must be 'cosine' or 'wsd', got ['wsd']"),
    (lambda s: s.update(warmdown_frac=2), "'warmdown_frac' must be a number in [0, 1], got 2"),
    (lambda s: s.update(peak=1.0), "'peak': not a key of the schedule"),
])
def test_a_damaged_schedule_state_is_one_line_naming_its_key(change, reason):
    """A crafted or damaged checkpoint's schedule is refused whole when it is restored (load_part's one
    line), not a traceback at a later step; the schedule keeps its values."""
    from gpt2.errors import CheckpointError
    from gpt2.train.checkpoint import load_part

    lr, state = schedule(), schedule().state_dict()
    change(state)
    with pytest.raises(CheckpointError) as err:
        load_part("schedule", lr, state)
    assert str(err.value) == f"its schedule state does not fit this run ({reason})"
    assert lr == schedule()


def test_a_format_2_schedule_state_keeps_the_kind_of_the_run():
    """upgrade_v2's schedule has no kind and warmdown_frac: the run's own are kept."""
    lr, state = schedule(schedule="wsd", warmdown_frac=0.25), schedule().state_dict()
    del state["kind"], state["warmdown_frac"]
    lr.load_state_dict({**state, "decay_iters": 3000})
    assert (lr.kind, lr.warmdown_frac, lr.decay_iters) == ("wsd", 0.25, 3000)

def test_weight_decay_only_on_2d_weights():
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=16, bias=True, vocab_size=50, block_size=8))
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.dim() == 2 for p in decay["params"]) and all(p.dim() == 1 for p in no_decay["params"])
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == model.num_params(False)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"transformer.ln_f.weight", "transformer.h.0.attn.c_attn.bias"}


def test_optimizer_uses_the_config():
    model = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=10, block_size=4))
    opt = build_optimizer(model, OptimConfig(lr=0.01, beta1=0.8, beta2=0.95), torch.device("cpu"))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.param_groups[0]["betas"] == (0.8, 0.95) and opt.param_groups[0]["lr"] == 0.01
    assert opt.param_groups[0]["fused"] is True  # optim.fused=null: the fused kernel on a CPU
    plain = build_optimizer(model, OptimConfig(fused=False), torch.device("cpu"))
    assert not plain.param_groups[0]["fused"]


def test_wsd_warms_up_holds_then_decays_linearly():
    lr = schedule(schedule="wsd", warmdown_frac=0.25)  # 2000 iterations: warmdown from 1500
    assert lr(0) == pytest.approx(1e-3 / 101) and lr(99) == pytest.approx(1e-3 * 100 / 101)
    assert lr(100) == lr(1000) == lr(1499) == 1e-3  # stable
    assert lr.warmdown_start == 1500
    assert lr(1750) == pytest.approx((1e-3 + 1e-4) / 2)  # half way down the line
    assert lr(2000) == lr(9000) == 1e-4
    lrs = [lr(i) for i in range(1500, 2001)]
    assert all(a > b for a, b in zip(lrs, lrs[1:]))
    assert [lrs[i + 1] - lrs[i] for i in (0, 250)] == pytest.approx([-9e-7 / 500 * 1000] * 2)  # a straight line
    assert "constant to iteration 1500, then linear to 1.00e-04 at iteration 2000" in lr.describe()
    assert schedule(schedule="wsd", warmdown_frac=1.0).warmdown_start == 100  # never inside warmup


def test_extending_a_wsd_run_never_jumps():
    stable = schedule(schedule="wsd", warmdown_frac=0.25)
    stable.decay_to(1000, 4000)  # resumed while stable: holds, then its warmdown over the new end's last quarter
    assert stable(1000) == stable(2999) == 1e-3 and stable(3500) == pytest.approx((1e-3 + 1e-4) / 2)
    cooling = schedule(schedule="wsd", warmdown_frac=0.25)
    at_1800 = cooling(1800)
    cooling.decay_to(1800, 4000)  # resumed in the warmdown: holds its LR there, then the new end's warmdown
    assert cooling(1800) == cooling(2999) == at_1800 and cooling(3500) == pytest.approx((at_1800 + 1e-4) / 2)
    lrs = [cooling(i) for i in range(1800, 4001)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:])) and lrs[-1] == pytest.approx(1e-4)
    again = schedule(schedule="wsd")
    again.load_state_dict(cooling.state_dict())
    assert [again(i) for i in range(0, 5000, 7)] == [cooling(i) for i in range(0, 5000, 7)]
