"""Log-likelihood multiple-choice accuracy in the prompt format of lm-evaluation-harness.

Lee et al. (arXiv 2506.06278) report WMDP-bio and WMDP-cyber (0-shot) and MMLU (5-shot) accuracy
from lm-evaluation-harness. This module scores the same prompts offline on a local jsonl of
questions, so tests and small runs need neither the harness nor a hub. ``harness_evaluate`` runs the
harness itself where the ``lm_eval`` package is installed.

Prompt format, as in the harness's ``mmlu/default`` and ``wmdp`` task YAMLs (lm_eval 0.4.13)::

    The following are multiple choice questions (with answers) about {subject}.\\n\\n
    {question.strip()}\\nA. {choice 0}\\nB. {choice 1}\\n...Answer:

A few-shot example is followed by `` {correct letter}\\n\\n``, and the continuations scored after
``Answer:`` are `` A``, `` B``, ... (with a leading space). ``acc`` is the share of questions whose
correct letter has the highest summed log-likelihood of its continuation tokens. The harness's
``acc_norm`` divides each sum by the continuation's length in characters, which is 1 for every
letter, so it equals ``acc`` here and is not computed.
"""

from __future__ import annotations

import json
import logging
import os
import random
import string
from pathlib import Path
from typing import Any, Literal

import torch

from undo_lib.tokenizer import PAD_ID

logger = logging.getLogger(__name__)

LETTERS = string.ascii_uppercase
MIN_CHOICES, MAX_CHOICES = 2, len(LETTERS)
DESCRIPTION = "The following are multiple choice questions (with answers) about {subject}.\n\n"
# Weight dtypes that harness_evaluate passes to lm_eval's hf model. "auto" takes the dtype in config.json.
HARNESS_DTYPES = ("float32", "bfloat16", "float16", "auto")


