"""build-vocab: a words dataset -> a vocab directory (char/WordPiece or SentencePiece).

Kinds:

- ``char`` (default): a BERT-compatible Chinese ``vocab.txt``. Ids 0..103 are BERT's:
  ``[PAD]``=0, ``[unused1..99]``, ``[UNK]``=100, ``[CLS]``=101, ``[SEP]``=102, ``[MASK]``=103.
  Then, in this fixed order: punctuation/symbol characters, CJK characters (each by code
  point), and WordPiece pieces (whole-word pieces, then ``##`` pieces, each sorted) learned
  with HF ``tokenizers`` on the non-Chinese runs (letters/digits). Text is seen exactly as the
  tokenizer will see it (BERT normaliser: lowercase, strip accents, CJK isolated). Items seen
  fewer than ``--min-freq`` times are left out; ``--max-size`` keeps the most frequent.
- ``char`` with ``--from-vocab FILE``: adopt an existing ``vocab.txt`` byte for byte (it must
  hold the five special tokens).
- ``sentencepiece``: a SentencePiece unigram/BPE ``spiece.model`` trained on the sentences,
  ALBERT layout ``[PAD]``=0, ``[UNK]``=1, ``[CLS]``=2, ``[SEP]``=3, ``[MASK]``=4. With
  ``--word-boundaries`` (default) the jieba words are passed as spm's pretokenization
  delimiter, so no piece crosses a word boundary.

The directory holds the tokenizer files, ``tokenizer_config.json`` and ``vocab.json`` (written
last): kind, size, special ids, sha256 of the vocab file, config, and coverage on the corpus.
It is built in a temp directory and renamed into place, so it is never half-written.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import time
import unicodedata
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import Field, model_validator

from albertzh import __version__, outputs
from albertzh.config import BreakLock, PathOrURL, StageConfig
from albertzh.console import Summary, progress
from albertzh.data import dataset as ds
from albertzh.data.fs import Location
from albertzh.errors import ConfigError, DatasetError, InputError
from albertzh.files import atomic_write_bytes, atomic_write_json, sha256_bytes
from albertzh.tokenizer import (
    SPECIAL_TOKENS,
    SPIECE,
    TOKENIZER_CONFIG,
    VOCAB_JSON,
    VOCAB_TXT,
    CharTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    albert_normalize,
    is_cjk,
    load_tokenizer,
)

STAGE = "build-vocab"
FORMAT_VERSION = 1
# BERT's fixed head: [PAD], 99 unused slots, then [UNK] [CLS] [SEP] [MASK] at 100..103.
BERT_HEAD = ["[PAD]", *[f"[unused{i}]" for i in range(1, 100)], "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SPM_SPECIALS = ["[CLS]", "[SEP]", "[MASK]"]  # after [PAD]=0 and [UNK]=1
# Marks jieba word boundaries in the text fed to spm (removed by spm before training).
WORD_DELIMITER = "\u241f"
WORDS_COLUMNS = {"sentences": pa.list_(pa.string()), "word_lens": pa.list_(pa.list_(pa.int32()))}
# What build-vocab writes in its output directory: --overwrite replaces these and nothing else.
LAYOUT = outputs.Layout("vocab directory", owned=(VOCAB_JSON, VOCAB_TXT, SPIECE, TOKENIZER_CONFIG))


class VocabConfig(StageConfig):
    """Options of ``albertzh build-vocab``."""

    input: PathOrURL | None = Field(
        None,
        description="Words dataset (the output of 'albertzh segment'), a local path or a URL; optional with --from-vocab (then only used for coverage).",
        json_schema_extra={"argument": True},
    )
    output: Path = Field(
        ...,
        description="Output vocab directory (local only: tokenizers and sentencepiece load their files from disk).",
        json_schema_extra={"short": "-o"},
    )
    overwrite: bool = Field(
        False,
        description="Replace the vocab in an existing output directory (a directory holding "
        "other files is refused).",
    )
    break_lock: BreakLock = False
    kind: Literal["char", "sentencepiece"] = Field(
        "char",
        description="'char': BERT-style vocab.txt (CJK chars + WordPiece); 'sentencepiece': spiece.model.",
    )
    from_vocab: Path | None = Field(
        None,
        description="Adopt an existing vocab.txt (or spiece.model) instead of learning one, e.g. albert_zh's 21128-entry vocab.",
    )
    do_lower_case: bool = Field(
        True, description="Lowercase (and strip accents) before counting and tokenizing."
    )
    min_freq: int = Field(
        1, ge=1, description="char: keep characters/punctuation seen at least this often."
    )
    max_size: int | None = Field(
        None,
        ge=200,
        description="char: cap the vocab at this many entries, keeping the most frequent.",
    )
    wordpiece_size: int = Field(
        2000,
        ge=0,
        description="char: WordPiece pieces to learn for non-Chinese runs (letters/digits); 0 = none.",
    )
    vocab_size: int = Field(
        8000, ge=50, description="sentencepiece: size of the model's vocabulary."
    )
    model_type: Literal["unigram", "bpe"] = Field(
        "unigram", description="sentencepiece: unigram (as ALBERT) or bpe."
    )
    character_coverage: float = Field(
        0.9995,
        gt=0,
        le=1,
        description="sentencepiece: share of characters the model must cover (rest -> [UNK]).",
    )
    user_symbols: list[str] = Field(
        default_factory=list,
        description="sentencepiece: extra symbols kept whole (after [CLS] [SEP] [MASK]).",
    )
    word_boundaries: bool = Field(
        True, description="sentencepiece: pieces never cross jieba word boundaries."
    )
    input_sentence_size: int = Field(
        1_000_000,
        ge=0,
        description="sentencepiece: train on at most this many sentences (sampled with --seed); 0 = all.",
    )
    seed: int = Field(42, description="Random seed (spm sentence sampling and training).")
    threads: int = Field(
        4,
        ge=1,
        description="sentencepiece: trainer threads; the same --threads and --seed give a byte-identical model (unigram scores depend on the thread count).",
    )
    coverage_sentences: int = Field(
        20_000, ge=0, description="Sentences of the corpus used for the coverage figures."
    )
    verify: bool = Field(False, description=ds.VERIFY_HELP)

    @model_validator(mode="after")
    def _check(self) -> VocabConfig:
        if self.input is None and self.from_vocab is None:
            raise ValueError("INPUT (a words dataset) is required unless --from-vocab is given")
        if self.user_symbols and self.kind != "sentencepiece":
            raise ValueError("--user-symbols applies to --kind sentencepiece only")
        return self


# --------------------------------------------------------------------------- reading words


def _check_words(path: Location, verify: bool = False) -> tuple[dict[str, Any], list[Location]]:
    return ds.open_dataset(path, ds.WORDS_STAGE, WORDS_COLUMNS, verify=verify)


def iter_sentences(parts: list[Location], with_words: bool = False) -> Iterator[Any]:
    """Every sentence of a words dataset (or ``(sentence, word_lens)`` with ``with_words``)."""
    cols = ["sentences", "word_lens"] if with_words else ["sentences"]
    for p in parts:
        for batch in ds.iter_batches(p, cols, batch_rows=256):
            sents = batch.column("sentences").to_pylist()
            if with_words:
                lens = batch.column("word_lens").to_pylist()
                for ss, ll in zip(sents, lens, strict=True):
                    yield from zip(ss, ll, strict=True)
            else:
                for ss in sents:
                    yield from ss


# --------------------------------------------------------------------------- char kind


def _is_punct(ch: str) -> bool:
    # BERT's rule: ASCII non-alphanumerics, or any Unicode punctuation category.
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


# BERT's CJK ranges (see albertzh.tokenizer.is_cjk) as a regex class.
_CJK_RE = re.compile(
    "[\u4e00-\u9fff\u3400-\u4dbf\U00020000-\U0002a6df\U0002a700-\U0002b73f"
    "\U0002b740-\U0002b81f\U0002b820-\U0002ceaf\uf900-\ufaff\U0002f800-\U0002fa1f]"
)


def count_units(
    sentences: Iterator[str], do_lower_case: bool, batch: int = 2000
) -> dict[str, Counter]:
    """Count CJK characters, punctuation, and the other (non-Chinese) words of the corpus,
    as BERT will tokenize it (normaliser: clean text, lowercase, strip accents).

    BERT's normaliser works character by character (NFD only reorders combining marks), so
    the characters of the normalised corpus are counted by counting the raw code points
    (``np.bincount``) and normalising each distinct character once. A character that always
    ends a word (a CJK character, which the normaliser pads with spaces; punctuation, which
    the pre-tokenizer isolates; whitespace) cannot be part of a non-Chinese word, so only the
    stretches between such characters go through the normaliser and pre-tokenizer, to find
    the words. Sentences are handled in batches joined by newlines (BERT turns them into
    spaces).
    """
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(
        clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
    )
    pre = pre_tokenizers.BertPreTokenizer()
    raw = np.zeros(0x110000, dtype=np.int64)  # count per raw code point
    words: Counter = Counter()
    # ends_word[cp]: 1 = always ends a word (decided when first seen), 0 = may be in one,
    # -1 = not decided yet.
    ends_word = np.full(0x110000, -1, dtype=np.int8)
    buf: list[str] = []

    def decide(cps: np.ndarray) -> None:
        for cp in cps.tolist():
            ends_word[cp] = _always_ends_word(chr(cp), norm, pre)

    def flush() -> None:
        text = "\n".join(buf)
        buf.clear()
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        raw[:] += np.bincount(cps, minlength=len(raw))
        new = np.unique(cps[ends_word[cps] < 0])
        if len(new):
            decide(new)
        inner = ends_word[cps] == 0
        if not inner.any():
            return
        # Stretches of word characters, joined by spaces (a space ends a word, as the
        # character that separated them did).
        edge = np.diff(inner.astype(np.int8), prepend=0, append=0)
        lo, hi = np.flatnonzero(edge == 1).tolist(), np.flatnonzero(edge == -1).tolist()
        rest = norm.normalize_str(" ".join([text[a:b] for a, b in zip(lo, hi, strict=True)]))
        rest = _CJK_RE.sub(" ", rest)  # CJK characters the normaliser did not pad, if any
        words.update(
            tok for tok, _ in pre.pre_tokenize_str(rest) if not (len(tok) == 1 and _is_punct(tok))
        )

    for sentence in sentences:
        buf.append(sentence)
        if len(buf) >= batch:
            flush()
    if buf:
        flush()
    chars: Counter = Counter()
    for cp in np.flatnonzero(raw).tolist():
        n = int(raw[cp])
        for c in norm.normalize_str(chr(cp)):
            chars[c] += n
    cjk = Counter({c: n for c, n in chars.items() if is_cjk(c)})
    punct = Counter({c: n for c, n in chars.items() if _is_punct(c)})
    return {"cjk": cjk, "punct": punct, "words": words}


def _always_ends_word(ch: str, norm: Any, pre: Any) -> int:
    """1 when ``ch``, wherever it stands, contributes no non-Chinese word and splits the text
    around it into separate words: it normalises to whitespace, to a padded CJK character,
    or to one punctuation character the pre-tokenizer isolates. Else 0 (e.g. a character the
    normaliser removes, which joins its neighbours)."""
    n = norm.normalize_str(ch)
    body = n.strip()
    if not n or (body and any(c.isspace() for c in body)):
        return 0
    if not body:
        return 1  # whitespace
    if len(body) == 1 and _CJK_RE.fullmatch(body) and n == f" {body} ":
        return 1  # a CJK character, padded by the normaliser
    if len(body) == 1 and n == body and _is_punct(body):
        pieces = [t for t, _ in pre.pre_tokenize_str(f"a{body}a")]
        return int(pieces == ["a", body, "a"])
    return 0


def learn_wordpiece(words: Counter, size: int, min_freq: int) -> list[str]:
    """WordPiece pieces (``##`` continuations) for the non-Chinese words, by HF tokenizers."""
    if size <= 0 or not words:
        return []
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers, trainers

    tok = HFTokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordPieceTrainer(
        vocab_size=size + 1,  # + the [UNK] the model needs, removed below
        min_frequency=min_freq,
        # The trainer numbers "##x" symbols in the order it meets them in a hash map, and
        # breaks ties between equally frequent merges by those numbers; naming every "##x"
        # up front (sorted) fixes the numbering, so the result is the same on every run.
        special_tokens=["[UNK]", *sorted({"##" + c for w in words for c in w[1:]})],
        continuing_subword_prefix="##",
        show_progress=False,
    )

    def texts() -> Iterator[str]:
        # Each word as often as it was seen (in chunks, so no giant strings).
        for w in sorted(words):
            c = words[w]
            while c > 0:
                k = min(c, 1000)
                yield " ".join([w] * k)
                c -= k

    tok.train_from_iterator(texts(), trainer=trainer)
    vocab = tok.get_vocab()
    return sorted(t for t in vocab if t != "[UNK]")


def _piece_usage(pieces: list[str], words: Counter) -> Counter:
    """How often each piece is used when the corpus words are WordPiece-tokenized."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    vocab = {"[UNK]": 0, **{p: i + 1 for i, p in enumerate(pieces)}}
    tok = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    usage: Counter = Counter()
    ws = sorted(words)
    for w, enc in zip(ws, tok.encode_batch(ws), strict=True):
        for t in enc.tokens:
            usage[t] += words[w]
    return usage


def build_char_vocab(counts: dict[str, Counter], config: VocabConfig) -> tuple[list[str], dict]:
    """The ordered token list of a char vocab, and what was kept/dropped."""
    mf = config.min_freq
    punct = {c: n for c, n in counts["punct"].items() if n >= mf}
    cjk = {c: n for c, n in counts["cjk"].items() if n >= mf}
    pieces = learn_wordpiece(counts["words"], config.wordpiece_size, mf)
    usage = _piece_usage(pieces, counts["words"]) if pieces else Counter()
    wp = {p: usage.get(p, 0) for p in pieces}
    head = set(BERT_HEAD)
    for group in (punct, cjk, wp):
        for t in list(group):
            if t in head:
                del group[t]
    wp = {p: n for p, n in wp.items() if p not in punct and p not in cjk}
    info = {
        "cjk_seen": len(counts["cjk"]),
        "punct_seen": len(counts["punct"]),
        "cjk_below_min_freq": len(counts["cjk"]) - len(cjk),
        "non_chinese_words": len(counts["words"]),
    }
    if (
        config.max_size is not None
        and len(BERT_HEAD) + len(punct) + len(cjk) + len(wp) > config.max_size
    ):
        budget = config.max_size - len(BERT_HEAD)
        ranked = sorted(
            [(-n, 0, t) for t, n in punct.items()]
            + [(-n, 1, t) for t, n in cjk.items()]
            + [(-n, 2, t) for t, n in wp.items()]
        )[:budget]
        keep = {t for _, _, t in ranked}
        info["dropped_by_max_size"] = len(punct) + len(cjk) + len(wp) - len(keep)
        punct = {t: n for t, n in punct.items() if t in keep}
        cjk = {t: n for t, n in cjk.items() if t in keep}
        wp = {t: n for t, n in wp.items() if t in keep}
    whole = sorted(p for p in wp if not p.startswith("##"))
    cont = sorted(p for p in wp if p.startswith("##"))
    tokens = BERT_HEAD + sorted(punct) + sorted(cjk) + whole + cont
    info.update(punct=len(punct), cjk=len(cjk), wordpiece=len(wp))
    return tokens, info


# --------------------------------------------------------------------------- sentencepiece kind


def _spm_sentences(parts: list[Location], config: VocabConfig) -> Iterator[str]:
    for sentence, lens in iter_sentences(parts, with_words=True):
        if config.word_boundaries:
            words = []
            pos = 0
            for n in lens:
                words.append(sentence[pos : pos + n])
                pos += n
            sentence = WORD_DELIMITER.join(words)
        text, _, _ = albert_normalize(sentence, config.do_lower_case, keep_accents=False)
        if text.strip():
            yield text


def train_sentencepiece(parts: list[Location], config: VocabConfig, out: Path) -> dict[str, Any]:
    """Train ``out/spiece.model`` on the dataset's sentences (streamed into spm)."""
    import sentencepiece as spm

    symbols = list(dict.fromkeys(SPM_SPECIALS + list(config.user_symbols)))
    if any(not s or any(c.isspace() for c in s) for s in symbols):
        raise ConfigError("--user-symbols: symbols must be non-empty and have no spaces")
    spm.set_random_generator_seed(config.seed)
    count = {"sentences": 0}
    model = io.BytesIO()

    def sentences() -> Iterator[str]:
        for s in _spm_sentences(parts, config):
            count["sentences"] += 1
            yield s

    kwargs: dict[str, Any] = {
        "sentence_iterator": sentences(),
        # Written to memory: a model_prefix path would be recorded in the model (and the
        # model would differ with the output directory's name).
        "model_writer": model,
        "vocab_size": config.vocab_size,
        "model_type": config.model_type,
        "character_coverage": config.character_coverage,
        "pad_id": 0,
        "pad_piece": SPECIAL_TOKENS["pad"],
        "unk_id": 1,
        "unk_piece": SPECIAL_TOKENS["unk"],
        "bos_id": -1,
        "eos_id": -1,
        "user_defined_symbols": symbols,
        "num_threads": config.threads,
        "input_sentence_size": config.input_sentence_size,
        "shuffle_input_sentence": True,
        "max_sentence_length": 1 << 14,
        "minloglevel": 2,
        "train_extremely_large_corpus": False,
    }
    if config.word_boundaries:
        kwargs["pretokenization_delimiter"] = WORD_DELIMITER
    try:
        spm.SentencePieceTrainer.train(**kwargs)
    except RuntimeError as exc:
        msg = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        msg = msg.split("] ", 1)[-1]  # drop spm's "INTERNAL: file.cc(744) [check]" prefix
        if "vocab_size" in msg.lower() or "vocabulary size" in msg.lower():
            raise ConfigError(
                f"--vocab-size {config.vocab_size}: sentencepiece refused it for this corpus ({msg})"
            ) from exc
        raise InputError(f"{config.input}: sentencepiece training failed ({msg})") from exc
    atomic_write_bytes(out / SPIECE, model.getvalue())
    return {"sentences": count["sentences"], "user_symbols": list(config.user_symbols)}


# --------------------------------------------------------------------------- coverage + output


def coverage(tok: Tokenizer, sentences: Iterator[str], limit: int) -> dict[str, Any]:
    """How well the vocab covers the corpus: share of characters/tokens that become [UNK]
    (characters counted without whitespace)."""
    n_sent = chars = unk_chars = tokens = unk_tokens = 0
    batch: list[str] = []
    space = _space_table()

    def flush() -> None:
        nonlocal chars, unk_chars, tokens, unk_tokens
        enc = tok.encode_arrays(batch)
        text_start = np.zeros(len(batch) + 1, dtype=np.int64)
        np.cumsum(
            np.fromiter(map(len, batch), dtype=np.int64, count=len(batch)), out=text_start[1:]
        )
        cps = np.frombuffer("".join(batch).encode("utf-32-le"), dtype=np.uint32)
        solid = ~space[np.minimum(cps, len(space) - 1)]
        solid_before = np.zeros(len(cps) + 1, dtype=np.int64)  # non-space characters before
        np.cumsum(solid, out=solid_before[1:])
        chars += int(solid_before[-1])
        tokens += len(enc.ids)
        unk = np.flatnonzero(enc.ids == tok.unk_id)
        unk_tokens += len(unk)
        if len(unk):
            base = text_start[np.searchsorted(enc.bounds, unk, side="right") - 1]
            lo, hi = base + enc.starts[unk], base + enc.ends[unk]
            unk_chars += int((solid_before[hi] - solid_before[lo]).sum())
        batch.clear()

    for s in sentences:
        if n_sent >= limit:
            break
        batch.append(s)
        n_sent += 1
        if len(batch) >= 1024:
            flush()
    if batch:
        flush()
    return {
        "sentences": n_sent,
        "chars": chars,
        "tokens": tokens,
        "unk_tokens": unk_tokens,
        "unk_token_pct": round(100 * unk_tokens / tokens, 4) if tokens else 0.0,
        "unk_char_pct": round(100 * unk_chars / chars, 4) if chars else 0.0,
        "tokens_per_char": round(tokens / chars, 4) if chars else 0.0,
    }


_SPACE_TABLE: list[np.ndarray] = []


def _space_table() -> np.ndarray:
    """``table[cp]`` is ``chr(cp).isspace()`` (``str.split``'s whitespace) for code points up to
    U+3000, the last whitespace character; the final entry (False) stands for all above."""
    if not _SPACE_TABLE:
        table = np.zeros(0x3002, dtype=bool)
        table[[cp for cp in range(0x3001) if chr(cp).isspace()]] = True
        _SPACE_TABLE.append(table)
    return _SPACE_TABLE[0]


def _write_tokenizer_config(out: Path, tok_kind: str, do_lower_case: bool) -> None:
    cls = CharTokenizer if tok_kind == "char" else SentencePieceTokenizer
    path = out / (VOCAB_TXT if tok_kind == "char" else SPIECE)
    if tok_kind == "char":
        tok = cls(path, do_lower_case=do_lower_case)
    else:
        tok = cls(path, do_lower_case=do_lower_case, keep_accents=False)
    atomic_write_json(out / TOKENIZER_CONFIG, tok._config_json())


def run(config: VocabConfig) -> Summary:
    """Build (or adopt) a vocab and write the vocab directory."""
    outputs.check_apart(config.output, {"INPUT": config.input, "--from-vocab": config.from_vocab})
    with outputs.locked(Path(config.output), break_lock=config.break_lock):
        return _run(config)


def _run(config: VocabConfig) -> Summary:
    t0 = time.perf_counter()
    # Arrow's default allocator (mimalloc) keeps freed pages, so peak RSS would grow with the
    # size of the parts read; the system allocator returns them (same speed here).
    pa.set_memory_pool(pa.system_memory_pool())
    parts: list[Location] = []
    inputs: list[str] = []
    if config.input is not None:
        manifest, parts = _check_words(config.input, config.verify)
        if config.from_vocab is None and not sum(f["rows"] for f in manifest["files"]):
            raise DatasetError(
                f"{config.input}: the words dataset has no rows; there is nothing to build a "
                "vocab from"
            )
        inputs.append(str(config.input))
    final = Path(config.output)
    if final.exists() and not final.is_dir():
        raise DatasetError(f"{final}: output exists and is not a directory")
    if outputs.entries(final):
        if not config.overwrite:
            raise DatasetError(f"{final}: output exists and is not empty (use --overwrite)")
        outputs.check_foreign(final, LAYOUT)  # before any work: a refused run deletes nothing
    # Built in a hidden directory inside the output, then moved in file by file, vocab.json
    # (which makes it a vocab directory) last: a failed build leaves the old vocab as it was.
    final.mkdir(parents=True, exist_ok=True)
    tmp = final / f".build-vocab.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        kind, details = _build(config, parts, tmp)
        _write_tokenizer_config(tmp, kind, config.do_lower_case)
        tok = load_tokenizer(tmp)
        cov = {}
        if parts and config.coverage_sentences:
            with progress("coverage", total=None, unit="sentences"):
                cov = coverage(tok, iter_sentences(parts), config.coverage_sentences)
        vocab_file = tmp / (VOCAB_TXT if kind == "char" else SPIECE)
        info = {
            "stage": STAGE,
            "format_version": FORMAT_VERSION,
            "albertzh_version": __version__,
            "kind": kind,
            "size": tok.vocab_size,
            "special_ids": tok.special_ids_by_role,
            "hash": sha256_bytes(vocab_file.read_bytes()),
            "config": config.model_dump(mode="json"),
            "inputs": inputs,
            "build": details,
            "coverage": cov,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        atomic_write_json(tmp / VOCAB_JSON, info)
        outputs.clear(final, LAYOUT, keep=[tmp.name])
        for name in sorted(os.listdir(tmp), key=lambda n: n == VOCAB_JSON):
            os.replace(tmp / name, final / name)
        tmp.rmdir()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    seconds = time.perf_counter() - t0
    return Summary(
        STAGE,
        {
            "output": str(final),
            "kind": kind,
            "size": info["size"],
            "special_ids": info["special_ids"],
            "hash": info["hash"][:16],
            **{f"build.{k}": v for k, v in details.items() if not isinstance(v, (list, dict))},
            **{f"coverage.{k}": v for k, v in cov.items()},
            "seconds": round(seconds, 3),
        },
    )


def _build(config: VocabConfig, parts: list[Location], out: Path) -> tuple[str, dict[str, Any]]:
    if config.from_vocab is not None:
        src = Path(config.from_vocab)
        if src.is_dir():
            src = src / VOCAB_TXT if (src / VOCAB_TXT).is_file() else src / SPIECE
        if not src.is_file():
            raise InputError(f"{config.from_vocab}: --from-vocab file not found")
        kind = "sentencepiece" if src.suffix == ".model" else "char"
        dst = out / (VOCAB_TXT if kind == "char" else SPIECE)
        shutil.copyfile(src, dst)
        try:
            load_tokenizer(dst)  # validates the special tokens
        except InputError as exc:
            raise InputError(str(exc).replace(str(dst), str(src))) from exc
        return kind, {"from_vocab": str(src)}
    if config.kind == "sentencepiece":
        return "sentencepiece", train_sentencepiece(parts, config, out)
    with progress("count", total=None, unit="sentences"):
        counts = count_units(iter_sentences(parts), config.do_lower_case)
    if not any(counts.values()):
        raise DatasetError(
            f"{config.input}: the words dataset holds no text; there is nothing to build a vocab from"
        )
    tokens, info = build_char_vocab(counts, config)
    if len(tokens) == len(BERT_HEAD):
        raise ConfigError(
            f"--min-freq {config.min_freq}: nothing in {config.input} is seen that often, so "
            "the vocab would hold only the special tokens"
        )
    atomic_write_bytes(out / VOCAB_TXT, ("\n".join(tokens) + "\n").encode("utf-8"))
    return "char", info
