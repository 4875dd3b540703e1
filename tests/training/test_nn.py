"""Models built with training.nn: names, seeded PyTorch-like init, outputs equal to torch's."""
from collections import OrderedDict

import numpy as np
import pytest

import inference.ops  # noqa: F401
from inference.session import Session
from inference.shape_inference import infer_shapes
from training import nn


def _cnn():
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(4, 8, 3, stride=2, groups=2), nn.LeakyReLU(0.1), nn.AvgPool2d(2, padding=1),
        nn.Dropout(0.3), nn.Flatten(), nn.Linear(8 * 2 * 2, 5))


def test_parameter_names_and_shapes():
    m = _cnn().to_model((None, 1, 12, 12))
    inits = m.graph.initializers
    assert inits["0.weight"].shape == (4, 1, 3, 3) and inits["0.bias"].shape == (4,)
    assert {"1.weight", "1.bias", "1.running_mean", "1.running_var"} <= set(inits)
    assert inits["4.weight"].shape == (8, 2, 3, 3)
    assert inits["9.weight"].shape == (5, 8 * 2 * 2)
    named = nn.Sequential(OrderedDict(body=nn.Sequential(nn.Linear(3, 4), nn.Tanh()), fc=nn.Linear(4, 2)))
    assert set(named.to_model((None, 3)).graph.initializers) == {"body.0.weight", "body.0.bias", "fc.weight", "fc.bias"}


def test_init_is_seeded_and_kaiming_uniform():
    a = nn.Sequential(nn.Linear(400, 300)).to_model((None, 400), seed=1).graph.initializers
    b = nn.Sequential(nn.Linear(400, 300)).to_model((None, 400), seed=1).graph.initializers
    c = nn.Sequential(nn.Linear(400, 300)).to_model((None, 400), seed=2).graph.initializers
    np.testing.assert_array_equal(a["0.weight"], b["0.weight"])
    assert not np.array_equal(a["0.weight"], c["0.weight"])
    w = a["0.weight"]
    bound = 1 / np.sqrt(400)
    assert w.dtype == np.float32 and np.abs(w).max() <= bound and np.abs(w).max() > 0.95 * bound
    assert abs(w.std() - bound / np.sqrt(3)) < 0.01 * bound  # uniform(-b, b) has std b / sqrt(3)


def test_shapes_infer_with_dynamic_batch():
    m = infer_shapes(_cnn().to_model((None, 1, 12, 12)))
    assert m.graph.outputs[0].type.shape == ("N", 5)


def test_outputs_match_torch():
    torch = pytest.importorskip("torch")
    tnn = torch.nn
    ref = tnn.Sequential(
        tnn.Conv2d(1, 4, 3, padding=1), tnn.BatchNorm2d(4), tnn.ReLU(), tnn.MaxPool2d(2),
        tnn.Conv2d(4, 8, 3, stride=2, groups=2), tnn.LeakyReLU(0.1), tnn.AvgPool2d(2, padding=1),
        tnn.Dropout(0.3), tnn.Flatten(), tnn.Linear(8 * 2 * 2, 5)).eval()
    model = _cnn().to_model((None, 1, 12, 12), seed=3)
    inits = model.graph.initializers
    rng = np.random.default_rng(0)
    inits["1.running_mean"][:] = rng.normal(size=4)
    inits["1.running_var"][:] = rng.uniform(0.5, 2, 4)
    inits["1.weight"][:] = rng.normal(size=4)
    state = {k: torch.tensor(v) for k, v in inits.items() if k in ref.state_dict()}
    ref.load_state_dict(state, strict=False)
    x = rng.normal(size=(3, 1, 12, 12)).astype(np.float32)
    (got,) = Session(model).run({"input": x})
    np.testing.assert_allclose(got, ref(torch.tensor(x)).detach().numpy(), rtol=1e-4, atol=1e-5)


def test_groups_must_divide_channels():
    from inference.errors import InvalidModelError
    with pytest.raises(InvalidModelError):
        nn.Conv2d(3, 4, 3, groups=2)
