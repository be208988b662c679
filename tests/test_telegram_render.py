"""Model Markdown to Telegram HTML, and splitting it into messages (SPEC §4, §9).

Every output goes through ``telegram_text``, a checker that reads HTML the way Telegram's
parse mode does and fails on anything Telegram would answer with "can't parse entities".
"""

from __future__ import annotations

import html
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.telegram.render import (
    TELEGRAM_TEXT_LIMIT,
    escape,
    html_chunks,
    plain_chunks,
    to_html,
    visible_length,
)

# --- A checker that reads HTML as Telegram does ---------------------------------------------

_ALLOWED_ATTRIBUTES: dict[str, set[str]] = {
    "b": set(),
    "strong": set(),
    "i": set(),
    "em": set(),
    "u": set(),
    "ins": set(),
    "s": set(),
    "strike": set(),
    "del": set(),
    "span": {"class"},
    "tg-spoiler": set(),
    "a": {"href"},
    "code": {"class"},
    "pre": set(),
    "blockquote": {"expandable"},
}
_TAG = re.compile(r"<(/?)([a-z-]+)((?: [a-z-]+(?:=\"[^\"<>]*\")?)*)>")
_ATTRIBUTE = re.compile(r" ([a-z-]+)(?:=\"([^\"<>]*)\")?")
_ENTITY = re.compile(r"&(?:lt|gt|amp|quot|#[0-9]{1,7}|#x[0-9a-fA-F]{1,6});")
_URL = re.compile(r"(?:https?://[^\s/]+|tg://[^\s/]+|mailto:\S+)", re.IGNORECASE)
_LANGUAGE_CLASS = re.compile(r"language-[A-Za-z0-9_+#-]+")


def telegram_text(message: str) -> str:
    """Return the text Telegram shows for ``message``; fail where Telegram would reject it.

    Checks the allowed tags and attributes, nesting and closing, that every ``<`` and ``&``
    starts a tag or a supported entity, no raw ``>`` in text, and Telegram's nesting rules:
    nothing inside ``code``, only ``code`` inside ``pre``, no link in a link, no quote in a
    quote, and no code inside a link.
    """
    stack: list[str] = []
    text: list[str] = []
    position = 0
    while position < len(message):
        char = message[position]
        if char == "<":
            tag = _TAG.match(message, position)
            assert tag, f"stray '<' at {position}: {message[position : position + 30]!r}"
            closing, name, attributes = tag.groups()
            assert name in _ALLOWED_ATTRIBUTES, f"unsupported tag <{name}>"
            if closing:
                assert not attributes, f"attributes on </{name}>"
                assert stack and stack[-1] == name, f"</{name}> closes {stack}"
                stack.pop()
            else:
                _check_opening(name, attributes, stack, pre_has_text=bool(text) and "pre" in stack)
                stack.append(name)
            position = tag.end()
        elif char == "&":
            entity = _ENTITY.match(message, position)
            assert entity, f"bare '&' at {position}: {message[position : position + 30]!r}"
            text.append(html.unescape(entity.group()))
            position = entity.end()
        else:
            assert char != ">", f"raw '>' at {position}"
            text.append(char)
            position += 1
    assert not stack, f"unclosed {stack}"
    return "".join(text)


def _check_opening(name: str, attributes: str, stack: list[str], *, pre_has_text: bool) -> None:
    values = {match[1]: match[2] for match in _ATTRIBUTE.finditer(attributes)}
    assert set(values) <= _ALLOWED_ATTRIBUTES[name], f"<{name}{attributes}>"
    assert "code" not in stack, f"<{name}> inside <code>"
    if "pre" in stack:
        assert name == "code" and stack[-1] == "pre", f"<{name}> inside <pre>"
    if name == "a":
        assert "a" not in stack, "link inside a link"
        href = values.get("href")
        assert href is not None and _URL.match(html.unescape(href)), f"bad href {href!r}"
    if name == "code" and "class" in values:
        assert stack and stack[-1] == "pre", "language on a standalone <code>"
        assert _LANGUAGE_CLASS.fullmatch(values["class"] or ""), values["class"]
    if name == "code":
        assert "a" not in stack, "code inside a link"
    if name == "span":
        assert values.get("class") == "tg-spoiler"
    if name == "blockquote":
        assert "blockquote" not in stack, "quote inside a quote"
        assert values.get("expandable") is None
    if name in ("pre", "blockquote"):
        assert set(stack) <= {"blockquote"}, f"<{name}> inside {stack}"


