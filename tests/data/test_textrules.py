"""One test per cleaning rule, on tiny Chinese strings."""

from __future__ import annotations

import pytest

from albertzh.data import textrules as tr


def test_nfkc_keeps_chinese_punctuation() -> None:
    text = "ﬁ①，你好！真的？是：对；（注）～好…"
    out = tr.nfkc(text)
    assert out.startswith("fi1，")
    for ch in "，！？：；（）～…":
        assert ch in out
    # Without protection NFKC folds them into ASCII.
    plain = tr.nfkc(text, keep_cn_punct=False)
    assert "，" not in plain and "," in plain and "..." in plain


def test_nfkc_fast_path_returns_same_text() -> None:
    text = "已经是规范的文本。"
    assert tr.nfkc(text) is text


def test_fullwidth_to_halfwidth() -> None:
    assert tr.fullwidth_to_halfwidth("ＡＢＣ１２３＃，好！　了") == "ABC123#，好！ 了"
    assert tr.fullwidth_to_halfwidth("ＡＢ，好！", keep_cn_punct=False) == "AB,好!"


def test_remove_invisible() -> None:
    text = "\ufeff你\u200b好\u00ad世\u200d界\x07\r"
    assert tr.remove_invisible(text) == "你好世界"
    assert tr.remove_invisible("第一行\n第二\t行") == "第一行\n第二\t行"


def test_strip_html() -> None:
    text = '<p class="x">你好&amp;世界</p><!-- 注释 --><br/>&lt;再见&gt;'
    assert tr.strip_html(text) == "你好&世界<再见>"
    # Comparisons that only look like tags survive.
    assert tr.strip_html("3<5 且 a>b") == "3<5 且 a>b"


def test_mask_urls_and_emails_without_eating_chinese() -> None:
    text = "详见https://example.com/a?b=1了解，邮件bob.li@mail.example.cn或www.sina.com.cn。"
    out = tr.mask_urls(text)
    assert out == "详见[URL]了解，邮件[EMAIL]或[URL]。"
    assert tr.mask_urls(text, "<u>", "<e>").count("<u>") == 2
    assert tr.find_urls(text) and not tr.find_urls("没有链接的句子。")


def test_collapse_whitespace() -> None:
    assert tr.collapse_whitespace("  你好 \t  世界  \n\n  第二行 ") == "你好 世界\n第二行"


def test_t2s() -> None:
    pytest.importorskip("opencc")
    assert tr.t2s("漢語簡體與繁體") == "汉语简体与繁体"


@pytest.mark.parametrize(
    "text,expected",
    [
        ("今天天气很好。我们去公园吧！好不好？", ["今天天气很好。", "我们去公园吧！", "好不好？"]),
        ("他说：“你好！”然后走了。", ["他说：“你好！”", "然后走了。"]),
        ("真的吗？！是的……好吧；走", ["真的吗？！", "是的……", "好吧；", "走"]),
        (
            "This is it. Next one! 圆周率3.14很有用",
            ["This is it.", "Next one!", "圆周率3.14很有用"],
        ),
        ("第一句\n第二句。第三句", ["第一句", "第二句。", "第三句"]),
        ("「好。」（完。）", ["「好。」", "（完。）"]),
    ],
)
def test_split_sentences(text: str, expected: list[str]) -> None:
    assert tr.split_sentences(text) == expected


def test_too_short_and_too_long() -> None:
    assert tr.too_short("你好\n世界", 5) == "too_short"
    assert tr.too_short("你好世界呀\n好", 5) is None
    assert tr.too_long("很长" * 6, 10) == "too_long"
    assert tr.too_long("很长" * 5, 10) is None
    assert tr.too_long("很长" * 500, None) is None
    assert tr.too_long("很长" * 500, 0) is None


