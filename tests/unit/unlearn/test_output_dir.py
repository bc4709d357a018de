"""Issue 18 #4: an unlearning run never overwrites the input model, never a non-empty
directory without ``overwrite``, and publishes its checkpoint atomically."""

from __future__ import annotations

import json

import pytest

from interp_unlearn.data.loading import load_model
from interp_unlearn.pipeline.cli import main
from interp_unlearn.unlearn import Trainer, UnlearnConfig
from interp_unlearn.unlearn.output import OutputDirError, check_out_dir

pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(**kw):
    return UnlearnConfig(method="ga", max_num_batches=1, progress=False, evaluate=False, **kw)


def test_the_input_model_is_never_the_output(tmp_path):
    lm = load_model("organism-micro")
    for out in (lm.path, lm.path / "sub", lm.path.parent):
        with pytest.raises(OutputDirError, match="would overwrite the input model"):
            Trainer(lm, _cfg(), out_dir=out, overwrite=True)


def test_non_empty_out_needs_overwrite_and_is_replaced_whole(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "old_weights.safetensors").write_text("stale")
    lm = load_model("organism-micro")
    with pytest.raises(OutputDirError, match=r"not empty \(1 entries\); pass --overwrite"):
        Trainer(lm, _cfg(), out_dir=out)
    res = Trainer(lm, _cfg(), out_dir=out, overwrite=True).run()
    assert res.out_dir == out and res.checkpoint == out
    assert not (out / "old_weights.safetensors").exists()  # nothing stale beside the new run
    assert (out / "model.safetensors").is_file()
    assert json.loads((out / "interp_unlearn.json").read_text())["unlearn"]["status"] == "completed"
    assert not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_a_failed_run_leaves_the_old_directory_untouched(tmp_path, monkeypatch):
    out = tmp_path / "run"
    lm = load_model("organism-micro")
    Trainer(lm, _cfg(), out_dir=out).run()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    tr = Trainer(load_model("organism-micro"), _cfg(), out_dir=out, overwrite=True)
    monkeypatch.setattr(tr, "train_step", lambda: (_ for _ in ()).throw(RuntimeError("killed")))
    with pytest.raises(RuntimeError, match="killed"):
        tr.run()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_cli_refuses_before_loading(tmp_path, monkeypatch, capsys):
    import interp_unlearn.data.loading as loading

    out = tmp_path / "run"
    out.mkdir()
    (out / "x").write_text("1")
    monkeypatch.setattr(loading, "load_model", lambda *a, **k: (_ for _ in ()).throw(
        AssertionError("model loaded")))
    assert main(["unlearn", "--method", "ga", "--model", "organism-micro",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not empty" in err[0] and "--overwrite" in err[0]
    assert (out / "x").read_text() == "1"


def test_check_out_dir_accepts_new_and_empty(tmp_path):
    check_out_dir(tmp_path / "new", None, False)
    check_out_dir(tmp_path, None, False)  # empty
    (tmp_path / "f").write_text("")
    with pytest.raises(OutputDirError, match="is not a directory"):
        check_out_dir(tmp_path / "f", None, False)


def test_finite_divergence_stops_and_marks_the_checkpoint(tmp_path, capsys):
    """Issue 18 #2: lr 1e6 blows the weights up without a NaN; the run stops with a clear
    error, the checkpoint says 'diverged', and downstream loading refuses it."""
    from interp_unlearn.data.loading import IncompleteCheckpointError, accepting_incomplete
    from interp_unlearn.unlearn.guards import DivergenceError

    lm = load_model("organism-micro")
    cfg = UnlearnConfig(method="rmu", max_num_batches=3, lr=1e6, progress=False,
                        evaluate=False)
    with pytest.raises(DivergenceError, match=r"diverged at step 1: the trained weights' norm"):
        Trainer(lm, cfg, out_dir=tmp_path / "rmu").run()
    meta = json.loads((tmp_path / "rmu" / "interp_unlearn.json").read_text())
    assert meta["unlearn"]["status"] == "diverged"
    assert meta["unlearn"]["weights"] == "none kept: diverged"
    # the destroyed weights are not kept: nothing can load them, even when told to accept
    assert not (tmp_path / "rmu" / "model.safetensors").exists()
    assert (tmp_path / "rmu" / "metrics.jsonl").is_file()
    for accept in (False, True):
        with pytest.raises(IncompleteCheckpointError, match="stopped .*'diverged'.* kept no weights"):
            load_model(tmp_path / "rmu", accept_incomplete=accept)
    with accepting_incomplete(), pytest.raises(IncompleteCheckpointError, match="no weights"):
        load_model(tmp_path / "rmu")
    assert main(["evaluate", "--model", str(tmp_path / "rmu"), "--mcq", "forget",
                 "--accept-incomplete"]) == 2
    assert "kept no weights" in capsys.readouterr().err


def test_retain_collapse_is_divergence():
    from interp_unlearn.unlearn.guards import retain_collapse

    assert retain_collapse(0.883, 0.80) is None
    assert "collapsed to 0.275" in retain_collapse(0.883, 0.275)
    assert retain_collapse(None, 0.1) is None and retain_collapse(0.25, 0.1) is None
