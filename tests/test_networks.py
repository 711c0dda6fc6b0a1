"""Any student network: the shared contract (checkpoint round trip, ONNX at two sizes) over
every registered network and a plugin, pretrained encoders from files and caches the tests
write (never downloaded), plugins from a module outside ``mlb``, and the README's commands
for training MODNet, a library-encoder student and a plugin from a label version.

The forward/backward contract on odd sizes is ``tests/test_models.py::TestNetworkContract``,
parametrised over the same ``available_models()``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import corpus, label_store, teacher  # noqa: F401  (module fixtures)
from tiny_data import SIZE
from torchvision.models import mobilenet_v2

from mlb.checkpoint import Checkpoint, load_model, read_checkpoint, save_checkpoint
from mlb.cli import main
from mlb.export import export_onnx, run_onnx
from mlb.models import MattingOutput, ModelConfig, available_models, build_model
from mlb.models.interface import BoundaryHead, PluginAdapter

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
PLUGIN = "tiny_matting_plugin:build"
STUDENT_FLAGS = ["--batch-size", "2", "--crop-size", "32", "--aug-short-side", str(SIZE),
                 "--lr", "1e-3", "--warmup-steps", "1", "--device", "cpu", "--quiet"]


@pytest.fixture(autouse=True)
def _plugin_on_path(monkeypatch):
    """The example plugin is importable the way a user's would be: on sys.path, not in mlb."""
    monkeypatch.syspath_prepend(str(EXAMPLES))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _caches_in(tmp_path: Path, monkeypatch) -> tuple[Path, Path]:
    """torch.hub's and the Hugging Face hub's caches, empty, under ``tmp_path``.
    (huggingface_hub reads HF_HUB_CACHE at import, so its constant is set too.)"""
    import huggingface_hub.constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return tmp_path / "torch", tmp_path / "hf"


def _randomise_batchnorm(model: torch.nn.Module) -> None:
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=generator)
                                      * 0.2 - 0.1)
            module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator)
                                     + 0.5)


@pytest.mark.parametrize("name", [*available_models(), PLUGIN, "tiny_matting_plugin:"
                                  "build_with_boundary"])
