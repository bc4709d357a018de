"""The lm-eval model type ``interp_unlearn``: in-process (simple_evaluate) and through the
command line wrapper, against evaluate_mcq on the same questions."""

import glob
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import lm_eval
import lm_eval.evaluator
from lm_eval.api.registry import get_model
from lm_eval.tasks import TaskManager

from safetensors.torch import save_file

from interp_unlearn.core.bridge import model_dims, to_bridge
from interp_unlearn.data.datasets import load_mcq_dataset, resolve_mcq
from interp_unlearn.evaluation.scoring import EvalConfig, evaluate_mcq
from interp_unlearn.interventions import ABLATION_MODES, HeadAblation, HeadPerturbation, attach
from interp_unlearn.evaluation.lm_eval_model import ABLATIONS, InterpUnlearnLM
from interp_unlearn.evaluation.lm_eval_task import write_lm_eval_task
from interp_unlearn.core.mcq import write_mcq
from interp_unlearn.core.selection import write_heads

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def subset(tmp_path_factory):
    """The first 20 forget questions and their lm-eval task directory."""
    d = tmp_path_factory.mktemp("subset")
    path = write_mcq(d / "forget20.jsonl", load_mcq_dataset("organism-micro:forget", limit=20))
    return path, write_lm_eval_task(path, d / "tasks", task_name="micro_forget20")


@pytest.fixture(scope="module")
def cli_run(subset, tmp_path_factory):
    """Starts the CLI command at once, so that lm-eval's start-up (it indexes its ~14,700
    built-in tasks: ~15 s) overlaps the in-process tests; test_cli_command waits for it."""
    _, task_dir = subset
    d = tmp_path_factory.mktemp("cli")
    cmd = [sys.executable, "-m", "interp_unlearn.evaluation.lm_eval_cli",
           "--model", "interp_unlearn", "--model_args", "path=organism-micro",
           "--tasks", "micro_forget20", "--include_path", str(task_dir),
           "--device", "cpu", "--batch_size", "8", "--output_path", str(d / "out")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    log = d / "log.txt"
    with log.open("w") as f:  # a file, not a pipe: a full pipe would block the child
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT)
    yield proc, d / "out", log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def letter_accuracy(lm, mcq_path):
    return evaluate_mcq(lm.model, lm.tokenizer, mcq_path, EvalConfig(scoring="letter")).accuracy


def test_registered(cli_run):  # cli_run: start the CLI subprocess first (see there)
    assert get_model("interp_unlearn") is InterpUnlearnLM
    assert get_model("hf").__name__ == "HFLM"  # lm-eval's own models still resolve


def test_simple_evaluate_matches_evaluate_mcq(tmp_path, micro):
    mcq_path = resolve_mcq("organism-micro:forget").paths[0]  # its 90 practice-pool questions
    task_dir = write_lm_eval_task(mcq_path, tmp_path / "tasks", task_name="micro_forget")
    out = lm_eval.evaluator.simple_evaluate(
        model="interp_unlearn", model_args="path=organism-micro", tasks=["micro_forget"],
        task_manager=TaskManager(include_path=str(task_dir), include_defaults=False),
        batch_size=16, device="cpu", log_samples=True)
    res = out["results"]["micro_forget"]
    ours = evaluate_mcq(micro.model, micro.tokenizer, mcq_path, EvalConfig(scoring="letter"))
    assert len(out["samples"]["micro_forget"]) == ours.n == 90
    assert res["acc,none"] == pytest.approx(ours.accuracy, abs=1e-12)
    per_doc = {s["doc_id"]: s["acc"] for s in out["samples"]["micro_forget"]}
    assert [bool(per_doc[i]) for i in range(ours.n)] == ours.per_question["correct"].tolist()


def test_intervention_args(tmp_path):
    heads = tmp_path / "selected_heads.json"
    heads.write_text(json.dumps({"heads": [[1, 2]]}))
    with pytest.raises(ValueError, match="ablate must be one of"):
        InterpUnlearnLM(path="organism-micro", heads=str(heads), ablate="half", device="cpu")
    with pytest.raises(ValueError, match="exactly one of"):
        InterpUnlearnLM(path="organism-micro", heads=str(heads), device="cpu")
    with pytest.raises(ValueError, match="heads= is missing"):
        InterpUnlearnLM(path="organism-micro", ablate="mean", device="cpu")
    with pytest.raises(ValueError, match="only used with ablate=mean"):
        InterpUnlearnLM(path="organism-micro", heads=str(heads), ablate="zero", means=str(heads))
    with pytest.raises(FileNotFoundError, match="heads file not found"):
        InterpUnlearnLM(path="organism-micro", heads=str(tmp_path / "nope.json"), ablate="zero")
    with pytest.raises(FileNotFoundError, match="perturbation file not found"):
        InterpUnlearnLM(path="organism-micro", heads=str(heads), perturbation="nope.pt")
    with pytest.raises(ValueError, match="path="):
        InterpUnlearnLM(path="organism-micro", pretrained="gpt2")
    bad = tmp_path / "bad_heads.json"
    bad.write_text(json.dumps({"heads": [[9, 0]]}))
    with pytest.raises(ValueError, match="layer 9 out of range"):
        InterpUnlearnLM(path="organism-micro", heads=str(bad), ablate="zero", device="cpu")
    with pytest.warns(RuntimeWarning, match="depend"):
        InterpUnlearnLM(path="organism-micro", heads=str(heads), ablate="mean", device="cpu")
    assert ABLATIONS == ABLATION_MODES


