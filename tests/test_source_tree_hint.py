"""Run from a checkout's root, Python imports the uninstalled sources; a compiled part missing
for that reason is said to be that, not left to look like a failed install."""
import importlib.machinery
import os
import types

from fastdiff import backends


def _installed_at(monkeypatch, origin):
    spec = None if origin is None else types.SimpleNamespace(origin=origin)
    monkeypatch.setattr(importlib.machinery.PathFinder, "find_spec", classmethod(lambda cls, name, path=None: spec))


def test_hint_only_when_the_checkout_shadows_an_install(monkeypatch, tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(backends.__file__)))
    monkeypatch.chdir(root)
    _installed_at(monkeypatch, str(tmp_path / "site-packages" / "fastdiff" / "__init__.py"))
    hint = backends._source_tree_hint()
    assert "imported fastdiff from the source tree" in hint and str(tmp_path / "site-packages") in hint
    _installed_at(monkeypatch, None)  # nothing installed elsewhere (or an editable install)
    assert backends._source_tree_hint() == ""
    _installed_at(monkeypatch, os.path.abspath(backends.__file__).replace("backends.py", "__init__.py"))
    assert backends._source_tree_hint() == ""
    _installed_at(monkeypatch, str(tmp_path / "site-packages" / "fastdiff" / "__init__.py"))
    monkeypatch.chdir(tmp_path)  # elsewhere, the installed copy is what Python imports
    assert backends._source_tree_hint() == ""
