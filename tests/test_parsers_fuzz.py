"""Parsers that never crash (issue 18.6): any recipe, fact file or pool file either parses or raises a
typed error (a `ReprEditError`) naming the file and the line; no run directory is made for a bad recipe.

Property tests (hypothesis, derandomized). No model is loaded: recipes are only validated (suites and
pools are files on disk). Generated recipes never set [verify] lm_eval_tasks (it reads lm-eval's task
index) nor [targets.benchmark] paths other than missing ones.
"""

import csv
import io
import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from repedit.errors import ReprEditError
from repedit.recipes.schema import Recipe, parse_recipe
from repedit.suites.pools import load_pool
from repedit.suites.user import POOL_KEYS, RECORD_KEYS, load_facts, read_pool_records

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large, HealthCheck.large_base_example])

# ----- recipes ---------------------------------------------------------------------------------------
SOURCE = "fuzz.toml"
HEAD = '[run]\nname = "t"\n[targets]\nforget = ["France", "Japan"]\n'
VALID = HEAD + '[[edit]]\nmethod = "ga"\nconfig = { steps = 2 }\n[attacks]\nrelearn_steps = 0\n[export]\nedit = "ga"\n'
HEADERS = ["[run]", "[model]", "[targets]", "[[edit]]", "[verify]", "[attacks]", "[export]", "[[targets.facts]]",
           "[[targets.pool_keys]]", "[targets.templates.capital]", "[targets.templates.fact]", "[edit]",
           "[targets.benchmark]", "[bogus]", "[run.sub]", "[[run]]"]
REAL_KEYS = ["name", "seed", "id", "dtype", "device_map", "suite", "forget", "retain", "neighbours", "unrelated_suite",
             "unrelated", "known_only", "pool", "contexts", "facts", "templates", "pool_keys", "references",
             "method", "config", "forms", "perplexity_docs", "signature_depths", "knownness", "knownness_layer",
             "lm_eval_limit", "lm_eval_include", "prefixes", "relearn_steps", "relearn_lr", "relearn_every",
             "trace_prompts", "sae", "probes", "quantisation", "weight_diff", "weight_diff_k", "extraction",
             "membership", "remind", "edit", "subject", "answer", "prompt", "aliases", "relation", "qa", "blank",
             "shot", "paraphrase", "key", "memorised", "paraphrase_c", "paraphrase_b", "mc_options", "format",
             "split", "limit", "steps", "lr", "layers", "run", "model", "targets", "verify", "attacks", "export"]
WORDS = ["{s}{s.x}", "{s} {s[x]}",
         "France", "Japan", "ga", "rocr", "pga", "npo", "rmu", "natural", "capitals", "elements", "qa", "blank",
         "mc", "int8", "int4-g32", "{s}", "{s} {a}.", "{a}", "{", "}", "{s.x}", "{s[x]}", "{0}", "", " ", "a/b.jsonl",
         "nope.csv", "/", "float16", "auto", "t", "../x", "\x00", "é", "saes/none"]

keys = st.one_of(st.sampled_from(REAL_KEYS), st.from_regex(r"[A-Za-z_][A-Za-z0-9_-]{0,8}", fullmatch=True))
scalars = st.one_of(st.integers(-5, 50), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                    st.booleans(), st.sampled_from(WORDS), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(keys, inner, max_size=3)), max_leaves=8)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)                 # a TOML basic string (JSON escapes; \u escapes TOML also reads)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"


@st.composite
def toml_docs(draw) -> str:
    lines = [f"{draw(keys)} = {toml_value(draw(values))}" for _ in range(draw(st.integers(0, 1)))]
    for _ in range(draw(st.integers(0, 7))):
        lines.append(draw(st.sampled_from(HEADERS)))
        for _ in range(draw(st.integers(0, 4))):
            key, value = draw(keys), draw(values)
            if key in ("lm_eval_tasks", "path"):
                continue
            lines.append(f"{key} = {toml_value(value)}")
    return "\n".join(lines) + draw(st.sampled_from(["", "\n"]))


