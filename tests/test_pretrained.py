"""Pretrained weights come from a local file or timm's cache, never from the network."""

from __future__ import annotations

import pytest
import torch

from kagglecv.models import ModelError, build_model, model_stats


def test_weights_file_loads_into_our_model_with_a_new_head(tmp_path):
    source = build_model(name="kcv_cnn", num_classes=10, in_chans=1, img_size=16)
    path = tmp_path / "kcv.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    model = build_model(name="kcv_cnn", num_classes=3, in_chans=1, img_size=16, pretrained=str(path))
    torch.testing.assert_close(model.state_dict()["features.0.weight"], source.state_dict()["features.0.weight"])
    assert model.fc.out_features == 3


def test_timm_weights_file_adapts_channels_and_classes(tmp_path):
    source = build_model(name="test_resnet", num_classes=1000, in_chans=3, img_size=32)
    path = tmp_path / "test_resnet.pth"
    torch.save(source.state_dict(), path)
    model = build_model(name="test_resnet", num_classes=5, in_chans=1, img_size=32, pretrained=str(path))
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 5)
    first = model.conv1[0].weight if isinstance(model.conv1, torch.nn.Sequential) else model.conv1.weight
    assert first.shape[1] == 1  # timm summed the RGB filters into one grey channel


def test_missing_weights_file_says_what_to_do(tmp_path):
    with pytest.raises(ModelError, match=r"pretrained: weights file .*nope\.pt not found"):
        build_model(name="kcv_cnn", num_classes=3, in_chans=1, img_size=16, pretrained=str(tmp_path / "nope.pt"))


def test_timm_cache_is_never_downloaded_from(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty_cache"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch"))
    with pytest.raises(ModelError, match="no weights for 'test_resnet' in the local cache"):
        build_model(name="test_resnet", num_classes=3, in_chans=3, img_size=32, pretrained="timm")
    with pytest.raises(ModelError, match="has no published weights"):
        build_model(name="kcv_cnn", num_classes=3, in_chans=1, img_size=16, pretrained="timm")


def test_normalisation_follows_the_pretrained_config():
    model = build_model(name="resnet18", num_classes=3, in_chans=3, img_size=32)
    mean, std = model_stats(model, 3)
    assert mean == pytest.approx([0.485, 0.456, 0.406]) and std == pytest.approx([0.229, 0.224, 0.225])
    grey_mean, _ = model_stats(model, 1)
    assert grey_mean == pytest.approx([sum(mean) / 3])
