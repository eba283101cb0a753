"""Cleaning rules for the ``clean`` stage: tiny functions over one document's text.

Three kinds, each a plain function so it is easy to test and to reorder:

- *normalizers* ``str -> str`` (Unicode, width, invisible characters, HTML, URLs, whitespace,
  traditional -> simplified);
- the *sentence splitter* ``str -> list[str]``;
- *filters* that return ``None`` to keep a document or a named drop reason (``too_short``,
  ``low_chinese_ratio``, ...).

Chinese punctuation: NFKC folds the full-width forms ``，！？：；（）～`` and ``…`` into ASCII
(``，`` -> ``,``, ``…`` -> ``...``). albert_zh / BERT-Chinese text keeps them as they are (they are
separate entries of the 21128-token vocab and they carry the sentence structure), so by
default these characters are protected from both NFKC and the full-width -> half-width mapping;
full-width letters, digits and other symbols (``ＡＢＣ１２３＃``) do become ASCII.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Iterable

import numpy as np

# Chinese full-width punctuation that NFKC / width folding would turn into ASCII; kept as is.
CN_PUNCT = "，！？：；（）～…"
_CN_PUNCT_SPLIT = re.compile(f"([{re.escape(CN_PUNCT)}]+)")

# Full-width ASCII block U+FF01..U+FF5E -> U+0021..U+007E, and the ideographic space.
_FULLWIDTH_ALL = {cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}
_FULLWIDTH_KEEP_CN = {k: v for k, v in _FULLWIDTH_ALL.items() if chr(k) not in CN_PUNCT}


def _class_of(codes: Iterable[int]) -> re.Pattern[str]:
    return re.compile("[" + "".join(re.escape(chr(c)) for c in sorted(codes)) + "]+")


# Runs of characters that the width mapping changes (so the common ，！？ are not even looked at).
_FULLWIDTH_RUN_ALL = _class_of(_FULLWIDTH_ALL)
_FULLWIDTH_RUN_KEEP_CN = _class_of(_FULLWIDTH_KEEP_CN)

# Control characters (Cc) except tab/newline, and invisible format characters (Cf): zero-width
# space/joiners, direction marks, BOM, soft hyphen, word joiner, interlinear annotation marks.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e"
    "\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]"
)

_HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][A-Za-z0-9:-]*(?:\s[^<>]*)?/?>", re.S)
_HTML_ENTITY = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")

# URLs and e-mails: ASCII only, so that Chinese text right after a link is not eaten.
_URL = re.compile(
    r"(?:(?:https?|ftp)://|www\.)[A-Za-z0-9\-._~:/?#\[\]@!$&'*+,;=%]*[A-Za-z0-9\-_~/#=&%]"
)
_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")

# Horizontal whitespace of any kind (after NFKC most are plain spaces already).
_SPACES = re.compile(r"[^\S\n]+")

# A sentence ends after Chinese or Western end punctuation, or after "." followed by a space;
# closing quotes and brackets right after it stay with the sentence they close.
_CLOSERS = "”’\"'」』）)】》〉]"
_SENT_END = re.compile(rf"(?:[。！？!?；…]|\.{{3,}}|\.(?=\s))+[{re.escape(_CLOSERS)}]*")

# CJK ideographs: Extension A + the basic block (with the 64 Yijing symbols between them),
# compatibility ideographs, planes 2-3.
# Letters of other scripts: Latin-1/Extended-A/B, Greek + Cyrillic, kana, Hangul syllables.
_OTHER_LETTER_RANGES = tuple(
    (np.uint32(lo), np.uint32(hi))
    for lo, hi in (
        (0xC0, 0xD6),  # Latin-1 letters, without × (D7) and ÷ (F7)
        (0xD8, 0xF6),
        (0xF8, 0x24F),
        (0x370, 0x52F),
        (0x3040, 0x30FF),
        (0xAC00, 0xD7AF),
    )
)
_CJK_RANGES = tuple(
    (np.uint32(lo), np.uint32(hi))
    for lo, hi in ((0x3400, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3134F))
)
# A letter as the regex engine sees it (word character, not a digit or underscore).
_RUN_LETTER = re.compile(r"[^\W\d_]")


# --------------------------------------------------------------------------- normalizers


def nfkc(text: str, keep_cn_punct: bool = True) -> str:
    """Unicode NFKC, leaving Chinese full-width punctuation (``CN_PUNCT``) untouched."""
    if unicodedata.is_normalized("NFKC", text):
        return text
    if not keep_cn_punct:
        return unicodedata.normalize("NFKC", text)
    # The protected characters are never parts of combining sequences, so normalizing the
    # pieces between them is the same as normalizing the whole minus those characters.
    pieces = _CN_PUNCT_SPLIT.split(text)
    pieces[::2] = [unicodedata.normalize("NFKC", p) for p in pieces[::2]]
    return "".join(pieces)


def fullwidth_to_halfwidth(text: str, keep_cn_punct: bool = True) -> str:
    """Map full-width ASCII forms (``Ａ１＃``) and the ideographic space to ASCII."""
    if keep_cn_punct:
        run, table = _FULLWIDTH_RUN_KEEP_CN, _FULLWIDTH_KEEP_CN
    else:
        run, table = _FULLWIDTH_RUN_ALL, _FULLWIDTH_ALL
    if not run.search(text):
        return text
    return run.sub(lambda m: m.group(0).translate(table), text)


def remove_invisible(text: str) -> str:
    """Drop control characters and zero-width/format characters (BOM, soft hyphen, ...)."""
    return _INVISIBLE.sub("", text)


def strip_html(text: str) -> str:
    """Remove HTML tags and comments, then decode entities (``&amp;`` -> ``&``)."""
    if "<" in text:
        text = _HTML_TAG.sub("", text)
    if "&" in text:
        text = _HTML_ENTITY.sub(lambda m: html.unescape(m.group(0)), text)
    return text


def find_urls(text: str) -> bool:
    """True when the text holds a URL or an e-mail address."""
    return bool(_URL.search(text) or _EMAIL.search(text))


def mask_urls(text: str, url_token: str = "[URL]", email_token: str = "[EMAIL]") -> str:
    """Replace URLs and e-mail addresses with placeholder tokens."""
    if "@" in text:
        text = _EMAIL.sub(email_token, text)
    if "://" in text or "www." in text:
        text = _URL.sub(url_token, text)
    return text


def collapse_whitespace(text: str) -> str:
    """Collapse runs of spaces/tabs to one space per line, strip lines, drop empty lines."""
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return "\n".join(line for line in lines if line)


_OPENCC: list[Callable[[str], str]] = []


def t2s(text: str) -> str:
    """Traditional -> simplified Chinese with OpenCC (``opencc-python-reimplemented``)."""
    if not _OPENCC:
        _OPENCC.append(load_opencc())
    return _OPENCC[0](text)


def load_opencc() -> Callable[[str], str]:
    """The OpenCC t2s converter; raises ImportError with an install hint when it is absent."""
    try:
        from opencc import OpenCC
    except ImportError as exc:
        raise ImportError(
            "--t2s needs the OpenCC package: pip install 'albertzh[t2s]' "
            "(opencc-python-reimplemented)"
        ) from exc
    return OpenCC("t2s").convert


# --------------------------------------------------------------------------- sentence splitter


def split_sentences(text: str) -> list[str]:
    """Split on line breaks and end punctuation (。！？!?；… and ". "), quotes kept attached."""
    out: list[str] = []
    for line in text.split("\n"):
        start = 0
        for m in _SENT_END.finditer(line):
            piece = line[start : m.end()].strip()
            if piece:
                out.append(piece)
            start = m.end()
        rest = line[start:].strip()
        if rest:
            out.append(rest)
    return out


# --------------------------------------------------------------------------- filters


@functools.lru_cache(maxsize=4)
def _codepoints(text: str) -> np.ndarray:
    # Cached: the filters of one document share it (read-only).
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def _cjk_mask(cps: np.ndarray) -> np.ndarray:
    # ``cp - lo <= hi - lo`` in uint32 tests lo <= cp <= hi with one comparison.
    mask = cps - _CJK_RANGES[0][0] <= _CJK_RANGES[0][1] - _CJK_RANGES[0][0]
    for lo, hi in _CJK_RANGES[1:]:
        mask |= cps - lo <= hi - lo
    return mask


def _letter_mask(cps: np.ndarray, cjk: np.ndarray) -> np.ndarray:
    """CJK ideographs plus the letters of other common scripts (Latin, Greek, Cyrillic, kana,
    Hangul); digits, punctuation and symbols are not letters."""
    mask = cjk | ((cps | 0x20) - np.uint32(ord("a")) <= 25)
    for lo, hi in _OTHER_LETTER_RANGES:
        mask |= cps - lo <= hi - lo
    return mask


_CLASS_TABLE: list[np.ndarray] = []


def _class_table() -> np.ndarray:
    """``table[cp]``: 0 = not a letter, 1 = a letter of another script, 2 = a CJK ideograph
    (:func:`_letter_mask` / :func:`_cjk_mask` applied to every code point up to the last CJK
    one); the final entry (0) stands for every code point above."""
    if not _CLASS_TABLE:
        cps = np.arange(int(_CJK_RANGES[-1][1]) + 2, dtype=np.uint32)
        cjk = _cjk_mask(cps)
        table = _letter_mask(cps, cjk).astype(np.uint8) + cjk
        table[-1] = 0
        _CLASS_TABLE.append(table)
    return _CLASS_TABLE[0]


@functools.lru_cache(maxsize=4)
def _letters(text: str) -> tuple[np.ndarray, int]:
    """The letters of the text (code points, see :func:`_letter_mask`) and how many are CJK."""
    table = _class_table()
    cps = _codepoints(text)
    cls = table[np.minimum(cps, len(table) - 1)]
    return cps[cls > 0], int(np.count_nonzero(cls == 2))


def chinese_ratio(text: str) -> float:
    """Share of CJK ideographs among the letters (digits and punctuation do not count)."""
    # One table lookup per code point: faster than a regex findall on long text.
    letters, cjk = _letters(text)
    return cjk / len(letters) if len(letters) else 0.0


def too_short(text: str, min_chars: int) -> str | None:
    """``too_short`` when the document has fewer than ``min_chars`` characters (no newlines)."""
    return "too_short" if len(text) - text.count("\n") < min_chars else None


def too_long(text: str, max_chars: int | None) -> str | None:
    """``too_long`` when the document has more than ``max_chars`` characters (0/None: no limit)."""
    if not max_chars:
        return None
    return "too_long" if len(text) - text.count("\n") > max_chars else None


def low_chinese_ratio(text: str, min_ratio: float) -> str | None:
    """``low_chinese_ratio`` when fewer than ``min_ratio`` of the characters are Chinese."""
    if min_ratio <= 0:
        return None
    return "low_chinese_ratio" if chinese_ratio(text) < min_ratio else None


def char_spam(text: str, max_fraction: float, min_len: int = 20) -> str | None:
    """``char_spam`` when one letter is more than ``max_fraction`` of all letters.

    Letters as in :func:`chinese_ratio`; punctuation, digits and other symbols are not
    counted, so a ``-----`` separator line or a price list does not trip it, while
    ``啊啊啊好啊啊啊啊`` does.
    """
    if max_fraction >= 1:
        return None
    letters, _ = _letters(text)
    if len(letters) < min_len:
        return None
    # The most frequent letter: the longest run of equal values in sorted order.
    ordered = np.sort(letters)
    edges = np.concatenate(([0], np.flatnonzero(ordered[1:] != ordered[:-1]) + 1, [len(ordered)]))
    top = int((edges[1:] - edges[:-1]).max())
    return "char_spam" if top > max_fraction * len(letters) else None


def char_run(text: str, max_run: int) -> str | None:
    """``char_run`` for a run of ``max_run`` or more equal letters/ideographs (哈哈哈哈...)."""
    if max_run <= 1 or len(text) < max_run:
        return None
    # Runs of equal code points found with NumPy; only a long run's character is checked
    # against the letter class (what the regex ``([^\W\d_])\1{max_run-1,}`` would find).
    cps = _codepoints(text)
    same = cps[1:] == cps[:-1]
    if np.count_nonzero(same) < max_run - 1:
        return None  # too few repeats for any run that long
    edges = np.concatenate(([0], np.flatnonzero(~same) + 1, [len(cps)]))
    lengths = edges[1:] - edges[:-1]
    run_starts = edges[:-1][lengths >= max_run]
    if any(_RUN_LETTER.match(text[i]) for i in run_starts.tolist()):
        return "char_run"
    return None


def repeated_lines(sentences: list[str], max_fraction: float) -> str | None:
    """``repeated_lines`` when sentences seen before in the same document make up more than
    ``max_fraction`` of its characters (copy-pasted spam, navigation repeated on every line).
    """
    if max_fraction >= 1 or len(sentences) < 2:
        return None
    seen: set[str] = set()
    repeated = total = 0
    for s in sentences:
        total += len(s)
        if s in seen:
            repeated += len(s)
        seen.add(s)
    return "repeated_lines" if repeated > max_fraction * total else None


# --------------------------------------------------------------------------- near-duplicates


def shingles(text: str, n: int) -> set[bytes]:
    """Character ``n``-grams of the text without whitespace (for MinHash)."""
    s = "".join(text.split())
    if len(s) <= n:
        return {s.encode("utf-8")}
    return {s[i : i + n].encode("utf-8") for i in range(len(s) - n + 1)}
