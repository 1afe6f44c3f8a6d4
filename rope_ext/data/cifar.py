"""``dataset=cifar10`` / ``cifar100``: torchvision's CIFAR classes reading ``<root>/cifar-10-batches-py``
(or ``cifar-100-python``), every pickle read by a loader that never runs code from the file."""

from __future__ import annotations

import logging
import pickle
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rope_ext.data.registry import DatasetConfig, DatasetInfo, register
from rope_ext.errors import ConfigError
from rope_ext.fields import key
from rope_ext.util import select

if TYPE_CHECKING:  # torch is imported by the builder: registering the dataset must not import it
    from torch.utils.data import Dataset

log = logging.getLogger(__name__)

_CIFAR = {
    "cifar10": ("CIFAR10", "cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
    "cifar100": ("CIFAR100", "cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz"),
}


@dataclass
class CifarConfig(DatasetConfig):
    root: str = key(trajectory=False, help="the folder holding cifar-10-batches-py / cifar-100-python")
    download: bool = key(True, trajectory=False)


def _host_reachable(url: str, timeout: float = 5.0) -> bool:
    host = url.split("/")[2]
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def build(dataset: Any) -> tuple[Dataset, Dataset, int]:
    """torchvision's CIFAR10/CIFAR100 classes reading ``<root>/cifar-10-batches-py`` (or -100-python)."""
    import torch
    import torchvision
    from torch.utils.data import TensorDataset

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


# torchvision's file lists (train_list + test_list, meta), without importing torch for the check
_FILES = {
    "cifar10": ([*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"], ("batches.meta", "label_names")),
    "cifar100": (["train", "test"], ("meta", "fine_label_names")),
}


def _num_classes(name: str) -> int:
    return 100 if name == "cifar100" else 10


def read_batch(path: Path, name: str) -> tuple[Any, list[int]]:
    """(uint8 images of shape (N, 3072), N labels) of one CIFAR batch file; ConfigError otherwise."""
    import numpy as np

    entry = read_plain_pickle(path, name)
    images, labels = entry.get("data"), entry.get("labels", entry.get("fine_labels"))
    if (
        not isinstance(images, np.ndarray)
        or images.dtype != np.uint8
        or images.ndim != 2
        or images.shape[1] != 3 * 32 * 32
        or not isinstance(labels, list)
        or len(labels) != len(images)
        or not all(isinstance(v, int | np.integer) and 0 <= v < _num_classes(name) for v in labels)
    ):
        raise ConfigError(
            f"dataset={name}: {path} is not a CIFAR batch (uint8 'data' of shape (N, 3072) and N labels "
            "in range). Replace it with the official release"
        )
    return images, [int(v) for v in labels]


def read_classes(path: Path, key_name: str, name: str) -> list[str]:
    """The class names of a CIFAR meta file: a list of as many names as the dataset has classes."""
    classes = read_plain_pickle(path, name).get(key_name)
    if not isinstance(classes, list) or len(classes) != _num_classes(name):
        found = f"{len(classes)} class names" if isinstance(classes, list) else "no class names"
        raise ConfigError(
            f"dataset={name}: {path} holds {found} under {key_name!r}; allowed: {_num_classes(name)}. "
            "Replace it with the official release"
        )
    return classes


def rules(cfg: Any) -> None:
    """Before anything is written: the CIFAR files under ``dataset.root`` read and checked as the run
    reads them (batches and class names), or missing with ``dataset.download=false`` refused. Missing
    files with downloads on are fetched by the run; a root that names no reachable folder on a cluster
    launcher is checked by the job, where the data is."""
    dataset = cfg["dataset"]
    folder = Path(str(dataset["root"])).expanduser() / _CIFAR[dataset["name"]][1]
    files, (meta_file, meta_key) = _FILES[dataset["name"]]
    missing = [f for f in [*files, meta_file] if not (folder / f).is_file()]
    if missing:
        if not dataset["download"] and (folder.exists() or select(cfg, "launcher.name", "local") == "local"):
            raise ConfigError(
                f"dataset={dataset['name']}: files {missing} are missing under {folder} and "
                "dataset.download=false; put the extracted folder there (from "
                f"{_CIFAR[dataset['name']][2]}) or point dataset.root at it."
            )
        return
    read_classes(folder / meta_file, meta_key, dataset["name"])
    for name in files:
        read_batch(folder / name, dataset["name"])


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
            images, labels = read_batch(folder / file_name, name)
            data.append(images)
            self.targets.extend(labels)
        self.data = np.vstack(data).reshape(-1, 3, 32, 32).transpose((0, 2, 3, 1))  # HWC, as torchvision
        self.classes = read_classes(folder / self.meta["filename"], self.meta["key"], name)
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


register(
    DatasetInfo("cifar10", CifarConfig, build, num_classes=10, rules=rules, summary="CIFAR-10 (torchvision)")
)
register(
    DatasetInfo(
        "cifar100", CifarConfig, build, num_classes=100, rules=rules, summary="CIFAR-100 (torchvision)"
    )
)
