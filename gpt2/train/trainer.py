"""The training loop and its policy: when to evaluate, log, save and stop (`Trainer.loop`), and
`train()`, which plans the start (gpt2/train/resume.py), runs the trainer and ends every process
together.

The parts of a run come from `gpt2.train.parts.build`; their state goes into checkpoints through
`RunCheckpoints`. A run directory ends up with config.yaml, train.log (Hydra), metrics.jsonl,
summary.json, loss.png, sample.txt and ckpt/{last,best,iter_NNNNNNN}.pt.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterator, Optional

import torch
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from gpt2.config import Config, TrainerConfig
from gpt2.errors import CheckpointError, ConfigError, HarnessError, NonFiniteLossError, PeerFailed
from gpt2.files import atomic_write_text
from gpt2.run.logger import NoLogger, RunLogger, check_logger_env, copy_history
from gpt2.run.record import RunSummary
from gpt2.run.rundir import RunDirLock
from gpt2.signals import STOP, Interrupted, StopSignals
from gpt2.train.checkpoint import BEST, LAST, load_model
from gpt2.train import budget, hellaswag
from gpt2.train.budget import Footprint
from gpt2.train.distributed import Dist, is_peer_failure
from gpt2.train.mfu import flops_per_token, peak_tflops, utilisation
from gpt2.train.parts import Parts, build, config_footprint
from gpt2.train.resume import ResumePlan, plan_start
from gpt2.train.run_checkpoints import RunCheckpoints
from gpt2.train.runtime import dtype_name, is_out_of_memory, peak_rss_mb, resolve_device
from gpt2.train.step import Evaluation, FiniteGuard, evaluate, sample_text, train_step

log = logging.getLogger(__name__)


@dataclass
class Progress:
    """What the loop tracks: the step count, losses, and the timing window since the last log."""

    iters: int = 0
    best_val_loss: float = math.inf
    last_val_loss: float = math.nan
    best_val_bpb: float = math.nan
    """Bits per byte of the evaluation with the best val loss."""
    last_val_bpb: float = math.nan
    last_train_loss: float = math.nan
    last_hellaswag_acc: float = math.nan
    last_hellaswag_acc_norm: float = math.nan
    """The last HellaSwag score (trainer.hellaswag_interval > 0)."""
    train_seconds: float = 0.0
    window_start: float = 0.0
    window_steps: int = 0

    def state_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("iters", "best_val_loss", "last_val_loss", "best_val_bpb",
                                              "last_val_bpb", "last_train_loss", "last_hellaswag_acc",
                                              "last_hellaswag_acc_norm", "train_seconds")}

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)


class Trainer:
    """Trains the parts of a run (`build(config)` unless given) into run_dir, as `plan` says
    (`train()` plans the start; without a plan the trainer asks `plan_start` itself)."""

    def __init__(self, config: Config, run_dir: Path, parts: Optional[Parts] = None,
                 plan: Optional[ResumePlan] = None):
        self.config, self.run_dir = config, Path(run_dir)
        self.plan = plan if plan is not None else plan_start(config, self.run_dir)
        # a fine-tune resumes from its checkpoint alone: model.init_from's weights are not read again
        resumed_args = self.plan.state["model_args"] if self.plan.resuming and config.model.init_from else None
        if config.trainer.hellaswag_interval and Dist.from_env().is_main:  # fail fast: before data and model
            hellaswag.fetch_file(config.data.data_dir, config.data.mirror)
        self.parts = p = parts or build_or_explain(config, resumed_args)
        self.hellaswag = hellaswag_examples(config, p)  # None: off
        self.progress, self.guard = Progress(), FiniteGuard(p.runtime.device)
        self.stopping: Optional[str] = None  # the stop signal every rank agreed on
        self.tokens_per_step = config.data.batch_size * config.data.block_size * config.trainer.grad_accum
        self.token_bytes = torch.tensor(p.data.encoder.token_bytes(), device=p.runtime.device)  # bits per byte
        self.flops_per_token = flops_per_token(p.model, config.data.block_size)
        peak = peak_tflops(p.runtime.device, config.trainer.peak_tflops)
        self.peak_tflops = peak * p.runtime.dist.world_size if peak else None  # all devices
        self.ckpts = RunCheckpoints(self.run_dir / "ckpt", config, p, self.progress)
        if self.plan.resuming:
            self.ckpts.restore(self.plan)  # last: restores the RNGs that model init consumed
            self.plan = replace(self.plan, state=None)  # the parts hold it now: the file is not kept open
        else:
            log.info("lr schedule: %s", p.schedule.describe())
            if config.warmup_iters != config.optim.warmup_iters:
                log.warning("optim.warmup_iters=%d is not shorter than the run (trainer.max_iters=%d): warming up "
                            "over %d iterations instead (a tenth of it); set optim.warmup_iters below %d to choose",
                            config.optim.warmup_iters, config.trainer.max_iters, config.warmup_iters,
                            config.trainer.max_iters)
        log.info("%s", describe_batch(config, p.runtime.dist))
        log.info("model: %.2fM parameters (%d non-embedding), vocab %d (padded to %d), context %d, "
                 "device %s, %s", p.model.num_params(False) / 1e6, p.model.num_params(), p.model.vocab_size,
                 p.model.padded_vocab_size, p.model.block_size, p.runtime.device, dtype_name(p.runtime.dtype))

    # ---------------------------------------------------------------------------------- the run
    def fit(self, on_step: Optional[Callable[["Trainer"], None]] = None) -> RunSummary:
        """Evaluate at step 0 (a fresh run), train to trainer.max_iters, save ckpt/last.pt, sample
        from the best weights; a stop signal ends it early, with a checkpoint. Returns the summary
        (also in summary.json)."""
        wall_start, main = time.perf_counter(), self.parts.runtime.dist.is_main
        with self.open_log() as run_log, STOP.deferred() as stop:
            self.ckpts.wandb_id = run_log.wandb_id
            try:
                if not self.plan.resuming:  # said first: a long window's evaluation takes a while
                    log.info("step 0: evaluating the untrained model")
                    loss, bpb = self.evaluate()
                    row = {"iter": 0, "val_loss": loss, "val_bpb": bpb, "lr": self.parts.schedule(0)}
                    run_log.log({**row, **self.score_hellaswag()} if self.hellaswag is not None else row)
                self.loop(run_log, stop, on_step)
                stop.finishing()  # trained: from here a signal no longer stops the run's end
                self.save(LAST)
                sample = self.sample()
                stopped_by = self.stopped_by(self.stopping or stop.received)
                summary = run_summary(self, time.perf_counter() - wall_start, stopped_by, sample)
                run_log.finish(summary)
            except Interrupted as exc:  # a second Ctrl-C: no final save, but say what is intact
                if not main:
                    raise SystemExit(1) from None  # rank 0 says it
                stopped_by = self.stopped_by(exc.signal_name)
                run_summary(self, time.perf_counter() - wall_start, stopped_by, "").write(self.run_dir)
                raise Interrupted(exc.signal_name, f"at once (second Ctrl-C) at iteration {self.progress.iters}; "
                                                   f"{self.intact()}") from None
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                raise out_of_memory(self.config, f"in iteration {self.progress.iters + 1}",
                                    self.parts.footprint) from None
        return summary

    def loop(self, run_log: RunLogger, stop: StopSignals, on_step: Optional[Callable]) -> None:
        """Train until trainer.max_iters or a stop signal; after each step, what is due: an
        evaluation (ckpt/best.pt when it is the best yet), a logged row, a checkpoint."""
        tc, p = self.config.trainer, self.progress
        batches = self.parts.data.train_dl.forever()
        with self.progress_bar() as bar, logging_redirect_tqdm():  # log lines above the bar, not glued to it
            p.window_start = time.perf_counter()
            self.stopping = self.poll_stop(stop)
            while p.iters < tc.max_iters and self.stopping is None:
                loss, norm, lr = self.step(batches)
                bar.update(1)
                if on_step is not None:
                    on_step(self)
                self.stopping = self.poll_stop(stop)  # every rank stops at the same step
                evaluating = p.iters % tc.eval_interval == 0 or p.iters == tc.max_iters
                scoring = self.hellaswag is not None and (p.iters % tc.hellaswag_interval == 0
                                                          or p.iters == tc.max_iters)
                if evaluating or scoring or p.iters % tc.log_interval == 0 or self.stopping:
                    row = self.measure(loss, norm, lr)  # syncs the device
                    if evaluating:
                        row["val_loss"], row["val_bpb"] = self.evaluate()
                        if p.last_val_loss < p.best_val_loss:
                            self.keep_best()
                    if scoring:
                        row.update(self.score_hellaswag())
                    self.log(run_log, row, bar)
                if tc.sample_interval and p.iters % tc.sample_interval == 0 and not self.stopping:
                    self.off_the_clock(lambda: run_log.log_sample(self.interval_sample()))
                if tc.ckpt_every and p.iters % tc.ckpt_every == 0 and p.iters < tc.max_iters:
                    self.off_the_clock(lambda: self.save(LAST))

    # --------------------------------------------------------------- what the loop's lines do
    def step(self, batches: Iterator) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One optimizer step at this iteration's LR, counted; (loss, grad norm, lr), the first two
        left on the device."""
        p, parts = self.progress, self.parts
        lr = parts.schedule(p.iters)
        loss, norm = train_step(parts.step_model, parts.optimizer, batches, parts.runtime, lr,
                                self.config.trainer.grad_accum, self.config.optim.grad_clip, p.iters)
        p.iters += 1
        p.window_steps += 1
        self.guard.update(loss, p.iters)
        return loss, norm, lr

    def measure(self, loss: torch.Tensor, norm: torch.Tensor, lr: float) -> dict:
        """This step's row: the training loss (its mean over ranks), the gradient norm, the LR and
        the speed of the steps since the last row. A NaN/inf loss since the last check stops here."""
        self.check_finite()
        p = self.progress
        p.last_train_loss = self.parts.runtime.dist.mean(loss).item()  # over ranks too
        elapsed = time.perf_counter() - p.window_start
        p.train_seconds += elapsed
        row = {"iter": p.iters, "train_loss": p.last_train_loss, "lr": lr, "grad_norm": norm.item(),
               "tokens_per_sec": p.window_steps * self.tokens_per_step / elapsed}
        mfu = self.mfu(row["tokens_per_sec"])
        if mfu is not None:
            row["mfu"] = mfu
        return row

    def evaluate(self) -> Evaluation:
        """Scores the validation batches; sets progress.last_val_loss and last_val_bpb."""
        # the plain module: not DDP's wrapper (no gradients to reduce), not torch.compile's (its batch
        # shapes and eval mode would compile the model again)
        result = evaluate(self.parts.model, self.parts.data.valid_dl, self.parts.runtime, self.token_bytes)
        self.progress.last_val_loss, self.progress.last_val_bpb = result
        return result

    def score_hellaswag(self) -> dict:
        """HellaSwag accuracy of the plain module (as `evaluate`: every rank scores its share of the
        examples, the counts are summed); sets progress.last_hellaswag_acc(_norm); the row's entries."""
        score = hellaswag.score(self.parts.model, self.hellaswag, self.parts.runtime)
        p = self.progress
        p.last_hellaswag_acc, p.last_hellaswag_acc_norm = score.acc, score.acc_norm
        return {"hellaswag_acc": score.acc, "hellaswag_acc_norm": score.acc_norm}

    def keep_best(self) -> None:
        """The last evaluation is the best yet: record it and save its weights as ckpt/best.pt."""
        p = self.progress
        p.best_val_loss, p.best_val_bpb = p.last_val_loss, p.last_val_bpb
        self.save(BEST)

    def log(self, run_log: RunLogger, row: dict, bar: tqdm) -> None:
        """Write the row (metrics.jsonl, W&B), its line in train.log and on the progress bar; the
        next row's speed counts from here."""
        p = self.progress
        log.info("iter %d: train loss %.4f%s%s, lr %.2e, %.0f tokens/s%s", p.iters, p.last_train_loss,
                 f", val loss {p.last_val_loss:.4f}" if "val_loss" in row else "",
                 f", hellaswag acc_norm {row['hellaswag_acc_norm']:.4f}" if "hellaswag_acc_norm" in row else "",
                 row["lr"], row["tokens_per_sec"], f", mfu {100 * row['mfu']:.1f}%" if "mfu" in row else "")
        run_log.log(row)
        p.window_start, p.window_steps = time.perf_counter(), 0
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", tok_s=f"{row['tokens_per_sec']:.0f}")

    def off_the_clock(self, work: Callable[[], None]) -> None:
        """Do `work` (a save, a sample) outside the timing of the training steps."""
        start = time.perf_counter()
        work()
        self.progress.window_start += time.perf_counter() - start

    def interval_sample(self) -> dict:
        """trainer.sample_interval's row: trainer.sample_tokens after trainer.sample_prompt, from the
        current weights, seeded alike every time (every rank samples: FSDP's forward needs them all)."""
        tc = self.config.trainer
        text = sample_text(self.parts.model, self.parts.data.encoder, self.parts.runtime, tc.sample_tokens, tc.seed,
                           tc.sample_prompt)
        return {"iter": self.progress.iters, "prompt": tc.sample_prompt, "text": text}

    def save(self, name: str) -> None:
        self.check_finite()  # never overwrite a good checkpoint with diverged weights
        try:
            self.ckpts.save(name)
        except OSError as exc:  # a full disk, a vanished directory: the atomic write left the old file
            raise CheckpointError(f"could not save {self.ckpts.dir / name} at iteration {self.progress.iters} "
                                  f"({exc.strerror}); {self.intact()}") from None

    def poll_stop(self, stop: StopSignals) -> Optional[str]:
        """The stop signal any rank has received: under torchrun every rank gets the same answer at
        the same step (one small all-reduce per step), so all stop together."""
        dist = self.parts.runtime.dist
        if not dist.enabled:
            return stop.received
        code = dist.max_int(signal.Signals[stop.received].value if stop.received else 0)
        return signal.Signals(code).name if code else None

    # ------------------------------------------------------------------------------- the rest
    def open_log(self) -> RunLogger | NoLogger:
        """Rank 0's RunLogger (a resumed run's metrics.jsonl and W&B run continued after the
        checkpoint's iteration); NoLogger on the other ranks."""
        if not self.parts.runtime.dist.is_main:
            return NoLogger()
        resume_from = self.progress.iters if self.plan.resuming else None
        if resume_from is not None:
            adopt_history(self.plan.path, self.run_dir, resume_from)
        return RunLogger(self.config.logger, self.run_dir, self.ckpts.config_dict, resume_from, self.ckpts.wandb_id)

    def progress_bar(self) -> tqdm:
        tc = self.config.trainer
        return tqdm(total=tc.max_iters, initial=self.progress.iters, desc="train", unit="it", dynamic_ncols=True,
                    disable=not (tc.progress and sys.stderr.isatty() and self.parts.runtime.dist.is_main))

    def sample(self) -> str:
        """Rank 0's sample.txt from the best weights ("" on the other ranks, and after a stop, which
        ends quickly)."""
        if not self.parts.runtime.dist.is_main or self.stopped_by(self.stopping):
            return ""
        sample = sample_best(self.ckpts, self.parts, self.config.trainer)
        atomic_write_text(self.run_dir / "sample.txt", sample)
        return sample

    def stopped_by(self, signal_name: Optional[str]) -> Optional[str]:
        """A stop during the final evaluation or sample of a finished run does not make it unfinished."""
        return signal_name if self.progress.iters < self.config.trainer.max_iters else None

    def mfu(self, tokens_per_sec: float) -> Optional[float]:
        """Model FLOPs utilisation at this speed (None without a known peak)."""
        return utilisation(tokens_per_sec, self.flops_per_token, self.peak_tflops)

    def check_finite(self) -> None:
        bad = self.guard.first(self.parts.runtime.dist)
        if bad is not None:
            last = self.ckpts.last_saved
            kept = (f"the last good checkpoint, {self.ckpts.dir / LAST} (iteration {last}), is untouched"
                    if last is not None else "no checkpoint had been saved yet")
            raise NonFiniteLossError(f"the training loss became NaN/inf at iteration {bad}; stopped ({kept})")

    def intact(self) -> str:
        """Which checkpoint a stop or an error leaves intact."""
        last = self.ckpts.last_saved
        return (f"{self.ckpts.dir / LAST} (iteration {last}) is intact: resume with trainer.resume=auto"
                if last is not None else "no checkpoint had been saved yet")


