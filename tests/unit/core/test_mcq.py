import json
import re

import pytest

from interp_unlearn.core.mcq import MCQ, MCQFormatError, load_mcq, write_mcq

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
