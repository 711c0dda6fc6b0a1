"""Data-parallel training through torchrun, with real processes on the CPU (gloo).

What is checked: two processes of batch 2 with ``--sync-bn`` train the weights one process of
batch 4 trains (same samples, BatchNorm over the global batch, averaged gradients); a job
killed as a whole resumes to the uninterrupted weights; two torchrun agents meeting at a c10d
endpoint on 127.0.0.1 (two "machines") train the same weights; a dying rank ends the job with
an error naming it; another number of processes resumes only with the same global batch;
every documented command runs.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from tiny_data import MODEL, write_tiny_corpus

from mlb.checkpoint import read_checkpoint
from mlb.cli import main
from mlb.labels.relabel import relabel
from mlb.labels.request import RelabelConfig, RelabelRequest
from mlb.train.sampling import StepSampler

REPO = Path(__file__).resolve().parents[1]
STEPS = 4
# The student flags every run here shares: a global batch of 4 crops of 32 px, BatchNorm
# over the global batch, a checkpoint every 2 steps.
FLAGS = ["--model", MODEL, "--crop-size", "32", "--aug-short-side", "48", "--lr", "1e-3",
         "--warmup-steps", "1", "--device", "cpu", "--quiet", "--sync-bn",
         "--checkpoint-every", "2"]
# N processes vs one: the first step's loss and gradient norm agree to float32 rounding (the
# same samples, BatchNorm statistics and averaged gradient); later steps drift by the order of
# floating-point reductions, which Adam amplifies where gradients are near zero: the weights
# agree to a relative L2 difference of about 2e-4 after 4 steps at lr 1e-3 (measured).
FIRST_STEP_TOLERANCE = 1e-5
WEIGHT_TOLERANCE = 1e-3
# The same number of processes: gloo reduces in a fixed order, so a resumed or a two-agent
# run ends (nearly) bit-identical.
TOLERANCE = 1e-5


def _environment(job: str = "") -> dict[str, str]:
    # The processes torchrun starts import this checkout's mlb; ``job`` marks every process
    # of a job (torchrun starts each rank in a session of its own).
    path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    return {**os.environ, "PYTHONPATH": path, "MLB_TEST_JOB": job}


def _job_processes(job: str) -> dict[int, dict[str, str]]:
    """pid -> environment of every process marked ``job`` (Linux /proc)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        environment = dict(item.decode(errors="replace").partition("=")[::2] for item in raw
                           if b"=" in item)
        if environment.get("MLB_TEST_JOB") == job:
            found[int(entry.name)] = environment
    return found


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_tiny_corpus(tmp_path_factory.mktemp("corpus"), count=6)


@pytest.fixture(scope="module")
def label_store(corpus, tmp_path_factory):
    teacher = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    assert main(["train", "teacher", "--matte", str(corpus.matte), "--steps", "1",
                 "--out", str(teacher), "--batch-size", "2", *FLAGS[:-3]]) == 0
    store = tmp_path_factory.mktemp("labels")
    relabel(RelabelRequest(teacher=str(teacher), images=str(corpus.images),
                           masks=str(corpus.masks), store=str(store),
                           config=RelabelConfig(short_side=48, batch_size=2, device="cpu")),
            progress=False)
    return store


def _student(store: Path, out: Path, *, batch: int, steps: int = STEPS) -> list[str]:
    return ["train", "student", "--store", str(store), "--out", str(out), "--steps", str(steps),
            "--batch-size", str(batch), *FLAGS]


def _torchrun(*options: str) -> list[str]:
    """The ``torchrun`` console script of this environment, running ``python -m mlb``."""
    return [str(Path(sys.executable).parent / "torchrun"), *options, "-m", "mlb"]


def _mlb_nproc(store: Path, out: Path, *extra: str, steps: int = STEPS) -> list[str]:
    return [sys.executable, "-m", "mlb", *_student(store, out, batch=2, steps=steps),
            "--nproc", "2", *extra]


def _run(command: list[str], timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, env=_environment(), capture_output=True, text=True,
                          timeout=timeout, check=False)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path).state_dict


def _relative_difference(first: dict, second: dict) -> float:
    """``|first - second| / |first|`` over every floating-point entry (L2 norms)."""
    names = [k for k in first if first[k].is_floating_point()]
    difference = sum(float((first[k].double() - second[k].double()).square().sum())
                     for k in names)
    return (difference / sum(float(first[k].double().square().sum()) for k in names)) ** 0.5


def _max_difference(first: dict, second: dict) -> float:
    assert first.keys() == second.keys()
    return max(float((first[k].double() - second[k].double()).abs().max()) for k in first
               if first[k].is_floating_point())


