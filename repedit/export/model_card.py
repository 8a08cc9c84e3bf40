"""The Hugging Face model card (README.md) of a certified export, written from its verification.json record.

YAML front matter (`base_model`: the hub id, `license`: the base model's when repedit knows it, `tags`,
`library_name: transformers`) built with `huggingface_hub.ModelCardData` and parsed back with `ModelCard`
(offline) before it is written; then what was edited and why it is reversible, the results, how to verify,
reproduce and revert.
"""

from __future__ import annotations

import json

from repedit.export.directory import HUB_ID, ExportError

SKIP = {"edit", "method", "family", "seconds", "rank", "time_ratio_to_baseline", "matched_baseline",
        "matched_baseline_seconds", "matched_baseline_neighbours", "peak_depth"}


def base_license(base: dict) -> str | None:
    """The license id of a base model repedit knows (repedit.models.registry), else None."""
    from repedit.models.registry import PACKAGED

    entry = PACKAGED.get(base.get("repedit_name") or "")
    entry = entry or next((e for e in PACKAGED.values() if e.hub_id == base.get("id")), None)
    return entry.license if entry else None


def front_matter(record: dict) -> tuple[str, dict]:
    """(the YAML text, the parsed values) of the card's metadata, validated by huggingface_hub."""
    from huggingface_hub import ModelCard, ModelCardData

    base = record.get("base_model") or {}
    hub = base.get("id") if HUB_ID.fullmatch(str(base.get("id"))) else None
    tags = ["repedit", "unlearning", "model-editing", f"repedit-{record.get('method')}"]
    data = ModelCardData(base_model=hub, license=base_license(base), tags=tags, library_name="transformers")
    text = data.to_yaml()
    try:
        parsed = ModelCard(f"---\n{text}\n---\n").data.to_dict()
    except Exception as exc:   # yaml errors are not ValueErrors
        raise ExportError(f"the model card's front matter does not parse ({exc}); report this as a bug") from exc
    if parsed.get("base_model") != hub or parsed.get("tags") != tags:
        raise ExportError(f"the model card's front matter does not round-trip: {parsed}")
    return text, parsed


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(head: list[str], rows: list[list]) -> str:
    if not rows:
        return ""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _forms(before: dict, after: dict, group: str) -> str:
    b, a = (before or {}).get(group), (after or {}).get(group)
    if not a:
        return ""
    rows = [[form, (b or {}).get("forms", {}).get(form, {}).get("accuracy"), s.get("accuracy"),
             (b or {}).get("forms", {}).get(form, {}).get("probability"), s.get("probability")]
            for form, s in a["forms"].items()]
    rows.append(["mean", (b or {}).get("mean_accuracy"), a.get("mean_accuracy"), (b or {}).get("mean_probability"),
                 a.get("mean_probability")])
    head = ["form", "greedy accuracy before", "after", "answer probability before", "after"]
    return f"**{group}** (n = {next(iter(a['forms'].values()))['n']})\n\n" + _table(head, rows) + "\n"


def _summary(row: dict | None) -> str:
    """The run's comparison row: paired before/after measures, then the single numbers (attacks among them)."""
    if not row:
        return ""
    pairs, singles = [], []
    for k, v in row.items():
        if k in SKIP or k.endswith("_before") or not isinstance(v, (int, float, type(None))):
            continue
        stem = k.removesuffix("_after")
        if k.endswith("_after") and f"{stem}_before" in row:
            pairs.append([stem.replace("_", " "), row[f"{stem}_before"], v])
        else:
            singles.append([k.replace("_", " "), v])
    return _table(["measure", "before", "after"], pairs) + "\n" + _table(["measure (edited model)", "value"], singles)


def _scalars(value, prefix: str = "", depth: int = 0) -> list[tuple[str, float]]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [(prefix, value)]
    if isinstance(value, dict) and depth < 2:
        return [s for k, v in value.items() for s in _scalars(v, f"{prefix}.{k}" if prefix else str(k), depth + 1)]
    return []


def _attacks(attacks: dict) -> str:
    if not attacks:
        return "No attacks were run on this edit (the recipe's [attacks] asked for none).\n"
    rows = []
    for name, result in (attacks or {}).items():
        found = _scalars(result)
        shown = ", ".join(f"{k} {_fmt(v)}" for k, v in found[:8]) + (" …" if len(found) > 8 else "")
        rows.append([name, shown or "see verification.json"])
    return _table(["attack", "result (edited model; full numbers in verification.json)"], rows)


