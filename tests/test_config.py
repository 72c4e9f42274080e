"""Tests for undo_lib.config: strict loading and validation of params.yaml."""

import math
import sys
from pathlib import Path

import pytest
import yaml

from undo_lib.config import ParamsError, load_params, params_from_dict, to_dict
from undo_lib.config import main as config_main

REPO_ROOT = Path(__file__).parent.parent
DELETE = object()  # marks a key that the case removes instead of setting


def _set_key(params: dict, dotted: str, value) -> None:
    """Set (or delete, for DELETE) the nested key ``dotted`` such as "distill.arithmetic.beta"."""
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value


# (id, key set in smoke_params, value, dotted path expected in the message, value text expected)
MALFORMED_CASES = [
    # Unknown keys at every level
    ("unknown-top", "foo", 1, "foo", "unknown key"),
    ("unknown-shared", "shared.colour", "red", "shared.colour", "unknown key"),
    ("unknown-data", "data.arithmetic.seq_length", 64, "data.arithmetic.seq_length", "unknown key"),
    ("unknown-tokenizer", "tokenizer.arithmetic.merges", 10, "tokenizer.arithmetic.merges", "unknown key"),
    ("unknown-model", "model.arithmetic.n_layers", 2, "model.arithmetic.n_layers", "unknown key"),
    ("unknown-pretrain", "pretrain.arithmetic.learning_rate", 0.1,
     "pretrain.arithmetic.learning_rate", "unknown key"),
    ("unknown-unlearn", "unlearn.arithmetic.GradDif", {}, "unlearn.arithmetic.GradDif", "Did you mean 'GradDiff'"),
    ("unknown-unlearn-train", "unlearn.arithmetic.train.epochs", 3,
     "unlearn.arithmetic.train.epochs", "unknown key"),
    ("unknown-maxent", "unlearn.arithmetic.MaxEnt.forget_weight", 1.0,
     "unlearn.arithmetic.MaxEnt.forget_weight", "unknown key"),
    ("unknown-distill", "distill.arithmetic.temperature", 2.0, "distill.arithmetic.temperature", "unknown key"),
    ("unknown-relearn-train", "relearn.arithmetic.train.attack", "sft",
     "relearn.arithmetic.train.attack", "unknown key"),
    ("unknown-evaluate", "evaluate.arithmetic.temperature", 0.0, "evaluate.arithmetic.temperature", "unknown key"),
    ("unknown-figures", "figures.arithmetic.dpi", 300, "figures.arithmetic.dpi", "unknown key"),
    # Unknown setting names in the per-setting sections
    ("unknown-setting-model", "model.arithmatic", {}, "model.arithmatic: unknown setting", "Did you mean 'arithmetic'"),
    ("unknown-setting-figures", "figures.korean", {}, "figures.korean: unknown setting", "Settings: ['arithmetic'"),
    ("unknown-setting-data", "data.langauge", {}, "data.langauge: unknown setting", "Did you mean 'language'"),
    # Missing keys
    ("missing-shared", "shared", DELETE, "shared", "missing"),
    ("missing-setting-section", "distill.arithmetic", DELETE, "distill.arithmetic", "missing"),
    # Wrong types
    ("str-for-int", "pretrain.arithmetic.steps", "4", "pretrain.arithmetic.steps", "'4'"),
    ("list-for-float", "distill.arithmetic.beta", [0.1], "distill.arithmetic.beta", "[0.1]"),
    ("bool-for-int", "pretrain.arithmetic.batch_size", True, "pretrain.arithmetic.batch_size", "True"),
    ("float-for-int", "shared.seed", 1.5, "shared.seed", "1.5"),
    ("bool-for-float", "pretrain.arithmetic.lr", True, "pretrain.arithmetic.lr", "True"),
    ("word-for-float", "pretrain.arithmetic.lr", "fast", "pretrain.arithmetic.lr", "'fast'"),
    ("str-for-list", "shared.settings", "arithmetic", "shared.settings", "'arithmetic'"),
    # UNDO's alpha and beta
    ("alpha-above-1", "distill.arithmetic.alphas", [0.5, 1.5], "distill.arithmetic.alphas[1]", "1.5"),
    ("alpha-negative", "distill.arithmetic.alphas", [-0.1], "distill.arithmetic.alphas[0]", "-0.1"),
    ("alpha-duplicate", "distill.arithmetic.alphas", [0.5, 0.5], "distill.arithmetic.alphas", "[0.5, 0.5]"),
    ("beta-above-1", "distill.arithmetic.beta", 1.2, "distill.arithmetic.beta", "1.2"),
    ("beta-negative", "distill.arithmetic.beta", -0.5, "distill.arithmetic.beta", "-0.5"),
    # Learning rates
    ("lr-grid-empty", "relearn.arithmetic.lrs", [], "relearn.arithmetic.lrs", "[]"),
    ("lr-grid-negative", "relearn.arithmetic.lrs", [-0.001], "relearn.arithmetic.lrs", "[-0.001]"),
    ("lr-grid-zero", "relearn.arithmetic.lrs", [0.001, 0.0], "relearn.arithmetic.lrs", "[0.001, 0.0]"),
    ("lr-grid-duplicate", "relearn.arithmetic.lrs", [0.001, 0.001], "relearn.arithmetic.lrs", "[0.001, 0.001]"),
    ("lr-negative", "pretrain.arithmetic.lr", -0.001, "pretrain.arithmetic.lr", "-0.001"),
    ("lr-zero", "distill.arithmetic.train.lr", 0.0, "distill.arithmetic.train.lr", "0.0"),
    ("lr-missing", "pretrain.arithmetic.lr", DELETE, "pretrain.arithmetic.lr", "None"),
    ("unlearn-lr-present", "unlearn.arithmetic.train.lr", 0.001, "unlearn.arithmetic.train.lr", "0.001"),
    ("relearn-lr-present", "relearn.arithmetic.train.lr", 0.001, "relearn.arithmetic.train.lr", "0.001"),
    ("min-lr-above-lr", "distill.arithmetic.train.min_lr", 1.0, "distill.arithmetic.train.min_lr", "1.0"),
    # Training loop knobs
    ("steps-negative", "pretrain.arithmetic.steps", -1, "pretrain.arithmetic.steps", "-1"),
    ("batch-size-zero", "unlearn.arithmetic.train.batch_size", 0, "unlearn.arithmetic.train.batch_size", "0"),
    ("grad-accum-zero", "pretrain.arithmetic.grad_accum", 0, "pretrain.arithmetic.grad_accum", "0"),
    ("warmup-negative", "pretrain.arithmetic.warmup_steps", -1, "pretrain.arithmetic.warmup_steps", "-1"),
    ("loss-positions-unknown", "pretrain.arithmetic.loss_positions", "prompt",
     "pretrain.arithmetic.loss_positions", "'prompt'"),
    ("distill-eval-every-zero", "distill.arithmetic.train.eval_every", 0,
     "distill.arithmetic.train.eval_every", "0"),
    ("stop-consecutive-zero", "distill.arithmetic.stop_consecutive", 0, "distill.arithmetic.stop_consecutive", "0"),
    # Model shape
    ("kv-heads-not-divisor", "model.arithmetic.num_key_value_heads", 3, "model.arithmetic.num_key_value_heads", "3"),
    ("zero-pre-attn-scalar", "model.arithmetic.query_pre_attn_scalar", 0, "model.arithmetic.query_pre_attn_scalar", "0"),
    ("int-lr", "unlearn.arithmetic.GradDiff.lrs", [1, 0.5], "GradDiff.lrs[0]", "1"),
    ("int-alpha", "distill.arithmetic.alphas", [0.5, 1], "distill.arithmetic.alphas[1]", "1"),
    ("sam-in-pretrain", "pretrain.arithmetic.sam_rho", 0.05, "pretrain.arithmetic.sam_rho", "0.05"),
    ("precision", "distill.arithmetic.train.precision", "fp16", "distill.arithmetic.train.precision", "fp16"),
    ("hidden-zero", "model.arithmetic.num_hidden_layers", 0, "model.arithmetic.num_hidden_layers", "0"),
    ("seq-len-too-long", "data.arithmetic.seq_len", 128, "data.arithmetic.seq_len", "128"),
    ("vocab-too-small", "tokenizer.arithmetic.vocab_size", 100, "tokenizer.arithmetic.vocab_size", "100"),
    # Data fractions
    ("word-fraction-above-1", "data.arithmetic.word_problem_fraction", 1.5,
     "data.arithmetic.word_problem_fraction", "1.5"),
    # Choices and cross-section rules
    ("method-unknown", "unlearn.arithmetic.SAM.method", "Adam", "unlearn.arithmetic.SAM.method", "'Adam'"),
    ("setting-unknown", "shared.settings", ["arithmetic", "chess"], "shared.settings", "'chess'"),
    ("settings-empty", "shared.settings", [], "shared.settings", "[]"),
    ("device-unknown", "shared.device", "tpu", "shared.device", "'tpu'"),
    ("robustness-step-too-late", "figures.arithmetic.robustness_step", 5, "figures.arithmetic.robustness_step", "5"),
    ("threads-negative", "shared.torch_threads", -2, "shared.torch_threads", "-2"),
    ("check-memory-word", "shared.check_memory", "yes", "shared.check_memory", "'yes'"),
    ("processes-zero", "shared.num_processes", 0, "shared.num_processes", "0"),
    ("distributed-unknown", "shared.distributed", "deepspeed", "shared.distributed", "'deepspeed'"),
    # Settings without the data a stage needs
    ("no-forget-data", "data.arithmetic.unlearn_documents", 0, "data.arithmetic.unlearn_documents", "0"),
    ("no-relearn-data", "data.arithmetic.relearn_documents", 0, "data.arithmetic.relearn_documents", "0"),
    ("no-eval-prompts", "data.arithmetic.eval_prompts", 0, "data.arithmetic.eval_prompts", "0"),
    ("method-wrong-case", "distill.arithmetic.teacher", "maxent", "distill.arithmetic.teacher", "'maxent'"),
    # Unlearning sweeps, teacher rule and seeds
    ("sweep-empty", "unlearn.arithmetic.GradDiff.lrs", [], "unlearn.arithmetic.GradDiff.lrs", "[]"),
    ("sweep-duplicate", "unlearn.arithmetic.RMU.lrs", [0.001, 0.001], "unlearn.arithmetic.RMU.lrs", "[0.001, 0.001]"),
    ("rmu-layer-out-of-range", "unlearn.arithmetic.RMU.layers", [0, 7], "unlearn.arithmetic.RMU.layers[1]", "7"),
    ("rmu-hidden-layer-too-deep", "unlearn.arithmetic.RMU.hidden_layer", 9, "unlearn.arithmetic.RMU.hidden_layer", "9"),
    ("rmu-layers-above-hidden", "unlearn.arithmetic.RMU.layers", [1], "unlearn.arithmetic.RMU.layers", "[1]"),
    ("rmu-control-unknown", "unlearn.arithmetic.RMU.control_vector", "sphere",
     "unlearn.arithmetic.RMU.control_vector", "'sphere'"),
    ("sam-rho-zero", "unlearn.arithmetic.SAM.rho", 0.0, "unlearn.arithmetic.SAM.rho", "0.0"),
    ("sam-in-train", "unlearn.arithmetic.train.sam_rho", 0.05, "unlearn.arithmetic.train.sam_rho", "0.05"),
    ("repnoise-off", "unlearn.arithmetic.RepNoise", {"alpha": 0.0, "beta": 0.0, "lrs": [0.001]},
     "unlearn.arithmetic.RepNoise", "alpha"),
    ("collapse-fraction-one", "unlearn.arithmetic.collapse_fraction", 1.0, "unlearn.arithmetic.collapse_fraction", "1.0"),
    ("fixed-lr-missing-method", "unlearn.arithmetic.teacher_rule", {"rule": "fixed_lr", "lrs": {"MaxEnt": 0.001}},
     "unlearn.arithmetic.teacher_rule.lrs", "GradDiff"),
    ("fixed-lr-not-in-sweep", "unlearn.arithmetic.teacher_rule",
     {"rule": "fixed_lr", "lrs": {"GradDiff": 0.001, "MaxEnt": 0.5, "RMU": 0.001}},
     "unlearn.arithmetic.teacher_rule.lrs.MaxEnt", "0.5"),
    ("seeds-empty", "shared.seeds", [], "shared.seeds", "[]"),
    ("seeds-duplicate", "shared.seeds", [1, 1], "shared.seeds", "[1, 1]"),
    ("budget-beyond-attack", "figures.arithmetic.attack_budgets", [0, 9], "figures.arithmetic.attack_budgets[1]", "9"),
    ("budget-not-evaluated", "figures.arithmetic.attack_budgets", [0, 3], "figures.arithmetic.attack_budgets[1]", "3"),
    # Checkpoints
    ("checkpoint-every-negative", "pretrain.arithmetic.checkpoint_every", -1,
     "pretrain.arithmetic.checkpoint_every", "-1"),
    ("checkpoint-every-float", "relearn.arithmetic.train.checkpoint_every", 2.5,
     "relearn.arithmetic.train.checkpoint_every", "2.5"),
    # Stop rule and optimizer values that would silently change a run
    ("stop-margin-negative", "distill.arithmetic.stop_margin", -1.0, "distill.arithmetic.stop_margin", "-1.0"),
    ("stop-margin-nan", "distill.arithmetic.stop_margin", float("nan"), "distill.arithmetic.stop_margin", "nan"),
    ("stop-margin-five", "distill.arithmetic.stop_margin", 5.0, "distill.arithmetic.stop_margin", "5.0"),
    ("weight-decay-inf", "pretrain.arithmetic.weight_decay", float("inf"), "pretrain.arithmetic.weight_decay", "inf"),
    ("grad-norm-inf", "pretrain.arithmetic.max_grad_norm", float("inf"), "pretrain.arithmetic.max_grad_norm", "inf"),
    # Language data cleaning
    ("hangul-share-zero", "data.language.min_hangul_share", 0, "data.language.min_hangul_share", "0.0"),
    ("hangul-share-above-1", "data.language.min_hangul_share", 1.5, "data.language.min_hangul_share", "1.5"),
    ("document-chars-below-line", "data.language.max_document_chars", 19, "data.language.max_document_chars", "19"),
]


