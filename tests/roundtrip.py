"""A compact export round trip for push/revert tests: export the pushed stack, reload it in plain
transformers, and check that it reproduces the edited logits and reverts to the original tensors."""

import torch

from repedit.export.directory import export, load_edits, revert


def assert_export_roundtrip(h, stack, out, texts, original):
    """`stack` is pushed on `h` (the edited state); `original` holds the pre-edit tensors by name.
    Leaves `h` as it found it; returns the edits read back from the export."""
    from transformers import AutoModelForCausalLM

    batch = h.encode(list(texts))
    edited = h.logits(batch["input_ids"], batch["attention_mask"])
    res = export(h, out, stack)
    assert res.max_logit_diff <= 1e-5, res.max_logit_diff
    plain = AutoModelForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    with torch.no_grad():
        got = plain(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, edited, atol=1e-5, rtol=0)
    edits = load_edits(out)
    assert [e.method for e in edits] == [e.method for e in stack.edits]
    revert(out, plain)
    params = dict(plain.named_parameters())
    touched = {d.param for e in edits for d in e.deltas}
    assert touched and all(torch.equal(params[p], original[p]) for p in touched)
    return edits
