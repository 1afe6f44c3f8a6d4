"""Is ``model.arch`` a timm model? Answered without importing timm (and torch) where it can be.

timm registers a model by decorating its entry-point function with ``@register_model`` in one of the
modules of ``timm.models``; importing them all (``timm.is_model``) imports torch and takes seconds. A name
found decorated so in timm's installed sources is a model; any other name is asked of timm itself, so the
answer is always timm's.
"""

from __future__ import annotations

import functools
import importlib.util
import re
from pathlib import Path

_VIT_MODULE = "vision_transformer.py"  # where the names this harness builds (vit_*) are defined


@functools.lru_cache(maxsize=1)
def _model_sources() -> tuple[Path, ...]:
    """timm's model modules, ``vision_transformer.py`` first; empty when timm is not installed there."""
    spec = importlib.util.find_spec("timm")
    folders = [Path(f) / "models" for f in (spec.submodule_search_locations or [])] if spec else []
    files = [p for folder in folders if folder.is_dir() for p in sorted(folder.glob("*.py"))]
    return tuple(sorted(files, key=lambda p: p.name != _VIT_MODULE))


def _registered_in_sources(arch: str) -> bool:
    pattern = re.compile(rf"^@register_model\s*\ndef {re.escape(arch)}\(", re.MULTILINE)
    for path in _model_sources():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if f"def {arch}(" in text and pattern.search(text):
            return True
    return False


def is_timm_model(name: str) -> bool:
    """``timm.is_model(name)`` (a pretrained tag after the first ``.`` is ignored), importing timm only
    for a name its sources do not register."""
    arch = name.split(".", 1)[0]
    if arch.isidentifier() and _registered_in_sources(arch):
        return True
    import timm

    return timm.is_model(name)
