"""Tables 1-4 of the ALMPU paper (and two companions) from a reproduce run's results store.

Every table is computed from :func:`~.store.load_results` alone, so ``figures --run``
rebuilds it without recomputing anything. A cell of a table is the **mean over seeds**
of the stored values; with more than one seed it also has the 95 % Student-t interval
(:func:`interp_unlearn.core.stats.t_interval`), printed as ``mean ± half-width``. That is the
one "±" convention of every table, and each states it in a line under it
(:data:`interp_unlearn.core.stats.PM_NOTE`); a bootstrap interval is printed ``mean [low, high]``
and its row says ``bootstrap``.

``table1_finetune_forget``   UE (%) after fine-tuning on N forget-corpus documents,
                             methods x N, plus the original and the never-learned twin
                             attacked alike (the floor);
``table2_finetune_unrelated`` the same with N unrelated (``general``) documents;
``table3_head_selection``    ALMPU's UE by head choice (``K``: heads perturbed) x N;
``table4_location``          ALMPU's UE by perturbed layers x N;
``table1_recovery``          the fraction of the original-minus-twin gap the attack
                             recovers (0: the twin's level, 1: the original's);
``table1_recovery_restored`` the same on the *restored* questions only: those whose
                             entity had no document in the attack sample (under the
                             same-pool protocol the others are partly taught;
                             :mod:`interp_unlearn.attacks.taught`); the line under it
                             gives the mean number of taught questions per N;
``table1_paired``            ALMPU − RMU (and GA-MP − GA) paired by seed, per N: ΔUE and
                             Δforget accuracy with the paired t-interval and the
                             seeds x questions bootstrap (:mod:`.paired`);
``unlearning``               forget/retain accuracy before and after unlearning, steps and
                             seconds per unlearned model;
``timings``                  seconds per cell kind (from the store's done markers).

Each is written as ``.csv`` (long form, full precision: ``row, column, mean, ci95_low,
ci95_high, n_seeds``), ``.md`` and ``.tex`` (booktabs). The best method of a column is
bold only when its interval overlaps no other method's (higher is better; never with a
single seed). Table 2 says under it that N beyond the general corpus repeats documents
(N / corpus size effective epochs).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from interp_unlearn.core.stats import PAIRED_NOTE, PM_NOTE, t_interval
from interp_unlearn.pipeline.reproduce.config import CONFIG_FILE, ReproduceConfig
from interp_unlearn.pipeline.reproduce.paired import paired_table
from interp_unlearn.pipeline.reproduce.store import DONE_METRIC, load_results

__all__ = ["TABLES", "build_tables", "to_latex", "to_markdown", "write_tables"]

TABLES = ("table1_finetune_forget", "table2_finetune_unrelated", "table3_head_selection",
          "table4_location", "table1_recovery", "table1_recovery_restored", "table1_paired",
          "unlearning", "depth", "timings")
REFERENCE_ROWS = ("original", "never-learned")
CAPTIONS = {
    "table1_finetune_forget": "UE (%, higher = more forgotten) after fine-tuning on N "
                              "forget-corpus documents",
    "table2_finetune_unrelated": "UE (%) after fine-tuning on N unrelated documents",
    "table3_head_selection": "ALMPU UE (%) by attention-head selection (heads of the RMU "
                             "layer; K = heads perturbed)",
    "table4_location": "ALMPU UE (%) by perturbation location (K = heads perturbed)",
    "depth": "Unlearning depth, UDS against the never-learned twin (0 = the knowledge intact "
             "inside the model, 1 = as absent as in the twin)",
    "table1_recovery": "Recovery after fine-tuning on N forget documents (0 = twin, "
                       "1 = original)",
    "table1_recovery_restored": "Recovery on restored questions only (entities with no "
                                "document in the attack sample)",
    "table1_paired": "Paired differences by seed after fine-tuning on N forget documents "
                     "(ΔUE in points, Δforget accuracy as a fraction)",
    "unlearning": "Accuracy before/after unlearning (fraction) and cost",
    "timings": "Run time per cell kind (wall seconds; CPU s: process CPU time)",
}


def _cell(values: Sequence[float]) -> dict[str, float]:
    mean, lo, hi = t_interval(list(values))
    n = sum(1 for v in values if v is not None and not math.isnan(float(v)))
    return {"mean": mean, "ci95_low": lo, "ci95_high": hi, "n_seeds": n}


def _summarize(df: pd.DataFrame, row: str, col: str, rows: Sequence[str],
               cols: Sequence) -> pd.DataFrame:
    """Long table ``row, column, mean, ci95_low, ci95_high, n_seeds`` in the given order."""
    out = []
    for r in rows:
        for c in cols:
            g = df[(df[row] == r) & (df[col] == c)]
            if g.empty:
                continue
            out.append({"row": r, "column": c, **_cell(g["value"].astype(float).tolist())})
    return pd.DataFrame(out, columns=["row", "column", "mean", "ci95_low", "ci95_high",
                                      "n_seeds"])


def _attack_table(df: pd.DataFrame, table: str, data: str, rows: Sequence[str],
                  sizes: Sequence[int], metric: str = "ue", refs: bool = True) -> pd.DataFrame:
    att = df[(df["kind"] == "attack") & (df["table"] == table) & (df["metric"] == metric)
             & (df["domain"] == "forget")]
    parts = [_summarize(att, "variant", "N", rows, sizes)]
    if refs and "role" in df.columns:
        ref = df[(df["kind"] == "reference") & (df["data"] == data) & (df["metric"] == metric)
                 & (df["domain"] == "forget") & df["N"].isin(list(sizes))]
        parts.append(_summarize(ref, "variant", "N", REFERENCE_ROWS, sizes))
    out = pd.concat([p for p in parts if not p.empty], ignore_index=True) if any(
        not p.empty for p in parts) else parts[0]
    if not out.empty:
        out["column"] = out["column"].astype(int)
    return out


def _heads_column(df: pd.DataFrame, table_rows: dict[str, str]) -> dict[str, str]:
    """``{row label: "K"}`` from the unlearn rows of each row's model (several values:
    ``"2/3"``)."""
    un = df[(df["kind"] == "unlearn") & (df["metric"] == "steps")]
    out = {}
    for label, model_id in table_rows.items():
        ks = sorted({int(k) for k in un[un["model_id"] == model_id]["n_heads"].dropna()})
        if ks:
            out[label] = "/".join(map(str, ks))
    return out


def build_tables(run_dir: str | Path) -> dict[str, pd.DataFrame]:
    """Every table of :data:`TABLES` that the run has data for, as long DataFrames
    (Tables 3/4 also have ``K``, the number of heads each row perturbs)."""
    from interp_unlearn.pipeline.reproduce.plan import TABLE3_MODEL, TABLE4_MODEL, build_plan
    run_dir = Path(run_dir)
    cfg = ReproduceConfig.load_json(run_dir / CONFIG_FILE)
    df = load_results(run_dir, markers=True)
    if df.empty:
        return {}
    marks = df[df["metric"] == DONE_METRIC]
    df = df[df["metric"] != DONE_METRIC]
    out: dict[str, pd.DataFrame] = {}
    out["table1_finetune_forget"] = _attack_table(df, "table1", "forget", cfg.methods,
                                                  cfg.table1_sizes)
    out["table2_finetune_unrelated"] = _attack_table(df, "table2", "unrelated",
                                                     cfg.table2_methods, cfg.table2_sizes)
    for name, table, variants, models in (
            ("table3_head_selection", "table3", cfg.head_variants, TABLE3_MODEL),
            ("table4_location", "table4", cfg.location_variants, TABLE4_MODEL)):
        t = _attack_table(df, table, "forget", variants, cfg.ablation_sizes, refs=False)
        if not t.empty:
            ks = _heads_column(df, {v: models[v] for v in variants})
            t.insert(1, "K", t["row"].map(ks).fillna(""))
        out[name] = t
    out["table1_recovery"] = _attack_table(df, "table1", "forget", cfg.methods,
                                           cfg.table1_sizes, metric="recovery", refs=False)
    rr = _attack_table(df, "table1", "forget", cfg.methods, cfg.table1_sizes,
                       metric="recovery_restored", refs=False)
    if not rr.empty:
        rr.attrs["note"] = _taught_note(df, cfg.table1_sizes)
    out["table1_recovery_restored"] = rr
    why = _unavailable(df)
    for name in ("table1_recovery", "table1_recovery_restored"):
        if why and not out[name].empty:
            out[name].attrs["note"] = (f"Recovery unavailable: {why} (pass its twin to "
                                       "measure it). " + out[name].attrs.get("note", "")).strip()
    out["table1_paired"] = paired_table(df, cfg.methods, cfg.table1_sizes)
    if not out["table2_finetune_unrelated"].empty:
        out["table2_finetune_unrelated"].attrs["note"] = _repeat_note(df, cfg)
    un = df[df["kind"] == "unlearn"].copy()
    if not un.empty:
        un["column"] = [f"{d} {s}" if m == "accuracy" else m for d, s, m in
                        zip(un.get("domain", ""), un.get("stage", ""), un["metric"])]
        # plan order, not store order: with several workers cells finish in any order
        planned = [c.model for c in build_plan(cfg) if c.kind == "unlearn"]
        models = list(dict.fromkeys([m for m in planned if m in set(un["model_id"])]
                                    + list(un["model_id"])))
        cols = ["forget before", "forget after", "retain before", "retain after", "steps",
                "seconds"]
        out["unlearning"] = _summarize(un, "model_id", "column", models, cols)
    from interp_unlearn.pipeline.reproduce.depth_cells import depth_table
    out["depth"] = depth_table(df, cfg.methods, _summarize)
    if not marks.empty:
        rows = []
        cpu = marks["cpu_seconds"] if "cpu_seconds" in marks.columns else None
        kinds = ("localize", "unlearn", "lens", "reference", "attack")
        order = {k: i for i, k in enumerate(kinds)}
        groups = sorted(marks.groupby("kind", sort=False), key=lambda kg: order.get(kg[0], 99))
        for kind, g in groups:
            v = g["value"].astype(float)
            rows += [{"row": kind, "column": "cells", "mean": float(len(v))},
                     {"row": kind, "column": "total s", "mean": float(v.sum())},
                     {"row": kind, "column": "mean s", "mean": float(v.mean())},
                     {"row": kind, "column": "max s", "mean": float(v.max())}]
            if cpu is not None:
                rows.append({"row": kind, "column": "total CPU s",
                             "mean": float(cpu[g.index].astype(float).sum())})
        rows.append({"row": "all", "column": "total s", "mean": float(marks["value"].sum())})
        if cpu is not None:
            rows.append({"row": "all", "column": "total CPU s",
                         "mean": float(cpu.astype(float).sum())})
        t = pd.DataFrame(rows)
        t["n_seeds"] = 1
        out["timings"] = t
    return {k: v for k, v in out.items() if not v.empty}


def _unavailable(df: pd.DataFrame) -> str:
    """Why recovery could not be measured (a real model without a never-learned twin), from
    the attack rows' ``info``; empty when it was."""
    if "info" not in df.columns:
        return ""
    rec = df[(df["kind"] == "attack") & df["metric"].isin(["recovery", "recovery_restored"])]
    for info in rec["info"].dropna():
        try:
            why = json.loads(info).get("unavailable") if str(info).startswith("{") else None
        except ValueError:
            why = None
        if why:
            return str(why)
    return ""


