"""What a pretrained model knows that the labels do not: frozen-feature probes.

A diagnostic for docs/quality.md: which knowledge learned without labels could help a task with
few labels. For each labelled sample of a single-sentence task (drawn exactly as ``finetune
--max-train-examples N --seed S`` draws it), a logistic regression is fitted on frozen features
of each text and scored on dev (only dev: a diagnostic chooses nothing and reads no test split):

- ``one-hot``: which vocab tokens the text contains (what a model from random init can learn
  from the labels alone, at the bag level);
- ``<model> embeddings``: the mean of the text's rows of the model's word-embedding table;
- ``<model> encoder``: the mean of the model's last hidden states over the text's tokens;
- ``random-init ...``: the same two from the model's config drawn with the random init
  ``finetune --random-init`` uses (seeded by the sample seed);
- ``LSA``: term vectors of a truncated SVD of the corpus's TF-IDF document-term matrix
  (``WORK/docs``; same width as the embeddings), a label-free reference computed in seconds.

Each feature set is probed alone and **next to the one-hot features** (concatenated): the
second number says what the features add to what the labels already teach token by token.
The L2 penalty is chosen per fit by 3-fold cross-validation on the labelled sample only.

Usage (a work directory made by ``pretraining_gain.py prepare``, models by its ``pretrain``)::

    python benchmarks/feature_probe.py -w work/gain --task chnsenticorp --labels 250,1000 \
        --models A2000,A7000
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from albertzh.data import tasks as T  # noqa: E402
from albertzh.errors import AlbertzhError, InputError  # noqa: E402
from albertzh.model import AlbertConfig, AlbertModel  # noqa: E402
from albertzh.pipeline.finetune import train_sample  # noqa: E402
from albertzh.tokenizer import load_tokenizer  # noqa: E402

L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)


def token_ids(tokenizer: Any, texts: list[str], max_len: int) -> list[list[int]]:
    """Model inputs as finetuning builds them: [CLS] text [SEP], truncated to ``max_len``."""
    return [tokenizer.encode_for_model(t, max_len=max_len)[0] for t in texts]


def one_hot(ids: list[list[int]], vocab: int, special: set[int]) -> np.ndarray:
    out = np.zeros((len(ids), vocab), dtype=np.float32)
    for i, row in enumerate(ids):
        out[i, [t for t in row if t not in special]] = 1.0
    return out


def bag(ids: list[list[int]], table: np.ndarray, special: set[int]) -> np.ndarray:
    """Mean of the rows of ``table`` for each text's (non-special) tokens."""
    out = np.zeros((len(ids), table.shape[1]), dtype=np.float32)
    for i, row in enumerate(ids):
        keep = [t for t in row if t not in special]
        if keep:
            out[i] = table[keep].mean(0)
    return out


@torch.no_grad()
def encoder_mean(model: AlbertModel, ids: list[list[int]], batch: int = 64) -> np.ndarray:
    """Mean of the last hidden states over each text's tokens (special tokens included)."""
    model.eval()
    out = []
    for s in range(0, len(ids), batch):
        rows = ids[s : s + batch]
        n = max(map(len, rows))
        x = torch.zeros(len(rows), n, dtype=torch.long)
        m = torch.zeros(len(rows), n, dtype=torch.long)
        for i, r in enumerate(rows):
            x[i, : len(r)] = torch.tensor(r)
            m[i, : len(r)] = 1
        h = model(x, attention_mask=m).last_hidden_state
        w = m.unsqueeze(-1).to(h.dtype)
        out.append(((h * w).sum(1) / w.sum(1)).numpy())
    return np.concatenate(out)