def _signature(before: dict, after: dict) -> str:
    if not (before or {}).get("true_loo") or not (after or {}).get("true_loo"):
        return ""
    rows = [[d, b, a] for d, b, a in zip(after["depths"], before["true_loo"], after["true_loo"])]
    return "**memorisation signature** (True-LOO probe accuracy per depth; 0.5 = chance)\n\n" + \
        _table(["depth", "before", "after"], rows)


def _edited(record: dict) -> str:
    t, base = record.get("targets") or {}, record.get("base_model") or {}
    what = (f"the facts about {', '.join(t['forget'])}" if t.get("forget") else
            f"the memorised pool `{t.get('pool')}` ({len(t.get('pool_keys') or ())} keys)")
    lines = [f"- **Erased**: {what}.",
             f"- **Kept** (measured, never trained on): {len(t.get('neighbours') or ())} neighbouring facts, "
             f"{len(t.get('unrelated') or ())} unrelated facts"
             + (", perplexity on held-out text." if ((record.get("measurements") or {}).get("before") or {}).get(
                 "perplexity") is not None else "."),
             f"- **Method**: `{record.get('method')}` ({record.get('family')}; {record.get('source')}), config "
             f"`{json.dumps(record.get('edit_config'), default=str)}`.",
             f"- **Base weights**: {base.get('weights')}" + (f" ({base['source_package']})."
                                                              if base.get("source_package") else ".")]
    rows = [[d["param"], (record["touched_tensors"].get(d["param"]) or {}).get("shape"), d.get("kind"), d.get("rank")]
            for e in record.get("manifest_edits") or () for d in e.get("deltas") or ()]
    return "\n".join(lines) + "\n\nTensors changed (every other tensor is the base model's):\n\n" + \
        _table(["tensor", "shape", "delta", "rank"], rows)


def model_card(record: dict) -> str:
    """README.md text for a verification.json record."""
    yaml, meta = front_matter(record)
    base = record.get("base_model") or {}
    t = record.get("targets") or {}
    m = record.get("measurements") or {}
    before, after = m.get("before") or {}, m.get("after") or {}
    subject = ", ".join(t.get("forget") or ()) or f"pool {t.get('pool')}"
    license_line = (f"License: `{meta['license']}`, the base model's." if meta.get("license") else
                    "License: the base model's (repedit does not know it; check the base model's card).")
    versions = ", ".join(f"{k} {v}" for k, v in (record.get("versions") or {}).items() if v)
    tol = record.get("tolerance") or {}
    return f"""---
{yaml}
---

# {base.get('id')}: {subject} erased ({record.get('method')})

This is `{base.get('id')}` with one edit made by repedit (mechanistic representation editing): the method
`{record.get('method')}` erases {subject}. It is a plain Hugging Face model; repedit is not needed to use it:

```python
from transformers import AutoModelForCausalLM, AutoTokenizer
model = AutoModelForCausalLM.from_pretrained("<this directory>")
tokenizer = AutoTokenizer.from_pretrained("<this directory>")
```

{license_line}

## What was edited

{_edited(record)}
## Why it is reversible

Only the tensors above differ from the base model. `originals.safetensors` holds their original values and
`edits.safetensors` the edit's factors; `manifest.json` records each tensor's sha256 before and after. Reverting
puts the originals back bit-exactly (it refuses a model whose edited tensors are not the exported values):

```python
from repedit.export.directory import revert
revert("<this directory>", model)      # model: loaded from this directory as above
```

## Results

Measured by the run on the in-memory model before the edit and with it (answer probability: exp of the mean
log-prob of the answer tokens; multiple choice: the softmax over the options).

{_forms(before, after, 'forget')}{_forms(before, after, 'neighbours')}{_forms(before, after, 'unrelated')}
{_summary(m.get('comparison'))}
{_signature(before, after)}
{_attacks(m.get('attacks'))}
Every number (lm-eval, benchmark, knownness, attacks in full) is in `verification.json`.

## Verify

```
repedit verify-export <this directory>
```

recomputes the sha256 of every file and every tensor (against `verification.json` and `manifest.json`), loads the
model with plain transformers and re-measures the forget facts and neighbours per form, after the edit and after
reverting it; it exits non-zero with one line per mismatch. Tolerance: {tol.get('rule')}, (atol, rtol) by dtype
{json.dumps(tol.get('atol_rtol_by_dtype'))}; this export is {record.get('dtype')}.

## Reproduce

```
{record.get('command')}
```

Seeds: `{json.dumps(record.get('seeds'))}`. The recipe is in `verification.json` (`recipe.text`, and
`recipe.resolved` with every default filled). Versions: {versions}.

## Revert

`repedit.export.directory.revert("<this directory>", model)` (above) restores the base model's tensors; their sha256 are
`touched_tensors.*.sha256_before` in `verification.json`.
"""
