"""The one heads parser (issue 17): every form, one duplicate rule, errors that name the
file and the valid range."""

from __future__ import annotations

import json

import numpy as np
import pytest

from interp_unlearn.core.heads import parse_heads

DIMS = {"n_layers": 4, "n_heads": 4, "d_head": 8}


def test_every_form_gives_the_same_heads(tmp_path):
    want = [(2, 1), (0, 3)]
    (tmp_path / "a.json").write_text(json.dumps({"heads": [[2, 1], [0, 3]]}))
    (tmp_path / "b.json").write_text(json.dumps({"selected_heads": [{"layer": 2, "head": 1},
                                                                    [0, 3]]}))
    np.save(tmp_path / "c.npy", np.array(want))
    d = tmp_path / "run"
    d.mkdir()
    (d / "selected_heads.json").write_text(json.dumps([[2, 1], [0, 3]]))
    for spec in (want, [[2, 1], [0, 3]], "2.1, 0:3", "2.1 0.3", ["2.1", "0.3"],
                 tmp_path / "a.json", str(tmp_path / "b.json"), tmp_path / "c.npy", d):
        assert parse_heads(spec, DIMS) == want, spec
    assert parse_heads("2.1,0.3", DIMS, sort=True) == sorted(want)
    assert parse_heads(None) is None


def test_duplicates_are_an_error_everywhere(tmp_path):
    (tmp_path / "dup.json").write_text(json.dumps([[1, 0], [1, 0]]))
    for spec in ([(1, 0), (1, 0)], "1.0,1.0", tmp_path / "dup.json"):
        with pytest.raises(ValueError, match=r"head \(1, 0\) is listed twice"):
            parse_heads(spec, DIMS)


def test_errors_name_the_culprit(tmp_path):
    with pytest.raises(ValueError, match=r"bad\.json: head 9 out of range for layer 2: "
                                         r"valid heads are 0\.\.3"):
        (tmp_path / "bad.json").write_text(json.dumps([[2, 9]]))
        parse_heads(tmp_path / "bad.json", DIMS)
    with pytest.raises(ValueError, match=r"layer 7 out of range.*valid layers are 0\.\.3"):
        parse_heads("7.0", DIMS)
    with pytest.raises(FileNotFoundError, match="heads file not found"):
        parse_heads(tmp_path / "missing.json", DIMS)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match=r"broken\.json: not valid JSON"):
        parse_heads(tmp_path / "broken.json")
    (tmp_path / "obj.json").write_text(json.dumps({"scores": []}))
    with pytest.raises(ValueError, match=r"obj\.json: expected a list"):
        parse_heads(tmp_path / "obj.json")
    with pytest.raises(ValueError, match="cannot parse head 'x'"):
        parse_heads("x")
    with pytest.raises(ValueError, match="no heads given"):
        parse_heads([])
