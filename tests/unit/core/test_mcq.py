import json
import re
import warnings

import pandas as pd
import pytest

from interp_unlearn.core.mcq import MCQ, MCQFormatError, load_mcq, write_mcq
from interp_unlearn.data.datasets import load_mcq_dataset

GOOD = {"question": "Which?", "choices": ["a", "b", "c", "d"], "answer": 2}


def _write(tmp_path, lines, name="questions.jsonl"):
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _good_line(**overrides):
    return json.dumps({**GOOD, **overrides})


def test_roundtrip(tmp_path):
    items = [MCQ("Q1?", ("a", "b", "c", "d"), 0), MCQ("Q2 é?", ("w", "x", "y", "z\nnl"), 3)]
    path = write_mcq(tmp_path / "sub" / "q.jsonl", items)
    assert load_mcq(path) == items
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert records[1] == {"question": "Q2 é?", "choices": ["w", "x", "y", "z\nnl"], "answer": 3}


def test_extra_keys_and_blank_lines(tmp_path):
    path = _write(tmp_path, ["", _good_line(id="x", subject={"k": 1}), "   ", _good_line(answer=0), ""])
    # the two records share question and choices: kept, with a duplicate warning
    with pytest.warns(UserWarning, match=r"1 duplicate.*line 4 repeats line 2"):
        items = load_mcq(path)
    assert items == [MCQ("Which?", ("a", "b", "c", "d"), 2), MCQ("Which?", ("a", "b", "c", "d"), 0)]
    assert isinstance(items[0].choices, tuple)


BAD_RECORDS = [
    ('{"question": "q", "choices": ["a", "b", "c", "d"], "answer": 1', "invalid JSON"),
    ("[1, 2, 3]", "JSON object"),
    ('"just a string"', "JSON object"),
    (json.dumps({"choices": ["a", "b", "c", "d"], "answer": 1}), "'question'"),
    (json.dumps({"question": "q", "answer": 1}), "'choices'"),
    (json.dumps({"question": "q", "choices": ["a", "b", "c", "d"]}), "'answer'"),
    (_good_line(question=3), "'question' must be a string"),
    (_good_line(question=None), "'question' must be a string"),
    (_good_line(choices="abcd"), "'choices' must be a list"),
    (_good_line(choices=["a", "b", "c"]), "exactly 4"),
    (_good_line(choices=["a", "b", "c", "d", "e"]), "exactly 4"),
    (_good_line(choices=["a", "b", 3, "d"]), "'choices'[2] must be a string"),
    (_good_line(answer=True), "'answer' must be an integer"),
    (_good_line(answer=1.0), "'answer' must be an integer"),
    (_good_line(answer="1"), "'answer' must be an integer"),
    (_good_line(answer=4), "0..3"),
    (_good_line(answer=-1), "0..3"),
]


@pytest.mark.parametrize("bad,expected", BAD_RECORDS)
def test_malformed_record_names_file_and_line(tmp_path, bad, expected):
    # two good records and a blank line first: the bad record is on line 4
    path = _write(tmp_path, [_good_line(), "", _good_line(), bad, _good_line()], name="bad_file.jsonl")
    with pytest.raises(MCQFormatError) as err:
        load_mcq(path)
    msg = str(err.value)
    assert "bad_file.jsonl" in msg
    assert re.search(r"bad_file\.jsonl:4\b", msg), msg
    assert expected in msg


def test_error_on_first_line(tmp_path):
    path = _write(tmp_path, [_good_line(answer=7), _good_line()], name="first.jsonl")
    with pytest.raises(MCQFormatError, match=r"first\.jsonl:1: 'answer' must be in 0\.\.3"):
        load_mcq(path)


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_empty_file_raises(tmp_path, content):
    path = tmp_path / "empty.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(MCQFormatError, match=r"empty\.jsonl.*no records"):
        load_mcq(path)


def test_is_a_value_error(tmp_path):
    assert issubclass(MCQFormatError, ValueError)


def test_mcq_constructor_validates():
    with pytest.raises(MCQFormatError, match="0..3"):
        MCQ("q", ("a", "b", "c", "d"), 4)
    with pytest.raises(MCQFormatError, match="exactly 4"):
        MCQ("q", ("a", "b", "c"), 0)
    assert MCQ("q", ["a", "b", "c", "d"], 1).choices == ("a", "b", "c", "d")


def test_write_rejects_non_mcq(tmp_path):
    with pytest.raises(TypeError, match=r"items\[0\]"):
        write_mcq(tmp_path / "x.jsonl", [GOOD])


# ------------------------------------------------- encodings, empty choices, duplicates

OTHER = {"question": "Other?", "choices": ["e", "f", "g", "h"], "answer": 1}
GOOD_ITEMS = [MCQ("Which?", ("a", "b", "c", "d"), 2), MCQ("Other?", ("e", "f", "g", "h"), 1)]


