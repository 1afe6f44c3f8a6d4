"""rope-ext training app: ``python train.py [overrides]`` (Hydra), or ``python -m rope_ext.app`` /
``rope-ext-train`` where the package is installed without the repository. See ``--help``.

Single run: ``python train.py pe=axial_block pe.block=4``; sweep: ``python train.py -m pe.block=2,3,4``;
DDP: ``torchrun --nproc_per_node=K train.py ...``. Outputs go to ``outputs/<run_id>/`` (multirun:
``multirun/<sweep>/<job>/``); rerunning the same command resumes from the checkpoint there.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from rope_ext import plugins
from rope_ext.config import CONF, ConfigError, check_command  # also registers the schema and resolvers
from rope_ext.install_check import check_torchvision


@hydra.main(version_base="1.3", config_path=str(CONF), config_name="config")
def main(cfg: DictConfig) -> float | None:
    from rope_ext.run.job import run_job

    plugins.load_all(list(cfg.get("plugins") or []))  # a launcher's process: before anything is built
    return run_job(cfg)


def run() -> None:
    """Check the command, then hand it to Hydra.

    Hydra creates the run directory and writes .hydra/{config,overrides,hydra}.yaml and train.log before
    the app runs: a refused command would rewrite a finished run's record and leave new folders. So the
    command is composed with Hydra's compose API from the same argv and validated (every job of a sweep)
    first, and only a valid one is handed to Hydra. Keeping Hydra's per-attempt files elsewhere
    (hydra.output_subdir) would still create the run directory and lose the record of the settings a
    run actually ran with, which the report and tune read.

    The check imports no torch, timm or wandb (a refusal answers in about a second); a command that
    runs jobs then checks that torch and torchvision work together (``rope_ext.install_check``), so a
    mismatched install stops with its fix in one paragraph rather than an operator traceback."""
    if {"--help", "-h"} & set(sys.argv[1:]) and "--resolve" not in sys.argv:
        sys.argv.append("--resolve")  # the help shows the values a run uses, interpolations resolved
    log = logging.getLogger("rope_ext")
    try:
        check_command(sys.argv[1:])
    except ConfigError as err:
        logging.basicConfig(format="[%(levelname)s] %(message)s")
        log.error("Invalid configuration: %s Nothing was written.", err)
        sys.exit(getattr(err, "exit_code", 2))  # 4: the run directory cannot be written (full, read-only)
    if _runs_jobs(sys.argv[1:]):
        problem = check_torchvision()
        if problem:
            logging.basicConfig(format="[%(levelname)s] %(message)s")
            log.error("%s Nothing was written.", problem)
            sys.exit(1)
    main()


def _runs_jobs(argv: list[str]) -> bool:
    """False for the commands Hydra answers without running the app (help, config, info, completion)."""
    from hydra._internal.utils import get_args_parser

    args = get_args_parser().parse_args(argv)
    return not (args.help or args.hydra_help or args.info or args.shell_completion or args.cfg)


if __name__ == "__main__":
    run()