def train(config: Config, run_dir: Path, on_step: Optional[Callable[[Trainer], None]] = None,
          on_start: Optional[Callable[[], None]] = None) -> RunSummary:
    """Train as the config says, writing everything into run_dir, which this process owns meanwhile
    (RunDirLock); returns the summary. The start is planned first (`plan_start`: fresh, resumed, a
    finished run kept as it is, or refused). `on_start()` runs once the directory and the resume are
    accepted, before training (train.py writes config.yaml there); `on_step(trainer)` after every
    optimizer step (tests use it to send signals)."""
    dist = Dist.from_env()
    dist.check_batch(config.data.batch_size)  # before any work
    with RunDirLock(run_dir) if dist.is_main else nullcontext():  # rank 0 owns the directory
        plan = plan_start(config, run_dir)
        if plan.kind == "finished":  # e.g. a finished job of a continued sweep: keep its files as they are
            log.info("%s holds a finished run (%d iterations, best val loss %.4f): kept as it is",
                     run_dir, plan.summary["iters"], plan.summary["best_val_loss"])
            return plan.summary
        check_logger_env(config.logger)  # before any slow work, as the resume is
        try:
            trainer = Trainer(config, run_dir, plan=plan)
            if on_start is not None and dist.is_main:
                on_start()
            summary = trainer.fit(on_step)
            dist.barrier()  # rank 0 has written everything before any rank leaves
            return summary
        except Exception as exc:
            if dist.enabled and is_peer_failure(exc):  # the failing process shows its own error
                raise PeerFailed("stopped: another process of this torchrun run failed (its error is shown "
                                 "by it)") from None
            raise
        finally:
            dist.close()


