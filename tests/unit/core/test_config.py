"""One config story (issue 17): to_dict/from_dict round trips, unknown keys named, and
``--set`` values read by the field's type (issue 18: ``--set adversarial=False`` is False)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from interp_unlearn.core.config import ConfigBase, parse_assignments
from interp_unlearn.localize.attribution import AttributionConfig
from interp_unlearn.localize.config import LocalizeConfig
from interp_unlearn.pipeline.reproduce.config import ReproduceConfig
from interp_unlearn.unlearn.config import UnlearnConfig


@dataclass
class Toy(ConfigBase):
    flag: bool = True
    n: int = 1
    x: float = 0.5
    name: str = "a"
    opt: int | None = None
    sizes: tuple[int, ...] = (0, 5)
    table: dict = field(default_factory=dict)


@pytest.mark.parametrize("cfg", [LocalizeConfig(), AttributionConfig(), UnlearnConfig(method="rmu"),
                                 ReproduceConfig(), Toy()])
def test_round_trip(cfg, tmp_path):
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert type(cfg).load_json(cfg.save_json(tmp_path / "c.json")) == cfg


def test_unknown_key_is_named():
    with pytest.raises(ValueError, match=r"unknown Toy field\(s\) \['nope'\]; valid:"):
        Toy.from_dict({"nope": 1})


@pytest.mark.parametrize("text,want", [("False", False), ("false", False), ("0", False),
                                       ("True", True), ("1", True), ("yes", True)])
def test_booleans_by_type(text, want):
    assert parse_assignments([f"flag={text}"], Toy) == {"flag": want}


def test_values_by_type():
    got = parse_assignments(["n=3", "x=1e-3", "name=False", "opt=none", "sizes=[0,10]",
                             'table={"a": 1}'], Toy)
    assert got == {"n": 3, "x": 1e-3, "name": "False", "opt": None, "sizes": (0, 10),
                   "table": {"a": 1}}


@pytest.mark.parametrize("item,msg", [("flag=maybe", "cannot read as bool"),
                                      ("n=abc", "cannot read as int"),
                                      ("x=abc", "cannot read as float"),
                                      ("sizes=5", "not a JSON list"),
                                      ("nope=1", "unknown Toy field"),
                                      ("n", "KEY=VALUE")])
def test_bad_assignments_fail_before_work(item, msg):
    with pytest.raises(ValueError, match=msg):
        parse_assignments([item], Toy)


def test_from_assignments_applies_on_a_base():
    base = UnlearnConfig(method="rmu", lr=1e-3)
    cfg = UnlearnConfig.from_assignments(["progress=False", "max_num_batches=7"], base)
    assert (cfg.method, cfg.lr, cfg.progress, cfg.max_num_batches) == ("rmu", 1e-3, False, 7)
