"""Datasets and batches: the embedded digits, CIFAR from real on-disk pickles, fake, relpos, sharding."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from rope_ext.config import ConfigError
from rope_ext.data import build_datasets
from rope_ext.loader import Batches, BatchTransform, as_tensors


def dataset_cfg(**kw):
    base = dict(subset=None, input_size=32, mean=[0.5] * 3, std=[0.5] * 3, in_memory=True, num_workers=0)
    return OmegaConf.create({**base, **kw})


def test_digits_are_the_real_embedded_scans_split_80_20():
    splits = build_datasets(dataset_cfg(name="digits"))
    x_train, y_train = as_tensors(splits.train)
    x_test, y_test = as_tensors(splits.test)
    assert splits.num_classes == 10
    assert x_train.shape == (1437, 3, 8, 8) and x_test.shape == (360, 3, 8, 8)
    assert x_train.dtype == torch.uint8 and int(x_train.max()) == 255
    assert torch.bincount(y_test, minlength=10).min() >= 35  # stratified
    # the model sees them at dataset.input_size, normalised
    batch = BatchTransform(32, [0.5] * 3, [0.5] * 3, train=False)(x_test[:4])
    assert batch.shape == (4, 3, 32, 32) and batch.min() >= -1.0001 and batch.max() <= 1.0001


def test_digits_rotation_turns_the_digits_scans_and_labels_the_turn_only():
    """The pretext task of study/digits_finetune_source: every scan of digits' split in its four turns,
    labelled 0..3 by the turn (never by the digit); train holds no test scan."""
    digits = build_datasets(dataset_cfg(name="digits", val_fraction=0))
    turned = build_datasets(dataset_cfg(name="digits_rotation", val_fraction=0))
    assert turned.num_classes == 4
    for plain, rotated in ((digits.train, turned.train), (digits.test, turned.test)):
        x, _ = as_tensors(plain)
        xt, yt = as_tensors(rotated)
        assert xt.shape == (4 * len(x), 3, 8, 8) and torch.equal(torch.bincount(yt), torch.full((4,), len(x)))
        for k in range(4):
            assert torch.equal(xt[yt == k], torch.rot90(x, k, dims=(2, 3)))
    train_scans = {bytes(t.numpy()) for t in as_tensors(turned.train)[0]}
    assert not train_scans & {bytes(t.numpy()) for t in as_tensors(turned.test)[0] if t.any()}


def test_subset_keeps_the_first_n_of_each_split():
    full = build_datasets(dataset_cfg(name="digits"))
    small = build_datasets(dataset_cfg(name="digits", subset=50))
    assert len(small.train) == 50 and len(small.test) == 50
    assert torch.equal(as_tensors(small.train)[0], as_tensors(full.train)[0][:50])


def _write_cifar(root: Path, *, hundred: bool = False) -> dict[str, np.ndarray]:
    """Pickles in the official on-disk layout, with recognisable pixels (image i is filled with i % 256)."""
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True)
    label_key = "fine_labels" if hundred else "labels"
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for k, name in enumerate(names):
        n = 6
        data = np.zeros((n, 3072), dtype=np.uint8)
        ids = np.arange(n) + 10 * k
        data[:] = (ids % 256)[:, None]
        data[:, 1024:2048] = 7  # green plane constant: checks the CHW reshape
        labels = [(i * 3) % (100 if hundred else 10) for i in ids]
        with open(folder / name, "wb") as f:
            pickle.dump({"data": data, label_key: labels, "batch_label": name}, f, protocol=2)
        written[name] = (data, labels)
    meta = "meta" if hundred else "batches.meta"
    key = "fine_label_names" if hundred else "label_names"
    with open(folder / meta, "wb") as f:
        pickle.dump({key: [f"class{i}" for i in range(100 if hundred else 10)]}, f, protocol=2)
    return written


@pytest.mark.parametrize("in_memory", [True, False], ids=["in_memory", "dataloader"])
def test_cifar10_reads_generated_batches_py_pickles(tmp_path, in_memory):
    written = _write_cifar(tmp_path)
    cfg = dataset_cfg(name="cifar10", root=str(tmp_path), download=False, in_memory=in_memory)
    splits = build_datasets(cfg)
    assert splits.num_classes == 10 and len(splits.train) == 30 and len(splits.test) == 6
    x, y = as_tensors(splits.train)
    assert x.shape == (30, 3, 32, 32) and x.dtype == torch.uint8
    # image 9 is the 4th of data_batch_2 (id 13): red/blue planes 13, green plane 7, label 13*3 % 10
    assert int(x[9, 0, 5, 5]) == 13 and int(x[9, 1, 0, 0]) == 7 and int(x[9, 2, 31, 31]) == 13
    assert int(y[9]) == written["data_batch_2"][1][3] == 9
    xt, yt = as_tensors(splits.test)
    assert int(xt[0, 0, 0, 0]) == 50 and int(yt[0]) == 0


def test_cifar100_reads_its_pickles(tmp_path):
    _write_cifar(tmp_path, hundred=True)
    splits = build_datasets(dataset_cfg(name="cifar100", root=str(tmp_path), download=False))
    assert splits.num_classes == 100 and len(splits.train) == 6 and len(splits.test) == 6


def test_cifar_missing_offline_says_where_to_put_the_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        build_datasets(dataset_cfg(name="cifar10", root=str(tmp_path / "nowhere"), download=False))
    message = str(info.value)
    assert "cifar-10-batches-py" in message and str(tmp_path / "nowhere") in message
    assert "cifar-10-python.tar.gz" in message and "dataset.root" in message


class _Payload:
    """Unpickling it runs ``touch <marker>``: the proof that a data file ran code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("name", ["data_batch_2", "test_batch", "batches.meta"])
