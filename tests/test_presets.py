"""Per-model presets: defaults are data per model, explicit values win, a model without a preset or an
SAE of another model is refused by name, and the build command writes a valid preset."""

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from repedit.baselines.rmu import RMUConfig
from repedit.edits.mrp import MRPConfig
from repedit.edits.pga_trained import TrainedPGAConfig
from repedit.edits.rocr import ROCR, ROCRConfig
from repedit.edits.sae_align import SAEAlignConfig
from repedit.errors import ConfigError, PresetNotFoundError, ReprEditError, SAEMismatchError
from repedit.fit.saes import SAETrainConfig, check_sae, load_sae
from repedit.methods import LeaceConfig, PGAConfig
from repedit.models.presets import SECTIONS, Preset, preset_for, presets_dir, resolve_config
from repedit.recipes.presets import preset_dict, preset_from_results, windows_for, write

ROOT = Path(__file__).resolve().parents[1]
SAE_DIR = ROOT / "saes" / "smollm2-135m-L15-topk"
# the SmolLM2-135M defaults before presets (ROCR sweep, signature peak, hand-chosen layers)
SMOL = {ROCRConfig: ("layers", (4, 5, 6)), SAEAlignConfig: ("layers", (8, 12, 13, 14)), MRPConfig: ("layer", 10),
        PGAConfig: ("depth", 18), TrainedPGAConfig: ("depth", 18), RMUConfig: ("layer", 8), LeaceConfig: ("depth", 8),
        SAETrainConfig: ("layer", 15)}


@pytest.mark.fast
def test_smollm2_preset_resolves_to_the_defaults_before_presets():
    p = preset_for("smollm2-135m")
    for cls, (name, value) in SMOL.items():
        assert getattr(cls(), name) is None                       # the config defers to the preset
        assert getattr(resolve_config(cls(), "smollm2-135m"), name) == value, cls.__name__
    assert p.knownness_layer == 15 and p.sae_path() == SAE_DIR
    assert p.rule("rocr", "layers") and p.provenance["command"]


@pytest.mark.fast
def test_an_explicit_value_wins_and_needs_no_preset():
    cfg = resolve_config(ROCRConfig(layers=(7, 8, 9), stats_tokens=2000), "smollm2-135m")
    assert cfg.layers == (7, 8, 9) and cfg.stats_tokens == 2000
    assert resolve_config(RMUConfig(layer=6, update_layers=(5, 6)), "no-such-model").layer == 6
    mixed = resolve_config(RMUConfig(update_layers=(7,)), "smollm2-135m")   # only the None field is filled
    assert (mixed.layer, mixed.update_layers) == (8, (7,))
    with pytest.raises(ConfigError):                              # validation still runs on filled values
        resolve_config(RMUConfig(update_layers=(9,)), "smollm2-135m")
    with pytest.raises(ConfigError):
        ROCRConfig(layers=(6, 5))


@pytest.mark.fast
def test_a_model_without_a_preset_raises_a_typed_error_naming_the_command(tiny_dirs):
    import repedit

    tiny = repedit.load(str(tiny_dirs["llama"]))
    for make in (lambda: ROCR(tiny), lambda: resolve_config(MRPConfig(), tiny), lambda: preset_for(tiny)):
        with pytest.raises(PresetNotFoundError) as err:
            make()
        assert isinstance(err.value, KeyError) and isinstance(err.value, ReprEditError)
        assert f"repedit presets build {tiny.id}" in str(err.value) and "smollm2-135m" in str(err.value)
    # explicit values run without a preset
    assert resolve_config(MRPConfig(layer=1), tiny).layer == 1


@pytest.mark.fast
def test_a_preset_for_another_architecture_is_refused(tiny_dirs, tmp_path, monkeypatch):
    import repedit
    from repedit.models.presets import file_name

    tiny = repedit.load(str(tiny_dirs["llama"]))
    content = json.loads((presets_dir() / "smollm2-135m.json").read_text())
    content = dict(content, model=tiny.id, sae=None)
    content["defaults"] = dict(content["defaults"], rocr={"layers": [0, 1, 2]})
    monkeypatch.setenv("REPEDIT_PRESETS", str(tmp_path))          # searched before the shipped presets
    write(content, tmp_path / file_name(tiny.id))
    with pytest.raises(ConfigError, match="30 layers of width 576"):
        preset_for(tiny)
    content["architecture"] = {"n_layers": tiny.n_layers, "d_model": tiny.d_model, "d_mlp": tiny.d_mlp}
    write(content, tmp_path / file_name(tiny.id))
    assert resolve_config(ROCRConfig(), tiny).layers == (0, 1, 2)


def test_an_sae_of_another_model_or_width_is_refused_by_name(smol):
    sae = load_sae(SAE_DIR, handle=smol)                          # its own model: accepted
    gemma = SimpleNamespace(id="gemma3-270m", d_model=640)
    with pytest.raises(SAEMismatchError) as err:
        load_sae(SAE_DIR, handle=gemma)
    msg = str(err.value)
    assert "'smollm2-135m'" in msg and "'gemma3-270m'" in msg and "576" in msg and "640" in msg
    assert str(SAE_DIR) in msg and "repedit train-sae --model gemma3-270m" in msg
    twin = SimpleNamespace(id="/models/SmolLM2-135M-Instruct", d_model=576)   # same width, another id
    with pytest.raises(SAEMismatchError, match="check_model=False"):
        check_sae(sae, twin)
    check_sae(sae, twin, check_model=False)
    with pytest.raises(SAEMismatchError, match="d_model=640"):
        check_sae(sae, SimpleNamespace(id="x", d_model=640), check_model=False)


