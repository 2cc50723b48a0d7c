import pytest
import timm
import torch

from kagglecv.models import ModelError, build_model

OURS = ["kcv_cnn", "softmax_regression", "mlp", "vgg_style"]


@pytest.mark.parametrize("name", OURS)
@pytest.mark.parametrize("in_chans,img_size", [(1, 8), (3, 32)])
def test_registered_models_map_a_batch_to_logits(name, in_chans, img_size):
    assert timm.is_model(name)
    model = build_model(name=name, num_classes=7, in_chans=in_chans, img_size=img_size).eval()
    out = model(torch.rand(5, in_chans, img_size, img_size))
    assert out.shape == (5, 7)
    assert torch.isfinite(out).all()


def test_any_timm_model_is_built_with_data_derived_shapes():
    model = build_model(name="test_resnet", num_classes=3, in_chans=1, img_size=32).eval()
    assert model(torch.rand(2, 1, 32, 32)).shape == (2, 3)


def test_unknown_model_lists_close_names():
    with pytest.raises(ModelError, match="kcv_cnn"):
        build_model(name="kcv_cn", num_classes=3, in_chans=1, img_size=8)


@pytest.mark.parametrize("name", OURS)
def test_one_optimisation_step_lowers_the_loss_on_a_fixed_batch(name):
    torch.manual_seed(0)
    model = build_model(name=name, num_classes=4, in_chans=1, img_size=16)
    model.eval()  # fixed dropout and BatchNorm statistics: the same function before and after the step
    x, y = torch.randn(16, 1, 16, 16), torch.randint(0, 4, (16,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    before = torch.nn.functional.cross_entropy(model(x), y)
    optimizer.zero_grad()
    before.backward()
    optimizer.step()
    after = torch.nn.functional.cross_entropy(model(x), y)
    assert after.item() < before.item()


def test_kcv_cnn_widens_for_small_images_and_stays_lean_for_photos():
    def first_width(img_size: int) -> int:
        model = build_model(name="kcv_cnn", num_classes=3, in_chans=3, img_size=img_size)
        return next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d)).out_channels

    assert first_width(16) == first_width(48) == 32
    assert first_width(49) == first_width(128) == 16


def test_kcv_cnn_features_see_a_whole_32_px_digit():
    """Before global pooling, some position of the last feature map depends on all four corners of a
    32-px image (a receptive field of at least 32 px), so the pooled features describe whole digits."""
    torch.manual_seed(0)
    model = build_model(name="kcv_cnn", num_classes=3, in_chans=3, img_size=32).eval()
    trunk = model.features[:-2]  # without AdaptiveAvgPool2d and Flatten: (B, C, h, w)
    x = torch.rand(1, 3, 32, 32, requires_grad=True)
    out = trunk(x)
    h, w = out.shape[-2:]
    corners = [(slice(0, 2), slice(0, 2)), (slice(0, 2), slice(30, 32)), (slice(30, 32), slice(0, 2)), (slice(30, 32), slice(30, 32))]
    whole = []
    for i in range(h):
        for j in range(w):
            (grad,) = torch.autograd.grad(out[0, :, i, j].sum(), x, retain_graph=True)
            whole.append(all(grad[0, :, r, c].abs().sum() > 0 for r, c in corners))
    assert any(whole)
