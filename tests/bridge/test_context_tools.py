"""Tool rounds in the prompt (bridge/context.py): sent back as the model made them, each round
whole or not at all, and left out with a deleted question or when the stored calls are bad."""

from __future__ import annotations

from typing import Any

from bridge.context import TokenBudget, build_prompt
from bridge.domain import MessageStatus, Role, StoredMessage
from bridge.ports import ChatTurn, ImagePart, ToolCall

MODEL = "m"
BUDGET = TokenBudget()
DONE = MessageStatus.COMPLETE


def user(id: int, text: str, **metadata: Any) -> StoredMessage:
    return StoredMessage(id, 1, Role.USER, text, DONE, metadata=metadata)


def answer(id: int, to: int, text: str, **metadata: Any) -> StoredMessage:
    return StoredMessage(id, 1, Role.ASSISTANT, text, DONE, reply_to_id=to, metadata=metadata)


def calls(id: int, to: int, *call_ids: str) -> StoredMessage:
    stored = [{"id": c, "name": "docs.search", "arguments": f'{{"q": "{c}"}}'} for c in call_ids]
    return answer(id, to, "", tool_calls=stored)


def result(id: int, to: int, call_id: str, text: str) -> StoredMessage:
    metadata = {"tool_call_id": call_id, "name": "docs.search", "error": False, "seconds": 0.1}
    return StoredMessage(id, 1, Role.TOOL, text, DONE, reply_to_id=to, metadata=metadata)


def cost(*texts: str) -> int:
    return sum(BUDGET.estimate(MODEL, t) for t in texts)


def call_cost(*call_ids: str) -> int:
    """What a round's calls turn costs (its calls' names and arguments are sent as text)."""
    listed = "\n".join(f'docs.search {{"q": "{c}"}}' for c in call_ids)
    return cost(f"\n{listed}")


def shown(turns: list[ChatTurn]) -> list[tuple[str, str]]:
    out = []
    for turn in turns:
        if turn.tool_calls:
            out.append(("calls", ",".join(c.id for c in turn.tool_calls)))
        elif turn.role is Role.TOOL:
            out.append((f"tool:{turn.tool_call_id}", turn.content))
        else:
            out.append((turn.role.value, turn.content))
    return out


BIG = "word " * 400  # about 400 tokens


def test_rounds_within_the_budget_go_between_the_question_and_its_answer() -> None:
    history = [
        user(1, "what do the docs say?"),
        calls(3, 1, "a1", "a2"),
        result(4, 1, "a1", "first result"),
        result(5, 1, "a2", "second result"),
        calls(6, 1, "b1"),
        result(7, 1, "b1", "third result"),
        # The answer's reasoning summary (its first 9 characters) is not sent back.
        answer(2, 1, "Thinking.They say yes.", reasoning={"summary_chars": 9}),
        user(8, "thanks"),
    ]
    image = ImagePart("image/png", b"png")
    files = {1: ("[file: a.png]", (image,))}
    turns, used = build_prompt(BUDGET, MODEL, "be brief", history, 10_000, files)
    assert shown(turns) == [
        ("system", "be brief"),
        ("user", "what do the docs say?\n\n[file: a.png]"),
        ("calls", "a1,a2"),
        ("tool:a1", "first result"),
        ("tool:a2", "second result"),
        ("calls", "b1"),
        ("tool:b1", "third result"),
        ("assistant", "They say yes."),
        ("user", "thanks"),
    ]
    assert turns[1].images == (image,)
    assert turns[2] == ChatTurn(
        Role.ASSISTANT,
        "",
        tool_calls=(
            ToolCall("a1", "docs.search", '{"q": "a1"}'),
            ToolCall("a2", "docs.search", '{"q": "a2"}'),
        ),
    )
    assert turns[3] == ChatTurn(Role.TOOL, "first result", tool_call_id="a1")
    assert used == (
        cost("be brief", "what do the docs say?\n\n[file: a.png]", "They say yes.", "thanks")
        + 800  # the image
        + call_cost("a1", "a2")
        + cost("first result", "second result")
        + call_cost("b1")
        + cost("third result")
    )


def test_a_round_that_does_not_fit_is_left_out_whole_and_older_ones_may_still_fit() -> None:
    history = [
        user(1, "question one"),
        calls(3, 1, "a1"),
        result(4, 1, "a1", "small result"),
        calls(5, 1, "b1", "b2"),
        result(6, 1, "b1", "small too"),
        result(7, 1, "b2", BIG),  # its round does not fit
        answer(2, 1, "answer one"),
        user(8, "question two"),
    ]
    room = cost("question one", "small result", "answer one", "question two") + call_cost("a1") + 50
    turns, used = build_prompt(BUDGET, MODEL, "", history, room)
    assert shown(turns) == [
        ("user", "question one"),
        ("calls", "a1"),
        ("tool:a1", "small result"),
        ("assistant", "answer one"),
        ("user", "question two"),
    ]
    assert used <= room
    # With less room the older round goes too, and the question and its answer still count.
    turns, _ = build_prompt(BUDGET, MODEL, "", history, room - 50 - call_cost("a1"))
    assert shown(turns) == [
        ("user", "question one"),
        ("assistant", "answer one"),
        ("user", "question two"),
    ]


