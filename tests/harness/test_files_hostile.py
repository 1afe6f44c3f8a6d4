"""Files that must not hang, blow up or redirect a write: FIFOs, sockets, devices and link loops in an
image folder, decompression-bomb PNGs, deeply nested or huge JSON, links planted where ``tune`` writes,
and a write that fails (a file where a folder is expected, a file size limit: the real EFBIG)."""

from __future__ import annotations

import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
import torch
from harness_helpers import REPO, output, run_train
from omegaconf import OmegaConf
from test_imagefolder import TINY_IMG, write_digits_folder

from rope_ext import imagefolder, safe_io, tune
from rope_ext.config import ConfigError
from rope_ext.imagefolder import ImageFileError, ImageFiles, check_root, open_image


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_digits_folder(tmp_path / "imgs", classes=2, train=2, val=1)


def _png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels (1 bit each) and holds one empty row."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0"))
        + chunk(b"IEND", b"")
    )


# --- image folders ------------------------------------------------------------------------------------


def test_a_fifo_named_like_an_image_is_refused_by_its_type(folder):
    fifo = folder / "train" / "digit0" / "x.png"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=f"{fifo} is a FIFO"):
        check_root(folder)
    with pytest.raises(ImageFileError, match=f"{fifo} is a FIFO"):  # planted after the check: no block
        open_image(str(fifo))


def test_a_socket_or_a_device_named_like_an_image_is_refused(folder):
    sock_path = folder / "train" / "digit1" / "y.png"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    try:
        with pytest.raises(ConfigError, match=f"{sock_path} is a socket"):
            check_root(folder)
    finally:
        sock.close()
        sock_path.unlink()
    device = folder / "val" / "digit0" / "z.png"
    device.symlink_to("/dev/zero")  # a link to a device is as bad as the device
    with pytest.raises(ConfigError, match=f"{device} is a character device"):
        check_root(folder)


class _CountingScandir:
    def __init__(self) -> None:
        self.calls, self.real = 0, os.scandir

    def __call__(self, path):
        self.calls += 1
        return self.real(path)


@pytest.mark.parametrize("links", ["two self-loops", "a loop to the split", "two links to one folder"])
def test_folder_links_that_loop_are_refused_in_a_bounded_walk(folder, links, monkeypatch):
    cls = folder / "train" / "digit0"
    if links == "two self-loops":
        (cls / "a").symlink_to(".")
        (cls / "b").symlink_to(".")
    elif links == "a loop to the split":
        (cls / "up").symlink_to("..")
    else:  # not a loop, but timm's walk would read the folder twice (and 2^k times for k such levels)
        (folder / "extra").mkdir()
        (cls / "one").symlink_to(folder / "extra")
        (cls / "two").symlink_to(folder / "extra")
    counter = _CountingScandir()
    monkeypatch.setattr(imagefolder.os, "scandir", counter)
    with pytest.raises(ConfigError, match="leads to a folder already reached"):
        check_root(folder)
    assert counter.calls <= 6  # train/, its two classes, and at most the linked folder once


def test_links_to_image_files_and_class_folders_elsewhere_still_count(folder, tmp_path):
    elsewhere = write_digits_folder(tmp_path / "elsewhere", classes=2, train=2, val=1)
    (folder / "train" / "digit1").rename(tmp_path / "moved")
    (folder / "train" / "digit1").symlink_to(elsewhere / "train" / "digit1")
    png = next((folder / "val" / "digit0").glob("*.png"))
    (folder / "val" / "digit0" / "linked.png").symlink_to(png)
    assert check_root(folder) == ["digit0", "digit1"]
    assert imagefolder.count_images(folder / "val") == {"digit0": 2, "digit1": 1}


def test_a_looping_link_named_like_an_image_is_refused(folder):
    loop = folder / "train" / "digit0" / "loop.png"
    loop.symlink_to("loop.png")
    with pytest.raises(ConfigError, match=f"{loop} cannot be read .*ELOOP"):
        check_root(folder)


@pytest.mark.slow
def test_a_run_on_a_looping_folder_exits_2_at_once(tmp_path, folder):
    (folder / "train" / "digit0" / "a").symlink_to(".")
    (folder / "train" / "digit0" / "b").symlink_to(".")
    proc = run_train([*TINY_IMG, f"dataset.root={folder}", "run_id=loop"], tmp_path, timeout=150)
    assert proc.returncode == 2, output(proc)
    assert "leads to a folder already reached" in output(proc) and "Traceback" not in output(proc)