@pytest.mark.parametrize(
    "key, value, expected_path, expected_value",
    [case[1:] for case in MALFORMED_CASES],
    ids=[case[0] for case in MALFORMED_CASES],
)
def test_malformed_params_rejected(smoke_params_dict, key, value, expected_path, expected_value):
    _set_key(smoke_params_dict, key, value)

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(smoke_params_dict)

    message = str(excinfo.value)
    assert expected_path in message, f"message does not name the key {expected_path!r}: {message}"
    assert expected_value in message, f"message does not show {expected_value!r}: {message}"


def test_malformed_case_ids_unique():
    ids = [case[0] for case in MALFORMED_CASES]

    assert len(ids) == len(set(ids))
    assert len(ids) >= 30


# Values that cannot be right but that validation accepts, so a run fails or reports wrong numbers later.
VALIDATION_GAP_CASES = [
    ("evaluate-batch-size-zero", "evaluate.arithmetic.batch_size", 0, "evaluate.arithmetic.batch_size"),
    ("evaluate-max-new-tokens-zero", "evaluate.arithmetic.max_new_tokens", 0,
     "evaluate.arithmetic.max_new_tokens"),
    ("retain-weight-negative", "unlearn.arithmetic.MaxEnt.retain_weight", -1.0,
     "unlearn.arithmetic.MaxEnt.retain_weight"),
    ("robustness-step-negative", "figures.arithmetic.robustness_step", -1, "figures.arithmetic.robustness_step"),
    ("lr-infinite", "pretrain.arithmetic.lr", math.inf, "pretrain.arithmetic.lr"),
]


