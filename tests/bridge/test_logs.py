"""Log lines as an admin reads them: JSON with a reply's ids as fields, and no secret anywhere,
not even in an exception's traceback."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bridge import logs
from bridge.domain import MessageStatus
from bridge.responder import Responder, ResponderSettings
from bridge.scheduler import EditScheduler
from sandbox.memory_platform import RecordingSurface
from tests.fakes import MemoryStore, Script, ScriptedLLM, inbound
from tests.virtual_time import run_virtual

SLACK_TOKEN = "xoxb-1234567890-abcdefghijkl"
SIGNING_SECRET = "f00dfeed-signing-secret"  # no known token shape: redacted because configured


@pytest.fixture
def configured() -> Iterator[None]:
    """`logs.configure` replaces the root handlers: put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def json_lines(text: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def test_a_replys_json_lines_carry_its_platform_chat_and_message_ids(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", True, [])
    store = MemoryStore()
    responder = Responder(
        store=store,
        llm=ScriptedLLM(Script.text("Hello there.")),
        scheduler=EditScheduler(interval=1.0),
        settings=ResponderSettings(model="m", titles=False),
    )
    surface = RecordingSurface()
    report = run_virtual(responder.handle("slack", inbound("hi", "Ev1"), surface))
    assert report is not None and report.status is MessageStatus.COMPLETE
    run_virtual(responder.handle("slack", inbound("hi", "Ev1"), surface))  # a retried event

    entries = json_lines(capsys.readouterr().err)
    [user_message] = [m for m in store.rows.values() if m.role == "user"]
    [done] = [e for e in entries if "visible updates" in str(e["message"])]
    assert done["platform"] == "slack"
    assert done["chat_id"] == user_message.chat_id
    assert done["message_id"] == user_message.id == report.user_message_id
    assert done["level"] == "INFO" and done["logger"] == "bridge.responder"
    [duplicate] = [e for e in entries if "already handled" in str(e["message"])]
    assert duplicate["event_id"] == "Ev1" and duplicate["platform"] == "slack"


def test_a_token_in_an_exception_is_redacted_from_the_json_traceback(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", True, [SIGNING_SECRET])
    leaky = RuntimeError(f"upstream rejected {SLACK_TOKEN} and {SIGNING_SECRET}")
    responder = Responder(
        store=MemoryStore(),
        llm=ScriptedLLM(Script([(0.0, leaky)])),
        scheduler=EditScheduler(interval=1.0),
        settings=ResponderSettings(model="m", titles=False, max_retries=0),
    )
    report = run_virtual(responder.handle("slack", inbound("hi", "Ev1"), RecordingSurface()))
    assert report is not None and report.status is MessageStatus.FAILED

    err = capsys.readouterr().err
    assert SLACK_TOKEN not in err and SIGNING_SECRET not in err
    [failed] = [e for e in json_lines(err) if " failed (ref " in str(e["message"])]
    assert failed["level"] == "ERROR" and failed["message_id"] == report.user_message_id
    trace = str(failed["exception"])
    assert "RuntimeError: upstream rejected [redacted] and [redacted]" in trace
    assert "Traceback" in trace


def test_plain_text_lines_redact_messages_and_tracebacks_too(
    configured: None, capsys: pytest.CaptureFixture[str]
) -> None:
    logs.configure("INFO", False, [SIGNING_SECRET])
    log = logging.getLogger("bridge.test")
    log.warning("token %s in a message", SLACK_TOKEN)
    try:
        raise ValueError(f"secret {SIGNING_SECRET} in an exception")
    except ValueError:
        log.exception("it failed")
    log.info("where", stack_info=True)  # xoxb-1234567890-abcdefghijkl (shown in the stack)
    err = capsys.readouterr().err
    assert SLACK_TOKEN not in err and SIGNING_SECRET not in err
    assert "token [redacted] in a message" in err
    assert "ValueError: secret [redacted] in an exception" in err
    assert "stack_info=True)  # [redacted] (shown in the stack)" in err
