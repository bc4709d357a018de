"""The package's shape, read from its source (issue 17): layers that follow the data.

``core`` -> ``interventions``, ``data`` -> ``evaluation`` -> the stages ``localize``,
``unlearn``, ``attacks`` (which never import each other) -> ``plotting`` (``core`` only) ->
``pipeline``. Imports inside functions count too: a lazy import is still a dependency.
"""

from __future__ import annotations

import import_graph as ig
import pytest

GRAPH = ig.graph()


def test_no_import_cycles():
    assert ig.cycles(GRAPH) == []
    assert ig.cycles(ig.unit_graph(GRAPH)) == []


def test_imports_point_only_down():
    assert ig.violations(GRAPH) == []


def test_plotting_imports_only_core():
    units = ig.unit_graph(GRAPH)
    assert units["plotting"] <= {"core"}, units["plotting"]


@pytest.mark.parametrize("stage", ["localize", "unlearn", "attacks"])
def test_no_stage_imports_another(stage):
    others = {"localize", "unlearn", "attacks"} - {stage}
    assert not (ig.unit_graph(GRAPH)[stage] & others)


def test_core_imports_no_other_package_folder():
    assert ig.unit_graph(GRAPH)["core"] == set()


def test_at_most_12_top_level_entries():
    entries = ig.top_level_entries()
    assert len(entries) <= 12, entries


def test_no_module_over_400_lines():
    assert ig.long_modules(400) == {}


def test_the_checker_sees_a_violation(tmp_path, monkeypatch):
    """Oracle: the checker flags an upward import, a sideways stage import and a cycle."""
    g = {"interp_unlearn.core.a": {"interp_unlearn.pipeline.cli"},
         "interp_unlearn.pipeline.cli": {"interp_unlearn.core.a"},
         "interp_unlearn.attacks.x": {"interp_unlearn.unlearn.y"},
         "interp_unlearn.unlearn.y": set(),
         "interp_unlearn.plotting.p": {"interp_unlearn.attacks.x"}}
    bad = set(ig.violations(g))
    assert ("interp_unlearn.core.a", "interp_unlearn.pipeline.cli") in bad
    assert ("interp_unlearn.attacks.x", "interp_unlearn.unlearn.y") in bad
    assert ("interp_unlearn.plotting.p", "interp_unlearn.attacks.x") in bad
    assert ig.cycles(g) == [["interp_unlearn.core.a", "interp_unlearn.pipeline.cli"]]
