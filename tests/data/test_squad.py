"""Span extraction data: SQuAD v1 reading and its errors, windows and their labels, spans back to
the exact characters of the context, and CMRC 2018 EM/F1 on cases computed by hand."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from albertzh.data import squad
from albertzh.errors import InputError
from albertzh.tokenizer import load_tokenizer
from tests.conftest import shared_path


def write_squad(path: Path, paragraphs: list[dict]) -> Path:
    path.write_text(
        json.dumps({"version": "v1", "data": [{"paragraphs": paragraphs}]}, ensure_ascii=False),
        encoding="utf-8",
    )
    return path


def qa(qid: str, question: str, *answers: tuple[str, int]) -> dict:
    return {
        "id": qid,
        "question": question,
        "answers": [{"text": t, "answer_start": s} for t, s in answers],
    }


CONTEXT = "北京是中国的首都，ALBERT 在2019年发布。"


@pytest.fixture
def tokenizer(tmp_path: Path):  # noqa: ANN201
    chars = sorted(set(CONTEXT + "哪一年发布首都是什么") - {" "})
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = specials + chars + ["albert", "2019", "##ert", "al"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return load_tokenizer(tmp_path)


# --------------------------------------------------------------------------- reading


def test_reads_questions_with_their_answers(tmp_path: Path) -> None:
    path = write_squad(
        tmp_path / "dev.json",
        [
            {
                "context": CONTEXT,
                "qas": [
                    qa("Q1", "首都是哪里", ("北京", 0), ("北京", 0)),
                    qa("Q2", "哪一年发布", ("2019年", 17), ("二〇一九年", -1)),
                ],
            }
        ],
    )
    q1, q2 = squad.read_squad(path, require_answers=True)
    assert (q1.qid, q1.context, q1.answers[0]) == ("Q1", CONTEXT, squad.Answer("北京", 0))
    assert q2.answers[1].start == squad.NO_ANSWER  # scored against, never trained on
    assert q2.train_answer() == squad.Answer("2019年", 17)


@pytest.mark.parametrize(
    ("question", "message"),
    [
        (qa("Q7", "首都", ("北京", 1)), "question Q7: answer 1: answer_start 1 does not point at '北京'"),
        ({"id": "Q8", "answers": []}, "question Q8: missing field 'question'"),
        ({"id": "Q9", "question": "x", "answers": [{"text": "北京"}]}, "question Q9: answer 1: missing field 'answer_start'"),
        ({"question": "x"}, "qas[1]: missing field 'id'"),
    ],
)  # fmt: skip
def test_bad_questions_name_the_file_and_question(
    tmp_path: Path, question: dict, message: str
) -> None:
    path = write_squad(tmp_path / "train.json", [{"context": CONTEXT, "qas": [question]}])
    with pytest.raises(InputError) as err:
        squad.read_squad(path, require_answers=True)
    assert str(path) in str(err.value) and message in str(err.value)


def test_bad_answers_can_be_skipped_and_counted(tmp_path: Path) -> None:
    path = write_squad(
        tmp_path / "train.json",
        [{"context": CONTEXT, "qas": [qa("A", "q", ("北京", 1)), qa("B", "q", ("北京", 0))]}],
    )
    skipped: list[str] = []
    assert [e.qid for e in squad.read_squad(path, skipped=skipped)] == ["B"]
    assert skipped == ["A"]


def test_reads_the_shared_cmrc2018_dev_set() -> None:
    path = shared_path("tasks/cmrc2018/dev.json")
    dev = squad.read_squad(path, require_answers=True)
    assert len(dev) == 493 and len({e.qid for e in dev}) == 493
    assert all(a.start == squad.NO_ANSWER or e.context[a.start :].startswith(a.text)
               for e in dev for a in e.answers or ())  # fmt: skip


# --------------------------------------------------------------------------- windows and spans


def test_token_span_covers_the_answer_characters() -> None:
    offsets = [(0, 1), (1, 2), (3, 9), (9, 13)]
    assert squad.token_span(offsets, 1, 2) == (1, 1)
    assert squad.token_span(offsets, 4, 10) == (2, 3)  # inside tokens: the tokens holding them
    assert squad.token_span(offsets, 2, 3) is None  # a dropped space


def test_windows_label_the_answer_or_cls(tokenizer) -> None:  # noqa: ANN001
    ex = squad.QAExample("Q", "哪一年发布", CONTEXT, (squad.Answer("2019年", 17),))
    feats = squad.encode_features(
        tokenizer, [ex], max_len=16, max_query_len=4, stride=3, labelled=True
    )
    assert len(feats) > 1  # the context does not fit one window
    ctx = tokenizer.encode(CONTEXT)
    held = 0
    for f, (ids, types), s, e in zip(
        feats.features, feats.encoded, feats.starts, feats.ends, strict=True
    ):
        assert len(ids) <= 16 and ids[0] == tokenizer.cls_id and ids[-1] == tokenizer.sep_id
        assert f.offset == 4 + 2 and types == [0] * 6 + [1] * (f.end - f.start + 1)
        assert ids[f.offset : f.offset + f.end - f.start] == ctx.ids[f.start : f.end]
        if s == 0:
            assert e == 0
            continue
        held += 1
        cs = feats.offsets[0][f.start + s - f.offset][0]
        ce = feats.offsets[0][f.start + e - f.offset][1]
        assert CONTEXT[cs:ce] == "2019年"
    assert held >= 1
    starts = [f.start for f in feats.features]
    assert all(b - a == 3 for a, b in zip(starts, starts[1:-1], strict=False))


def test_best_span_maps_back_to_the_exact_context_characters(tokenizer) -> None:  # noqa: ANN001
    ex = squad.QAExample("Q", "首都是什么", CONTEXT, None)
    feats = squad.encode_features(tokenizer, [ex], max_len=14, max_query_len=5, stride=2)
    ctx = tokenizer.encode(CONTEXT)
    k = next(i for i, (s, _) in enumerate(ctx.offsets) if s == CONTEXT.index("ALBERT"))
    starts, ends = [], []
    for f, (ids, _) in zip(feats.features, feats.encoded, strict=True):
        s, e = np.zeros(len(ids), np.float32), np.zeros(len(ids), np.float32)
        if f.start <= k < f.end and k + 1 < f.end:
            s[f.offset + k - f.start] = 5.0
            e[f.offset + k + 1 - f.start] = 4.0  # "ALBERT" may be two tokens, or one
        starts.append(s)
        ends.append(e)
    (pred,) = squad.best_spans(feats, [ex], starts, ends, max_answer_len=3)
    assert pred is not None and pred.score == pytest.approx(9.0)
    assert pred.text == CONTEXT[pred.start : pred.start + len(pred.text)]
    assert pred.text.startswith("ALBERT")  # original case, not the tokenizer's lower case
    (short,) = squad.best_spans(feats, [ex], starts, ends, max_answer_len=1)
    assert short is not None and short.score < 9.0  # the 2-token span is too long now


# --------------------------------------------------------------------------- CMRC 2018 metrics


def test_segments_and_punctuation_follow_the_official_script() -> None:
    assert squad.segments("ALBERT 模型，v2.0版") == ["albert", "模", "型", "v2.0", "版"]
    assert squad.segments("《三体》") == ["三", "体"]
    assert squad.remove_punctuation(" 《北京》。 ") == "北京"
    assert squad.remove_punctuation("a b") == "a b"  # spaces inside stay, as in the script


def test_em_and_f1_by_hand() -> None:
    # "北京市" vs "北京": common run 2, P = 2/2, R = 2/3, F1 = 0.8.
    assert squad.f1_score(["北京市"], "北京") == pytest.approx(0.8)
    # Best reference wins; punctuation does not count.
    assert squad.f1_score(["上海", "北京。"], "《北京》") == pytest.approx(1.0)
    assert squad.em_score(["上海", "北京。"], "《北京》") == 1.0
    # Longest common *run*: "北京大学" vs "北大学": run "大学" = 2, P = 2/3, R = 2/4 -> 4/7.
    assert squad.f1_score(["北京大学"], "北大学") == pytest.approx(4 / 7)
    assert squad.f1_score(["北京"], "") == 0.0 and squad.em_score(["北京"], "北京市") == 0.0


def test_qa_metrics_score_missing_predictions_zero() -> None:
    a = squad.QAExample("A", "q", "北京市", (squad.Answer("北京市", 0),))
    b = squad.QAExample("B", "q", "上海", (squad.Answer("上海", 0),))
    c = squad.QAExample("C", "q", "x", None)  # unlabelled: not counted
    m = squad.qa_metrics([a, b, c], {"A": "北京"})
    assert m == {"em": 0.0, "f1": pytest.approx(0.4), "questions": 2}
    m = squad.qa_metrics([a, b], {"A": "北京市", "B": "上海"})
    assert (m["em"], m["f1"]) == (1.0, 1.0)
