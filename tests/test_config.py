import pytest

from date_diffusion import DATEConfig


def test_paper_defaults():
    cfg = DATEConfig()
    assert (cfg.rho, cfg.update_every, cfg.grad_steps, cfg.anchor, cfg.prior_weight) == (0.5, 10, 1, "previous", 0.0)
    assert cfg.update_indices(50) == [0, 10, 20, 30, 40]


def test_explicit_steps_and_intervals():
    assert DATEConfig(update_steps=[20, 0]).update_indices(50) == [0, 20]
    with pytest.raises(ValueError, match="update_steps lists 20 twice"):  # never deduplicated silently
        DATEConfig(update_steps=[20, 0, 20])
    assert DATEConfig(update_steps=[20]).update_every is None
    assert DATEConfig(update_intervals=[(0, 3), (10, 12)]).update_indices(50) == [0, 1, 2, 10, 11]
    assert DATEConfig(update_steps=[]).update_indices(50) == []


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(rho=-0.1), "rho"),
        (dict(rho=float("nan")), "rho"),
        (dict(rho=float("inf")), "rho"),
        (dict(update_every=0), "update_every"),
        (dict(update_every=None), "update_every"),
        (dict(grad_steps=0), "grad_steps"),
        (dict(anchor="start"), "anchor"),
        (dict(prior_weight=-1.0), "prior_weight"),
        (dict(update_steps=[-1]), "update_steps"),
        (dict(update_intervals=[(5, 2)]), "update_intervals"),
        (dict(update_every=5, update_steps=[1]), "update_every"),
        (dict(update_steps=[1], update_intervals=[(0, 2)]), "update_steps"),
    ],
)
def test_invalid_values_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        DATEConfig(**kwargs)


def test_indices_outside_the_run_are_rejected_with_the_allowed_range():
    with pytest.raises(ValueError, match=r"update_steps 50 are outside the run.*0\.\.49"):
        DATEConfig(update_steps=[0, 50]).update_indices(50)
    with pytest.raises(ValueError, match="update_intervals"):
        DATEConfig(update_intervals=[(40, 51)]).update_indices(50)


def test_to_dict_is_json_ready():
    import json

    d = DATEConfig(update_intervals=[(0, 2)]).to_dict()
    assert json.loads(json.dumps(d))["update_intervals"] == [[0, 2]]


def test_replace_on_a_default_config_may_set_the_other_member_of_a_group():
    """`dataclasses.replace` copies the paper's defaults as defaults, not as values the user gave."""
    from dataclasses import replace

    relative = replace(DATEConfig(), rho_relative=0.002)
    assert relative.rho is None and relative.rho_relative == 0.002
    steps = replace(DATEConfig(), update_steps=[0, 5])
    assert steps.update_every is None and list(steps.update_steps) == [0, 5]
    with pytest.raises(ValueError, match="give only one of rho"):  # a rho the user gave still conflicts
        replace(DATEConfig(rho=0.5), rho_relative=0.002)
    assert DATEConfig().to_dict()["update_every"] == 10 and DATEConfig() == DATEConfig(rho=0.5, update_every=10)
