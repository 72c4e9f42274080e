"""Per-setting choices of Lee et al. (arXiv 2506.06278), in one place, so every notebook serves both.

- arithmetic: retain = add/sub accuracy, forget = mul/div accuracy (higher is better), an absolute
  stop margin, and a relearning attack on mul/div problems.
- language: retain = English validation CE, forget = Korean validation CE (lower is better, so a
  higher forget CE means more forgotten), a relative stop margin, and an attack on Korean text.

The notebooks ask this module for the evaluator, the evaluation files, the stop rule and the
relearning-data check of their setting; the stage code around them is shared.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from undo_lib.config import DistillParams, Params


@dataclass(frozen=True)
class MetricSpec:
    """Labels, direction and plot range of a setting's retain and forget metrics."""

    retain_label: str
    forget_label: str
    higher_is_better: bool  # True for accuracies; False for cross-entropies
    limits: tuple[float, float] | None  # fixed y-axis range, or None to fit the data


METRICS = {
    "arithmetic": MetricSpec("add/sub accuracy", "mul/div accuracy", True, (-0.02, 1.02)),
    "language": MetricSpec("English CE (nats)", "Korean CE (nats)", False, None),
}

EVALUATION_FILES = {
    "arithmetic": ("eval.jsonl", "english_validation.jsonl"),
    "language": ("english_validation.jsonl", "korean_validation.jsonl"),
}


def metric_spec(setting: str) -> MetricSpec:
    """Return the MetricSpec of ``setting``."""
    if setting not in METRICS:
        raise ValueError(f"unknown setting {setting!r}; expected one of {sorted(METRICS)}")
    return METRICS[setting]


def evaluation_files(setting: str) -> list[str]:
    """Return the data files (relative to the data folder) that the setting's evaluator reads."""
    metric_spec(setting)
    return list(EVALUATION_FILES[setting])


def make_evaluator(params: Params, setting: str, tokenizer, data_dir: str | Path, with_english: bool = True,
                   forget_only: bool = False):
    """Build the evaluator every stage of ``setting`` uses (a callable ``model -> metrics dict``).

    ``with_english`` adds the English CE to the arithmetic metrics; the language metrics contain it
    unless ``forget_only``, because it is their retain metric. ``forget_only`` (relearning attacks,
    whose curves need only the forget metric) returns ``forget`` and its parts, at half the cost.
    """
    if setting == "arithmetic":
        from undo_lib.runtime import arithmetic_evaluator

        return arithmetic_evaluator(params, setting, tokenizer, data_dir, with_english=with_english and not forget_only,
                                    forget_only=forget_only)
    from undo_lib.evaluate import LanguageEvaluator
    from undo_lib.io import read_jsonl

    data_dir, evaluate = Path(data_dir), params.evaluate[setting]
    english = [] if forget_only else \
        [r["text"] for r in read_jsonl(data_dir / "english_validation.jsonl")[: evaluate.documents]]
    korean = [r["text"] for r in read_jsonl(data_dir / "korean_validation.jsonl")[: evaluate.documents]]
    return LanguageEvaluator(tokenizer, english, korean, params.data[setting].seq_len, evaluate.batch_size)


def make_stop_rule(setting: str, teacher_metrics: dict, section: DistillParams, match_forget: bool = False):
    """Build UNDO's early-stop rule against the teacher's metrics measured before distillation.

    ``match_forget`` (oracle matching, E1) also requires the forget metric to reach the teacher's.
    """
    from undo_lib.distill import MatchingStopRule, RelativeLossStopRule, RetainStopRule

    accuracy = metric_spec(setting).higher_is_better
    rule = (RetainStopRule if accuracy else RelativeLossStopRule)(
        teacher_metrics["retain"], section.stop_margin, section.stop_consecutive)
    if match_forget:
        return MatchingStopRule(rule, teacher_metrics["forget"], section.stop_margin, relative=not accuracy)
    return rule


def check_relearn_domain(setting: str, records: list[dict]) -> None:
    """Raise unless every relearning record is forget-domain data (mul/div problems; Korean text)."""
    if setting == "arithmetic":
        from undo_lib.prepare import check_relearn_domain as check_arithmetic

        check_arithmetic(records)
        return
    bad = [r for r in records if r.get("source") != "korean"]
    if bad:
        raise ValueError(f"relearning data must be Korean text only; found {len(bad)} other records, "
                         f"e.g. {bad[0]!r}")


def write_data(params: Params, setting: str, out_dir: str | Path) -> dict:
    """Run the data stage of ``setting`` and return its manifest."""
    seed = params.shared.seed
    if setting == "arithmetic":
        from undo_lib.prepare import write_arithmetic_data

        return write_arithmetic_data(params.data[setting], params.tokenizer[setting], seed, out_dir)
    from undo_lib.prepare_language import write_language_data

    return write_language_data(params.data[setting], params.tokenizer[setting], seed, out_dir)


def chance_retain(setting: str, vocab_size: int) -> float:
    """Return the retain metric at chance: 0 accuracy, or the CE of uniform predictions."""
    return 0.0 if metric_spec(setting).higher_is_better else math.log(vocab_size)


def retain_fraction(setting: str, retain: float, reference_retain: float, vocab_size: int) -> float:
    """Return the share of the reference model's retain performance above chance that ``retain`` keeps.

    1 means as good as the reference (the full model before unlearning), 0 means chance. The same
    formula serves accuracies and cross-entropies, because both are measured from chance.
    """
    chance = chance_retain(setting, vocab_size)
    if reference_retain == chance:
        return float("nan")
    return (retain - chance) / (reference_retain - chance)
