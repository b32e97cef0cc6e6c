import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from miaudit.classifier.training import (
    TrainConfig,
    TrainingPlugin,
    accuracy,
    build_model,
    build_model_from_config,
    predict_logits,
    shuffled_batches,
    train_classifier,
)
from miaudit.config import from_dict
from miaudit.data import ArrayDataset, load_dataset
from miaudit.errors import ConfigError
from miaudit.utils.device import resolve_device


@pytest.fixture(scope="module")
def digits():
    d = load_dataset("digits")
    return d.subset(np.arange(300))


def _weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def _train(dataset, **overrides):
    config = TrainConfig(**{"epochs": 2, "batch_size": 32, **overrides})
    model = build_model_from_config(config, dataset.input_shape, dataset.n_classes)
    return train_classifier(model, dataset, config, progress=False)


def test_same_seed_gives_identical_weights(digits):
    a, b, c = _train(digits, seed=5), _train(digits, seed=5), _train(digits, seed=6)
    wa, wb, wc = _weights(a.model), _weights(b.model), _weights(c.model)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    assert a.history == [{**h, "seconds": a.history[i]["seconds"]} for i, h in enumerate(b.history)]


def test_training_leaves_global_rng_alone(digits):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _train(digits, seed=0)
    torch.testing.assert_close(torch.rand(3), expected)


def test_mlp_learns_digits_and_reports_cost(digits):
    result = _train(digits, epochs=15, hidden=[64])
    assert [h["epoch"] for h in result.history] == list(range(1, 16))
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert accuracy(result.model, digits) > 0.9
    assert result.seconds > 0 and result.peak_memory_mb > 10 and "RSS" in result.memory_source


def test_cnn_and_sgd_train(digits):
    result = _train(digits, model="cnn", hidden=[32], optimizer="sgd", lr=0.05, epochs=3,
                    model_options={"channels": [8, 16]})
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    logits = predict_logits(result.model, digits.x[:5])
    assert logits.shape == (5, 10) and logits.dtype == np.float32


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_resnet18_small_image_shapes(norm):
    model = build_model("resnet18", (3, 32, 32), 10, width=8, norm=norm, seed=0)
    assert model.stem[0].kernel_size == (3, 3) and model.stem[0].stride == (1, 1)
    assert not any(isinstance(m, torch.nn.MaxPool2d) for m in model.modules())
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)
    gray = build_model("resnet18", (1, 8, 8), 4, width=8, norm=norm, seed=0)
    assert gray(torch.zeros(2, 1, 8, 8)).shape == (2, 4)
    full = build_model("resnet18", (3, 32, 32), 10)
    assert sum(p.numel() for p in full.parameters()) == 11_173_962  # CIFAR ResNet-18


def test_build_model_seed_is_reproducible_and_errors():
    a = build_model("mlp", (4,), 3, hidden=(5,), seed=1)
    b = build_model("mlp", (4,), 3, hidden=(5,), seed=1)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
    with pytest.raises(ConfigError, match="unknown model 'vit'"):
        build_model("vit", (4,), 3)
    with pytest.raises(ConfigError, match="needs image inputs"):
        build_model("cnn", (4,), 3)
    with pytest.raises(ConfigError, match="too small"):
        build_model("cnn", (1, 2, 2), 3)


class RecordingPlugin(TrainingPlugin):
    name = "recorder"

    def __init__(self):
        self.calls = []

    def setup(self, model, optimizer, loader):
        self.calls.append("setup")
        return model, optimizer, loader

    def loss(self, model, x, y, logits, base_loss):
        self.calls.append("loss")
        return base_loss * 0.0 + 1.0 * base_loss + 0.01 * logits.pow(2).mean()

    def on_epoch_end(self, epoch, model):
        self.calls.append(f"epoch{epoch}")
        return {"extra": epoch * 10}

    def finalize(self, model):
        self.calls.append("finalize")
        return model

    def report(self):
        return {"n_calls": len(self.calls)}


def test_plugin_hooks_are_called_in_order(digits):
    plugin = RecordingPlugin()
    config = TrainConfig(epochs=2, batch_size=100, seed=0)
    model = build_model_from_config(config, digits.input_shape, digits.n_classes)
    result = train_classifier(model, digits, config, plugins=[plugin], progress=False)
    assert plugin.calls == ["setup", "loss", "loss", "loss", "epoch0", "loss", "loss", "loss", "epoch1", "finalize"]
    assert [h["extra"] for h in result.history] == [0, 10]
    assert result.reports == {"recorder": {"n_calls": 10}}
    plain = _train(digits, batch_size=100, seed=0)
    assert result.history[0]["loss"] != plain.history[0]["loss"]  # the plugin's loss was the one optimised