def test_a_tampered_cifar_file_is_refused_without_running_its_payload(tmp_path, name):
    _write_cifar(tmp_path)
    marker = tmp_path / "PWNED"
    path = tmp_path / "cifar-10-batches-py" / name
    with open(path, "wb") as f:
        pickle.dump({"data": _Payload(marker), "labels": [0]}, f, protocol=2)
    with pytest.raises(ConfigError) as info:
        build_datasets(dataset_cfg(name="cifar10", root=str(tmp_path), download=False, val_fraction=0))
    message = str(info.value)
    assert str(path) in message and ("posix.system" in message or "os.system" in message)
    assert "was not executed" in message
    assert not marker.exists(), "the pickle's payload ran"
    pickle.loads(path.read_bytes())  # control: unpickled the ordinary way, the payload does run
    assert marker.exists()


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_pickles_of_any_protocol_load(tmp_path, protocol):
    """Python 3 writes bytes (protocol 2) and arrays (protocol 5) through other globals than the
    official Python 2 files; the restricted reader takes them all."""
    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(tmp_path)
    data = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(folder / "test_batch", "wb") as f:
        pickle.dump({"data": data, "labels": [3, 4], "batch_label": b"raw"}, f, protocol=protocol)
    splits = build_datasets(dataset_cfg(name="cifar10", root=str(tmp_path), download=False))
    x, y = as_tensors(splits.test)
    assert y.tolist() == [3, 4] and int(x[1, 0, 0, 0]) == 3072 % 256


def test_a_cifar_batch_of_the_wrong_shape_is_refused(tmp_path):
    _write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    with open(path, "wb") as f:
        pickle.dump({"data": np.zeros((2, 10), dtype=np.uint8), "labels": [0, 1]}, f, protocol=2)
    with pytest.raises(ConfigError, match="data_batch_1 is not a CIFAR batch"):
        build_datasets(dataset_cfg(name="cifar10", root=str(tmp_path), download=False))


