"""The fast measurement paths compute what the plain ones compute: shared-prefix scoring equals a plain
padded forward, early-stopping greedy decoding keeps every verdict of full-length generation, and a
forward started at a cached layer equals the full forward."""

import pytest
import torch

from repedit.fit.training import training_only
from repedit.forward.capture import select_positions
from repedit.forward.generation import batch_order, shared_prefix
from repedit.forward.passes import last_token_logits, residual_after, start_at
from repedit.forward.text import answer_ids, continuation_logprobs, prompt_ids, span_logprobs
from repedit.models.handle import pad_rows
from repedit.suites import load_suite
from repedit.suites.answers import mentions_answer
from repedit.verify.recall import greedy


def _rows(handle, n=4):
    facts = load_suite("capitals")[:n]
    prompts, conts, answers = [], [], []
    for form in ("qa", "blank", "adversarial"):
        for f in facts:
            spec = f.forms[form]
            prompts.append(prompt_ids(handle, spec["prompt"], spec["chat"]))
            conts.append(answer_ids(handle, f.answer, spec["chat"]))
            answers.append(f.answers)
    return prompts, conts, answers


def test_shared_prefix_scoring_equals_a_plain_padded_forward(smol):
    prompts, conts, _ = _rows(smol)
    assert any(shared_prefix([prompts[j] + conts[j] for j in idx]) for idx in batch_order(prompts, 8))
    fast = continuation_logprobs(smol, prompts, conts, batch_size=8)
    batch = pad_rows([p + c for p, c in zip(prompts, conts)], smol.pad_id, device=smol.input_device)
    plain = span_logprobs(smol.logits(batch["input_ids"], batch["attention_mask"]), prompts, conts)
    assert torch.allclose(torch.tensor(fast), plain, atol=1e-4), (torch.tensor(fast) - plain).abs().max()


def test_early_stopping_greedy_keeps_every_verdict_of_full_generation(smol):
    prompts, _, answers = _rows(smol)
    fast = greedy(smol, prompts, 16, batch_size=8, answers=answers)
    full = []
    for p in prompts:                                       # one row at a time: HF generate, no padding
        ids = torch.tensor([p], device=smol.input_device)
        g = smol.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16,
                                do_sample=False, pad_token_id=smol.pad_id)
        full.append(smol.tokenizer.decode(g[0, len(p):], skip_special_tokens=True))
    verdicts = [(mentions_answer(a, ans), mentions_answer(b, ans)) for a, b, ans in zip(fast, full, answers)]
    assert all(x == y for x, y in verdicts), verdicts
    assert any(x for x, _ in verdicts) and not all(x for x, _ in verdicts)     # both kinds of row occur
    for text, ref, ans in zip(fast, full, answers):
        assert ref.startswith(text) and (text == ref or mentions_answer(text, ans))   # cut only once answered


