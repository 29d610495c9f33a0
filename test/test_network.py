"""The P4 ResNet as specified: 70 layers, 78 px receptive field, rotation invariance, dense = per-window, export."""

from __future__ import annotations

import pytest
import torch

from model import geometry
from model.architecture import (
    ArchitectureConfig,
    output_stride_px,
    receptive_field_px,
    spatial_sizes,
    weighted_layer_count,
)
from model.plain import PlainP4ResNet

p4resnet = pytest.importorskip("model.p4resnet")

STRIDE = geometry.OUTPUT_STRIDE_PX
RF = geometry.RECEPTIVE_FIELD_PX


@pytest.fixture(scope="module")
def trained_like_p4net():
    """An e2cnn net with batch-norm statistics from a few train-mode passes, then in eval mode."""
    torch.manual_seed(0)
    net = p4resnet.P4ResNet(ArchitectureConfig())
    net.train()
    with torch.no_grad():
        for _ in range(2):
            net(torch.rand(4, 3, RF + 2 * STRIDE, RF + 2 * STRIDE))
    return net.eval()


def test_geometry_of_default_architecture():
    config = ArchitectureConfig()
    assert receptive_field_px(config) == RF == 78
    assert output_stride_px(config) == STRIDE
    assert weighted_layer_count(config) == 70
    assert spatial_sizes(config, RF)[-1] == 1
    assert spatial_sizes(config, RF + 5 * STRIDE)[-1] == 6


def test_off_grid_input_is_rejected():
    with pytest.raises(ValueError, match="stride grid"):
        spatial_sizes(ArchitectureConfig(), RF + 3)


@pytest.mark.parametrize("quarter_turns", [1, 2, 3])
def test_rot90_equivariance(trained_like_p4net, quarter_turns):
    image = torch.rand(1, 3, RF + 4 * STRIDE, RF + 4 * STRIDE)
    with torch.no_grad():
        reference = torch.softmax(trained_like_p4net(image), 1)
        rotated = torch.softmax(trained_like_p4net(torch.rot90(image, quarter_turns, dims=(2, 3))), 1)
    expected = torch.rot90(reference, quarter_turns, dims=(2, 3))
    assert (rotated - expected).abs().max().item() < 1e-4


def test_dense_map_equals_per_window_scoring(trained_like_p4net):
    torch.manual_seed(1)
    image = torch.rand(1, 3, RF + 6 * STRIDE, RF + 5 * STRIDE)
    with torch.no_grad():
        dense = trained_like_p4net(image)
        assert dense.shape[-2:] == (7, 6)
        for row, col in [(0, 0), (6, 5), (3, 2), (1, 4)]:
            window = image[..., row * STRIDE : row * STRIDE + RF, col * STRIDE : col * STRIDE + RF]
            single = trained_like_p4net(window)
            assert single.shape[-2:] == (1, 1)
            assert torch.allclose(single[..., 0, 0], dense[..., row, col], atol=1e-4)


def test_export_matches_e2cnn(trained_like_p4net):
    plain = PlainP4ResNet(ArchitectureConfig())
    plain.load_state_dict(trained_like_p4net.export_state_dict(), strict=True)
    plain.eval()
    image = torch.rand(2, 3, RF + 3 * STRIDE, RF + 3 * STRIDE)
    with torch.no_grad():
        assert torch.allclose(plain(image), trained_like_p4net(image), atol=1e-4)


def test_plain_net_does_not_need_e2cnn():
    import subprocess
    import sys

    code = (
        "import sys; sys.modules['e2cnn'] = None\n"
        "import process, app.algorithm, model.detector, app.score_patches\nprint('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_exported_weights_load_back_into_the_e2cnn_network():
    """Training can start from a shipped bundle: export -> load_exported_state_dict -> export is the identity
    (the narrow twin of the architecture: same layers, same kinds of filters, seconds instead of a minute)."""
    from model.architecture import architecture

    torch.manual_seed(1)
    original = p4resnet.P4ResNet(architecture("narrow")).train()
    with torch.no_grad():
        original(torch.rand(4, 3, RF, RF))  # batch-norm statistics that are not the defaults
    exported = original.export_state_dict()
    twin = p4resnet.P4ResNet(architecture("narrow"))
    assert twin.load_exported_state_dict(exported) < 1e-5
    x = torch.rand(2, 3, RF, RF)
    assert torch.allclose(twin.eval()(x), original.eval()(x), atol=1e-5)
    exported["stem.weight"] = torch.randn_like(exported["stem.weight"])  # not a P4 filter: refused
    with pytest.raises(ValueError, match="round-trip"):
        p4resnet.P4ResNet(architecture("narrow")).load_exported_state_dict(exported)


def test_folded_batch_norms_compute_the_same_function():
    from conftest import random_plain_state

    net = PlainP4ResNet(ArchitectureConfig())
    for module in net.modules():  # non-trivial affine parameters too, not only statistics
        if isinstance(module, torch.nn.BatchNorm2d):
            torch.nn.init.uniform_(module.weight, 0.5, 1.5)
            torch.nn.init.uniform_(module.bias, -0.2, 0.2)
    state = random_plain_state(5) | {k: v for k, v in net.state_dict().items() if k.endswith(("weight", "bias"))}
    net.load_state_dict(state)
    net.eval()
    x = torch.rand(2, 3, 78 + 8 * 3, 78 + 8 * 3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = net(x)
        folded = net.fold_batchnorms()
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())  # bn1s and head: affine
        torch.testing.assert_close(folded(x), expected, atol=1e-4, rtol=1e-4)
    with pytest.raises(RuntimeError, match="eval mode"):
        PlainP4ResNet(ArchitectureConfig()).train().fold_batchnorms()