@st.composite
def mutated(draw) -> str:
    lines = VALID.splitlines()
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["delete", "duplicate", "swap", "insert", "chars", "value"]))
        i = draw(st.integers(0, len(lines) - 1)) if lines else 0
        if op == "delete" and lines:
            del lines[i]
        elif op == "duplicate" and lines:
            lines.insert(i, lines[i])
        elif op == "swap" and len(lines) > 1:
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == "insert":
            lines.insert(i, draw(st.sampled_from(HEADERS)) if draw(st.booleans())
                         else f"{draw(keys)} = {toml_value(draw(values))}")
        elif op == "chars" and lines:
            s, k = lines[i], draw(st.integers(0, len(lines[i])))
            lines[i] = s[:k] + draw(st.text(max_size=3)) + s[k + draw(st.integers(0, 2)):]
        elif op == "value" and lines and "=" in lines[i]:
            lines[i] = lines[i].split("=", 1)[0] + "= " + toml_value(draw(values))
    return "\n".join(lines) + "\n"


def check_recipe(text: str) -> None:
    try:
        recipe = parse_recipe(text, SOURCE)
    except ReprEditError as err:
        msg = str(err)
        assert msg.startswith(f"{SOURCE}:"), msg
        m = re.match(rf"{re.escape(SOURCE)}:(\d+):", msg)
        if m:
            assert 1 <= int(m.group(1)) <= max(1, len(text.splitlines())), (msg, text)
    else:
        assert isinstance(recipe, Recipe)


def test_the_valid_recipe_parses():
    assert parse_recipe(VALID, SOURCE).edits[0].method == "ga"


@FUZZ
@given(st.text(max_size=300))
def test_any_text_is_a_recipe_or_a_typed_error(text):
    check_recipe(text)


@settings(FUZZ, max_examples=400)
@given(toml_docs())
def test_any_toml_document_is_a_recipe_or_a_typed_error(text):
    check_recipe(text)


@settings(FUZZ, max_examples=400)
@given(mutated())
def test_any_mutation_of_a_valid_recipe_is_a_recipe_or_a_typed_error(text):
    check_recipe(text)


@pytest.mark.parametrize("text", [
    "run = 5\n", "targets = []\n", 'edit = "ga"\n', "edit = [1, 2]\n", "verify = 1.5\n", "export = true\n",
    'model = "x"\n', "attacks = [true]\n", HEAD + "[[edit]]\nmethod = \"ga\"\nconfig = [1]\n",
    HEAD + '[targets.templates]\ncapital = "x"\n[[edit]]\nmethod = "ga"\n',
    HEAD + '[targets.templates.capital]\nqa = "{s[x]} {s}"\n[[edit]]\nmethod = "ga"\n',
    '[targets]\nforget = ["x"]\n[targets.templates.fact]\nqa = "{s}{s.x}"\n[[targets.facts]]\nsubject = "x"\n',
])
def test_non_table_sections_are_typed_errors(text):
    check_recipe(text)
    with pytest.raises(ReprEditError):
        parse_recipe(text, SOURCE)


# ----- fact files and pool files ------------------------------------------------------------------------
json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.sampled_from(WORDS),
                                     st.text(max_size=10)),
                           lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                   st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                           max_leaves=8)
TEMPLATE_TEXT = st.one_of(st.text(alphabet="{}sa.[]0x!:r ", max_size=8),
                          st.lists(st.sampled_from(["{s}", "{a}", "{s.x}", "{s[x]}", "{s[0]}", "{a.upper}", "{0}", "{",
                                                    "}", "{{", "x", "{s!r}", "{s:>3}", "{s:d}", "{s!z}", "{s[}"]),
                                   max_size=4).map("".join))


