"""Old (0.1) import paths keep working for one release, with a DeprecationWarning, and give
the very same objects as the new paths (issue 17)."""

from __future__ import annotations

import importlib
import sys

import pytest

from interp_unlearn._compat import MODULE_ALIASES, NAME_MOVES


@pytest.mark.parametrize("old", sorted(MODULE_ALIASES))
def test_old_module_path_is_the_new_module(old):
    new = importlib.import_module(MODULE_ALIASES[old])
    sys.modules.pop(old, None)
    with pytest.warns(DeprecationWarning, match="moved to"):
        mod = importlib.import_module(old)
    assert mod is new
    assert mod.__spec__.name == MODULE_ALIASES[old]  # the real module keeps its own spec


@pytest.mark.parametrize("package,name", sorted(NAME_MOVES))
def test_names_that_left_a_package(package, name):
    pkg = importlib.import_module(package)
    with pytest.warns(DeprecationWarning, match="moved to"):
        value = getattr(pkg, name)
    assert value is getattr(importlib.import_module(NAME_MOVES[(package, name)]), name)


def test_unknown_names_still_raise():
    pkg = importlib.import_module("interp_unlearn.localize")
    with pytest.raises(AttributeError, match="no attribute"):
        pkg.not_a_name  # noqa: B018


def test_public_api_resolves():
    import interp_unlearn as iu

    assert iu.__version__
    missing = [n for n in iu.__all__ if not hasattr(iu, n)]
    assert missing == []