@pytest.fixture(scope="module")
def single(label_store, tmp_path_factory):
    """One process, batch 4, in this process."""
    out = tmp_path_factory.mktemp("single") / "student.pt"
    assert main(_student(label_store, out, batch=4)) == 0
    return out


@pytest.fixture(scope="module")
def two_processes(label_store, tmp_path_factory):
    """Two processes of batch 2 through ``mlb train ... --nproc 2`` (torchrun)."""
    out = tmp_path_factory.mktemp("ddp") / "student.pt"
    result = _run(_mlb_nproc(label_store, out))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 processes (global batch 4)" in result.stdout
    return out


def test_ranks_share_each_step_as_one_process_of_the_global_batch():
    whole = StepSampler(10, batch_size=4, seed=3, start=0, stop=5)
    shares = [StepSampler(10, batch_size=2, seed=3, start=0, stop=5, ranks=2, rank=rank)
              for rank in (0, 1)]
    for step, batch in enumerate(whole):
        assert batch == [key for share in shares for key in list(share)[step]]
    with pytest.raises(ValueError, match="rank must be in"):
        StepSampler(10, batch_size=2, seed=3, start=0, stop=5, ranks=2, rank=2)


def test_two_processes_train_the_weights_of_one_with_the_global_batch(single, two_processes):
    first, second = read_checkpoint(single), read_checkpoint(two_processes)
    assert second.step == first.step == STEPS
    assert second.train_config["world_size"] == 2
    assert second.train_config["global_batch"] == 4 == first.train_config["global_batch"]
    assert first.train_config["world_size"] == 1
    for term in ("total", "grad_norm"):
        assert second.history[term][0] == pytest.approx(first.history[term][0],
                                                        rel=FIRST_STEP_TOLERANCE)
    assert second.history["total"] == pytest.approx(first.history["total"], rel=1e-4)
    assert _relative_difference(first.state_dict, second.state_dict) < WEIGHT_TOLERANCE
    # The EMA copy is updated identically on every rank: it follows the same weights.
    assert second.ema_state_dict is not None
    assert _relative_difference(first.ema_state_dict, second.ema_state_dict) < WEIGHT_TOLERANCE


def _checkpoint_step(path: Path) -> int:
    try:
        return read_checkpoint(path).step
    except (OSError, ValueError):
        return 0


