"""``benchmarks/feature_probe.py`` on a synthetic task that only knowledge from outside the
labels can solve: the labelled sample uses a few tokens of each class, dev only other ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.benchmark_module import load_benchmark
from tests.train.test_instances import TINY_MODEL

torch = pytest.importorskip("torch")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

CHARS = "我们你他是的了在有不这个人中大上为和国地到以说时要就出会可也好吗很对年生天下去来"
POS, NEG = CHARS[:20], CHARS[20:40]  # class 1 tokens, class 0 tokens


@pytest.fixture(scope="module")
def probe():  # noqa: ANN201
    return load_benchmark("feature_probe")


def _texts(chars: str, n: int, seed: int) -> list[str]:
    import random

    r = random.Random(seed)
    return ["".join(r.choice(chars) for _ in range(4)) for _ in range(n)]


def _work(tmp: Path) -> Path:
    """vocab/, tasks/chnsenticorp/{train,dev}.tsv, docs/ and pre-P (a model whose word
    embeddings put every class-1 token on one side and every class-0 token on the other)."""
    from albertzh.model import AlbertForPreTraining
    from albertzh.model.config import AlbertConfig

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *CHARS[:40]]
    assert len(tokens) == TINY_MODEL["vocab_size"]
    (tmp / "vocab").mkdir(parents=True)
    (tmp / "vocab" / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    task = tmp / "tasks" / "chnsenticorp"
    task.mkdir(parents=True)
    # the labelled rows see 3 tokens per class; dev sees only the other 17
    train = [(1, t) for t in _texts(POS[:3], 30, 1)] + [(0, t) for t in _texts(NEG[:3], 30, 2)]
    dev = [(1, t) for t in _texts(POS[3:], 50, 3)] + [(0, t) for t in _texts(NEG[3:], 50, 4)]
    for name, rows in (("train", train), ("dev", dev)):
        lines = ["label\ttext_a", *(f"{y}\t{t}" for y, t in rows)]
        (task / f"{name}.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    # a corpus whose documents keep to one class's tokens: LSA can find the two groups
    docs = _texts(POS, 200, 5) + _texts(NEG, 200, 6)
    (tmp / "docs").mkdir()
    pq.write_table(pa.table({"text": [d * 3 for d in docs]}), tmp / "docs" / "part-00000.parquet")
    torch.manual_seed(0)
    model = AlbertForPreTraining(AlbertConfig(**TINY_MODEL))
    emb = model.albert.embeddings.word_embeddings.weight
    with torch.no_grad():
        direction = torch.randn(emb.shape[1])
        for i, tok in enumerate(tokens):
            if tok in POS:
                emb[i] += direction
            elif tok in NEG:
                emb[i] -= direction
    model.save_pretrained(tmp / "pre-P")
    return tmp


def test_features_from_outside_the_labels_show_as_added_accuracy(probe, tmp_path: Path) -> None:
    work = _work(tmp_path)
    out = tmp_path / "probe.json"
    probe.main(
        ["-w", str(work), "--labels", "12", "--seeds", "0,1", "--models", "P", "--out", str(out)]
    )
    rows = json.loads(out.read_text())["rows"]
    mean = lambda xs: sum(xs) / len(xs)  # noqa: E731
    # dev tokens never occur in the labelled rows: token identity alone is a guess
    assert mean(rows["12|one-hot"]["alone"]) <= 0.6
    # the model's embedding table knows the groups, alone and next to the one-hot features
    assert mean(rows["12|P embeddings"]["alone"]) >= 0.95
    assert mean(rows["12|P embeddings"]["with_one_hot"]) >= 0.95
    # so does LSA over a corpus whose documents keep to one group
    assert mean(rows["12|LSA"]["alone"]) >= 0.7
    # random-init tables know nothing of the groups
    assert mean(rows["12|random-init embeddings"]["with_one_hot"]) <= 0.75
    assert len(rows["12|P encoder"]["alone"]) == 2  # one figure per label sample
    # without the two references, only the one-hot and the model's rows
    probe.main(["-w", str(work), "--labels", "12", "--seeds", "0", "--models", "P",
                "--no-lsa", "--no-random-init", "--out", str(out)])  # fmt: skip
    rows = json.loads(out.read_text())["rows"]
    assert set(rows) == {"12|one-hot", "12|P embeddings", "12|P encoder"}


def test_bad_inputs_are_one_line_exit_2(
    probe, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    for argv, message in (
        (["--task", "ocnli"], "not a single-sentence classification task"),
        (["--task", "nosuch"], "unknown task 'nosuch'"),
        ([], "data directory not found"),  # no tasks/ in the work dir
    ):
        with pytest.raises(SystemExit) as exc:
            probe.main(["-w", str(tmp_path), "--models", "P", *argv])
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert message in err and "Traceback" not in err
