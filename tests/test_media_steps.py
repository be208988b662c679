"""The pure parts of the media steps: what of a reply is read aloud, and how it is cut into
pieces the speech API takes."""

from __future__ import annotations

import pytest

from core.media.steps import speakable, speech_chunks


def test_speakable_reads_words_not_markup() -> None:
    markdown = (
        "# Plan\n\n**Bold** and _italic_ with `code` and snake_case.\n\n"
        "```python\nprint('hi')\n```\n\n"
        "See [the docs](https://example.com/docs) | a table |\n> quoted"
    )

    spoken = speakable(markdown)

    assert spoken.splitlines() == [
        "Plan",
        "Bold and italic with code and snake_case.",
        "(code shown in the message)",
        "See the docs a table",
        "quoted",
    ]
    assert "https://" not in spoken and "print" not in spoken


def test_speech_chunks_cut_between_sentences_within_the_limit() -> None:
    sentence = "This is one sentence of the reply."
    text = " ".join([sentence] * 300)  # about 10,000 characters

    chunks = speech_chunks(text, 4096)

    assert len(chunks) == 3
    assert all(len(chunk) <= 4096 for chunk in chunks)
    assert all(chunk.endswith(".") for chunk in chunks)  # never cut mid-sentence
    assert " ".join(chunks) == text


@pytest.mark.parametrize("limit", [5, 17, 100])
def test_speech_chunks_cut_long_words_only_when_they_must(limit: int) -> None:
    text = "short " + "x" * 250 + " words after it"

    chunks = speech_chunks(text, limit)

    assert all(0 < len(chunk) <= limit for chunk in chunks)
    assert "".join(chunks).replace(" ", "") == text.replace(" ", "")


def test_nothing_to_say_gives_no_chunks() -> None:
    assert speech_chunks(speakable("```\nonly code\n```"), 4096) == ["(code shown in the message)"]
    assert speech_chunks("   \n\n ", 4096) == []
