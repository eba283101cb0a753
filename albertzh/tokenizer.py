"""One tokenizer API over the two vocab kinds albertzh builds and reads.

- ``char``: a BERT-style ``vocab.txt`` (one token per line, the id is the line number) run
  through HF ``tokenizers`` as BERT does it: clean text, space around CJK characters,
  lowercase + strip accents (unless ``do_lower_case`` is false), split on whitespace and
  punctuation, then greedy longest-match WordPiece with ``##`` continuations.
- ``sentencepiece``: a ``spiece.model`` run through the ``sentencepiece`` library, with the
  text first normalised as ``transformers.AlbertTokenizer`` does (lowercase, strip accents).

Both give the same ids as ``transformers.BertTokenizer`` / ``AlbertTokenizer`` on the same
files, and offsets that are character positions into the *original* text.
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from albertzh.errors import InputError
from albertzh.files import atomic_write_bytes, atomic_write_json, sha256_bytes

VOCAB_JSON = "vocab.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
VOCAB_TXT = "vocab.txt"
SPIECE = "spiece.model"

# The five tokens every albertzh vocab has, by role.
SPECIAL_TOKENS: dict[str, str] = {
    "pad": "[PAD]",
    "unk": "[UNK]",
    "cls": "[CLS]",
    "sep": "[SEP]",
    "mask": "[MASK]",
}
# Roles as tokenizer_config.json names them.
_CONFIG_KEYS = {role: f"{role}_token" for role in SPECIAL_TOKENS}


@dataclass(frozen=True)
class Encoding:
    """Token ids of one text and, per token, its ``(start, end)`` character span in the text."""

    ids: list[int]
    offsets: list[tuple[int, int]]

    def __len__(self) -> int:
        return len(self.ids)


@dataclass(frozen=True)
class EncodedBatch:
    """Many texts encoded at once, as flat arrays: text ``i`` has the tokens
    ``bounds[i]:bounds[i + 1]``; ``starts``/``ends`` are character offsets into that text."""

    ids: np.ndarray  # int32
    starts: np.ndarray  # int64
    ends: np.ndarray  # int64
    bounds: np.ndarray  # int64, len(texts) + 1

    def __len__(self) -> int:
        return len(self.bounds) - 1

    def encodings(self) -> list[Encoding]:
        """The same as a list of :class:`Encoding` (Python lists)."""
        ids = self.ids.tolist()
        offsets = list(zip(self.starts.tolist(), self.ends.tolist(), strict=True))
        b = self.bounds.tolist()
        return [Encoding(ids[b[i] : b[i + 1]], offsets[b[i] : b[i + 1]]) for i in range(len(b) - 1)]

    @classmethod
    def from_encodings(cls, encs: Sequence[Encoding]) -> EncodedBatch:
        counts = np.fromiter((len(e.ids) for e in encs), dtype=np.int64, count=len(encs))
        bounds = np.zeros(len(encs) + 1, dtype=np.int64)
        np.cumsum(counts, out=bounds[1:])
        n = int(bounds[-1])
        ids = np.fromiter((i for e in encs for i in e.ids), dtype=np.int32, count=n)
        starts = np.fromiter((o[0] for e in encs for o in e.offsets), dtype=np.int64, count=n)
        ends = np.fromiter((o[1] for e in encs for o in e.offsets), dtype=np.int64, count=n)
        return cls(ids, starts, ends, bounds)


def is_cjk(ch: str) -> bool:
    """True for a CJK ideograph (the ranges BERT isolates as single tokens)."""
    cp = ord(ch)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


def _join_tokens(tokens: Sequence[str], continuation: str = "##") -> str:
    """Glue tokens back into text: ``##`` pieces attach, and a space goes only between two
    alphanumeric (non-CJK) ends, so Chinese comes back without BERT's spaces."""
    out: list[str] = []
    for tok in tokens:
        if continuation and tok.startswith(continuation) and len(tok) > len(continuation) and out:
            out.append(tok[len(continuation) :])
            continue
        if out and out[-1]:
            prev = out[-1][-1]
            if prev.isalnum() and tok[:1].isalnum() and not is_cjk(prev) and not is_cjk(tok[0]):
                out.append(" ")
        out.append(tok)
    return "".join(out)