@pytest.mark.fast
def test_gemma_preset_has_no_sae_and_sae_align_says_how_to_train_one():
    p = preset_for("gemma3-270m")
    assert (p.n_layers, p.d_model) == (18, 640) and p.sae is None and p.sae_align_layers is None
    with pytest.raises(ConfigError, match="repedit train-sae --model gemma3-270m"):
        p.sae_path()
    with pytest.raises(ConfigError, match="repedit train-sae --model gemma3-270m"):
        resolve_config(SAEAlignConfig(), "gemma3-270m")
    assert resolve_config(ROCRConfig(), "gemma3-270m").layers == p.rocr_layers


@pytest.mark.parametrize("path", sorted(presets_dir().glob("*.json")), ids=lambda p: p.stem)
@pytest.mark.fast
def test_every_shipped_preset_is_valid_and_says_how_each_value_was_chosen(path):
    raw = json.loads(path.read_text())
    p = Preset.from_dict(raw, path)
    assert path.name == f"{p.model}.json" and set(p.defaults) == set(SECTIONS)
    n = p.n_layers
    first, *_, last = p.rocr_layers
    assert list(p.rocr_layers) == list(range(first, last + 1)) and 0 <= first and last < n
    assert 1 <= p.pga_depth <= n and p.value("pga-trained", "depth") == p.pga_depth
    assert all(0 <= v < n for v in (p.mrp_layer, p.rmu_layer, p.knownness_layer, p.value("train-sae", "layer")))
    assert 1 <= p.leace_depth <= n
    if p.sae:
        from repedit.recipes.presets import sae_layer

        assert max(p.sae_align_layers) <= sae_layer(p.sae)
    prov = p.provenance
    assert prov["command"] and prov["date"] and not prov.get("quick")
    assert {f"{s}.{f}" for s, fs in SECTIONS.items() for f in fs} <= set(prov["rules"])
    rows = prov["sweeps"]["rocr"]["rows"]
    assert max(rows, key=lambda r: r["score"])["layers"] == list(p.rocr_layers)
    sig = prov["sweeps"]["signature"]
    assert sig["depths"][max(range(len(sig["gap"])), key=sig["gap"].__getitem__)] == p.pga_depth


@pytest.mark.fast
def test_the_rules_reproduce_smollm2_from_its_committed_sweeps(tmp_path):
    shipped = preset_for("smollm2-135m")
    arch = {"n_layers": 30, "d_model": 576, "d_mlp": 1536}
    out = preset_from_results("smollm2-135m", arch, ROOT / "bench" / "rocr_layer_sweep.json",
                              ROOT / "docs" / "signature-smollm2.json", out=tmp_path / "p.json")
    rebuilt = Preset.from_dict(json.loads(out.read_text()))
    assert rebuilt.defaults == shipped.defaults and rebuilt.sae == shipped.sae
    assert windows_for(18, 3) == [(2, 3, 4), (4, 5, 6), (6, 7, 8)]       # the windows Gemma 3's preset swept
    # without an SAE the preset has no sae-align layers and the rule says how to get one
    rows = [{"layers": [3, 4, 5], "target_retention": 0.1, "neighbour_retention": 0.9}]
    sig = {"peak_depth": 12, "depths": [0, 12], "gap": [0.0, 0.2]}
    d = preset_dict("m", {"n_layers": 18, "d_model": 64}, rows, sig, sae=None, provenance={"command": "c"})
    assert d["defaults"]["sae-align"]["layers"] is None and "repedit train-sae --model m" in \
        d["provenance"]["rules"]["sae-align.layers"]
    assert d["defaults"]["mrp"]["layer"] == 7 and d["defaults"]["rmu"]["layer"] == 6


# ~20 s on 2 quiet cores (one ROCR window, one target, a one-context signature); minutes on busy ones
def test_build_preset_quick_writes_a_valid_preset(smol, tmp_path):
    from repedit.recipes.presets import build_preset

    path = build_preset("smollm2-135m", quick=True, progress=False, handle=smol, out=tmp_path / "smol.json",
                        windows=[(4, 5, 6)], n_targets=1, n_neighbours=2, contexts=1)
    p = Preset.from_dict(json.loads(path.read_text()), path)
    assert p.rocr_layers == (4, 5, 6) and 1 <= p.pga_depth <= 30 and p.provenance["quick"]
    assert p.sae == "saes/smollm2-135m-L15-topk" and p.sae_align_layers[-1] == 14
    row = p.provenance["sweeps"]["rocr"]["rows"][0]
    assert row["target_retention"] < row["neighbour_retention"]   # the edit forgot the target, kept the rest
    assert dataclasses.replace(ROCRConfig(), layers=p.rocr_layers) == resolve_config(ROCRConfig(), "smollm2-135m")
