"""Datasets of the harness: ``digits`` (embedded), ``cifar10``/``cifar100`` (torchvision), ``fake``, ``relpos``.

Every builder returns raw images at their native size (uint8 CHW for real images, float for synthetic
ones) and leaves resizing, augmentation and normalisation to ``rope_ext.loader``, which does them on the
training device batch by batch. ``dataset.subset=N`` keeps the first N train and the first N test images.

Validation: ``dataset.val_fraction`` (default 0.1) holds out that fraction of the training images
(``digits``, CIFAR, ``fake``; after ``subset``) as the validation split that model and learning-rate selection
use; the test split is only ever evaluated, never selected on. The held-out images are a fixed permutation
(generator seed 0), independent of the run's ``seed``: every arm and every seed trains and validates on the
same images, so the seed changes only the initialisation and the data order. ``relpos`` instead generates a
validation set of ``val_fraction × train_size`` images from its own stream of ``dataset.seed`` and keeps all
``train_size`` training images. ``val_fraction=0`` disables validation (no ``val_acc``).
"""

from __future__ import annotations

import logging
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig
from torch.utils.data import Dataset, Subset, TensorDataset

from rope_ext.config import ConfigError, select
from rope_ext.relpos import relpos_validation

log = logging.getLogger(__name__)

DATASETS = ("digits", "cifar10", "cifar100", "fake", "relpos", "imagefolder")

_CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


@dataclass
class DataSplits:
    """Train, validation (None when ``val_fraction=0``) and test sets, the number of classes, and how to
    draw the test set at another size."""

    train: Dataset
    test: Dataset
    num_classes: int
    name: str
    val: Dataset | None = None

    def test_at(self, input_size: int) -> Dataset | None:
        """The test set drawn natively at ``input_size`` (synthetic sets that support it), else None:
        the loader then resizes the images."""
        base = self.test.dataset if isinstance(self.test, Subset) else self.test
        redraw = getattr(base, "at_input_size", None)
        if redraw is None:
            return None
        redrawn = redraw(input_size)
        return Subset(redrawn, self.test.indices) if isinstance(self.test, Subset) else redrawn


def build_datasets(dataset: DictConfig, recipe: DictConfig | None = None) -> DataSplits:
    """Build the ``dataset`` config group node's train and test sets (raises ConfigError on bad input);
    ``recipe`` (``conf/recipe``): the per-image augmentation of ``imagefolder``."""
    name = dataset.name
    val_fraction = float(select(dataset, "val_fraction", 0.0))  # in [0, 1): rope_ext.schema
    val: Dataset | None = None
    if name == "digits":
        train, test, num_classes = _digits()
    elif name in _CIFAR:
        train, test, num_classes = _cifar(dataset)
    elif name == "fake":
        train, test, num_classes = _fake(dataset)
    elif name == "imagefolder":
        from rope_ext.imagefolder import imagefolder_datasets

        train, test, num_classes = imagefolder_datasets(dataset)
    elif name == "relpos":
        from rope_ext.relpos import relpos_datasets

        try:
            train, test, num_classes = relpos_datasets(
                input_size=int(dataset.input_size),
                train_size=int(dataset.train_size),
                test_size=int(dataset.test_size),
                seed=int(dataset.seed),
            )
            n_val = round(val_fraction * int(dataset.train_size))
            if n_val:
                val = relpos_validation(train, n_val)
        except ValueError as err:
            raise ConfigError(f"dataset=relpos rejected its settings: {err}") from None
    else:
        raise ConfigError.bad_value("dataset.name", name, ", ".join(DATASETS))
    subset = select(dataset, "subset")
    if subset is not None:
        _warn_large_subset(int(subset), name, len(train), len(test))
        train = Subset(train, range(min(int(subset), len(train))))
        test = Subset(test, range(min(int(subset), len(test))))
    if name != "relpos" and val_fraction > 0:
        train, val = split_validation(train, val_fraction)
    if name == "imagefolder":  # per-image transforms after the split: train's for train, eval's for val
        from rope_ext.imagefolder import with_transforms

        train, val = with_transforms(train, val, dataset, recipe)
    return DataSplits(train, test, num_classes, name, val)


def _warn_large_subset(subset: int, name: str, n_train: int, n_test: int) -> None:
    """Say which split ``dataset.subset`` does not cut (it applies before the validation split)."""
    short = [
        f"{split} split ({n} images)" for split, n in (("train", n_train), ("test", n_test)) if n < subset
    ]
    if short:
        log.warning(
            "dataset.subset=%d is larger than dataset=%s's %s: all of its images are used (train: %d of "
            "%d images, before the validation split; test: %d of %d)",
            subset,
            name,
            " and ".join(short),
            min(subset, n_train),
            n_train,
            min(subset, n_test),
            n_test,
        )