class Tokenizer:
    """Common surface of both kinds; see :func:`load_tokenizer`."""

    kind: str
    vocab_file: Path
    do_lower_case: bool

    def __init__(self, special_ids: dict[str, int], vocab_file: Path, info: dict[str, Any]):
        self.vocab_file = Path(vocab_file)
        self._raw = self.vocab_file.read_bytes()
        self.hash = sha256_bytes(self._raw)
        self._special = dict(special_ids)
        self.pad_id = special_ids["pad"]
        self.unk_id = special_ids["unk"]
        self.cls_id = special_ids["cls"]
        self.sep_id = special_ids["sep"]
        self.mask_id = special_ids["mask"]
        self.special_ids: set[int] = set(special_ids.values())
        self.info = info  # the vocab.json content when there is one

    # -- to be provided by each kind
    vocab_size: int

    def encode(self, text: str) -> Encoding:  # pragma: no cover - abstract
        raise NotImplementedError

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:  # pragma: no cover
        raise NotImplementedError

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:  # pragma: no cover
        raise NotImplementedError

    def decode(
        self, ids: Iterable[int], skip_special_tokens: bool = True
    ) -> str:  # pragma: no cover
        raise NotImplementedError

    def _config_json(self) -> dict[str, Any]:  # pragma: no cover
        raise NotImplementedError

    # -- shared
    def encode_batch(self, texts: Sequence[str]) -> list[Encoding]:
        """Encode many texts (no special tokens)."""
        return [self.encode(t) for t in texts]

    def encode_arrays(self, texts: Sequence[str]) -> EncodedBatch:
        """Encode many texts (no special tokens) into flat NumPy arrays; same tokens and
        offsets as :meth:`encode_batch`, without a Python object per token."""
        return EncodedBatch.from_encodings(self.encode_batch(texts))

    def encode_for_model(
        self, text_a: str, text_b: str | None = None, max_len: int = 128
    ) -> tuple[list[int], list[int]]:
        """``[CLS] a [SEP] (b [SEP])`` ids and token types, truncated longest-first to ``max_len``."""
        a = self.encode(text_a).ids
        b = self.encode(text_b).ids if text_b is not None else None
        budget = max_len - (3 if b is not None else 2)
        if budget < 0:
            raise ValueError(f"max_len {max_len} is too small for the special tokens")
        if b is None:
            a = a[:budget]
        else:
            a, b = list(a), list(b)
            while len(a) + len(b) > budget:
                if len(a) > len(b):
                    a.pop()
                else:
                    b.pop()
        ids = [self.cls_id, *a, self.sep_id]
        types = [0] * len(ids)
        if b is not None:
            ids += [*b, self.sep_id]
            types += [1] * (len(b) + 1)
        return ids, types

    @property
    def special_tokens(self) -> dict[str, str]:
        """Role -> token text, e.g. ``{"pad": "[PAD]", ...}``."""
        toks = self.convert_ids_to_tokens([self._special[r] for r in SPECIAL_TOKENS])
        return dict(zip(SPECIAL_TOKENS, toks, strict=True))

    @property
    def special_ids_by_role(self) -> dict[str, int]:
        return dict(self._special)

    def vocab_json(self) -> dict[str, Any]:
        """The ``vocab.json`` describing this tokenizer (from the vocab dir when there was one)."""
        info = dict(self.info)
        info.update(
            {
                "stage": info.get("stage", "build-vocab"),
                "kind": self.kind,
                "size": self.vocab_size,
                "special_ids": dict(self._special),
                "hash": self.hash,
            }
        )
        return info

    def save(self, directory: Path) -> Path:
        """Write the tokenizer files (+ ``vocab.json``) into ``directory`` (atomically per file)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        name = VOCAB_TXT if self.kind == "char" else SPIECE
        atomic_write_bytes(directory / name, self._raw)
        atomic_write_json(directory / TOKENIZER_CONFIG, self._config_json())
        atomic_write_json(directory / VOCAB_JSON, self.vocab_json())
        return directory

    def __repr__(self) -> str:
        return (
            f"<{type(self).__name__} kind={self.kind} size={self.vocab_size} hash={self.hash[:12]}>"
        )


# --------------------------------------------------------------------------- char / WordPiece


def read_vocab_txt(path: Path) -> list[str]:
    """Tokens of a BERT ``vocab.txt``, one per line (line number = id)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 (byte {exc.start})") from exc
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    tokens = text.split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    return [t.rstrip("\r") for t in tokens]


