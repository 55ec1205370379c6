"""OpenAI chat messages -> the model's conversation: one image, alternating turns, a last question.

The model is LLaVA-style: one image, placed at the start of the first user turn. So a conversation
carries exactly one image_url part, in its first user message; later user messages are follow-up
questions about it, and earlier assistant messages become history. Sent again with the same image,
a follow-up shares the prompt prefix (system, image, earlier turns) with the request before it,
which the runtime reuses from its KV cache and image cache.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

from server.api.errors import APIError
from server.api.generation import Conversation
from server.api.schemas.chat import ChatMessage

SYSTEM_ROLES = ("system", "developer")  # OpenAI renamed "system" to "developer" for newer models


@dataclass
class ChatInput:
    conversation: Conversation
    image_url: str


def _bad(message: str, code: str = "invalid_messages", param: str = "messages") -> APIError:
    return APIError(400, message, code, param=param)


def _content(message: ChatMessage, index: int) -> Tuple[str, List[str]]:
    """(text, image urls) of one message; text parts joined by newlines."""
    content = message.content
    if content is None:
        return "", []
    if isinstance(content, str):
        return content, []
    texts: List[str] = []
    images: List[str] = []
    for j, part in enumerate(content):
        where = "messages[%d].content[%d]" % (index, j)
        if part.type == "text":
            if part.text is None:
                raise _bad("%s is a text part without `text`" % where, param=where)
            texts.append(part.text)
        elif part.type == "image_url":
            if part.image_url is None:
                raise _bad("%s is an image_url part without `image_url.url`" % where, param=where)
            images.append(part.image_url.url)
        else:
            raise _bad("%s has type %r, which this model does not take: send 'text' and 'image_url' parts"
                       % (where, part.type[:40]), "unsupported_content_part", param=where)
    return "\n".join(texts), images


def parse_messages(messages: List[ChatMessage], max_messages: int) -> ChatInput:
    if len(messages) > max_messages:
        raise _bad("%d messages are more than this server takes (%d, TINYLLAVA_MAX_MESSAGES): drop older turns"
                   % (len(messages), max_messages))
    system: Optional[str] = None
    turns: List[Tuple[str, str]] = []
    image_url: Optional[str] = None
    for i, m in enumerate(messages):
        text, images = _content(m, i)
        if m.role in SYSTEM_ROLES:
            if turns or system is not None or images:
                raise _bad("messages[%d]: one system message (text only) may open the conversation, no more" % i)
            system = text
            continue
        if m.role not in ("user", "assistant"):
            raise _bad("messages[%d] has role %r: this model takes system, user and assistant messages"
                       % (i, m.role[:40]))
        if images:
            if m.role != "user" or turns or image_url is not None or len(images) > 1:
                raise _bad("messages[%d]: the model takes exactly one image per conversation, in the first user "
                           "message; ask about another image in a new conversation" % i, "too_many_images")
            image_url = images[0]
        expected = "user" if len(turns) % 2 == 0 else "assistant"
        if m.role != expected:
            raise _bad("messages[%d] is a %s message where a %s message belongs: turns must alternate user, "
                       "assistant, user, ..." % (i, m.role, expected))
        if m.role == "assistant" and not text.strip():
            raise _bad("messages[%d]: an assistant message needs its text" % i)
        turns.append((m.role, text))
    if not turns or turns[-1][0] != "user":
        raise _bad("the conversation must end with a user message: the question to answer")
    if image_url is None:
        raise _bad("the conversation has no image: put one image_url part (a data URL) in the first user message",
                   "image_missing")
    history = [(turns[k][1], turns[k + 1][1]) for k in range(0, len(turns) - 1, 2)]
    return ChatInput(Conversation(turns[-1][1], history, system), image_url)


__all__ = ["ChatInput", "SYSTEM_ROLES", "parse_messages"]
