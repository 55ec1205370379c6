"""GET /v1/system: host telemetry and the service's state, for technicians and the page at '/'."""
from __future__ import annotations

from typing import Dict, List, Optional

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from server.api.deps import AuthDep, ServiceDep
from server.api.errors import error_responses

router = APIRouter(tags=["system"], dependencies=[AuthDep])


class CpuInfo(BaseModel):
    count: int
    percent: float
    load_avg: Optional[List[float]] = None


class MemoryInfo(BaseModel):
    total_bytes: int
    available_bytes: int
    used_percent: float
    swap_total_bytes: int
    swap_used_bytes: int


class DiskInfo(BaseModel):
    path: str
    total_bytes: int
    free_bytes: int
    used_percent: float


class ProcessInfo(BaseModel):
    pid: int
    rss_bytes: int
    cpu_percent: float
    threads: int
    uptime_s: float


class JetsonInfo(BaseModel):
    """jtop's latest sample (server/service/jetson.py), or why there is none."""

    status: str = Field(description="ok | starting | unavailable")
    reason: Optional[str] = Field(None, description="why telemetry is unavailable, and the fix")
    jetson_stats: Optional[str] = Field(None, description="the jetson-stats version read")
    interval_s: Optional[float] = None
    gpu_load_percent: Optional[float] = None
    ram_total_bytes: Optional[int] = None
    ram_used_bytes: Optional[int] = None
    gpu_shared_ram_bytes: Optional[int] = Field(None, description="RAM the integrated GPU holds")
    power_w: Optional[float] = Field(None, description="total board power")
    rails_w: Optional[Dict[str, float]] = None
    temperatures_c: Optional[Dict[str, float]] = None
    nvpmodel: Optional[str] = Field(None, description="power mode")
    jetson_clocks: Optional[bool] = None


class ServiceInfo(BaseModel):
    status: str
    model: str
    providers: Dict[str, List[str]]
    running: int
    waiting: int
    max_concurrency: int
    max_queue: int


class SystemInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    platform: Dict[str, str]
    cpu: CpuInfo
    memory: MemoryInfo
    disk: Optional[DiskInfo] = None
    temperatures_c: Dict[str, float]
    process: ProcessInfo
    jetson: JetsonInfo
    service: ServiceInfo


@router.get("/v1/system", response_model=SystemInfo, responses=error_responses([401]), summary="Host telemetry")
async def system(service: ServiceDep) -> SystemInfo:
    snap = service.telemetry.snapshot()
    running, waiting = service.queue_depth()
    pipeline = service.pipeline
    snap["service"] = {
        "status": service.status, "model": service.model_id,
        "providers": pipeline.runtime.engine.providers if pipeline is not None else {},
        "running": running, "waiting": waiting,
        "max_concurrency": service.settings.max_concurrency, "max_queue": service.settings.max_queue,
    }
    return SystemInfo.model_validate(snap)