def lsa_table(docs_dir: Path, tokenizer: Any, vocab: int, dim: int, seed: int = 0) -> np.ndarray:
    """Term vectors (vocab x dim) from a truncated SVD of the corpus's TF-IDF matrix."""
    import pyarrow.parquet as pq

    rows, cols, vals = [], [], []
    n_docs = 0
    for part in sorted(docs_dir.glob("*.parquet")):
        for text in pq.read_table(part, columns=["text"]).column("text").to_pylist():
            u, c = np.unique(
                np.asarray(tokenizer.encode(text).ids, dtype=np.int64), return_counts=True
            )
            rows += [n_docs] * len(u)
            cols += u.tolist()
            vals += (1.0 + np.log(c)).tolist()
            n_docs += 1
    if not n_docs:
        raise InputError(f"{docs_dir}: no documents")
    tf = torch.sparse_coo_tensor(
        torch.tensor([rows, cols]),
        torch.tensor(vals, dtype=torch.float32),
        (n_docs, vocab),
        check_invariants=True,
    ).coalesce()
    df = torch.bincount(tf.indices()[1], minlength=vocab).float()
    idf = torch.log(n_docs / (1.0 + df))
    x = torch.sparse_coo_tensor(
        tf.indices(), tf.values() * idf[tf.indices()[1]], tf.shape, check_invariants=True
    )
    torch.manual_seed(seed)
    _, s, v = torch.svd_lowrank(x, q=min(dim + 10, vocab, n_docs), niter=4)
    k = min(dim, s.numel())
    return (v[:, :k] * s[:k].sqrt()).numpy()