def load_questions(path: str | Path) -> list[dict]:
    """Read and validate a jsonl of questions (blank lines are skipped).

    Each line is ``{"question": str, "choices": [str, ...], "answer": int, "subject": str}`` with
    2 to 26 choices, ``answer`` the index of the correct choice and ``subject`` optional.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: a line is invalid JSON or an invalid record; the message names the file and line.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"question file {path} not found. Pass the path of a jsonl of questions.")
    questions = []
    with path.open(encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{where}: invalid JSON ({err}). Write one JSON object per line.") from err
            validate_question(record, where)
            questions.append(record)
    if not questions:
        raise ValueError(f"{path} contains no questions. Write one JSON object per line.")
    return questions


def validate_question(record: Any, where: str) -> None:
    """Raise ValueError, prefixed with ``where``, if ``record`` is not a valid question record."""
    if not isinstance(record, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}.")
    for field in ("question", "choices", "answer"):
        if field not in record:
            raise ValueError(f"{where}: missing field {field!r}. Each question needs question, choices and answer.")
    if not isinstance(record["question"], str):
        raise ValueError(f"{where}: 'question' must be a string, got {record['question']!r}.")
    choices = record["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
        raise ValueError(f"{where}: 'choices' must be a list of strings, got {choices!r}.")
    if not MIN_CHOICES <= len(choices) <= MAX_CHOICES:
        raise ValueError(
            f"{where}: {len(choices)} choices; expected {MIN_CHOICES} to {MAX_CHOICES}, one per letter A to Z."
        )
    answer = record["answer"]
    if isinstance(answer, bool) or not isinstance(answer, int):
        raise ValueError(f"{where}: 'answer' must be the integer index of the correct choice, got {answer!r}.")
    if not 0 <= answer < len(choices):
        raise ValueError(f"{where}: answer {answer} is out of range for {len(choices)} choices (0 to {len(choices) - 1}).")
    if "subject" in record and not isinstance(record["subject"], str):
        raise ValueError(f"{where}: 'subject' must be a string, got {record['subject']!r}.")


def format_question(question: dict, with_answer: bool = False) -> str:
    """Format one question as the harness does, ending in ``Answer:``, or for a few-shot example in
    `` {letter}\\n\\n``."""
    lines = [question["question"].strip()]
    lines += [f"{letter}. {choice}" for letter, choice in zip(LETTERS, question["choices"])]
    text = "\n".join(lines) + "\nAnswer:"
    if with_answer:
        text += f" {LETTERS[question['answer']]}\n\n"
    return text


def build_prompt(question: dict, fewshot: list[dict] = ()) -> str:
    """Build the context for ``question``: description line, few-shot examples, then the question.

    The description names the question's subject with underscores as spaces. A question without
    ``subject`` gets no description line.
    """
    subject = question.get("subject")
    prefix = DESCRIPTION.format(subject=subject.replace("_", " ")) if subject else ""
    examples = "".join(format_question(example, with_answer=True) for example in fewshot)
    return prefix + examples + format_question(question)


def answer_continuations(num_choices: int) -> list[str]:
    """Return the continuations scored after ``Answer:``, one per choice: `` A``, `` B``, ..."""
    return [f" {letter}" for letter in LETTERS[:num_choices]]


def select_fewshot(question: dict, pool: list[dict], num_fewshot: int, rng: random.Random,
                   sampler: Literal["random", "first_n"] = "random") -> list[dict]:
    """Pick ``num_fewshot`` examples of the question's subject from ``pool``, never the question.

    ``random`` draws with ``rng``, ``first_n`` takes the first ones in pool order. Candidates are the
    pool records with the same ``subject`` as the question (both may lack it), as the harness's MMLU
    draws examples from the dev split of the question's own subject.
    """
    if num_fewshot == 0:
        return []
    candidates = [r for r in pool if r.get("subject") == question.get("subject") and r != question]
    if len(candidates) < num_fewshot:
        raise ValueError(
            f"num_fewshot={num_fewshot} but only {len(candidates)} few-shot questions have subject "
            f"{question.get('subject')!r} (the evaluated question excluded). Add questions of that "
            "subject to fewshot_questions or lower num_fewshot."
        )
    if sampler == "first_n":
        return candidates[:num_fewshot]
    if sampler == "random":
        return rng.sample(candidates, num_fewshot)
    raise ValueError(f"unknown few-shot sampler {sampler!r}; use 'random' or 'first_n'.")


def encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """Encode ``context`` and ``continuation`` into two id lists, the second as it follows the first.

    This follows lm_eval 0.4.13 for causal models. Spaces at the end of the context move to the
    start of the continuation. Then ``context + continuation`` is encoded whole, and the
    continuation ids are what follows the first ``len(encode(context))`` tokens of it.
    """
    stripped = context.rstrip()
    if stripped != context:
        continuation = context[len(stripped):] + continuation
        context = stripped
    context_ids = tokenizer(context, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    continuation_ids = whole_ids[len(context_ids):]
    if not continuation_ids:
        raise ValueError(f"continuation {continuation!r} encodes to no tokens after context ending {context[-40:]!r}.")
    return context_ids, continuation_ids


def truncate_left(ids: list[int], num_scored: int, max_positions: int) -> list[int]:
    """Cut ``ids`` from the left so that the model input ``ids[:-1]`` fits ``max_positions``.

    Raises ValueError when even the ``num_scored`` tokens at the end do not fit.
    """
    if len(ids) - 1 <= max_positions:
        return ids
    if num_scored > max_positions:
        raise ValueError(
            f"the continuation has {num_scored} tokens but the model takes at most {max_positions} "
            "positions (max_position_embeddings); shorten the choices."
        )
    logger.warning("truncating a %d-token prompt from the left to the model's %d positions",
                   len(ids) - 1, max_positions)
    return ids[-(max_positions + 1):]


def padding_id(tokenizer) -> int:
    """Return the id that fills padding positions: the tokenizer's pad id, else its eos id, else 0.

    Any id in the vocabulary works, because ``score_sequences`` pads on the right and reads no
    logits at padding positions.
    """
    for token_id in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return token_id
    return 0


def bos_id(tokenizer) -> int:
    """Return the tokenizer's bos id, or raise ValueError naming the tokenizer when it has none."""
    if tokenizer.bos_token_id is None:
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise ValueError(
            f"add_bos=True but tokenizer {name!r} has no bos token. Pass add_bos=False, or set the "
            "tokenizer's bos_token."
        )
    return tokenizer.bos_token_id


