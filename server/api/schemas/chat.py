"""POST /v1/chat/completions in OpenAI's schema (the fields this model can honour).

Content parts are kept loose here (any `type`) so that an unsupported part gets a message naming
it (server/api/conversation.py) rather than a pydantic union error. Fields not listed are ignored.
"""
from __future__ import annotations

from typing import List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field
from typing_extensions import Literal

from server.api.schemas.common import Timings, Usage

_MAX_SEED = 2 ** 63 - 1


class ImageUrl(BaseModel):
    url: str = Field(json_schema_extra={"minLength": 1},
                     description="data:image/png;base64,... (also DICOM: data:application/dicom;base64,...); "
                     "http(s) only under a prefix the server allows")
    detail: Optional[str] = Field(None, description="ignored: the model sees one fixed resolution")


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: str = Field(description="text | image_url")
    text: Optional[str] = None
    image_url: Optional[ImageUrl] = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Checked by the handler (server/api/conversation.py, with a message naming the role); the enum tells
    # clients (and the fuzzer) which roles exist.
    role: str = Field(description="system | developer | user | assistant",
                      json_schema_extra={"enum": ["system", "developer", "user", "assistant"]})
    content: Optional[Union[str, List[ContentPart]]] = None


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: Optional[str] = Field(None, description="the served model's id (GET /v1/models); default: that model")
    messages: List[ChatMessage] = Field(min_length=1, description="one image, in the first user message")
    max_tokens: Optional[int] = Field(None, ge=1)
    max_completion_tokens: Optional[int] = Field(None, ge=1, description="same as max_tokens; wins when both")
    temperature: Optional[float] = Field(None, ge=0, le=2, description="default 0 (greedy)")
    top_p: Optional[float] = Field(None, gt=0, le=1)
    top_k: Optional[int] = Field(None, ge=0, le=1_000_000, description="extension; 0 = off")
    seed: Optional[int] = Field(None, ge=0, le=_MAX_SEED)
    stop: Optional[Union[str, List[str]]] = None
    n: Optional[int] = Field(None, ge=1, le=1, description="only 1")
    stream: bool = False
    stream_options: Optional[StreamOptions] = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class ChatChoice(BaseModel):
    index: int
    message: AssistantMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: List[ChatChoice]
    usage: Usage
    timings: Timings


class ChunkDelta(BaseModel):
    role: Optional[str] = None
    content: Optional[str] = None


class ChunkChoice(BaseModel):
    index: int
    delta: ChunkDelta
    finish_reason: Optional[str] = None
    logprobs: None = None


class ChatCompletionChunk(BaseModel):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: List[ChunkChoice]
    usage: Optional[Usage] = None
    timings: Optional[Timings] = None


STREAM_DESCRIPTION = (
    "With `stream: true`, `text/event-stream` of `chat.completion.chunk` objects: the role, then text deltas, "
    "then a chunk with `finish_reason` and `timings`; with `stream_options.include_usage`, a last chunk with "
    "empty `choices` and `usage`; then `data: [DONE]`."
)

__all__ = ["ChatCompletion", "ChatCompletionChunk", "ChatCompletionRequest", "ChatMessage", "ChunkChoice",
           "ChunkDelta", "ContentPart", "ImageUrl", "STREAM_DESCRIPTION", "StreamOptions"]
