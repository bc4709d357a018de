"""Write an lm-eval task that runs ``wmdp_bio``'s prompt over a local MCQ JSONL file.

The task is a copy of lm-eval's ``wmdp_bio`` (``lm_eval/tasks/wmdp/_default_template_yaml``
+ ``wmdp_bio.yaml``) whose data come from a local JSON-lines file through the ``json``
dataset builder, so it runs offline (``HF_DATASETS_OFFLINE=1``)::

    path = write_lm_eval_task("questions.jsonl", "tasks/")
    lm_eval --model hf --model_args pretrained=... --tasks organism_wmdp --include_path tasks/
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from interp_unlearn.evaluation.scoring import LETTERS, WMDP_BIO_DESCRIPTION
from interp_unlearn.core.mcq import load_mcq

__all__ = ["write_lm_eval_task", "task_config"]

# lm-eval's wmdp template, verbatim.
DOC_TO_TEXT = ("{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\n"
               "C. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:")

_TASK_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*$")


class _Dumper(yaml.SafeDumper):
    """Writes strings holding line breaks double-quoted with ``\\n`` escapes, one line."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = '"' if ("\n" in value or "\r" in value) else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def task_config(mcq_path: str | Path, task_name: str = "organism_wmdp",
                description: str = WMDP_BIO_DESCRIPTION) -> dict:
    """The task's YAML contents as a dict (see :func:`write_lm_eval_task`)."""
    if not isinstance(task_name, str) or not _TASK_NAME.match(task_name):
        raise ValueError(f"task_name must be letters, digits, '_', '.' or '-', got {task_name!r}")
    if not isinstance(description, str):
        raise ValueError(f"description must be a string, got {type(description).__name__}")
    # lm-eval renders the description as a Jinja template against each document.
    if any(tag in description for tag in ("{{", "{%", "{#")):
        raise ValueError("description contains Jinja syntax ('{{', '{%' or '{#'), which lm-eval "
                         "would render as a template; the prompt would then differ from "
                         "evaluate_mcq's")
    data_file = Path(mcq_path).resolve()
    if not data_file.is_file():
        raise FileNotFoundError(f"MCQ file not found: {data_file}")
    load_mcq(data_file)  # validate every record now, not halfway through an lm-eval run
    return {
        "task": task_name,
        "dataset_path": "json",
        "dataset_name": None,
        "dataset_kwargs": {"data_files": {"test": str(data_file)}},
        "test_split": "test",
        "training_split": None,
        "validation_split": None,
        "num_fewshot": 0,
        "output_type": "multiple_choice",
        "description": description,
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": list(LETTERS),
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1},
    }


def write_lm_eval_task(mcq_path: str | Path, out_dir: str | Path,
                       task_name: str = "organism_wmdp",
                       description: str = WMDP_BIO_DESCRIPTION) -> Path:
    """Write ``<out_dir>/<task_name>.yaml``: lm-eval's ``wmdp_bio`` (zero-shot,
    ``multiple_choice``, metric ``acc``) reading ``mcq_path`` (stored as an absolute path)
    as its test split. Returns ``out_dir``, the directory to pass as lm-eval's
    ``--include_path`` (or ``TaskManager(include_path=...)``)."""
    config = task_config(mcq_path, task_name, description)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{task_name}.yaml"
    path.write_text(yaml.dump(config, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                              width=1 << 16), encoding="utf-8")
    return out_dir