@pytest.mark.parametrize(
    "key, value, expected_path",
    [case[1:] for case in VALIDATION_GAP_CASES],
    ids=[case[0] for case in VALIDATION_GAP_CASES],
)
def test_unchecked_values_rejected(smoke_params_dict, key, value, expected_path):
    _set_key(smoke_params_dict, key, value)

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(smoke_params_dict)

    assert expected_path in str(excinfo.value)


def test_top_level_key_path(smoke_params_dict):
    smoke_params_dict["foo"] = 1

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(smoke_params_dict)

    assert str(excinfo.value).startswith("foo: unknown key")


def test_misspelt_key_suggests_fix(smoke_params_dict):
    smoke_params_dict["distill"]["arithmetic"]["alpha"] = [0.5]

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(smoke_params_dict)

    message = str(excinfo.value)
    assert "distill.arithmetic.alpha:" in message
    assert "Did you mean 'alphas'?" in message


def test_non_mapping_file_rejected():
    with pytest.raises(ParamsError, match="mapping"):
        params_from_dict(["shared", "data"])


def test_non_mapping_file_named(tmp_path):
    path = tmp_path / "profile.yaml"
    path.write_text("- shared\n- data\n", encoding="utf-8")

    with pytest.raises(ParamsError) as excinfo:
        load_params(path)

    assert f"{path}: expected a mapping of sections, got list" in str(excinfo.value)


