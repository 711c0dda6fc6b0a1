"""The flows as plain Python calls, embedded (no server): one ``prefect_test_harness`` for
this module, tiny corpora and random-init teachers written in tmp_path.

What is checked: the relabel flow on a 2-worker local Dask cluster stores the same version,
byte for byte, as the single-process ``mlb.labels.relabel.relabel``, and a rerun does no work; bad
parameters fail before any work, naming the field; a corrupt input is quarantined with
``skip_bad`` and otherwise fails the run without publishing anything; the pipeline runs end
to end and resumes; one mean-teacher round records its lineage and promotes only a student
that is not worse; prefect.yaml, ``mlb-flows serve`` and the flows agree.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import dask
import pytest
import yaml
from distributed import LocalCluster
from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterId,
)
from prefect.exceptions import ParameterTypeError
from prefect.states import Failed
from prefect.testing.utilities import prefect_test_harness
from prefect_dask import DaskTaskRunner
from relabel_corpus import make_corpus, make_request, make_teacher, store_files

from flows import cli, deploy, ema, evaluate, paths, pipeline, relabel, runlog, submit, training
from flows.runners import (
    DaskConfig,
    check_gpu_workers,
    dask_task_runner,
    is_transient,
    retry_condition,
    shard_groups,
    submission_settings,
)
from mlb.checkpoint import CheckpointError, read_checkpoint
from mlb.data.augment import AugmentConfig
from mlb.data.imageio import BadSample
from mlb.labels.relabel import relabel as relabel_in_process
from mlb.labels.request import RelabelConfig
from mlb.train import StudentRequest, TrainConfig
from mlb.train.launch import LaunchConfig, TrainingFailed
from storage import IncompleteVersion, LabelStore

IN_PROCESS = DaskConfig(workers=0)
FLOW_MODULES = (relabel, training, evaluate, ema, pipeline)


@pytest.fixture(scope="module", autouse=True)
def harness(tmp_path_factory):
    # One temporary API for the whole module (about 16 s to start); module scope so that it
    # is gone before the real-server tests run in the same session. The data root (previews
    # land there) is a temporary folder, not the checkout's default.
    with prefect_test_harness(), pytest.MonkeyPatch.context() as patch:
        patch.setenv(paths.DATA_ROOT_ENV, str(tmp_path_factory.mktemp("data-root")))
        yield


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("flows")
    images, masks = make_corpus(root / "corpus", 6)
    return {"root": root, "images": images, "masks": masks,
            "teacher": make_teacher(root / "teacher.pt")}


def _request(corpus: dict, store: Path, images: Path | None = None, **config: object):
    settings = {"short_side": 32, "batch_size": 2, "shard_size": 2, "device": "cpu", **config}
    return make_request(corpus["teacher"], images or corpus["images"], corpus["masks"], store,
                        **settings)


def _task_names(flow_run_id) -> list[str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [run.name for run in runs]


def _metadata_file(path: str) -> bool:
    """The version documents that hold its metadata (and so the creating run's id)."""
    return path.endswith(("/draft.json", "/version.json"))


def _artifact(key: str) -> str:
    """The newest artifact with ``key`` (markdown text)."""
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))
    assert artifacts, f"no artifact {key!r}"
    return max(artifacts, key=lambda artifact: artifact.created).data


# ----------------------------------------------------------------------------- relabel