def records(fields):
    key = st.one_of(st.sampled_from(fields), st.text(max_size=6))
    value = st.one_of(json_values, st.sampled_from(WORDS), TEMPLATE_TEXT)
    templates = st.dictionaries(st.sampled_from(["capital", "fact", "x"]),
                                st.one_of(st.dictionaries(st.sampled_from(["qa", "blank", "paraphrase", "shot", "y"]),
                                                          st.one_of(TEMPLATE_TEXT, json_values), max_size=4),
                                          json_values), max_size=2)
    plain = st.dictionaries(key, value, max_size=8)
    return st.one_of(plain, st.builds(lambda d, t: {**d, "templates": t}, plain, templates))


# nearly valid records (few subjects, answers, relations): they reach form generation and its checks
GOOD = st.sampled_from(["What is {s}?", "{s} is", "{s}{{"])
TEMPLATES = st.fixed_dictionaries({}, optional={"shot": st.sampled_from(["{s} {a}.", "{s} {a} {s.x}", "{a}"]),
                                                **{k: st.one_of(GOOD, GOOD, GOOD, GOOD, TEMPLATE_TEXT)
                                                   for k in ("qa", "blank", "paraphrase")}})
plausible = st.fixed_dictionaries(
    {"subject": st.sampled_from(["A", "B", "C", "D", "E", "F", "G", "{s}"]),
     "prompt": st.sampled_from(["It is", "It is", "It is", "B {", "C}", " "]),
     "answer": st.sampled_from(["1", "2", "3", "4", "a"])},
    optional={"relation": st.sampled_from(["capital", "r", "x"]),
              "qa": st.sampled_from(["Q?", "{s}"]), "mc_options": st.lists(st.sampled_from(["1", "2", "9", ""]),
                                                                          max_size=3),
              "forms": st.dictionaries(st.sampled_from(["mc", "qa", "blank", "zz"]),
                                       st.one_of(st.sampled_from(["p", ""]), json_values), max_size=2),
              "templates": st.dictionaries(st.sampled_from(["r", "capital"]), TEMPLATES, max_size=2),
              "id": st.sampled_from(["i", "j"]), "aliases": st.sampled_from([["x"], "a|b", [1], ""]),
              "kind": st.sampled_from(["person", ""])})


clean = st.fixed_dictionaries(
    {"subject": st.sampled_from(["A", "B", "C", "D", "E", "F", "{s}"]),
     "answer": st.sampled_from(["@ town", "@ city", "@ town", "1"]),
     "prompt": st.sampled_from(["@ is", "The @ one:", "@ is", "{s} is"])},
    optional={"relation": st.sampled_from(["capital", "fact"]), "qa": st.sampled_from(["Q?", "{s}"]),
              "mc_options": st.lists(st.sampled_from(["7", "8", "9"]), max_size=3, unique=True),
              "templates": st.dictionaries(st.just("r"), st.fixed_dictionaries(
                  {"qa": GOOD, "blank": GOOD, "paraphrase": GOOD, "shot": st.just("{s} {a}.")}), max_size=1)}
).map(lambda d: {**d, "prompt": d["prompt"].replace("@", d["subject"]),
               "answer": d["answer"].replace("@", d["subject"].lower())})


def jsonl_files(fields):
    line = st.one_of(records(fields).map(lambda d: json.dumps(d)), plausible.map(json.dumps),
                     json_values.map(json.dumps),
                     st.text(max_size=20), st.sampled_from(["", "{", "[" * 3000, "1" * 5000,
                                                            '{"subject": 1' + "0" * 5000 + "}"]))
    return st.lists(line, max_size=10).map(lambda ls: "\n".join(ls).encode("utf-8", "surrogatepass"))


def csv_files(fields):
    cell = st.one_of(st.sampled_from(WORDS), st.text(max_size=10), TEMPLATE_TEXT,
                     st.sampled_from(["a|b", "x" * 140_000]))
    header = st.lists(st.one_of(st.sampled_from(fields), st.text(max_size=6)), max_size=7)

    def write(h, rows):
        buf = io.StringIO()
        w = csv.writer(buf)
        if h:
            w.writerow(h)
        w.writerows(rows)
        return buf.getvalue().encode("utf-8", "surrogatepass")
    return st.builds(write, header, st.lists(st.lists(cell, max_size=8), max_size=6))