def fit_logreg(x: np.ndarray, y: np.ndarray, classes: int, l2: float) -> tuple[torch.Tensor, ...]:
    """Multinomial logistic regression (L-BFGS) on standardised features."""
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xt = torch.from_numpy((x - mu) / sd)
    yt = torch.from_numpy(y)
    w = torch.zeros(x.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(xt @ w + b, yt) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return torch.from_numpy(mu), torch.from_numpy(sd), w.detach(), b.detach()


def accuracy(fit: tuple[torch.Tensor, ...], x: np.ndarray, y: np.ndarray) -> float:
    mu, sd, w, b = fit
    pred = ((torch.from_numpy(x) - mu) / sd @ w + b).argmax(1).numpy()
    return float((pred == y).mean())


def choose_l2(x: np.ndarray, y: np.ndarray, classes: int, seed: int) -> float:
    """The L2 penalty of ``L2_GRID`` with the best 3-fold cross-validated accuracy."""
    folds = np.array_split(np.random.default_rng(seed).permutation(len(y)), 3)
    scores = []
    for l2 in L2_GRID:
        accs = []
        for k in range(3):
            tr = np.concatenate([f for j, f in enumerate(folds) if j != k])
            accs.append(accuracy(fit_logreg(x[tr], y[tr], classes, l2), x[folds[k]], y[folds[k]]))
        scores.append(statistics.mean(accs))
    return L2_GRID[int(np.argmax(scores))]


def probe(xtr: np.ndarray, ytr: np.ndarray, xdv: np.ndarray, ydv: np.ndarray, classes: int,
          seed: int) -> float:  # fmt: skip
    l2 = choose_l2(xtr, ytr, classes, seed)
    return accuracy(fit_logreg(xtr, ytr, classes, l2), xdv, ydv)


def _spread(xs: list[float]) -> str:
    return f"{statistics.mean(xs):.3f} ({min(xs):.3f}–{max(xs):.3f})"


def run(a: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(a.threads)
    work: Path = a.work
    task = T.get_task(a.task)
    data = work / "tasks" / a.task
    _, train = T.load_split(task, data, "train", require_labels=True)
    _, dev = T.load_split(task, data, "dev", require_labels=True)
    task = T.labels_of(task, train, data)
    label_ix = {lab: i for i, lab in enumerate(task.labels)}
    ytr_all = np.array([label_ix[e.label] for e in train])
    ydv = np.array([label_ix[e.label] for e in dev])
    classes = len(task.labels)

    tokenizer = load_tokenizer(work / "vocab")
    config = AlbertConfig.from_json(work / f"pre-{a.models[0]}" / "config.json")
    vocab = config.vocab_size
    special = set(tokenizer.special_ids_by_role.values())
    ids_tr = token_ids(tokenizer, [e.text_a for e in train], a.max_seq_len)
    ids_dv = token_ids(tokenizer, [e.text_a for e in dev], a.max_seq_len)

    samples = {}  # (labels, seed) -> train row indices, as finetune draws them
    for n in a.labels:
        for seed in a.seeds:
            keep = train_sample(len(train), n, seed)
            samples[n, seed] = np.arange(len(train)) if keep is None else keep
    used = sorted({int(i) for idx in samples.values() for i in idx})

    # features[name] = (per-train-row array for the rows in ``used`` (by row), dev array)
    def for_rows(fn: Any) -> tuple[dict[int, np.ndarray], np.ndarray]:
        tr = fn([ids_tr[i] for i in used])
        return dict(zip(used, tr, strict=True)), fn(ids_dv)

    feats: dict[str, Any] = {"one-hot": for_rows(lambda ids: one_hot(ids, vocab, special))}
    if a.lsa:
        table = lsa_table(work / "docs", tokenizer, vocab, config.embedding_size)
        feats["LSA"] = for_rows(lambda ids: bag(ids, table, special))
    per_seed: dict[str, Any] = {}  # random-init features depend on the seed
    for name in a.models:
        model = AlbertModel.from_pretrained(work / f"pre-{name}")
        if model.config.vocab_size != vocab:
            raise InputError(f"pre-{name}: vocab size {model.config.vocab_size}, not {vocab}")
        table = model.embeddings.word_embeddings.weight.detach().numpy()
        feats[f"{name} embeddings"] = for_rows(lambda ids, t=table: bag(ids, t, special))
        feats[f"{name} encoder"] = for_rows(lambda ids, m=model: encoder_mean(m, ids))
    if a.random_init:
        for seed in a.seeds:
            torch.manual_seed(seed)
            model = AlbertModel(config)
            table = model.embeddings.word_embeddings.weight.detach().numpy()
            per_seed[seed] = {
                "random-init embeddings": for_rows(lambda ids, t=table: bag(ids, t, special)),
                "random-init encoder": for_rows(lambda ids, m=model: encoder_mean(m, ids)),
            }

    names = list(feats) + (list(next(iter(per_seed.values()))) if per_seed else [])
    results: dict[str, Any] = {"task": a.task, "split": "dev", "rows": {}}
    print(f"{a.task}, dev accuracy, mean (min–max) over label samples {a.seeds}:")
    print("| task | labels | features | alone | next to one-hot | added to one-hot |")
    print("|---|---|---|---|---|---|")
    for n in a.labels:
        base = None
        for name in names:
            alone, both = [], []
            for seed in a.seeds:
                tr_rows, dv = (per_seed[seed] if name.startswith("random-init") else feats)[name]
                idx = samples[n, seed]
                xtr = np.stack([tr_rows[int(i)] for i in idx])
                ytr = ytr_all[idx]
                alone.append(probe(xtr, ytr, dv, ydv, classes, seed))
                if name != "one-hot":
                    oh_tr, oh_dv = feats["one-hot"]
                    xtr2 = np.concatenate([np.stack([oh_tr[int(i)] for i in idx]), xtr], 1)
                    both.append(
                        probe(xtr2, ytr, np.concatenate([oh_dv, dv], 1), ydv, classes, seed)
                    )
            if name == "one-hot":
                base = alone
                row = f"| {a.task} | {n} | one-hot | {_spread(alone)} | — | — |"
            else:
                gain = 100 * (statistics.mean(both) - statistics.mean(base))
                row = f"| {a.task} | {n} | {name} | {_spread(alone)} | {_spread(both)} | {gain:+.1f} |"
            print(row, flush=True)
            results["rows"][f"{n}|{name}"] = {"alone": alone, "with_one_hot": both or None}
    return results


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("-w", "--work", type=Path, required=True)
    p.add_argument("--task", default="chnsenticorp")
    p.add_argument("--labels", type=lambda s: [int(x) for x in s.split(",")], default=[250, 1000])
    p.add_argument("--seeds", type=lambda s: [int(x) for x in s.split(",")], default=[0, 1, 2])
    p.add_argument("--models", type=lambda s: s.split(","), required=True, help="pre-NAME dirs")
    p.add_argument("--max-seq-len", type=int, default=128)
    p.add_argument("--no-lsa", dest="lsa", action="store_false")
    p.add_argument("--no-random-init", dest="random_init", action="store_false")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, help="write the per-seed figures as JSON")
    a = p.parse_args(argv)
    try:
        task = T.get_task(a.task)
    except AlbertzhError as e:  # the registry's own one-line message
        p.error(str(e))
    if task.text_b or T.kind_of(a.task) != "classification":
        p.error(f"--task {a.task}: not a single-sentence classification task")
    try:
        res = run(a)
    except AlbertzhError as e:  # a missing work dir, split file or model dir: one line
        p.error(str(e))
    if a.out:
        a.out.write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