def test_relabel_on_a_dask_cluster_stores_the_single_process_bytes(corpus, tmp_path):
    reference = relabel_in_process(_request(corpus, tmp_path / "reference"), progress=False)
    store = tmp_path / "store"
    state = relabel.relabel(_request(corpus, store), dask=DaskConfig(workers=2),
                            return_state=True)
    assert state.result() == reference.version_id
    # The flow run that created the version is in its metadata: not an id input, and no
    # stored label byte differs from the single-process run.
    stored = LabelStore(store).open_version(reference.version_id).document["metadata"]
    assert stored["run"] == {"prefect_flow_run_id": str(state.state_details.flow_run_id)}
    reference_files = store_files(tmp_path / "reference")
    assert {k: v for k, v in store_files(store).items() if not _metadata_file(k)} == {
        k: v for k, v in reference_files.items() if not _metadata_file(k)}
    first_run = store_files(store)
    names = _task_names(state.state_details.flow_run_id)
    assert sorted(name.rsplit("-", 1)[0] for name in names if "shards" not in name) == [
        "prepare", "preview", "publish"]
    assert sorted(name for name in names if "shards" in name) == [
        "relabel-shards-[0]", "relabel-shards-[1]", "relabel-shards-[2]"]
    summary = _artifact(f"relabel-summary-{reference.version_id}")
    assert reference.version_id in summary and store.resolve().as_uri() in summary
    # Each worker loads the teacher once, however many shard tasks it runs.
    rows = [[cell.strip() for cell in line.split("|")[1:4]] for line in summary.splitlines()
            if line.count("|") == 4 and ":" in line.split("|")[1]]
    workers = {process: (int(tasks), int(loads)) for process, tasks, loads in rows}
    assert 1 <= len(workers) <= 2 and sum(tasks for tasks, _ in workers.values()) == 3
    assert max(tasks for tasks, _ in workers.values()) >= 2  # some worker reused its teacher
    assert all(loads == 1 for _, loads in workers.values()), workers
    preview = _artifact(f"relabel-preview-{reference.version_id}")
    png = Path(os.environ[paths.DATA_ROOT_ENV]) / "previews" / f"{reference.version_id}.png"
    assert f"`{png}`" in preview and "base64" not in preview
    assert png.read_bytes().startswith(b"\x89PNG")

    # A rerun finds the published version: same id, no shard task, no byte changed.
    again = relabel.relabel(_request(corpus, store), dask=DaskConfig(workers=2),
                            return_state=True)
    assert again.result() == reference.version_id
    assert not [name for name in _task_names(again.state_details.flow_run_id)
                if name.startswith("relabel-shards")]
    assert store_files(store) == first_run


def test_a_bad_parameter_fails_before_any_work_naming_it(corpus, tmp_path):
    request = _request(corpus, tmp_path / "store").model_dump()
    request["config"]["inference"]["batch_size"] = 0
    request["config"]["shrt_side"] = 32
    with pytest.raises(ParameterTypeError) as error:
        relabel.relabel(request, dask=IN_PROCESS)
    assert "request.config.inference.batch_size" in str(error.value)
    assert "request.config.shrt_side" in str(error.value)
    with pytest.raises(ParameterTypeError, match=r"dask\.workers"):
        relabel.relabel(_request(corpus, tmp_path / "store"), dask={"workers": -1})
    assert not (tmp_path / "store").exists()


