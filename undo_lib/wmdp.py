"""The WMDP setting: a pretrained model unlearns hazardous knowledge, measured by multiple-choice accuracy.

The stages of this branch (``wmdp-*`` in dvc.yaml) call the functions here:

1. data: read the forget, retain and general corpora (``params.wmdp.data``) and write the mixtures
   each later stage trains on (``write_wmdp_data``);
2. base: the model to unlearn, either a random Gemma2 stand-in written to a local folder
   (``model.source: config``) or a pretrained model from a local folder or the hub
   (``write_base`` and ``load_base``);
3. unlearn: MaxEnt, RMU, MaxEnt + SAM or MaxEnt + RepNoise (``undo_lib.wmdp_losses``;
   ``unlearn_setup``);
4. UNDO: the unlearned model, shrunk and noised, distilled from itself for a fixed number of steps;
5. relearn: attacks on the forget + retain mixture at every LR, evaluated at ``eval_steps``.

Accuracy comes from ``MultipleChoiceEvaluator``: the forget benchmark (paper: WMDP-Bio, 0-shot) and
the retain benchmark (paper: MMLU, 5-shot), scored by the built-in scorer or lm-evaluation-harness.
"""

from __future__ import annotations

import dataclasses
import logging
import random
from pathlib import Path

import torch

from undo_lib.config import (CorpusParams, MultipleChoiceTaskParams, TrainParams, WMDPEvaluateParams,
                             WMDPParams)
from undo_lib.corpora import TextSource, load_corpus, mix_corpora, summarize_mixture
from undo_lib.data import PackedData, pack
from undo_lib.evaluate import text_ce
from undo_lib.io import (IntegrityError, atomic_dir, derive_seed, file_sha256, read_json, read_jsonl, write_json,
                         write_jsonl)
from undo_lib.multiple_choice import evaluate_multiple_choice, harness_evaluate_model, load_questions
from undo_lib.prepare import MANIFEST
from undo_lib.pretrained import (PretrainedSource, is_local_path, load_pretrained, load_pretrained_tokenizer,
                                 write_random_gemma2)
from undo_lib.tokenizer import train_tokenizer
from undo_lib.wmdp_losses import MaxEntWMDPParams, RMUWMDPParams

logger = logging.getLogger(__name__)

# Files of the data stage: the unlearning forget set, the unlearning retain mixture, the UNDO
# distillation mixture, the relearning mixture and the held-out forget and retain documents
DATA_FILES = ("forget.jsonl", "unlearn_retain.jsonl", "distill.jsonl", "relearn.jsonl", "forget_validation.jsonl",
              "retain_validation.jsonl")
PRETRAIN_FILE = "pretrain.jsonl"  # the stand-in's pretraining text, written only for model.source: config
SOURCE_RECORD = "source.json"  # written to the base folder when the model is not the stand-in


# ----------------------------------------------------------------------------------------------
# Data


def text_source(corpus: CorpusParams) -> TextSource:
    """Convert one corpus entry of params to an ``undo_lib.corpora`` source."""
    return TextSource(kind=corpus.kind, path=corpus.path, text_field=corpus.text_field, config=corpus.config,
                      split=corpus.split, revision=corpus.revision)


def _mixture(corpora: dict, probabilities: dict[str, float], w: WMDPParams, seed: int) -> list[dict]:
    documents = {name: corpora[name].documents for name in probabilities}
    return mix_corpora(documents, probabilities, seed, w.data.stopping_strategy, w.data.mixture_unit)


def _hold_out(corpus, count: int) -> list[dict]:
    """Remove the first ``count`` (shuffled) documents of ``corpus`` and return them as records."""
    if len(corpus.documents) <= count:
        raise ValueError(f"corpus {corpus.name!r} has {len(corpus.documents)} documents, too few to hold out "
                         f"wmdp.data.validation_documents={count} and train on the rest. Lower it or add text.")
    held_out, corpus.documents = corpus.documents[:count], corpus.documents[count:]
    return [{"text": text, "source": corpus.name} for text in held_out]