def _taught_note(df: pd.DataFrame, sizes: Sequence[int]) -> str:
    """The mean number of taught questions per N (Table 1's attacks)."""
    att = df[(df["kind"] == "attack") & (df["table"] == "table1") & (df["metric"] == "n_taught")]
    parts = []
    for n in sizes:
        v = att[att["N"].astype(int) == int(n)]["value"].astype(float)
        if len(v):
            parts.append(f"N = {n}: {v.mean():.1f}")
    return ("Taught questions (entity in the sample; excluded here), mean over methods and "
            "seeds: " + ", ".join(parts) + ".") if parts else ""


def _repeat_note(df: pd.DataFrame, cfg: ReproduceConfig) -> str:
    """Table 2: N beyond the unrelated corpus repeats documents."""
    docs = None
    att = df[(df["kind"] == "attack") & (df["table"] == "table2")]
    if "corpus_docs" in att.columns and att["corpus_docs"].notna().any():
        docs = int(att["corpus_docs"].dropna().max())
    big = [n for n in cfg.table2_sizes if docs is not None and n > docs]
    if docs is None:
        return ("N beyond the size of the unrelated corpus repeats documents "
                "(N / corpus size effective epochs).")
    if not big:
        return f"Every N fits in the {docs} unrelated documents (no repetition)."
    return (f"The unrelated corpus has {docs} documents: N > {docs} repeats them (N/{docs} "
            "effective epochs: " + ", ".join(f"N = {n}: {n / docs:.2f}" for n in big) + ").")


