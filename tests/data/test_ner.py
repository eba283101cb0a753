"""NER data without torch: reading (MSRA TSV, CLUENER JSON), tag schemes and label sets, the
character <-> token round trip, windows, and entity-level metrics against hand computation and
an independent (conlleval-style, incremental) implementation."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest

from albertzh.data import ner
from albertzh.data import tasks as T
from albertzh.errors import ConfigError, InputError
from albertzh.tokenizer import load_tokenizer

MSRA = T.get_task("msra_ner")
NER = T.get_task("ner")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


# --------------------------------------------------------------------------- entities and metrics


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "I-PER", "O", "B-LOC"], [("PER", 0, 2), ("LOC", 3, 4)]),
        # conlleval: an I- without B- starts an entity
        (["O", "I-LOC", "I-LOC", "O"], [("LOC", 1, 3)]),
        (["I-PER"], [("PER", 0, 1)]),
        # a type change inside an entity ends it and starts another
        (["B-PER", "I-LOC", "I-LOC"], [("PER", 0, 1), ("LOC", 1, 3)]),
        (["B-PER", "B-PER", "I-PER"], [("PER", 0, 1), ("PER", 1, 3)]),
        (["O", "O"], []),
        # BIOES
        (["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"], [("PER", 0, 1), ("LOC", 1, 4)]),
        (["B-ORG", "E-ORG", "E-ORG"], [("ORG", 0, 2), ("ORG", 2, 3)]),
        (["E-ORG", "S-ORG"], [("ORG", 0, 1), ("ORG", 1, 2)]),
    ],
)
def test_entity_spans(tags: list[str], expected: list) -> None:
    assert ner.entity_spans(tags) == expected


def test_metrics_hand_computed() -> None:
    gold = [
        ["B-PER", "I-PER", "O", "B-LOC", "I-LOC"],  # PER(0,2) LOC(3,5)
        ["O", "B-ORG", "I-ORG", "I-ORG", "O"],  # ORG(1,4)
        ["B-LOC", "O", "B-PER", "O", "O"],  # LOC(0,1) PER(2,3)
    ]
    pred = [
        ["B-PER", "I-PER", "O", "B-LOC", "O"],  # PER right, LOC(3,4) wrong span
        ["O", "I-ORG", "I-ORG", "I-ORG", "O"],  # ORG(1,4): right (I- starts it)
        ["B-LOC", "O", "B-LOC", "O", "B-PER"],  # LOC right, LOC(2,3) wrong type, PER(4,5) extra
    ]
    m = ner.entity_metrics(gold, pred)
    # gold 5, predicted 6, correct 3 (PER, ORG, LOC(0,1))
    assert (m["gold_entities"], m["predicted_entities"], m["correct_entities"]) == (5, 6, 3)
    assert m["precision"] == pytest.approx(3 / 6) and m["recall"] == pytest.approx(3 / 5)
    assert m["f1"] == pytest.approx(2 * 0.5 * 0.6 / 1.1)
    assert m["per_type"]["PER"] == {
        "precision": 0.5,
        "recall": 0.5,
        "f1": 0.5,
        "support": 2,
        "predicted": 2,
    }
    assert m["per_type"]["LOC"]["precision"] == pytest.approx(1 / 3)
    assert m["per_type"]["LOC"]["recall"] == pytest.approx(1 / 2)
    assert m["per_type"]["ORG"]["f1"] == 1.0
    assert ner.entity_metrics([["O"]], [["O"]])["f1"] == 0.0


# conlleval.pl's chunk rules (BIO subset) and its token-by-token counting, transliterated.
def _end(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    return (
        (prev == "B" and tag in ("B", "O"))
        or (prev == "I" and tag in ("B", "O"))
        or (prev != "O" and prev_type != typ)
    )


def _start(prev: str, tag: str, prev_type: str, typ: str) -> bool:
    return (
        (prev in ("B", "I", "O") and tag == "B")
        or (prev == "O" and tag == "I")
        or (tag != "O" and prev_type != typ)
    )


def _conlleval(gold: list[list[str]], pred: list[list[str]]) -> tuple[int, int, int]:
    def split(t: str) -> tuple[str, str]:
        return ("O", "") if t == "O" else tuple(t.split("-", 1))  # type: ignore[return-value]

    correct = found_gold = found_pred = 0
    in_correct = False
    lc, lct, lg, lgt = "O", "", "O", ""
    for g_seq, p_seq in zip(gold, pred, strict=True):
        for g, p in [*zip(g_seq, p_seq, strict=True), ("O", "O")]:  # a boundary after each
            c, ct = split(g)
            q, qt = split(p)
            if in_correct:
                ec, eq = _end(lc, c, lct, ct), _end(lg, q, lgt, qt)
                if ec and eq and lgt == lct:
                    in_correct = False
                    correct += 1
                elif ec != eq or qt != ct:
                    in_correct = False
            sc, sq = _start(lc, c, lct, ct), _start(lg, q, lgt, qt)
            if sc and sq and qt == ct:
                in_correct = True
            found_gold += sc
            found_pred += sq
            lc, lct, lg, lgt = c, ct, q, qt
    return correct + in_correct, found_gold, found_pred


def test_metrics_agree_with_conlleval_counting() -> None:
    rng = random.Random(0)
    tags = ["O", "O", "O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    for trial in range(30):
        gold = [[rng.choice(tags) for _ in range(rng.randint(1, 12))] for _ in range(8)]
        pred = [[t if rng.random() < 0.7 else rng.choice(tags) for t in seq] for seq in gold]
        m = ner.entity_metrics(gold, pred)
        got = (m["correct_entities"], m["gold_entities"], m["predicted_entities"])
        assert got == _conlleval(gold, pred), trial


def test_tag_violations_and_spans_to_tags() -> None:
    assert ner.tag_violations([["O", "I-LOC", "I-LOC"], ["B-PER", "I-LOC"], ["B-PER"]]) == 2
    spans = [("PER", 0, 2), ("LOC", 3, 4)]
    assert ner.spans_to_tags(5, spans, "bio") == ["B-PER", "I-PER", "O", "B-LOC", "O"]
    assert ner.spans_to_tags(5, spans, "bioes") == ["B-PER", "E-PER", "O", "S-LOC", "O"]
    assert ner.spans_to_tags(4, [("X", 0, 3)], "bioes") == ["B-X", "I-X", "E-X", "O"]
    assert ner.tag_problem("B-PER") is None and ner.tag_problem("O") is None
    for bad in ("PER", "B_PER", "X-PER", "B-", "BB-PER"):
        assert ner.tag_problem(bad)


def test_entities_are_character_offsets_into_the_text() -> None:
    e = ner.TaggedExample(("在", "2008", "年", "张", "三"), None, 1)
    got = ner.entities(e, ["O", "B-DATE", "I-DATE", "B-PER", "I-PER"])
    assert got == [
        {"type": "DATE", "text": "2008年", "start": 1, "end": 6},
        {"type": "PER", "text": "张三", "start": 6, "end": 8},
    ]
    for ent in got:
        assert e.text[ent["start"] : ent["end"]] == ent["text"]


# --------------------------------------------------------------------------- reading


def test_msra_tsv_with_header_without_header_and_unspaced(tmp_path: Path) -> None:
    f = write(
        tmp_path / "a.tsv",
        "text_a\tlabel\n我 在 北 京\tO O B-LOC I-LOC\n张 三\tB-PER I-PER\n",
    )
    ex = ner.read_tagged(MSRA, f, ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"])
    assert [e.text for e in ex] == ["我在北京", "张三"] and [e.line for e in ex] == [2, 3]
    assert ex[0].tags == ("O", "O", "B-LOC", "I-LOC")
    g = write(tmp_path / "b.tsv", "我在北京\tO O B-LOC I-LOC\n")  # no header, no spaces
    (e,) = ner.read_rows(MSRA, g)
    assert e.units == ("我", "在", "北", "京") and e.tags == ("O", "O", "B-LOC", "I-LOC")
    test = write(tmp_path / "t.tsv", "text_a\n我 在\n")
    (u,) = ner.read_tagged(MSRA, test, ["O"])
    assert u.tags is None


def test_cluener_json_spans_become_tags(tmp_path: Path) -> None:
    f = jsonl(
        tmp_path / "train.json",
        [
            {
                "text": "浙商银行企业信贷部叶老桂",
                "label": {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}},
            },  # fmt: skip
            {"text": "我在上海", "label": {"address": {"上": [[2, 2]]}}},
            {"text": "没有实体", "label": {}},
        ],
    )
    rows = ner.read_rows(NER, f)
    labels = ner.task_labels(rows, f, tmp_path, "bioes")
    assert labels == ("O", *(f"{p}-{k}" for k in ("address", "company", "name") for p in "BIES"))
    ex = ner.to_examples(rows, labels, f)
    assert ex[0].tags[:4] == ("B-company", "I-company", "I-company", "E-company")
    assert ex[0].tags[9:] == ("B-name", "I-name", "E-name")
    assert ex[1].tags == ("O", "O", "S-address", "O") and ex[2].tags == ("O",) * 4
    bio = ner.to_examples(rows, ner.task_labels(rows, f, tmp_path, "auto"), f)
    assert bio[1].tags == ("O", "O", "B-address", "O")
    # tags in JSON: a list or a string
    g = jsonl(tmp_path / "g.json", [{"text": "北京", "label": ["B-LOC", "I-LOC"]},
                                    {"text": "北京", "label": "B-LOC I-LOC"}])  # fmt: skip
    assert [r.tags for r in ner.read_rows(NER, g)] == [("B-LOC", "I-LOC")] * 2


def test_label2id_json_wins_and_is_checked(tmp_path: Path) -> None:
    f = write(tmp_path / "train.tsv", "text_a\tlabel\n北 京\tB-LOC I-LOC\n")
    rows = ner.read_rows(MSRA, f)
    assert ner.task_labels(rows, f, tmp_path) == ("O", "B-LOC", "I-LOC")  # inferred
    write(tmp_path / "label2id.json", '{"O": 0, "B-PER": 1, "I-PER": 2, "B-LOC": 3, "I-LOC": 4}')
    assert ner.task_labels(rows, f, tmp_path) == ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
    with pytest.raises(ConfigError, match=r"--tag-scheme bioes: .*label2id.json holds BIO tags"):
        ner.task_labels(rows, f, tmp_path, "bioes")
    for text, needle in (
        ('{"O": 0, "B-LOC": 2}', "ids must be 0..1"),
        ('{"O": 0, "LOC": 1}', "tag 'LOC' is not O or"),
        ('{"B-LOC": 0}', "no 'O' tag"),
        ('["O"]', "expected a JSON object"),
        ("{", "not valid JSON"),
    ):
        write(tmp_path / "label2id.json", text)
        with pytest.raises(InputError, match=needle) as err:
            ner.task_labels(rows, f, tmp_path)
        assert str(err.value).startswith(str(tmp_path / "label2id.json"))
    allo = write(tmp_path / "o" / "train.tsv", "text_a\tlabel\n北 京\tO O\n")
    with pytest.raises(InputError, match="no entities"):
        ner.infer_labels(ner.read_rows(MSRA, allo), "auto", allo)


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("text_a\tlabel\n北 京\tB-LOC I-LOC\n北 京 人\tB-LOC I-LOC\n", "line 3: 2 tags for 3 characters"),
        ("text_a\tlabel\n北 京\tB-LOC LOC\n", "line 2: tag 'LOC' is not O or B-/I-/E-/S-TYPE (character 2)"),
        ("text_a\tlabel\n北 京\tB-LOC I-LOC\n北 京\n", "line 3: missing label field"),
        ("text_a\tlabel\n", "empty (no rows)"),
    ],
)  # fmt: skip
def test_bad_tsv_names_file_and_line(tmp_path: Path, content: str, needle: str) -> None:
    f = write(tmp_path / "train.tsv", content)
    with pytest.raises(InputError) as err:
        ner.read_rows(MSRA, f)
    assert str(err.value).startswith(f"{f}: ") and needle in str(err.value)


def test_unknown_tag_names_file_and_line(tmp_path: Path) -> None:
    f = write(tmp_path / "dev.tsv", "text_a\tlabel\n北 京\tB-LOC I-LOC\n张 三\tB-PER I-PER\n")
    with pytest.raises(InputError, match=r"dev.tsv: line 3: unknown tag 'B-PER' \(character 1"):
        ner.read_tagged(MSRA, f, ["O", "B-LOC", "I-LOC"])


@pytest.mark.parametrize(
    ("row", "needle"),
    [
        ({"text": "我在上海", "label": {"LOC": {"上海": [[2, 4]]}}}, "[2, 4] is outside the text (4 characters"),
        ({"text": "我在上海", "label": {"LOC": {"上海": [[-1, 0]]}}}, "is outside the text"),
        ({"text": "我在上海", "label": {"LOC": {"上海": [[1, 2]]}}}, "does not match the text there ('在上'"),
        ({"text": "我在上海", "label": {"LOC": {"上海": [[2, 3]]}, "X": {"在上": [[1, 2]]}}}, "overlap"),
        ({"text": "我在上海", "label": {"LOC": {"上海": [2, 3]}}}, "2 is not [start, end]"),
        ({"text": "我在上海", "label": {"LOC": ["上海"]}}, "expected {entity text"),
        ({"text": "我在上海", "label": 3}, "label is neither tags nor"),
        ({"text": 5, "label": []}, "field 'text' is not a string"),
        ({"text": "", "label": []}, "empty text"),
    ],
)  # fmt: skip
def test_bad_json_names_file_and_line(tmp_path: Path, row: dict, needle: str) -> None:
    f = jsonl(tmp_path / "train.json", [{"text": "好", "label": {}}, row])
    with pytest.raises(InputError) as err:
        ner.read_rows(NER, f)
    assert str(err.value).startswith(f"{f}: line 2: ") and needle in str(err.value)


def test_shared_msra_ner_reads_as_is(msra_ner: Path) -> None:
    task = T.get_task("msra_ner")
    path = T.split_file(task, msra_ner, "train")
    rows = ner.read_rows(task, path, require_labels=True)
    labels = ner.task_labels(rows, path, msra_ner)
    assert labels == ("O", "B-LOC", "I-LOC", "B-PER", "I-PER", "B-ORG", "I-ORG")
    dev = ner.read_tagged(task, T.split_file(task, msra_ner, "dev"), labels)
    assert len(rows) == 2318 and len(dev) == 500
    assert all(len(e.units) == len(e.tags) for e in dev)


# --------------------------------------------------------------------------- characters <-> tokens

ODD = [
    "我在2008年买了iPhone，价格为6,999元",  # digit and Latin runs
    "ＡＢＣ１２３全角和half半角",  # full-width and half-width forms
    "罕见字：鬱龘𠀋😀，空 格，\u200b零宽，\x07控制，é ﬁ",  # [UNK], spaces, dropped characters
    "[UNK][CLS]写在文本里",  # special-token text is plain characters here
]


def _first_covering(tok, unit: str) -> int:
    enc = tok.encode(unit)
    return next((i for i, (s, e) in zip(enc.ids, enc.offsets, strict=True) if e > s), tok.unk_id)


def _check_round_trip(tok, texts: list[str] | list[list[str]], exact: bool = True) -> None:
    """Every unit has its own first token, in order; it is the token the unit alone gives (or
    [UNK] when it gives none; ``exact=False``: a unit that alone gives none may instead hold a
    token of its context, as SentencePiece's "▁" before a dropped zero-width space)."""
    sentences = [list(t) for t in texts]
    for units, a in zip(sentences, ner.align(tok, sentences), strict=True):
        assert len(a.first) == len(units)
        assert all(x < y for x, y in zip(a.first, a.first[1:], strict=False))
        assert a.first[-1] < len(a.ids)
        want = [_first_covering(tok, u) for u in units]
        got = [a.ids[f] for f in a.first]
        if not exact:
            got = [w if w == tok.unk_id else g for g, w in zip(got, want, strict=True)]
        assert got == want


def test_alignment_keeps_every_character_bert_vocab(bert_vocab: Path) -> None:
    tok = load_tokenizer(bert_vocab)
    _check_round_trip(tok, ODD)
    (a,) = ner.align(tok, [list("2008年")])
    assert len(a.ids) == 5  # one token per digit, not "2008" merged
    _check_round_trip(tok, [["北京", "2008", "年"]])  # multi-character units (TSV items)
    (a,) = ner.align(tok, [["北京", "2008", "年"]])
    assert a.first[:2] == [0, 2]  # 北京 is two tokens, labelled on 北


def test_alignment_keeps_every_character_small_vocab(tmp_path: Path) -> None:
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    write(
        tmp_path / "vocab.txt",
        "\n".join([*specials, *"我在年买了", "iphone", "##one", "ip", "##h"]) + "\n",
    )
    tok = load_tokenizer(tmp_path)
    _check_round_trip(tok, ODD)
    (a,) = ner.align(tok, [["iPhone", "在"]])  # a unit split into sub-tokens: first carries it
    assert tok.convert_ids_to_tokens(a.ids) == ["iphone", "在"] and a.first == [0, 1]
    (a,) = ner.align(tok, [["iph", "我"]])
    assert tok.convert_ids_to_tokens(a.ids) == ["ip", "##h", "我"] and a.first == [0, 2]


def test_alignment_keeps_every_character_sentencepiece(clue_corpus: Path, tmp_path: Path) -> None:
    from tests.test_tokenizer import _lines, _train_spm

    d = _train_spm(tmp_path / "spm", _lines(clue_corpus, 400), "unigram")
    tok = load_tokenizer(d)
    _check_round_trip(tok, ODD, exact=False)


def test_alignment_on_all_of_msra_dev(msra_ner: Path, bert_vocab: Path) -> None:
    tok = load_tokenizer(bert_vocab)
    dev = ner.read_tagged(MSRA, msra_ner / "dev.tsv", ner.read_label2id(msra_ner / "label2id.json"))
    aligned = ner.align(tok, [e.units for e in dev])
    assert all(len(a.first) == len(e.units) for a, e in zip(aligned, dev, strict=True))


# --------------------------------------------------------------------------- windows


@pytest.mark.parametrize(
    ("n", "max_len", "stride"), [(5, 10, 4), (8, 10, 8), (9, 10, 4), (30, 10, 3), (31, 12, 10)]
)
def test_windows_cover_every_token(n: int, max_len: int, stride: int) -> None:
    wins = ner.windows(n, max_len, stride)
    assert wins[0][0] == 0 and wins[-1][1] == n
    assert all(b - a <= max_len - 2 for a, b in wins)
    assert all(
        a2 - a1 <= stride and a2 > a1 for (a1, _), (a2, _) in zip(wins, wins[1:], strict=False)
    )
    covered = {t for a, b in wins for t in range(a, b)}
    assert covered == set(range(n))
    with pytest.raises(ValueError):
        ner.windows(n, max_len, max_len - 1)


def test_merge_takes_each_token_from_its_most_central_window() -> None:
    sent = ner.Aligned(list(range(20)), list(range(20)))
    spans = ner.windows(20, 10, 4)  # width 8: [0,8) [4,12) [8,16) [12,20)
    wins = [ner.Window(0, a, b) for a, b in spans]
    # window j's logits say "j" at every position
    logits = [np.tile(np.eye(len(wins))[j], (b - a + 2, 1)) for j, (a, b) in enumerate(spans)]
    got = ner.merge_windows(sent, wins, logits).argmax(-1).tolist()
    best = []
    for t in range(20):
        scores = [
            (min(t - a, b - 1 - t) + 0.01 * (b - a), j)
            for j, (a, b) in enumerate(spans)
            if a <= t < b
        ]
        best.append(max(scores, key=lambda sj: (sj[0], -sj[1]))[1])  # ties: the earlier
    assert got == best
    assert got[0] == 0 and got[19] == 3 and got[7] == 1  # edges go to the window that has context
