"""evaluate_mcq against lm-eval itself (HFLM + a task written by write_lm_eval_task),
question by question, fully offline (the task reads a local JSON-lines file)."""

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
import yaml

import lm_eval
import lm_eval.evaluator
from lm_eval.api.instance import Instance
from lm_eval.models.huggingface import HFLM
from lm_eval.tasks import TaskManager

from interp_unlearn.evaluation.scoring import EvalConfig, encode_pair, evaluate_mcq
from interp_unlearn.evaluation.lm_eval_task import task_config, write_lm_eval_task
from interp_unlearn.core.mcq import write_mcq

try:  # tests/ on sys.path (pytest's default rootdir-relative import)
    from test_evaluate import EOT, TOKENIZER_VARIANTS, make_items, make_model, make_tokenizer
except ImportError:  # tests/ as a package
    from tests.unit.evaluation.test_evaluate import EOT, TOKENIZER_VARIANTS, make_items, make_model, make_tokenizer

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]

TASK = "organism_wmdp"
LM_EVAL_DIR = Path(lm_eval.__file__).parent


@pytest.fixture(scope="module", autouse=True)
def offline():
    # the task must run without the hub; a stray download fails at once instead of hanging
    assert os.environ.get("HF_DATASETS_OFFLINE") == "1" and os.environ.get("HF_HUB_OFFLINE") == "1", \
        "run with HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 (tests/conftest.py sets them by default)"


@pytest.fixture(scope="module")
def items():
    return make_items()


@pytest.fixture(scope="module")
def mcq_path(tmp_path_factory, items):
    return write_mcq(tmp_path_factory.mktemp("data") / "questions.jsonl", items)


@pytest.fixture(scope="module")
def letter_task_dir(tmp_path_factory, mcq_path):
    return write_lm_eval_task(mcq_path, tmp_path_factory.mktemp("tasks"), task_name=TASK)


def run_lm_eval(model, tokenizer, task_dir, task_name=TASK, **hflm_kwargs):
    """lm-eval's per-doc log-likelihoods {doc_id: [4 floats]}, per-doc acc, and accuracy."""
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=5, device="cpu", **hflm_kwargs)
    # include_defaults=False: only our task directory is indexed (the built-in index takes
    # ~20 s to build and is not needed; the task itself is the same)
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    out = lm_eval.evaluator.simple_evaluate(model=lm, tasks=[task_name], task_manager=manager,
                                            log_samples=True)
    samples = out["samples"][task_name]
    lls = {s["doc_id"]: [float(r[0]) for r in s["filtered_resps"]] for s in samples}
    acc = {s["doc_id"]: s["acc"] for s in samples}
    return lls, acc, out["results"][task_name]["acc,none"]


def assert_parity(ours, lls, acc, accuracy, items):
    assert sorted(lls) == list(range(len(items)))
    pq = ours.per_question.set_index("index")
    for doc_id, theirs in lls.items():
        mine = [pq.loc[doc_id, f"logprob_{k}"] for k in range(4)]
        np.testing.assert_allclose(mine, theirs, rtol=0, atol=1e-4, err_msg=f"doc {doc_id}")
        assert bool(pq.loc[doc_id, "correct"]) == (acc[doc_id] == 1.0), f"doc {doc_id}"
        assert int(pq.loc[doc_id, "pred"]) == int(np.argmax(theirs)), f"doc {doc_id}"
    assert ours.accuracy == pytest.approx(accuracy, abs=1e-12)


def test_task_yaml_is_wmdp_bio(letter_task_dir, mcq_path):
    template = yaml.safe_load((LM_EVAL_DIR / "tasks/wmdp/_default_template_yaml").read_text())
    bio = yaml.safe_load((LM_EVAL_DIR / "tasks/wmdp/wmdp_bio.yaml").read_text())
    ours = yaml.safe_load((letter_task_dir / f"{TASK}.yaml").read_text())
    for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "output_type", "num_fewshot",
                "metric_list", "test_split"):
        assert ours[key] == template[key], key
    assert ours["description"] == bio["description"]
    assert ours["task"] == TASK and ours["dataset_path"] == "json"
    assert ours["dataset_kwargs"] == {"data_files": {"test": str(Path(mcq_path).resolve())}}