def sample_best(ckpts: RunCheckpoints, parts: Parts, tc: TrainerConfig) -> str:
    """trainer.sample_tokens of text from the weights of the run's best validation loss (its best.pt),
    or the final weights when there is no best.pt of this run (see RunCheckpoints.best_model)."""
    if not tc.sample_tokens:
        return ""
    best = ckpts.best_model(parts.runtime.device)
    final = load_model(ckpts.dir / LAST, parts.runtime.device)[0] if ckpts.sharded else parts.model
    model, source = best if best is not None else (final, "the final weights (no best.pt of this run)")
    log.info("sampling %d tokens from %s", tc.sample_tokens, source)
    return sample_text(model, parts.data.encoder, parts.runtime, tc.sample_tokens, tc.seed, tc.sample_prompt)


def run_summary(trainer: Trainer, wall_s: float, stopped_by: Optional[str], sample: str) -> RunSummary:
    """What summary.json holds."""
    p, parts, per_step = trainer.progress, trainer.parts, trainer.tokens_per_step
    # stopped before the first evaluation of training: the best measured is the one at step 0
    best = p.best_val_loss if math.isfinite(p.best_val_loss) else p.last_val_loss
    best_bpb = p.best_val_bpb if math.isfinite(p.best_val_loss) else p.last_val_bpb
    tokens_per_sec = p.iters * per_step / max(p.train_seconds, 1e-9)
    hellaswag_scores = {"final_hellaswag_acc": p.last_hellaswag_acc, "final_hellaswag_acc_norm":
                        p.last_hellaswag_acc_norm} if trainer.hellaswag is not None else {}
    return RunSummary({"best_val_loss": best, "final_val_loss": p.last_val_loss, "best_val_bpb": best_bpb,
            "final_val_bpb": p.last_val_bpb,
            "final_train_loss": p.last_train_loss, "iters": p.iters, "tokens_seen": p.iters * per_step,
            "tokens_per_sec": tokens_per_sec, "mfu": trainer.mfu(tokens_per_sec),
            "wall_s": wall_s, "params": parts.model.num_params(False), "device": str(parts.runtime.device),
            "dtype": dtype_name(parts.runtime.dtype), "peak_rss_mb": round(peak_rss_mb(), 1),
            "stopped_by": stopped_by, "sample": sample, **hellaswag_scores})