def split_validation(train: Dataset, fraction: float, seed: int = 0) -> tuple[Subset, Subset]:
    """``(train minus validation, validation)``: ``round(fraction × len(train))`` images (at least one,
    at most all but one) drawn by a fixed permutation of ``seed``, independent of the run's seed."""
    n = len(train)  # type: ignore[arg-type]
    n_val = min(max(round(fraction * n), 1), n - 1)
    if n < 2:
        raise ConfigError(
            f"dataset.val_fraction={fraction}: the train set has {n} image(s), too few to split"
        )
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    val_idx, train_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    return Subset(train, train_idx.tolist()), Subset(train, val_idx.tolist())


def _digits() -> tuple[Dataset, Dataset, int]:
    """scikit-learn's 1797 handwritten digit scans (8×8, 17 grey levels), a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = torch.from_numpy(digits.images).float().mul(255.0 / 16.0).round().to(torch.uint8)
    images = images[:, None].expand(-1, 3, -1, -1).contiguous()  # grey to RGB: the ViT takes 3 channels
    labels = torch.from_numpy(digits.target).long()
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=0.2, stratify=digits.target, random_state=0
    )
    train_idx, test_idx = torch.from_numpy(train_idx), torch.from_numpy(test_idx)
    return (
        TensorDataset(images[train_idx], labels[train_idx]),
        TensorDataset(images[test_idx], labels[test_idx]),
        10,
    )


def _host_reachable(url: str, timeout: float = 5.0) -> bool:
    host = url.split("/")[2]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def _cifar(dataset: DictConfig) -> tuple[Dataset, Dataset, int]:
    """torchvision's CIFAR10/CIFAR100 classes reading ``<root>/cifar-10-batches-py`` (or -100-python)."""
    import torchvision

    cls_name, folder, url = _CIFAR[dataset.name]
    root = Path(str(dataset.root)).expanduser()
    cls = _existence_checked(getattr(torchvision.datasets, cls_name))
    missing = [f for f, _ in cls.train_list + cls.test_list if not (root / folder / f).is_file()]
    if missing:
        how = (
            f"put the extracted '{folder}/' folder (or {url.rsplit('/', 1)[1]}, from {url}) under "
            f"{root}, or point dataset.root (or the ROPE_EXT_DATA environment variable) at the folder "
            "that holds it"
        )
        if not dataset.download:
            raise ConfigError(
                f"dataset={dataset.name}: files {missing} are missing under {root / folder} and "
                f"dataset.download=false. To fix: {how}."
            )
        if not _host_reachable(url):
            raise ConfigError(
                f"dataset={dataset.name}: files {missing} are missing under {root / folder} and the download "
                f"host is unreachable (offline?). To fix: {how}."
            )
        log.info("downloading %s to %s", dataset.name, root)
        root.mkdir(parents=True, exist_ok=True)
        cls(str(root), train=True, download=True)
    in_memory = select(dataset, "in_memory", True)
    splits = []
    for train in (True, False):
        if in_memory:
            ds = cls(str(root), train=train)
            images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()  # NHWC uint8 -> NCHW
            splits.append(TensorDataset(images, torch.tensor(ds.targets, dtype=torch.long)))
        else:
            splits.append(cls(str(root), train=train, transform=torchvision.transforms.PILToTensor()))
    return splits[0], splits[1], 100 if dataset.name == "cifar100" else 10


class _PlainUnpickler(pickle.Unpickler):
    """Loads only what CIFAR's pickles hold: dicts, lists, strings, bytes, numbers and numpy arrays.

    Any other global (``os.system``, ``builtins.eval``, ...) is refused before it is called, so a
    tampered data file cannot run code. The official files (Python 2 cPickle) name
    ``numpy.core.multiarray._reconstruct``, ``numpy.ndarray`` and ``numpy.dtype``; files pickled by
    Python 3 add ``_codecs.encode`` (bytes in protocol 2) or ``numpy._core.numeric._frombuffer``.
    """

    def find_class(self, module: str, name: str) -> Any:
        import numpy as np

        if (module, name) in (("numpy", "ndarray"), ("numpy", "dtype")):
            return getattr(np, name)
        if name == "_reconstruct" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _reconstruct
        if name == "_frombuffer" and module in ("numpy.core.numeric", "numpy._core.numeric"):
            return _frombuffer
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            return _scalar
        if (module, name) == ("_codecs", "encode"):
            return _latin1_encode
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR batch never holds")


