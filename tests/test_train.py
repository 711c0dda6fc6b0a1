"""Training: the real recipes through ``mlb train ...``, determinism, resume, and the parts.

Every run is a few steps of the half-width ResNet-18 on 32 px crops of 48 px synthetic images,
on the CPU.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from tiny_data import MODEL, TINY_TRAIN_FLAGS, write_tiny_corpus
from torch import nn

from mlb.checkpoint import read_checkpoint
from mlb.cli import main
from mlb.data.augment import AugmentConfig, weak_preset
from mlb.data.corpus import find_segmentation_samples
from mlb.data.datasets import SegmentationDataset
from mlb.labels.relabel import relabel
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.losses import LossConfig
from mlb.models import MattingOutput
from mlb.train import (
    StudentRequest,
    TeacherRequest,
    TrainConfig,
    pretrain_path,
    train_student,
    train_teacher,
)
from mlb.train.curves import curve_path, moving_average, save_loss_curve
from mlb.train.ema import make_ema, update_ema
from mlb.train.loop import batches, learning_rate
from mlb.train.sampling import SeededSamples, StepSampler
from mlb.train.student import student_ema_momentum, student_loss

TINY_AUGMENT = AugmentConfig(short_side=48, crop_sizes=(32,), output_size=32)


def tiny_train(steps: int, **overrides: object) -> TrainConfig:
    options = {"batch_size": 2, "lr": 1e-3, "warmup_steps": 1, "device": "cpu", **overrides}
    return TrainConfig(steps=steps, **options)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def teacher(corpus, tmp_path_factory):
    """A teacher from ``mlb train teacher`` with mask pre-training (1 + 2 steps)."""
    out = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    code = main(["train", "teacher", "--matte", str(corpus.matte),
                 "--pretrain-seg", str(corpus.images), str(corpus.masks),
                 "--pretrain-steps", "1", "--steps", "2", "--checkpoint-every", "1",
                 "--out", str(out), *TINY_TRAIN_FLAGS])
    assert code == 0
    return out


@pytest.fixture(scope="module")
def label_store(corpus, teacher, tmp_path_factory):
    """A published label version made by the real relabel step from the teacher."""
    store = tmp_path_factory.mktemp("labels")
    summary = relabel(RelabelRequest(
        teacher=str(teacher), images=str(corpus.images), masks=str(corpus.masks),
        store=str(store), config=RelabelConfig(short_side=48, batch_size=2, device="cpu")),
        progress=False)
    return store, summary.version_id


def _same_weights(first: dict, second: dict) -> bool:
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


# --------------------------------------------------------------------------- the recipes


def test_teacher_pretrains_then_fine_tunes(teacher):
    pretrained = read_checkpoint(pretrain_path(teacher))
    assert pretrained.kind == "teacher-pretrain" and pretrained.step == 1
    assert set(pretrained.history) >= {"step", "lr", "mse", "total"}
    checkpoint = read_checkpoint(teacher)
    assert checkpoint.kind == "teacher" and checkpoint.step == 2
    assert checkpoint.model_config.name == MODEL
    assert set(checkpoint.history) >= {"l1", "laplacian", "boundary_bce", "total"}
    assert checkpoint.history["step"] == [1.0, 2.0]
    # Warmup is capped at a tenth of the run (0 here): cosine from the peak, half-way at 2/2.
    assert checkpoint.history["lr"] == pytest.approx([1e-3, 5e-4])
    assert checkpoint.optimizer_state is not None and checkpoint.ema_state_dict is None
    request = checkpoint.train_config["request"]
    assert request["pretrain_steps"] == 1 and request["train"]["lr"] == 1e-3
    assert math.isfinite(checkpoint.metrics["final_loss"])
    # Fine-tuning started from the pre-trained weights, and moved them.
    assert not _same_weights(pretrained.state_dict, checkpoint.state_dict)
    with Image.open(curve_path(teacher)) as curve:
        assert curve.format == "PNG" and curve.width > 100


def test_teacher_without_pretraining(corpus, tmp_path, capsys):
    out = tmp_path / "teacher.pt"
    code = main(["train", "teacher", "--matte", str(corpus.matte), "--steps", "1",
                 "--out", str(out), *TINY_TRAIN_FLAGS])
    assert code == 0
    assert "teacher done at step 1" in capsys.readouterr().out
    assert read_checkpoint(out).step == 1
    assert not pretrain_path(out).exists()


def test_teacher_fine_tunes_from_an_init_checkpoint(corpus, teacher, tmp_path):
    # --init: start from given weights (e.g. a segmentation model) instead of random ones.
    # A vanishing learning rate keeps one step's weights at the init's, which a fresh
    # initialisation (same seed) is not.
    flags = list(TINY_TRAIN_FLAGS)
    flags[flags.index("--lr") + 1] = "1e-12"
    outs = {}
    for name, init in (("from-init", ["--init", str(teacher)]), ("fresh", [])):
        outs[name] = tmp_path / f"{name}.pt"
        assert main(["train", "teacher", "--matte", str(corpus.matte), "--steps", "1",
                     "--out", str(outs[name]), *init, *flags]) == 0
    start = read_checkpoint(teacher).state_dict["encoder.conv1.weight"]
    assert torch.allclose(read_checkpoint(outs["from-init"]).state_dict["encoder.conv1.weight"],
                          start, atol=1e-6)
    assert not torch.allclose(read_checkpoint(outs["fresh"]).state_dict["encoder.conv1.weight"],
                              start, atol=1e-6)


def test_a_new_fine_tuning_recipe_keeps_the_finished_pre_training(corpus, tmp_path):
    # Mask pre-training never reads the fine-tuning settings: changing them reuses it (a
    # trial of another fine-tuning loss costs no pre-training); changing its own refuses it.
    out = tmp_path / "teacher.pt"

    def request(**changes: object) -> TeacherRequest:
        fields = {"matte": str(corpus.matte), "pretrain_images": str(corpus.images),
                  "pretrain_masks": str(corpus.masks), "model": MODEL, "out": str(out),
                  "pretrain_steps": 1, "train": tiny_train(2), "augment": TINY_AUGMENT}
        return TeacherRequest(**{**fields, **changes})

    train_teacher(request(), progress=False)
    pretrained = pretrain_path(out).stat().st_mtime_ns
    out.rename(tmp_path / "first.pt")
    train_teacher(request(loss=LossConfig(alpha_norm="mse"), photographic_composites=True,
                          train=tiny_train(3, lr=5e-4)), resume=True, progress=False)
    assert pretrain_path(out).stat().st_mtime_ns == pretrained
    checkpoint = read_checkpoint(out)
    assert checkpoint.step == 3
    assert checkpoint.train_config["request"]["loss"]["alpha_norm"] == "mse"
    out.unlink()
    for changes, field in (({"pretrain_steps": 2}, "pretrain_steps"),
                           ({"train": tiny_train(2, seed=7)}, "train.seed")):
        with pytest.raises(ValueError, match=rf"teacher.pretrain.pt: it was written by "
                                             rf"another run \(differing request fields: {field}"):
            train_teacher(request(**changes), resume=True, progress=False)
    assert pretrain_path(out).stat().st_mtime_ns == pretrained


def test_pretrain_steps_without_a_corpus_is_a_clear_error(corpus, tmp_path, capsys):
    code = main(["train", "teacher", "--matte", str(corpus.matte), "--pretrain-steps", "3",
                 "--steps", "1", "--out", str(tmp_path / "t.pt"), *TINY_TRAIN_FLAGS])
    assert code == 2
    assert "no segmentation corpus" in capsys.readouterr().err


def test_student_trains_from_the_latest_label_version(label_store, teacher, tmp_path):
    store, version_id = label_store
    out = tmp_path / "student.pt"
    code = main(["train", "student", "--store", str(store), "--labels", "latest",
                 "--init", str(teacher), "--steps", "1", "--out", str(out), *TINY_TRAIN_FLAGS])
    assert code == 0
    checkpoint = read_checkpoint(out)
    assert checkpoint.kind == "student" and checkpoint.label_version == version_id
    assert checkpoint.train_config["request"]["labels"] == version_id  # "latest" resolved
    # Same architecture as the teacher: an EMA copy is kept. Starting at the teacher's
    # weights with momentum 0.999, it stays much closer to them than the student does.
    assert checkpoint.ema_state_dict is not None
    assert checkpoint.train_config["ema_momentum"] == 0.999
    start = read_checkpoint(teacher).state_dict
    name = "alpha_head.weight"
    ema_moved = (checkpoint.ema_state_dict[name] - start[name]).abs().sum()
    student_moved = (checkpoint.state_dict[name] - start[name]).abs().sum()
    assert 0 < ema_moved < 0.01 * student_moved


def test_student_with_ddc_and_no_ema(label_store, tmp_path):
    store, _ = label_store
    out = tmp_path / "student.pt"
    code = main(["train", "student", "--store", str(store), "--steps", "1", "--out", str(out),
                 "--ddc-weight", "0.5", "--no-ema", "--weak-aug", "--boundary-target", "blend",
                 *TINY_TRAIN_FLAGS])
    assert code == 0
    checkpoint = read_checkpoint(out)
    assert checkpoint.ema_state_dict is None
    assert checkpoint.train_config["request"]["boundary_target"] == "blend"
    assert {"l1", "known", "ddc", "total"} <= set(checkpoint.history)
    terms = {name: values[0] for name, values in checkpoint.history.items()}
    expected = (terms["l1"] + terms["laplacian"] + 0.01 * terms["boundary_bce"]
                + 0.5 * (terms["known"] + 10 * terms["ddc"]))
    assert terms["total"] == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("target", ["band", "blend"])
def test_student_boundary_head_learns_the_band_of_its_labels_or_the_blend_weight(target):
    # Labels soft in the left half only; the cached blend weight says 0.3 everywhere.
    blended = torch.zeros(2, 1, 6, 8)
    blended[..., :4] = 0.5
    weight = torch.full_like(blended, 0.3)
    logits = torch.linspace(-3, 3, blended.numel()).reshape(blended.shape)
    prediction = MattingOutput(alpha=blended.clone(), boundary_logit=logits)
    terms = student_loss(prediction, {"blended_alpha": blended, "blended_boundary": weight},
                         loss=LossConfig(), boundary_target=target)
    expected_target = (blended > 0.05).float() if target == "band" else weight
    expected = torch.nn.functional.binary_cross_entropy_with_logits(logits, expected_target)
    assert terms["boundary_bce"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_student_loss_names_an_unknown_boundary_target():
    zeros = torch.zeros(1, 1, 4, 4)
    prediction = MattingOutput(alpha=zeros, boundary_logit=zeros)
    batch = {"blended_alpha": zeros, "blended_boundary": zeros}
    with pytest.raises(ValueError, match="'edge'"):
        student_loss(prediction, batch, loss=LossConfig(), boundary_target="edge")


def test_ddc_trains_from_coarse_masks_alone(corpus, tmp_path):
    out = tmp_path / "ddc.pt"
    code = main(["train", "ddc", "--images", str(corpus.images), "--masks", str(corpus.masks),
                 "--steps", "1", "--out", str(out), *TINY_TRAIN_FLAGS])
    assert code == 0
    checkpoint = read_checkpoint(out)
    assert checkpoint.kind == "ddc" and checkpoint.label_version is None
    terms = {name: values[0] for name, values in checkpoint.history.items()}
    assert terms["total"] == pytest.approx(terms["known"] + 10 * terms["ddc"], rel=1e-5)


def test_ddc_takes_the_known_loss_norm_and_the_consistency_weight(corpus, tmp_path, capsys):
    out = tmp_path / "ddc.pt"
    assert main(["train", "ddc", "--images", str(corpus.images), "--masks", str(corpus.masks),
                 "--steps", "1", "--out", str(out), "--known-loss", "mse",
                 "--consistency-weight", "3", *TINY_TRAIN_FLAGS]) == 0
    checkpoint = read_checkpoint(out)
    assert checkpoint.train_config["request"]["loss"]["ddc_known"] == "mse"
    assert main(["checkpoint", "show", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "init:          none" in shown, shown  # fresh weights, not "not recorded"
    assert "loss:          ddc_known mse, ddc_weight 3.0" in shown, shown
    terms = {name: values[0] for name, values in checkpoint.history.items()}
    assert terms["total"] == pytest.approx(terms["known"] + 3 * terms["ddc"], rel=1e-5)
    capsys.readouterr()
    assert main(["train", "ddc", "--images", str(corpus.images), "--masks", str(corpus.masks),
                 "--steps", "2", "--out", str(out), "--resume", *TINY_TRAIN_FLAGS]) == 2
    error = capsys.readouterr().err
    assert "differing request fields: loss.ddc_known, loss.ddc_weight, train.steps" in error
    assert "--overwrite" in error
    for weight in ("-1", "inf", "nan"):
        assert main(["train", "ddc", "--images", str(corpus.images), "--masks",
                     str(corpus.masks), "--steps", "1", "--out", str(tmp_path / "bad.pt"),
                     "--consistency-weight", weight, *TINY_TRAIN_FLAGS]) == 2
        error = capsys.readouterr().err
        assert "ddc_weight" in error and "Traceback" not in error, error
    assert not (tmp_path / "bad.pt").exists()


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_same_weights_even_when_interrupted_between_stages(corpus, tmp_path):
    def request(name: str, *, seed: int = 0, pretrain_steps: int = 1) -> TeacherRequest:
        return TeacherRequest(
            matte=str(corpus.matte), pretrain_images=str(corpus.images),
            pretrain_masks=str(corpus.masks), pretrain_steps=pretrain_steps, model=MODEL,
            out=str(tmp_path / name), train=tiny_train(1, seed=seed), augment=TINY_AUGMENT)

    straight = train_teacher(request("a.pt"), progress=False)
    assert (straight.kind, straight.steps, straight.finished) == ("teacher", 1, True)
    # A second run of the same request, stopped when pre-training is done, then resumed.
    stopped = train_teacher(request("b.pt"), stop_at_step=1, progress=False)
    assert (stopped.kind, stopped.finished) == ("teacher-pretrain", True)
    assert not (tmp_path / "b.pt").exists()
    train_teacher(request("b.pt"), resume=True, progress=False)
    other = train_teacher(request("c.pt", seed=1, pretrain_steps=0), progress=False)
    assert other.steps == 1
    a, b, c = (read_checkpoint(tmp_path / name).state_dict for name in ("a.pt", "b.pt", "c.pt"))
    assert _same_weights(a, b)
    assert not _same_weights(a, c)


def test_resume_reaches_the_uninterrupted_weights(label_store, teacher, tmp_path):
    store, _ = label_store

    def request(name: str) -> StudentRequest:
        return StudentRequest(store=str(store), model=MODEL, out=str(tmp_path / name),
                              init=str(teacher), train=tiny_train(2, checkpoint_every=0),
                              augment=TINY_AUGMENT)

    straight = train_student(request("straight.pt"), progress=False)
    stopped = train_student(request("resumed.pt"), stop_at_step=1, progress=False)
    assert (stopped.steps, stopped.finished) == (1, False)
    resumed = train_student(request("resumed.pt"), resume=True, progress=False)
    assert (resumed.steps, resumed.finished) == (2, True)
    assert resumed.final_loss == straight.final_loss
    a, b = read_checkpoint(tmp_path / "straight.pt"), read_checkpoint(tmp_path / "resumed.pt")
    assert _same_weights(a.state_dict, b.state_dict)
    assert _same_weights(a.ema_state_dict, b.ema_state_dict)
    assert a.history == b.history
    # A finished run resumes to itself without training.
    again = train_student(request("resumed.pt"), resume=True, progress=False)
    assert (again.steps, again.seconds) == (2, 0.0)
    # How often to save or log changes how a run is carried out, not its result: a resume
    # may change it and still reaches the uninterrupted weights.
    train_student(request("controls.pt"), stop_at_step=1, progress=False)
    controls = request("controls.pt").model_copy(
        update={"train": tiny_train(2, checkpoint_every=1, log_every=5, prefetch=0)})
    assert train_student(controls, resume=True, progress=False).finished
    assert _same_weights(a.state_dict, read_checkpoint(tmp_path / "controls.pt").state_dict)


def test_resume_refuses_another_request_and_fresh_runs_refuse_to_overwrite(label_store,
                                                                             tmp_path):
    store, _ = label_store
    out = tmp_path / "student.pt"
    first = StudentRequest(store=str(store), model=MODEL, out=str(out), train=tiny_train(2),
                           augment=TINY_AUGMENT)
    train_student(first, stop_at_step=1, progress=False)
    other = first.model_copy(update={"train": tiny_train(2, seed=5)})
    with pytest.raises(ValueError, match=r"cannot resume .*\(differing request fields: "
                                         r"train\.seed\); start again over it"):
        train_student(other, resume=True, progress=False)
    with pytest.raises(ValueError, match="exists; pass resume"):
        train_student(first, progress=False)


def test_a_checkpoint_from_before_a_request_field_existed_still_resumes(label_store, tmp_path):
    """Fields added to a request type later are absent from older checkpoints; their runs
    had the defaults, so the run resumes when they are left at the default (and only then)."""
    import dataclasses

    from mlb.checkpoint import read_checkpoint, save_checkpoint

    store, _ = label_store
    out = tmp_path / "student.pt"
    request = StudentRequest(store=str(store), model=MODEL, out=str(out), train=tiny_train(2),
                             augment=TINY_AUGMENT)
    train_student(request, stop_at_step=1, progress=False)
    old = read_checkpoint(out)
    recorded = dict(old.train_config["request"])
    recorded.pop("trimap_kernel_range")  # as a release before that field wrote it
    recorded["loss"] = {k: v for k, v in recorded["loss"].items() if k != "ddc_window"}
    recorded["train"] = {k: v for k, v in recorded["train"].items() if k != "ema_momentum"}
    save_checkpoint(dataclasses.replace(
        old, train_config={**old.train_config, "request": recorded}), out)
    other = request.model_copy(update={"trimap_kernel_range": (3, 5)})
    with pytest.raises(ValueError, match="differing request fields: trimap_kernel_range"):
        train_student(other, resume=True, progress=False)
    assert train_student(request, resume=True, progress=False).steps == 2


def test_samples_do_not_depend_on_the_number_of_workers_or_prefetch(corpus):
    scan = find_segmentation_samples(corpus.images, corpus.masks)
    plain = SegmentationDataset(scan.samples, weak_preset(TINY_AUGMENT))
    dataset = SeededSamples(plain, seed=3)

    def images(workers: int, prefetch: int) -> list[torch.Tensor]:
        config = tiny_train(3, batch_size=3, seed=3, num_workers=workers, prefetch=prefetch)
        stream = batches(plain, config, start=1, stop=3, device=torch.device("cpu"))
        return [batch["image"] for batch in stream]

    in_process = images(0, 0)
    assert len(in_process) == 2
    for workers, prefetch in ((1, 0), (0, 2), (1, 1)):
        other = images(workers, prefetch)
        assert all(torch.equal(a, b) for a, b in zip(in_process, other, strict=True))
    # An item is the same whatever the global RNG, and reading it leaves that RNG alone.
    key = StepSampler(len(dataset), batch_size=3, seed=3, start=0, stop=1).key(2, 1)
    torch.manual_seed(123)
    first, after_first = dataset[key]["image"], torch.rand(1)
    torch.manual_seed(123)
    torch.rand(5)
    assert torch.equal(dataset[key]["image"], first)
    torch.manual_seed(123)
    dataset[key]
    assert torch.equal(torch.rand(1), after_first)


@settings(max_examples=40, deadline=None)
@given(length=st.integers(1, 12), batch=st.integers(1, 5), seed=st.integers(0, 2**31),
       start=st.integers(0, 6))
def test_sampler_visits_every_sample_once_per_epoch(length, batch, seed, start):
    sampler = StepSampler(length, batch_size=batch, seed=seed, start=0, stop=3 * length + 8)
    keys = [key for step in sampler for key in step]
    for epoch in range(3):
        assert sorted(k.index for k in keys if k.epoch == epoch) == list(range(length))
    # A sampler started later (a resumed run) yields the same keys for the same steps.
    later = StepSampler(length, batch_size=batch, seed=seed, start=start, stop=start + 2)
    assert [key for step in later for key in step] == keys[start * batch:(start + 2) * batch]


# --------------------------------------------------------------------------- the parts


@pytest.mark.parametrize(("ema", "momentum", "teacher_model", "expected"), [
    (None, None, MODEL, 0.999),      # same architecture: mean teacher at the usual momentum
    (None, None, "unet_r101", None),  # another architecture: no EMA
    (None, None, None, None),         # teacher unknown: no EMA
    (None, 0.99, "unet_r101", 0.99),  # an explicit momentum always keeps one
    (True, None, "unet_r101", 0.999),
    (False, 0.99, MODEL, None),       # the ablation switch wins
])
def test_when_the_student_keeps_an_ema_copy(ema, momentum, teacher_model, expected):
    request = StudentRequest(store="s", model=MODEL, out="o.pt", ema=ema,
                             train=TrainConfig(steps=1, ema_momentum=momentum))
    assert student_ema_momentum(request, teacher_model) == expected


@given(peak=st.floats(1e-6, 1.0), warmup=st.integers(0, 50), extra=st.integers(1, 500))
def test_learning_rate_warms_up_then_decays_to_zero(peak, warmup, extra):
    total = warmup + extra
    rates = [learning_rate(step, peak=peak, warmup_steps=warmup, total_steps=total)
             for step in range(total + 1)]
    assert all(0.0 <= rate <= peak * (1 + 1e-12) for rate in rates)
    assert rates[0] > 0
    assert all(a < b for a, b in itertools.pairwise(rates[:warmup + 1]))
    assert all(a >= b for a, b in itertools.pairwise(rates[warmup:]))
    assert rates[warmup] == pytest.approx(peak)
    assert rates[total] == pytest.approx(0.0, abs=1e-12 * peak)


def test_ema_update_is_the_exponential_moving_average():
    model = nn.Sequential(nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2))
    ema = make_ema(model)
    start = {k: v.clone() for k, v in ema.state_dict().items()}
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(1.0)
    model(torch.rand(4, 1, 3, 3))  # moves the running statistics and counts a batch
    update_ema(ema, model, momentum=0.9)
    current = model.state_dict()
    for name, value in ema.state_dict().items():
        if value.is_floating_point():
            torch.testing.assert_close(value, 0.9 * start[name] + 0.1 * current[name])
        else:
            assert torch.equal(value, current[name])  # num_batches_tracked is copied
    assert not any(p.requires_grad for p in ema.parameters())
    with pytest.raises(ValueError, match="momentum"):
        update_ema(ema, model, momentum=1.0)


def test_loss_curve_png(tmp_path):
    history = {"step": [1.0, 2.0, 3.0], "lr": [1e-3, 5e-4, 0.0], "total": [1.0, 0.5, 0.0],
               "l1": [0.5, 0.4, 0.3]}
    path = save_loss_curve(history, tmp_path / "run.loss.png", title="x")
    with Image.open(path) as image:
        assert image.format == "PNG"
    np.testing.assert_allclose(moving_average([1.0, 3.0, 5.0, 7.0], window=2), [1, 2, 4, 6])
    assert curve_path(tmp_path / "runs" / "student.pt") == tmp_path / "runs/student.loss.png"


def test_a_student_on_a_store_that_does_not_exist_is_refused_and_creates_nothing(tmp_path):
    """A mistyped or forged store path (e.g. from an event) must not become a new store."""
    missing = tmp_path / "no" / "labels"
    request = StudentRequest(store=str(missing), labels="v-1234567890abcdef", model=MODEL,
                             out=str(tmp_path / "s.pt"), train=tiny_train(1),
                             augment=TINY_AUGMENT)
    with pytest.raises(FileNotFoundError, match="no label store at"):
        train_student(request, progress=False)
    assert not (tmp_path / "no").exists()