@pytest.mark.parametrize("size", [(100_000, 100_000), (10_000, 9_000)])
def test_decompression_bombs_are_refused_naming_the_file(tmp_path, size):
    """100000^2 pixels: PIL raises DecompressionBombError at open; 10000 x 9000 (90 M, just above
    PIL.Image.MAX_IMAGE_PIXELS): PIL only warns and would decode ~90 MB per copy."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header(*size))
    with pytest.raises(ImageFileError, match=f"{bomb} declares more than 89478485 pixels"):
        open_image(str(bomb))


def test_a_bomb_read_in_a_dataloader_worker_gives_the_message_without_a_traceback(tmp_path, folder):
    bomb = folder / "train" / "digit0" / "bomb.png"
    bomb.write_bytes(_png_header(100_000, 100_000))
    damaged = folder / "train" / "digit1" / "damaged.png"
    damaged.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    for path, expected in ((bomb, "declares more than"), (damaged, "cannot be decoded as an image")):
        loader = torch.utils.data.DataLoader(ImageFiles([(str(path), 0)]), num_workers=1, collate_fn=list)
        with pytest.raises(ImageFileError) as caught:
            next(iter(loader))
        message = str(caught.value)
        assert message.startswith(f"dataset=imagefolder: {path} {expected}"), message
        assert "Traceback" not in message


def test_imagefolder_reads_the_same_images_as_timm(folder):
    from timm.data import create_dataset

    settings = {"root": str(folder), "input_size": 8, "crop_pct": 1.0, "mean": [0.5] * 3, "std": [0.5] * 3}
    ours = imagefolder.imagefolder_datasets(OmegaConf.create(settings))
    theirs = create_dataset("", root=str(folder), split="train")
    assert len(ours[0]) == len(theirs) and ours[2] == 2
    for i in range(len(theirs)):
        (a, la), (b, lb) = ours[0][i], theirs[i]
        assert la == lb and a.size == b.size and a.tobytes() == b.tobytes()


# --- JSON ---------------------------------------------------------------------------------------------


def test_json_depth_and_size_are_bounded(tmp_path):
    deep = tmp_path / "metrics.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(
        safe_io.BadJSON, match=f"{deep} nests 100000 levels deep; the harness reads at most 64"
    ):
        safe_io.read_json(deep)
    big = tmp_path / "big.json"
    big.write_text('{"a": "' + "x" * 2000 + '"}')
    with pytest.raises(safe_io.BadJSON, match="larger than 1000 bytes"):
        safe_io.read_json(big, max_bytes=1000)
    brackets_in_strings = tmp_path / "ok.json"
    brackets_in_strings.write_text('{"a": "[[[[{{{{\\"]]]", "b": [[1]]}')
    assert safe_io.json_depth(brackets_in_strings.read_bytes()) == 3  # {, [, [: none of the string's
    assert safe_io.read_json(brackets_in_strings, max_depth=3) == {"a": '[[[[{{{{"]]]', "b": [[1]]}


# --- writes that must not follow links ----------------------------------------------------------------


def test_write_text_nofollow_refuses_links_at_the_file_and_in_its_folders(tmp_path):
    root, victim = tmp_path / "conf", tmp_path / "victim.txt"
    root.mkdir()
    victim.write_text("keep")
    target = root / "experiment" / "tuned" / "study" / "arm.yaml"
    assert safe_io.write_text_nofollow(target, "a: 1\n", root) == target  # creates the folders
    assert target.read_text() == "a: 1\n" and safe_io.write_text_nofollow(target, "a: 2\n", root)
    assert target.read_text() == "a: 2\n" and sorted(p.name for p in target.parent.iterdir()) == ["arm.yaml"]
    target.unlink()
    target.symlink_to(victim)
    with pytest.raises(safe_io.UnsafePathError, match=f"{target} is a symbolic link"):
        safe_io.write_text_nofollow(target, "evil", root)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "experiment" / "tuned").rename(tmp_path / "old_tuned")
    (root / "experiment" / "tuned").symlink_to(elsewhere)
    with pytest.raises(safe_io.UnsafePathError, match=f"{root / 'experiment' / 'tuned'} is a symbolic link"):
        safe_io.write_text_nofollow(target, "evil", root)
    assert victim.read_text() == "keep" and list(elsewhere.iterdir()) == []
    with pytest.raises(ValueError):
        safe_io.write_text_nofollow(tmp_path / "outside.yaml", "x", root)


def _choice() -> dict:
    return {"none": {"lr": 1e-3, "val_acc": {1e-3: (50.0, 2)}, "failed": 0}}


def _conf(tmp_path: Path) -> Path:
    conf = tmp_path / "conf"
    (conf / "experiment" / "arm").mkdir(parents=True)
    (conf / "experiment" / "arm" / "none.yaml").write_text(
        (REPO / "conf/experiment/arm/none.yaml").read_text()
    )
    return conf


@pytest.mark.parametrize("where", ["at the file", "at the study folder", "at the tuned folder"])
def test_tune_does_not_write_through_a_planted_link(tmp_path, where):
    conf, victim = _conf(tmp_path), tmp_path / "victim"
    victim.mkdir()
    (victim / "none.yaml").write_text("precious")
    tuned = conf / "experiment" / "tuned"
    tuned.mkdir()
    if where == "at the file":
        (tuned / "study").mkdir()
        (tuned / "study" / "none.yaml").symlink_to(victim / "none.yaml")
        link = tuned / "study" / "none.yaml"
    elif where == "at the study folder":
        (tuned / "study").symlink_to(victim)
        link = tuned / "study"
    else:
        tuned.rmdir()
        tuned.symlink_to(victim)
        (victim / "study").mkdir()
        link = tuned
    with pytest.raises(safe_io.UnsafePathError, match=f"{link} is a symbolic link"):
        tune.write_tuned(_choice(), "study", "sweep", conf)
    assert (victim / "none.yaml").read_text() == "precious"
    assert not (victim / "study" / "none.yaml").exists()


# --- writes that fail ---------------------------------------------------------------------------------


def test_tune_into_a_folder_that_is_a_file_exits_4_with_one_paragraph(tmp_path, capsys, monkeypatch):
    """A file where tune's folder is expected (ENOTDIR): the honest stand-in for an unwritable disk
    that root cannot be kept out of by chmod."""
    conf = _conf(tmp_path)
    (conf / "experiment" / "tuned").write_text("a file, not a folder")
    monkeypatch.setattr(tune, "find_runs", lambda *a, **k: [])
    monkeypatch.setattr(tune, "choose_lrs", lambda runs: _choice())
    assert tune.main(["sweep", "--study", "study", "--conf", str(conf)]) == 4
    err = capsys.readouterr().err
    assert f"{conf / 'experiment' / 'tuned'}" in err and "ENOTDIR" in err and "Traceback" not in err


_FSIZE_SCRIPT = """
import importlib.util, resource, signal, sys
spec = importlib.util.spec_from_file_location("safe_io", sys.argv[1])
safe_io = importlib.util.module_from_spec(spec); spec.loader.exec_module(safe_io)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (100, 100))
try:
    safe_io.write_text_nofollow(safe_io.Path(sys.argv[2]) / "d" / "f.yaml", "x" * 1000, safe_io.Path(sys.argv[2]))
