"""score_requests (each distinct context once) against scoring every row on its own, and
tokenize_requests (batched encoding) against encode_pair request by request."""

import pytest
import torch

from interp_unlearn.core.logprobs import (continuation_logprobs, encode_pair, forward_logits,
                                          make_batches, tokenize_requests)
from interp_unlearn.core import request_scoring
from interp_unlearn.core.request_scoring import score_requests, supports_prefix_cache
from interp_unlearn.evaluation.scoring import build_requests

try:
    from test_evaluate import TOKENIZER_VARIANTS, make_items, make_model, make_tokenizer
except ImportError:
    from tests.unit.evaluation.test_evaluate import (TOKENIZER_VARIANTS, make_items, make_model,
                                                     make_tokenizer)

pytestmark = pytest.mark.usefixtures("one_thread")


def row_by_row(model, requests):
    """The reference: every request its own row, one forward per row."""
    out = torch.empty(len(requests))
    with torch.no_grad():
        for batch in make_batches(requests, 1, 0):
            out[batch.request_idx] = continuation_logprobs(forward_logits(model, batch), batch)
    return out


class CountingModel(torch.nn.Module):
    """A plain callable (no cache) that counts the token positions it is run on."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.positions = inner, 0

    def forward(self, input_ids, attention_mask=None):
        self.positions += input_ids.numel()
        return self.inner(input_ids=input_ids, attention_mask=attention_mask).logits


@pytest.fixture(scope="module")
def setup():
    tok = make_tokenizer("llama")
    return tok, make_model(len(tok)), make_items(24)


@pytest.mark.parametrize("scoring", ["letter", "cloze"])
@pytest.mark.parametrize("max_length", [256, 20])
def test_same_scores_as_row_by_row(setup, scoring, max_length):
    tok, model, items = setup
    requests = tokenize_requests(tok, build_requests(items, scoring), max_length)
    reference = row_by_row(model, requests)
    for share in (True, False):
        for rows in (1, 5, 96):
            got = score_requests(model, requests, rows, 0, share_prefix=share)
            torch.testing.assert_close(got, reference, rtol=0, atol=5e-5)
    plain = CountingModel(model)
    torch.testing.assert_close(score_requests(plain, requests, 7, 0), reference, rtol=0, atol=5e-5)


def test_each_context_runs_once(setup, monkeypatch):
    tok, model, items = setup
    letter = tokenize_requests(tok, build_requests(items, "letter"), 256)
    plain = CountingModel(model)
    score_requests(plain, letter, 16, 0)
    # one row per question (the four letter requests share their input), unpadded lengths
    # sorted longest first -> at most the sum of the questions' longest rows
    naive = sum(len(r.input_ids) for r in letter)
    assert plain.positions <= naive / 4 * 1.2
    # with the cache, shared leading tokens (the description) run once per group
    seen = []
    handle = model.model.embed_tokens.register_forward_hook(
        lambda m, i, o: seen.append(i[0].numel()))
    try:
        score_requests(model, letter, 64, 0)
    finally:
        handle.remove()
    assert sum(seen) < plain.positions * 0.85, (sum(seen), plain.positions)


def test_cloze_prefix_is_shared(setup):
    tok, model, items = setup
    cloze = tokenize_requests(tok, build_requests(items, "cloze"), 256)
    seen = []
    handle = model.model.embed_tokens.register_forward_hook(
        lambda m, i, o: seen.append(i[0].numel()))
    try:
        score_requests(model, cloze, 96, 0)
    finally:
        handle.remove()
    # contexts once, then only the continuations' tokens: far below four full rows each
    assert sum(seen) < 0.6 * sum(len(r.input_ids) for r in cloze)


def test_share_prefix_needs_a_hf_model(setup):
    tok, model, items = setup
    requests = tokenize_requests(tok, build_requests(items[:2], "cloze"), 256)
    assert supports_prefix_cache(model) and not supports_prefix_cache(CountingModel(model))
    with pytest.raises(ValueError, match="share_prefix=True needs a Hugging Face"):
        score_requests(CountingModel(model), requests, 4, 0, share_prefix=True)
    with pytest.raises(ValueError, match="batch_size"):
        score_requests(model, requests, 0, 0)


def test_peft_model_shares_prefix(setup):
    peft = pytest.importorskip("peft")
    tok, model, items = setup
    lora = peft.get_peft_model(make_model(len(tok)), peft.LoraConfig(
        r=2, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    assert supports_prefix_cache(lora)
    requests = tokenize_requests(tok, build_requests(items[:6], "cloze"), 256)
    torch.testing.assert_close(score_requests(lora, requests, 8, 0),
                               score_requests(lora, requests, 8, 0, share_prefix=False),
                               rtol=0, atol=5e-5)


def test_groups_share_leading_tokens(monkeypatch):
    monkeypatch.setattr(request_scoring, "CALL_COST_TOKENS", 0)  # sharing 6 tokens pays
    prefixes = [request_scoring._Prefix(t) for t in
                [(1, 2, 3, 4, 5, 6, 7, 8), (1, 2, 3, 4, 5, 6, 9, 9), (1, 2, 3, 4, 5, 6, 7, 1),
                 (5, 5), (5, 6)]]
    groups = request_scoring._shared_groups(prefixes, [1] * 5, rows=8)
    assert sorted(p for g, _ in groups for p in g) == [0, 1, 2, 3, 4]
    for group, run in groups:
        assert all(len(prefixes[p].tokens) > run for p in group)  # a token of its own
        assert len({prefixes[p].tokens[:run] for p in group}) == 1
    assert max(run for _, run in groups) >= 6
    # a group never holds more prefixes than rows
    assert all(len(g) <= 2 for g, _ in request_scoring._shared_groups(prefixes, [1] * 5, 2))
    # when a forward call costs more than the tokens it saves, nothing is split off
    monkeypatch.setattr(request_scoring, "CALL_COST_TOKENS", 100)
    assert [run for _, run in request_scoring._shared_groups(prefixes, [1] * 5, 8)] == [0]


@pytest.mark.parametrize("variant", TOKENIZER_VARIANTS)
def test_batched_tokenization_is_encode_pair(variant):
    tok = make_tokenizer(variant)
    eot = tok.decode(tok.bos_token_id)
    pairs = [("Question: virus?\nAnswer:", " cell gene"), ("Answer: ", "A"), ("Answer:  \n", " B"),
             ("", " cell"), (eot + "Answer:", " A"), ("virus", "es"), ("virus", "es"),
             ("Question: virus?\nAnswer:", " toxin")]
    got = tokenize_requests(tok, pairs, 256)
    for (ctx, cont), req in zip(pairs, got):
        c, k = encode_pair(tok, ctx, cont)
        assert req.input_ids == tuple((c + k)[:-1]) and req.continuation == tuple(k), (ctx, cont)
    for add_bos in (True, False):
        got = tokenize_requests(tok, pairs, 256, add_bos_token=add_bos)
        for (ctx, cont), req in zip(pairs, got):
            c, k = encode_pair(tok, ctx, cont, add_bos)
            assert req.input_ids == tuple((c + k)[:-1]), (ctx, cont, add_bos)
