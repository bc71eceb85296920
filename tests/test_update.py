import pytest
import torch

from date_diffusion.core.update import date_update, prior_gradient


def reference_update(c, g, rho):
    """The reference code's rule, with no guard."""
    return c - rho * g / g.flatten(1).norm(dim=1).view(-1, 1, 1)


def test_accumulate_moves_each_sample_exactly_rho_and_matches_reference():
    torch.manual_seed(0)
    c = torch.randn(3, 7, 5, dtype=torch.float64)
    g = torch.randn(3, 7, 5, dtype=torch.float64) * torch.tensor([1e-6, 1.0, 1e4], dtype=torch.float64).view(3, 1, 1)
    res = date_update(c, c.clone(), g, rho=0.5)
    moved = (res.embeds - c).flatten(1).norm(dim=1)
    torch.testing.assert_close(moved, torch.full((3,), 0.5, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(res.embeds, reference_update(c, g, 0.5), rtol=0, atol=1e-12)
    assert not res.skipped.any()


def test_guard_keeps_reference_result_for_tiny_float32_gradients():
    # small models give gradient norms near 1e-6: no epsilon may change the step
    torch.manual_seed(1)
    c = torch.randn(2, 77, 16)
    g = torch.randn(2, 77, 16) * 1e-9
    res = date_update(c, c, g, rho=0.5)
    torch.testing.assert_close(res.embeds, reference_update(c, g, 0.5), rtol=1e-6, atol=1e-6)
    assert not res.skipped.any()


def test_original_anchor_restarts_from_c_org():
    torch.manual_seed(2)
    c_org = torch.randn(2, 4, 3, dtype=torch.float64)
    c = c_org + torch.randn_like(c_org)  # already moved away
    g = torch.randn_like(c)
    res = date_update(c, c_org, g, rho=0.7, anchor="original")
    dist = (res.embeds - c_org).flatten(1).norm(dim=1)
    torch.testing.assert_close(dist, torch.full((2,), 0.7, dtype=torch.float64), rtol=0, atol=1e-12)


@pytest.mark.parametrize("bad", [0.0, float("nan"), float("inf")])
def test_zero_or_nonfinite_gradient_skips_that_sample_only(bad):
    torch.manual_seed(3)
    c = torch.randn(2, 4, 3)
    g = torch.randn(2, 4, 3)
    g[0] = 0.0
    g[0, 0, 0] = bad
    res = date_update(c, c, g, rho=0.5)
    assert torch.isfinite(res.embeds).all()
    assert res.skipped.tolist() == [True, False]
    assert torch.equal(res.embeds[0], c[0])
    torch.testing.assert_close(res.embeds[1], reference_update(c, g, 0.5)[1])


def test_samples_are_independent():
    torch.manual_seed(4)
    c, g = torch.randn(3, 4, 3), torch.randn(3, 4, 3)
    both = date_update(c, c, g, rho=0.5).embeds
    alone = date_update(c[1:2], c[1:2], g[1:2], rho=0.5).embeds
    assert torch.equal(both[1:2], alone)


def test_prior_gradient_matches_autograd_per_sample_mean():
    torch.manual_seed(5)
    c_org = torch.randn(2, 4, 3, dtype=torch.float64)
    c = (c_org + torch.randn_like(c_org)).requires_grad_(True)
    w = 591.36
    loss = (w * ((c - c_org) ** 2).flatten(1).mean(dim=1)).sum()
    (expected,) = torch.autograd.grad(loss, c)
    torch.testing.assert_close(prior_gradient(c.detach(), c_org, w), expected)
    # and the update uses loss gradient + prior gradient
    g = torch.randn_like(c_org)
    res = date_update(c.detach(), c_org, g, rho=0.5, prior_weight=w)
    torch.testing.assert_close(res.embeds, reference_update(c.detach(), g + expected, 0.5))


def test_rejects_bad_anchor_and_shapes():
    c = torch.zeros(1, 2, 2)
    with pytest.raises(ValueError, match="anchor"):
        date_update(c, c, c, 0.5, anchor="start")
    with pytest.raises(ValueError, match="shapes"):
        date_update(c, c, torch.zeros(1, 2, 3), 0.5)
