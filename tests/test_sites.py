import pytest

from repedit import Site, SiteNotFoundError
from repedit.sites import Point, layout_for


@pytest.mark.fast
def test_parse_forms():
    assert Site.parse("resid_post.12") == Site(12, Point.RESID_POST)
    assert Site.parse("12.mlp_hidden", position=None) == Site(12, "mlp_hidden", None)
    assert Site.parse("blocks.3.mlp.hook_post") == Site(3, Point.MLP_HIDDEN)
    assert Site.parse("blocks.0.hook_resid_pre") == Site(0, Point.RESID_PRE)


@pytest.mark.fast
def test_bad_point_lists_close_matches():
    with pytest.raises(SiteNotFoundError) as err:
        Site(3, "resid_psot")
    assert "resid_post" in str(err.value)
    with pytest.raises(KeyError):  # also a KeyError, as the builtin it refines
        Site.parse("mlp_hiden.2")


def test_bad_layer_and_unknown_architecture(smol):
    with pytest.raises(SiteNotFoundError) as err:
        smol.check_site(Site(30, "resid_post"))
    assert "0..29" in str(err.value)
    with pytest.raises(SiteNotFoundError):
        smol.matrix("mlp_out", 99)
    with pytest.raises(SiteNotFoundError) as err:
        layout_for("mamba")
    assert "llama" in str(err.value)


@pytest.mark.fast
def test_matrix_orientation_per_architecture(tiny_dirs):
    import repedit

    for arch, path in tiny_dirs.items():
        h = repedit.models.load_hf(path)
        ref = h.matrix("mlp_out", 1)
        shape = (h.d_model, h.d_mlp) if ref.orientation == "out_in" else (h.d_mlp, h.d_model)
        assert tuple(ref.param.shape) == shape, arch