def note(t: pd.DataFrame, name: str) -> str:
    """The line under a table: its ± convention, then what else it must say."""
    if name == "timings":
        base = "Single measurements (no interval)."
    elif name == "table1_paired":
        base = PAIRED_NOTE
    else:
        base = PM_NOTE
    extra = t.attrs.get("note", "")
    return f"{base} {extra}".strip()


def _num(v: float, digits: int) -> str:
    """``v`` to ``digits`` decimals, without a sign on a rounded zero (``-0.0``)."""
    s = f"{v:.{digits}f}"
    return s[1:] if s.startswith("-") and float(s) == 0 else s


def _wide(t: pd.DataFrame, name: str) -> tuple[list[str], list[list[str]], list[str]]:
    """Header, formatted body and row labels of a long table (``mean ± t half-width``;
    bootstrap rows ``mean [low, high]``)."""
    cols = list(dict.fromkeys(t["column"]))
    rows = list(dict.fromkeys(t["row"]))
    body = []
    for r in rows:
        line = []
        for c in cols:
            digits = _digits(name, c, r)
            g = t[(t["row"] == r) & (t["column"] == c)]
            if g.empty or pd.isna(g["mean"].iloc[0]):
                line.append("–")
                continue
            x = g.iloc[0]
            s = _num(x["mean"], digits)
            has_ci = not pd.isna(x.get("ci95_high")) and not pd.isna(x.get("ci95_low"))
            if x.get("interval") == "bootstrap" and has_ci:
                s += f" [{_num(x['ci95_low'], digits)}, {_num(x['ci95_high'], digits)}]"
            elif x.get("n_seeds", 1) and x.get("n_seeds", 1) > 1 and has_ci:
                s += f" ± {_num((x['ci95_high'] - x['ci95_low']) / 2, digits)}"
            line.append(s)
        body.append(line)
    return [str(c) for c in cols], body, [str(r) for r in rows]


