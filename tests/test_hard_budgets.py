"""Hard budgets end to end (SPEC §6): through the real composition root against the fake
OpenAI, a call is made only if it fits in what is left, a chat call's output is capped to
what the money left pays for, and a refusal says what is left and when it resets."""

from __future__ import annotations

import asyncio
import re
from dataclasses import replace
from pathlib import Path

import pytest

from bots.bootstrap import App
from core.conversation.commands import parse_command
from core.conversation.events import (
    Notice,
    ReplyFailed,
    ReplyFinished,
    Transcribed,
    VoiceReady,
)
from core.conversation.messages import ConversationKey, IncomingMessage, UserRef
from core.conversation.pipeline import Delivery
from core.media.ports import Attachment
from core.models.llm import MIN_OUTPUT_TOKENS, Usage
from core.money.accounting import Caller
from core.money.budgets import Budget, BudgetStatus, Payer, Scope
from core.money.periods import Period
from core.money.prices import load_prices
from core.money.pricing import PER_MILLION, token_cost
from tests.conftest import AppFactory
from tests.fakes.openai_server import FakeOpenAI, RecordedRequest, Scripted
from tests.fakes.sinks import RecordingSink
from tests.make_audio import tone_segments
from tests.make_images import dall_e_server_models

KEY = ConversationKey("console", place="room-1")
ADA = UserRef("console", "ada", username="ada")
PAYER = Payer.of(ADA, KEY)
PRICES = load_prices()
LONG_ANSWER = "All work and no play makes a long answer. " * 100  # about 1,000 tokens

# Per API: a shipped model, its path, the field that caps its output, and a budget that
# pays for the prompt and some, not all, of the answer.
APIS = {
    "responses": ("gpt-4.1-mini", "/v1/responses", "max_output_tokens", 200),
    "chat": ("gpt-4o", "/v1/chat/completions", "max_completion_tokens", 2_000),
}
RESETS = r"it resets at 00:00 UTC \(in (\d+ h ?)?(\d+ min)?\)\. An admin can raise it with /quota\."


