"""The monitor: folds plans, job events, observations, progress and commands into task state."""
