"""ferry.evaluate: a trained model's metrics on each party's held-out rows."""

from __future__ import annotations

from services.executor.algorithms.party_data import load_party_arrays
from services.executor.ml.models import ModelSpec, build_model, set_weights
from services.executor.ml.training import evaluate
from shared.algorithms import RoleResult


class EvaluateRole:
    async def run(self, ctx) -> RoleResult:
        weights, meta = ctx.artifacts.load(f"model-{ctx.params['model_from']}")
        data = load_party_arrays(ctx)
        spec = ModelSpec.from_params(meta, int(meta["n_features"]), int(meta["n_classes"]))
        model = build_model(spec, 0)
        set_weights(model, weights)
        scores = evaluate(model, data.x_test, data.y_test)
        return RoleResult(metrics={"test_accuracy": float(scores["accuracy"]), "test_loss": float(scores["loss"]),
                                   "test_n": float(scores["n"]), "test_macro_f1": float(scores["macro_f1"])})