def _best(t: pd.DataFrame, header: list[str], rows: list[str]) -> set[tuple[int, int]]:
    """(row, col) of the highest mean per column among non-reference rows, only when its
    95 % interval overlaps no other row's (so never with one seed, nor on ties)."""
    best = set()
    for j, c in enumerate(header):
        cand = t[(t["column"].astype(str) == c) & ~t["row"].isin(REFERENCE_ROWS)].dropna(subset=["mean"])
        if len(cand) < 2 or cand[["ci95_low", "ci95_high"]].isna().any().any():
            continue
        top = cand.loc[cand["mean"].idxmax()]
        others = cand.drop(index=top.name)
        if (others["mean"] == top["mean"]).any():  # a tie has no best
            continue
        if (others["ci95_high"] >= top["ci95_low"]).any():  # intervals overlap
            continue
        best.add((rows.index(str(top["row"])), j))
    return best


def _extra(t: pd.DataFrame) -> tuple[str | None, dict[str, str]]:
    """The ``K`` column (heads per row) of Tables 3/4, if any."""
    if "K" not in t.columns:
        return None, {}
    return "K", {str(r): str(k) for r, k in zip(t["row"], t["K"])}


def _digits(name: str, column: object, row: object = "") -> int:
    """Decimals shown: UE 1, accuracy / recovery 3, counts 0, seconds 1."""
    if column in ("steps", "cells"):
        return 0
    if name == "timings" or column == "seconds":
        return 1
    if name == "table1_paired":
        return 3 if "acc" in str(row) else 1
    return 3 if name in ("table1_recovery", "table1_recovery_restored", "unlearning",
                         "depth") else 1


