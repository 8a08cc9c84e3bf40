"""Does the knownness probe need frames (and unknowns) of the entity's kind? Measured on people.

On SmolLM2-135M, a logistic probe on the residual at layer 15 (`fit_knownness(handle, None, …,
site=Site(15, "resid_post"))`, 5-fold CV by entity) tells 40 famous people from 40 invented people
(`references("person").measure`), read in
- the person measure frames (`frames("person").measure`: "The life and work of {}", …);
- the country frames (`frames("country").measure` = `EVAL_FRAMES`: "The government of {}", …),
  what the probe used for every kind before;
and, for reference, the same famous people against invented *countries* in the country frames (the
old negatives for every kind). Classes are balanced (chance = 0.5). CV accuracy saturates easily, so each
probe also scores entities it never saw: 12 other famous people and 20 other invented people (SAE-align's
`references("person").train`, disjoint from the probe's): mean P(known) of each, and the accuracy at 0.5
on those 32. Prints them and writes bench/knownness_frames.json. Run with OMP_NUM_THREADS=1 on a shared
2-core machine (~30 s).
"""

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import repedit  # noqa: E402
from repedit.sites import Site  # noqa: E402
from repedit.suites.references import frames, references  # noqa: E402
from repedit.verify.sae_codes import fit_knownness  # noqa: E402

FAMOUS = ("Albert Einstein", "William Shakespeare", "Isaac Newton", "Charles Darwin", "Marie Curie",
          "Leonardo da Vinci", "Napoleon Bonaparte", "Abraham Lincoln", "Wolfgang Amadeus Mozart",
          "Ludwig van Beethoven", "Pablo Picasso", "Vincent van Gogh", "Mahatma Gandhi", "Nelson Mandela",
          "Martin Luther King", "Winston Churchill", "George Washington", "Julius Caesar", "Aristotle", "Plato",
          "Galileo Galilei", "Nikola Tesla", "Thomas Edison", "Queen Victoria", "Karl Marx", "Sigmund Freud",
          "Jane Austen", "Charles Dickens", "Mark Twain", "Leo Tolstoy", "Michael Jackson", "Elvis Presley",
          "Steve Jobs", "Bill Gates", "Barack Obama", "Adolf Hitler", "Cleopatra", "Christopher Columbus",
          "Johann Sebastian Bach", "Stephen Hawking")
HELD_OUT = ("Ernest Hemingway", "Frida Kahlo", "Alexander the Great", "Joan of Arc", "Rembrandt", "Confucius",
            "Florence Nightingale", "Alan Turing", "Walt Disney", "John Lennon", "Edgar Allan Poe", "Louis Pasteur")
SITE = Site(15, "resid_post")


def main():
    t0 = time.perf_counter()
    h = repedit.load("smollm2-135m")
    people = list(references("person", 0, len(FAMOUS)).measure)
    countries = list(references("country", 0, len(FAMOUS)).measure)
    runs = {"person frames, invented people": (frames("person").measure, people),
            "country frames, invented people": (frames("country").measure, people),
            "country frames, invented countries (the old negatives)": (frames("country").measure, countries)}
    unseen = list(references("person", 20, 0).train)        # invented people no probe trains on
    out = {"model": h.id, "site": str(SITE), "known": list(FAMOUS), "invented_people": people,
           "held_out_known": list(HELD_OUT), "held_out_invented": unseen, "rows": []}
    for name, (fr, unknown) in runs.items():
        t = time.perf_counter()
        clf = fit_knownness(h, None, FAMOUS, unknown, frames=fr, site=SITE)
        pk, pu = clf.p_known(h, None, HELD_OUT), clf.p_known(h, None, unseen)
        acc = (float((pk > 0.5).sum()) + float((pu <= 0.5).sum())) / (len(pk) + len(pu))
        row = {"run": name, "frames": list(fr), "cv_accuracy": round(clf.cv_accuracy, 4),
               "held_out_p_known_famous": round(float(pk.mean()), 4),
               "held_out_p_known_invented_people": round(float(pu.mean()), 4), "held_out_accuracy": round(acc, 4),
               "seconds": round(time.perf_counter() - t, 1)}
        out["rows"].append(row)
        print(f"{name}: CV accuracy {clf.cv_accuracy:.3f}; held out: P(known) famous {pk.mean():.3f}, "
              f"invented people {pu.mean():.3f}, accuracy {acc:.3f} ({row['seconds']} s)", flush=True)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    Path(__file__).with_suffix(".json").write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