def build_wmdp_files(w: WMDPParams, seed: int) -> tuple[dict[str, list[dict]], list[dict]]:
    """Read every corpus and build the data files; return them and the corpora's provenance.

    The first ``validation_documents`` of the shuffled forget and retain corpora are held out for the
    CE metrics, so no training file contains them.
    """
    d = w.data
    entries = {"forget": d.forget, "retain": d.retain, **d.general}
    corpora = {name: load_corpus(name, text_source(c), c.max_chars, d.min_chars, derive_seed(seed, "wmdp", name))
               for name, c in entries.items()}
    validation = {f"{name}_validation.jsonl": _hold_out(corpora[name], d.validation_documents)
                  for name in ("forget", "retain")}
    files = {
        "forget.jsonl": [{"text": text, "source": "forget"} for text in corpora["forget"].documents],
        "unlearn_retain.jsonl": _mixture(corpora, d.unlearn_retain_mixture, w, derive_seed(seed, "unlearn")),
        "distill.jsonl": _mixture(corpora, d.distill_mixture, w, derive_seed(seed, "distill")),
        "relearn.jsonl": _mixture(corpora, d.relearn_mixture, w, derive_seed(seed, "relearn")),
        **validation,
    }
    if w.model.source == "config":
        pretrain = [{"text": text, "source": name} for name, corpus in corpora.items() for text in corpus.documents]
        random.Random(derive_seed(seed, "pretrain")).shuffle(pretrain)
        files[PRETRAIN_FILE] = pretrain
    return files, [corpus.record() for corpus in corpora.values()]


def write_wmdp_data(w: WMDPParams, seed: int, out_dir: str | Path) -> dict:
    """Write the data files and a manifest (sha256, corpora, mixture shares) to ``out_dir`` atomically."""
    files, corpora = build_wmdp_files(w, seed)
    with atomic_dir(out_dir) as tmp:
        for name, records in files.items():
            write_jsonl(tmp / name, records)
        manifest = {"documents": {name: len(records) for name, records in files.items()},
                    "sha256": {name: file_sha256(tmp / name) for name in files},
                    "mixtures": {name: summarize_mixture(records) for name, records in files.items()},
                    "corpora": corpora}
        write_json(tmp / MANIFEST, manifest)
    logger.info("wrote the WMDP data files to %s", out_dir)
    return manifest


# ----------------------------------------------------------------------------------------------
# The base model


def write_base(w: WMDPParams, data_dir: str | Path, base_dir: str | Path, seed: int) -> dict:
    """Write the base model folder; return its record.

    For ``source: config``, a BPE tokenizer is trained on the data files and a random Gemma2 of
    shape ``stand_in`` is saved with it, in the layout of a pretrained checkpoint. For any other
    source, the folder holds only ``source.json``: later stages load the pretrained model from
    its source, so a 2B model is not copied.
    """
    m = w.model
    if m.source != "config":
        record = {"source": m.source, "revision": m.revision, "dtype": m.dtype,
                  "attn_implementation": m.attn_implementation, "sha256": local_weights_sha256(m.source)}
        with atomic_dir(base_dir) as tmp:
            write_json(tmp / SOURCE_RECORD, record)
        return record
    texts = [r["text"] for r in read_jsonl(Path(data_dir) / PRETRAIN_FILE)]
    tokenizer = train_tokenizer(texts, m.stand_in_vocab_size)
    model = write_random_gemma2(base_dir, tokenizer, m.stand_in, seed)
    return {"source": "config", "vocab_size": len(tokenizer),
            "parameters": sum(p.numel() for p in model.parameters())}


