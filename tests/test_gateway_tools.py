"""The tool-call parser: every spelling and rule, and streaming == whole for any chunking."""

from __future__ import annotations

import itertools
import json
import random

import pytest

from coordinator.gateway.tools import ToolCallParser, parse_tool_calls

CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ARGS = '{"city": "Paris"}'


def _ids():
    counter = itertools.count()
    return lambda: f"call_{next(counter)}"


def _parse(text: str, parallel: bool = True):
    content, calls = parse_tool_calls(text, parallel, _ids())
    return content, [(c.index, c.id, c.name, json.loads(c.arguments)) for c in calls]


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Hello there.",
        "  leading and trailing  \n",
        "a <tool_call mention that is not a tag",
        "ends with a tag start <tool",
        "<",
        "<tool_call>",
        "<|pyth",
        "x < y and {braces} later",
    ],
)
def test_text_without_calls_is_kept_verbatim(text):
    assert _parse(text) == (text, [])


def test_one_hermes_call():
    assert _parse(CALL) == ("", [(0, "call_0", "get_weather", {"city": "Paris"})])


def test_text_around_calls_keeps_its_words_and_one_gap():
    text = f"  Let me check.\n\n{CALL}\n{CALL.replace('Paris', 'Oslo')}\n Done. \n"
    content, calls = _parse(text)
    assert content == "  Let me check.\n\nDone. \n"
    assert _parse(f"a{CALL} b")[0] == "a b"
    assert _parse(f"a{CALL}b")[0] == "ab"
    assert [(c[0], c[3]["city"]) for c in calls] == [(0, "Paris"), (1, "Oslo")]


@pytest.mark.parametrize(
    "block",
    [
        "<tool_call>not json</tool_call>",
        '<tool_call>{"name": "f", "arguments": {}</tool_call>',  # unbalanced
        '<tool_call>{"arguments": {}}</tool_call>',  # no name
        '<tool_call>{"name": "", "arguments": {}}</tool_call>',
        '<tool_call>{"name": "f", "arguments": [1]}</tool_call>',
        '<tool_call>{"name": "f", "arguments": "not json"}</tool_call>',
        '<tool_call>{"name": "f", "extra": 1}</tool_call>',
        '<tool_call>["f"]</tool_call>',
    ],
)
def test_a_block_that_is_not_a_call_stays_in_the_content(block):
    text = f"Before \n{block}\n after"
    assert _parse(text) == (text, [])
    # ...while a valid call next to it still counts
    content, calls = _parse(f"{block}\n{CALL}")
    assert content == block and len(calls) == 1


@pytest.mark.parametrize(
    ("inner", "args"),
    [
        ('{"name": "f", "arguments": {"a": [1, 2]}}', {"a": [1, 2]}),
        ('{"name": "f", "parameters": {"a": 1}}', {"a": 1}),
        ('{"name": "f", "arguments": "{\\"a\\": 1}"}', {"a": 1}),
        ('{"name": "f"}', {}),
        ('{"type": "function", "name": "f", "arguments": {"u": "日本 🙂"}}', {"u": "日本 🙂"}),
    ],
)
def test_argument_spellings(inner, args):
    content, calls = _parse(f"<tool_call>{inner}</tool_call>")
    assert content == "" and calls == [(0, "call_0", "f", args)]


def test_non_ascii_arguments_stay_readable():
    _, calls = parse_tool_calls(
        '<tool_call>{"name": "f", "arguments": {"c": "Zürich"}}</tool_call>'
    )
    assert calls[0].arguments == '{"c": "Zürich"}'


def test_a_block_left_open_at_the_end():
    assert _parse('<tool_call>{"name": "f", "arguments": {}}')[1] == [(0, "call_0", "f", {})]
    cut = '<tool_call>{"name": "f", "argu'
    assert _parse(cut) == (cut, [])
    assert _parse("Hi <tool_call>") == ("Hi <tool_call>", [])


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ('{"name": "f", "parameters": {"a": 1}}', ["f"]),
        ('\n <|python_tag|>{"name": "f", "parameters": {}}', ["f"]),
        ('{"name": "f", "parameters": {}}; {"name": "g", "arguments": {}}', ["f", "g"]),
        ('[{"name": "f", "parameters": {}}, {"name": "g", "parameters": {}}]', ["f", "g"]),
    ],
)
def test_llama3_json_calls(text, names):
    content, calls = _parse(text)
    assert content == "" and [c[2] for c in calls] == names


@pytest.mark.parametrize(
    "text",
    [
        '{"answer": 42}',
        '{"name": "f", "parameters": {}} and then words',
        '{"name": "f", "parameters": {}',
        "[1, 2, 3] are numbers",
        '{"name": "f", "parameters": {}}; ',
        "  {not json}  ",
    ],
)
def test_a_json_answer_that_is_not_all_calls_is_content_verbatim(text):
    if text.endswith("; "):  # a trailing separator is fine
        assert _parse(text)[1] != []
        return
    assert _parse(text) == (text, [])


def test_parallel_false_keeps_only_the_first_call():
    content, calls = _parse(f"{CALL}\n{CALL}\nbye", parallel=False)
    assert content == "bye" and [c[0] for c in calls] == [0]


def test_feed_after_finish_is_a_bug():
    parser = ToolCallParser()
    parser.finish()
    with pytest.raises(RuntimeError):
        parser.feed("x")


CORPUS = [
    f"Sure.\n{CALL}\n",
    f"{CALL}{CALL}",
    f" \n{CALL} middle <tool_call>bad</tool_call>  {CALL} end ",
    '{"name": "f", "parameters": {"x": "<tool_call>"}}',
    "<tool_call> <tool_call>" + CALL,
    "plain text with a < and <tool and </tool_call> and trailing   ",
    '<|python_tag|>{"name": "f", "parameters": {}}',
    "<tool_call>" + '{"name": "f", "arguments": {}}',
    "   ",
    "Text then {json-ish} then " + CALL + " and <too",
]


def _streamed(text: str, cuts: list[int]):
    parser = ToolCallParser(new_id=_ids())
    pieces = [text[a:b] for a, b in itertools.pairwise([0, *cuts, len(text)])]
    outs = [parser.feed(p) for p in pieces] + [parser.finish()]
    return "".join(o.content for o in outs), [c for o in outs for c in o.calls]


@pytest.mark.parametrize("text", CORPUS)
def test_streaming_in_any_pieces_gives_the_whole_answer(text):
    whole = parse_tool_calls(text, new_id=_ids())
    whole = (whole[0], list(whole[1]))
    for cut in range(len(text) + 1):  # every two-way split
        assert _streamed(text, [cut]) == whole, cut
    rng = random.Random(text)
    for _ in range(200):  # random many-way splits, single characters included
        cuts = sorted(rng.sample(range(1, len(text)), k=min(len(text) - 1, rng.randint(1, 12))))
        assert _streamed(text, cuts) == whole, cuts
    assert _streamed(text, list(range(1, len(text)))) == whole
