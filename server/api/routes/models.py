"""GET /v1/models (OpenAI's list): the one model this server serves, named by its bundle."""
from __future__ import annotations

from typing import List

from fastapi import APIRouter
from pydantic import BaseModel, Field
from typing_extensions import Literal

from server.api.deps import AuthDep, ServiceDep, require_served_model
from server.api.errors import error_responses
from server.service.core import Service

router = APIRouter(tags=["models"], dependencies=[AuthDep])


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "tinyllava-med"
    max_context: int = Field(description="KV cache length in tokens, image tokens included")
    precision: str
    template: str = Field(description="prompt template of the bundle")
    ready: bool


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: List[ModelCard]


def _card(service: Service) -> ModelCard:
    m = service.manifest
    return ModelCard(id=service.model_id, created=int(service.started), max_context=m.max_context,
                     precision=m.precision, template=m.template, ready=service.ready)


@router.get("/v1/models", response_model=ModelList, responses=error_responses([401]), summary="The served model")
async def list_models(service: ServiceDep) -> ModelList:
    return ModelList(data=[_card(service)])


@router.get("/v1/models/{model:path}", response_model=ModelCard, responses=error_responses([401, 404]),
            summary="One model by id")
async def get_model(model: str, service: ServiceDep) -> ModelCard:
    require_served_model(service, model)
    return _card(service)
