"""The scheduler's pure core: which algorithm tasks to dispatch, suspend, resume or cancel."""

from services.scheduler.core.decide import Cancel, Dispatch, Resume, RunnerCommand, SchedulerState, Suspend, step

__all__ = ["Cancel", "Dispatch", "Resume", "RunnerCommand", "SchedulerState", "Suspend", "step"]
