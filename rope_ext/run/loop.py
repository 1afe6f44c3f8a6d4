"""The step loop: epochs of updates, a sync point every ``train.log_every`` steps (the non-finite check
and stop requests, agreed across ranks), validation and a checkpoint at every epoch end.

Every step checks that its loss, gradients and updated weights are finite, read at the next sync point,
before any checkpoint: divergence, or a failed linear solve, raises ``Diverged`` with the last good
checkpoint kept. A stop request (a signal, ``rope_ext.run.preemption``) checkpoints and raises
``Interrupted``.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from rope_ext.loader import Batches
from rope_ext.run import distributed, hardware
from rope_ext.run.build import Data, Engine
from rope_ext.run.evaluation import evaluate
from rope_ext.run.preemption import Interrupted
from rope_ext.run.state import Context, RunState, first_line, fmt, save
from rope_ext.tracking.provenance import process_revision

log = logging.getLogger(__name__)

# (global step, step in epoch, loss (), lr, finite (3,): loss, gradients, weights) not yet checked or logged
Pending = tuple[int, int, torch.Tensor, float, torch.Tensor]


class Diverged(RuntimeError):
    """Training diverged (a non-finite loss, gradient or weight, or a failed linear solve); the last good
    checkpoint is kept and nothing non-finite was saved."""


def diverged_message(what: str, state: RunState) -> str:
    """One paragraph: what diverged where, and which checkpoint is kept."""
    kept = (
        "no checkpoint was written"
        if state.on_disk == "none"
        else f"the last good checkpoint ({state.on_disk}) is kept"
    )
    return (
        f"Training diverged: {what}. Stopped; {kept}, and no checkpoint or result holds these weights. "
        "Lower train.lr, enable train.grad_clip, or use fp32."
    )


def speed_warmup(configured: int, steps: int) -> int:
    """Steps left out of ``train_img_per_s`` at the start of a run whose first epoch here has ``steps``.

    At most half of them, so that a short run (an epoch of fewer steps than configured) is still
    measured: a speed that includes start-up costs beats no speed at all in a sweep table.
    """
    return max(0, min(configured, steps // 2))


def bar(ctx: Context, **kwargs: Any) -> tqdm:
    """A tqdm bar, or (no bars: not rank 0, or not a terminal) a disabled one whose calls do nothing."""
    return tqdm(disable=not ctx.bars, dynamic_ncols=True, **kwargs)


def run_epochs(ctx: Context, engine: Engine, data: Data, state: RunState) -> None:
    """Train from ``state`` to ``train.epochs``: an epoch of updates, then validation and a checkpoint.
    A signal raises Interrupted once its checkpoint is on disk."""
    epochs = ctx.config.train.epochs
    with bar(ctx, total=epochs, initial=state.epoch, desc="epochs", position=0) as epochs_bar:
        first = state.epoch
        while state.epoch < epochs:
            losses = train_epoch(ctx, engine, data.train, state, first_here=state.epoch == first)
            end_epoch(ctx, engine, data.val, state, losses)
            epochs_bar.update(1)
            if ctx.hooks is not None:
                ctx.hooks.after_epoch(state.epoch)
            # a signal in the epoch's last step or during its end (validation, checkpoint): the
            # checkpoint just saved is complete, stop like any other interruption (exit 128+signal)
            late = agreed_signal(ctx)
            if late:
                where = "after the last epoch (before the final evaluation)"
                if state.epoch < epochs:
                    where = f"after epoch {state.epoch}'s checkpoint"
                raise Interrupted(late, where)
    # a signal after the loop's last check (or a rerun with every epoch done): stop the same way
    late = agreed_signal(ctx)
    if late:
        raise Interrupted(late, "after the last epoch (before the final evaluation)")


def train_epoch(
    ctx: Context, engine: Engine, batches: Batches, state: RunState, first_here: bool
) -> list[torch.Tensor]:
    """The updates of epoch ``state.epoch`` from ``state.step_in_epoch`` on; returns their losses (each
    a 0-dim tensor still on the device). Counts the images/s of its steady state into ``state.speed``.

    A stop request at a sync point checkpoints mid-epoch and raises Interrupted, except in the epoch's
    last step: the caller then ends the epoch (its checkpoint is the stop's) and stops. A checkpoint
    holding all of an epoch's steps (written by earlier versions) resumes as that epoch's end.
    """
    train, device, steps = ctx.config.train, ctx.device, ctx.steps_per_epoch
    skip = min(state.step_in_epoch, steps)
    if skip == steps:
        return []
    batches.set_epoch(state.epoch, skip=skip)
    engine.net.train()
    losses: list[torch.Tensor] = []
    pending: list[Pending] = []
    images, timer_start = 0, None if first_here else hardware.now(device)
    # the first steps of a process pay for allocation, compilation and autotuning: not counted
    warmup = speed_warmup(train.speed_warmup_steps, steps - skip) if first_here else 0
    with bar(ctx, total=steps, initial=skip, desc=f"epoch {state.epoch + 1}", position=1, leave=False) as b:
        step = skip
        for i, (x, y) in enumerate(batches):
            if i == warmup and timer_start is None:
                timer_start = hardware.now(device)
            try:
                loss, lr, finite = update(ctx, engine, x, y, (state.epoch + 1, step + 1))
            except torch.linalg.LinAlgError as err:
                check(ctx, state, pending, b)  # an earlier step's non-finite values are the cause
                what = f"the rotary encoding's linear solve failed ({first_line(err)}) at epoch "
                raise Diverged(
                    diverged_message(f"{what}{state.epoch + 1}, step {step + 1}/{steps}", state)
                ) from None
            step += 1
            state.global_step += 1
            losses.append(loss)
            pending.append((state.global_step, step, loss, lr, finite))
            if timer_start is not None:
                images += x.shape[0]
            b.update(1)
            # the sync point: every log_every steps (ranks agree on it); alone, right after a signal
            if (
                len(pending) >= train.log_every
                or step == steps
                or (ctx.guard.requested and not ctx.env.enabled)
            ):
                stop = check(ctx, state, pending, b)
                pending = []
                if stop is not None and step < steps:
                    state.step_in_epoch = step
                    state.partial_loss = loss_sums(ctx, losses, state.partial_loss)
                    save(ctx, engine, state)
                    raise Interrupted(stop, f"at epoch {state.epoch + 1} step {step}/{steps}")
    if timer_start is not None:
        state.speed["images"] += images
        state.speed["seconds"] += hardware.now(device) - timer_start
    return losses


def update(
    ctx: Context, engine: Engine, x: torch.Tensor, y: torch.Tensor, where: tuple[int, int]
) -> tuple[torch.Tensor, float, torch.Tensor]:
    """One optimiser step on images ``x`` (B, 3, H, W) and labels ``y`` (B,); returns the loss (a 0-dim
    tensor, not synchronised), the lr it used and whether (3,) the loss, the gradients and the weights
    after the update are finite (not synchronised either: ``check`` reads them at the sync point).

    ``where``: (epoch, step), 1-based, for the debug hook (``ctx.hooks``) when one is installed."""
    hooks, clip = ctx.hooks, ctx.config.train.grad_clip
    if hooks is not None:
        hooks.before_forward(*where)
    if engine.mixup is not None:
        x, y = engine.mixup(x, y)
    with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype, enabled=ctx.amp_dtype is not None):
        loss = engine.criterion(engine.net(x), y)
    if hooks is not None:
        loss = hooks.on_loss(*where, loss)
    engine.optimizer.zero_grad(set_to_none=True)
    engine.scaler.scale(loss).backward()
    params = [p for p in engine.model.parameters() if p.requires_grad]
    if hooks is not None:
        hooks.after_backward(*where, params)
    if clip:
        engine.scaler.unscale_(engine.optimizer)  # clip the true gradients, not the scaled ones
        nn.utils.clip_grad_norm_(engine.net.parameters(), clip)
    # with fp16 loss scaling, non-finite gradients are expected now and then: the scaler skips them
    grads = [p.grad for p in params if p.grad is not None and not engine.scaler.is_enabled()]
    grads_ok = finite(grads, loss.device)
    engine.scaler.step(engine.optimizer)
    engine.scaler.update()
    lr = engine.scheduler.get_last_lr()[0]
    engine.scheduler.step()
    if hooks is not None:
        hooks.after_update(*where, params)
    ok = torch.stack([loss.detach().isfinite(), grads_ok, finite(params, loss.device)])
    return loss.detach(), lr, ok


def finite(tensors: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """Whether every element of ``tensors`` is finite: a 0-dim bool on ``device``, not synchronised.

    CUDA: one fused max-abs over all of them (``torch.nn.utils.get_total_norm``, as gradient clipping
    does: a few kernels, NaN propagates). CPU, where that norm runs tensor by tensor (~24 ms for the
    default model's 2.7M weights on one thread): the sum of their sums (~1 ms), NaN or infinite exactly
    when an element is, barring a sum beyond 3e38, which no run's weights reach before they are lost.
    """
    if not tensors:
        return torch.ones((), dtype=torch.bool, device=device)
    if device.type == "cuda":
        return nn.utils.get_total_norm(tensors, float("inf"), foreach=True).isfinite()
    return torch.stack([t.sum(dtype=torch.float32) for t in tensors]).sum().isfinite()


def check(ctx: Context, state: RunState, pending: list[Pending], steps_bar: tqdm) -> int | None:
    """The loop's sync point: the non-finite check and stop requests (agreed across ranks), logging.

    Returns the signal number when the job must checkpoint and stop; raises Diverged naming the first
    step whose loss, gradients or updated weights were not finite (no checkpoint was written since).
    """
    if not pending:
        return None
    epoch, steps = state.epoch, ctx.steps_per_epoch
    values = torch.stack([loss for _, _, loss, _, _ in pending]).float().cpu().tolist()
    ok = torch.stack([good for *_, good in pending]).cpu()
    ctx.guard.announce()
    flags = distributed.all_reduce_max([float(not bool(ok.all())), float(ctx.guard.signum or 0)], ctx.device)
    if flags[0]:
        raise Diverged(diverged_message(_what_diverged(pending, values, ok.tolist(), epoch, steps), state))
    for (global_step, _, _, lr, _), value in zip(pending, values):
        ctx.tracker.log(
            {"trainer/step": global_step, "train/loss": value, "train/lr": lr, "trainer/epoch": epoch}
        )
    steps_bar.set_postfix({"loss": f"{values[-1]:.4f}"})
    if not ctx.bars:
        log.info(
            "epoch %d step %d/%d | loss %.4f | lr %.2e",
            epoch + 1,
            pending[-1][1],
            steps,
            values[-1],
            pending[-1][3],
        )
    return int(flags[1]) or None


def _what_diverged(
    pending: list[Pending], values: list[float], ok: list[list[bool]], epoch: int, steps: int
) -> str:
    """The first step of ``pending`` whose values were not finite, and which of them; another rank's
    when every step here was finite."""
    for (_, step, _, _, _), value, flags in zip(pending, values, ok):
        if not all(flags):
            names = ("the loss", "the gradients", "the weights after the update")
            parts = [n for n, good in zip(names, flags) if not good]
            listed = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
            what = f"{listed} {'is' if parts == [names[0]] else 'are'} not finite"
            what += f" (loss {value})" if not flags[0] else ""
            return what + f" at epoch {epoch + 1}, step {step}/{steps}"
    what = f"on another rank, the loss, gradients or weights are not finite (by epoch {epoch + 1}, "
    return what + f"step {pending[-1][1]}/{steps})"


def agreed_signal(ctx: Context) -> int:
    """The stop request of any rank (a signal number), 0 when none."""
    return int(distributed.all_reduce_max([float(ctx.guard.signum or 0)], ctx.device)[0])


def end_epoch(
    ctx: Context, engine: Engine, val: Batches | None, state: RunState, losses: list[torch.Tensor]
) -> None:
    """Validate, remember the best epoch, checkpoint, log."""
    epoch = state.epoch
    val_acc = evaluate(engine.evaluator, val, ctx.device, ctx.amp_dtype) if val else None
    total, count = loss_sums(ctx, losses, state.partial_loss)
    train_loss = total / count if count else float("nan")
    state.partial_loss = [0.0, 0.0]
    if val_acc is not None and (state.best_val_acc is None or val_acc > state.best_val_acc):
        state.best_val_acc, state.best_epoch = val_acc, epoch + 1
    state.epoch, state.step_in_epoch = epoch + 1, 0
    lr = engine.scheduler.get_last_lr()[0]
    # the code that trained this epoch: a resumed run's epochs can come from different revisions, and
    # metrics.json's provenance is only the revision that wrote it
    revision = process_revision()["commit"]
    state.history.append(
        {"epoch": epoch + 1, "train_loss": train_loss, "val_acc": val_acc, "lr": lr, "revision": revision}
    )
    save(ctx, engine, state)
    state.epochs_done = state.epoch
    ctx.tracker.log(
        {"trainer/epoch": epoch + 1, "epoch/train_loss": train_loss, "epoch/val_acc": val_acc}
        | {"epoch/best_val_acc": state.best_val_acc}
    )
    log.info(
        "epoch %d/%d | train_loss %.4f | val_acc %s (best %s) | checkpoint saved",
        epoch + 1,
        ctx.config.train.epochs,
        train_loss,
        fmt(val_acc),
        fmt(state.best_val_acc),
    )


def loss_sums(ctx: Context, losses: list[torch.Tensor], carried: list[float]) -> list[float]:
    """[sum, count] of this epoch's losses over all ranks, plus what a mid-epoch checkpoint carried."""
    total = float(torch.stack(losses).float().sum().item()) if losses else 0.0
    s, n = distributed.all_reduce_sum([total, float(len(losses))], ctx.device)
    return [s + carried[0], n + carried[1]]