def _reconstruct(subtype: Any, shape: Any, dtype: Any) -> Any:
    import numpy as np

    if subtype is not np.ndarray:
        raise pickle.UnpicklingError(f"an array of type {subtype!r}, not numpy.ndarray")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _scalar(dtype: Any, data: bytes = b"") -> Any:
    """A numpy number from its raw bytes (labels pickled from numpy ints); never an object scalar."""
    import numpy as np

    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise pickle.UnpicklingError(f"a numpy scalar of dtype {dtype!r}")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _frombuffer(buf: bytes, dtype: Any, shape: Any, order: str) -> Any:
    import numpy as np

    return np.frombuffer(buf, dtype=np.dtype(dtype)).reshape(shape, order=order)


def _latin1_encode(text: str, encoding: str = "utf-8") -> bytes:
    if encoding not in ("latin1", "latin-1") or not isinstance(text, str):
        raise pickle.UnpicklingError(f"_codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def read_plain_pickle(path: Path, dataset: str) -> dict[str, Any]:
    """The dict in the pickle at ``path``, read by ``_PlainUnpickler``: never runs code from the file.
    Anything else (a foreign global, a damaged file) is ConfigError naming the file."""
    try:
        with open(path, "rb") as f:
            data = _PlainUnpickler(f, encoding="latin1").load()
    except Exception as err:  # noqa: BLE001  (damaged pickles raise anything from EOFError to KeyError)
        raise ConfigError(
            f"dataset={dataset}: {path} could not be read as a CIFAR batch ({type(err).__name__}: {err}); "
            "it was not executed. Replace it with the official release"
        ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"dataset={dataset}: {path} holds a {type(data).__name__}, not a CIFAR batch dict")
    return data


class _PlainPickles:
    """torchvision's CIFAR10/CIFAR100 (same attributes, ``__getitem__``, download) with every pickle read
    by ``read_plain_pickle`` instead of ``pickle.load``, and checked to be a CIFAR batch."""

    def __init__(
        self,
        root: str,
        train: bool = True,
        transform: Any = None,
        target_transform: Any = None,
        download: bool = False,
    ) -> None:
        import numpy as np
        from torchvision.datasets import VisionDataset

        VisionDataset.__init__(self, root, transform=transform, target_transform=target_transform)
        self.train = train
        if download:
            self.download()
        folder = Path(self.root, self.base_folder)
        name = "cifar100" if "100" in self.base_folder else "cifar10"
        data, self.targets = [], []
        for file_name, _ in self.train_list if train else self.test_list:
            entry = read_plain_pickle(folder / file_name, name)
            images, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
            if (
                not isinstance(images, np.ndarray)
                or images.dtype != np.uint8
                or images.ndim != 2
                or images.shape[1] != 3 * 32 * 32
                or not isinstance(labels, list)
                or len(labels) != len(images)
                or not all(
                    isinstance(v, int | np.integer) and 0 <= v < (100 if name == "cifar100" else 10)
                    for v in labels
                )
            ):
                raise ConfigError(
                    f"dataset={name}: {folder / file_name} is not a CIFAR batch (uint8 'data' of shape "
                    "(N, 3072) and N labels in range). Replace it with the official release"
                )
            data.append(images)
            self.targets.extend(int(v) for v in labels)
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision
        meta = read_plain_pickle(folder / self.meta["filename"], name)
        self.classes = meta.get(self.meta["key"])
        if not isinstance(self.classes, list):
            raise ConfigError(f"dataset={name}: {folder / self.meta['filename']} holds no class names")
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}


def _existence_checked(cls: Any) -> Any:
    """The torchvision class reading its pickles without running code (``_PlainPickles``), its md5 checks
    reduced to "the file exists".

    torchvision compares every pickle's md5 with the official release's on each construction (about a
    second for CIFAR); the download itself is still md5-checked by torchvision. Files are safe to read
    without the md5s because ``_PlainUnpickler`` refuses anything but plain data, so a copy re-pickled
    elsewhere (or a test's files) loads as well.
    """
    return type(
        cls.__name__,
        (_PlainPickles, cls),
        {
            "train_list": [[name, None] for name, _ in cls.train_list],
            "test_list": [[name, None] for name, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None},
        },
    )


def _fake(dataset: DictConfig) -> tuple[Dataset, Dataset, int]:
    """Random images: a per-class pattern plus Gaussian noise, fixed by a generator (not the run's seed)."""
    n_cls, size = int(dataset.num_classes), int(dataset.input_size)
    g = torch.Generator().manual_seed(1234)
    templates = torch.randn(n_cls, 3, 4, 4, generator=g)
    templates = torch.nn.functional.interpolate(templates, size=(size, size), mode="nearest")

    def split(n: int) -> TensorDataset:
        labels = torch.randint(0, n_cls, (n,), generator=g)
        images = templates[labels] + float(dataset.noise) * torch.randn(n, 3, size, size, generator=g)
        return TensorDataset(images, labels)

    return split(int(dataset.train_size)), split(int(dataset.test_size)), n_cls