def local_weights_sha256(source: str) -> dict[str, str] | None:
    """sha256 of the weight files of a local model folder; None for a hub id.

    DVC cannot track a model folder named in params, so the base stage records these hashes and
    later stages check them (``model_source``): replaced weights stop a stage instead of mixing models.
    """
    folder = Path(source).expanduser()
    if not (is_local_path(source) and folder.is_dir()):
        return None
    return {path.name: file_sha256(path) for path in sorted(folder.glob("*.safetensors"))}


def model_source(w: WMDPParams, model_dir: str | Path) -> PretrainedSource:
    """Locate a WMDP model: ``model_dir`` itself, or the pretrained source named by its ``source.json``."""
    model_dir = Path(model_dir)
    m = w.model
    if (model_dir / SOURCE_RECORD).is_file():
        record = read_json(model_dir / SOURCE_RECORD)
        if record.get("sha256") and local_weights_sha256(record["source"]) != record["sha256"]:
            raise IntegrityError(f"the weights in {record['source']} changed after the WMDP base stage recorded them "
                                 f"in {model_dir / SOURCE_RECORD}. Rerun from the base stage: dvc repro -f wmdp-base, "
                                 "then dvc repro.")
        return PretrainedSource(record["source"], record["revision"], m.dtype, m.attn_implementation)
    return PretrainedSource(str(model_dir), None, m.dtype, m.attn_implementation)


def load_wmdp_tokenizer(w: WMDPParams, model_dir: str | Path):
    """Load only the tokenizer of the base folder or of a model a WMDP stage saved."""
    return load_pretrained_tokenizer(model_source(w, model_dir))


def load_wmdp_model(w: WMDPParams, model_dir: str | Path, device: torch.device):
    """Load (model, tokenizer) of the base folder or of a model a WMDP stage saved."""
    model, tokenizer = load_pretrained(model_source(w, model_dir), device)
    model.train()  # from_pretrained returns eval mode; the training loop sets the mode it needs
    return model, tokenizer


# ----------------------------------------------------------------------------------------------
# Tokenisation


def pack_texts(tokenizer, records: list[dict], seq_len: int) -> PackedData:
    """Tokenise plain-text records without special tokens and pack them into [N, seq_len] sequences.

    Documents end with the tokenizer's eos token, and each sequence starts with its bos token (eos
    where there is none), as ``undo_lib.data.pack`` does with the project's own tokenizer.
    """
    eos = tokenizer.eos_token_id
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else eos
    encodings = tokenizer.backend_tokenizer.encode_batch([r["text"] for r in records], add_special_tokens=False)
    docs = [(e.ids + [eos], [1] * (len(e.ids) + 1)) for e in encodings]
    data = pack(docs, seq_len, bos_id=bos)
    logger.info("packed %d documents into %d sequences of %d tokens", len(records), len(data), seq_len)
    return data


# ----------------------------------------------------------------------------------------------
# Evaluation


def adds_bos(tokenizer) -> bool:
    """Tell whether the tokenizer puts bos in front of encoded text, as Gemma's does; lm-eval then scores with it."""
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == tokenizer.bos_token_id


def validation_data(tokenizer, data_dir: str | Path, seq_len: int) -> dict[str, PackedData]:
    """Pack the held-out forget and retain documents of the data stage for the CE metrics."""
    return {role: pack_texts(tokenizer, read_jsonl(Path(data_dir) / f"{role}_validation.jsonl"), seq_len)
            for role in ("forget", "retain")}


