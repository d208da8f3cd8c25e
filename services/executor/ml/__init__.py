"""Ferry's training kernel: models, deterministic local training, server strategies, quantization.

Pure functions and frozen dataclasses only; no I/O. The algorithm roles in
services/executor/algorithms move weights between parties and checkpoints and
call into here. Weights everywhere are `dict[str, np.ndarray]` (weights.py).

Modules (imported one by one on purpose: the aggregator needs only the numpy
ones, weights/aggregation/strategies/quantize, and should not pay for torch):
  models      ModelSpec, build_model, get_weights, set_weights, count_parameters
  training    TrainConfig, train_local, train_centralized, evaluate
  metrics     confusion-matrix metrics, mergeable across parties
  strategies  make_strategy, ServerState, state_to_arrays / state_from_arrays
  aggregation weighted average, median, trimmed mean, Krum
  quantize    fixed-point codes mod 2^bits for secure aggregation
"""