def test_subset_warning_names_the_split_it_does_not_cut(caplog):
    """digits has 1437 train and 360 test images: subset=512 cuts train (before validation), not test."""
    build_datasets(dataset_cfg(name="digits", subset=512, val_fraction=0.1))
    [warning] = [r.getMessage() for r in caplog.records if "dataset.subset" in r.getMessage()]
    assert "larger than dataset=digits's test split (360 images)" in warning
    assert "train: 512 of 1437 images, before the validation split" in warning
    assert "train split (" not in warning
    caplog.clear()
    build_datasets(dataset_cfg(name="digits", subset=300))
    assert "dataset.subset" not in caplog.text


def test_an_epoch_resumed_after_its_last_step_yields_no_batch():
    ds = torch.utils.data.TensorDataset(torch.zeros(8, 3, 2, 2), torch.arange(8))
    tf = BatchTransform(2, [0.0] * 3, [1.0] * 3, train=True)
    batches = Batches(ds, batch_size=4, device=torch.device("cpu"), transform=tf, train=True)
    batches.set_epoch(0, skip=batches.num_batches)
    assert list(batches) == [] and len(batches) == 0


def test_fake_is_deterministic_and_learnable_in_principle():
    cfg = dataset_cfg(name="fake", train_size=40, test_size=8, num_classes=4, noise=0.0)
    a, b = build_datasets(cfg), build_datasets(cfg)
    xa, ya = as_tensors(a.train)
    assert torch.equal(xa, as_tensors(b.train)[0]) and xa.dtype == torch.float32
    # without noise, images of one class are identical: the label is a function of the image
    for c in range(4):
        imgs = xa[ya == c]
        assert len(imgs) == 0 or torch.equal(imgs, imgs[:1].expand_as(imgs))


def test_relpos_dispatch_and_redraw_at_larger_sizes():
    cfg = dataset_cfg(name="relpos", input_size=32, train_size=20, test_size=10, seed=0, subset=8)
    splits = build_datasets(cfg)
    assert splits.num_classes == 8 and len(splits.train) == 8 and len(splits.test) == 8
    x, y = as_tensors(splits.test)
    bigger = splits.test_at(48)
    xb, yb = as_tensors(bigger)
    assert x.shape[-1] == 32 and xb.shape[-1] == 48 and len(bigger) == 8
    assert torch.equal(y, yb)  # the same task drawn on a larger canvas, not resized


def test_train_batches_shard_without_overlap_and_resume_mid_epoch():
    ds = torch.utils.data.TensorDataset(
        torch.arange(20.0).view(20, 1, 1, 1).expand(20, 3, 2, 2), torch.arange(20)
    )
    tf = BatchTransform(2, [0.0] * 3, [1.0] * 3, train=False)
    kw = dict(batch_size=5, device=torch.device("cpu"), transform=tf, train=True, seed=3, world_size=2)
    ranks = [Batches(ds, rank=r, **kw) for r in (0, 1)]
    seen = []
    for b in ranks:
        b.set_epoch(5)
        seen += [int(v) for _, y in b for v in y]
    assert sorted(seen) == list(range(20))  # each sample once per epoch, over both ranks
    b = ranks[0]
    b.set_epoch(5)
    full = [y.tolist() for _, y in b]
    b.set_epoch(5, skip=1)
    assert [y.tolist() for _, y in b] == full[1:] and len(b) == len(full) - 1
    b.set_epoch(6)
    assert [y.tolist() for _, y in b] != full  # a new order each epoch


def test_eval_batches_cover_every_sample_once_over_ranks():
    ds = torch.utils.data.TensorDataset(torch.zeros(7, 3, 2, 2), torch.arange(7))
    tf = BatchTransform(2, [0.0] * 3, [1.0] * 3, train=False)
    got = []
    for r in range(3):
        b = Batches(
            ds, batch_size=2, device=torch.device("cpu"), transform=tf, train=False, rank=r, world_size=3
        )
        got += [int(v) for _, y in b for v in y]
    assert sorted(got) == list(range(7))


