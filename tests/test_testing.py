"""The numerics rule itself: what passes and what never does."""
import pytest
import torch

from fastdiff.testing import assert_numerics


def _case():
    ref = torch.randn(64, dtype=torch.float64)
    return ref.float(), ref


def test_an_output_as_accurate_as_torch_passes():
    got, ref = _case()
    assert_numerics(got.clone(), got, ref)


@pytest.mark.parametrize("bad", ["nan", "inf", "wrong"])
def test_a_bad_output_fails_even_where_the_baseline_overflowed(bad):
    got, ref = _case()
    baseline = got.clone()
    baseline[3] = float("inf")  # the torch computation overflowed at one element
    got = got.clone()
    if bad == "wrong":
        got[7] += 1.0
    else:
        got.fill_(float(bad))
    with pytest.raises(AssertionError):
        assert_numerics(got, baseline, ref)


def test_nan_matches_only_where_the_reference_is_nan():
    got, ref = _case()
    ref[5] = float("nan")
    got[5] = float("nan")
    assert_numerics(got, got.clone(), ref)
    got[5] = 0.0
    with pytest.raises(AssertionError):
        assert_numerics(got, got.clone(), ref)