def files(fields):
    return st.one_of(
        st.tuples(st.sampled_from([".jsonl", ".csv"]), st.one_of(st.binary(max_size=200), st.just(b""),
                                                                st.text(max_size=200).map(
                                                                    lambda s: s.encode("utf-8", "surrogatepass")))),
        st.tuples(st.just(".jsonl"), jsonl_files(fields)),
        st.tuples(st.just(".jsonl"), st.builds(lambda ds, extra: "\n".join(json.dumps(d) for d in ds + extra).encode(),
                                              st.lists(clean, min_size=4, max_size=8, unique_by=lambda d: d["subject"]),
                                              st.lists(plausible, max_size=1))),
        st.tuples(st.just(".csv"), csv_files(fields)),
    )


def check_file(tmp_path_factory, suffix: str, data: bytes, load) -> None:
    path = tmp_path_factory.mktemp("fuzz") / f"data{suffix}"
    path.write_bytes(data)
    try:
        load(path)
    except ReprEditError as err:
        msg = str(err)
        assert str(path) in msg, msg                         # names the file ...
        n_lines = max(1, len(data.decode("utf-8", "replace").splitlines()))
        for n in re.findall(rf"{re.escape(str(path))}:(\d+)", msg):
            assert 1 <= int(n) <= n_lines, msg               # ... and a line within it


@FUZZ
@given(files(list(RECORD_KEYS)))
def test_any_fact_file_loads_or_raises_a_typed_error_naming_the_file(tmp_path_factory, file):
    check_file(tmp_path_factory, *file, load_facts)


@FUZZ
@given(files(list(POOL_KEYS)))
def test_any_pool_file_loads_or_raises_a_typed_error_naming_the_file(tmp_path_factory, file):
    check_file(tmp_path_factory, *file, read_pool_records)
    check_file(tmp_path_factory, *file, load_pool)


@pytest.mark.parametrize("suffix, data", [
    (".jsonl", b"\xff\xfe junk"), (".csv", b"\xff\xfe junk"), (".jsonl", b"[" * 100_000), (".jsonl", b"1" * 5000),
    (".csv", b"subject,answer,prompt\n" + b"x" * 200_000 + b",a,b\n"),
    (".jsonl", b'{"templates": {"r": {"qa": "{s} {s.x}"}}}'),
    (".jsonl", b'{"templates": {"r": {"qa": "{s} {s[x]}"}}}'),
    (".jsonl", b'{"templates": {"r": {"qa": "{s} {a}"}}}'),
])
def test_junk_files_are_typed_errors(tmp_path_factory, suffix, data):
    path = tmp_path_factory.mktemp("junk") / f"data{suffix}"
    path.write_bytes(data)
    for load in (load_facts, read_pool_records):
        with pytest.raises(ReprEditError, match=re.escape(str(path))):
            load(path)


# ----- no half-written run directory --------------------------------------------------------------------
@pytest.mark.parametrize("text", ['[run\nname = "t"\n', '[targets]\nforget = ["Frnace"]\n[[edit]]\nmethod = "ga"\n',
                                  "run = 5\n", None])
def test_an_invalid_recipe_makes_no_run_directory(tmp_path, text):
    from repedit.recipes.runner import run_recipe

    path = tmp_path / "bad.toml"
    if text is None:
        path.write_bytes(b"\xff\xfe not text")
    else:
        path.write_text(text)
    for recipe in (path, tmp_path / "missing.toml", tmp_path):
        with pytest.raises(ReprEditError):
            run_recipe(recipe, out=tmp_path / "run", echo=None)
        assert not (tmp_path / "run").exists()


def test_a_recipe_file_error_names_the_file(tmp_path):
    from repedit.recipes.schema import load_recipe

    path = tmp_path / "bad.toml"
    path.write_bytes(b"\xff\xfe not text")
    with pytest.raises(ReprEditError, match=re.escape(str(path))):
        load_recipe(path)
