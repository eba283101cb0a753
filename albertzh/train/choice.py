"""Multiple choice: one ``[CLS] context [SEP] question option [SEP]`` sequence per option, one
score per option, a softmax over the question's real options.

Shared by finetune (:class:`MultipleChoiceKind`: rows, loss, dev scoring), eval and predict
(:class:`Chooser`, loaded from a finetuned model dir). Reading is :mod:`albertzh.data.choice`.

Encoding (UER-py's and CLUE's C3 layout): the context is the first segment, the question followed
by the option the second; when the pair is longer than ``max_seq_len`` the context is cut from its
end, never the option (a question too long to leave room for its option loses its start).
Questions of a batch are padded to the batch's most options with all-padding sequences; their
attention mask is all zero, which is how the loss and the scores tell them apart.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.data import choice as C
from albertzh.data import tasks as T
from albertzh.errors import ConfigError

ARCHITECTURE = "AlbertForMultipleChoice"

Encoded = tuple[list[int], list[int]]  # input ids, token types


def encode_option(
    tokenizer: Any, context: str, question: str, option: str, max_len: int
) -> Encoded:
    """``[CLS] context [SEP] question option [SEP]``, the context truncated first."""
    q = tokenizer.encode(question).ids
    o = tokenizer.encode(option).ids
    room = max_len - 3  # [CLS] and two [SEP]
    o = o[:room]
    q = q[len(q) - max(0, room - len(o)) :] if len(q) + len(o) > room else q
    b = q + o
    a = tokenizer.encode(context).ids[: max(0, room - len(b))]
    ids = [tokenizer.cls_id, *a, tokenizer.sep_id, *b, tokenizer.sep_id]
    types = [0] * (len(a) + 2) + [1] * (len(b) + 1)
    return ids, types


def encode_questions(
    tokenizer: Any, examples: Sequence[C.ChoiceExample], max_len: int
) -> list[list[Encoded]]:
    """Per question, one encoded sequence per option."""
    return [
        [encode_option(tokenizer, e.context, e.question, o, max_len) for o in e.choices]
        for e in examples
    ]


@dataclass
class ChoiceRows:
    """Questions made ready for the model: per question its options' sequences, and labels."""

    encoded: list[list[Encoded]]
    y: np.ndarray  # [N] right option index (-1: unlabelled)

    def __len__(self) -> int:
        return len(self.encoded)


def collate_choices(
    encoded: Sequence[list[Encoded]], indices: Sequence[int], pad_id: int
) -> dict[str, Any]:
    """A padded batch ``[B, C, T]``: C the batch's most options, missing options all padding."""
    import torch

    n_opt = max(len(encoded[i]) for i in indices)
    width = max(len(ids) for i in indices for ids, _ in encoded[i])
    shape = (len(indices), n_opt, width)
    ids = torch.full(shape, pad_id, dtype=torch.long)
    types = torch.zeros(shape, dtype=torch.long)
    mask = torch.zeros(shape, dtype=torch.long)
    for r, i in enumerate(indices):
        for c, (a, t) in enumerate(encoded[i]):
            ids[r, c, : len(a)] = torch.tensor(a, dtype=torch.long)
            types[r, c, : len(t)] = torch.tensor(t, dtype=torch.long)
            mask[r, c, : len(a)] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def choice_mask(batch: dict[str, Any]) -> Any:
    """[B, C] True where the option is real (its [CLS] is attended)."""
    return batch["attention_mask"][:, :, 0].bool()


def choice_logits(
    model: Any,
    encoded: Sequence[list[Encoded]],
    *,
    pad_id: int,
    batch_size: int = 16,
    device: Any = None,
    precision: str = "fp32",
    bar: Any = None,
) -> list[np.ndarray]:
    """Per question its options' scores ([n_options] float32), in input order."""
    import torch

    from albertzh.train.inference import length_batches
    from albertzh.train.loop import autocast

    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(encoded)
    lengths = [max(len(ids) for ids, _ in opts) for opts in encoded]
    with torch.inference_mode():
        for idx in length_batches(lengths, batch_size):
            batch = {k: v.to(device) for k, v in collate_choices(encoded, idx, pad_id).items()}
            with autocast(precision, device):
                logits = model(**batch).logits  # [B, C]
            logits = logits.float().cpu().numpy()
            for r, i in enumerate(idx):
                out[i] = logits[r, : len(encoded[i])]
            if bar is not None:
                bar.advance(len(idx))
    model.train(was_training)
    return out


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Softmax over one question's real options."""
    z = np.exp(scores - scores.max())
    return z / z.sum()


def score(examples: Sequence[C.ChoiceExample], logits: Sequence[np.ndarray]) -> dict[str, Any]:
    """Accuracy and the mean cross-entropy ``loss`` over the real options."""
    gold = [int(e.label) for e in examples if e.label is not None]
    pred = [int(lg.argmax()) for lg in logits]
    nll = [
        -float(np.log(max(probabilities(lg)[g], 1e-30))) for lg, g in zip(logits, gold, strict=True)
    ]
    return {"accuracy": C.accuracy(gold, pred), "loss": float(np.mean(nll)) if nll else 0.0}


def record(e: C.ChoiceExample, scores: np.ndarray) -> dict[str, Any]:
    """One question's prediction: the picked option (index and text) and every option's score."""
    p = probabilities(scores)
    best = int(p.argmax())
    return {
        "label": best,
        "answer": e.choices[best],
        "probabilities": [round(float(x), 6) for x in p],
        "scores": [round(float(x), 6) for x in scores],
    }


