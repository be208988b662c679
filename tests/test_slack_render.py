"""Model Markdown to Slack mrkdwn, and splitting it into blocks and messages (SPEC §4, §9).

Every output goes through ``slack_text``, a checker that reads mrkdwn the way Slack parses
its control characters and fails on anything that could misparse: an unbalanced code fence,
a stray ``<``, ``>`` or ``&``, a link to an unsafe target, or a mass mention.
"""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bots.slack.render import (
    BLOCKS_PER_MESSAGE,
    MESSAGE_TEXT_LIMIT,
    SECTION_TEXT_LIMIT,
    _messages,
    escape,
    fallback_text,
    message_blocks,
    mrkdwn_chunks,
    plain_chunks,
    to_mrkdwn,
)

ZWSP = "\u200b"
WJ = "\u2060"

# --- A checker that reads mrkdwn as Slack does -----------------------------------------------

_LINK = re.compile(r"<((?:https?://[^\s|<>/]+|mailto:[^\s|<>]+)[^\s|<>]*)(?:\|([^|<>\n]+))?>")
_ENTITY = re.compile(r"&(?:amp|lt|gt);")
_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">"}
_MASS_MENTION = re.compile(r"@(?:here|channel|everyone)", re.IGNORECASE)
_FENCE_LEAD = re.compile(r" *(?:(?:[•◦▪]|[0-9]+\.) )?")


def slack_text(message: str) -> str:
    """Return the text Slack shows for ``message``; fail where Slack could misread it.

    Checks that code fences stand alone (after a quote mark, a list marker or indentation)
    and pair up,
    that no other run of backticks exists and inline code backticks pair up on each line,
    that ``>`` is raw only as a line's quote mark, that every ``&`` starts an entity and
    every ``<`` a link to an http(s) or mailto target, and that no mass mention remains.
    Markers (``*``, ``_``, ``~``, backticks) and zero-width characters are left in.
    """
    shown: list[str] = []
    in_code = False
    for raw in message.split("\n"):
        line = raw
        if line.startswith(">"):
            assert line == ">" or line.startswith("> "), f"bad quote mark in {raw!r}"
            line = line[2:]
        if line.endswith("```"):
            lead = line.removesuffix("```")
            assert _FENCE_LEAD.fullmatch(lead), f"fence not alone in {raw!r}"
            assert not (in_code and lead.strip()), f"closing fence after text in {raw!r}"
            in_code = not in_code
            shown.append(lead)
            continue
        assert "``" not in line, f"backtick run in {raw!r}"
        if in_code:
            assert "<" not in line, f"link or '<' in code: {raw!r}"
        else:
            assert line.count("`") % 2 == 0, f"unpaired backtick in {raw!r}"
        shown.append(_decode(line, links=not in_code))
    assert not in_code, "unclosed code fence"
    text = "\n".join(shown)
    assert not _MASS_MENTION.search(text), f"mass mention in {text!r}"
    return text


def _decode(text: str, *, links: bool) -> str:
    out: list[str] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "<":
            link = _LINK.match(text, position)
            assert links and link, f"stray '<' at {position}: {text[position : position + 40]!r}"
            target, label = link.groups()
            _decode(target, links=False)
            out.append(_decode(label, links=False) if label else target)
            position = link.end()
        elif char == "&":
            entity = _ENTITY.match(text, position)
            assert entity, f"bare '&' at {position}: {text[position : position + 20]!r}"
            out.append(_ENTITIES[entity.group()])
            position = entity.end()
        else:
            assert char != ">", f"raw '>' at {position}: {text!r}"
            out.append(char)
            position += 1
    return "".join(out)


def squeezed(text: str) -> str:
    """Text without what a cut may repeat or drop: whitespace, markers, zero-width characters,
    quote marks and bullets (nested quote marks repeat on every line of a cut line). A link
    too long for a chunk shows its label as text, with "|" where the link had a stand-in."""
    return re.sub(rf"[\s*_~`>•◦▪{ZWSP}{WJ}]", "", text).replace("\u2223", "|")


