"""repedit as an installed library: build the wheel (from the sdist, as pip would), install it with no
dependencies into a fresh virtual environment that sees the heavy dependencies of this interpreter's
environment through a .pth file (nothing is downloaded), and run the README's "60-second tour" from a
folder outside the checkout with no data settings, then the CLI entry points.

Used by tests/test_wheel.py (CI) and `./dev wheel-check` (`python tests/wheel_check.py [workdir]`).

A path line in a .pth file is added to sys.path without processing the .pth files inside it, so the
checkout's editable install (`_editable_impl_repedit.pth` in .venv) stays invisible: `repedit` is the
wheel's copy, and its data (probes/, saes/) must come from the wheel.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAE = "saes/smollm2-135m-L15-topk"
MY_FACTS = ("subject,answer,prompt\n"            # the tour's last line loads this file from the working dir
            "Zorbland,Quix,The capital of Zorbland is\n"
            "Mervania,Plosk,The capital of Mervania is\n"
            "Tandoria,Vell,The capital of Tandoria is\n"
            "Krastia,Omdu,The capital of Krastia is\n")
# run after the tour, in the same process: what the wheel must carry and where it must come from
CHECKS = f"""
import json, repedit
from repedit.data import data_dirs
from repedit.models.presets import preset_for
from repedit.models.registry import converted_dir
from repedit.fit.saes import load_sae
from repedit.suites import available_suites, load_text
from repedit.suites.pools import load_pool

sae = load_sae({SAE!r}, handle=h)                      # the shipped SAE by its relative name
print("REPORT " + json.dumps({{
    "repedit": repedit.__file__,
    "probes": [[how, str(p)] for how, p in data_dirs("probes")],
    "saes": [[how, str(p)] for how, p in data_dirs("saes")],
    "preset_sae": str(preset_for(h).sae_path()),
    "sae_d_sae": int(sae.W_dec.shape[0]),
    "suites": available_suites(), "wiki_docs": len(load_text("wiki", "train")),
    "pool": len(load_pool("natural")), "my_facts": len(facts),
    "model_source": h.source, "converted_dir": str(converted_dir("smollm2-135m")),
}}))
"""


def tour_code(readme: Path = ROOT / "README.md") -> str:
    """The README's "## 60-second tour (Python)" code block, as written."""
    section = readme.read_text().split("## 60-second tour (Python)", 1)
    found = re.search(r"```python\n(.*?)```", section[1], re.S) if len(section) == 2 else None
    if found is None:
        raise RuntimeError(f"{readme} has no '## 60-second tour (Python)' section with a ```python block")
    return found.group(1)


def _run(cmd: list, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, cmd))} failed ({res.returncode}):\n{res.stdout[-4000:]}\n"
                           f"{res.stderr[-4000:]}")
    return res


def build_wheel(out: Path) -> tuple[Path, Path]:
    """(sdist, wheel): the sdist of this checkout, and the wheel built from that unpacked sdist."""
    try:
        import hatchling  # noqa: F401
    except ImportError as exc:
        raise RuntimeError("building the wheel needs hatchling: pip install -e '.[dev]' (or pip install "
                           "hatchling)") from exc
    out.mkdir(parents=True, exist_ok=True)
    _run([sys.executable, "-m", "hatchling", "build", "-t", "sdist", "-d", out], cwd=ROOT)
    (sdist,) = out.glob("repedit-*.tar.gz")
    with tarfile.open(sdist) as tar:
        tar.extractall(out / "src", filter="data")
    (src,) = (out / "src").iterdir()
    _run([sys.executable, "-m", "hatchling", "build", "-t", "wheel", "-d", out], cwd=src)
    (wheel,) = out.glob("repedit-*.whl")
    return sdist, wheel


def fresh_venv(path: Path, wheel: Path) -> Path:
    """A new venv at `path` with `wheel` installed (no dependencies), then a .pth naming this interpreter's
    site-packages for the dependencies. Returns its python."""
    _run([sys.executable, "-m", "venv", "--without-pip", path])
    python = path / "bin" / "python"
    # this environment's pip installs into the fresh one (--python); the .pth comes after, so pip sees an
    # empty environment and never touches the checkout's editable install
    _run([sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps", "--no-index", wheel],
         env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    site = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "repedit-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return python


def clean_env() -> dict:
    """The environment of the installed copy: offline, no data settings, no PYTHONPATH."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("REPEDIT_PROBES", "REPEDIT_DATA", "REPEDIT_PRESETS", "PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONDONTWRITEBYTECODE": "1"}


def run_tour(python: Path, workdir: Path) -> dict:
    """Run the README tour + `CHECKS` with `python` in `workdir`; returns the report (and the tour's time)."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "my_facts.csv").write_text(MY_FACTS)
    (workdir / "tour.py").write_text(tour_code() + CHECKS)
    t0 = time.perf_counter()
    res = _run([python, "tour.py"], cwd=workdir, env=clean_env())
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("REPORT ")), None)
    if line is None:
        raise RuntimeError(f"the tour printed no report:\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}")
    return {**json.loads(line[len("REPORT "):]), "seconds": round(time.perf_counter() - t0, 1)}


def run_cli(venv: Path, workdir: Path, *args: str) -> str:
    """`repedit <args>` from the fresh venv's entry point (its stdout)."""
    return _run([venv / "bin" / "repedit", *args], cwd=workdir, env=clean_env()).stdout


def main(work: Path) -> None:
    t0 = time.perf_counter()
    sdist, wheel = build_wheel(work / "dist")
    print(f"built {sdist.name} ({sdist.stat().st_size / 1e6:.1f} MB) and, from it, {wheel.name} "
          f"({wheel.stat().st_size / 1e6:.1f} MB)", flush=True)
    python = fresh_venv(work / "venv", wheel)
    print(f"fresh venv {work / 'venv'}; running the README tour in {work / 'tour'} ...", flush=True)
    report = run_tour(python, work / "tour")
    print(json.dumps(report, indent=2))
    if not report["repedit"].startswith(str(work / "venv")):
        raise SystemExit(f"repedit was imported from {report['repedit']}, not from the fresh venv")
    print(run_cli(work / "venv", work / "tour", "models").strip())
    print(f"wheel check passed in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    import tempfile

    if len(sys.argv) > 1:
        main(Path(sys.argv[1]).resolve())
    else:
        with tempfile.TemporaryDirectory(prefix="repedit-wheel-") as tmp:
            main(Path(tmp))
