"""The asyncio supervisor: named stages in one TaskGroup, restarted with capped, jittered backoff."""

from engine.runtime.supervisor import Backoff, FunctionStage, Stage, StageStatus, Supervisor

__all__ = ["Backoff", "FunctionStage", "Stage", "StageStatus", "Supervisor"]