@pytest.fixture
def corrupt_corpus(corpus, tmp_path) -> Path:
    """The corpus with p003.jpg cut in half (its header is fine, its pixels are not)."""
    images = tmp_path / "images"
    shutil.copytree(corpus["images"], images)
    data = (images / "p003.jpg").read_bytes()
    (images / "p003.jpg").write_bytes(data[: len(data) // 2])
    return images


def test_a_corrupt_file_is_quarantined_with_skip_bad(corpus, corrupt_corpus, tmp_path):
    store = LabelStore(tmp_path / "store")
    version_id = relabel.relabel(_request(corpus, tmp_path / "store", corrupt_corpus,
                                          skip_bad=True), dask=IN_PROCESS)
    version = store.open_version(version_id)
    assert set(version.quarantined) == {"p003"} and len(version) == 5
    assert store.verify(version_id).ok
    assert "p003" in _artifact(f"relabel-summary-{version_id}")


def test_a_corrupt_file_fails_the_run_and_publishes_nothing(corpus, corrupt_corpus, tmp_path):
    store = LabelStore(tmp_path / "store")
    good = relabel.relabel(_request(corpus, tmp_path / "store"), dask=IN_PROCESS)
    with pytest.raises(BadSample, match=r"p003\.jpg"):
        relabel.relabel(_request(corpus, tmp_path / "store", corrupt_corpus), dask=IN_PROCESS)
    assert store.latest() == good
    (draft,) = [info for info in store.versions() if info.version_id != good]
    assert not draft.published
    report = store.verify(draft.version_id)
    assert report.ok and not report.published and 1 in report.pending_shards
    with pytest.raises(IncompleteVersion):
        store.open_version(draft.version_id)


# ----------------------------------------------------------------------------- pipeline + EMA


def _tiny_pipeline(work: Path) -> pipeline.PipelineRequest:
    train = TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, device="cpu",
                        checkpoint_every=0)
    return pipeline.PipelineRequest(
        work=str(work), composite_count=2, natural_count=4, validation_count=2, size=32,
        teacher_model="unet_r18_w05", student_model="unet_r18_w05", teacher_train=train,
        student_train=train, augment=AugmentConfig(short_side=32, crop_sizes=(32,),
                                                   output_size=32),
        relabel=RelabelConfig(short_side=32, batch_size=2, shard_size=2, device="cpu"),
        dask=IN_PROCESS, short_side=32)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> pipeline.PipelineResult:
    return pipeline.pipeline(_tiny_pipeline(tmp_path_factory.mktemp("pipeline")))


def test_pipeline_trains_relabels_and_reports(demo):
    report = Path(demo.report).read_text()
    assert "| teacher |" in report and "| student |" in report and demo.label_version in report
    assert set(demo.metrics) == {"teacher", "student"}
    assert LabelStore(Path(demo.report).parent / "labels").latest() == demo.label_version
    assert "| student |" in _artifact("pipeline-report")


def test_pipeline_rerun_resumes_without_training_again(demo):
    request = _tiny_pipeline(Path(demo.report).parent)
    again = pipeline.pipeline(request, return_state=True)
    assert again.result().label_version == demo.label_version  # synthesis is deterministic
    assert "(a finished checkpoint was found: no work)" in _artifact("student-summary-student")


def _round_request(work: Path, current: Path, rounds: Path) -> ema.EmaRoundRequest:
    return ema.EmaRoundRequest(
        student=str(current), images=str(work / "data/natural/images"),
        masks=str(work / "data/natural/masks"), store=str(work / "labels"),
        validation_images=str(work / "data/validation/images"),
        validation_alphas=str(work / "data/validation/alphas"), work=str(rounds),
        train=TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, device="cpu",
                          checkpoint_every=0),
        relabel=RelabelConfig(short_side=32, batch_size=2, shard_size=2, device="cpu"),
        augment=AugmentConfig(short_side=32, crop_sizes=(32,), output_size=32),
        inference={"short_side": 32})


@pytest.mark.parametrize("runner", ["flow", "library"])
def test_ema_round_records_lineage_and_promotes_only_a_better_student(demo, tmp_path, runner):
    # mlb.train.ema_round owns the round; the flow only runs its steps as Prefect tasks, the
    # library (no Prefect) runs them in this process. Both keep the same contract.
    from mlb.train.ema_round import run_round

    work = Path(demo.report).parent
    current = tmp_path / "current.pt"
    shutil.copy(demo.student, current)
    before = current.read_bytes()
    request = _round_request(work, current, tmp_path / "rounds")
    result = (ema.ema_relabel(request, dask=IN_PROCESS) if runner == "flow"
              else run_round(request))

    assert (result.ema_round, result.parent_version) == (1, demo.label_version)
    lineage = LabelStore(work / "labels").open_version(result.version_id).metadata["lineage"]
    assert lineage["parent_version"] == demo.label_version and lineage["ema_round"] == 1
    assert result.promoted == (result.new_metric <= result.current_metric)
    promoted = Path(result.student).read_bytes()
    backup = Path(result.report).parent / "previous-student.pt"
    if result.promoted:
        assert current.read_bytes() == promoted and backup.read_bytes() == before
    else:
        assert current.read_bytes() == before and not backup.exists()
    assert "round 1 student" in Path(result.report).read_text()
    if runner == "flow":
        assert "round 1 student" in _artifact("ema-round")