def test_plugin_setup_can_replace_the_optimizer(digits):
    class Frozen(TrainingPlugin):
        def setup(self, model, optimizer, loader):
            return model, torch.optim.SGD(model.parameters(), lr=0.0), loader

    config = TrainConfig(epochs=1, seed=0)
    model = build_model_from_config(config, digits.input_shape, digits.n_classes)
    before = _weights(model)
    train_classifier(model, digits, config, plugins=[Frozen()], progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("n,batch_size,seed", [(300, 32, 0), (64, 64, 3), (10, 3, 7)])
def test_shuffled_batches_are_the_data_loaders_order(n, batch_size, seed):
    loader = DataLoader(TensorDataset(torch.arange(n)), batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    expected = [[batch for (batch,) in loader] for _ in range(3)]
    got = shuffled_batches(n, batch_size, seed, epochs=3)
    assert [len(epoch) for epoch in got] == [len(epoch) for epoch in expected]
    assert all(torch.equal(a, b) for ea, eb in zip(got, expected) for a, b in zip(ea, eb))
    assert got[0][0].dtype == torch.int64


class SameLoader(TrainingPlugin):
    """Replaces the loop's DataLoader by an equal one, so the loop iterates a DataLoader as before the change."""

    def setup(self, model, optimizer, loader):
        again = DataLoader(loader.dataset, batch_size=loader.batch_size, shuffle=True,
                           generator=torch.Generator().manual_seed(loader.generator.initial_seed()))
        return model, optimizer, again


@pytest.mark.parametrize("overrides", [{}, {"optimizer": "sgd", "weight_decay": 1e-3, "lr": 0.05},
                                       {"model": "cnn", "hidden": [16], "model_options": {"channels": [4, 8]}}])
def test_gathered_batches_train_exactly_like_the_data_loader(digits, overrides):
    config = TrainConfig(**{"epochs": 2, "batch_size": 24, "seed": 4, **overrides})
    fast = train_classifier(build_model_from_config(config, digits.input_shape, digits.n_classes), digits, config,
                            progress=False)
    loader = train_classifier(build_model_from_config(config, digits.input_shape, digits.n_classes), digits, config,
                              plugins=[SameLoader()], progress=False)
    a, b = _weights(fast.model), _weights(loader.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [h["loss"] for h in fast.history] == [h["loss"] for h in loader.history]


def test_bfloat16_mixed_precision_trains_float32_weights(digits):
    result = _train(digits, precision="bfloat16", epochs=6, hidden=[64], lr=3e-3)
    assert all(p.dtype == torch.float32 for p in result.model.parameters())
    assert result.history[-1]["loss"] < result.history[0]["loss"]
    assert predict_logits(result.model, digits.x[:4]).dtype == np.float32  # scoring stays float32
    plain = _train(digits, epochs=6, hidden=[64], lr=3e-3)
    assert not torch.equal(result.model.net[1].weight, plain.model.net[1].weight)


def test_device_resolution(monkeypatch):
    assert resolve_device("cpu", where="training.device") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="training.device: 'cuda' asks for a GPU"):
        resolve_device("cuda", where="training.device")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="has 2 CUDA GPU"):
        resolve_device("cuda:2")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("gpu")
    assert TrainConfig(device="auto").device == "auto"  # resolved when training starts


@pytest.mark.parametrize("key,value", [("epochs", 0), ("lr", -1.0), ("batch_size", 0), ("momentum", 1.5),
                                       ("weight_decay", -0.1), ("hidden", [0]), ("optimizer", "rmsprop"),
                                       ("model", "vit"), ("device", "tpu"), ("device", "cuda:x"), ("device", "cpu:0"),
                                       ("precision", "float16"), ("lr", float("nan"))])
def test_bad_train_config(key, value):
    with pytest.raises(ConfigError, match=key):
        TrainConfig(**{key: value})


def test_train_config_from_dict():
    config = from_dict(TrainConfig, {"model": "cnn", "epochs": 3, "lr": 1, "hidden": [16]})
    assert config.lr == 1.0 and config.hidden == [16]
    with pytest.raises(ConfigError, match="unknown key 'epoch'"):
        from_dict(TrainConfig, {"epoch": 3})


def test_model_output_must_match_classes():
    data = ArrayDataset(np.zeros((8, 4)), np.arange(8) % 3)
    config = TrainConfig(epochs=1)
    with pytest.raises(ConfigError, match="outputs 5 classes"):
        train_classifier(build_model("mlp", (4,), 5), data, config, progress=False)
