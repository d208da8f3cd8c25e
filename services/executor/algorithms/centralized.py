"""ferry.centralized: the baseline. The same model, structure and hyper-parameters, on pooled data.

It runs the clients' own training code over rounds x local_epochs epochs, so
every row is seen as often as in the federated run, and standardises with
the pooled rows' own statistics (the same numbers federated standardisation
computes from sums and counts).
"""

from __future__ import annotations

import numpy as np

from services.executor.algorithms.party_data import load_party_arrays
from services.executor.ml.models import ModelSpec, build_model, set_weights
from services.executor.ml.training import TrainConfig, evaluate, train_centralized
from shared.algorithms import RoleResult


class CentralizedTrainer:
    async def run(self, ctx) -> RoleResult:
        p = ctx.params
        raw = load_party_arrays(ctx, standardise_with=(np.float32(0), np.float32(1)))
        mean = raw.x_train.mean(axis=0)
        std = raw.x_train.std(axis=0)
        std = np.where(std > 0, std, 1.0)
        data = load_party_arrays(ctx, standardise_with=(mean, std))
        spec = ModelSpec.from_params(p, data.n_features, data.n_classes)
        epochs = int(p["rounds"]) * int(p["local_epochs"])
        result = train_centralized(spec, data.x_train, data.y_train, TrainConfig.from_params(p), epochs,
                                   seed=int(p["seed"]))
        model = build_model(spec, int(p["seed"]))
        set_weights(model, result.weights)
        ctx.artifacts.save(f"model-{ctx.task.step}", result.weights,
                           {"n_features": data.n_features, "n_classes": data.n_classes,
                            "model": p["model"], "hidden": p["hidden"]})
        scores = evaluate(model, data.x_test, data.y_test)
        await ctx.report(round=epochs, total_rounds=epochs, stage="trained", metrics={"train_loss": result.loss})
        return RoleResult(metrics={"test_accuracy": float(scores["accuracy"]), "test_loss": float(scores["loss"]),
                                   "test_n": float(scores["n"]), "epochs": float(epochs)})


class LocalTrainer(CentralizedTrainer):
    """ferry.local_train: the same code over one party's own rows (no data leaves the party)."""