@pytest.fixture(params=sorted(APIS))
def api(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def ask(app: App, text: str, key: ConversationKey = KEY) -> RecordingSink:
    """Send ``text`` the way every channel does: through the inbound pipeline."""
    sink = RecordingSink()
    await app.pipeline.handle(Delivery(IncomingMessage(key, ADA, text), lambda _: sink))
    return sink


async def status(app: App) -> list[BudgetStatus]:
    return await app.storage.budgets.status(PAYER, app.storage.clock.now(), app.settings.zone)


async def spend(app: App, micros: int) -> None:
    """Record earlier spending this period, as a settled call would."""
    ledger, now = app.storage.budgets, app.storage.clock.now()
    await ledger.settle(await ledger.reserve(PAYER, micros, now, app.settings.zone), micros)


def output_cap(request: RecordedRequest, field: str) -> int | None:
    assert request.body is not None
    cap = request.body.get(field)
    assert cap is None or isinstance(cap, int)
    return cap


async def test_a_millionth_of_a_dollar_refuses_the_very_next_message(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        await app.storage.budgets.set_budget(Budget(Scope.USER, ADA.principal, Period.DAILY, 1))
        refused = await ask(app, "hello")
        [after] = await status(app)
    assert isinstance(refused.final, ReplyFailed)
    assert re.fullmatch(
        r"Your daily budget of \$0\.000001 has \$0\.000001 left, not enough for this "
        rf"message; {RESETS}",
        refused.final.message,
    ), refused.final.message
    assert fake_openai.model_requests() == []  # no API call at all
    assert (after.spent_micros, after.reserved_micros) == (0, 0)


async def test_a_refusal_names_what_is_left_and_a_used_up_budget_says_so(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    async with make_app() as app:
        await app.choices.set_model(KEY, "gpt-4o")  # its prompt alone costs more than $0.0003
        await app.storage.budgets.set_budget(
            Budget(Scope.USER, ADA.principal, Period.DAILY, 500_000)
        )
        await spend(app, 499_700)
        little_left = await ask(app, "hello")
        await spend(app, 300)
        nothing_left = await ask(app, "hello again")
        command = parse_command("/usage")
        assert command is not None
        usage = await app.commands.run(KEY, command, caller=Caller(ADA))
    assert isinstance(little_left.final, ReplyFailed)
    assert re.fullmatch(
        r"Your daily budget of \$0\.50 has \$0\.0003 left, not enough for this message; " + RESETS,
        little_left.final.message,
    ), little_left.final.message
    assert isinstance(nothing_left.final, ReplyFailed)
    assert re.fullmatch(
        r"Your daily budget of \$0\.50 is used up; " + RESETS, nothing_left.final.message
    ), nothing_left.final.message
    assert fake_openai.model_requests() == []
    assert "of $0.50 spent" in usage.text and "$0.00 left" in usage.text  # /usage still works


async def test_a_small_budget_caps_the_answer_to_what_it_pays_for(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    model_id, path, field, limit = APIS[api]
    fake_openai.enqueue(Scripted(text=LONG_ANSWER, chunks=5, chunk_delay=0.2))
    async with make_app() as app:
        await app.choices.set_model(KEY, model_id)
        await app.storage.budgets.set_budget(Budget(Scope.USER, ADA.principal, Period.DAILY, limit))
        model = app.registry.model(model_id)
        sink = RecordingSink()
        delivery = Delivery(IncomingMessage(KEY, ADA, "tell me everything"), lambda _: sink)
        turn = asyncio.create_task(app.pipeline.handle(delivery))
        await sink.first_text.wait()
        [during] = await status(app)  # the call is under way
        await turn
        [after] = await status(app)
        conversation = await app.store.active_conversation(KEY)
        [row] = await app.store.usage(conversation.id)
    [request] = fake_openai.model_requests()
    cap = output_cap(request, field)
    reserved = during.reserved_micros
    one_more_token = -(-model.prices.output // PER_MILLION)
    assert request.path == path
    assert cap is not None and MIN_OUTPUT_TOKENS <= cap < model.max_output_tokens
    # All the money left is held, to within one more output token, and no more.
    assert limit - one_more_token < reserved <= limit
    # The API stopped at the cap; what it cost is at most what was held, to the micro-dollar.
    assert row.output_tokens == cap
    assert row.cost_micros == token_cost(
        model.prices, Usage(row.input_tokens, row.cached_input_tokens, row.output_tokens)
    )
    assert after.spent_micros == row.cost_micros <= reserved
    assert after.reserved_micros == 0
    finished, notice = sink.events[-2:]  # the note comes after the reply
    assert isinstance(finished, ReplyFinished)
    assert 0 < len(finished.text) <= 4 * cap < len(LONG_ANSWER)
    assert notice == Notice("(My answer was cut short: the budget had no room for more.)")


async def test_an_ample_budget_caps_at_the_model_maximum_and_no_budget_sends_no_cap(
    make_app: AppFactory, fake_openai: FakeOpenAI, api: str
) -> None:
    model_id, _, field, _ = APIS[api]
    async with make_app() as app:
        await app.choices.set_model(KEY, model_id)
        free = await ask(app, "no budget yet")
        await app.storage.budgets.set_budget(Budget(Scope.DEFAULT, "", Period.MONTHLY, 10**9))
        ample = await ask(app, "now with a budget")
        max_output = app.registry.model(model_id).max_output_tokens
    unbudgeted, budgeted = fake_openai.model_requests()
    assert output_cap(unbudgeted, field) is None
    assert output_cap(budgeted, field) == max_output
    assert free.final == ReplyFinished("Echo: no budget yet")
    assert ample.final == ReplyFinished("Echo: now with a budget")
    assert not [e for e in ample.events if isinstance(e, Notice)]


async def test_concurrent_turns_on_one_small_budget_never_overspend(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    model_id, _, field, _ = APIS["responses"]
    # The model's longest answer costs about $0.052: two turns may hold that much at once,
    # a third only what is left, and the others are refused while those are under way.
    limit = 150_000
    fake_openai.enqueue(*[Scripted(text=LONG_ANSWER, chunks=4, chunk_delay=0.1)] * 6)
    async with make_app() as app:
        max_output = app.registry.model(model_id).max_output_tokens
        keys = [ConversationKey("console", place=f"room-{n}") for n in range(6)]
        for key in keys:
            await app.choices.set_model(key, model_id)
        # A per-user budget, shared by the user's turns in six conversations at once.
        await app.storage.budgets.set_budget(Budget(Scope.USER, ADA.principal, Period.DAILY, limit))
        sinks = await asyncio.gather(*(ask(app, "tell me everything", key) for key in keys))
        [after] = await status(app)
        rows = [
            row
            for key in keys
            for row in await app.store.usage((await app.store.active_conversation(key)).id)
        ]
    ends = [next(e for e in s.events if isinstance(e, ReplyFinished | ReplyFailed)) for s in sinks]
    answered = [e for e in ends if isinstance(e, ReplyFinished)]
    refusals = [e.message for e in ends if isinstance(e, ReplyFailed)]
    caps = [output_cap(r, field) for r in fake_openai.model_requests()]
    assert len(answered) == len(rows) == len(caps) >= 2
    assert all(cap is not None and MIN_OUTPUT_TOKENS <= cap <= max_output for cap in caps)
    assert any(cap is not None and cap < max_output for cap in caps)  # sized to what was left
    assert len(answered) + len(refusals) == len(keys)
    assert all(re.search("not enough for this message|is used up", m) for m in refusals)
    assert after.spent_micros == sum(r.cost_micros for r in rows) <= limit
    assert after.reserved_micros == 0


# --------------------------------------------------------------------------- media


async def draw(app: App, prompt: str) -> RecordingSink:
    sink = RecordingSink()
    await app.assistant.draw_image(IncomingMessage(KEY, ADA, prompt), sink)
    return sink


async def test_a_picture_is_drawn_only_if_its_price_fits(
    make_app: AppFactory, fake_openai: FakeOpenAI, tmp_path: Path
) -> None:
    price = PRICES.image_cost("dall-e-3", "1024x1024", "hd")
    async with make_app(
        SWITCHBOARD_IMAGE_MODEL="dall-e-3",
        SWITCHBOARD_IMAGE_QUALITY="hd",
        SWITCHBOARD_MODELS_FILE=dall_e_server_models(tmp_path),
    ) as app:
        own = Budget(Scope.USER, ADA.principal, Period.TOTAL, price + 99)
        await app.storage.budgets.set_budget(own)
        await spend(app, 100)  # one micro-dollar short of the price is left
        short = await draw(app, "a castle")
        await app.storage.budgets.set_budget(replace(own, limit_micros=price + 100))
        exact = await draw(app, "a castle")
        [after] = await status(app)
    assert price == 80_000
    assert short.final == ReplyFailed(
        "Your total budget of $0.080099 has $0.079999 left, not enough for this picture; "
        "it never resets. An admin can raise it with /quota."
    )
    assert len(fake_openai.images) == 1  # only the one that fitted
    assert isinstance(exact.final, ReplyFinished)
    assert (after.spent_micros, after.reserved_micros, after.left_micros) == (price + 100, 0, 0)


async def test_audio_is_transcribed_only_if_its_price_fits(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    note = tone_segments([(0, 0.3), (440, 1.0), (0, 0.3)])  # 1.6 s: billed as 2 at the most
    price = PRICES.transcription_cost("whisper-1", 2)
    async with make_app(SWITCHBOARD_TRANSCRIPTION_MODEL="whisper-1") as app:
        own = Budget(Scope.USER, ADA.principal, Period.DAILY, price - 1)
        await app.storage.budgets.set_budget(own)
        sink = await hear(app, note)
        await app.storage.budgets.set_budget(replace(own, limit_micros=10**6))
        heard = await hear(app, note)
        [after] = await status(app)
    assert isinstance(sink.final, ReplyFailed)
    assert sink.final.message.startswith(
        "Your daily budget of $0.000199 has $0.000199 left, not enough for transcribing this "
        "audio; it resets at 00:00 UTC"
    )
    assert len(fake_openai.transcriptions) == 1  # only the second time
    assert heard.events[0] == Transcribed("tone440")
    assert after.reserved_micros == 0


async def hear(app: App, note: bytes) -> RecordingSink:
    sink = RecordingSink()
    voice = Attachment(note, "voice.ogg", "audio/ogg")
    await app.assistant.answer_message(IncomingMessage(KEY, ADA, "", attachments=(voice,)), sink)
    return sink


async def test_a_spoken_reply_is_refused_when_its_price_does_not_fit(
    make_app: AppFactory, fake_openai: FakeOpenAI
) -> None:
    answer = "Read this aloud, please. " * 1_600  # 40,000 characters
    fake_openai.enqueue(Scripted(text=answer, usage=(10, 0, 10)))
    async with make_app() as app:
        speech = app.settings.speech_model or "gpt-4o-mini-tts"
        await app.choices.set_voice(KEY, True)
        await app.storage.budgets.set_budget(Budget(Scope.USER, ADA.principal, Period.DAILY, 1_000))
        await spend(app, 500)
        sink = await ask(app, "tell me a lot, aloud")
        [after] = await status(app)
        conversation = await app.store.active_conversation(KEY)
        usage = await app.store.usage(conversation.id)
    [chat] = usage
    left = 500 - chat.cost_micros
    assert PRICES.speech_cost(speech, len(answer)) > left  # so the voice cannot fit
    [finished] = [e for e in sink.events if isinstance(e, ReplyFinished)]
    assert finished.text == answer  # the reply itself is shown; only the voice is refused
    [notice] = [e for e in sink.events if isinstance(e, Notice)]
    assert notice.text.startswith(
        f"I couldn't say that aloud: Your daily budget of $0.001 has ${left / 1e6:.6f} left, "
        "not enough for saying this aloud; it resets"
    )
    assert not [e for e in sink.events if isinstance(e, VoiceReady)]
    assert fake_openai.speeches == []
    assert (after.spent_micros, after.reserved_micros) == (500 + chat.cost_micros, 0)