@torch.no_grad()
def score_sequences(model, sequences: list[tuple[list[int], int]], batch_size: int,
                    pad_id: int = PAD_ID) -> list[float]:
    """Sum the log-probabilities of the last ``n`` tokens of each ``(ids, n)``, in batches of rows.

    Rows are right-padded with ``pad_id`` (``<pad>`` of this project's tokenizers by default).
    Causal attention never lets a real token see the padding, and only logits at real positions
    are read, so no attention mask is passed, as in ``undo_lib.evaluate.text_ce``.
    """
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        chunk = sequences[start : start + batch_size]
        width = max(len(ids) - 1 for ids, _ in chunk)
        inputs = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        for row, (ids, _) in enumerate(chunk):
            inputs[row, : len(ids) - 1] = torch.tensor(ids[:-1])
        log_probs = torch.log_softmax(model(input_ids=inputs.to(device)).logits.float(), dim=-1)
        for row, (ids, num_scored) in enumerate(chunk):
            positions = torch.arange(len(ids) - 1 - num_scored, len(ids) - 1, device=device)
            targets = torch.tensor(ids[-num_scored:], device=device)
            scores.append(log_probs[row, positions, targets].sum().item())
    return scores


def request_sequences(model, tokenizer, context: str, continuations: list[str],
                      add_bos: bool = True) -> list[tuple[list[int], int]]:
    """Encode one ``(ids, number of continuation tokens)`` per continuation, cut to the model's length.

    With ``add_bos`` the ids start with ``tokenizer.bos_token_id``. Raises ValueError when the
    tokenizer has no bos token.
    """
    max_positions = model.config.max_position_embeddings
    prefix = [bos_id(tokenizer)] if add_bos else []
    sequences = []
    for continuation in continuations:
        context_ids, continuation_ids = encode_pair(tokenizer, context, continuation)
        ids = prefix + context_ids + continuation_ids
        sequences.append((truncate_left(ids, len(continuation_ids), max_positions), len(continuation_ids)))
    return sequences


def choice_loglikelihoods(model, tokenizer, context: str, continuations: list[str],
                          add_bos: bool = True) -> list[float]:
    """Sum the log-likelihoods of each continuation's tokens given ``context``, in one forward pass.

    With ``add_bos`` the ids start with the tokenizer's bos token (``<bos>``, id 2, in this
    project's tokenizers), as in training. A prompt longer than
    ``model.config.max_position_embeddings`` loses tokens from the left, with a logged warning.
    """
    sequences = request_sequences(model, tokenizer, context, continuations, add_bos)
    return score_sequences(model, sequences, batch_size=len(sequences), pad_id=padding_id(tokenizer))


def evaluate_multiple_choice(model, tokenizer, questions: list[dict], num_fewshot: int = 0,
                             fewshot_questions: list[dict] | None = None, seed: int = 1234,
                             batch_size: int = 16, add_bos: bool = True,
                             sampler: Literal["random", "first_n"] = "random") -> dict:
    """Accuracy of ``model`` on ``questions``: the correct letter must have the highest log-likelihood.

    Few-shot examples come from ``fewshot_questions`` (a dev split, as for MMLU), drawn for each
    question in order with ``random.Random(seed)``. The harness's MMLU task uses ``first_n`` (the
    first dev questions of the subject), WMDP is 0-shot. ``batch_size`` counts (question, choice)
    rows per forward pass.

    Returns:
        ``{"acc", "n", "num_fewshot", "per_question"}``, where each per-question entry contains the
        ``answer`` and ``prediction`` indices, ``correct`` and the ``loglikelihoods`` of the choices.
    """
    if not questions:
        raise ValueError("evaluate_multiple_choice got no questions; check the question file.")
    if num_fewshot < 0:
        raise ValueError(f"num_fewshot must be >= 0, got {num_fewshot}.")
    if num_fewshot > 0 and not fewshot_questions:
        raise ValueError(f"num_fewshot={num_fewshot} needs fewshot_questions (a dev split); none were given.")
    was_training = model.training
    model.eval()
    rng = random.Random(seed)
    sequences, spans = [], []
    for question in questions:
        fewshot = select_fewshot(question, fewshot_questions or [], num_fewshot, rng, sampler)
        continuations = answer_continuations(len(question["choices"]))
        spans.append((len(sequences), len(sequences) + len(continuations)))
        sequences += request_sequences(model, tokenizer, build_prompt(question, fewshot), continuations, add_bos)
    scores = score_sequences(model, sequences, batch_size, pad_id=padding_id(tokenizer))
    model.train(was_training)

    per_question = []
    for index, (question, (start, end)) in enumerate(zip(questions, spans)):
        loglikelihoods = scores[start:end]
        prediction = loglikelihoods.index(max(loglikelihoods))  # the first maximum, as numpy.argmax
        per_question.append({
            "index": index, "answer": question["answer"], "prediction": prediction,
            "correct": prediction == question["answer"], "loglikelihoods": loglikelihoods,
        })
    acc = sum(q["correct"] for q in per_question) / len(per_question)
    logger.info("multiple-choice acc %.4f on %d questions (%d-shot)", acc, len(per_question), num_fewshot)
    return {"acc": acc, "n": len(per_question), "num_fewshot": num_fewshot, "per_question": per_question}