def _is_isolated_punct(ch: str) -> bool:
    """Punctuation BERT's pre-tokenizer splits off as a word of its own: ASCII
    non-alphanumerics and Unicode P* categories (combining class 0)."""
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P") and unicodedata.combining(ch) == 0


def _single_char_tokens(enc: Any, n: int, stride: int) -> list[int | None]:
    """For candidate ``k`` at character ``k * stride`` of the encoded text: its token id when
    exactly one token covers it, spanning exactly that character; else None."""
    seen = [0] * n
    got: list[int | None] = [None] * n
    for i, (s, e) in zip(enc.ids, enc.offsets, strict=True):
        k, r = divmod(s, stride)
        if k >= n:
            continue
        seen[k] += 1
        got[k] = i if (r == 0 and e == s + 1) else None
    return [g if c == 1 else None for g, c in zip(got, seen, strict=True)]


class CharTokenizer(Tokenizer):
    """BERT-style vocab.txt (CJK characters + WordPiece pieces) via HF ``tokenizers``."""

    kind = "char"

    def __init__(
        self,
        vocab_file: Path,
        special_tokens: dict[str, str] | None = None,
        do_lower_case: bool = True,
        info: dict[str, Any] | None = None,
    ):
        from tokenizers import AddedToken, decoders, models, normalizers, pre_tokenizers
        from tokenizers import Tokenizer as HFTokenizer

        tokens = read_vocab_txt(vocab_file)
        if not tokens:
            raise InputError(f"{vocab_file}: empty vocab")
        vocab: dict[str, int] = {}
        for i, tok in enumerate(tokens):
            vocab[tok] = i  # as BERT: a repeated token keeps its last id
        special_tokens = {**SPECIAL_TOKENS, **(special_tokens or {})}
        missing = [t for t in special_tokens.values() if t not in vocab]
        if missing:
            raise InputError(f"{vocab_file}: missing special token(s) {', '.join(missing)}")
        ids = {role: vocab[tok] for role, tok in special_tokens.items()}
        self._tokens = tokens
        self._vocab = vocab
        self.vocab_size = len(tokens)
        self.do_lower_case = do_lower_case
        super().__init__(ids, vocab_file, info or {})

        hf = HFTokenizer(
            models.WordPiece(vocab, unk_token=special_tokens["unk"], max_input_chars_per_word=100)
        )
        hf.normalizer = normalizers.BertNormalizer(
            clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=do_lower_case
        )
        hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        hf.decoder = decoders.WordPiece(prefix="##")
        # Special tokens written in the text are kept whole, as BertTokenizer does.
        hf.add_special_tokens(
            [AddedToken(t, special=True, normalized=False) for t in special_tokens.values()]
        )
        self._hf = hf
        self._added_tokens = list(special_tokens.values())
        self._table: np.ndarray | None = None
        self._table_off = False

    def encode(self, text: str) -> Encoding:
        return self.encode_arrays([text]).encodings()[0]

    def encode_batch(self, texts: Sequence[str]) -> list[Encoding]:
        return self.encode_arrays(texts).encodings()

    def encode_hf(self, texts: Sequence[str]) -> list[Encoding]:
        """Encode through HF ``tokenizers`` alone (the reference the fast path must equal)."""
        encs = self._hf.encode_batch(list(texts), add_special_tokens=False)
        return [Encoding(list(e.ids), [tuple(o) for o in e.offsets]) for e in encs]

    def encode_arrays(self, texts: Sequence[str]) -> EncodedBatch:
        """Fast path: characters that BERT always makes a token of their own (CJK ideographs,
        which the normaliser pads with spaces, and punctuation, which the pre-tokenizer
        isolates) take their id from a code point table; only the stretches between them
        (Latin words, digits, spaces, rare characters) go through HF ``tokenizers``, all in
        one call. Same ids and offsets as :meth:`encode_hf` (tested on real text)."""
        table = self._char_table()
        texts = list(texts)
        if table is None:
            return EncodedBatch.from_encodings(self.encode_hf(texts))
        n = len(texts)
        lens = np.fromiter(map(len, texts), dtype=np.int64, count=n)
        text_start = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=text_start[1:])
        joined = "".join(texts)
        cps = np.frombuffer(joined.encode("utf-32-le"), dtype=np.uint32)
        # The table's last entry is -1: every code point past it looks that up.
        tid = np.take(table, cps, mode="clip")
        fast = tid >= 0
        slow = ~fast
        # Runs of slow characters, never crossing the end of a text.
        begins_text = np.zeros(len(cps) + 1, dtype=bool)
        begins_text[text_start] = True
        prev_slow = np.zeros(len(cps), dtype=bool)
        prev_slow[1:] = slow[:-1]
        next_slow = np.zeros(len(cps), dtype=bool)
        next_slow[:-1] = slow[1:]
        run_lo = np.flatnonzero(slow & (~prev_slow | begins_text[:-1]))
        run_hi = np.flatnonzero(slow & (~next_slow | begins_text[1:])) + 1

        # Tokens per character: 1 for a fast one; a run's tokens are counted at its first
        # character. Their running sum places every token in the output.
        per_char = fast.astype(np.int64)
        slow_ids = np.zeros(0, dtype=np.int32)
        slow_lo = slow_hi = np.zeros(0, dtype=np.int64)
        if len(run_lo):
            lo_l, hi_l = run_lo.tolist(), run_hi.tolist()
            pieces = [joined[a:b] for a, b in zip(lo_l, hi_l, strict=True)]
            # Runs joined by one space: a space ends every word and added token, as the fast
            # character between the runs did.
            piece_at = np.zeros(len(pieces), dtype=np.int64)
            np.cumsum(run_hi[:-1] - run_lo[:-1] + 1, out=piece_at[1:])
            enc = self._hf.encode(" ".join(pieces), add_special_tokens=False)
            slow_ids = np.asarray(enc.ids, dtype=np.int32)
            offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
            run = np.searchsorted(piece_at, offs[:, 0], side="right") - 1
            shift = run_lo[run] - piece_at[run]
            slow_lo, slow_hi = offs[:, 0] + shift, offs[:, 1] + shift
            per_run = np.bincount(run, minlength=len(pieces))
            per_char[run_lo] += per_run
        tok_before = np.zeros(len(cps) + 1, dtype=np.int64)  # tokens before each character
        np.cumsum(per_char, out=tok_before[1:])
        first_tok = tok_before[:-1]  # output index of a character's first token
        total = int(tok_before[-1])
        ids = np.empty(total, dtype=np.int32)
        lo = np.empty(total, dtype=np.int64)
        hi = np.empty(total, dtype=np.int64)
        at = np.flatnonzero(fast)
        ids[first_tok[at]] = tid[at]
        lo[first_tok[at]] = at
        hi[first_tok[at]] = at + 1
        if len(slow_ids):
            run_first = np.zeros(len(per_run), dtype=np.int64)
            np.cumsum(per_run[:-1], out=run_first[1:])
            k = first_tok[run_lo[run]] + np.arange(len(slow_ids)) - run_first[run]
            ids[k], lo[k], hi[k] = slow_ids, slow_lo, slow_hi
        bounds = tok_before[text_start]
        base = np.repeat(text_start[:-1], np.diff(bounds))
        return EncodedBatch(ids, lo - base, hi - base, bounds)

    def _char_table(self) -> np.ndarray | None:
        """``table[code point]`` = the id of a character that is always a token of its own,
        else -1; None when the fast path is off (an added token holds whitespace)."""
        if self._table is not None or self._table_off:
            return self._table
        added = self._added_tokens
        if any(c.isspace() for t in added for c in t):
            self._table_off = True
            return None
        in_added = {c for t in added for c in t}
        cands = sorted(
            t
            for t in self._vocab
            if len(t) == 1 and t not in in_added and (is_cjk(t) or _is_isolated_punct(t))
        )
        table = np.full((max(map(ord, cands)) if cands else 0) + 2, -1, dtype=np.int32)
        if cands:
            # Ask HF what each candidate becomes, alone (between spaces) and packed next to
            # the others; keep those that are one token spanning exactly their character,
            # the same both ways (i.e. isolated whatever their neighbours).
            alone = self._hf.encode(" ".join(cands), add_special_tokens=False)
            packed = self._hf.encode("".join(cands), add_special_tokens=False)
            got_alone = _single_char_tokens(alone, len(cands), 2)
            got_packed = _single_char_tokens(packed, len(cands), 1)
            for k, c in enumerate(cands):
                i = got_alone[k]
                if i is None or i != got_packed[k]:
                    continue
                # Punctuation only when it stays itself (NFD/lowercase leave it alone): a
                # character that normalises into a letter could join its neighbours.
                if not is_cjk(c) and i != self._vocab[c]:
                    continue
                table[ord(c)] = i
        self._table = table
        return table

    def token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._tokens[i] for i in ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self._vocab.get(t, self.unk_id) for t in tokens]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        drop = {self.pad_id, self.cls_id, self.sep_id} if skip_special_tokens else set()
        return _join_tokens([self._tokens[i] for i in ids if i not in drop])

    def _config_json(self) -> dict[str, Any]:
        return {
            "tokenizer_class": "BertTokenizer",
            "do_lower_case": self.do_lower_case,
            "tokenize_chinese_chars": True,
            "strip_accents": None,
            "model_max_length": 512,
            **{_CONFIG_KEYS[r]: t for r, t in self.special_tokens.items()},
        }