def hellaswag_examples(config: Config, parts: Parts) -> Optional[list[hellaswag.Encoded]]:
    """The first trainer.hellaswag_examples HellaSwag examples, read and encoded once for every scoring
    (None with trainer.hellaswag_interval=0). Rank 0 fetched the file before building the parts; the
    other ranks take it after it has (fetching it themselves on another node)."""
    tc, d = config.trainer, config.data
    if not tc.hellaswag_interval:
        return None
    if parts.data.encoder.name != "gpt2":  # token files whose manifest says char
        raise ConfigError(f"trainer.hellaswag_interval: HellaSwag is scored in GPT-2 tokens, and {d.dir} holds "
                          f"{parts.data.encoder.name} tokens: set trainer.hellaswag_interval=0")
    parts.runtime.dist.barrier()
    path = hellaswag.fetch_file(d.data_dir, d.mirror)
    examples = hellaswag.load_examples(path, parts.data.encoder, parts.model.block_size, tc.hellaswag_examples)
    log.info("HellaSwag: %d examples of %s every %d steps", len(examples), path, tc.hellaswag_interval)
    return examples


def build_or_explain(config: Config, model_args: Optional[dict] = None) -> Parts:
    """build(config), with running out of memory told in one line (build refuses a model that
    cannot fit before making it, and tells running out of memory while making it itself)."""
    try:
        return build(config, model_args)
    except Exception as exc:
        if not is_out_of_memory(exc):
            raise
        raise out_of_memory(config, "while building the run") from None


