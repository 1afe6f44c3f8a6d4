"""The encoding registry: registering, looking up, loading a user's modules (a path, a module name,
ROPE_EXT_MODULES, an entry point), the validation reading traits, and the generated docs table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from harness_helpers import REPO, env

from rope_ext.encoding import registry
from rope_ext.encoding.registry import Accepts, EncodingInfo
from rope_ext.encoding.spec import validate_pe

MODULE = """
from rope_ext.encoding.encodings.axial_block import BlockRotary
from rope_ext.encoding.registry import Accepts, EncodingInfo, register

register(EncodingInfo(name={name!r}, layer=BlockRotary, summary="a test encoding",
    accepts=Accepts(block=2, impls=("fast",), mixed=False, layout_of=False, learnable_false=True)))
"""


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch):
    """The registry with the built-ins only; whatever a test registers is gone after it."""
    monkeypatch.delenv(registry.ENV_VAR, raising=False)
    registry.names()
    monkeypatch.setattr(registry, "_infos", dict(registry._infos))
    monkeypatch.setattr(registry, "_loaded_modules", dict(registry._loaded_modules))
    monkeypatch.setattr(registry, "_env_loaded", "")
    return registry


def write_module(folder: Path, stem: str, name: str) -> Path:
    path = folder / f"{stem}.py"
    path.write_text(MODULE.format(name=name))
    return path


def info(name: str, **traits: object) -> EncodingInfo:
    accepts = Accepts(block=2, impls=("fast",), mixed=False, layout_of=False, learnable_false=True)
    return EncodingInfo(
        name=name, layer=registry.get("axial2_complex").layer, summary="x", accepts=accepts, **traits
    )


def test_names_none_first_then_registration_order_and_rotary_names(isolated):
    names = registry.names()
    assert names[0] == "none" and set(registry.rotary_names()) == set(names) - {"none"}
    assert registry.rotary_names() == tuple(n for n in names if registry.get(n).rotary)
    registry.register(info("zz_late"))
    assert registry.names()[-1] == "zz_late"


def test_register_refuses_a_duplicate_and_a_malformed_info(isolated):
    with pytest.raises(ValueError, match="encoding 'axial_block' is already registered .*pick another name"):
        registry.register(info("axial_block"))
    with pytest.raises(TypeError, match="info must be an EncodingInfo, got dict"):
        registry.register({"name": "x"})
    with pytest.raises(
        ValueError, match="name='not a name' is not allowed; allowed values: a Python identifier"
    ):
        registry.register(info("not a name"))
    with pytest.raises(ValueError, match="a rotary encoding has a layer and accepts"):
        registry.register(EncodingInfo(name="half", layer=None, summary="x", rotary=True))


def test_get_names_the_value_the_allowed_names_and_the_closest(isolated):
    with pytest.raises(ValueError) as err:
        registry.get("axial_blok", key="pe.name")
    message = str(err.value)
    assert message.startswith("pe.name='axial_blok' is not allowed; allowed values: none, ")
    assert all(name in message for name in registry.names()) and message.endswith(
        "(did you mean axial_block?)"
    )


def test_load_module_from_a_path_once_and_by_module_name(isolated, tmp_path, monkeypatch):
    path = write_module(tmp_path, "mine", "mine_pe")
    assert registry.load_module(str(path)) == ["mine_pe"]
    assert registry.load_module(str(path)) == ["mine_pe"]  # imported once: no duplicate error
    assert validate_pe("mine_pe", {}).block == 2
    package = tmp_path / "pkg"
    package.mkdir()
    write_module(package, "__init__", "pkg_pe")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert registry.load_module("pkg") == ["pkg_pe"]
    monkeypatch.delitem(sys.modules, "pkg")


def test_load_module_failures_name_the_spec_and_the_cause(isolated, tmp_path):
    with pytest.raises(
        ValueError, match=r"encoding module '.*nope\.py' could not be loaded \(FileNotFoundError"
    ):
        registry.load_module(str(tmp_path / "nope.py"))
    (tmp_path / "broken.py").write_text("def f(:\n")
    with pytest.raises(ValueError, match=r"'.*broken\.py' could not be loaded \(SyntaxError"):
        registry.load_module(str(tmp_path / "broken.py"))
    (tmp_path / "raises.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match=r"could not be loaded \(RuntimeError: boom\)"):
        registry.load_module(str(tmp_path / "raises.py"))
    clash = write_module(tmp_path, "clash", "lie_block")
    with pytest.raises(ValueError, match="encoding 'lie_block' is already registered"):
        registry.load_module(str(clash))
    with pytest.raises(ValueError, match=r"could not be loaded \(ModuleNotFoundError"):
        registry.load_module("no_such_module_here")
    with pytest.raises(ValueError, match="module spec '' is not allowed"):
        registry.load_module("")
    assert "lie_block" in registry.names() and registry.get("lie_block").layer.__name__ == "LieBlockRotary"


def test_rope_ext_modules_is_read_on_first_access(isolated, tmp_path, monkeypatch):
    one, two = write_module(tmp_path, "one", "env_one"), write_module(tmp_path, "two", "env_two")
    monkeypatch.setenv(registry.ENV_VAR, os.pathsep.join([str(one), str(two)]))
    assert registry.names()[-2:] == ("env_one", "env_two")
    monkeypatch.setenv(registry.ENV_VAR, str(tmp_path / "missing.py"))
    with pytest.raises(ValueError, match=r"ROPE_EXT_MODULES='.*missing\.py': encoding module"):
        registry.get("axial_block")


def test_a_fresh_process_reads_rope_ext_modules_before_anything_else(tmp_path):
    path = write_module(tmp_path, "fresh", "fresh_pe")
    code = "import rope_ext; from rope_ext.encoding import registry; print(registry.names()[-1])"
    proc = subprocess.run(
        [sys.executable, "-c", code],
        env=env(ROPE_EXT_MODULES=str(path), PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "fresh_pe", proc.stderr[-2000:]


def test_entry_points_of_installed_packages_are_loaded(isolated, tmp_path, monkeypatch):
    site = tmp_path / "site"
    dist = site / "myenc-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: myenc\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[rope_ext.encodings]\nmyenc = myenc_module\n")
    write_module(site, "myenc_module", "ep_pe")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(registry, "_builtins_loaded", False)
    assert "ep_pe" in registry.names()
    monkeypatch.delitem(sys.modules, "myenc_module")


def test_validation_reads_the_traits_not_the_names(isolated):
    """A fixed-block encoding's message points at the encodings of any block size; a basis or a
    layout is refused unless the traits allow it."""
    registry.register(info("fixed_two"))
    with pytest.raises(
        ValueError, match=r"block=3 is not allowed for pe='fixed_two' \(use pe='axial_block' or"
    ):
        validate_pe("fixed_two", {"block": 3})
    with pytest.raises(ValueError, match="only pe='axial_block' with block > 2 has a basis"):
        validate_pe("fixed_two", {"basis": "frozen"})
    registry.register(
        EncodingInfo(
            name="big_basis",
            layer=registry.get("axial_block").layer,
            summary="x",
            learned_basis=True,
            accepts=Accepts(
                block=None, impls=("matrix",), mixed=False, layout_of=False, learnable_false=True
            ),
        )
    )
    assert validate_pe("big_basis", {"block": 4}).basis == "learned"
    with pytest.raises(ValueError, match="only pe='axial_block' or 'big_basis' with block > 2 has a basis"):
        validate_pe("fixed_two", {"basis": "frozen"})


def test_docs_encodings_table_is_the_registry_s(isolated):
    text = (REPO / "docs" / "encodings.md").read_text()
    found = re.search(r"<!-- BEGIN encodings table[^\n]*-->\n(.*?)\n<!-- END encodings table -->", text, re.S)
    assert found, "docs/encodings.md lacks the generated encodings table's markers"
    rendered = registry.encodings_table()
    assert found.group(1) == rendered, f"docs/encodings.md's table is stale; paste this:\n{rendered}"
    assert all(f"| `{name}` |" in rendered for name in registry.names())