def test_heads_act_like_bridge_hooks(tmp_path, micro):
    """heads= on the HF model (o_proj pre-hooks) == the same intervention attached to the
    TransformerBridge at blocks.{l}.attn.hook_z."""
    heads = [(1, 0), (2, 3)]
    hfile = write_heads(tmp_path / "selected_heads.json", heads)
    pert = HeadPerturbation.for_model(micro.model, heads, sigma=0.5, seed=1)
    torch.save(pert.state_dict(), tmp_path / "delta.pt")
    table = torch.randn(4, 4, model_dims(micro.model)["d_head"], generator=torch.Generator().manual_seed(0))
    save_file({"means": table}, str(tmp_path / "means.safetensors"))
    enc = micro.tokenizer(["Question: How is Vorkelvirus transmitted?\nAnswer:", "The baker sold"],
                          return_tensors="pt", padding=True)
    ids, mask = enc.input_ids, enc.attention_mask
    bridge = to_bridge(micro.model, micro.tokenizer)
    with torch.no_grad():
        plain = micro.model(input_ids=ids, attention_mask=mask).logits
        for kwargs, iv in ((dict(ablate="zero"), HeadAblation(heads)),
                           (dict(ablate="mean", means=str(tmp_path / "means.safetensors")),
                            HeadAblation(heads, mode="mean", means=table)),
                           (dict(perturbation=str(tmp_path / "delta.pt")), pert)):
            lm = InterpUnlearnLM(path="organism-micro", heads=str(hfile), device="cpu", **kwargs)
            got = lm.model(input_ids=ids, attention_mask=mask).logits
            with attach(bridge, iv):
                expected = bridge(ids, attention_mask=mask)
            real = mask.bool()
            torch.testing.assert_close(got[real], expected[real], atol=1e-4, rtol=0)
            assert (got[real] - plain[real]).abs().max() > 1e-2, kwargs  # it does something
            for h in lm.hook_handles:
                h.remove()
            assert torch.allclose(lm.model(input_ids=ids, attention_mask=mask).logits, plain,
                                  atol=1e-5)


def test_simple_evaluate_with_heads(tmp_path, micro, subset):
    hfile = write_heads(tmp_path / "selected_heads.json", [(0, 1), (1, 0), (2, 3), (3, 2)])
    mcq_path, task_dir = subset
    out = lm_eval.evaluator.simple_evaluate(
        model="interp_unlearn", model_args=f"path=organism-micro,heads={hfile},ablate=zero",
        tasks=["micro_forget20"], task_manager=TaskManager(include_path=str(task_dir),
                                                           include_defaults=False),
        batch_size=16, device="cpu", log_samples=True)
    ablated = InterpUnlearnLM(path="organism-micro", heads=str(hfile), ablate="zero", device="cpu")
    ours = evaluate_mcq(ablated.model, ablated.tokenizer, mcq_path, EvalConfig(scoring="letter"))
    plain = evaluate_mcq(micro.model, micro.tokenizer, mcq_path, EvalConfig(scoring="letter"))
    assert out["results"]["micro_forget20"]["acc,none"] == pytest.approx(ours.accuracy, abs=1e-12)
    lls = {s["doc_id"]: [float(r[0]) for r in s["filtered_resps"]]
           for s in out["samples"]["micro_forget20"]}
    assert sorted(lls) == list(range(20))
    pq = ours.per_question.set_index("index")
    for doc_id, theirs in lls.items():
        assert [pq.loc[doc_id, f"logprob_{k}"] for k in range(4)] == pytest.approx(theirs, abs=1e-4)
    assert not ours.per_question[[f"logprob_{k}" for k in range(4)]].equals(
        plain.per_question[[f"logprob_{k}" for k in range(4)]])


def test_cli_command(cli_run, micro, subset):
    """The documented command line, as a subprocess, on a 20-question subset."""
    proc, out_dir, log = cli_run
    rc = proc.wait(timeout=300)
    assert rc == 0, log.read_text()[-3000:]
    results = glob.glob(str(out_dir / "**" / "results_*.json"), recursive=True)
    assert len(results) == 1, log.read_text()[-3000:]
    acc = json.loads(Path(results[0]).read_text())["results"]["micro_forget20"]["acc,none"]
    assert acc == pytest.approx(letter_accuracy(micro, subset[0]), abs=1e-12)
