"""PyTorch frontend: a small CNN defined here imports and matches torch's own output."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

from opennpu.errors import ModelFormatError, UnsupportedOpError  # noqa: E402
from opennpu.frontends.torch import import_torch  # noqa: E402
from opennpu.runtime.cpu import run_graph  # noqa: E402


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU())
        self.pw = nn.Conv2d(16, 16, 1)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1), nn.Hardswish(), nn.AdaptiveAvgPool2d(1))
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        y = self.stem(x)
        y = y + self.pw(self.dw(y))  # residual
        y = self.head(self.pool(y))
        return torch.softmax(self.fc(torch.flatten(y, 1)), dim=1)


def _randomize_bn(module, gen):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=gen) + 0.5)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_small_cnn_matches_torch():
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():
        _randomize_bn(model, gen)
    x = torch.randn(2, 3, 32, 32, generator=gen)
    graph = import_torch(model, (x,))
    assert "BatchNormalization" not in graph.op_types()
    with torch.no_grad():
        expected = model(x).numpy()
    got = next(iter(run_graph(graph, {graph.inputs[0]: x.numpy()}).values()))
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_not_a_module_is_rejected():
    with pytest.raises(ModelFormatError):
        import_torch(lambda x: x, (torch.zeros(1),))


def test_export_failure_is_typed():
    class Bad(nn.Module):
        def forward(self, x):
            return torch.linalg.svd(x)[1]  # aten::linalg_svd has no ONNX export

    with pytest.raises(UnsupportedOpError):
        import_torch(Bad(), (torch.zeros(3, 3),))