def test_promotion_rule():
    assert ema.is_not_worse(1.0, 1.0) and ema.is_not_worse(0.5, 1.0)
    assert not ema.is_not_worse(1.5, 1.0)
    assert not ema.is_not_worse(float("nan"), 1.0) and not ema.is_not_worse(1.0, float("nan"))


def test_ema_round_needs_a_student_with_ema_weights(demo, tmp_path):
    work = Path(demo.report).parent
    versions = LabelStore(work / "labels").versions()
    request = ema.EmaRoundRequest(
        student=demo.teacher, images=str(work / "data/natural/images"),
        masks=str(work / "data/natural/masks"), store=str(work / "labels"),
        validation_images="v", validation_alphas="a", work=str(tmp_path), train={"steps": 1})
    with pytest.raises(ValueError, match=r"teacher\.pt has no EMA weights"):
        ema.ema_relabel(request, dask=IN_PROCESS)
    assert LabelStore(work / "labels").versions() == versions  # failed before any work


def _log_lines(flow_run_id) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
    return [log.message for log in logs]


def test_training_flow_runs_torchrun_and_fails_with_the_failed_ranks_error(demo, tmp_path):
    work = Path(demo.report).parent
    request = StudentRequest(
        store=str(work / "labels"), labels=demo.label_version, model="unet_r18_w05",
        out=str(tmp_path / "student.pt"),
        train=TrainConfig(steps=2, batch_size=1, lr=1e-3, warmup_steps=1, device="cpu",
                          sync_bn=True),
        augment=AugmentConfig(short_side=32, crop_sizes=(32,), output_size=32))
    state = training.train_student(request, launch=LaunchConfig(nproc=2), return_state=True)
    summary = state.result()
    assert (summary.world_size, summary.global_batch, summary.steps) == (2, 2, 2)
    assert read_checkpoint(request.out).train_config["world_size"] == 2
    # The processes' output reached the run's log.
    lines = _log_lines(state.state_details.flow_run_id)
    assert {"[rank 0/2] student run starting", "[rank 1/2] student run starting"} <= set(lines)

    changed = request.model_copy(update={"train": request.train.model_copy(update={"lr": 5e-4})})
    failed = training.train_student(changed, launch=LaunchConfig(nproc=2), return_state=True,
                                    overwrite=False)
    assert failed.is_failed()
    with pytest.raises(TrainingFailed, match=r"rank [01]: ValueError: cannot resume"):
        failed.result()


# ----------------------------------------------------------------------------- runners


def test_transient_errors_are_retried_and_input_errors_are_not():
    assert is_transient(OSError("connection reset")) and is_transient(RuntimeError("CUDA OOM"))
    for error in (BadSample("x.jpg", "truncated"), CheckpointError("bad"),
                  FileNotFoundError("x"), ValueError("x")):
        assert not is_transient(error)
    assert retry_condition(None, None, Failed(data=OSError("reset")))
    assert not retry_condition(None, None, Failed(data=BadSample("x.jpg", "truncated")))


def test_shards_are_grouped_whole_and_in_order():
    assert shard_groups([0, 1, 2, 3, 4], shards_per_task=2) == [[0, 1], [2, 3], [4]]
    assert shard_groups([], shards_per_task=3) == []
    with pytest.raises(ValueError, match="shards_per_task"):
        shard_groups([0], shards_per_task=0)


