"""The train and predict stages with a timm model and every training option on, on tiny data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from kagglecv.params import EmaParams, MixupParams
from kagglecv.stages import predict, split, train
from tests.conftest import shipped


@pytest.mark.slow
@pytest.mark.parametrize(
    "options",
    [
        dict(model="test_resnet", img_size=16, optimizer="sgd", nesterov=True, scheduler="onecycle", loss="focal",
             class_balance="sampler", mixup=MixupParams(mixup_alpha=0.2, cutmix_alpha=1.0), ema=EmaParams(enabled=True),
             clip_grad=1.0, accumulate=2, tta=["hflip", "shift:1:0"], channels_last=True, augment="auto"),
        dict(model="mlp", img_size=8, scheduler="plateau", loss="mse", class_balance="weights", label_smoothing=0.1,
             monitor="valid_accuracy", loader="dataloader", augment_test=[{"Resize": {"height": 8, "width": 8}}]),
    ],
    ids=["timm-resnet-everything", "mlp-mse-weights"],
)
def test_stages_run_with_the_options(digits_paths, options):
    params = shipped(n_folds=2, epochs=2, batch_size=32, patience=1, warmup_epochs=1, **options)
    paths = digits_paths
    split.run(params, paths)
    summary = train.run(params, paths)
    assert set(summary["folds"]) == {"0", "1"}
    predict.run(params, paths)
    views = np.load(paths.test_views)
    assert views["probs"].shape[:2] == (2, 1 + len(params.tta))
    np.testing.assert_allclose(views["probs"].sum(-1), 1.0, atol=1e-4)  # two epochs: contracts, not accuracy
    assert "accuracy" in json.loads(paths.leaderboard_metrics.read_text())["leaderboard"]