def section_text(block: dict[str, object]) -> str:
    """The mrkdwn of a section block, checking the block's shape."""
    assert block.keys() == {"type", "text"}
    assert block["type"] == "section"
    text = block["text"]
    assert isinstance(text, dict)
    assert text.keys() == {"type", "text"}
    assert text["type"] == "mrkdwn"
    assert isinstance(text["text"], str)
    return text["text"]


def fences_balanced(chunk: str) -> bool:
    return chunk.count("```") % 2 == 0


def check_chunks(markdown: str, chunks: list[str], limit: int) -> None:
    """Each chunk is valid alone, within the limit and not empty; together they keep the text."""
    texts = [slack_text(chunk) for chunk in chunks]
    for chunk, text in zip(chunks, texts, strict=True):
        assert len(chunk) <= limit, (len(chunk), chunk)
        assert text.replace(ZWSP, "").replace(WJ, "").strip(), f"empty chunk {chunk!r}"
        assert fences_balanced(chunk)
    assert squeezed("".join(texts)) == squeezed(slack_text(to_mrkdwn(markdown)))


def test_checker_rejects_what_slack_would_misread() -> None:
    for bad in [
        "a & b",
        "a < b",
        "a > b",
        ">> quote",
        "```\ncode",
        "text ```\ncode\n```",
        "`unpaired",
        "``x``",
        "<javascript:alert(1)|x>",
        "<https://e.com|a|b>",
        "<!channel>",
        "ping @here",
        "&nbsp;",
        "```\n<https://e.com>\n```",
    ]:
        with pytest.raises(AssertionError):
            slack_text(bad)
    assert slack_text("> *a* &lt; <https://e.com/?a=1&amp;b|x &amp; y>") == "*a* < x & y"
    assert slack_text("• ```\na &gt; b\n```") == "• \na > b\n"


