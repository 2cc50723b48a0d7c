"""The engine's contracts on tiny tensors: precision choice, divergence, EMA, mixup, TTA, losses, steps."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
import torch
from torch import nn

from kagglecv import engine
from kagglecv.engine import FitConfig, TrainingDiverged, build_trainer, fit, fit_config, predict_views, select_precision
from kagglecv.losses import build_loss, build_mixup, inverse_frequency
from kagglecv.optim import SCHEDULERS, LrSchedule
from kagglecv.params import ParamsError
from kagglecv.tta import TTAError, apply_view, parse_views
from tests.conftest import SHIPPED

CPU = select_precision("off", "cpu")


def config_of(**changes: object) -> FitConfig:
    """The engine's configuration of the shipped params.yaml, with `changes`."""
    return dataclasses.replace(fit_config(SHIPPED), **changes)
MEAN, STD = torch.tensor([0.5]), torch.tensor([0.25])


def batches(n: int = 32, batch_size: int = 8, seed: int = 0, num_classes: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """uint8 images (B, 1, 6, 6) whose class is which third of the image is bright."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    images = torch.randint(0, 60, (n, 1, 6, 6), generator=g, dtype=torch.uint8)
    for i, y in enumerate(labels.tolist()):
        images[i, 0, 2 * y : 2 * y + 2] += 150
    return [(images[i : i + batch_size], labels[i : i + batch_size]) for i in range(0, n, batch_size)]


def tiny_model(num_classes: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(36, num_classes))


# --- mixed precision -------------------------------------------------------------------------


def test_precision_is_float32_on_cpu_unless_asked():
    assert select_precision("auto", "cpu").amp_dtype is None
    assert select_precision("off", "cpu").amp_dtype is None
    assert select_precision("on", "cpu").amp_dtype is torch.bfloat16
    assert select_precision("bf16", "cpu").amp_dtype is torch.bfloat16
    forced = select_precision("fp16", "cpu")
    assert forced.amp_dtype is torch.float16 and forced.needs_scaler


def test_precision_on_gpus_with_and_without_bfloat16(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    ampere = select_precision("auto", "cuda")
    assert ampere.amp_dtype is torch.bfloat16 and not ampere.needs_scaler
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    older = select_precision("auto", "cuda")
    assert older.amp_dtype is torch.float16 and older.needs_scaler
    assert select_precision("off", "cuda").amp_dtype is None
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(ParamsError, match=r"amp: bf16, but Tesla V100 has no bfloat16; use amp: fp16"):
        select_precision("bf16", "cuda")


def test_channels_last_inputs():
    precision = select_precision("off", "cpu", channels_last=True)
    x = engine.to_input(torch.zeros(2, 3, 4, 4, dtype=torch.uint8), torch.zeros(3), torch.ones(3), precision)
    assert x.is_contiguous(memory_format=torch.channels_last)
    grey = torch.zeros(2, 1, 4, 4, dtype=torch.uint8)  # NCHW strides, as grid_sample's output has
    x = engine.to_input(grey, torch.zeros(1), torch.ones(1), precision)
    assert x.stride() == (16, 1, 4, 1)  # NHWC strides: the convolutions take the channels-last path


@pytest.mark.slow  # torch.compile
def test_compiled_model_trains_like_the_plain_one_and_keeps_plain_checkpoint_keys():
    config = config_of(epochs=1, lr=0.05, scheduler="none")
    plain = _trainer(config)
    compiled = _trainer(dataclasses.replace(config, compile=True))
    assert engine.train_one_epoch(compiled, batches(), mean=MEAN, std=STD) == pytest.approx(
        engine.train_one_epoch(plain, batches(), mean=MEAN, std=STD), rel=1e-5
    )
    assert compiled.model._compiled_call_impl is not None  # torch.compile (inductor) ran
    assert list(compiled.model.state_dict()) == list(plain.model.state_dict()) == ["1.weight", "1.bias"]
    for a, b in zip(plain.model.parameters(), compiled.model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# --- training steps --------------------------------------------------------------------------


def _trainer(config: FitConfig, model: nn.Module | None = None, steps: int = 4, **kwargs):
    return build_trainer(model or tiny_model(), config=config, precision=CPU, steps_per_epoch=steps, num_classes=3, **kwargs)


def test_nan_loss_stops_with_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(36, 3)

        def forward(self, x):
            return self.fc(x.flatten(1)) * float("nan")

    trainer = _trainer(config_of(epochs=1, lr=0.1), Broken())
    with pytest.raises(TrainingDiverged, match=r"the loss became nan at step 0"):
        engine.train_one_epoch(trainer, batches(), mean=MEAN, std=STD)


@pytest.mark.parametrize("loss", ["cross_entropy", "focal", "mse"])
@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_one_step_lowers_the_loss_on_a_fixed_batch(loss, optimizer):
    trainer = _trainer(config_of(epochs=1, lr=0.05, optimizer=optimizer, loss=loss, scheduler="none"))
    x = engine.to_input(batches()[0][0], MEAN, STD, CPU)
    y = batches()[0][1]
    before = trainer.loss_fn(trainer.model(x), y).item()
    trainer.loss_fn(trainer.model(x), y).backward()
    trainer.optimizer_step()
    assert trainer.loss_fn(trainer.model(x), y).item() < before


def test_ema_weights_differ_from_the_raw_weights_after_a_step():
    trainer = _trainer(config_of(epochs=1, lr=0.1, ema=True, ema_decay=0.9, scheduler="none"))
    engine.train_one_epoch(trainer, batches(), mean=MEAN, std=STD)
    raw, ema = trainer.model.state_dict(), trainer.ema.module.state_dict()
    assert trainer.eval_model is trainer.ema.module
    assert not torch.equal(raw["1.weight"], ema["1.weight"])


def test_mixup_batches_carry_soft_targets():
    mixup = build_mixup(mixup_alpha=0.4, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0, num_classes=3)
    np.random.seed(0)
    x, y = torch.randn(8, 1, 6, 6), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    mixed, target = mixup(x.clone(), y)
    assert target.shape == (8, 3)
    torch.testing.assert_close(target.sum(1), torch.ones(8))
    assert ((target > 0) & (target < 1)).any()  # soft, not one-hot
    assert not torch.equal(mixed, x)
    assert build_mixup(mixup_alpha=0.0, cutmix_alpha=0.0, prob=1.0, switch_prob=0.5, label_smoothing=0.0, num_classes=3) is None


def test_gradient_accumulation_matches_one_big_batch():
    data = batches(16, 16)
    big = _trainer(config_of(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0, scheduler="none"), steps=1)
    engine.train_one_epoch(big, data, mean=MEAN, std=STD)
    small = _trainer(config_of(epochs=1, lr=0.1, optimizer="sgd", momentum=0.0, weight_decay=0.0, scheduler="none",
                               accumulate=2), steps=2)  # fmt: skip
    engine.train_one_epoch(small, batches(16, 8), mean=MEAN, std=STD)
    assert small.step == big.step == 1
    for a, b in zip(big.model.parameters(), small.model.parameters()):
        torch.testing.assert_close(a, b)


def test_gradient_clipping_bounds_the_norm(monkeypatch):
    trainer = _trainer(config_of(epochs=1, lr=1.0, clip_grad=0.01, scheduler="none"))
    norms = []
    step = torch.optim.AdamW.step

    def spy(self, *args, **kwargs):
        norms.append(torch.norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()])).item())
        return step(self, *args, **kwargs)

    monkeypatch.setattr(torch.optim.AdamW, "step", spy)
    engine.train_one_epoch(trainer, batches(), mean=MEAN, std=STD)
    assert norms and max(norms) <= 0.01 + 1e-6


@pytest.mark.parametrize("name", SCHEDULERS)
def test_every_schedule_warms_up_or_decays(name):
    model = tiny_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = LrSchedule(optimizer, name=name, epochs=4, steps_per_epoch=5, warmup_epochs=1, decay_epochs=1)
    lrs = []
    for epoch in range(4):
        for step in range(5):
            optimizer.step()
            schedule.after_step(epoch * 5 + step + 1)
        schedule.after_epoch(epoch + 1, metric=1.0)  # a flat metric: plateau decays
        lrs.append(optimizer.param_groups[0]["lr"])
    if name == "none":
        assert lrs == [0.1] * 4
    else:
        assert max(lrs) <= 0.1 + 1e-9 and lrs[-1] < max(lrs)


def test_fit_keeps_the_best_epoch_and_lowers_the_loss():
    data = batches(64, 16)
    valid = batches(24, 24, seed=1)
    trainer = _trainer(config_of(epochs=4, lr=0.05, patience=10), steps=len(data))
    result = fit(trainer, lambda epoch: data, lambda: valid, valid[0][1].numpy(), config=config_of(epochs=4, lr=0.05),
                 mean=MEAN, std=STD)  # fmt: skip
    losses = [h.valid_loss for h in result.history]
    assert result.best_epoch == int(np.argmin(losses)) and losses[-1] < losses[0]
    assert result.best_probs.shape == (24, 3)


def _fit_fp16(config: FitConfig, data, valid, *, resume: dict | None = None, stop_after: int | None = None):
    """`fit` in float16 autocast with a GradScaler on the CPU; snapshots saved and loaded as the stage does."""
    trainer = build_trainer(tiny_model(), config=config, precision=select_precision("fp16", "cpu"),
                            steps_per_epoch=len(data), num_classes=3)  # fmt: skip
    snapshots = {}

    def on_epoch(log, state):
        buffer = io.BytesIO()
        torch.save(state(), buffer)
        snapshots[log.epoch + 1] = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
        if stop_after is not None and log.epoch + 1 == stop_after:
            raise KeyboardInterrupt

    try:
        result = fit(trainer, lambda epoch: data, lambda: valid, valid[0][1].numpy(), config=config, mean=MEAN, std=STD,
                     resume=resume, on_epoch=on_epoch)  # fmt: skip
    except KeyboardInterrupt:
        result = None
    return trainer, result, snapshots


def test_float16_trains_with_a_grad_scaler_and_resumes_exactly():
    data, valid = batches(64, 16), batches(24, 24, seed=1)
    config = config_of(epochs=4, lr=0.05, patience=10)
    torch.manual_seed(0)
    trainer, whole, snapshots = _fit_fp16(config, data, valid)
    assert isinstance(trainer.scaler, torch.amp.GradScaler)
    assert snapshots[2]["scaler"]["_growth_tracker"] == snapshots[2]["step"] == 8  # the scaler saw every step
    losses = [h.valid_loss for h in whole.history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0] and whole.history[-1].valid_accuracy > 0.9

    torch.manual_seed(0)
    _, stopped, first_half = _fit_fp16(config, data, valid, stop_after=2)
    assert stopped is None and set(first_half) == {1, 2}
    again, resumed, _ = _fit_fp16(config, data, valid, resume=first_half[2])
    assert again.scaler.state_dict() == trainer.scaler.state_dict()  # growth tracker 16, not restarted at 0
    assert [h.valid_loss for h in resumed.history] == losses
    np.testing.assert_array_equal(resumed.best_probs, whole.best_probs)
    for name, value in whole.best_state.items():
        torch.testing.assert_close(resumed.best_state[name], value, rtol=0, atol=0)


# --- losses and class balance ----------------------------------------------------------------


def test_focal_loss_with_gamma_zero_is_cross_entropy():
    logits, y = torch.randn(8, 3), torch.randint(0, 3, (8,))
    focal = build_loss(name="focal", focal_gamma=0.0)
    torch.testing.assert_close(focal(logits, y), nn.functional.cross_entropy(logits, y))


def test_losses_accept_soft_targets():
    logits, soft = torch.randn(4, 3), torch.softmax(torch.randn(4, 3), 1)
    for name in ("cross_entropy", "focal", "mse"):
        assert torch.isfinite(build_loss(name=name)(logits, soft))


@pytest.mark.parametrize("name", ["cross_entropy", "focal", "mse"])
def test_one_hot_rows_and_their_class_indices_give_the_same_smoothed_loss(name):
    logits, y = torch.randn(6, 4), torch.randint(0, 4, (6,))
    loss = build_loss(name=name, label_smoothing=0.1, focal_gamma=1.5)
    torch.testing.assert_close(loss(logits, nn.functional.one_hot(y, 4).float()), loss(logits, y))


def test_class_weights_reach_the_loss():
    weights = torch.tensor([1.0, 2.0, 3.0])
    trainer = _trainer(config_of(epochs=1, lr=0.1), class_weights=weights)
    torch.testing.assert_close(trainer.loss_fn.weight, weights)


def test_inverse_frequency_weights_average_one_over_images():
    labels = np.array([0] * 8 + [1] * 2)
    w = inverse_frequency(labels, 3)
    assert w[1] == pytest.approx(4 * w[0]) and w[2] == 0
    assert w[labels].mean() == pytest.approx(1.0)


# --- test-time augmentation ------------------------------------------------------------------


class FlipInvariant(nn.Module):
    """Global average pooling then a linear layer: no flip can change its output."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 3)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


def test_tta_of_a_flip_invariant_model_leaves_probabilities_unchanged():
    data = batches()
    per_view = predict_views(FlipInvariant(), data, precision=CPU, mean=MEAN, std=STD,
                             views=parse_views(["hflip", "vflip"]))  # fmt: skip
    assert per_view.shape == (3, 32, 3)
    np.testing.assert_allclose(per_view[1], per_view[0], rtol=1e-6)
    np.testing.assert_allclose(per_view[2], per_view[0], rtol=1e-6)


def test_shift_view_moves_pixels_and_fills_with_zero():
    x = torch.arange(1, 10, dtype=torch.float32).view(1, 1, 3, 3)
    right = apply_view(x, "shift:1:0")
    assert right[0, 0].tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]
    up = apply_view(x, "shift:0:-1")
    assert up[0, 0].tolist() == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]


def test_unknown_tta_view_names_the_entry():
    with pytest.raises(TTAError, match=r"tta\[1\]: unknown view 'hflp'"):
        parse_views(["vflip", "hflp"])
