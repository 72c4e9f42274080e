"""Tests for undo_lib.names: the models each relearning stage attacks, and their folders."""

import pytest

from undo_lib.config import params_from_dict
from undo_lib.names import RELEARN_GROUPS, attack_targets, relearn_group


def test_reference_group_models(smoke_params_dict):
    params = params_from_dict(smoke_params_dict)

    targets = attack_targets(params, "arithmetic", "reference")

    assert targets == [("full", "full"), ("oracle", "oracle"), ("match_full", "match_full"),
                       ("match_random_init", "match_random_init")]


def test_unlearned_group_every_sweep_point(smoke_params_dict):
    smoke_params_dict["unlearn"]["arithmetic"]["GradDiff"]["lrs"] = [1e-3, 3e-3]
    params = params_from_dict(smoke_params_dict)

    targets = dict(attack_targets(params, "arithmetic", "unlearned"))

    assert targets["GradDiff_lr_0.003"] == "unlearned/GradDiff/lr_0.003"
    assert targets["RepNoise_lr_0.001"] == "unlearned/RepNoise/lr_0.001"
    assert len(targets) == 6  # two GradDiff points and one point of each other run


def test_undo_group_alpha_folders(smoke_params_dict):
    smoke_params_dict["distill"]["language"]["alphas"] = [0.2, 0.7]
    params = params_from_dict(smoke_params_dict)

    targets = attack_targets(params, "language", "undo")

    assert targets == [("undo_0.2", "undo/alpha_0.2"), ("undo_0.7", "undo/alpha_0.7")]


@pytest.mark.parametrize("group", RELEARN_GROUPS)
def test_group_of_each_target(smoke_params_dict, group):
    params = params_from_dict(smoke_params_dict)

    names = [name for name, _ in attack_targets(params, "arithmetic", group)]

    assert names
    assert {relearn_group(name) for name in names} == {group}


def test_unknown_group_rejected(smoke_params_dict):
    params = params_from_dict(smoke_params_dict)

    with pytest.raises(ValueError, match="unknown relearning group 'teachers'"):
        attack_targets(params, "arithmetic", "teachers")
