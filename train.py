"""rope-ext training app: ``python train.py [overrides]`` (Hydra). See ``python train.py --help``.

Single run: ``python train.py pe=axial_block pe.block=4``; sweep: ``python train.py -m pe.block=2,3,4``;
DDP: ``torchrun --nproc_per_node=K train.py ...``. Outputs go to ``outputs/<run_id>/`` (multirun:
``multirun/<sweep>/<job>/``); rerunning the same command resumes from the checkpoint there.
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

import rope_ext.config  # noqa: F401  (registers the resolvers conf/config.yaml uses)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> float | None:
    from rope_ext.trainer import run_job

    return run_job(cfg)


if __name__ == "__main__":
    main()
