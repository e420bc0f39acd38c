"""Every name a subpackage lists in ``__all__`` resolves (lazy exports included)."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "package",
    ["stemtomo", "stemtomo.io", "stemtomo.simulate", "stemtomo.noise", "stemtomo.denoise", "stemtomo.recon",
     "stemtomo.recon.implicit", "stemtomo.eval", "stemtomo.align", "stemtomo.preprocess"],
)
def test_all_names_resolve(package: str) -> None:
    module = importlib.import_module(package)
    names = getattr(module, "__all__", [])
    assert names, f"{package} has no __all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, f"{package}: {missing}"
