"""Every option of every config group composes and builds; bad values fail with clear messages."""

import pytest
import torch
from hydra.utils import instantiate

from infoflow.spec import ConfigError, plain, validate
from infoflow.sweep.runner import build_net
from infoflow.training.device import DeviceError, deterministic_kernels, hidden_gpus, resolve_device
from infoflow.training.probe import Probe, activations
from tests.conftest import CONF

GROUPS = {
    g: sorted(p.stem for p in (CONF / g).glob("*.yaml"))
    for g in ("model", "data", "optimizer", "estimator", "experiment")
}


def test_every_group_has_the_documented_options():
    assert {"mlp1", "mlp3", "mlp5", "cnn"} <= set(GROUPS["model"])
    assert {"digits", "mnist", "fashion_mnist"} <= set(GROUPS["data"])
    assert {"adam", "sgd"} <= set(GROUPS["optimizer"])
    assert {"binning", "per_neuron"} <= set(GROUPS["estimator"])
    assert "seed" in GROUPS["experiment"]


def test_defaults(compose_cfg):
    cfg = compose_cfg()
    assert cfg.seed == 0 and cfg.runtime.device == "auto"
    assert cfg.trainer.epochs == 5
    assert cfg.trainer.batch_size == 32  # digits brings its own batch size
    assert cfg.estimator.bins == 30
    assert cfg.optimizer.lr == pytest.approx(1e-3)
    validate(cfg)


def test_batch_size_is_256_off_digits(compose_cfg):
    assert compose_cfg("data=mnist").trainer.batch_size == 256
    assert compose_cfg("trainer.batch_size=64").trainer.batch_size == 64  # CLI wins


BUILT_IN = ["mlp1", "mlp3", "mlp5", "cnn", "ib_net"]  # the options that take model.activation


def test_every_model_option_is_tested():
    assert set(GROUPS["model"]) == {*BUILT_IN, "custom", "torchvision"}


@pytest.mark.parametrize("model", BUILT_IN)
@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_every_model_builds_and_runs(compose_cfg, model, activation):
    cfg = compose_cfg(f"model={model}", f"model.activation={activation}")
    validate(cfg)
    net = instantiate(cfg.model, in_shape=(1, 8, 8), n_classes=10)
    logits, probes = activations(net, torch.rand(3, 1, 8, 8), cfg.probe.layers)
    assert logits.shape == (3, 10)
    assert len(probes) == {"mlp1": 1, "mlp3": 3, "mlp5": 4, "cnn": 2, "ib_net": 5}[model]


def test_torchvision_option_builds_and_probes_its_stages(compose_cfg):
    cfg = compose_cfg("model=torchvision", "model.name=resnet18")
    validate(cfg)
    net = build_net(plain(cfg)["model"], (3, 16, 16), 4)
    logits, probes = activations(net, torch.rand(2, 3, 16, 16), cfg.probe.layers)
    assert logits.shape == (2, 4)
    names = Probe.of(net, cfg.probe.layers, torch.rand(1, 3, 16, 16)).names
    assert names == (
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
    )
    assert [p.shape[1] for p in probes][-1] == 512


def test_custom_option_needs_a_target(compose_cfg):
    cfg = compose_cfg("model=custom", "model._target_=torch.nn.Flatten")
    validate(cfg)
    assert cfg.model._target_ == "torch.nn.Flatten" and cfg.probe.layers is None
    with pytest.raises(Exception, match="_target_"):
        validate(compose_cfg("model=custom"))


@pytest.mark.parametrize("optimizer", GROUPS["optimizer"])
def test_every_optimizer_builds(compose_cfg, optimizer):
    cfg = compose_cfg(f"optimizer={optimizer}")
    opt = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups[0]["lr"] == cfg.optimizer.lr


@pytest.mark.parametrize("estimator", GROUPS["estimator"])
def test_every_estimator_builds_and_returns_bits(compose_cfg, estimator):
    cfg = compose_cfg(f"estimator={estimator}")
    validate(cfg)
    est = instantiate(cfg.estimator)
    g = torch.Generator().manual_seed(0)
    T, X = torch.rand(200, 16, generator=g), torch.rand(200, 64, generator=g)
    Y = torch.arange(200) % 4
    if estimator == "exact":  # exact measures a quantized net's layer: values on a grid
        T = torch.round(T * 15) / 15
    out = est(T, X, Y)
    assert {"I_XT", "I_TY"} <= set(out)
    assert 0.0 <= out["I_TY"] <= 2.0 + 1e-9  # I(T;Y) <= H(Y) = 2 bits


@pytest.mark.parametrize("data", GROUPS["data"])
def test_every_data_option_names_a_loader(compose_cfg, data):
    cfg = compose_cfg(f"data={data}")
    assert cfg.data._target_.startswith("infoflow.training.data.load_")


