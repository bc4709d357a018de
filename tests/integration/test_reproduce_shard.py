"""``reproduce --shard i/n``: the grid split into self-contained shards (connected
components of the dependency graph: a seed's cells stay together), each run in
``OUT/shards/i-of-n``, merged by a later run without ``--shard``.

The shards' dry-run plans partition the full plan and read nothing outside themselves;
``--shard 1/2`` and ``--shard 2/2`` then a merge give the same stored values and tables as
one run (that test is in ``test_reproduce_executor.py``: both shards run as submitit
jobs there, next to the shard-1 run it shares); bad specs fail with one line, exit 2,
before any file is written.
"""

from __future__ import annotations

import json

import pytest

from interp_unlearn.pipeline.cli import main
from interp_unlearn.pipeline.reproduce import ReproduceConfig
from interp_unlearn.pipeline.reproduce import build_plan
from interp_unlearn.pipeline.reproduce.parallel import dependencies
from interp_unlearn.pipeline.reproduce.shard import (ShardError, components, parse_shard,
                                                     shard_plan)
from interp_unlearn.pipeline.reproduce.store import PLAN_FILE, RESULTS_FILE

pytestmark = pytest.mark.usefixtures("one_thread")

#: two seeds, ALMPU (its localization), every table: the dry-run partition test
GRID = ["--model", "organism-micro", "--quick", "--seeds", "0-1", "--methods", "rmu,almpu",
        "--set", "table1_sizes=[0,5]", "--set", "table2_sizes=[0,5]", "--no-figures",
        "--no-progress"]


def test_shard_specs():
    assert parse_shard("1/2") == (1, 2) and parse_shard(" 3 / 3 ") == (3, 3)
    assert parse_shard(None) is None and parse_shard((2, 4)) == (2, 4)
    for bad in ("0/2", "3/2", "a/b", "1/0", "1", "-1/2", "1/2/3", ""):
        with pytest.raises(ShardError, match="--shard"):
            parse_shard(bad)


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_dry_run_shards_partition_the_plan(tmp_path, capsys, n):
    out = tmp_path / "grid"
    assert main(["reproduce", *GRID, "--out", str(out), "--dry-run", "--json"]) == 0
    full = json.loads((out / PLAN_FILE).read_text())["cells"]
    capsys.readouterr()
    keys: list[str] = []
    for i in range(1, n + 1):
        assert main(["reproduce", *GRID, "--out", str(out), "--dry-run", "--json",
                     "--shard", f"{i}/{n}"]) == 0
        res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        sdir = out / "shards" / f"{i}-of-{n}"
        assert res["out"] == str(sdir) and res["shard"] == f"{i}/{n}"
        plan = json.loads((sdir / PLAN_FILE).read_text())
        assert plan["shard"] == f"{i}/{n}" and res["cells"] == len(plan["cells"]) > 0
        mine = {c["key"] for c in plan["cells"]}
        # self-contained: every cell's inputs are cells of the same shard
        cfg = ReproduceConfig.load_json(sdir / "reproduce_config.json")
        for key, deps in dependencies(build_plan(cfg)).items():
            if key in mine:
                assert deps <= mine
        # in plan order
        order = [c["key"] for c in full]
        assert [c["key"] for c in plan["cells"]] == sorted(mine, key=order.index)
        keys += mine
        assert not (sdir / RESULTS_FILE).exists()
    assert sorted(keys) == sorted(c["key"] for c in full) and len(set(keys)) == len(keys)
    assert json.loads((out / PLAN_FILE).read_text())["cells"] == full  # untouched


def test_shards_follow_the_seeds():
    cfg = ReproduceConfig.preset("organism-micro", quick=True, seeds=[0, 1, 2],
                                 methods=["rmu", "almpu"])
    plan = build_plan(cfg)
    comps = components(plan)
    # one component per seed (its localization, models, references, attacks), plus the
    # original's and the twin's logit lens
    assert sorted(len({c.seed for c in comp}) for comp in comps) == [1] * 5
    big = [comp for comp in comps if len(comp) > 1]
    assert sorted(comp[0].seed for comp in big) == [0, 1, 2]
    a, b = shard_plan(plan, 1, 2), shard_plan(plan, 2, 2)
    assert {c.seed for c in a if c.kind == "unlearn"} == {0, 2}
    assert {c.seed for c in b if c.kind == "unlearn"} == {1}
    assert shard_plan(plan, 1, 2) == a  # deterministic
    with pytest.raises(ShardError, match="at most 5 self-contained shards"):
        shard_plan(plan, 1, 6)


def test_bad_shard_specs_fail_before_any_file(tmp_path, capsys):
    out = tmp_path / "never"
    for spec, msg in (("0/2", "out of range"), ("3/2", "out of range"), ("a/b", "must be i/n"),
                      ("1/99", "at most")):
        for extra in ([], ["--dry-run"]):
            assert main(["reproduce", *GRID, "--out", str(out), "--shard", spec, *extra]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and msg in err[0] and "--shard" in err[0], err
    assert not out.exists()