# --- Rendering: each construct ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**bold** and __bold__", "*bold* and *bold*"),
        ("*em* and _em_", "_em_ and _em_"),
        ("~~gone~~", "~gone~"),
        ("***both***", "_*both*_"),
        ("*a **b** c*", "_a *b* c_"),
        ("**a\nb**", "*a*\n*b*"),
        ("`a < b & c`", "`a &lt; b &amp; c`"),
        ("``a`b``", "`a\u02cbb`"),
        ("[docs](https://e.com/a?b=1&c=2)", "<https://e.com/a?b=1&amp;c=2|docs>"),
        ("[a|b](https://e.com/x|y)", "<https://e.com/x%7Cy|a\u2223b>"),
        ("[a <b>](https://e.com/a>b)", "<https://e.com/a%3Eb|a &lt;b&gt;>"),
        ("[link](<https://e.com/a b>)", "<https://e.com/a%20b|link>"),
        ('[q](https://e.com/"x")', "<https://e.com/%22x%22|q>"),
        ("[mail](mailto:me@e.com)", "<mailto:me@e.com|mail>"),
        ("<https://e.com>", "<https://e.com>"),
        ("<me@e.com>", "<mailto:me@e.com|me@e.com>"),
        ("[**bold** link](https://e.com)", "<https://e.com|bold link>"),
        ("**[bold link](https://e.com)**", "*<https://e.com|bold link>*"),
        ("[`code`](https://e.com)", "<https://e.com|code>"),
        ("[a ``` b](https://e.com)", "<https://e.com|a \u02cb\u02cb\u02cb b>"),
        ("[](https://e.com)", "<https://e.com>"),
        ("# Title\ntext", "*Title*\n\ntext"),
        ("## **Bold** title\n\ntext", "*Bold title*\n\ntext"),
        ("# `x` and _y_", "*`x` and _y_*"),
        ("Title\n=====", "*Title*"),
        ("one\n\ntwo", "one\n\ntwo"),
        ("soft\nbreak", "soft\nbreak"),
        ("hard  \nbreak", "hard\nbreak"),
        ("hard\\\nbreak", "hard\nbreak"),
        ("- a\n- b", "• a\n• b"),
        ("* a\n* b\n  * c\n    * d\n* e", "• a\n• b\n  ◦ c\n    ▪ d\n• e"),
        ("1. a\n2. b\n   1. c", "1. a\n2. b\n   1. c"),
        ("3. three\n4. four", "3. three\n4. four"),
        ("9. nine\n10. ten\n    more", "9. nine\n10. ten\n    more"),
        ("- a\n\n- b", "• a\n\n• b"),
        ("- a\n  continued", "• a\n  continued"),
        ("- ", "•"),
        ("- ```sh\n  ls\n    -la\n  ```", "• ```\nls\n  -la\n```"),
        ("1. x\n\n   ```\n   code\n   ```", "1. x\n\n   ```\ncode\n```"),
        ("> quoted **text**", "> quoted *text*"),
        ("> one\n>\n> two", "> one\n>\n> two"),
        ("> outer\n>\n>> inner", "> outer\n>\n> &gt; inner"),
        ("> - item\n> - item", "> • item\n> • item"),
        ("> ```\n> a < b\n> ```", "> ```\n> a &lt; b\n> ```"),
        ("> > ```\n> > code\n> > ```\n> > text", "> ```\n> code\n> ```\n> &gt;\n> &gt; text"),
        ("a\n\n---\n\nb", "a\n\n———\n\nb"),
        ("***", "———"),
        ("```python\nif a < b:\n    print('&')\n```", "```\nif a &lt; b:\n    print('&amp;')\n```"),
        ("```\nplain\n```", "```\nplain\n```"),
        ("    indented\n    code", "```\nindented\ncode\n```"),
        ("```\na\n```\n```\nb\n```", "```\na\n```\n\n```\nb\n```"),
        (
            "| Name | Qty |\n|:-----|----:|\n| apple | 3 |\n| kiwi & co | 12 |",
            "```\nName       Qty\n---------  ---\napple        3\nkiwi &amp; co   12\n```",
        ),
        (
            "| a | b |\n|:-:|---|\n| 李子 | `x` |\n| [l](https://e.com) | **b** |",
            "```\n a    b\n----  -\n李子  x\n l    b\n```",
        ),
        ("![a cat](https://e.com/cat.png)", "<https://e.com/cat.png|a cat>"),
        ("![](https://e.com/cat.png)", "<https://e.com/cat.png>"),
        ("", ""),
        ("  \n\n ", ""),
    ],
)
def test_markdown_constructs(markdown: str, expected: str) -> None:
    rendered = to_mrkdwn(markdown)
    assert rendered == expected
    slack_text(rendered)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        # Slack renders a marker only away from letters: a zero-width space parts them.
        ("foo**bar**baz", f"foo{ZWSP}*bar*{ZWSP}baz"),
        ("un*believ*able", f"un{ZWSP}_believ_{ZWSP}able"),
        ("a ~~b~~c", f"a ~b~{ZWSP}c"),
        ("中**文**字", f"中{ZWSP}*文*{ZWSP}字"),
        ("x`code`y", f"x{ZWSP}`code`{ZWSP}y"),
        ("2**10**", f"2{ZWSP}*10*"),
        ("**bold**.", "*bold*."),
        ("(**bold**) and **bold**, *em*!", "(*bold*) and *bold*, _em_!"),
        ("**a**_b_", "*a*_b_"),
        ("***a** b*", "_*a* b_"),
        # Underscores and asterisks inside words are not emphasis in Markdown or Slack.
        ("snake_case_name", "snake_case_name"),
        ("2 * 3 * 4", "2 * 3 * 4"),
    ],
)
def test_markers_never_glue_to_letters(markdown: str, expected: str) -> None:
    rendered = to_mrkdwn(markdown)
    assert rendered == expected
    slack_text(rendered)