def test_yaml_syntax_error_located(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("shared:\n  seeds: [0, 1\nmodel: {}\n", encoding="utf-8")

    with pytest.raises(ParamsError) as excinfo:
        load_params(path)

    message = str(excinfo.value)
    assert message.startswith(f"{path}, line 3, column 6: invalid YAML:"), message
    assert "every bracket and quote is closed" in message


def test_main_reports_yaml_error(tmp_path, monkeypatch):
    path = tmp_path / "params.yaml"
    path.write_text("shared: [\n", encoding="utf-8")
    monkeypatch.setattr(sys, "argv", ["undo_lib.config", str(path)])

    with pytest.raises(SystemExit) as excinfo:
        config_main()

    assert str(excinfo.value).startswith(f"invalid params: {path}, line 2, column 1: invalid YAML:")


@pytest.mark.parametrize("name", ["params.yaml", "tests/smoke_params.yaml"])
def test_repository_params_load(name):
    params = load_params(REPO_ROOT / name)

    assert params.shared.settings == ("arithmetic", "language")
    assert "arithmetic" in params.distill
    assert "language" in params.data
    assert params.data["language"].seq_len <= params.model["language"].max_position_embeddings


def test_load_params_missing_file(tmp_path):
    missing = tmp_path / "nowhere" / "params.yaml"

    with pytest.raises(ParamsError) as excinfo:
        load_params(missing)

    assert str(missing) in str(excinfo.value)


def test_float_from_yaml_string(tmp_path, smoke_params_dict):
    text = yaml.safe_dump(smoke_params_dict).replace("lr: 0.003", "lr: 1e-3", 1)
    path = tmp_path / "params.yaml"
    path.write_text(text, encoding="utf-8")
    assert isinstance(yaml.safe_load(text)["distill"]["arithmetic"]["train"]["lr"], str), \
        "precondition: PyYAML should read 1e-3 as a string"

    params = load_params(path)

    assert params.distill["arithmetic"].train.lr == 1e-3
    assert isinstance(params.distill["arithmetic"].train.lr, float)


def test_int_for_float_converted(smoke_params_dict):
    smoke_params_dict["distill"]["arithmetic"]["beta"] = 1

    params = params_from_dict(smoke_params_dict)

    assert params.distill["arithmetic"].beta == 1.0
    assert isinstance(params.distill["arithmetic"].beta, float)


def test_defaults_fill_omitted_keys(smoke_params_dict):
    smoke_params_dict["pretrain"]["arithmetic"].pop("grad_accum", None)
    smoke_params_dict["unlearn"]["arithmetic"]["RMU"].pop("control_vector", None)

    params = params_from_dict(smoke_params_dict)

    assert params.pretrain["arithmetic"].grad_accum == 1
    assert params.unlearn["arithmetic"].RMU.control_vector == "gaussian"


def test_to_dict_round_trip(smoke_params_dict):
    params = params_from_dict(smoke_params_dict)

    plain = to_dict(params)
    rebuilt = params_from_dict(yaml.safe_load(yaml.safe_dump(plain)))

    assert rebuilt == params
    assert plain["distill"]["arithmetic"]["alphas"] == [0.5]
    assert plain["shared"]["settings"] == ["arithmetic", "language"]


# ----------------------------------------------------------------------------------------------
# Offline language packages


def _offline_language(smoke_params_dict, packages: dict, include_python_docs: bool = True) -> dict:
    smoke_params_dict["data"]["language"]["source"] = "offline"
    smoke_params_dict["data"]["language"]["offline"] = {"packages": packages,
                                                        "include_python_docs": include_python_docs}
    return smoke_params_dict


def test_hangul_share_message_gives_reason(smoke_params_dict):
    smoke_params_dict["data"]["language"]["min_hangul_share"] = 0

    with pytest.raises(ParamsError, match=r"in \(0, 1\], because at 0 every line"):
        params_from_dict(smoke_params_dict)


def test_document_chars_minimum_accepted(smoke_params_dict):
    smoke_params_dict["data"]["language"]["max_document_chars"] = 20

    params = params_from_dict(smoke_params_dict)

    assert params.data["language"].max_document_chars == 20


def test_offline_unknown_package_rejected(smoke_params_dict):
    params = _offline_language(smoke_params_dict, {"debian-faq-ko": "11.1", "cowsay": "3.03"})

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(params)

    message = str(excinfo.value)
    assert "data.language.offline.packages: invalid value 'cowsay'" in message
    assert "'libreoffice-help-ko': 'korean'" in message
    assert "'debian-handbook': 'english'" in message
    assert "data.language.source: local" in message


def test_offline_without_korean_rejected(smoke_params_dict):
    params = _offline_language(smoke_params_dict, {"debian-faq": "11.1", "debian-handbook": "11.20220922"})

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(params)

    message = str(excinfo.value)
    assert "data.language.offline.packages" in message
    assert "at least one Korean package" in message
    assert "libreoffice-help-ko" in message


def test_offline_without_english_rejected(smoke_params_dict):
    params = _offline_language(smoke_params_dict, {"debian-faq-ko": "11.1"}, include_python_docs=False)

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(params)

    message = str(excinfo.value)
    assert "at least one English package" in message
    assert "data.language.offline.include_python_docs set to true" in message


def test_offline_python_docs_count_as_english(smoke_params_dict):
    params = params_from_dict(_offline_language(smoke_params_dict, {"debian-faq-ko": "11.1"}))

    assert dict(params.data["language"].offline.packages) == {"debian-faq-ko": "11.1"}


def test_offline_packages_ignored_for_local(smoke_params_dict):
    smoke_params_dict["data"]["language"]["offline"] = {"packages": {"cowsay": "3.03"}}

    params = params_from_dict(smoke_params_dict)

    assert params.data["language"].source == "local"


# Several training processes


def test_processes_zero_message_gives_fix(smoke_params_dict):
    smoke_params_dict["shared"]["num_processes"] = 0

    with pytest.raises(ParamsError, match=r"shared.num_processes: invalid value 0; it must be >= 1"):
        params_from_dict(smoke_params_dict)


def test_two_processes_accepted(smoke_params_dict):
    smoke_params_dict["shared"]["num_processes"] = 2

    assert params_from_dict(smoke_params_dict).shared.num_processes == 2


@pytest.mark.parametrize("section", ["pretrain.arithmetic", "unlearn.language.train", "distill.arithmetic.train",
                                     "relearn.language.train"])
def test_processes_with_checkpoints_rejected(smoke_params_dict, section):
    smoke_params_dict["shared"]["num_processes"] = 2
    _set_key(smoke_params_dict, f"{section}.checkpoint_every", 2)

    with pytest.raises(ParamsError) as excinfo:
        params_from_dict(smoke_params_dict)

    message = str(excinfo.value)
    assert f"{section}.checkpoint_every: invalid value 2" in message
    assert "shared.num_processes=2" in message


def test_processes_not_dividing_batch_rejected(smoke_params_dict):
    smoke_params_dict["shared"]["num_processes"] = 3

    with pytest.raises(ParamsError, match=r"pretrain.arithmetic.batch_size: invalid value 4; it must be a "
                                          r"multiple of shared.num_processes=3"):
        params_from_dict(smoke_params_dict)


def test_processes_on_cuda_accepted(smoke_params_dict):
    # One process per GPU; whether enough GPUs are visible is checked when a stage starts
    smoke_params_dict["shared"]["num_processes"] = 2
    smoke_params_dict["shared"]["device"] = "cuda"

    assert params_from_dict(smoke_params_dict).shared.device == "cuda"
