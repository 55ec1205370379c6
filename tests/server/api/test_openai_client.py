"""The official `openai` Python client against the real service: apps written for OpenAI's API work as is.

The oracle for the answer is the runtime's own path (BundlePipeline.ask on the same bundle, greedy,
same max_tokens), itself checked against transformers in the runtime tests. Chat content is the
generated text as decoded (OpenAI does not trim it); `ask` strips its answer, so the comparison is
content.strip() == answer, with the token counts checked exactly.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List

import pytest

from server.runtime.pipeline import BundlePipeline
from tests.server.service_inputs import data_url, png
from tests.server.service_process import DEFAULT_BUNDLE, ServerProcess

openai = pytest.importorskip("openai", reason="the `test` extra installs the openai client")

QUESTION = "Is there a pneumothorax on this film?"
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def client(main_server: ServerProcess) -> Iterator[Any]:
    # No retries: a 503 must surface here, not be hidden by the client's back-off.
    with openai.OpenAI(base_url=main_server.url + "/v1", api_key="unused-no-key-configured", max_retries=0,
                       timeout=30.0) as c:
        yield c



@pytest.fixture(scope="module")
def expected() -> Dict[str, Any]:
    return BundlePipeline(DEFAULT_BUNDLE).ask(png(seed=31), QUESTION, max_tokens=MAX_TOKENS)


def _messages() -> List[Dict[str, Any]]:
    return [{"role": "user", "content": [
        {"type": "text", "text": QUESTION},
        {"type": "image_url", "image_url": {"url": data_url(png(seed=31))}},
    ]}]


def _check_usage(usage: Any, expected: Dict[str, Any], finish_reason: str) -> None:
    assert usage.prompt_tokens == expected["timings"]["prompt_tokens"]
    # A final end-of-sequence token is generated (and counted) but not part of output_token_ids.
    assert usage.completion_tokens == len(expected["output_token_ids"]) + (finish_reason == "stop")
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_models_list_names_the_bundle(client: Any, model_id: str) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == [model_id]
    assert client.models.retrieve(model_id).id == model_id


def test_chat_completion_with_an_image(client: Any, model_id: str, expected: Dict[str, Any]) -> None:
    completion = client.chat.completions.create(model=model_id, messages=_messages(), max_tokens=MAX_TOKENS,
                                                temperature=0)
    assert completion.object == "chat.completion" and completion.model == model_id
    assert len(completion.choices) == 1
    choice = completion.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content.strip() == expected["answer"]
    assert choice.finish_reason == expected["finish_reason"]
    _check_usage(completion.usage, expected, choice.finish_reason)


def test_streamed_chat_completion_with_an_image(client: Any, model_id: str, expected: Dict[str, Any]) -> None:
    stream = client.chat.completions.create(model=model_id, messages=_messages(), max_tokens=MAX_TOKENS,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks and all(ch.object == "chat.completion.chunk" and ch.id == chunks[0].id for ch in chunks)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text.strip() == expected["answer"]
    finish = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finish == [expected["finish_reason"]]
    # include_usage: one last chunk with no choices and the totals; none before it.
    assert chunks[-1].choices == [] and all(ch.usage is None for ch in chunks[:-1])
    _check_usage(chunks[-1].usage, expected, finish[0])


def test_streamed_text_equals_the_plain_content(client: Any, model_id: str) -> None:
    """Untrimmed: the deltas add up to exactly the non-streamed content, leading space and all."""
    plain = client.chat.completions.create(model=model_id, messages=_messages(), max_tokens=MAX_TOKENS)
    stream = client.chat.completions.create(model=model_id, messages=_messages(), max_tokens=MAX_TOKENS,
                                            stream=True)
    text = "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
    assert text == plain.choices[0].message.content


def test_unknown_model_is_a_not_found_error(client: Any, model_id: str) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="gpt-4o", messages=_messages(), max_tokens=4)
    err = info.value
    assert err.status_code == 404 and err.code == "model_not_found" and err.param == "model"
    assert "'gpt-4o' is not served here" in err.message and model_id in err.message
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")