def test_checkpoint_round_trip_and_onnx_at_two_sizes(name, tmp_path):
    sys.path.insert(0, str(EXAMPLES))  # (the autouse fixture runs after parametrisation ids)
    config = ModelConfig(name=name)
    model = build_model(name)
    _randomise_batchnorm(model)
    path = save_checkpoint(Checkpoint(model_config=config, state_dict=model.state_dict()),
                           tmp_path / "net.pt")

    loaded, checkpoint = load_model(path)
    assert checkpoint.model_config.name == name  # the checkpoint says how to rebuild it
    image = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected, again = model.eval()(image), loaded(image)
    assert torch.equal(expected.alpha, again.alpha)
    assert torch.equal(expected.boundary_logit, again.boundary_logit)

    report = export_onnx(path, tmp_path / "net.onnx")  # traced at one size, checked at another
    assert report.max_abs_diff <= 1e-3
    for shape in [(1, 3, 32, 32), (2, 3, 45, 70)]:
        batch = torch.rand(shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            want = loaded(batch)
        got = run_onnx(tmp_path / "net.onnx", batch.numpy())
        for ours, theirs in zip(got, want, strict=True):
            assert ours.shape == tuple(theirs.shape)
            np.testing.assert_allclose(ours, theirs.numpy(), atol=1e-3)


class TestPlugins:
    def test_alpha_only_network_gets_the_boundary_head(self):
        model = build_model(PLUGIN)
        assert isinstance(model, PluginAdapter) and isinstance(model.boundary_head, BoundaryHead)
        output = model(torch.rand(2, 3, 17, 23))
        assert isinstance(output, MattingOutput)
        assert output.alpha.shape == output.boundary_logit.shape == (2, 1, 17, 23)
        output.boundary_logit.sum().backward()  # the attached head is trained by the loss
        assert model.boundary_head.layers[0].weight.grad is not None

    def test_network_with_its_own_boundary_gets_none(self):
        assert build_model("tiny_matting_plugin:build_with_boundary").boundary_head is None

    def test_entry_point_of_the_mlb_models_group(self, tmp_path, monkeypatch):
        # an installed distribution as importlib.metadata sees it: a .dist-info on sys.path
        info = tmp_path / "tiny_matting_plugin-0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tiny-matting-plugin\n"
                                       "Version: 0.1\n")
        (info / "entry_points.txt").write_text(f"[mlb.models]\ntiny_plugin = {PLUGIN}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        assert "tiny_plugin" in available_models()
        assert isinstance(build_model("tiny_plugin"), PluginAdapter)
        assert ModelConfig(name="tiny_plugin").name == "tiny_plugin"

    @pytest.mark.parametrize(("name", "message"), [
        ("no_such_module_xyz:build", "cannot load model plugin"),
        ("tiny_matting_plugin:missing", "cannot load model plugin"),
        ("tiny_matting_plugin:TinyMattingNet.stride", "is not callable"),
        ("tiny_matting_plugin:TinyMattingNet", "not marked as an mlb model factory"),
        ("os:abort", "not marked as an mlb model factory"),
        ("not a spec", "unknown model"),
    ])
    def test_bad_plugins_are_clear_errors(self, name, message):
        with pytest.raises(ValueError, match=message):
            build_model(name)

    def test_a_tampered_checkpoint_cannot_call_an_unmarked_function(self, tmp_path):
        from tiny_data import write_untrained_checkpoint

        from mlb.checkpoint import CheckpointError

        path = write_untrained_checkpoint(tmp_path / "net.pt", name="unet_r18_w05")
        payload = torch.load(path, weights_only=True)
        payload["model_config"]["name"] = "os:abort"
        torch.save(payload, path)
        with pytest.raises((ValueError, CheckpointError), match="not marked"):
            load_model(path)

    @pytest.mark.parametrize(("spec", "source", "message"), [
        # modules a tampered checkpoint could name: refused before they run
        ("this:build", None, "never sets `mlb_model_factory`"),
        ("venv.__main__:build", None, "is a program's entry module"),
        ("quits_xyz:build", "import sys\nsys.exit(0)\n", "never sets `mlb_model_factory`"),
        # the plugin's own code fails: one error naming the plugin and the failure
        ("raises_xyz:build", "raise RuntimeError('boom at import')\nmlb_model_factory = 1\n",
         "cannot load model plugin 'raises_xyz:build': RuntimeError: boom at import"),
        ("exits_xyz:build", "import sys\n# mlb_model_factory\nsys.exit(3)\n",
         "cannot load model plugin 'exits_xyz:build': SystemExit: 3"),
        ("factory_raises_xyz:build", "def build():\n    return 1 / 0\n"
         "build.mlb_model_factory = True\n",
         "'factory_raises_xyz:build' failed while building its network: ZeroDivisionError"),
    ])
    def test_a_checkpoint_naming_a_module_never_runs_an_unmarked_one(
            self, spec, source, message, tmp_path, monkeypatch, capsys):
        from tiny_data import write_untrained_checkpoint

        from mlb.checkpoint import CheckpointError

        if source is not None:
            (tmp_path / f"{spec.split(':')[0]}.py").write_text(source)
            monkeypatch.syspath_prepend(str(tmp_path))
        path = write_untrained_checkpoint(tmp_path / "net.pt", name="unet_r18_w05")
        payload = torch.load(path, weights_only=True)
        payload["model_config"]["name"] = spec
        torch.save(payload, path)
        with pytest.raises((ValueError, CheckpointError), match=re.escape(message)):
            load_model(path)
        assert "Beautiful is better than ugly" not in capsys.readouterr().out  # `this` ran
        assert "this" not in sys.modules or spec != "this:build"

    @pytest.mark.parametrize(("module", "forward", "message"), [
        ("broken_plugin_xyz", "x.view(7, -1)", "forward fails"),  # raises on the probe
        ("bad_plugin_xyz", "x", "alpha must be"),  # returns (B, 3, H, W)
    ])
    def test_a_plugin_whose_forward_does_not_fit_is_named(self, module, forward, message,
                                                          tmp_path, monkeypatch):
        (tmp_path / f"{module}.py").write_text(
            "import torch\nclass Net(torch.nn.Module):\n"
            f"    def forward(self, x):\n        return {forward}\n"
            "def build():\n    return Net()\n"
            "build.mlb_model_factory = True\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        with pytest.raises(ValueError, match=rf"'{module}:build'.*{message}"):
            build_model(f"{module}:build")


class TestPretrainedEncoders:
    def test_modnet_from_a_local_torchvision_file(self, tmp_path):
        source = mobilenet_v2()
        torch.save(source.state_dict(), tmp_path / "mobilenet_v2.pth")
        model = build_model("modnet", pretrained_encoder=tmp_path / "mobilenet_v2.pth")
        assert torch.equal(model.encoder.features[0][0].weight, source.features[0][0].weight)

    def test_library_encoder_from_a_local_timm_file(self, tmp_path):
        import timm

        source = timm.create_model("mobilenetv3_large_100")
        torch.save(source.state_dict(), tmp_path / "mnv3.pth")
        model = build_model("unet_mobilenetv3", pretrained_encoder=tmp_path / "mnv3.pth")
        assert torch.equal(model.encoder.conv_stem.weight, source.conv_stem.weight)

    @pytest.mark.parametrize("name", ["modnet", "unet_mobilenetv3"])
    def test_a_file_of_another_network_is_refused(self, name, tmp_path):
        torch.save(mobilenet_v2().state_dict() if name == "unet_mobilenetv3"
                   else {"conv.weight": torch.zeros(1)}, tmp_path / "other.pth")
        with pytest.raises(ValueError, match="weights do not fit"):
            build_model(name, pretrained_encoder=tmp_path / "other.pth")

    @pytest.mark.parametrize("name", ["modnet", "unet_r18", "unet_mobilenetv3"])
    def test_imagenet_offline_without_a_cached_copy_is_a_clear_error(self, name, tmp_path,
                                                                      monkeypatch):
        _caches_in(tmp_path, monkeypatch)
        with pytest.raises(ValueError, match=r"pass a local state_dict file"):
            build_model(name, pretrained_encoder="imagenet")

    def test_mlb_offline_alone_keeps_timm_off_the_network(self, tmp_path):
        """MLB_OFFLINE without HF_HUB_OFFLINE, as a user sets it: no download is tried."""
        env = {key: value for key, value in os.environ.items() if key != "HF_HUB_OFFLINE"}
        env.update(MLB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"), PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).parents[1]), env.get("PYTHONPATH", "")]))
        done = subprocess.run(
            [sys.executable, "-c", "from mlb.models import build_model\n"
             "build_model('unet_mobilenetv3', pretrained_encoder='imagenet')"],
            env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode != 0
        assert "offline: HF_HUB_OFFLINE or MLB_OFFLINE is set" in done.stderr, done.stderr
        assert "Retrying" not in done.stderr and "requesting HEAD" not in done.stderr

    def test_half_width_has_no_imagenet_encoder(self):
        with pytest.raises(ValueError, match="no ImageNet encoder"):
            build_model("unet_r18_w05", pretrained_encoder="imagenet")


def _cache_torchvision_mobilenet_v2(torch_home: Path) -> torch.nn.Module:
    """torch.hub's cache as a download would leave it, holding weights written here."""
    from torchvision.models import MobileNet_V2_Weights

    source = mobilenet_v2()
    cached = torch_home / "hub" / "checkpoints" / Path(MobileNet_V2_Weights.IMAGENET1K_V1.url).name
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    return source


def _cache_timm_mobilenetv3(hub_cache: Path) -> torch.nn.Module:
    """The Hugging Face cache as ``timm``'s download would leave it (refs + snapshot)."""
    import timm
    from safetensors.torch import save_file

    source = timm.create_model("mobilenetv3_large_100")
    repo = hub_cache / "models--timm--mobilenetv3_large_100.ra_in1k"
    revision = "0" * 40
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(revision)
    (repo / "snapshots" / revision).mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in source.state_dict().items()},
              repo / "snapshots" / revision / "model.safetensors")
    return source


def test_imagenet_comes_from_the_library_caches_when_offline(tmp_path, monkeypatch):
    torch_home, hub_cache = _caches_in(tmp_path, monkeypatch)
    mobilenet = _cache_torchvision_mobilenet_v2(torch_home)
    mnv3 = _cache_timm_mobilenetv3(hub_cache)
    modnet = build_model("modnet", pretrained_encoder="imagenet")
    assert torch.equal(modnet.encoder.features[0][0].weight, mobilenet.features[0][0].weight)
    library = build_model("unet_mobilenetv3", pretrained_encoder="imagenet")
    assert torch.equal(library.encoder.conv_stem.weight, mnv3.conv_stem.weight)

    from torchvision.models import ResNet18_Weights, resnet18

    resnet = resnet18()
    torch.save(resnet.state_dict(),
               torch_home / "hub" / "checkpoints" / Path(ResNet18_Weights.IMAGENET1K_V1.url).name)
    unet = build_model("unet_r18", pretrained_encoder="imagenet")
    assert torch.equal(unet.encoder.conv1.weight, resnet.conv1.weight)


@pytest.mark.slow
def test_readme_modnet_library_and_plugin_students(label_store, corpus, tmp_path,  # noqa: F811
                                                   monkeypatch):
    """README "Any student network": train each from a label version, evaluate, export."""
    store, version_id = label_store
    torch_home, _ = _caches_in(tmp_path, monkeypatch)
    _cache_torchvision_mobilenet_v2(torch_home)
    torch.save(__import__("timm").create_model("mobilenetv3_large_100").state_dict(),
               tmp_path / "mobilenetv3_large_100.pth")
    runs = {
        "modnet": ["--model", "modnet", "--pretrained-encoder", "imagenet"],
        "library": ["--model", "unet_mobilenetv3",
                    "--pretrained-encoder", str(tmp_path / "mobilenetv3_large_100.pth")],
        "plugin": ["--model", PLUGIN],
    }
    for run, model_flags in runs.items():
        out = tmp_path / f"{run}.pt"
        assert main(["train", "student", "--store", str(store), "--labels", "latest",
                     *model_flags, "--steps", "2", "--ddc-weight", "0.5", "--out", str(out),
                     *STUDENT_FLAGS]) == 0
        checkpoint = read_checkpoint(out)
        assert checkpoint.kind == "student" and checkpoint.label_version == version_id
        assert checkpoint.model_config.name == model_flags[1]
        if "--pretrained-encoder" in model_flags:  # recorded with the network it built
            assert checkpoint.model_config.options.pretrained_encoder == model_flags[-1]
        scores = tmp_path / f"{run}.json"
        assert main(["evaluate", "--model", str(out), "--images", str(corpus.val_images),
                     "--alphas", str(corpus.val_alphas), "--json", str(scores),
                     "--device", "cpu", "--quiet"]) == 0
        assert json.loads(scores.read_text())
        assert main(["export", "--model", str(out), "--out", str(tmp_path / f"{run}.onnx")]) == 0


def test_cli_names_a_plugin_that_cannot_be_loaded(label_store, tmp_path, capsys):  # noqa: F811
    store, _ = label_store
    code = main(["train", "student", "--store", str(store), "--labels", "latest",
                 "--model", "no_such_module_xyz:build", "--steps", "1",
                 "--out", str(tmp_path / "x.pt"), *STUDENT_FLAGS])
    assert code == 2
    assert "cannot load model plugin 'no_such_module_xyz:build'" in capsys.readouterr().err
