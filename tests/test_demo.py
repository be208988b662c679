"""Demo mode as a newcomer meets it, with no OPENAI_API_KEY anywhere: ``switchboard chat
--demo`` through a pipe and in a pseudo-terminal, ``switchboard run telegram --demo``
against the fake Bot API with the operations server, and the demo model's own streaming."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

from core.models.demo import DemoGateway
from core.models.llm import ChatTurn, Completion, LLMRequest, TextChunk
from core.models.registry import load_registry
from tests import make_audio
from tests.fakes.telegram_server import FakeTelegram

SWITCHBOARD = str(Path(sys.executable).parent / "switchboard")
BANNER = "Demo mode: replies come from a stand-in model built into Switchboard"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    environment = {
        **os.environ,
        "DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'demo.db'}",
        "SWITCHBOARD_MEDIA_DIR": str(tmp_path / "media"),
    }
    assert not any(name.startswith("OPENAI_") for name in environment)
    return environment


def test_demo_chat_through_a_pipe_shows_every_feature(env: dict[str, str], tmp_path: Path) -> None:
    Image.new("RGB", (300, 200), (30, 60, 200)).save(tmp_path / "sky.png")
    (tmp_path / "note.ogg").write_bytes(make_audio.voice_note(2.0))
    script = "\n".join(
        [
            "hello there",
            "what is 12*7?",
            "what time is it?",
            "draw a red house",
            "sky.png",
            "note.ogg",
            "/voice on",
            "say something",
            "/model",
            "/usage",
            "",
        ]
    )
    result = subprocess.run(
        [SWITCHBOARD, "chat", "--demo", "--user", "ada"],
        input=script,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert BANNER in result.stderr
    assert "Traceback" not in out + result.stderr
    assert "OPENAI_API_KEY is not set" not in out + result.stderr
    lines = out.splitlines()
    assert lines[0].startswith("(demo model) You said: “hello there”.")
    assert "(demo model) The calculator says 12*7 = 84." in lines
    assert any(line.startswith("(demo model) The clock says it is ") for line in lines)
    assert "[tool calculator" in result.stderr and "[tool current_time" in result.stderr
    [drawn] = sorted((tmp_path / "media").glob("picture-*.png"))
    with Image.open(drawn) as picture:
        assert picture.size == (512, 512)
        assert picture.getpixel((10, 10)) == (210, 40, 40)  # the red the prompt named
    assert (
        "(demo model) Your picture is a landscape PNG picture of 300x200 pixels, mostly blue" in out
    )
    assert "(heard) (demo transcript: 2.0 s of audio)" in lines
    [voice] = sorted((tmp_path / "media").glob("voice-*.ogg"))
    assert voice.read_bytes()[:4] == b"OggS"
    assert make_audio.opus_head(voice.read_bytes())[0] == 1  # mono Opus
    assert "• demo" in lines and not any("gpt-" in line for line in lines)
    assert "• today: $0.00 (" in out


def _read_until(
    fd: int, wanted: str, seen: list[str], within: float = 30.0, *, count: int = 1
) -> str:
    """Read the terminal until ``wanted`` has appeared ``count`` times; returns everything
    read so far."""
    deadline = time.monotonic() + within
    while "".join(seen).count(wanted) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{wanted!r} not shown; the terminal has: {''.join(seen)!r}")
        ready, _, _ = select.select([fd], [], [], remaining)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            seen.append(chunk.decode(errors="replace"))
    return "".join(seen)


def test_demo_chat_in_a_terminal(env: dict[str, str], tmp_path: Path) -> None:
    main, terminal = pty.openpty()
    process = subprocess.Popen(
        [SWITCHBOARD, "chat", "--demo", "--user", "ada"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        cwd=tmp_path,
        start_new_session=True,
    )
    os.close(terminal)
    seen: list[str] = []
    try:
        _read_until(main, "you> ", seen)
        assert BANNER in "".join(seen)
        assert "Switchboard console." in "".join(seen)
        os.write(main, b"what is 6*7?\n")
        _read_until(main, "6*7 = 42.", seen)
        os.write(main, b"/model\n")
        _read_until(main, "Demo model (built in, no AI)", seen)
        # Wait for the next prompt (the third), as a person would: line editing reads only then.
        _read_until(main, "you> ", seen, count=3)
        os.write(main, b"\x04")  # Ctrl+D ends the session
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(main)
    assert "Traceback" not in "".join(seen)


async def test_the_demo_model_streams_in_pieces() -> None:
    registry = load_registry(Path(__file__).parents[1] / "core" / "data" / "demo_models.toml")
    request = LLMRequest(registry.model(None), "Be helpful.", [ChatTurn("user", "tell me a story")])
    events = [event async for event in DemoGateway(word_delay=0.001).stream(request)]
    pieces = [e.text for e in events if isinstance(e, TextChunk)]
    assert len(pieces) > 10
    *_, last = events
    assert isinstance(last, Completion)
    assert "".join(pieces) == last.text and last.text.startswith("(demo model) ")
    assert last.usage is not None and last.usage.output_tokens > 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def _get(url: str) -> tuple[int, str]:
    try:
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            return response.status, await response.text()
    except aiohttp.ClientConnectionError:
        return 0, ""


async def _until(check: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.1)


async def test_run_telegram_demo_with_the_operations_server(
    env: dict[str, str], tmp_path: Path
) -> None:
    port = _free_port()
    with FakeTelegram() as telegram:
        process = await asyncio.create_subprocess_exec(
            SWITCHBOARD,
            "run",
            "telegram",
            "--demo",
            env={
                **env,
                "TELEGRAM_BOT_TOKEN": telegram.token,
                "TELEGRAM_BASE_URL": f"{telegram.url}/bot",
                "TELEGRAM_BASE_FILE_URL": f"{telegram.url}/file/bot",
                "SWITCHBOARD_HTTP_PORT": str(port),
            },
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        base = f"http://127.0.0.1:{port}"
        try:

            async def ready() -> bool:
                assert process.returncode is None, await process.communicate()
                return (await _get(f"{base}/readyz"))[0] == 200

            await _until(ready)
            assert await _get(f"{base}/healthz") == (200, "ok\n")
            telegram.private_message(1001, "what is 2+3?")

            async def answered() -> bool:
                chat = telegram.chat(1001)
                return bool(chat) and chat[-1].text == "(demo model) The calculator says 2+3 = 5."

            await _until(answered)
            status, text = await _get(f"{base}/metrics")
        finally:
            process.send_signal(signal.SIGTERM)
            _, errors = await asyncio.wait_for(process.communicate(), 30)
    stderr = errors.decode()
    assert process.returncode == 0, stderr
    assert BANNER in stderr
    assert telegram.token not in stderr
    samples = {
        (s.name, json.dumps(s.labels, sort_keys=True)): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    answered_turns = ("switchboard_turns_total", '{"channel": "telegram", "outcome": "answered"}')
    assert status == 200 and samples[answered_turns] == 1
    assert samples[("switchboard_cost_usd_total", '{"model": "demo"}')] == 0
