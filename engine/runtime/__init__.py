"""The asyncio supervisor: named stages in one TaskGroup, restarted with capped, jittered backoff."""

from dreamstate.engine.runtime.supervisor import FunctionStage, Stage, StageStatus, Supervisor

__all__ = ["FunctionStage", "Stage", "StageStatus", "Supervisor"]