def test_augmentation_translates_and_flips_only_in_training():
    x = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).expand(64, 3, 4, 4).contiguous()
    train = BatchTransform(4, [0.0] * 3, [1.0] * 3, train=True, crop_padding=1, hflip=True)
    torch.manual_seed(0)
    out = train(x)
    assert out.shape == x.shape
    assert len({tuple(o.flatten().tolist()) for o in out}) > 4  # different shifts/flips per image
    evaluate = BatchTransform(4, [0.0] * 3, [1.0] * 3, train=False, crop_padding=1, hflip=True)
    assert torch.allclose(evaluate(x), x.float() / 255.0)


def test_dataloader_path_with_workers_gives_the_same_batches_as_in_memory(tmp_path):
    """dataset.in_memory=false: torchvision's dataset through a DataLoader with a worker process."""
    _write_cifar(tmp_path)
    common = dict(name="cifar10", root=str(tmp_path), download=False)
    tf = BatchTransform(48, [0.5] * 3, [0.25] * 3, train=False)
    kw = dict(batch_size=4, device=torch.device("cpu"), transform=tf, train=False)
    memory = Batches(build_datasets(dataset_cfg(**common)).test, **kw)
    loader = Batches(
        build_datasets(dataset_cfg(**common, in_memory=False)).test, in_memory=False, num_workers=1, **kw
    )
    got_memory, got_loader = list(memory), list(loader)
    assert len(got_memory) == len(got_loader) == 2
    for (xm, ym), (xl, yl) in zip(got_memory, got_loader, strict=True):
        assert xm.shape == (4, 3, 48, 48) or xm.shape == (2, 3, 48, 48)
        assert torch.allclose(xm, xl) and torch.equal(ym, yl)


def test_validation_is_carved_from_train_fixed_and_disjoint():
    full = build_datasets(dataset_cfg(name="digits"))
    splits = build_datasets(dataset_cfg(name="digits", val_fraction=0.1))
    assert splits.val is not None and len(splits.val) == 144 and len(splits.train) == 1437 - 144
    assert len(splits.test) == len(full.test)  # the test split is untouched
    train_idx, val_idx = set(splits.train.indices), set(splits.val.indices)
    assert not train_idx & val_idx and train_idx | val_idx == set(range(1437))
    again = build_datasets(dataset_cfg(name="digits", val_fraction=0.1))
    assert again.val.indices == splits.val.indices  # fixed: not tied to the run's seed or RNG state
    torch.manual_seed(123)
    assert build_datasets(dataset_cfg(name="digits", val_fraction=0.1)).val.indices == splits.val.indices
    assert full.val is None  # val_fraction absent or 0: no validation split


@pytest.mark.parametrize("bad", ["1.0", "-0.1", "lots", "true"])
def test_bad_val_fraction_names_key_value_and_allowed(bad, tmp_path, monkeypatch):
    from rope_ext.config import check_command  # the schema's range, checked before the data is built

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r"dataset\.val_fraction=.*(>= 0 and < 1|a finite number)"):
        check_command([f"dataset.val_fraction={bad}"])


def test_relpos_validation_is_generated_apart():
    cfg = dataset_cfg(name="relpos", train_size=200, test_size=100, seed=3, val_fraction=0.25)
    splits = build_datasets(cfg)
    assert len(splits.train) == 200 and len(splits.val) == 50 and len(splits.test) == 100
    x_val, y_val = as_tensors(splits.val)
    x_train = as_tensors(splits.train)[0]
    assert not any(torch.equal(v, t) for v in x_val[:10] for t in x_train)  # not copies of training images
    assert splits.val.seed not in (splits.train.seed, splits.test.seed)
    assert int(y_val.min()) >= 0 and int(y_val.max()) < splits.num_classes
