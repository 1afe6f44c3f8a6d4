"""Names and help: cut run-directory names (``config.slug``), the groups ``--help`` lists
(``config.help``), and the sweep directory ``rope_ext.jobs`` prints."""

from __future__ import annotations

import re

import pytest
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode

from rope_ext import jobs
from rope_ext.config import CONF, slug
from rope_ext.config.compose import CUT_MARK, PAIR_END, SLUG_MAX
from rope_ext.config.help import ENV_VAR, INTERNAL, USER_GROUPS

LONG = [
    ",".join(f"key{i}=value{i}" for i in range(40)),
    "eval.input_sizes=[16,20,24,32,40,48,56,64,72,80,88,96],model.depth=2,pe.block=2,3,4,5,6,seed=0,1,2,3,4,5,6,7,8,9",
    "+experiment/arm=axial_block_n2_layout_of6,dataset.subset=256,model.embed_dim=64,pe.block=6,train.epochs=10,train.lr=0.003",
    "model.checkpoint=/" + "x" * 200 + ",seed=1",
    "a" * 1000,
]


def pairs(text: str) -> list[str]:
    return [re.sub(r"[^A-Za-z0-9._=,+\-]+", "_", p).strip("_.") for p in PAIR_END.split(text)]


@pytest.mark.parametrize("text", LONG)
def test_a_cut_name_keeps_whole_pairs_and_a_hash_that_is_no_value(text: str) -> None:
    name = slug(text)
    assert len(name) <= SLUG_MAX and re.fullmatch(r"[A-Za-z0-9._=,+\-]+", name)
    kept, _, digest = name.rpartition(CUT_MARK)
    assert re.fullmatch(r"[0-9a-f]{10}", digest)
    kept_pairs = PAIR_END.split(kept)
    whole = pairs(text)
    if "=" in kept:  # whole pairs, in order, from the first: none cut mid-pair
        assert kept_pairs == whole[: len(kept_pairs)]
    else:  # a first pair too long to keep whole keeps its key (or the text's start)
        assert whole[0].startswith(kept)
    # the hash is not one more value of the last pair kept, nor an override of its own
    with pytest.raises(HydraException):
        OverridesParser.create().parse_override(kept_pairs[-1] + CUT_MARK + digest)
    with pytest.raises(HydraException):
        OverridesParser.create().parse_override(CUT_MARK.lstrip(",") + digest)


def test_names_that_fit_are_unchanged_and_cut_ones_stay_apart() -> None:
    assert slug("pe.block=2,3,4,train.epochs=10") == "pe.block=2,3,4,train.epochs=10"
    assert slug("model.checkpoint=/a/b c.pth") == "model.checkpoint=_a_b_c.pth"
    assert slug("") == slug(None) == "default"
    texts = [*LONG, LONG[0] + "x", LONG[0].replace("39", "38"), "a" * 101]
    assert len({slug(t) for t in texts}) == len(texts)  # the hash of the whole text: no shared directory


def help_groups(monkeypatch: pytest.MonkeyPatch, everything: bool = False) -> str:
    if everything:
        monkeypatch.setenv(ENV_VAR, "all")
    else:
        monkeypatch.delenv(ENV_VAR, raising=False)
    from hydra import compose

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", return_hydra_config=True)
        return str(cfg.hydra.help.template)


def test_help_lists_the_groups_a_user_picks_and_hides_internal_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    text = help_groups(monkeypatch)
    for group in USER_GROUPS:
        assert re.search(rf"^{group}: \w", text, re.M), group
    assert re.search(r"^pe: .*axial_block", text, re.M) and re.search(r"^dataset: .*imagefolder", text, re.M)
    assert re.search(r"^  study/: .*digits_equiv_blocks", text, re.M)  # chosen as experiment=study/<name>
    assert re.search(r"^\+experiment/arm .*axial_block_n3", text, re.M)
    assert not re.search(r"^(schema|experiment/tuned)", text, re.M)
    assert f"{ENV_VAR}=all python train.py --help" in text and "== Config ==" in text


@pytest.mark.slow  # Hydra's loader searches every source for each of the ~30 groups: seconds
def test_help_lists_every_group_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    everything = help_groups(monkeypatch, everything=True)
    for group in INTERNAL:
        assert re.search(rf"^{group}[/:]", everything, re.M), group


def test_jobs_prints_the_sweep_directory_the_sweep_callback_names(capsys: pytest.CaptureFixture) -> None:
    from rope_ext.summary import SweepCallback

    overrides = ["pe.block=2,3", "train.epochs=2", "wandb.mode=disabled"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        cfg = loader.load_configuration("config", overrides, RunMode.MULTIRUN)
        SweepCallback().on_multirun_start(cfg)
        named = str(cfg.hydra.sweep.dir)
    assert named == jobs.sweep_directory(overrides) == "multirun/pe.block=2,3,train.epochs=2"
    assert jobs.main(overrides) == 0
    assert f"sweep directory: {named}/" in capsys.readouterr().out
    assert jobs.sweep_directory(["seed=0,1", "hydra.sweep.dir=multirun/mine"]) == "multirun/mine"
    assert jobs.sweep_directory(["seed=0,1", "run_id=named"]) == "multirun/named"
