"""segment: split every document into sentences and every sentence into jieba words.

Output rows (words dataset, see docs/internals.md): ``doc_id: string, sentences:
list<string>, word_lens: list<list<int32>>``. ``word_lens[i]`` are the lengths (in characters)
of the words of ``sentences[i]``; they add up to ``len(sentences[i])``.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyarrow as pa

WORDS_SCHEMA = pa.schema(
    [
        ("doc_id", pa.string()),
        ("sentences", pa.list_(pa.string())),
        ("word_lens", pa.list_(pa.list_(pa.int32()))),
    ]
)


def words_of(sentence: str, lens: Sequence[int]) -> list[str]:
    """The words of ``sentence`` given their lengths (a row's ``word_lens[i]``)."""
    out, pos = [], 0
    for n in lens:
        out.append(sentence[pos : pos + n])
        pos += n
    if pos != len(sentence):
        raise ValueError(f"word lengths add up to {pos}, sentence has {len(sentence)} characters")
    return out
