"""Images through the LLM adapter (`llm.vision`), against the local server with and without
vision."""

from __future__ import annotations

import base64
import logging
from collections.abc import AsyncIterator

import pytest

from adapters.llm import OpenAICompatibleModel
from adapters.llm.vision import NOT_ACCEPTED, VISION_OFF, VisionPolicy
from bridge.config import LLMSettings
from bridge.domain import Role
from bridge.ports import (
    ChatTurn,
    CompletionRequest,
    Delta,
    Finished,
    ImagePart,
    LLMError,
    StreamEvent,
)
from sandbox.llm_server import Fault, LLMServer, ScriptedReply, image_urls

PNG = ImagePart("image/png", b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
JPEG = ImagePart("image/jpeg", b"\xff\xd8\xff\xe0" + b"jpeg bytes" * 50)
QUESTION = "what is wrong here?"


def data_url(image: ImagePart) -> str:
    return f"data:{image.mime_type};base64,{base64.b64encode(image.data).decode()}"


def asking(*images: ImagePart, model: str = "vision-model") -> CompletionRequest:
    turns = [
        ChatTurn(Role.SYSTEM, "Be brief."),
        ChatTurn(Role.USER, "earlier question"),
        ChatTurn(Role.ASSISTANT, "earlier answer"),
        ChatTurn(Role.USER, QUESTION, images),
    ]
    return CompletionRequest(model=model, messages=turns, temperature=0.2)


def model_for(server: LLMServer, vision: object = "auto") -> OpenAICompatibleModel:
    settings = LLMSettings(base_url=server.base_url, api_key="k", vision=vision)  # type: ignore[arg-type]
    return OpenAICompatibleModel(settings)


async def collect(model: OpenAICompatibleModel, request: CompletionRequest) -> list[StreamEvent]:
    return [event async for event in model.stream(request)]


def text(events: list[StreamEvent]) -> str:
    return "".join(e.text for e in events if isinstance(e, Delta))


def last_user_content(body: dict[str, object]) -> object:
    messages = body["messages"]
    assert isinstance(messages, list)
    return messages[-1]["content"]


@pytest.fixture
async def server() -> AsyncIterator[LLMServer]:
    async with LLMServer() as running:
        yield running


@pytest.fixture
async def no_vision() -> AsyncIterator[LLMServer]:
    async with LLMServer(vision=False) as running:
        yield running


async def test_images_go_as_content_parts_after_the_text(server: LLMServer) -> None:
    model = model_for(server)
    events = await collect(model, asking(PNG, JPEG))
    assert text(events) == f"You said: {QUESTION} [2 images]"
    body = server.requests[-1]
    assert last_user_content(body) == [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": data_url(PNG)}},
        {"type": "image_url", "image_url": {"url": data_url(JPEG)}},
    ]
    # Turns without images stay plain strings.
    assert [m["content"] for m in body["messages"][:3]] == [
        "Be brief.",
        "earlier question",
        "earlier answer",
    ]
    await model.stop()


async def test_large_images_are_encoded_off_the_event_loop_and_arrive_whole(
    server: LLMServer,
) -> None:
    big = ImagePart("image/webp", bytes(range(256)) * 4096)  # 1 MiB
    model = model_for(server, vision=True)
    await collect(model, asking(big, PNG))
    assert image_urls(server.requests[-1]) == [data_url(big), data_url(PNG)]
    await model.stop()


async def test_vision_off_drops_images_with_a_note_each(server: LLMServer) -> None:
    model = model_for(server, vision=False)
    events = await collect(model, asking(PNG, JPEG))
    sent = last_user_content(server.requests[-1])
    assert sent == f"{QUESTION}\n\n{VISION_OFF} {VISION_OFF}"
    assert image_urls(server.requests[-1]) == []
    assert VISION_OFF in text(events)
    await model.stop()


async def test_auto_falls_back_to_text_once_the_model_refuses_images(
    no_vision: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    model = model_for(no_vision)
    with caplog.at_level(logging.WARNING):
        events = await collect(model, asking(PNG))
        # The user still gets an answer: the same request again, the image replaced by a note.
        assert text(events) == f"You said: {QUESTION}\n\n{NOT_ACCEPTED}"
        assert Finished(0, "stop") in events
        assert len(no_vision.requests) == 2
        assert image_urls(no_vision.requests[0]) == [data_url(PNG)]
        assert last_user_content(no_vision.requests[1]) == f"{QUESTION}\n\n{NOT_ACCEPTED}"

        # Later requests for that model drop images up front: one request, no refusal.
        await collect(model, asking(JPEG, PNG))
        assert len(no_vision.requests) == 3
        assert image_urls(no_vision.requests[2]) == []
        assert str(last_user_content(no_vision.requests[2])).endswith(
            f"{NOT_ACCEPTED} {NOT_ACCEPTED}"
        )

        # Another model on the same endpoint is tried with its images.
        await collect(model, asking(PNG, model="other-model"))
        assert len(no_vision.requests) == 5

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per model, never one per request
    assert "'vision-model'" in warnings[0] and "image_url is only supported" in warnings[0]
    assert "'other-model'" in warnings[1]
    await model.stop()


async def test_complete_falls_back_too(
    no_vision: LLMServer, caplog: pytest.LogCaptureFixture
) -> None:
    no_vision.script("A Title", "Another Title")
    model = model_for(no_vision)
    with caplog.at_level(logging.WARNING):
        assert await model.complete(asking(PNG)) == "A Title"
        assert len(no_vision.requests) == 2 and no_vision.scripted == 1
        assert await model.complete(asking(PNG)) == "Another Title"
        assert len(no_vision.requests) == 3
    assert [image_urls(r) != [] for r in no_vision.requests] == [True, False, False]
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1
    await model.stop()


@pytest.mark.parametrize(
    "refusal",
    [
        "facebook/opt-125m is not a multimodal model None",  # vLLM
        "this model does not support image input",  # Ollama
        "Model does not support images. Please use a model that does.",  # LM Studio
        "Failed to deserialize the JSON body into the target type: messages[3]: "
        "unknown variant `image_url`, expected `text`",  # DeepSeek
    ],
)
async def test_auto_recognises_other_servers_refusals(no_vision: LLMServer, refusal: str) -> None:
    no_vision.vision_error = refusal
    model = model_for(no_vision)
    assert text(await collect(model, asking(PNG))).endswith(NOT_ACCEPTED)
    assert len(no_vision.requests) == 2
    await model.stop()


async def test_vision_true_surfaces_the_refusal(no_vision: LLMServer) -> None:
    model = model_for(no_vision, vision=True)
    for _ in range(2):  # and nothing is learnt from it
        with pytest.raises(LLMError) as info:
            await collect(model, asking(PNG))
        assert "HTTP 400" in str(info.value) and "image_url" in str(info.value)
        assert not info.value.retryable
    assert len(no_vision.requests) == 2
    assert all(image_urls(r) for r in no_vision.requests)
    await model.stop()


async def test_other_client_errors_are_not_taken_for_a_refusal(server: LLMServer) -> None:
    server.script(
        ScriptedReply(fault=Fault.status(400, message="You uploaded an unsupported image.")),
        ScriptedReply(fault=Fault.status(400, message="At most 1 image(s) may be provided.")),
    )
    model = model_for(server)
    for _ in range(2):
        with pytest.raises(LLMError):
            await collect(model, asking(PNG))
    await collect(model, asking(PNG))  # the model still gets images
    assert [len(image_urls(r)) for r in server.requests] == [1, 1, 1]
    await model.stop()


async def test_a_refusal_worded_error_after_text_is_never_retried(server: LLMServer) -> None:
    message = "Invalid content type. image_url is only supported by certain models."
    server.script(ScriptedReply(text="one two three four", fault=Fault.error_after(2, message)))
    model = model_for(server)
    seen: list[StreamEvent] = []
    with pytest.raises(LLMError):
        async for event in model.stream(asking(PNG)):
            seen.append(event)
    assert text(seen) == "one two" and len(server.requests) == 1
    await model.stop()


async def test_a_request_without_images_is_never_retried(no_vision: LLMServer) -> None:
    no_vision.script(ScriptedReply(fault=Fault.status(400, message=no_vision.vision_error)))
    model = model_for(no_vision)
    with pytest.raises(LLMError):
        await collect(model, asking())
    assert len(no_vision.requests) == 1
    await model.stop()


@pytest.mark.parametrize(
    ("status", "message", "refused"),
    [
        (400, "Invalid content type. image_url is only supported by certain models.", True),
        (400, "Qwen/Qwen3-8B is not a multimodal model", True),
        (400, "Image input is not supported for this model", True),
        (400, "vision is not enabled for this deployment", True),
        (404, "No endpoints found that support image input", False),  # not a 400/422
        (422, "No endpoints found that support image input", True),
        (400, "Image format is not supported: image/tiff", False),
        (400, "illegal base64 data at input byte 5", False),
        (400, "vision model only supports a single image per message", False),
        (400, "This model's maximum context length is 8192 tokens.", False),
    ],
)
def test_refusal_wordings(status: int, message: str, refused: bool) -> None:
    assert VisionPolicy("auto").refused("m", status, message) is refused
    assert VisionPolicy(True).refused("m", status, message) is False
