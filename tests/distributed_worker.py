"""Run under torchrun by tests/test_distributed.py: every distributed path, then the two CLI commands, on the
default model; rank 0 writes the results into the folder argv[1] for the test to compare with one process."""

import json
import sys
from dataclasses import asdict
from pathlib import Path

from safetensors.torch import save_file

from repedit import distributed as D
from repedit.suites import load_suite, load_text

# the settings of the test's one-process references
LAYERS, KEY_TOKENS, KEY_CONTEXT = [4, 6], 700, 32
SAE_LAYER, SAE_TOKENS, SAE_CONTEXT, OUTLIERS = 3, 2500, 16, 3.0
FACTS, FORMS, RECALL_BATCH, NEW_TOKENS = 6, ["blank", "mc"], 4, 8
DOCS, PPL_BATCH, PPL_LENGTH = 7, 2, 64
CLI_STATS = ["--layers", "5", "--tokens", "300", "--context", "24", "--no-store"]
CLI_MEASURE = ["--facts", "5", "--forms", "blank,mc", "--docs", "3", "--max-length", "48", "--max-new-tokens", "8",
               "--batch-size", "4"]


def texts() -> list[str]:
    return load_text("wiki", "train")[:60]


def facts():
    return load_suite("capitals", limit=FACTS)


def docs() -> list[str]:
    return load_text("news", "heldout")[:DOCS]


def main(out: Path) -> None:
    from repedit.cli import app

    with D.session():
        h = D.load("smollm2-135m")
        fitters, key_shards = D.key_fitters_distributed(h, LAYERS, texts(), n_tokens=KEY_TOKENS, context=KEY_CONTEXT)
        acts, sae_shards = D.collect_distributed(h, SAE_LAYER, "resid_post", texts(), SAE_TOKENS, SAE_CONTEXT,
                                                 OUTLIERS)
        res, recall_shards = D.recall_distributed(h, facts(), FORMS, max_new_tokens=NEW_TOKENS,
                                                  batch_size=RECALL_BATCH)
        ppl, ppl_shards = D.perplexity_distributed(h, docs(), max_length=PPL_LENGTH, batch_size=PPL_BATCH)
        if D.rank() == 0:
            for layer, f in fitters.items():
                f.save(out / f"L{layer}.safetensors")
            save_file({"acts": acts.contiguous()}, str(out / "acts.safetensors"))
            shards = {"key": key_shards, "sae": sae_shards, "recall": recall_shards, "ppl": ppl_shards}
            (out / "result.json").write_text(json.dumps({
                "world": D.world(), "recall": res.to_dict(), "perplexity": ppl,
                "shards": {k: [asdict(s) for s in v] for k, v in shards.items()}}))
        # the command line on the same ranks (the group is already joined, so its session leaves it be)
        app(["distributed", "stats", *CLI_STATS, "--save-dir", str(out / "cli-stats"),
             "--json", str(out / "cli-stats.json")], standalone_mode=False)
        app(["distributed", "measure", *CLI_MEASURE, "--json", str(out / "cli-measure.json")], standalone_mode=False)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