# --------------------------------------------------------------------------- sentencepiece


def albert_normalize(
    text: str, do_lower_case: bool = True, keep_accents: bool = False
) -> tuple[str, list[int] | None, list[int] | None]:
    """Normalise text as ``transformers.AlbertTokenizer`` does before the spm model's own
    charsmap: two backquotes and two quotes to ", NFKD + accent stripping unless ``keep_accents``, lowercase
    when ``do_lower_case``. Returns ``(text, starts, ends)`` where output character ``k``
    came from input characters ``starts[k]:ends[k]`` (both None when nothing moved)."""
    if not do_lower_case and keep_accents and "``" not in text and "''" not in text:
        return text, None, None
    if text.isascii() and "``" not in text and "''" not in text:
        return (text.lower() if do_lower_case else text), None, None
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        if text[i : i + 2] in ("``", "''"):
            piece, width = '"', 2
        else:
            piece, width = text[i], 1
            if not keep_accents and not piece.isascii():
                piece = "".join(
                    c for c in unicodedata.normalize("NFKD", piece) if not unicodedata.combining(c)
                )
            if do_lower_case:
                piece = piece.lower()
        out.append(piece)
        starts.extend([i] * len(piece))
        ends.extend([i + width] * len(piece))
        i += width
    norm = "".join(out)
    if len(norm) == n and all(o == k for k, o in enumerate(starts)):
        return norm, None, None
    return norm, starts, ends