# --------------------------------------------------------------------------- finetune


class MultipleChoiceKind:
    """One score per option from its pooled [CLS]; a softmax over the question's options."""

    name = T.MULTIPLE_CHOICE
    architecture = ARCHITECTURE
    summary_metrics = ("accuracy",)

    def model_class(self) -> type:
        from albertzh.model import AlbertForMultipleChoice

        return AlbertForMultipleChoice

    def metrics(self, task: T.Task) -> tuple[str, ...]:
        return ("accuracy", "loss")

    def head_config(self, task: T.Task) -> dict[str, Any]:
        # One output per option; no label names (the options are the labels).
        return {"num_labels": 2, "id2label": None, "label2id": None, "problem_type": None}

    def check_config(self, cfg: Any, model_config: Any) -> None:
        limit = model_config.max_position_embeddings
        if cfg.max_seq_len > limit:
            raise ConfigError(f"--max-seq-len {cfg.max_seq_len}: the model reads at most {limit}")

    def read_train(self, task: T.Task, data_dir: Path, cfg: Any) -> tuple[T.Task, Path, list]:
        path = T.split_file(task, data_dir, "train")
        return task, path, C.read_choices(path, task.fmt, require_labels=True)

    def read_split(self, task: T.Task, path: Path) -> list:
        return C.read_choices(path, task.fmt, require_labels=True)

    def encode(self, task: T.Task, examples: list, tokenizer: Any, cfg: Any) -> ChoiceRows:
        y = np.array([-1 if e.label is None else e.label for e in examples], dtype=np.int64)
        return ChoiceRows(encode_questions(tokenizer, examples, cfg.max_seq_len), y)

    def batch(self, rows: ChoiceRows, indices: list[int], pad_id: int) -> dict[str, Any]:
        import torch

        batch = collate_choices(rows.encoded, indices, pad_id)
        batch["labels"] = torch.from_numpy(rows.y[indices])
        return batch

    def loss(self, model: Any, batch: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Cross-entropy over each question's real options, and the batch accuracy."""
        from albertzh.train.loop import unwrap_model

        logits = model(
            input_ids=batch["input_ids"],
            attention_mask=batch["attention_mask"],
            token_type_ids=batch["token_type_ids"],
        ).logits  # [B, C]
        real = choice_mask(batch)
        labels = batch["labels"]
        loss = unwrap_model(model).compute_loss(logits.float(), labels, real)
        pick = logits.float().masked_fill(~real, float("-inf")).argmax(-1)
        return loss, {"accuracy": (pick == labels).float().mean().detach()}

    def evaluate(
        self,
        model: Any,
        rows: ChoiceRows,
        examples: list,
        task: T.Task,
        *,
        pad_id: int,
        batch_size: int,
        precision: str,
        rank: int = 0,
        world: int = 1,
    ) -> dict[str, Any]:
        """Under DDP each rank scores every world-th question and the scores are gathered."""
        from albertzh.train.kinds import scores_by_row

        full = scores_by_row(
            choice_logits,
            model,
            rows,
            pad_id=pad_id,
            batch_size=batch_size,
            precision=precision,
            rank=rank,
            world=world,
        )
        return score(examples, full)

    def describe(self, task: T.Task, train: list, dev: list | None) -> dict[str, Any]:
        counts: dict[int, int] = {}
        for e in (*train, *(dev or ())):
            counts[len(e.choices)] = counts.get(len(e.choices), 0) + 1
        return {"questions_by_options": {str(k): counts[k] for k in sorted(counts)}}

    def meta(self, task: T.Task, train: list, cfg: Any) -> dict[str, Any]:
        return {}


# --------------------------------------------------------------------------- eval and predict


@dataclass
class Chooser:
    """A finetuned multiple-choice model, loaded for inference."""

    model: Any
    tokenizer: Any
    max_seq_len: int
    meta: dict[str, Any]
    device: Any
    precision: str

    def logits(
        self, examples: Sequence[C.ChoiceExample], batch_size: int, bar: Any = None
    ) -> list[np.ndarray]:
        """Per question its options' scores; ``bar`` advances by questions."""
        return choice_logits(
            self.model,
            encode_questions(self.tokenizer, examples, self.max_seq_len),
            pad_id=self.tokenizer.pad_id,
            batch_size=batch_size,
            device=self.device,
            precision=self.precision,
            bar=bar,
        )


def load_chooser(
    model_dir: Path,
    *,
    device: str = "auto",
    precision: str = "auto",
    max_seq_len: int | None = None,
) -> Chooser:
    """Load a finetuned multiple-choice model dir (config.json, weights, tokenizer)."""
    from albertzh.model import AlbertForMultipleChoice
    from albertzh.tokenizer import load_tokenizer
    from albertzh.train.inference import load_head_model

    model_dir = Path(model_dir)
    head = load_head_model(
        model_dir,
        AlbertForMultipleChoice,
        what="finetuned multiple-choice model",
        hint="finetune it on a multiple-choice task such as c3 first",
        device=device,
        precision=precision,
    )
    seq = head.seq_len(max_seq_len)
    return Chooser(
        head.model, load_tokenizer(model_dir), seq, head.meta, head.device, head.precision
    )
