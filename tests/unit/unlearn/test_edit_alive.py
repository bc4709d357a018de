"""The edit diagnostic: a run whose objective and forget accuracy did not move says so."""

from __future__ import annotations

import json

import pytest

from interp_unlearn.unlearn import unlearn
from interp_unlearn.unlearn.diagnostics import edit_effect

pytestmark = pytest.mark.usefixtures("one_thread")


def test_edit_effect_by_hand():
    alive = edit_effect([10, 10, 8, 6, 5], {"forget": 0.9}, {"forget": 0.89})
    assert alive["objective_first"] == 10 and alive["objective_last"] == 5
    assert alive["objective_drop_rel"] == pytest.approx(0.5) and alive["edit_alive"]
    inert = edit_effect([40, 41, 39, 40, 40.5], {"forget": 0.395}, {"forget": 0.39})
    assert inert["edit_alive"] is False
    # accuracy alone moving is enough to be alive; no evaluation: the objective decides
    assert edit_effect([40, 40], {"forget": 0.9}, {"forget": 0.5})["edit_alive"]
    assert edit_effect([40, 40], {}, {})["edit_alive"] is False
    assert edit_effect([], {}, {})["edit_alive"] is True  # nothing to judge


def test_a_preset_too_weak_for_the_model_is_flagged(tmp_path, capsys):
    with pytest.warns(RuntimeWarning, match="the unlearning edit is INERT"):
        res = unlearn("organism-micro", "rmu", out_dir=tmp_path / "weak", steps=10, lr=1e-12)
    edit = json.loads((res.out_dir / "unlearn_result.json").read_text())["edit"]
    assert edit["edit_alive"] is False
    assert "!!!!! rmu: the unlearning edit is INERT" in capsys.readouterr().err


def test_the_organism_preset_is_alive(tmp_path):
    res = unlearn("organism-micro", "rmu", out_dir=tmp_path / "rmu")
    edit = json.loads((res.out_dir / "unlearn_result.json").read_text())["edit"]
    assert edit["edit_alive"] is True and edit["objective_drop_rel"] > 0.05