def _start_past_a_checkpoint(store: Path, out: Path, job: str, *, steps: int
                             ) -> subprocess.Popen:
    """``mlb train student --nproc 2`` as job ``job``, once it has saved step 2 (or ended)."""
    process = subprocess.Popen(_mlb_nproc(store, out, steps=steps), env=_environment(job),
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _checkpoint_step(out) < 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    return process


def test_a_killed_job_resumes_to_the_uninterrupted_weights(label_store, two_processes,
                                                           tmp_path):
    out = tmp_path / "student.pt"
    job = _start_past_a_checkpoint(label_store, out, "killed", steps=STEPS)
    for pid in _job_processes("killed"):  # the launcher, torchrun and both ranks at once
        os.kill(pid, signal.SIGKILL)
    job.wait()
    assert 2 <= _checkpoint_step(out) < STEPS, "the job was not killed mid-run"
    result = _run(_mlb_nproc(label_store, out, "--resume"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _max_difference(_weights(out), _weights(two_processes)) < TOLERANCE


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_agents_meet_at_a_rendezvous_endpoint_and_train_as_one_job(label_store,
                                                                     two_processes, tmp_path):
    """Two "machines": two torchrun agents with one process each, as the README shows."""
    out = tmp_path / "student.pt"
    endpoint = f"127.0.0.1:{_free_port()}"
    command = _torchrun("--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                        "--rdzv-endpoint", endpoint, "--rdzv-id", "two-agents")
    command += _student(label_store, out, batch=2)
    agents = [subprocess.Popen(command, env=_environment(), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [agent.communicate(timeout=300)[0] for agent in agents]
    assert [agent.returncode for agent in agents] == [0, 0], outputs
    assert sum("2 processes (global batch 4)" in output for output in outputs) == 1
    assert read_checkpoint(out).train_config["world_size"] == 2
    # torchrun gives each process one thread only when it starts several on a machine:
    # here each has two, so convolutions sum in another order than in ``two_processes``.
    assert _relative_difference(_weights(two_processes), _weights(out)) < WEIGHT_TOLERANCE


def test_a_rank_that_dies_ends_the_job_with_an_error_naming_it(label_store, tmp_path):
    out = tmp_path / "student.pt"
    job = _start_past_a_checkpoint(label_store, out, "dies", steps=400)
    ranks = {int(env["RANK"]): pid for pid, env in _job_processes("dies").items()
             if "TORCHELASTIC_RUN_ID" in env}
    assert sorted(ranks) == [0, 1]
    os.kill(ranks[1], signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 2
    assert "mlb train: error: training failed: rank 1 was killed by signal 9 (SIGKILL)" \
        in stderr
    assert "Traceback" not in stderr  # torchrun's own tracebacks are not passed on
    assert not _job_processes("dies"), "torchrun left a rank running"


def test_sigterm_to_the_launcher_stops_the_whole_job(label_store, tmp_path):
    out = tmp_path / "student.pt"
    job = _start_past_a_checkpoint(label_store, out, "term", steps=400)
    job.send_signal(signal.SIGTERM)  # what kill, systemd or a cancelled flow run send
    _, stderr = job.communicate(timeout=120)
    assert job.returncode == 2
    assert stderr.strip().splitlines()[-1].startswith(
        "mlb train: error: training stopped: this launcher received SIGTERM")
    deadline = time.monotonic() + 30
    while _job_processes("term") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _job_processes("term"), "a rank or torchrun outlived the launcher"
    # The job resumes from its last checkpoint.
    assert _checkpoint_step(out) >= 2


def test_a_failing_rank_names_itself_in_the_error(label_store, two_processes, tmp_path):
    # Resuming under another learning rate is refused by every rank, before any step.
    result = _run([*_mlb_nproc(label_store, two_processes, "--resume"), "--lr", "5e-4"])
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    # The first rank to fail is named with its own error; torchrun may stop the other first.
    assert re.match(r"mlb train: error: training failed: rank [01]: ValueError: cannot resume",
                    last), last


def test_another_number_of_processes_resumes_only_with_the_same_global_batch(
        label_store, single, tmp_path):
    out = tmp_path / "student.pt"
    # The README's one-machine command: torchrun itself, 2 processes of batch 2.
    result = _run([*_torchrun("--standalone", "--nproc-per-node", "2"),
                   *_student(label_store, out, batch=2), "--stop-at-step", "2"])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("student stopped at step 2") == 1  # rank 0 alone reports
    assert read_checkpoint(out).train_config["world_size"] == 2
    # One process of batch 4 continues the 2 x 2 run exactly where it stopped ...
    assert main([*_student(label_store, out, batch=4), "--resume"]) == 0
    assert _relative_difference(_weights(single), _weights(out)) < WEIGHT_TOLERANCE
    # ... one of batch 2 would see other samples: refused, naming both global batches.
    with pytest.raises(ValueError, match="global batch of 4"):
        from mlb.train import StudentRequest, train_student

        request = read_checkpoint(out).train_config["request"]
        request["train"] = {**request["train"], "batch_size": 2}
        train_student(StudentRequest.model_validate(request), resume=True)


def test_teacher_with_pretraining_and_ddc_train_data_parallel(corpus, tmp_path):
    teacher = tmp_path / "teacher.pt"
    # Pre-training leaves the boundary head out of the loss (DDP must not wait for it), and
    # the fine-tuning stage starts from the checkpoint rank 0 wrote at the end of it.
    result = _run([sys.executable, "-m", "mlb", "train", "teacher", "--matte",
                   str(corpus.matte), "--pretrain-seg", str(corpus.images), str(corpus.masks),
                   "--pretrain-steps", "2", "--steps", "2", "--out", str(teacher),
                   "--batch-size", "1", "--nproc", "2", *FLAGS])
    assert result.returncode == 0, result.stderr[-3000:]
    for path in (teacher, teacher.with_name("teacher.pretrain.pt")):
        checkpoint = read_checkpoint(path)
        assert (checkpoint.step, checkpoint.train_config["world_size"]) == (2, 2)
    ddc = tmp_path / "ddc.pt"
    result = _run([sys.executable, "-m", "mlb", "train", "ddc", "--images", str(corpus.images),
                   "--masks", str(corpus.masks), "--steps", "2", "--out", str(ddc),
                   "--batch-size", "1", "--nproc", "2", *FLAGS])
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_checkpoint(ddc).train_config["global_batch"] == 2


@pytest.mark.gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL needs two GPUs")
def test_two_gpus_train_the_weights_of_one_with_the_global_batch(label_store, tmp_path):
    gpu_flags = ["--device", "cuda", "--no-amp"]
    single_out, ddp_out = tmp_path / "single.pt", tmp_path / "ddp.pt"
    assert main([*_student(label_store, single_out, batch=4), *gpu_flags]) == 0
    result = _run([*_mlb_nproc(label_store, ddp_out), *gpu_flags])
    assert result.returncode == 0, result.stderr[-3000:]
    assert _relative_difference(_weights(single_out), _weights(ddp_out)) < WEIGHT_TOLERANCE