def test_gpu_tasks_ask_for_the_gpu_resource():
    with submission_settings(DaskConfig(gpu=True)):
        assert dask.get_annotations() == {"resources": {"GPU": 1}}
        assert dask.config.get("distributed.scheduler.no-workers-timeout") == "60s"
    with submission_settings(DaskConfig()):
        assert dask.get_annotations() == {}
    runner = dask_task_runner(DaskConfig(gpu=True), api_url="http://api")
    assert runner.cluster_kwargs["resources"] == {"GPU": 1}
    assert runner.cluster_kwargs["env"] == {"PREFECT_API_URL": "http://api"}


@pytest.mark.parametrize("resources", [None, {"GPU": 1}])
def test_gpu_runs_refuse_a_cluster_without_gpu_workers(resources):
    kwargs = {"resources": resources} if resources else {}
    with LocalCluster(n_workers=1, processes=False, dashboard_address=":0", **kwargs) as cluster:
        config = DaskConfig(scheduler_address=cluster.scheduler_address, gpu=True)
        with DaskTaskRunner(address=cluster.scheduler_address) as runner:
            if resources:
                check_gpu_workers(runner, config)
            else:
                with pytest.raises(ValueError, match="--resources GPU=1"):
                    check_gpu_workers(runner, config)


# ----------------------------------------------------------------------------- deployments


def test_prefect_yaml_serve_and_flows_agree():
    declared = {entry["name"]: entry
                for entry in yaml.safe_load(deploy.PROJECT_FILE.read_text())["deployments"]}
    specs = deploy.read_deployments()
    flows = {value.name for module in FLOW_MODULES for value in vars(module).values()
             if isinstance(value, Flow)}
    assert {spec.name for spec in specs} == set(declared) == flows
    for spec in specs:
        served = deploy.runner_deployment(spec)
        entry = declared[spec.name]
        assert (served.name, served.flow_name) == (spec.name, spec.name)
        path, function = entry["entrypoint"].split(":")
        assert served.entrypoint == f"{path.removesuffix('.py').replace('/', '.')}.{function}"
        assert served.parameters == entry.get("parameters", {})
        assert [(s.schedule.cron, s.schedule.timezone, s.active) for s in served.schedules] == [
            (s["cron"], s["timezone"], s["active"]) for s in entry.get("schedules", [])]
        # A run with no parameters gets only these: they must be complete and valid.
        spec.flow.validate_parameters(spec.parameters)
        triggers = [t.model_dump(mode="json", exclude={"name"}, exclude_unset=True)
                    for t in served.triggers]
        assert triggers == [{k: v for k, v in t.items() if k != "name"}
                            for t in entry.get("triggers", [])]
    assert declared["ema-relabel"]["schedules"][0]["cron"] == "0 3 * * *"


def test_a_deployment_must_be_named_after_its_flow(tmp_path):
    path = tmp_path / "prefect.yaml"
    path.write_text(yaml.safe_dump({"deployments": [
        {"name": "relabel-nightly", "entrypoint": "flows/relabel.py:relabel"}]}))
    with pytest.raises(ValueError, match="named after its flow 'relabel'"):
        deploy.read_deployments(path)


def test_cli_lists_deployments_and_names_unknown_ones(capsys):
    assert cli.main(["deployments"]) == 0
    assert "ema-relabel/ema-relabel\tflows/ema.py:ema_relabel\t0 3 * * *" in capsys.readouterr().out
    assert cli.main(["serve", "--only", "nightly"]) == 2
    assert "no deployment named nightly" in capsys.readouterr().err


# ----------------------------------------------------------------------------- forking


def _put_ok(queue) -> None:
    queue.put("ok")