def utf16(text: str) -> int:
    return len(text.encode("utf-16-le")) // 2


def squeezed(text: str) -> str:
    return "".join(text.split())


def check_chunks(markdown: str, chunks: list[str], limit: int) -> None:
    """Each chunk is valid, within the limit and not empty; together they keep the text."""
    texts = [telegram_text(chunk) for chunk in chunks]
    for chunk, text in zip(chunks, texts, strict=True):
        assert text.strip(), f"empty chunk {chunk!r}"
        assert utf16(text) <= limit
        assert visible_length(chunk) == utf16(text)
    assert squeezed("".join(texts)) == squeezed(telegram_text(to_html(markdown)))


def test_checker_rejects_what_telegram_rejects() -> None:
    for bad in [
        "<b>x",
        "<b><i>x</b></i>",
        "a < b",
        "a & b",
        "a > b",
        "<p>x</p>",
        "<pre><b>x</b></pre>",
        '<code class="language-py">x</code>',
        '<a href="javascript:alert(1)">x</a>',
        "<blockquote><blockquote>x</blockquote></blockquote>",
        '<a href="https://e.com"><code>x</code></a>',
        "&nbsp;",
    ]:
        with pytest.raises(AssertionError):
            telegram_text(bad)
    assert telegram_text('<pre><code class="language-py">a &lt; b</code></pre>') == "a < b"


# --- Rendering: each feature ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __bold__", "<b>bold</b> and <b>bold</b>"),
        ("*italic* and _italic_", "<i>italic</i> and <i>italic</i>"),
        ("~~gone~~", "<s>gone</s>"),
        ("***both***", "<i><b>both</b></i>"),
        ("`a < b & c`", "<code>a &lt; b &amp; c</code>"),
        ("[docs](https://e.com/a?b=1&c=2)", '<a href="https://e.com/a?b=1&amp;c=2">docs</a>'),
        ('[q](https://e.com/"x")', '<a href="https://e.com/%22x%22">q</a>'),
        ("<https://e.com>", '<a href="https://e.com">https://e.com</a>'),
        ("<me@e.com>", '<a href="mailto:me@e.com">me@e.com</a>'),
        ("[user](tg://user?id=42)", '<a href="tg://user?id=42">user</a>'),
        ("[**bold** link](https://e.com)", '<a href="https://e.com"><b>bold</b> link</a>'),
        ("[`code`](https://e.com)", '<a href="https://e.com">code</a>'),
        ("[](https://e.com)", '<a href="https://e.com">https://e.com</a>'),
        ("# Title\ntext", "<b>Title</b>\n\ntext"),
        ("## **Bold** title\n\ntext", "<b>Bold title</b>\n\ntext"),
        ("Title\n=====", "<b>Title</b>"),
        ("one\n\ntwo", "one\n\ntwo"),
        ("soft\nbreak", "soft\nbreak"),
        ("hard  \nbreak", "hard\nbreak"),
        ("hard\\\nbreak", "hard\nbreak"),
        ("- a\n- b", "• a\n• b"),
        ("* a\n* b\n  * c\n    * d\n* e", "• a\n• b\n  • c\n    • d\n• e"),
        ("1. a\n2. b\n   1. c", "1. a\n2. b\n  1. c"),
        ("3. three\n4. four", "3. three\n4. four"),
        ("- a\n\n- b", "• a\n\n• b"),
        ("- a\n  continued", "• a\n  continued"),
        ("- ", "•"),
        ("> quoted **text**", "<blockquote>quoted <b>text</b></blockquote>"),
        ("> one\n>\n> two", "<blockquote>one\n\ntwo</blockquote>"),
        ("> outer\n>\n>> inner", "<blockquote>outer\n\n&gt; inner</blockquote>"),
        ("a\n\n---\n\nb", "a\n\n———\n\nb"),
        ("***", "———"),
        (
            "```python\nif a < b:\n    print('&')\n```",
            "<pre><code class=\"language-python\">if a &lt; b:\n    print('&amp;')</code></pre>",
        ),
        ("```c++ {title=x}\nint x;\n```", '<pre><code class="language-c++">int x;</code></pre>'),
        ("```\nplain\n```", "<pre>plain</pre>"),
        ('```"><script>\nx\n```', "<pre>x</pre>"),
        ("    indented\n    code", "<pre>indented\ncode</pre>"),
        (
            "- ```sh\n  ls\n    -la\n  ```",
            '• <pre><code class="language-sh">ls\n  -la</code></pre>',
        ),
        (
            "| Name | Qty |\n|:-----|----:|\n| apple | 3 |\n| kiwi & co | 12 |",
            "<pre>Name      | Qty\n----------+----\napple     |   3\nkiwi &amp; co |  12</pre>",
        ),
        ("| a | b |\n|:-:|---|\n| 李 | `x` |", "<pre>a  | b\n---+--\n李 | x</pre>"),
        ("![a cat](https://e.com/cat.png)", '<a href="https://e.com/cat.png">a cat</a>'),
        ("![](https://e.com/cat.png)", '<a href="https://e.com/cat.png">https://e.com/cat.png</a>'),
        ("", ""),
    ],
)
def test_markdown_features(markdown: str, expected: str) -> None:
    rendered = to_html(markdown)
    assert rendered == expected
    telegram_text(rendered)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**unbalanced bold", "**unbalanced bold"),
        ("*a **b* c**", "<i>a b c</i>"),  # markdown-it nests <em> in <em>; one is enough
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("<b>not a tag</b>", "&lt;b&gt;not a tag&lt;/b&gt;"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("AT&T &amp; &copy; &#60;", "AT&amp;T &amp; © &lt;"),
        ("[link](javascript:alert(1))", "link"),
        ("[data](data:text/html;base64,PHNjcmlwdD4=)", "data"),
        ("![img](javascript:alert(1))", "img"),
        ("[ftp](ftp://e.com) [rel](/path) [bare](http:e)", "ftp rel bare"),
        ("[half a link](https://e.c", "[half a link](https://e.c"),
        ("````\n```\ninner\n```\n````", "<pre>```\ninner\n```</pre>"),
        (
            "```python\ndef f():\n    return 1 < 2",
            '<pre><code class="language-python">def f():\n    return 1 &lt; 2</code></pre>',
        ),
        ("```", "<pre></pre>"),
        ("`unclosed code", "`unclosed code"),
        ("> > > > deep", "<blockquote>&gt; &gt; &gt; deep</blockquote>"),
        ("| not | a table", "| not | a table"),
        ("smile 😀 and 👩\u200d👩\u200d👧", "smile 😀 and 👩\u200d👩\u200d👧"),
    ],
)
def test_hostile_input_is_shown_safely(markdown: str, expected: str) -> None:
    rendered = to_html(markdown)
    assert rendered == expected
    telegram_text(rendered)