@pytest.mark.parametrize(
    ("markdown", "expected"),
    [
        ("**unbalanced bold", "**unbalanced bold"),
        ("*a **b* c**", "_a b c_"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("<b>not a tag</b>", "&lt;b&gt;not a tag&lt;/b&gt;"),
        ("a < b && c > d", "a &lt; b &amp;&amp; c &gt; d"),
        ("&lt;b&gt; AT&amp;T &copy; &#60;", "&lt;b&gt; AT&amp;T © &lt;"),
        ("`&lt;`", "`&amp;lt;`"),
        ("<!channel> <!here|here> <@U123>", "&lt;!channel&gt; &lt;!here|here&gt; &lt;@U123&gt;"),
        ("&lt;!everyone&gt;", "&lt;!everyone&gt;"),
        ("@here @Channel @EVERYONE", f"@{WJ}here @{WJ}Channel @{WJ}EVERYONE"),
        ("hi @here!", f"hi @{WJ}here!"),
        ("**@channel**", f"*@{WJ}channel*"),
        ("`@here`", f"`@{WJ}here`"),
        ("```\nsay @everyone\n```", f"```\nsay @{WJ}everyone\n```"),
        ("[@here](https://e.com)", f"<https://e.com|@{WJ}here>"),
        ("| @here |\n|---|\n| x |", f"```\n@{WJ}here\n-----\nx\n```"),
        ("mail bob@example.com", "mail bob@example.com"),
        ("[link](javascript:alert(1))", "link"),
        ("[**bold** link](javascript:alert(1))", "*bold* link"),
        ("[data](data:text/html;base64,PHNjcmlwdD4=)", "data"),
        ("![img](javascript:alert(1))", "img"),
        ("[ftp](ftp://e.com) [rel](/path) [bare](http:e)", "ftp rel bare"),
        (
            "[x](https://e.com/a|b>c) [y](https://e.com/%7C)",
            "<https://e.com/a%7Cb%3Ec|x> <https://e.com/%7C|y>",
        ),
        ("<https://e.com/a|b>", "<https://e.com/a%7Cb|https://e.com/a\u2223b>"),
        ("[half a link](https://e.c", "[half a link](https://e.c"),
        ("````\n```\ninner\n```\n````", f"```\n`{ZWSP}`{ZWSP}`\ninner\n`{ZWSP}`{ZWSP}`\n```"),
        ("```python\ndef f():\n    return 1 < 2", "```\ndef f():\n    return 1 &lt; 2\n```"),
        ("```", ""),
        ("```\n\n\n```", ""),
        ("`unclosed code", "\u02cbunclosed code"),
        ("use ``` to open code", "use \u02cb\u02cb\u02cb to open code"),
        ("> > > > deep", "> &gt; &gt; &gt; deep"),
        (">>> slack quote", "> &gt; &gt; slack quote"),
        ("| not | a table", "| not | a table"),
        ("smile 😀 and 👩\u200d👩\u200d👧", "smile 😀 and 👩\u200d👩\u200d👧"),
    ],
)
def test_hostile_input_is_shown_safely(markdown: str, expected: str) -> None:
    rendered = to_mrkdwn(markdown)
    assert rendered == expected
    slack_text(rendered)


def test_escape_only_touches_slacks_control_characters() -> None:
    assert escape('<b>Tom & "Jerry" *\'s*</b>') == '&lt;b&gt;Tom &amp; "Jerry" *\'s*&lt;/b&gt;'
    assert escape("&amp;") == "&amp;amp;"
    assert slack_text(escape("a < b && c > d <!here>")) == "a < b && c > d <!here>"


# --- Any prefix of a streamed answer is valid ------------------------------------------------

ANSWERS = [
    """# Sorting in Python

Use **`sorted()`** for a *new* list, or `list.sort()` to sort in place. See the
[docs](https://docs.python.org/3/howto/sorting.html) & <https://peps.python.org>.

## Example

```python
people = [("Ann", 31), ("Bob", 25)]
for name, age in sorted(people, key=lambda p: p[1]):
    print(f"{name} <{age}> | done")
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

That's it, @here! 😀
""",
    """Sure — here are three options 👍:

* **Option A**: fast, but uses ~~a lot~~ *some* memory
* **Option B**: uses `O(1)` memory
    * caveat: needs a < b && b > c
    * see ![diagram](https://e.com/d.png "Diagram")
* Option C, for every**one**

> Quote from the manual:
> > nested quote with `code`
>
> ```bash
> echo "$HOME" | grep -v '<none>'
> ```

Shell:

    $ make && make install

Done. <!channel> please review.
""",
    """Here is the HTML you asked for: <div class="x">hi</div> & <script>alert('x')</script>

````markdown
```js
console.log("nested fence")
```
````

**Warning*: unbalanced _markup__ and a [half link](javascript:void(0)) and [ok](https://e.com/a_(b)).
Also [pipes](https://e.com/a|b) and [angles](https://e.com/<x>) and &lt;already&gt; &amp; escaped.
- [ ] task
- [x] done

```unknown lang! with spaces
<tag attr="v"> `tick` ``double``
```
""",
]


@pytest.mark.parametrize("answer", ANSWERS)
def test_every_prefix_of_an_answer_renders_valid_mrkdwn(answer: str) -> None:
    for end in range(len(answer) + 1):
        prefix = answer[:end]
        try:
            slack_text(to_mrkdwn(prefix))
        except AssertionError as error:
            raise AssertionError(f"prefix {prefix!r}: {error}") from error


@pytest.mark.parametrize("answer", ANSWERS)
def test_answers_render_all_their_text(answer: str) -> None:
    text = slack_text(to_mrkdwn(answer))
    for word in ("Sorting", "sorted(people", "stable", "Option", "echo", "make", "nested fence"):
        if word in answer:
            assert word in text


def test_short_answer_is_one_chunk_equal_to_the_whole() -> None:
    assert mrkdwn_chunks(ANSWERS[0]) == [to_mrkdwn(ANSWERS[0])]
    assert message_blocks(ANSWERS[0]) == [
        [{"type": "section", "text": {"type": "mrkdwn", "text": to_mrkdwn(ANSWERS[0])}}]
    ]


# --- Properties ------------------------------------------------------------------------------

_MARKDOWN_PIECES = st.sampled_from(
    [
        "a", "word", " ", "\n", "\n\n", "*", "**", "_", "__", "~~", "`", "```", "```python\n",
        "    ", "#", "# ", "> ", ">>> ", "- ", "1. ", "|", "---", "[", "]", "(", ")",
        "https://e.com", "javascript:x", "<", ">", "&", "&amp;", "&lt;", "&#", ";", "!", "\\",
        "😀", "👩\u200d👩\u200d👧", "🇫🇷", "é", "e\u0301", "\u200d", "<b>", "<!channel>",
        "@here", "@", "here", "@everyone", '"', "![", "<https://e.com>", "<a@b.c>", "|---|",
        "\n| a | b |", "1) ", "~", "李", "x|y", "](https://e.com/a|b>c)",
    ]
)  # fmt: skip
_MARKDOWN = st.lists(_MARKDOWN_PIECES, max_size=80).map("".join)
_PROPERTY = settings(max_examples=200, deadline=None, database=None)


def _prefixes() -> st.SearchStrategy[str]:
    return st.tuples(st.sampled_from(ANSWERS), st.integers(min_value=0, max_value=2000)).map(
        lambda pair: pair[0][: pair[1]]
    )


@_PROPERTY
@given(markdown=st.one_of(_MARKDOWN, _prefixes(), st.text(max_size=200)))
def test_any_markdown_renders_valid_mrkdwn(markdown: str) -> None:
    rendered = to_mrkdwn(markdown)
    slack_text(rendered)
    assert fences_balanced(rendered)


@_PROPERTY
@given(
    markdown=st.one_of(_MARKDOWN, _prefixes()),
    limit=st.integers(min_value=16, max_value=120),
)
def test_any_markdown_splits_into_valid_chunks(markdown: str, limit: int) -> None:
    check_chunks(markdown, mrkdwn_chunks(markdown, limit), limit)
    for chunk in plain_chunks(markdown, limit):
        assert chunk.strip()
        assert len(chunk) <= limit
        _decode(chunk, links=False)
        assert not _MASS_MENTION.search(chunk)


@settings(max_examples=12, deadline=None, database=None)
@given(
    pieces=st.lists(st.one_of(_MARKDOWN, _prefixes()), min_size=1, max_size=4),
    size=st.integers(min_value=MESSAGE_TEXT_LIMIT, max_value=2 * MESSAGE_TEXT_LIMIT),
)
def test_message_blocks_obey_slacks_message_limits(pieces: list[str], size: int) -> None:
    markdown = "\n\n".join(pieces)
    markdown = markdown * (size // (len(markdown) + 1) + 1)
    messages = message_blocks(markdown)
    chunks = []
    for message in messages:
        assert 0 < len(message) <= BLOCKS_PER_MESSAGE
        texts = [section_text(block) for block in message]
        assert sum(map(len, texts)) <= MESSAGE_TEXT_LIMIT
        chunks.extend(texts)
    assert chunks == mrkdwn_chunks(markdown)


# --- Splitting -------------------------------------------------------------------------------


def _paragraphs(count: int, seed: str) -> list[str]:
    return [
        f"Paragraph {seed}{n} explains *one* idea with **some** detail & a <tag>. "
        + " ".join(f"w{seed}{n}x{k}" for k in range(60))
        for n in range(count)
    ]


CODE_LINES = [
    f"    total_{n} = compute({n}) if a < b else {n} & 0xff  # step {n}" for n in range(110)
]
CODE = "\n".join(CODE_LINES)
LONG_ANSWER = "\n\n".join([*_paragraphs(10, "a"), f"```python\n{CODE}\n```", *_paragraphs(2, "b")])


def test_long_answer_splits_into_valid_chunks() -> None:
    assert len(LONG_ANSWER) >= 10_000
    assert len(CODE) >= 2 * SECTION_TEXT_LIMIT
    chunks = mrkdwn_chunks(LONG_ANSWER)
    check_chunks(LONG_ANSWER, chunks, SECTION_TEXT_LIMIT)
    assert len(chunks) >= 4


def test_long_code_block_becomes_several_complete_blocks() -> None:
    code_chunks = [chunk for chunk in mrkdwn_chunks(LONG_ANSWER) if "total_" in chunk]
    assert len(code_chunks) >= 3
    lines: list[str] = []
    for chunk in code_chunks:
        assert chunk.count("```") == 2
        blocks = re.findall(r"^```\n(.*)\n```$", chunk, re.DOTALL | re.MULTILINE)
        assert len(blocks) == 1
        lines += blocks[0].split("\n")
    # Cut only between lines: every line whole, none lost, in order.
    assert [line.replace("&lt;", "<").replace("&amp;", "&") for line in lines] == CODE_LINES


def test_split_falls_between_paragraphs() -> None:
    paragraphs = _paragraphs(10, "a")
    chunks = mrkdwn_chunks("\n\n".join(paragraphs))
    assert len(chunks) >= 2
    rendered = [to_mrkdwn(paragraph) for paragraph in paragraphs]
    for chunk in chunks:
        parts = chunk.split("\n\n")
        assert parts == rendered[: len(parts)]
        del rendered[: len(parts)]
    assert rendered == []


def test_formatting_is_closed_and_reopened_at_a_cut() -> None:
    markdown = "> **" + " ".join(f"word{n}" for n in range(40)) + "** and more"
    chunks = mrkdwn_chunks(markdown, 50)
    check_chunks(markdown, chunks, 50)
    assert len(chunks) > 3
    for chunk in chunks[:-1]:
        assert chunk.startswith("> *word")
        assert chunk.endswith("*")
    assert chunks[-1].endswith("* and more")


def test_a_cut_never_falls_inside_a_link_or_an_entity() -> None:
    markdown = " ".join(f"[site {n}](https://e.com/{n}?a=1&b=2) &<>" for n in range(30))
    chunks = mrkdwn_chunks(markdown, 60)
    check_chunks(markdown, chunks, 60)
    links = [link for chunk in chunks for link in re.findall(r"<[^>]*>", chunk)]
    assert links == [f"<https://e.com/{n}?a=1&amp;b=2|site {n}>" for n in range(30)]


def test_a_link_longer_than_the_limit_falls_back_to_its_text() -> None:
    markdown = f"[label](https://e.com/{'x' * 40})"
    assert mrkdwn_chunks(markdown, 30) == ["label"]


def test_a_code_line_longer_than_the_limit_is_cut_inside_fences() -> None:
    markdown = "```\n" + "x" * 10 + " " + "y" * 30 + "\n```"
    chunks = mrkdwn_chunks(markdown, 30)
    check_chunks(markdown, chunks, 30)
    assert chunks == [
        "```\n" + "x" * 10 + " \n```",
        "```\n" + "y" * 22 + "\n```",
        "```\n" + "y" * 8 + "\n```",
    ]
    # Leading indentation alone is no place to cut.
    assert (
        mrkdwn_chunks("```\n        " + "z" * 30 + "\n```", 30)[0]
        == "```\n" + " " * 8 + "z" * 14 + "\n```"
    )


def test_list_items_keep_their_indentation_when_cut() -> None:
    markdown = "- " + " ".join(["word"] * 12)
    chunks = mrkdwn_chunks(markdown, 20)
    assert chunks == [
        "• word word word",
        "  word word word",
        "  word word word",
        "  word word word",
    ]


@pytest.mark.parametrize(
    ("markdown", "sizes"),
    [
        ("a" * 3000, [3000]),
        ("a" * 3001, [3000, 1]),
        ("a" * 7000, [3000, 3000, 1000]),
        ("word " * 599 + "word", [2999]),
        ("word " * 600 + "w", [2999, 1]),
        ("a" * 1499 + "\n\n" + "b" * 1499, [3000]),
        ("a" * 1500 + "\n\n" + "b" * 1499, [1500, 1499]),
        ("line\n" * 599 + "xy", [2997]),
        ("line\n" * 600 + "xy", [2999, 2]),
        ("😀" * 3500, [3000, 500]),
        ("&" * 1000, [3000, 2000]),
        ("a" + "`" * 10, [11]),
    ],
)
def test_limit_edges(markdown: str, sizes: list[int]) -> None:
    chunks = mrkdwn_chunks(markdown)
    check_chunks(markdown, chunks, SECTION_TEXT_LIMIT)
    assert [len(chunk) for chunk in chunks] == sizes


def test_limit_is_a_parameter() -> None:
    assert mrkdwn_chunks("abcdefghijklmnopqrstu", 16) == ["abcdefghijklmnop", "qrstu"]
    assert mrkdwn_chunks("ab cd ef gh ij kl mn", 16) == ["ab cd ef gh ij", "kl mn"]
    assert mrkdwn_chunks("&&&&", 16) == ["&amp;&amp;&amp;", "&amp;"]


@pytest.mark.parametrize(
    "cluster",
    [
        "👩\u200d👩\u200d👧",  # ZWJ sequence
        "👍🏽",  # skin tone
        "❤\ufe0f",  # variation selector
        "🇫🇷",  # flag
        "e\u0301\u0302",  # combining marks
        "1\ufe0f\u20e3",  # keycap
    ],
)
def test_a_hard_cut_keeps_grapheme_clusters_whole(cluster: str) -> None:
    chunks = mrkdwn_chunks(cluster * 40, 17)  # no cluster length divides 17
    assert "".join(chunks) == cluster * 40
    for chunk in chunks:
        assert chunk.replace(cluster, "") == ""


def test_nothing_to_send_gives_no_chunks_or_messages() -> None:
    for markdown in ("", " \n\n \n", "```\n```", "#"):
        assert mrkdwn_chunks(markdown) == []
        assert plain_chunks(markdown) == []
        assert message_blocks(markdown) == []
        assert fallback_text(markdown) == ""


def test_a_limit_below_sixteen_is_refused() -> None:
    with pytest.raises(ValueError, match="limit"):
        mrkdwn_chunks("abc", 15)
    with pytest.raises(ValueError, match="limit"):
        plain_chunks("abc", 0)


# --- Messages --------------------------------------------------------------------------------


def test_a_long_reply_is_spread_over_messages_within_limits() -> None:
    markdown = "\n\n".join([LONG_ANSWER] * 4)
    messages = message_blocks(markdown)
    assert len(messages) >= 3
    for message in messages:
        texts = [section_text(block) for block in message]
        assert sum(map(len, texts)) <= MESSAGE_TEXT_LIMIT
        assert all(len(text) <= SECTION_TEXT_LIMIT for text in texts)
        assert len(message) <= BLOCKS_PER_MESSAGE
    # Each message is full: the next one's first block would not have fitted.
    for message, following in itertools.pairwise(messages):
        used = sum(len(section_text(block)) for block in message)
        assert used + len(section_text(following[0])) > MESSAGE_TEXT_LIMIT


def test_messages_hold_at_most_fifty_blocks() -> None:
    # Chunks from Markdown are too long to reach fifty blocks within the text limit; the
    # block count is still Slack's rule, so the grouping is checked on short chunks.
    assert [len(message) for message in _messages(["x"] * 120)] == [50, 50, 20]
    assert [len(message) for message in _messages(["x" * 5000] * 5)] == [2, 2, 1]
    assert _messages([]) == []


# --- Plain-text fallback ---------------------------------------------------------------------


def test_plain_chunks_remove_markers_and_keep_text_escaped() -> None:
    markdown = (
        "# Title\n\n**bold** _it_ ~~s~~ `co<de>` <b>raw</b> a < b & c [docs](https://e.com/x) "
        "<https://e.com> <me@e.com> @here\n\n> quoted\n\n- item\n\n"
        "```python\nif a < b:\n    pass\n```"
    )
    assert plain_chunks(markdown) == [
        "Title\n\nbold it s co&lt;de&gt; &lt;b&gt;raw&lt;/b&gt; a &lt; b &amp; c "
        f"docs (https://e.com/x) https://e.com me@e.com @{WJ}here\n\n&gt; quoted\n\n• item\n\n"
        "if a &lt; b:\n    pass"
    ]


def test_plain_chunks_cut_between_lines_and_keep_all_text() -> None:
    chunks = plain_chunks(LONG_ANSWER)
    assert len(chunks) >= 4
    assert all(len(chunk) <= SECTION_TEXT_LIMIT for chunk in chunks)
    lines = [line for chunk in chunks for line in chunk.split("\n") if "total_" in line]
    assert [line.replace("&lt;", "<").replace("&amp;", "&") for line in lines] == CODE_LINES
    shown = "".join(_decode(chunk, links=False) for chunk in chunks)
    assert squeezed(shown) == squeezed(slack_text(to_mrkdwn(LONG_ANSWER)))


def test_fallback_text_is_one_plain_line() -> None:
    assert fallback_text("# Hi\n\n**Bold** & [docs](https://e.com)\n\n- a\n- b") == (
        "Hi Bold &amp; docs (https://e.com) • a • b"
    )
    assert fallback_text("ping @channel") == f"ping @{WJ}channel"


def test_fallback_text_is_cut_at_a_word_with_an_ellipsis() -> None:
    markdown = " ".join(f"word{n}" for n in range(1000))
    text = fallback_text(markdown)
    assert len(text) <= 3000
    assert text.endswith("…")
    words = text.removesuffix("…").split(" ")
    assert words == [f"word{n}" for n in range(len(words))]
    # The cut is at the last word that fits: one more word and the ellipsis would not.
    assert len(" ".join([*words, f"word{len(words)}"])) + 1 > 3000
    assert fallback_text("alpha beta gamma", 12) == "alpha beta…"
    assert fallback_text("alpha beta gamma", 16) == "alpha beta gamma"


def test_fallback_text_refuses_a_limit_below_one() -> None:
    with pytest.raises(ValueError, match="limit"):
        fallback_text("abc", 0)
    assert fallback_text("abc", 1) == "…"


def test_fallback_text_hard_cut_keeps_entities_and_clusters_whole() -> None:
    assert fallback_text("a&&&&&", 12) == "a&amp;&amp;…"
    assert fallback_text("👩\u200d👩\u200d👧" * 3, 12) == "👩\u200d👩\u200d👧" * 2 + "…"