class MultipleChoiceEvaluator:
    """Accuracy on the forget benchmark (``forget``) and the retain benchmark (``retain``), and CEs.

    The metrics also record the number of questions and, for the harness, the task version. With
    ``validation`` (``validation_data``), they add the next-token CE on held-out forget and retain
    documents (``forget_ce``, ``retain_ce``), a metric that moves even where accuracy stays at chance.
    ``forget_only`` skips the retain metrics, because Lee et al. evaluate only WMDP during relearning.
    """

    def __init__(self, params: WMDPEvaluateParams, tokenizer, forget_only: bool = False,
                 validation: dict[str, PackedData] | None = None):
        self.params = params
        self.tokenizer = tokenizer
        self.tasks = {"forget": params.forget} if forget_only else {"forget": params.forget, "retain": params.retain}
        self.validation = {role: data for role, data in (validation or {}).items() if role in self.tasks}
        self.questions = {}
        if params.backend == "builtin":
            self.questions = {role: self._questions(task) for role, task in self.tasks.items()}

    @staticmethod
    def _questions(task: MultipleChoiceTaskParams) -> tuple[list[dict], list[dict] | None]:
        questions = load_questions(task.questions)[: task.limit]
        fewshot = load_questions(task.fewshot_questions) if task.fewshot_questions else None
        return questions, fewshot

    def __call__(self, model) -> dict:
        metrics = {}
        was_training = model.training
        model.eval()
        with torch.no_grad():
            for role, data in self.validation.items():
                metrics[f"{role}_ce"] = text_ce(model, data, self.params.batch_size)
        model.train(was_training)
        for role, task in self.tasks.items():
            result = self._builtin(model, role, task) if self.params.backend == "builtin" else \
                self._harness(model, task)
            metrics[role] = result["acc"]
            metrics[f"{role}_n"] = result["n"]
            if "version" in result:
                metrics[f"{role}_version"] = result["version"]
        return metrics

    def _builtin(self, model, role: str, task: MultipleChoiceTaskParams) -> dict:
        questions, fewshot = self.questions[role]
        return evaluate_multiple_choice(model, self.tokenizer, questions, task.num_fewshot, fewshot, self.params.seed,
                                        self.params.batch_size, adds_bos(self.tokenizer), sampler="first_n")

    def _harness(self, model, task: MultipleChoiceTaskParams) -> dict:
        results = harness_evaluate_model(model, self.tokenizer, [task.harness_task], task.num_fewshot, task.limit,
                                         self.params.batch_size, self.params.harness_include_path)
        return results[task.harness_task]


# ----------------------------------------------------------------------------------------------
# Unlearning runs


def unlearn_setup(w: WMDPParams, run: str) -> tuple[str, MaxEntWMDPParams | RMUWMDPParams, TrainParams]:
    """Return (loss method, its params, training params) of one WMDP unlearning run.

    SAM and RepNoise are MaxEnt with MaxEnt's alpha and retain term: SAM trains with ``sam_rho``,
    RepNoise adds the RepNoise loss to the forget side.
    """
    u = w.unlearn
    section = getattr(u, run)
    train_params = dataclasses.replace(u.train, lr=section.lr)
    maxent = MaxEntWMDPParams(alpha=u.MaxEnt.alpha, use_retain_kl=u.MaxEnt.use_retain_kl)
    if run == "RMU":
        r = u.RMU
        return "RMU", RMUWMDPParams(r.alpha, r.layers, r.hidden_layer, r.steering_coefficient, r.control_vector), \
            train_params
    if run == "SAM":
        return "MaxEnt", maxent, dataclasses.replace(train_params, sam_rho=u.SAM.rho)
    if run == "RepNoise":
        return "MaxEnt", dataclasses.replace(maxent, repnoise_alpha=u.RepNoise.alpha,
                                             repnoise_beta=u.RepNoise.beta), train_params
    return "MaxEnt", maxent, train_params


FINAL_METRICS = ("forget", "retain", "forget_ce", "retain_ce")


def final_metrics(history: list[dict]) -> dict:
    """Return the evaluation metrics of the last evaluated step of a training history."""
    for row in reversed(history):
        if "forget" in row:
            return {key: row[key] for key in FINAL_METRICS if key in row}
    raise ValueError("no evaluated step in the training history")


def undo_name(teacher: str, alpha: float) -> str:
    """Folder and figure name of an UNDO model, such as ``undo_MaxEnt_0.25``."""
    return f"undo_{teacher}_{alpha}"