def test_escape() -> None:
    assert escape('<b>Tom & "Jerry"</b>') == '&lt;b&gt;Tom &amp; "Jerry"&lt;/b&gt;'
    assert telegram_text(escape("a < b && c > d")) == "a < b && c > d"


@pytest.mark.parametrize(
    ("message", "length"),
    [
        ("plain", 5),
        ("<b>a&amp;b</b>", 3),
        ("&lt;&gt;&quot;", 3),
        ("😀", 2),
        ("<i>😀x</i>", 3),
        ("é", 1),
        ('<a href="https://e.com/very/long/url">x</a>', 1),
        ('<pre><code class="language-python">a\nb</code></pre>', 3),
        ("", 0),
    ],
)
def test_visible_length_counts_utf16_after_parsing(message: str, length: int) -> None:
    assert visible_length(message) == length
    assert utf16(telegram_text(message)) == length


# --- Any prefix of a streamed answer is valid ------------------------------------------------

ANSWERS = [
    """# Sorting in Python

Use **`sorted()`** for a *new* list, or `list.sort()` to sort in place. See the
[docs](https://docs.python.org/3/howto/sorting.html) & <https://peps.python.org>.

## Example

```python
people = [("Ann", 31), ("Bob", 25)]
for name, age in sorted(people, key=lambda p: p[1]):
    print(f"{name} <{age}>")
```

| Method | In place | Returns |
|:-------|:--------:|--------:|
| `sorted()` | no | new list |
| `.sort()` | yes | `None` |

1. Pick a key function.
2. Pass `reverse=True` for descending order:
   - numbers: largest first
   - strings: Z to A

> **Note:** sorting is *stable* — equal keys keep their order.

---

That's it! 😀
""",
    """Sure — here are three options 👍:

* **Option A**: fast, but uses ~~a lot~~ *some* memory
* **Option B**: uses `O(1)` memory
    * caveat: needs a < b && b > c
    * see ![diagram](https://e.com/d.png "Diagram")
* Option C

> Quote from the manual:
> > nested quote with `code`
>
> ```bash
> echo "$HOME" | grep -v '<none>'
> ```

Shell:

    $ make && make install

Done.
""",
    """Here is the HTML you asked for: <div class="x">hi</div> & <script>alert('x')</script>

````markdown
```js
console.log("nested fence")
```
````

**Warning*: unbalanced _markup__ and a [half link](javascript:void(0)) and [ok](https://e.com/a_(b)).
- [ ] task
- [x] done

```unknown lang! with spaces
<tag attr="v">
```
""",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_prefix_of_an_answer_renders_valid_html(answer: str) -> None:
    for end in range(len(answer) + 1):
        prefix = answer[:end]
        try:
            telegram_text(to_html(prefix))
        except AssertionError as error:
            raise AssertionError(f"prefix {prefix!r}: {error}") from error


@pytest.mark.parametrize("answer", ANSWERS)
def test_answers_render_all_their_text(answer: str) -> None:
    text = telegram_text(to_html(answer))
    for word in ("Sorting", "sorted(people", "stable", "Option", "echo", "make", "nested fence"):
        if word in answer:
            assert word in text


_MARKDOWN_PIECES = st.sampled_from(
    [
        "a", "word", " ", "\n", "\n\n", "*", "**", "_", "~~", "`", "```", "```python\n", "    ",
        "#", "# ", "> ", "- ", "1. ", "|", "---", "[", "]", "(", ")", "https://e.com", "<", ">",
        "&", "&amp;", "&#", ";", "!", "\\", "😀", "é", "\u200d", "<b>", "</pre>", '"',
        "![", "<https://e.com>", "|---|", "\n| a | b |", "1) ", "~",
    ]
)  # fmt: skip
_MARKDOWN = st.lists(_MARKDOWN_PIECES, max_size=80).map("".join)
_PROPERTY = settings(max_examples=300, deadline=None, database=None)


@_PROPERTY
@given(markdown=_MARKDOWN)
def test_any_markdown_renders_valid_html(markdown: str) -> None:
    rendered = to_html(markdown)
    text = telegram_text(rendered)
    assert visible_length(rendered) == utf16(text)


@_PROPERTY
@given(markdown=_MARKDOWN, limit=st.integers(min_value=2, max_value=60))
def test_any_markdown_splits_into_valid_chunks(markdown: str, limit: int) -> None:
    check_chunks(markdown, html_chunks(markdown, limit), limit)
    for chunk in plain_chunks(markdown, limit):
        assert chunk.strip()
        assert utf16(chunk) <= limit


# --- Splitting -----------------------------------------------------------------------------


def _paragraphs(count: int, seed: str) -> list[str]:
    return [
        f"Paragraph {seed}{n} explains *one* idea with **some** detail & a <tag>. "
        + " ".join(f"w{seed}{n}x{k}" for k in range(80))
        for n in range(count)
    ]


CODE_LINES = [
    f"    total_{n} = compute({n}) if a < b else {n} & 0xff  # step {n}" for n in range(105)
]
CODE = "\n".join(CODE_LINES)
LONG_ANSWER = "\n\n".join([*_paragraphs(10, "a"), f"```python\n{CODE}\n```", *_paragraphs(2, "b")])


def _code_of(chunk: str) -> str:
    match = re.search(r'<pre><code class="language-python">(.*?)</code></pre>', chunk, re.DOTALL)
    return html.unescape(match.group(1)) if match else ""


def test_long_answer_splits_into_valid_chunks() -> None:
    assert len(LONG_ANSWER) >= 10_000
    assert len(CODE) >= 6_000
    chunks = html_chunks(LONG_ANSWER)
    check_chunks(LONG_ANSWER, chunks, TELEGRAM_TEXT_LIMIT)
    assert len(chunks) >= 4


def test_long_code_block_is_reopened_with_its_language() -> None:
    chunks = html_chunks(LONG_ANSWER)
    code_chunks = [chunk for chunk in chunks if "total_" in chunk]
    assert len(code_chunks) >= 2
    for chunk in code_chunks:
        assert chunk.count('<pre><code class="language-python">') == 1
    # Cut only between lines: every line is whole, none lost, in order.
    lines = [line for chunk in code_chunks for line in _code_of(chunk).split("\n")]
    assert lines == CODE_LINES


def test_split_falls_between_paragraphs() -> None:
    paragraphs = _paragraphs(10, "a")
    chunks = html_chunks("\n\n".join(paragraphs))
    texts = [telegram_text(chunk) for chunk in chunks]
    assert len(texts) >= 2
    plain_paragraphs = [telegram_text(to_html(paragraph)) for paragraph in paragraphs]
    for text in texts:
        assert text.split("\n\n") == plain_paragraphs[: len(text.split("\n\n"))]
        del plain_paragraphs[: len(text.split("\n\n"))]
    assert plain_paragraphs == []


def test_formatting_is_closed_and_reopened_at_a_cut() -> None:
    markdown = (
        "> **"
        + " ".join(f"word{n}" for n in range(40))
        + "** [link "
        + "x " * 30
        + "](https://e.com)"
    )
    chunks = html_chunks(markdown, 50)
    check_chunks(markdown, chunks, 50)
    assert len(chunks) > 3
    assert all(chunk.startswith("<blockquote>") for chunk in chunks)
    assert all(chunk.endswith("</blockquote>") for chunk in chunks)
    assert chunks[1].startswith("<blockquote><b>word")
    assert chunks[-1].startswith('<blockquote><a href="https://e.com">x ')


@pytest.mark.parametrize(
    ("markdown", "sizes"),
    [
        ("a" * 4096, [4096]),
        ("a" * 4097, [4096, 1]),
        ("a" * 10_000, [4096, 4096, 1808]),
        ("word " * 819 + "w", [4096]),
        ("word " * 819 + "wo", [4094, 2]),
        ("a" * 2047 + "\n\n" + "b" * 2047, [4096]),
        ("a" * 2048 + "\n\n" + "b" * 2047, [2048, 2047]),
        ("line\n" * 819 + "x", [4096]),
        ("line\n" * 819 + "xy", [4094, 2]),
        ("😀" * 3000, [4096, 1904]),
        ("x" + "😀" * 2048, [4095, 2]),
        ("&" * 5000, [4096, 904]),
    ],
)
def test_limit_edges(markdown: str, sizes: list[int]) -> None:
    chunks = html_chunks(markdown)
    check_chunks(markdown, chunks, TELEGRAM_TEXT_LIMIT)
    assert [visible_length(chunk) for chunk in chunks] == sizes


def test_limit_is_a_parameter() -> None:
    assert html_chunks("abcdef", 4) == ["abcd", "ef"]
    assert html_chunks("😀😀😀", 5) == ["😀😀", "😀"]
    assert html_chunks("ab cd ef", 5) == ["ab cd", "ef"]


def test_a_hard_cut_keeps_emoji_sequences_whole() -> None:
    family = "👩\u200d👩\u200d👧"
    chunks = html_chunks(family * 5, 12)
    assert chunks == [family] * 5


def test_nothing_to_send_gives_no_chunks() -> None:
    assert html_chunks("") == []
    assert html_chunks(" \n\n \n") == []
    assert html_chunks("```\n```") == []
    assert plain_chunks("") == []


def test_a_limit_below_two_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        html_chunks("abc", 1)


def test_short_answer_is_one_chunk_equal_to_the_whole() -> None:
    assert html_chunks(ANSWERS[0]) == [to_html(ANSWERS[0])]


# --- Plain-text fallback ---------------------------------------------------------------------


def test_plain_chunks_remove_markup_and_keep_code() -> None:
    markdown = (
        "# Title\n\n**bold** _it_ <b>raw</b> a < b & c [docs](https://e.com/x) <https://e.com>\n\n"
        "> quoted\n\n- item\n\n```python\nif a < b and c & d:\n    pass\n```"
    )
    assert plain_chunks(markdown) == [
        "Title\n\nbold it <b>raw</b> a < b & c docs (https://e.com/x) https://e.com\n\n"
        "> quoted\n\n• item\n\nif a < b and c & d:\n    pass"
    ]


def test_plain_chunks_split_like_html_chunks() -> None:
    chunks = plain_chunks(LONG_ANSWER)
    assert len(chunks) == len(html_chunks(LONG_ANSWER))
    assert all(utf16(chunk) <= TELEGRAM_TEXT_LIMIT for chunk in chunks)
    lines = [line for chunk in chunks for line in chunk.split("\n") if "total_" in line]
    assert lines == CODE_LINES
    assert squeezed("".join(chunks)) == squeezed(telegram_text(to_html(LONG_ANSWER)))