def _user_defined_pieces(model_file: Path) -> list[str]:
    """Control and user-defined pieces of an spm model (what transformers adds as added
    tokens); read from the model proto when protobuf is available."""
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb

        proto = pb.ModelProto()
        proto.ParseFromString(Path(model_file).read_bytes())
    except Exception:  # no protobuf: the five special tokens only
        return []
    return [p.piece for p in proto.pieces if p.type in (3, 4)]  # CONTROL, USER_DEFINED


class SentencePieceTokenizer(Tokenizer):
    """A ``spiece.model`` through the ``sentencepiece`` library, pre-normalised like
    ``transformers.AlbertTokenizer`` (\\`\\` and '' to ", NFKD + accent stripping unless
    ``keep_accents``, lowercase when ``do_lower_case``)."""

    kind = "sentencepiece"

    def __init__(
        self,
        model_file: Path,
        special_tokens: dict[str, str] | None = None,
        do_lower_case: bool = True,
        keep_accents: bool = False,
        info: dict[str, Any] | None = None,
    ):
        import sentencepiece as spm

        try:
            sp = spm.SentencePieceProcessor(model_file=str(model_file))
        except (OSError, RuntimeError) as exc:
            raise InputError(f"{model_file}: not a SentencePiece model ({exc})") from exc
        self._sp = sp
        self.vocab_size = sp.get_piece_size()
        self.do_lower_case = do_lower_case
        self.keep_accents = keep_accents
        ids: dict[str, int] = {}
        for role, default in SPECIAL_TOKENS.items():
            candidates = [(special_tokens or {}).get(role), default, f"<{role}>"]
            for tok in candidates:
                if tok is None:
                    continue
                i = sp.piece_to_id(tok)
                # piece_to_id answers unk_id for unknown pieces; accept only a real match.
                if sp.id_to_piece(i) == tok:
                    ids[role] = i
                    break
            else:
                if role == "unk":
                    ids[role] = sp.unk_id()
                elif role == "pad" and sp.pad_id() >= 0:
                    ids[role] = sp.pad_id()
                else:
                    raise InputError(f"{model_file}: missing special token {default}")
        super().__init__(ids, model_file, info or {})

    def _prenormalize(self, text: str) -> tuple[str, list[int] | None, list[int] | None]:
        return albert_normalize(text, self.do_lower_case, self.keep_accents)

    def _split_special(self, text: str) -> list[tuple[int, int, int | None]]:
        """Spans of ``text``: special and user-defined symbols written in it (kept whole and
        matched before normalisation, as HF added tokens are) and the plain stretches between."""
        rx, by_text, firsts = self._symbols()
        if not any(c in text for c in firsts):
            return [(0, len(text), None)]
        spans: list[tuple[int, int, int | None]] = []
        last = 0
        for m in rx.finditer(text):
            if m.start() > last:
                spans.append((last, m.start(), None))
            spans.append((m.start(), m.end(), by_text[m.group()]))
            last = m.end()
        if last < len(text) or not spans:
            spans.append((last, len(text), None))
        return spans

    def _symbols(self) -> tuple[Any, dict[str, int], set[str]]:
        if not hasattr(self, "_sym"):
            import re

            by_text = {tok: self._special[role] for role, tok in self.special_tokens.items()}
            for piece in _user_defined_pieces(self.vocab_file):
                by_text.setdefault(piece, self._sp.piece_to_id(piece))
            by_text = {t: i for t, i in by_text.items() if t}
            alts = sorted(by_text, key=len, reverse=True)
            self._sym = (
                re.compile("|".join(re.escape(t) for t in alts)),
                by_text,
                {t[0] for t in by_text},
            )
        return self._sym

    def encode(self, text: str) -> Encoding:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: Sequence[str]) -> list[Encoding]:
        plan = [self._split_special(t) for t in texts]
        pieces = [
            t[s:e]
            for t, spans in zip(texts, plan, strict=True)
            for s, e, sid in spans
            if sid is None
        ]
        normed = [self._prenormalize(p) for p in pieces]
        protos = self._sp.encode([n for n, _, _ in normed], return_type="proto") if normed else []
        parts = iter(
            self._from_proto(n, st, en, p) for (n, st, en), p in zip(normed, protos, strict=True)
        )
        out = []
        for spans in plan:
            ids: list[int] = []
            offsets: list[tuple[int, int]] = []
            for s, e, sid in spans:
                if sid is not None:
                    ids.append(sid)
                    offsets.append((s, e))
                    continue
                enc = next(parts)
                ids.extend(enc.ids)
                offsets.extend((a + s, b + s) for a, b in enc.offsets)
            out.append(Encoding(ids, offsets))
        return out

    @staticmethod
    def _from_proto(
        norm: str, starts: list[int] | None, ends: list[int] | None, proto: Any
    ) -> Encoding:
        raw = norm.encode("utf-8")
        if len(raw) == len(norm):
            b2c = None  # ASCII: bytes are characters
        else:
            b2c = []
            for ci, ch in enumerate(norm):
                b2c.extend([ci] * len(ch.encode("utf-8")))
            b2c.append(len(norm))
        ids: list[int] = []
        offsets: list[tuple[int, int]] = []
        for p in proto.pieces:
            s, t = (p.begin, p.end) if b2c is None else (b2c[p.begin], b2c[p.end])
            # A piece's surface starts with the space that "▁" stands for; point past it.
            while s < t and norm[s].isspace():
                s += 1
            if starts is not None and ends is not None:
                if t > s:
                    s, t = starts[s], ends[t - 1]
                else:
                    s = t = starts[s] if s < len(starts) else (ends[-1] if ends else 0)
            ids.append(p.id)
            offsets.append((s, t))
        return Encoding(ids, offsets)

    def token_to_id(self, token: str) -> int | None:
        i = self._sp.piece_to_id(token)
        return i if self._sp.id_to_piece(i) == token else None

    def convert_ids_to_tokens(self, ids: Iterable[int]) -> list[str]:
        return [self._sp.id_to_piece(int(i)) for i in ids]

    def convert_tokens_to_ids(self, tokens: Iterable[str]) -> list[int]:
        return [self._sp.piece_to_id(t) for t in tokens]

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        drop = {self.pad_id, self.cls_id, self.sep_id} if skip_special_tokens else set()
        pieces = [self._sp.id_to_piece(int(i)) for i in ids if int(i) not in drop]
        text = "".join(pieces).replace("\u2581", " ").strip()
        # spm marks word starts with spaces; keep one only between two ASCII characters
        # (Latin words, numbers), not around Chinese or full-width text.
        chars = list(text)
        keep = [
            c
            for k, c in enumerate(chars)
            if not (
                c == " "
                and 0 < k < len(chars) - 1
                and not (chars[k - 1].isascii() and chars[k + 1].isascii())
            )
        ]
        return "".join(keep)

    def _config_json(self) -> dict[str, Any]:
        toks = self.special_tokens
        return {
            "tokenizer_class": "AlbertTokenizer",
            "do_lower_case": self.do_lower_case,
            "keep_accents": self.keep_accents,
            "remove_space": True,
            "model_max_length": 512,
            "bos_token": toks["cls"],
            "eos_token": toks["sep"],
            **{_CONFIG_KEYS[r]: t for r, t in toks.items()},
        }