def test_processes_forked_after_a_flow_exit_cleanly(corpus, tmp_path):
    # DataLoader workers are forked; Prefect's inherited service callbacks used to make
    # every such child exit with code 1 (flows/forking.py).
    import multiprocessing

    relabel.relabel(_request(corpus, tmp_path / "store"), dask=IN_PROCESS)
    context = multiprocessing.get_context("fork")
    queue = context.Queue()
    child = context.Process(target=_put_ok, args=(queue,))
    child.start()
    assert queue.get(timeout=60) == "ok"
    child.join(timeout=60)
    assert child.exitcode == 0


def test_a_round_whose_reports_hold_no_metric_never_promotes():
    # A report read back from JSON holds None where nothing was scored (NaN).
    from mlb.evaluate import EvaluationReport
    from mlb.train.ema_round import _promotion_metric

    report = EvaluationReport(checkpoint="c.pt", weights="model", kind="student",
                              label_version=None, short_side=32, images=0, per_image=[],
                              mean={"mse": None}, table="")
    assert math.isnan(_promotion_metric(report))
    assert not ema.is_not_worse(_promotion_metric(report), 0.1)


# ----------------------------------------------------------------------------- operations


def test_relative_paths_resolve_against_the_data_root(tmp_path):
    request = StudentRequest(store="labels", model="unet_r18", out="checkpoints/s.pt",
                             init="/abs/teacher.pt", train=TrainConfig(steps=1))
    resolved = paths.at_data_root(request, tmp_path)
    assert resolved.store == str(tmp_path / "labels")
    assert resolved.out == str(tmp_path / "checkpoints/s.pt") and resolved.init == "/abs/teacher.pt"
    assert resolved.model.name == "unet_r18" and resolved.train == request.train
    relabel_request = _request({"teacher": "t.pt", "masks": "m"}, "s3://bucket/labels",
                               Path("images"))
    resolved = paths.at_data_root(relabel_request, tmp_path)
    assert (resolved.teacher, resolved.images, resolved.masks, resolved.store) == (
        str(tmp_path / "t.pt"), str(tmp_path / "images"), str(tmp_path / "m"),
        "s3://bucket/labels")


def test_every_flow_request_names_its_path_fields():
    from mlb.evaluate import EvaluateRequest
    from mlb.labels.request import RelabelRequest
    from mlb.train import DdcRequest, TeacherRequest

    expected = {RelabelRequest: {"teacher", "images", "masks", "store"},
                TeacherRequest: {"matte", "out", "init", "pretrain_images", "pretrain_masks"},
                StudentRequest: {"store", "out", "init"}, DdcRequest: {"images", "masks", "out",
                                                                       "init"},
                EvaluateRequest: {"model", "images", "alphas", "grid_path", "json_path"},
                pipeline.PipelineRequest: {"work"}}
    for model, fields in expected.items():
        assert set(paths.path_fields(model)) >= fields, model
    assert {"student", "store", "work"} <= set(paths.path_fields(ema.EmaRoundRequest))


def test_the_data_root_variable_wins_over_the_environment(tmp_path, monkeypatch):
    from prefect.variables import Variable

    monkeypatch.setenv(paths.DATA_ROOT_ENV, str(tmp_path / "env"))
    assert paths.data_root() == (tmp_path / "env", "environment variable MLB_DATA_ROOT")
    Variable.set(paths.DATA_ROOT_VARIABLE, str(tmp_path / "var"), overwrite=True)
    try:
        assert paths.data_root()[0] == tmp_path / "var"
        Variable.set(paths.DATA_ROOT_VARIABLE, "relative/root", overwrite=True)
        with pytest.raises(ValueError, match=r"'relative/root' .* must be an absolute path"):
            paths.data_root()
    finally:
        Variable.unset(paths.DATA_ROOT_VARIABLE)
    monkeypatch.delenv(paths.DATA_ROOT_ENV)
    assert paths.data_root() == (paths.DEFAULT_DATA_ROOT, "the checkout's default")