@pytest.mark.parametrize("reader", [load_mcq, load_mcq_dataset])
def test_utf8_bom_jsonl_accepted(tmp_path, reader):
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n" + json.dumps(OTHER) + "\n").encode())
    assert reader(path) == GOOD_ITEMS


@pytest.mark.parametrize("jsonl", [False, True])
def test_utf8_bom_json_accepted(tmp_path, jsonl):
    # a .json file holding a JSON array, or JSON lines (which the json builder also reads)
    path = tmp_path / "bom.json"
    body = (json.dumps(GOOD) + "\n" + json.dumps(OTHER) + "\n") if jsonl else json.dumps([GOOD, OTHER])
    path.write_text("\ufeff" + body, encoding="utf-8")
    assert load_mcq_dataset(path) == GOOD_ITEMS


@pytest.mark.parametrize("name,reader", [("latin.jsonl", load_mcq), ("latin.jsonl", load_mcq_dataset),
                                         ("latin.json", load_mcq_dataset)])
def test_non_utf8_names_file_and_line(tmp_path, name, reader):
    path = tmp_path / name
    line3 = json.dumps({**GOOD, "question": "caf\u00e9?"}, ensure_ascii=False).encode("latin-1")
    assert b"\xe9" in line3
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join([_good_line(), "", ]).encode() + b"\n" + line3 + b"\n")
    with pytest.raises(MCQFormatError) as err:
        reader(path)
    msg = str(err.value)
    assert re.search(re.escape(name) + r":3: not valid UTF-8", msg), msg
    assert "e9" in msg
    assert "position" not in msg  # the old message gave a byte offset into the file


@pytest.mark.parametrize("empty", ["", " ", "\t \n"])
def test_empty_choice_rejected(tmp_path, empty):
    path = _write(tmp_path, [_good_line(question="Q1?"), _good_line(choices=["a", empty, "c", "d"])],
                  name="blank_choice.jsonl")
    with pytest.raises(MCQFormatError, match=r"blank_choice\.jsonl:2: 'choices'\[1\] is empty"):
        load_mcq(path)
    with pytest.raises(MCQFormatError, match=r"blank_choice\.jsonl:2: 'choices'\[1\] is empty"):
        load_mcq_dataset(path)


def test_empty_choice_rejected_in_rows(tmp_path):
    bad = {**GOOD, "choices": ["a", "b", "c", "  "]}
    arr = tmp_path / "arr.json"
    arr.write_text(json.dumps([OTHER, bad]), encoding="utf-8")
    with pytest.raises(MCQFormatError, match=r"arr\.json: row 1 \(0-based\): 'choices'\[3\] is empty"):
        load_mcq_dataset(arr)
    pq = tmp_path / "rows.parquet"
    pd.DataFrame([OTHER, OTHER | {"question": "x"}, bad]).to_parquet(pq)
    with pytest.raises(MCQFormatError, match=r"rows\.parquet: row 2 \(0-based\): 'choices'\[3\] is empty"):
        load_mcq_dataset(pq)


def test_empty_choice_allowed_in_memory():
    # only data read from files is held to the rule; the constructor is unchanged
    assert MCQ("q", ("a", "", "c", "d"), 0).choices[1] == ""


def test_duplicates_warn_with_file_lines_and_count(tmp_path):
    q2 = _good_line(question="Q2?")
    lines = [_good_line(), q2, "", _good_line(answer=0),  # line 4 repeats line 1 (answer differs)
             _good_line(choices=["a", "b", "c", "D"]),     # other choices: not a duplicate
             q2, _good_line()]                             # lines 6 and 7: two more
    path = _write(tmp_path, lines, name="dups.jsonl")
    for reader in (load_mcq, load_mcq_dataset):
        with pytest.warns(UserWarning) as rec:
            items = reader(path)
        assert len(items) == 6  # duplicates are kept
        msgs = [str(w.message) for w in rec if issubclass(w.category, UserWarning)]
        assert len(msgs) == 1, msgs
        assert re.search(r"dups\.jsonl: 3 duplicate question\(s\).*line 4 repeats line 1", msgs[0]), msgs[0]


def test_duplicates_warn_in_rows(tmp_path):
    arr = tmp_path / "dup_rows.json"
    arr.write_text(json.dumps([OTHER, GOOD, OTHER]), encoding="utf-8")
    with pytest.warns(UserWarning, match=r"dup_rows\.json: 1 duplicate.*row 2 \(0-based\) repeats "
                                         r"row 0 \(0-based\)"):
        assert len(load_mcq_dataset(arr)) == 3


def test_no_warning_without_duplicates(tmp_path):
    # same question with other choices, or same choices with another question: distinct
    path = _write(tmp_path, [_good_line(), _good_line(choices=["a", "b", "c", "e"]),
                             _good_line(question="Which? "), json.dumps(OTHER)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_mcq(path)) == 4
        assert len(load_mcq_dataset(path)) == 4