except safe_io.WriteError as err:
    print(err)
    sys.exit(4)
"""


def test_a_write_cut_short_by_the_file_size_limit_keeps_the_previous_file(tmp_path):
    """RLIMIT_FSIZE makes the kernel refuse the write itself (EFBIG), as a full disk does (ENOSPC)."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "f.yaml").write_text("previous")
    proc = subprocess.run(
        [sys.executable, "-c", _FSIZE_SCRIPT, str(REPO / "rope_ext" / "safe_io.py"), str(root)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 4, proc.stderr
    assert "EFBIG" in proc.stdout and f"{root / 'd' / 'f.yaml'}" in proc.stdout
    assert (root / "d" / "f.yaml").read_text() == "previous" and os.listdir(root / "d") == ["f.yaml"]


def _limit_file_size() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))


@pytest.mark.slow
def test_a_checkpoint_save_cut_short_by_the_file_size_limit_keeps_the_previous_one(tmp_path):
    from rope_ext import checkpoint

    checkpoint.save(tmp_path, {"model": {"w": torch.zeros(4)}, "epoch": 1}, {"fingerprint": {}})
    before = (tmp_path / "checkpoint.pt").read_bytes()
    script = (
        "import sys, torch; from pathlib import Path; from rope_ext import checkpoint\n"
        "try:\n"
        "    checkpoint.save(Path(sys.argv[1]), {'model': {'w': torch.zeros(1 << 18)}, 'epoch': 2}, {})\n"
        "except checkpoint.CheckpointWriteError as err:\n"
        "    print(err); sys.exit(4)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=240,
        preexec_fn=_limit_file_size,
        cwd=REPO,
    )
    assert proc.returncode == 4, proc.stdout + proc.stderr
    assert "could not write the checkpoint" in proc.stdout and "Traceback" not in proc.stderr
    assert (tmp_path / "checkpoint.pt").read_bytes() == before and not list(tmp_path.glob("*.tmp"))