def test_library_log_lines_reach_the_run_log():
    from prefect import flow
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    @flow(name="log-forwarding")
    def logs_from_the_library() -> str:
        runlog.forward_library_logs()
        logging.getLogger("mlb.train.loop").info("step 10/20 loss 0.125")
        return runlog.flow_run_id()

    flow_run_id = logs_from_the_library()
    logs = []
    with get_client(sync_client=True) as client:
        for _ in range(30):  # logs are sent in batches
            logs = client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if any("step 10/20 loss 0.125" in log.message for log in logs):
                return
            time.sleep(1)
    pytest.fail(f"the mlb logger's line is not in the run log: {logs}")


def test_training_progress_reaches_the_run_log_while_it_runs(corpus, tmp_path):
    """The training loop's every-log_every-steps line (logger mlb.train) in Prefect."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from mlb.data.augment import AugmentConfig
    from mlb.train import DdcRequest, TrainConfig

    request = DdcRequest(
        images=str(corpus["images"]), masks=str(corpus["masks"]), model="unet_r18_w05",
        out=str(tmp_path / "ddc.pt"), augment=AugmentConfig(short_side=32, crop_sizes=(32,),
                                                              output_size=32),
        train=TrainConfig(steps=2, batch_size=2, lr=1e-3, warmup_steps=1, device="cpu",
                          checkpoint_every=0, log_every=1))
    state = training.train_ddc(request, return_state=True)
    assert state.is_completed(), state
    flow_run_id = state.state_details.flow_run_id
    messages: list[str] = []
    with get_client(sync_client=True) as client:
        for _ in range(30):  # logs are sent in batches
            messages = [log.message for log in client.read_logs(log_filter=LogFilter(
                flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))]
            if sum("ddc step " in message for message in messages) >= 2:
                break
            time.sleep(1)
    steps = [m for m in messages if "ddc step " in m]
    assert [m.split("ddc step ")[1].split(":")[0] for m in steps] == ["1/2", "2/2"], messages


def test_models_are_named_in_the_flow_parameter_schema():
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools import validate

    schema = parameter_schema(training.train_student.fn).model_dump_for_openapi()
    request = {"store": "labels", "out": "s.pt", "train": {"steps": 1}}
    for model in ("unet_r18", {"name": "unet_r18"}):
        validate({"request": {**request, "model": model}}, schema, raise_on_error=True,
                 preprocess=True, ignore_required=False)
    with pytest.raises(Exception, match=r"request\.model"):
        validate({"request": {**request, "model": 3}}, schema, raise_on_error=True,
                 preprocess=True, ignore_required=False)


def test_run_overrides_set_single_fields_and_name_bad_ones():
    overrides = submit.parse_overrides(["request.config.short_side=256", "dask={\"workers\": 0}",
                                        "request.teacher=checkpoints/t.pt"])
    defaults = {"request": {"teacher": "a.pt", "store": "labels"}}
    assert submit.with_overrides(defaults, overrides) == {
        "request": {"teacher": "checkpoints/t.pt", "store": "labels",
                    "config": {"short_side": 256}}, "dask": {"workers": 0}}
    assert defaults == {"request": {"teacher": "a.pt", "store": "labels"}}
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        submit.parse_overrides(["request.teacher"])
    with pytest.raises(ValueError, match=r"'teacher' holds 'a\.pt', not an object"):
        submit.with_overrides(defaults, {"request.teacher.x": 1})
    assert submit.deployment_name("relabel") == "relabel/relabel"


def test_run_names_an_unreachable_server_in_one_line(capsys):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: "http://127.0.0.1:1/api"}):
        assert cli.main(["run", "relabel"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mlb-flows run: error: cannot reach the Prefect API at "
                          "http://127.0.0.1:1/api") and len(err.strip().splitlines()) == 1


def test_mlb_flows_output_into_a_closed_pipe_is_not_a_traceback():
    """``mlb-flows deployments | head -1``: the reader may leave before anything is written."""
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes
    done = subprocess.run([sys.executable, "-m", "flows.cli", "deployments"], stdout=write,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