def to_markdown(t: pd.DataFrame, name: str) -> str:
    """A Markdown table (``N = n`` columns for attack tables; best per column bold)."""
    header, body, rows = _wide(t, name)
    bold = _best(t, header, rows) if name.startswith(("table1_f", "table2", "table3", "table4")) else set()
    extra_name, extra = _extra(t)
    attack = name.startswith("table")
    head = ["", *([extra_name] if extra_name else []),
            *[f"N = {h}" if attack else h for h in header]]
    lines = [f"**{CAPTIONS.get(name, name)}**", "", "| " + " | ".join(head) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    for i, (r, line) in enumerate(zip(rows, body)):
        cells = [f"**{v}**" if (i, j) in bold else v for j, v in enumerate(line)]
        pre = [extra.get(r, "")] if extra_name else []
        lines.append("| " + " | ".join([r, *pre, *cells]) + " |")
    lines += ["", f"*{note(t, name)}*"]
    return "\n".join(lines) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("%", r"\%"), ("_", r"\_"), ("&", r"\&"),
                 ("#", r"\#"), ("±", r"$\pm$"), ("–", "--"), ("−", "$-$"), ("Δ", r"$\Delta$"),
                 ("×", r"$\times$")):
        s = s.replace(a, b)
    return s


def to_latex(t: pd.DataFrame, name: str) -> str:
    """A booktabs ``table`` environment (best per column in bold)."""
    header, body, rows = _wide(t, name)
    bold = _best(t, header, rows) if name.startswith(("table1_f", "table2", "table3", "table4")) else set()
    extra_name, extra = _extra(t)
    attack = name.startswith("table")
    head = ["", *([extra_name] if extra_name else []),
            *[(f"N={h}" if attack else h) for h in header]]
    spec = "l" + "r" * (len(head) - 1)
    out = [r"\begin{table}[t]", r"\centering", r"\small", rf"\begin{{tabular}}{{{spec}}}",
           r"\toprule", " & ".join(_tex(h) for h in head) + r" \\", r"\midrule"]
    for i, (r, line) in enumerate(zip(rows, body)):
        if r in REFERENCE_ROWS and i and rows[i - 1] not in REFERENCE_ROWS:
            out.append(r"\midrule")
        cells = [rf"\textbf{{{_tex(v)}}}" if (i, j) in bold else _tex(v) for j, v in enumerate(line)]
        pre = [_tex(extra.get(r, ""))] if extra_name else []
        out.append(" & ".join([_tex(r), *pre, *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}", "",
            rf"\par\smallskip{{\footnotesize {_tex(note(t, name))}}}",
            rf"\caption{{{_tex(CAPTIONS.get(name, name))}}}",
            rf"\label{{tab:{name.replace('_', '-')}}}", r"\end{table}"]
    return "\n".join(out) + "\n"


def write_tables(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write every table as ``.csv``, ``.md`` and ``.tex`` into ``out_dir`` (default
    ``RUN/tables``) plus ``tables.md`` with all of them; return the paths."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "tables"
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    md_all = []
    for name, t in build_tables(run_dir).items():
        t.to_csv(out / f"{name}.csv", index=False)
        md = to_markdown(t, name)
        (out / f"{name}.md").write_text(md)
        (out / f"{name}.tex").write_text(to_latex(t, name))
        md_all.append(md)
        paths += [out / f"{name}.{ext}" for ext in ("csv", "md", "tex")]
    (out / "tables.md").write_text("\n".join(md_all))
    paths.append(out / "tables.md")
    return paths
