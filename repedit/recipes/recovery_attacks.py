"""The recipe side of the recovery attacks ([attacks] quantisation, weight_diff, extraction, membership,
remind): what is recorded on the original model, what runs on each edited model, and the comparison
columns they add. The attacks themselves live in repedit.verify."""

from __future__ import annotations

from repedit.recipes.measure import Resolved, neighbour_forms
from repedit.recipes.schema import Recipe


def _rows(handle, res: Resolved) -> tuple[list, list]:
    from repedit.verify.membership import fact_rows

    return fact_rows(handle, res.forget), fact_rows(handle, res.retain or res.neighbours)


def record_original(handle, recipe: Recipe, res: Resolved, before: dict, orig: dict) -> None:
    """Measure the original model for every recovery attack the recipe asks for (into `before`; what the
    edited runs compare against also into `orig`)."""
    a = recipe.attacks
    if not res.forget:
        return
    if a.quantisation:
        from repedit.verify.quantisation_attack import quantisation_probabilities

        orig["quantisation"] = before["quantisation"] = quantisation_probabilities(
            handle, res.forget, a.quantisation, forms=recipe.verify.forms, neighbours=res.neighbours,
            side_forms=neighbour_forms(recipe))
    if a.extraction:
        from repedit.verify.extraction import extraction_attack, fit_tuned_lens

        orig["extraction"] = extraction_attack(handle, res.forget, fit_tuned_lens(handle)).to_dict()
        before["extraction"] = _extraction_summary(orig["extraction"])
    if a.membership:
        from repedit.verify.membership import membership_attack

        before["membership"] = membership_attack(handle, *_rows(handle, res)).to_dict()
    if a.remind:
        from repedit.verify.remind import remind

        before["remind"] = remind(handle, *_rows(handle, res)).to_dict()


def _extraction_summary(d: dict) -> dict:
    """An extraction result without the per-fact read-outs (those stay in the attack record)."""
    return {k: v for k, v in d.items() if k != "readouts"}


def run_on_edited(handle, recipe: Recipe, res: Resolved, orig: dict, stack) -> dict:
    """Every recovery attack the recipe asks for, on the edited model (pushed on `stack`)."""
    a, out = recipe.attacks, {}
    if not res.forget:
        return out
    if a.quantisation:
        from repedit.verify.quantisation_attack import quantisation_probabilities, recovered_fractions
        from repedit.verify.quantised_weights import survival_table

        probs = quantisation_probabilities(handle, res.forget, a.quantisation, forms=recipe.verify.forms,
                                           neighbours=res.neighbours, side_forms=neighbour_forms(recipe))
        out["quantisation"] = {"probabilities": probs, "recovered": recovered_fractions(orig["quantisation"], probs),
                               "survival": survival_table(stack.originals(), handle, a.quantisation)}
    if a.weight_diff:
        from repedit.verify.weight_diff import weight_diff_attack

        candidates = [f.subject for f in list(res.retain) + list(res.neighbours)]
        out["weight_diff"] = weight_diff_attack(handle, stack.originals(), res.forget, k=a.weight_diff_k,
                                                candidates=candidates).to_dict()
    if a.extraction:
        from repedit.verify.extraction import compare_extraction, extraction_attack, fit_tuned_lens

        after = extraction_attack(handle, res.forget, fit_tuned_lens(handle)).to_dict()
        out["extraction"] = {**_extraction_summary(after), "versus_original": compare_extraction(orig["extraction"],
                                                                                                 after)}
    if a.membership:
        from repedit.verify.membership import membership_attack

        out["membership"] = membership_attack(handle, *_rows(handle, res)).to_dict()
    if a.remind:
        from repedit.verify.remind import remind

        out["remind"] = remind(handle, *_rows(handle, res)).to_dict()
    return out


def comparison_columns(row: dict, before: dict, att: dict) -> None:
    """The recovery attacks' headline numbers as comparison-table columns (in place)."""
    for scheme, q in (att.get("quantisation") or {}).get("recovered", {}).items():
        row[f"quant_{scheme}_recovered"] = q["recovered"]
    if "weight_diff" in att:
        s = att["weight_diff"]["summary"]
        row["weight_diff_named"] = s["named_share"]
        row["weight_diff_key_rank"] = s["subject_keys_median_rank"]
    if "extraction" in att:
        for lens, v in att["extraction"]["versus_original"].items():
            if isinstance(v, dict):
                row[f"extraction_{lens}_any_layer_after"] = v["any_intermediate_after"]
                row[f"extraction_{lens}_recovered"] = v["recovered_frac"]
    if "membership" in att:
        row["mia_min_k_pp_auc_before"] = (before.get("membership") or {}).get("auc", {}).get("min_k_pp")
        row["mia_min_k_pp_auc_after"] = att["membership"]["auc"]["min_k_pp"]
        row["mia_loss_auc_after"] = att["membership"]["auc"]["loss"]
    if "remind" in att:
        row["remind_auc_before"] = (before.get("remind") or {}).get("auc")
        row["remind_auc_after"] = att["remind"]["auc"]
