import numpy as np
import pytest
import torch

from repedit import Site
from repedit.errors import InputError
from repedit.forward.capture import capture
from repedit.locate.probe_directions import fit_probe
from repedit.suites import load_suite


@pytest.fixture(scope="module")
def country_vs_element(smol):
    """Last-token residuals of 'Tell me about <country>.' vs 'Tell me about <element>.' (layer 15)."""
    countries = [f"Tell me about {f.subject}." for f in load_suite("capitals", limit=60)]
    elements = [f"Tell me about {f.subject}." for f in load_suite("elements", limit=60)]
    site = Site(15, "resid_post")
    acts = capture(smol, countries + elements, [site])[site]
    return acts, torch.tensor([1] * 60 + [0] * 60), site


@pytest.mark.parametrize("method", ["logistic", "diff_means"])
def test_probe_learns_a_real_concept(country_vs_element, method):
    acts, labels, site = country_vs_element
    probe = fit_probe(acts, labels, method=method, site=site)
    assert probe.cv_accuracy >= 0.9, probe.cv_accuracy
    assert abs(float(probe.direction.norm()) - 1) < 1e-5
    assert probe.accuracy(acts, labels) >= 0.9
    # the readout direction separates the classes in model space
    proj = acts @ probe.direction
    assert proj[labels == 1].mean() > proj[labels == 0].mean()


def test_probe_is_at_chance_on_shuffled_labels(country_vs_element):
    acts, labels, _ = country_vs_element
    accs = []
    for seed in range(5):
        perm = labels[torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))]
        accs.append(fit_probe(acts, perm, seed=seed).cv_accuracy)
    assert abs(np.mean(accs) - 0.5) < 0.12, accs


def test_leave_one_group_out(country_vs_element):
    acts, labels, _ = country_vs_element
    groups = [i % 6 for i in range(len(labels))]
    probe = fit_probe(acts, labels, groups=groups)
    assert len(probe.fold_accuracies) == 6 and probe.cv_accuracy >= 0.9


@pytest.mark.fast
def test_probe_input_errors():
    x = torch.randn(10, 4)
    with pytest.raises(InputError):
        fit_probe(x, [0] * 10)
    with pytest.raises(InputError):
        fit_probe(x, [0, 1] * 5, method="svm")
    with pytest.raises(InputError):
        fit_probe(x, [0, 1] * 4)
    with pytest.raises(InputError):
        fit_probe(x, [0, 1] * 5, C=0)
