"""POST /v1/vqa: one image and one question, as JSON or multipart form (the curl path)."""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from server.api.schemas.common import ImageInfo, Timings, Usage

_MAX_SEED = 2 ** 63 - 1


class VqaOptions(BaseModel):
    """Everything but the image; a multipart form sends these as text fields."""

    model_config = ConfigDict(extra="ignore")

    # Not a pydantic constraint: the handler answers an empty question with its own code (empty_question).
    question: str = Field(description="the question about the image", json_schema_extra={"pattern": r"\S"})
    model: Optional[str] = Field(None, description="must name the served model when given (GET /v1/models)")
    max_tokens: Optional[int] = Field(None, ge=1, description="most tokens to generate (server default when absent)")
    temperature: float = Field(0.0, ge=0, le=2, description="0 = greedy (default): the same answer every time")
    top_p: float = Field(1.0, gt=0, le=1)
    top_k: int = Field(0, ge=0, le=1_000_000, description="0 = off")
    seed: Optional[int] = Field(None, ge=0, le=_MAX_SEED, description="sampling seed (temperature > 0)")
    stop: Optional[Union[str, List[str]]] = Field(None, description="stop strings: the answer ends before one")
    stream: bool = Field(False, description="answer as server-sent events")
    frame: Optional[int] = Field(None, ge=0, le=1_000_000,
                                 description="0-based DICOM frame (default: the middle frame)")


class VqaJsonRequest(VqaOptions):
    image: str = Field(json_schema_extra={"minLength": 1},
                       description="the image file (PNG, JPEG or DICOM) as base64 or a data URL")


class VqaResponse(BaseModel):
    answer: str
    model: str
    finish_reason: str = Field(description="stop (end of answer or a stop string) | length (max_tokens)")
    usage: Usage
    timings: Timings
    request_id: str
    image: ImageInfo


class VqaDelta(BaseModel):
    """One piece of a streamed answer (`stream: true`)."""

    request_id: str
    delta: str


def _without_null(prop: Dict[str, Any]) -> Dict[str, Any]:
    """The property without its null branch (anyOf kept, with what is left) and without a null default."""
    out = dict(prop)
    if "anyOf" in prop:
        out["anyOf"] = [b for b in prop["anyOf"] if b.get("type") != "null"]
    if out.get("default", 0) is None:
        del out["default"]
    return out


def request_body_schema() -> Dict[str, Any]:
    """The OpenAPI requestBody: the JSON model, and the same fields as a multipart form with a file part."""
    json_schema = VqaJsonRequest.model_json_schema()
    form = copy.deepcopy(json_schema)
    form["title"] = "VqaForm"
    form["properties"]["image"] = {"type": "string", "format": "binary", "description": "the image file"}
    # Form fields are text; stop is a single string there.
    form["properties"]["stop"] = {"type": "string"}
    # A form field has no null: it is sent or left out (and "null" is no integer).
    for name, prop in form["properties"].items():
        form["properties"][name] = _without_null(prop)
    return {
        "required": True,
        "content": {
            "application/json": {"schema": json_schema},
            "multipart/form-data": {"schema": form},
        },
    }


STREAM_DESCRIPTION = (
    "With `stream: true`, `text/event-stream`: `data: {\"request_id\", \"delta\"}` per piece of text, then "
    "`data:` with the full response object (as without streaming), then `data: [DONE]`. An error after the "
    "stream began arrives as `data: {\"error\": {...}}` before `[DONE]`."
)

__all__ = ["STREAM_DESCRIPTION", "VqaDelta", "VqaJsonRequest", "VqaOptions", "VqaResponse", "request_body_schema"]