def out_of_memory(config: Config, when: str, footprint: Optional[Footprint] = None) -> HarnessError:
    """One line for running out of memory: where, the largest part of the memory estimate (the built
    parts' footprint, else one from the config alone; gpt2/train/budget.py owns both) and what to lower."""
    footprint = footprint or config_footprint(config)
    return budget.out_of_memory(footprint, config, resolve_device(config.trainer.device), when)


def adopt_history(checkpoint: Path, run_dir: Path, upto: int) -> None:
    """A run resumed from another directory's checkpoint starts its metrics.jsonl (and samples.jsonl)
    with that run's rows up to the checkpoint (none if it has none), never with rows run_dir held before."""
    source_dir = Path(checkpoint).resolve().parent.parent
    if source_dir != Path(run_dir).resolve():
        copy_history(source_dir, run_dir, upto)


def describe_batch(config: Config, dist: Dist) -> str:
    """The global batch of a step and how the processes share it."""
    d, accum = config.data, config.trainer.grad_accum
    share = f" ({d.batch_size // dist.world_size} per process x {dist.world_size} processes)" if dist.enabled else ""
    return (f"batch: {d.batch_size} windows per micro-step{share} x grad_accum {accum} = {d.batch_size * accum} "
            f"windows = {d.batch_size * accum * d.block_size} tokens per step")
