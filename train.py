"""rope-ext training app: ``python train.py [overrides]`` (Hydra; the app itself is ``rope_ext.app``).

Single run: ``python train.py pe=axial_block pe.block=4``; sweep: ``python train.py -m pe.block=2,3,4``;
DDP: ``torchrun --nproc_per_node=K train.py ...``. ``python train.py --help`` lists the config groups.
"""

from rope_ext.app import run

if __name__ == "__main__":
    run()
