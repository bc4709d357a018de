import pandas as pd
import pytest

from interp_unlearn.plotting import best_so_far


def _trials():
    return pd.DataFrame({
        "trial": [0, 1, 2, 3], "state": ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE"],
        "family": ["lora", "full", "lora", "lora"], "val_forget": [0.4, 0.9, None, 0.6],
        "feasible": [True, False, False, True], "best_so_far": [0.4, 0.4, 0.4, 0.6],
        "default": [True, False, False, False]})


def test_best_so_far_draws_feasible_and_violating_trials_apart():
    fig = best_so_far(_trials(), references={"unattacked": 0.3})
    names = [t.name for t in fig.data]
    assert names == ["lora", "full", "open: retain bound violated", "best feasible so far",
                     "unattacked"]
    assert fig.data[0].marker.symbol == "circle" and fig.data[1].marker.symbol == "circle-open"
    assert fig.data[1].marker.color == fig.data[1].marker.line.color  # visible, not white
    step = fig.data[3]
    assert list(step.y) == [0.4, 0.4, 0.6] and step.line.shape == "hv"  # failed trial dropped
    assert fig.layout.annotations and any("fixed recipe" in (a.text or "")
                                          for a in fig.layout.annotations)


def test_best_so_far_names_missing_columns():
    with pytest.raises(ValueError, match="best_so_far: missing column"):
        best_so_far(_trials().drop(columns="feasible"))
