"""Choose each arm's learning rate on validation: ``python -m rope_ext.tune DIR --study NAME``.

Reads the runs of a tuning multirun (``python train.py -m experiment=<study>_tune``: every arm at each
``train.lr`` of a grid, a few seeds), averages each (arm, lr)'s final-model ``val_acc`` over its seeds and
keeps, per arm, the lr with the highest mean (ties: the smaller lr). Nothing here reads test accuracy.
Writes one git-trackable file per arm, ``conf/experiment/tuned/<study>/<arm>.yaml``, which selects the arm
and sets ``train.lr``; the final preset (``experiment=<study>``) sweeps them:
``python train.py experiment=<study> +experiment/tuned/<study>=<arm> seed=0`` reruns one job.
An arm whose runs are all missing or failed is refused (exit 2): the final study cannot run it untuned.
The study and every arm name (read from the sweep's runs) must be one path component naming an existing
``conf/experiment/arm/<arm>.yaml`` (else exit 2 naming the value); the files are written with
``yaml.safe_dump`` from those checked values, never by formatting text, and never through a link: each
file is written atomically by ``safe_io.write_text_nofollow`` below the ``--conf`` directory, and a link
at the file or at any folder between ``--conf`` and it is refused naming it (exit 4, like any file that
cannot be written: a read-only or full disk, a file where a folder is expected).
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rope_ext import safe_io
from rope_ext.config import CONF, ConfigError
from rope_ext.report.runs import Run, find_runs
from rope_ext.safety import COMPONENT, COMPONENT_ALLOWED

__all__ = ["choose_lrs", "main", "write_tuned"]


def _lr(run: Run) -> float | None:
    """The run's ``train.lr``; None when its record holds no positive finite number."""
    lr = run.cfg("train.lr")
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        return None
    return float(lr)


def check_component(key: str, value: str) -> None:
    """Raise ``ConfigError`` unless ``value`` is one safe path component (``rope_ext.safety.COMPONENT``)."""
    if not COMPONENT.fullmatch(value) or value in (".", ".."):
        raise ConfigError.bad_value(key, value, COMPONENT_ALLOWED, "it names a file under conf/experiment/")


def check_names(study: str, arms: Sequence[str], conf_dir: Path) -> None:
    """Raise ``ConfigError`` unless ``study`` and each arm are one path component and each arm names a
    file of ``conf/experiment/arm/``: the generated files stay inside ``conf/experiment/tuned/``."""
    check_component("--study", study)
    for arm in arms:
        check_component("arm (+experiment/arm in the sweep's overrides)", arm)
        if not (conf_dir / "experiment" / "arm" / f"{arm}.yaml").is_file():
            raise ConfigError.bad_value(
                "arm (+experiment/arm in the sweep's overrides)",
                arm,
                f"an arm of {conf_dir / 'experiment' / 'arm'}",
                "the generated preset selects it",
            )


def choose_lrs(runs: Sequence[Run]) -> dict[str, dict[str, Any]]:
    """``{arm: {"lr": chosen, "val_acc": {lr: (mean, n)}, "failed": k}}`` from the ok runs' ``val_acc``."""
    table: dict[str, dict[float, list[float]]] = {}
    failed: dict[str, int] = {}
    for run in runs:
        arm = run.arm
        table.setdefault(arm, {})
        val, lr = run.metrics.get("val_acc"), _lr(run)
        if run.status != "ok" or not isinstance(val, (int, float)) or lr is None:
            failed[arm] = failed.get(arm, 0) + 1
            continue
        table[arm].setdefault(lr, []).append(float(val))
    out: dict[str, dict[str, Any]] = {}
    for arm, by_lr in sorted(table.items()):
        means = {lr: (statistics.fmean(v), len(v)) for lr, v in sorted(by_lr.items())}
        best = max(means, key=lambda lr: (means[lr][0], -lr)) if means else None
        out[arm] = {"lr": best, "val_acc": means, "failed": failed.get(arm, 0)}
    return out


def write_tuned(
    choice: dict[str, dict[str, Any]], study: str, source: str, conf_dir: Path = CONF
) -> list[Path]:
    """One ``conf/experiment/tuned/<study>/<arm>.yaml`` per arm; returns the written paths. The study and
    arms are checked first (``check_names``: ``ConfigError``, nothing written); each file is written
    without following links below ``conf_dir`` (``safe_io.UnsafePathError``, ``safe_io.WriteError``)."""
    check_names(study, list(choice), conf_dir)
    out_dir = conf_dir / "experiment" / "tuned" / study
    written = []
    shown = source if source.isprintable() else "<tuning sweep>"
    for arm, info in choice.items():
        grid = ", ".join(f"{lr:g}: {m:.2f} (n={n})" for lr, (m, n) in info["val_acc"].items())
        # the header holds only checked values (study), numbers and a one-line source path
        header = [
            "# @package _global_",
            f"# GENERATED by python -m rope_ext.tune {shown} --study {study}",
            f"# lr chosen on validation (final-model val_acc, mean over seeds) from: {grid}",
        ]
        if info["failed"]:
            header.append(f"# {int(info['failed'])} tuning run(s) of this arm failed or are missing")
        body = {"defaults": [{"/experiment/arm": arm}, "_self_"], "train": {"lr": float(info["lr"])}}
        path = out_dir / f"{arm}.yaml"
        text = "\n".join(header) + "\n" + yaml.safe_dump(body, sort_keys=False)
        safe_io.write_text_nofollow(path, text, root=conf_dir)
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    """Choose and write each arm's lr; exit status 2 when there are no runs or an arm has no result, 4
    when a file cannot be written (a link in the way, a read-only or full disk)."""
    parser = argparse.ArgumentParser(prog="python -m rope_ext.tune", description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="the tuning multirun's sweep directory")
    parser.add_argument("--study", required=True, help="the final preset's name, e.g. digits_blocks")
    parser.add_argument("--conf", default=str(CONF), help="the conf/ directory to write into")
    args = parser.parse_args(argv)
    try:
        check_component("--study", args.study)
        skipped: list[tuple[Path, str]] = []
        runs = find_runs(args.dir, skipped=skipped)
    except ConfigError as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(str(exc).replace("report:", "tune:", 1), file=sys.stderr)
        return 2
    for path, why in skipped:
        print(f"tune: skipped {path} (cannot be read: {why})", file=sys.stderr)
    choice = choose_lrs(runs)
    if not choice:
        print(f"tune: DIR={args.dir!r} holds no runs", file=sys.stderr)
        return 2
    untuned = [arm for arm, info in choice.items() if info["lr"] is None]
    if untuned:
        print(
            f"tune: arms {untuned} have no finished run with val_acc; rerun the tuning sweep", file=sys.stderr
        )
        return 2
    try:
        written = write_tuned(choice, args.study, args.dir, Path(args.conf))
    except ConfigError as exc:
        print(f"tune: {exc} Nothing was written.", file=sys.stderr)
        return 2
    except OSError as exc:  # a link (safe_io.UnsafePathError), a read-only or full disk: one paragraph
        print(f"tune: {exc}", file=sys.stderr)
        return 4
    for path in written:
        print(path)
    for arm, info in choice.items():
        print(f"{arm}: lr {info['lr']:g}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