# --------------------------------------------------------------------------- loading


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: unreadable JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def _token_text(value: Any) -> str | None:
    # tokenizer_config.json stores tokens as strings or as AddedToken dicts.
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def load_tokenizer(path: Path | str) -> Tokenizer:
    """Load the tokenizer of a vocab dir, a model dir, an HF dir with only ``vocab.txt`` or
    ``spiece.model``, or one of those files directly."""
    path = Path(path)
    if path.is_file():
        directory, file = path.parent, path
    elif path.is_dir():
        directory = path
        if (path / VOCAB_TXT).is_file():
            file = path / VOCAB_TXT
        elif (path / SPIECE).is_file():
            file = path / SPIECE
        else:
            raise InputError(f"{path}: no {VOCAB_TXT} or {SPIECE} (not a vocab or model directory)")
    else:
        raise InputError(f"{path}: no such vocab directory or file")

    # The side files describe the directory's own vocab file, not any file that sits there.
    own = file.name in (VOCAB_TXT, SPIECE)
    info = _read_json(directory / VOCAB_JSON) if own and (directory / VOCAB_JSON).is_file() else {}
    has_cfg = own and (directory / TOKENIZER_CONFIG).is_file()
    cfg = _read_json(directory / TOKENIZER_CONFIG) if has_cfg else {}
    special = {}
    for role, key in _CONFIG_KEYS.items():
        tok = _token_text(cfg.get(key))
        if tok:
            special[role] = tok
    lower = cfg.get("do_lower_case", True)
    if file.suffix == ".model":
        tok = SentencePieceTokenizer(
            file,
            special,
            do_lower_case=bool(lower),
            keep_accents=bool(cfg.get("keep_accents", False)),
            info=info,
        )
    else:
        tok = CharTokenizer(file, special, do_lower_case=bool(lower), info=info)
    if info.get("hash") and info["hash"] != tok.hash:
        raise InputError(
            f"{directory / VOCAB_JSON}: hash {info['hash'][:12]} does not match {file.name} ({tok.hash[:12]}); the vocab file was changed"
        )
    return tok