def test_a_message_that_does_not_fit_still_ends_the_history() -> None:
    history = [
        user(1, "the oldest"),
        answer(2, 1, BIG),  # does not fit: nothing older is sent, however small
        user(3, "question"),
        calls(5, 3, "a1"),
        result(6, 3, "a1", "result"),
        answer(4, 3, "answer"),
        user(7, "newest"),
    ]
    room = cost("question", "result", "answer", "newest") + call_cost("a1") + 100
    turns, _ = build_prompt(BUDGET, MODEL, "", history, room)
    assert shown(turns) == [
        ("user", "question"),
        ("calls", "a1"),
        ("tool:a1", "result"),
        ("assistant", "answer"),
        ("user", "newest"),
    ]


def test_the_newest_question_is_kept_before_its_own_rounds() -> None:
    """Recovery answers a question whose rounds are stored already (its answer is not): a round
    that does not fit is dropped, the question never."""
    history = [user(1, "question " + BIG), calls(3, 1, "a1"), result(4, 1, "a1", BIG)]
    turns, used = build_prompt(BUDGET, MODEL, "", history, 100)
    assert shown(turns) == [("user", "question " + BIG)]
    assert used == cost("question " + BIG)
    turns, _ = build_prompt(BUDGET, MODEL, "", history, 10_000)
    assert shown(turns)[1:] == [("calls", "a1"), ("tool:a1", BIG)]
    # A small round that fits first does not push the question out.
    history[-1] = result(4, 1, "a1", "small")
    turns, _ = build_prompt(BUDGET, MODEL, "", history, 100)
    assert shown(turns) == [("user", "question " + BIG), ("calls", "a1"), ("tool:a1", "small")]


def test_a_deleted_question_takes_its_rounds_and_its_answer_with_it() -> None:
    history = [
        user(1, "kept"),
        calls(3, 1, "k1"),
        result(4, 1, "k1", "kept result"),
        answer(2, 1, "kept answer"),
        user(5, "deleted", deleted=True),
        calls(7, 5, "d1"),
        result(8, 5, "d1", "deleted result"),
        answer(6, 5, "deleted answer"),
        user(9, "newest"),
    ]
    turns, _ = build_prompt(BUDGET, MODEL, "", history, 10_000)
    assert shown(turns) == [
        ("user", "kept"),
        ("calls", "k1"),
        ("tool:k1", "kept result"),
        ("assistant", "kept answer"),
        ("user", "newest"),
    ]


def test_a_round_with_calls_that_cannot_be_read_is_left_out_with_its_results() -> None:
    def bad(id: int, tool_calls: Any) -> StoredMessage:
        return answer(id, 1, "", tool_calls=tool_calls)

    good = [calls(20, 1, "ok"), result(21, 1, "ok", "good result")]
    broken = [
        [bad(10, "not a list"), result(11, 1, "x", "r")],
        [bad(10, []), result(11, 1, "x", "r")],
        [bad(10, ["not an object"]), result(11, 1, "x", "r")],
        [bad(10, [{"id": "x", "name": "docs.search"}]), result(11, 1, "x", "r")],  # no arguments
        [bad(10, [{"id": "x", "name": "t", "arguments": {"q": 1}}]), result(11, 1, "x", "r")],
        [calls(10, 1, "x"), result(11, 1, "other", "r")],  # a result for another call
        [calls(10, 1, "x", "y"), result(11, 1, "x", "r")],  # a result missing
        [result(11, 1, "x", "r")],  # results whose calls the history's limit cut off
    ]
    for rows in broken:
        history = [user(1, "q"), *rows, *good, answer(2, 1, "a"), user(3, "next")]
        turns, used = build_prompt(BUDGET, MODEL, "", history, 10_000)
        assert shown(turns) == [
            ("user", "q"),
            ("calls", "ok"),
            ("tool:ok", "good result"),
            ("assistant", "a"),
            ("user", "next"),
        ], rows
        assert used == cost("q", "good result", "a", "next") + call_cost("ok")


def test_calls_without_ids_are_matched_to_their_results_in_order() -> None:
    """Some servers send tool calls without ids: the round is still whole."""
    history = [
        user(1, "q"),
        calls(3, 1, "", ""),
        result(4, 1, "", "first"),
        result(5, 1, "", "second"),
        answer(2, 1, "a"),
    ]
    turns, _ = build_prompt(BUDGET, MODEL, "", history, 10_000)
    assert shown(turns) == [
        ("user", "q"),
        ("calls", ","),
        ("tool:", "first"),
        ("tool:", "second"),
        ("assistant", "a"),
    ]