def harness_evaluate(model_dir: str | Path, tasks: list[str], num_fewshot: int | None = None,
                     limit: int | float | None = None, batch_size: int = 16,
                     include_path: str | Path | None = None, device: str = "cpu",
                     log_samples: bool = False, dtype: str = "float32") -> dict[str, dict]:
    """Run lm-evaluation-harness (``lm_eval[hf]``, tested with 0.4.13) on a model folder, offline.

    ``model_dir`` is a folder written by ``undo_lib.model.save_model``. ``include_path`` is a folder
    of extra task YAMLs, such as a task over a local jsonl. The harness prepends ``<bos>`` only where
    the saved tokenizer's post-processor adds it on ``encode``. ``train_tokenizer``'s tokenizers add
    none, so the matching built-in score is ``evaluate_multiple_choice(..., add_bos=False)``.
    ``device`` (such as "cpu" or "cuda:0") and ``dtype`` (one of ``HARNESS_DTYPES``) set where and
    in which weight dtype the harness loads the model, such as "cuda:0" and "bfloat16" for
    Gemma-2-2B, which Lee et al. unlearn and evaluate in bfloat16. The defaults are CPU and float32.

    Returns:
        Per task or group: ``{"acc", "n", "version"}``, where ``n`` is the number of questions
        scored. With ``log_samples``, also ``"loglikelihoods"``: one list of choice log-likelihoods
        per question, in dataset order (for a group, in the order ``summarize_harness_task`` gives).

    Raises:
        ImportError: lm_eval or its ``hf`` extra (accelerate) is not installed.
        ValueError: ``dtype`` is not one of ``HARNESS_DTYPES``.
    """
    if dtype not in HARNESS_DTYPES:
        raise ValueError(f"invalid dtype {dtype!r} for harness_evaluate: expected one of {', '.join(HARNESS_DTYPES)}.")
    lm_eval, task_manager_type = _import_harness()
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {model_dir}. Pass a folder written by undo_lib.model.save_model.")
    task_manager = task_manager_type(include_path=str(include_path) if include_path else None)
    output = lm_eval.simple_evaluate(
        model="hf",
        model_args={"pretrained": str(model_dir), "dtype": dtype, "device": device},
        tasks=list(tasks), num_fewshot=num_fewshot, limit=limit, batch_size=batch_size,
        task_manager=task_manager, log_samples=log_samples,
    )
    return {task: summarize_harness_task(output, task, log_samples) for task in tasks}


def _import_harness():
    """Import lm_eval offline; return (the lm_eval module, its TaskManager class)."""
    # NOTE: huggingface_hub reads HF_HUB_OFFLINE when it is first imported, so in a process that
    # imported transformers before this call, only local model paths keep the run offline.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        import accelerate  # noqa: F401  (lm_eval's hf model imports it only when it is first used)
        import lm_eval
        from lm_eval.tasks import TaskManager
    except ImportError as err:
        raise ImportError(
            f"lm-evaluation-harness needs lm_eval with its hf extra ({err}). Install it: pip install 'lm_eval[hf]==0.4.13'"
        ) from err
    return lm_eval, TaskManager