def test_task_rejects_bad_input(tmp_path, mcq_path):
    with pytest.raises(ValueError, match="Jinja"):
        write_lm_eval_task(mcq_path, tmp_path, description="{{ question }}")
    with pytest.raises(ValueError, match="task_name"):
        write_lm_eval_task(mcq_path, tmp_path, task_name="a/b")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q"}\n')
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        write_lm_eval_task(bad, tmp_path)


@pytest.mark.parametrize("variant", TOKENIZER_VARIANTS)
def test_tokenisation_matches_hflm(variant):
    tok = make_tokenizer(variant)
    lm = HFLM(pretrained=make_model(len(tok)), tokenizer=tok, batch_size=1, device="cpu")
    pairs = [("Question: virus?\nAnswer:", " cell gene"), ("Answer: ", "A"), ("Answer:  \n", " B"),
             ("", " cell"), ("", EOT + " cell"), (EOT + "Answer:", " A"), ("virus", "es"),
             ("The following are multiple choice questions", " (with answers)")]
    captured = []
    lm._loglikelihood_tokens = lambda reqs, **kw: captured.extend(reqs) or [(0.0, False)] * len(reqs)
    lm.loglikelihood([Instance("loglikelihood", {}, p, i) for i, p in enumerate(pairs)],
                     disable_tqdm=True)
    assert len(captured) == len(pairs)
    for (ctx, cont), (_, ctx_enc, cont_enc) in zip(pairs, captured):
        assert encode_pair(tok, ctx, cont) == (list(ctx_enc), list(cont_enc)), (ctx, cont)


@pytest.mark.parametrize("variant", TOKENIZER_VARIANTS)
def test_letter_parity(variant, items, mcq_path, letter_task_dir):
    tok = make_tokenizer(variant)
    model = make_model(len(tok))
    lls, acc, accuracy = run_lm_eval(model, tok, letter_task_dir)
    # llama_eos: the appended EOS leaves every letter request identical (lm-eval too)
    expect = (pytest.warns(RuntimeWarning, match="identical") if variant == "llama_eos"
              else contextlib.nullcontext())
    with expect:
        ours = evaluate_mcq(model, tok, mcq_path, EvalConfig(scoring="letter", batch_size=7))
    assert_parity(ours, lls, acc, accuracy, items)


def test_letter_parity_truncated(items, mcq_path, letter_task_dir):
    # max_length far below the prompt length: lm-eval's left truncation must be mirrored
    tok = make_tokenizer("llama")
    model = make_model(len(tok))
    lls, acc, accuracy = run_lm_eval(model, tok, letter_task_dir, max_length=40)
    ours = evaluate_mcq(model, tok, mcq_path, EvalConfig(scoring="letter", max_length=40))
    assert_parity(ours, lls, acc, accuracy, items)
    full = evaluate_mcq(model, tok, mcq_path, EvalConfig(scoring="letter"))
    assert not np.allclose(ours.per_question["logprob_0"], full.per_question["logprob_0"], atol=1e-3)


@pytest.mark.parametrize("variant", ["gpt2", "llama"])
def test_cloze_parity(variant, items, mcq_path, tmp_path):
    # the same task with cloze prompts: multi-token continuations, no description
    config = task_config(mcq_path, task_name="organism_cloze")
    config.pop("description")
    config["doc_to_text"] = "Question: {{question.strip()}}\nAnswer:"
    config["doc_to_choice"] = "{{choices}}"
    (tmp_path / "organism_cloze.yaml").write_text(yaml.safe_dump(config))
    tok = make_tokenizer(variant)
    model = make_model(len(tok))
    lls, acc, accuracy = run_lm_eval(model, tok, tmp_path, task_name="organism_cloze")
    ours = evaluate_mcq(model, tok, items, EvalConfig(scoring="cloze", batch_size=3))
    assert_parity(ours, lls, acc, accuracy, items)