def test_a_forward_started_at_a_cached_layer_equals_the_full_forward(smol):
    batch = smol.encode(["The capital of France is", "Tokyo is the capital of"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    full = smol.logits(ids, mask)
    hidden = residual_after(smol, ids, mask, 4).detach()
    with torch.no_grad(), start_at(smol, 5, hidden):
        started = smol.logits(ids, mask)
    assert torch.equal(full, started)
    assert "forward" not in vars(smol.layer_module(0))            # the skipped blocks are whole again
    last = last_token_logits(smol, ids, mask)
    assert torch.allclose(last, select_positions(full, mask, -1), atol=1e-5)


def test_scoring_rows_that_share_part_of_their_answers(smol):
    """Identical prompts whose long continuations share their first tokens: the shared prefix stops before
    every scored position (a TOFU-style paraphrase set)."""
    p = prompt_ids(smol, "Tell me about the author.", True)
    conts = [answer_ids(smol, a, True) for a in ("The author was born in Paris in 1950 and wrote novels.",
                                                 "The author was born in Paris in 1950 and painted.",
                                                 "The author was born in Rome.")]
    fast = continuation_logprobs(smol, [p] * 3, conts, batch_size=3)
    batch = pad_rows([p + c for c in conts], smol.pad_id, device=smol.input_device)
    plain = span_logprobs(smol.logits(batch["input_ids"], batch["attention_mask"]), [p] * 3, conts)
    assert torch.allclose(torch.tensor(fast), plain, atol=1e-4)


def test_batch_plan_bounds_the_cost_and_replans_each_batch_the_same():
    import random

    from repedit.forward.generation import FORWARD_TOKENS, decode_groups, forward_cost

    rng = random.Random(0)
    template = [1, 9, 9, 4, 5, 6, 7]                                # a chat template's shared start
    rows = [template + [rng.randrange(10, 50) for _ in range(rng.randrange(1, 12))] for _ in range(30)]
    rows += [[rng.randrange(10, 50) for _ in range(rng.randrange(2, 20))] for _ in range(30)]
    keep = [rng.randrange(1, 3) for _ in rows]
    plan = batch_order(rows, 8, keep)
    assert sorted(j for idx in plan for j in idx) == list(range(len(rows)))
    assert max(map(len, plan)) == 8 and len(plan) < len(rows)
    for idx in plan:
        batch = [rows[j] for j in idx]                     # never dearer than a forward per row
        assert forward_cost(batch, max(keep[j] for j in idx)) <= sum(len(r) + FORWARD_TOKENS for r in batch)
        assert batch_order([rows[j] for j in idx], 8, [keep[j] for j in idx]) == [list(range(len(idx)))]
    groups = decode_groups(plan, 20)
    assert [idx for g in groups for idx in g] == plan and all(sum(map(len, g)) <= 20 for g in groups)
    assert any(shared_prefix([rows[j] for j in idx], 2) for idx in plan)          # template rows share it


def test_scoring_from_the_greedy_prefill_equals_scoring_and_generating_apart(smol):
    """One forward of prompt + answer scores the answer and, cut back to the prompt, decodes as a prefill of
    the prompt alone would (mixed answer lengths: the right padding is cut with the answers)."""
    from repedit.verify.recall import greedy_scored

    prompts, conts, answers = _rows(smol)
    conts = [c + c[:j % 3] for j, c in enumerate(conts)]          # answers of 1 to 3 extra tokens
    texts, scores = greedy_scored(smol, prompts, conts, 12, batch_size=8, answers=answers)
    assert texts == greedy(smol, prompts, 12, batch_size=8, answers=answers)
    apart = torch.tensor(continuation_logprobs(smol, prompts, conts, batch_size=8))
    assert torch.allclose(torch.tensor(scores), apart, atol=1e-4), (torch.tensor(scores) - apart).abs().max()
    assert greedy_scored(smol, prompts, conts, 0, batch_size=8) == ([""] * len(prompts), scores)


def test_measurement_path_in_bfloat16(model_in):
    """The bf16 model goes through the same plans, caches and merged decode groups: the greedy texts of the
    scored path are the plain greedy texts, and its answer scores match a plain scoring pass to bf16 precision."""
    from repedit.verify.recall import greedy_scored

    h = model_in(torch.bfloat16)
    prompts, conts, answers = _rows(h)
    texts, scores = greedy_scored(h, prompts, conts, 12, batch_size=8, answers=answers)
    assert texts == greedy(h, prompts, 12, batch_size=8, answers=answers)
    plain = torch.tensor(continuation_logprobs(h, prompts, conts, batch_size=8))
    assert torch.isfinite(plain).all() and torch.allclose(torch.tensor(scores), plain, atol=0.1), \
        (torch.tensor(scores) - plain).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_real_token_logits_equal_the_full_forward_at_the_real_positions(model_in, dtype):
    """Only the real (mask 1) positions are unembedded, padding never; gradients reach the residual stream."""
    from repedit.forward.passes import real_token_logits

    handle = model_in(dtype)
    batch = handle.encode(["The capital of France is Paris, a city on the Seine.", "Tokyo is"])
    ids, mask = batch["input_ids"], batch["attention_mask"]
    assert int(mask.sum()) < mask.numel()                                  # the second row is padded
    unembedding = handle.model.get_output_embeddings()
    inputs = []
    grab = unembedding.register_forward_hook(lambda m, a, o: inputs.append(a[0].detach()))
    try:
        full = handle.logits(ids, mask)
    finally:
        grab.remove()
    got = real_token_logits(handle, ids, mask)
    real = mask.bool().to(full.device)
    assert got.shape == (int(mask.sum()), full.shape[-1])
    # The same dot products, but a matrix of other rows: the CPU may pick other kernels (another order of
    # the float32 accumulation), so each is a correct rounding of the exact product, not bit-equal to the other.
    hidden, weight = inputs[0][real].double(), unembedding.weight.detach().double()
    exact = hidden @ weight.T
    bound = (hidden.shape[-1] * 2.0 ** -24 * (hidden.abs() @ weight.abs().T)            # float32 accumulation
             + torch.finfo(dtype).eps / 2 * exact.abs() + torch.finfo(dtype).tiny)       # rounding to the dtype
    for logits in (got, full[real]):
        assert ((logits.double() - exact).abs() <= bound).all()
    seen = []
    hook = handle.model.get_output_embeddings().register_forward_hook(lambda m, a, o: seen.append(a[0].shape))
    try:
        with training_only(handle, ()), torch.enable_grad():      # nothing left on the shared handle's weights
            hidden = residual_after(handle, ids, mask, 2).detach().requires_grad_(True)
            with start_at(handle, 3, hidden):
                real_token_logits(handle, ids, mask).float().logsumexp(-1).sum().backward()
    finally:
        hook.remove()
    assert seen == [torch.Size([1, int(mask.sum()), handle.model.config.hidden_size])]
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0