def test_low_chinese_ratio() -> None:
    assert tr.chinese_ratio("abc你好") == pytest.approx(0.4)
    assert tr.low_chinese_ratio("hello world 你好", 0.3) == "low_chinese_ratio"
    assert tr.low_chinese_ratio("你好世界 world", 0.3) is None
    assert tr.low_chinese_ratio("only english", 0.0) is None
    # Digits, punctuation and symbols do not count against Chinese text.
    assert tr.chinese_ratio("2015年10月1日，气温-5.5°C。") == pytest.approx(5 / 6)
    assert tr.chinese_ratio("×÷ 123 ！") == 0.0
    assert tr.chinese_ratio("Ωé你") == pytest.approx(1 / 3)


def test_char_spam() -> None:
    assert tr.char_spam("啊" * 15 + "好的吧你说呢是这样的", 0.3) == "char_spam"
    assert tr.char_spam("今天天气很好我们一起去公园散步然后回家吃饭吧", 0.3) is None
    # Punctuation runs (separators) and short texts do not count.
    assert tr.char_spam("今天天气很好我们一起去公园散步然后回家吃饭吧" + "-" * 80, 0.3) is None
    assert tr.char_spam("啊啊啊啊", 0.3) is None
    assert tr.char_spam("啊" * 30, 1.0) is None


def test_char_run() -> None:
    assert tr.char_run("太好笑了哈哈哈哈哈哈哈哈哈哈", 10) == "char_run"
    assert tr.char_run("太好笑了哈哈哈哈哈哈", 10) is None
    assert tr.char_run("价格10000000000元", 5) is None  # digits are not spam
    assert tr.char_run("哈" * 30, 0) is None


def test_repeated_lines() -> None:
    spam = ["买买买，最划算！"] * 3 + ["联系我们。"]
    assert tr.repeated_lines(spam, 0.3) == "repeated_lines"
    ok = ["好。", "好。", "今天我们去了一个很远的地方，看到了很多风景。"]
    assert tr.repeated_lines(ok, 0.3) is None
    assert tr.repeated_lines(spam, 1.0) is None


def test_shingles() -> None:
    assert tr.shingles("你好 世界", 2) == {s.encode() for s in ["你好", "好世", "世界"]}
    assert tr.shingles("好", 5) == {"好".encode()}


def test_table_filters_equal_their_plain_definitions() -> None:
    """chinese_ratio / char_spam (class table) and char_run (NumPy runs) give what the plain
    definitions give: range masks + np.unique, and the back-reference regex."""
    import random
    import re

    import numpy as np

    def ref_letters(text: str) -> tuple[np.ndarray, np.ndarray]:
        cps = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        cjk = tr._cjk_mask(cps)
        return cps[tr._letter_mask(cps, cjk)], cjk

    pool = list("哈啊好的中文aAbZzé5٣_-。！ΩжぁアＡ가\u3400\u9fff\uf900") + [
        "𠮷",
        "\U0003134f",
        "🤗",
    ]
    rng = random.Random(5)
    texts = ["", "哈" * 12, "a" * 9 + "b", "٣" * 12, "_" * 12, "𠮷" * 11]
    for _ in range(3000):
        chars = [rng.choice(pool) * rng.choice([1, 1, 2, 5, 10]) for _ in range(rng.randint(1, 12))]
        texts.append("".join(chars))
    hits = {"run": 0, "spam": 0}
    for text in texts:
        letters, cjk = ref_letters(text)
        ratio = int(cjk.sum()) / len(letters) if len(letters) else 0.0
        assert tr.chinese_ratio(text) == ratio, text
        for k in (2, 5, 10):
            want = re.search(rf"([^\W\d_])\1{{{k - 1},}}", text) is not None
            assert (tr.char_run(text, k) == "char_run") == want, (text, k)
            hits["run"] += want
        if len(letters) >= 20:
            top = int(np.unique(letters, return_counts=True)[1].max())
            want = top > 0.3 * len(letters)
            assert (tr.char_spam(text, 0.3) == "char_spam") == want, text
            hits["spam"] += want
    assert hits["run"] > 100 and hits["spam"] > 100