def harness_evaluate_model(model, tokenizer, tasks: list[str], num_fewshot: int | None = None,
                           limit: int | float | None = None, batch_size: int = 16,
                           include_path: str | Path | None = None) -> dict[str, dict]:
    """Run lm-evaluation-harness on a model in memory (its device and dtype as they are).

    The same as ``harness_evaluate``, without saving the model first: the harness wraps ``model``
    and ``tokenizer`` in its ``HFLM``. Used by the WMDP stages, which evaluate during training.

    Returns:
        Per task: ``{"acc", "n", "version"}``.
    """
    lm_eval, task_manager_type = _import_harness()
    from lm_eval.models.huggingface import HFLM

    was_training = model.training
    model.eval()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    task_manager = task_manager_type(include_path=str(include_path) if include_path else None)
    output = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit,
                                     task_manager=task_manager)
    model.train(was_training)
    return {task: summarize_harness_task(output, task, False) for task in tasks}


def summarize_harness_task(output: dict, task: str, log_samples: bool) -> dict:
    """Summarize one task or group of ``lm_eval.simple_evaluate``'s output (lm_eval 0.4.13).

    ``acc`` is ``output["results"][task]["acc,none"]``. For a group, lm_eval computes it from the
    group's ``aggregate_metric_list``, and with ``weight_by_size: true`` (the default, and MMLU's
    setting) it is the accuracy over all questions of the group's leaf tasks. lm_eval records
    ``n-samples`` only for leaf tasks, so a group's ``n`` is the sum of ``effective`` over its leaf
    tasks. ``version`` is None where lm_eval records none ("N/A" for a group without
    ``metadata.version``). With ``log_samples``, ``loglikelihoods`` lists the questions leaf task by
    leaf task, in the depth-first order of ``output["group_subtasks"]``, and by ``doc_id`` within
    each leaf task.

    Raises:
        KeyError: ``task`` is not in the output.
        ValueError: ``task`` is a group without an ``acc`` aggregate in its ``aggregate_metric_list``.
    """
    if task not in output["results"]:
        raise KeyError(f"task {task!r} not found in lm_eval's results, which contain {sorted(output['results'])}.")
    result = output["results"][task]
    if "acc,none" not in result:
        raise ValueError(
            f"lm_eval reported no 'acc,none' for {task!r}. A group needs aggregate_metric_list with "
            "metric: acc in its YAML for lm_eval to aggregate its accuracy."
        )
    leaf_tasks = harness_leaf_tasks(output, task)
    version = output.get("versions", {}).get(task)
    summary = {
        "acc": result["acc,none"],
        "n": sum(output["n-samples"][leaf]["effective"] for leaf in leaf_tasks),
        "version": None if version in (None, "N/A") else version,
    }
    if log_samples:
        summary["loglikelihoods"] = []
        for leaf in leaf_tasks:
            samples = sorted(output["samples"][leaf], key=lambda sample: sample["doc_id"])
            # Each filtered response of a loglikelihood request is (log-likelihood, is_greedy).
            summary["loglikelihoods"] += [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
    if leaf_tasks != [task]:
        logger.info("lm_eval group %s has %d leaf tasks", task, len(leaf_tasks))
    logger.info("lm_eval %s (version %s): acc %.4f on %d questions", task, summary["version"],
                summary["acc"], summary["n"])
    return summary


def harness_leaf_tasks(output: dict, task: str) -> list[str]:
    """List the leaf tasks under ``task`` in ``simple_evaluate``'s output, depth first.

    A leaf task is one with an ``n-samples`` entry. A group is expanded through
    ``output["group_subtasks"]``, recursively, and a leaf reached twice is listed once.
    """
    leaves: list[str] = []
    pending = [task]
    while pending:
        name = pending.pop(0)
        if name in output["n-samples"]:
            if name not in leaves:
                leaves.append(name)
        elif name in output.get("group_subtasks", {}):
            pending[:0] = output["group_subtasks"][name]
        else:
            raise KeyError(
                f"{name!r} (under {task!r}) is neither a leaf task with n-samples nor a group in "
                "group_subtasks of lm_eval's output."
            )
    return leaves