def test_experiment_seed_is_the_notebook(compose_cfg):
    cfg = compose_cfg("experiment=seed", return_hydra_config=True)
    assert cfg.data._target_ == "infoflow.training.data.load_mnist"
    assert cfg.estimator._target_ == "infoflow.estimators.per_neuron"
    assert cfg.estimator.bins == 30 and cfg.estimator.max_units == 50
    assert cfg.optimizer._target_ == "torch.optim.Adam" and cfg.optimizer.lr == 1e-3
    assert cfg.trainer.batch_size == 256 and cfg.trainer.epochs == 5
    assert cfg.hydra.sweeper.params.model == "mlp1,mlp3,mlp5,cnn"


@pytest.mark.parametrize(
    "override,message",
    [
        (
            "estimator.bins=1",
            "estimator.bins must be an integer >= 2 (or null when estimator.bin_width is set), "
            "got 1",
        ),
        ("trainer.epochs=0", "trainer.epochs must be an integer >= 1 and <= 1000000, got 0"),
        ("trainer.batch_size=0", "trainer.batch_size must be an integer >= 1, got 0"),
        ("model.activation=sigmoid", "model.activation must be one of relu, tanh, got 'sigmoid'"),
        ("optimizer.lr=-1", "optimizer.lr must be a finite number > 0, got -1"),
        ("runtime.device=tpu", "runtime.device must be auto, cpu, cuda, cuda:N or mps, got 'tpu'"),
        ("+modle=mlp1", "modle is not a config key: the top-level keys are model, data,"),
        (
            "+estimator.bin=10",
            "estimator.bin is not a key of estimator infoflow.estimators.binning",
        ),
        (
            "+model.width=3",
            "model.width is not a key of model infoflow.training.models.MLP: its keys are",
        ),
        ("+trainer.epoch=3", "trainer.epoch is not a config key: trainer has epochs, batch_size"),
        ("+runtime.gpu=1", "runtime.gpu is not a config key: runtime has device, threads"),
        ("+optimizer.lrate=1", "optimizer.lrate is not a key of optimizer torch.optim.Adam"),
        ("+data.roots=x", "data.roots is not a key of data infoflow.training.data.load_digits"),
        ("model.hidden=[]", "model.hidden must be a non-empty list of integers >= 1"),
        ("model=ib_net model.init=xavier", "model.init must be one of torch, truncated_normal"),
        ("probe.samples=foo", "probe.samples must be one of eval, train, all"),
        # null is a value like any other: it must pass the key's rule
        ("seed=null", "seed must be an integer >= 0 and <= 9223372036854775807, got None"),
        ("seed=9223372036854775808", "seed must be an integer >= 0 and <= 9223372036854775807"),
        ("trainer.epochs=null", "trainer.epochs must be an integer >= 1 and <= 1000000, got None"),
        ("trainer.epochs=10000000000", "trainer.epochs must be an integer >= 1 and <= 1000000"),
        ("optimizer.lr=null", "optimizer.lr must be a finite number > 0, got None"),
        ("optimizer.lr=inf", "optimizer.lr must be a finite number > 0, got inf"),
        ("runtime.device=null", "runtime.device must be auto, cpu, cuda, cuda:N or mps, got None"),
        ("probe.output=null", "probe.output must be true or false, got None"),
        ("runtime.cache.wait_s=null", "runtime.cache.wait_s must be a finite number > 0, got None"),
    ],
)
def test_bad_values_name_key_rule_and_value(compose_cfg, override, message):
    with pytest.raises(ConfigError) as err:
        validate(compose_cfg(*override.split()))
    assert message in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_absent_cuda_is_an_error():
    with pytest.raises(DeviceError, match=r"runtime.device must be present .* got 'cuda'"):
        resolve_device("cuda")
    with pytest.raises(ConfigError, match=r"runtime.device must be present .* got 'cuda'"):
        validate({"runtime": {"device": "cuda"}})


def test_hidden_gpus_names_the_variable_only_when_it_hides_them(monkeypatch):
    for value in ("", "-1", " "):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert f"CUDA_VISIBLE_DEVICES is {value!r}" in hidden_gpus()
        if not torch.cuda.is_available():  # else torch saw the GPUs before the variable changed
            with pytest.raises(DeviceError, match=r"hydra\.launcher\.gpus_per_node"):
                resolve_device("cuda")
    for value in ("0", "0,1", "GPU-5f2c"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", value)
        assert hidden_gpus() == ""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert hidden_gpus() == ""


def test_cuda_jobs_get_deterministic_convolutions(monkeypatch):
    cudnn = torch.backends.cudnn
    monkeypatch.setattr(cudnn, "deterministic", False)
    monkeypatch.setattr(cudnn, "benchmark", True)
    deterministic_kernels(torch.device("cpu"))
    assert (cudnn.deterministic, cudnn.benchmark) == (False, True)  # the CPU's are already
    deterministic_kernels(torch.device("cuda", 0))  # sets flags only: no GPU needed
    assert (cudnn.deterministic, cudnn.benchmark) == (True, False)


def test_auto_device_falls_back_to_an_available_one():
    dev = resolve_device("auto")
    assert dev.type in ("cuda", "mps", "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
