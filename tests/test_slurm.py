"""Sweeps on a real Slurm cluster (``hydra/launcher=submitit_slurm``), and the check that stops a
sweep before submitting when Slurm cannot take it.

The tests marked ``slurm`` need a cluster that answers ``sinfo``: on one machine, as root,
``eval "$(tests/cluster/slurm.sh start)"`` starts one (it prints ``export SLURM_CONF=...``), and
``tests/cluster/slurm.sh stop`` stops it. They skip, saying why, when Slurm is not installed or
not answering; with ``INFOFLOW_REQUIRE_SLURM=1`` (CI) they fail instead. The partition is the
cluster's default one, or ``INFOFLOW_SLURM_PARTITION``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import DEVICE_KEY, RESUME_KEY, run_cli
from test_launchers import comparable

from infoflow.sweep.slurm import partitions, slurm_problem

SWEEP = ("-m", "model=mlp1,mlp3", "trainer.epochs=1", f"{DEVICE_KEY}=cpu")
# one torch thread in every job, on the cluster and here: a job's numbers depend on its thread
# count (the order of float sums), and runtime.threads=auto gives a Slurm job its cpus_per_task
ENV = {"OMP_NUM_THREADS": "1"}
# a long enough sweep to be cancelled while it runs (digits: about 0.2 s per epoch per job)
# every evaluation flushed: the test watches the statuses to cancel mid-run
LONG_SWEEP = ("-m", "model=mlp1,mlp3", "trainer.epochs=40", f"{DEVICE_KEY}=cpu",
              "runtime.flush_s=0")  # fmt: skip


# ---------------------------------------------------------------------------- the cluster


def _cluster_or_reason() -> tuple[str | None, str]:
    """(partition, "") when a Slurm cluster answers, else (None, why not)."""
    if shutil.which("sbatch") is None or shutil.which("sinfo") is None:
        return None, "Slurm is not installed (no sbatch/sinfo on PATH)"
    try:
        found, default = partitions(timeout=30)
    except RuntimeError as err:
        return None, f"Slurm is installed but not usable: {err}"
    partition = os.environ.get("INFOFLOW_SLURM_PARTITION") or default
    if partition is None or partition not in found:
        return None, f"no Slurm partition to use (partitions: {', '.join(found) or 'none'})"
    states = subprocess.run(
        ["sinfo", "--noheader", "--partition", partition, "--format=%T"],
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout.split()
    if not any(s.rstrip("*~#") in ("idle", "mixed", "allocated") for s in states):
        return None, f"no node of Slurm partition {partition} is up (states: {states})"
    return partition, ""


@pytest.fixture(scope="module")
def partition() -> str:
    """The partition of a running Slurm cluster; skip (fail under CI) without one."""
    found, why = _cluster_or_reason()
    if found is None:
        why += '; start a test cluster: eval "$(tests/cluster/slurm.sh start)" (as root)'
        if os.environ.get("INFOFLOW_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return found


def slurm_args(
    partition: str, sweep_dir: Path, launcher: str = "hydra/launcher=submitit_slurm"
) -> tuple[str, ...]:
    """Slurm's keys, for submitit's launcher or (``hydra.launcher.executor=slurm``) ours."""
    return (
        launcher,
        f"hydra.launcher.partition={partition}",
        "hydra.launcher.cpus_per_task=1",  # two jobs (or units) run at once on a 2-CPU node
        "hydra.launcher.timeout_min=20",
        f"hydra.sweep.dir={sweep_dir}",
    )


def read_sweep(sweep_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return (
        pd.read_parquet(sweep_dir / "results.parquet"),
        pd.read_parquet(sweep_dir / "jobs.parquet"),
    )


def submitted_job_ids(sweep_dir: Path) -> set[str]:
    """Slurm job ids submitit used for this sweep (its folders are named after them)."""
    return {p.name.split("_")[0] for p in (sweep_dir / ".submitit").glob("*_*") if p.is_dir()}


def wait_until_gone(job_ids: set[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["squeue", "--noheader", "--format=%A", "--jobs", ",".join(sorted(job_ids))],
            capture_output=True,
            text=True,
        ).stdout.split()
        if not out:
            return
        time.sleep(0.5)
    raise AssertionError(f"Slurm jobs {sorted(job_ids)} still queued after {timeout} s")


@pytest.fixture(scope="module")
def basic_sweep(tmp_path_factory) -> Path:
    """The reference: the 2-job sweep under the basic launcher, on this machine."""
    root = tmp_path_factory.mktemp("basic")
    proc = run_cli(*SWEEP, f"hydra.sweep.dir={root / 'sweep'}", cwd=root, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "sweep"


# ---------------------------------------------------------------------------- on the cluster


@pytest.mark.slurm
@pytest.mark.slow
def test_slurm_sweep_gives_the_basic_launchers_table(partition, basic_sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(*SWEEP, *slurm_args(partition, sweep_dir), cwd=tmp_path, timeout=900, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    merged, jobs = read_sweep(sweep_dir)
    assert jobs.status.tolist() == ["completed", "completed"], jobs
    (array,) = submitted_job_ids(sweep_dir)  # one Slurm job array for the sweep
    for task in (0, 1):  # each job ran as a task of that array, on the cluster's node
        logs = (sweep_dir / ".submitit" / f"{array}_{task}").glob("*_log.*")  # .out, .err
        text = "".join(p.read_text() for p in logs)
        assert f"Starting with JobEnvironment(job_id={array}_{task}," in text
    reference, _ = read_sweep(basic_sweep)
    assert set(merged.run_id).isdisjoint(reference.run_id)
    pd.testing.assert_frame_equal(comparable(reference), comparable(merged), check_exact=True)


@pytest.mark.slurm
@pytest.mark.slow
def test_a_job_failing_on_the_cluster_is_in_jobs_parquet_with_its_error(partition, tmp_path):
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "-m",
        "model=mlp1",
        "model.activation=relu,bogus",
        "trainer.epochs=1",
        f"{DEVICE_KEY}=cpu",
        *slurm_args(partition, sweep_dir),
        cwd=tmp_path,
        timeout=900,
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    merged, jobs = read_sweep(sweep_dir)
    assert jobs.status.tolist() == ["completed", "failed"], jobs
    bad = jobs.iloc[1]
    assert "model.activation=bogus" in bad.overrides
    assert "model.activation must be one of" in bad.error and "'bogus'" in bad.error
    assert set(merged.status) == {"completed"} and merged.run_id.nunique() == 1
    assert "FAILED job 1" in proc.stderr + proc.stdout  # the sweep's summary names it


@pytest.mark.slurm
@pytest.mark.slow
def test_scancel_then_resume_finishes_with_the_uninterrupted_tables(partition, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = (*LONG_SWEEP, *slurm_args(partition, sweep_dir))
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **ENV}
    driver = subprocess.Popen(
        [sys.executable, "-m", "infoflow", *args],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        # cancel once both jobs have measured an epoch, or one is halfway (Slurm may start the
        # second job late: waiting longer could let the first finish before the cancel)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            done = [_evals_done(sweep_dir / str(i)) for i in (0, 1)]
            if all(d >= 1 for d in done) or max(done) >= 20 or driver.poll() is not None:
                break
            time.sleep(0.5)
        job_ids = submitted_job_ids(sweep_dir)
        assert job_ids and driver.poll() is None, "the sweep ended before it could be cancelled"
        subprocess.run(["scancel", *sorted(job_ids)], check=True)
        wait_until_gone(job_ids)
        # without Slurm accounting submitit cannot see the cancellation (no sacct): the user
        # interrupts the waiting sweep, which merges what the sweep holds on its way out
        driver.send_signal(signal.SIGINT)
        out = driver.communicate(timeout=120)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.communicate()
    assert driver.returncode != 0, out[-3000:]
    _, jobs = read_sweep(sweep_dir)
    assert len(jobs) == 2 and not (jobs.status == "completed").all(), jobs  # one cut at least

    resumed = run_cli(*args, f"{RESUME_KEY}=true", cwd=tmp_path, timeout=900, env=ENV)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    merged, jobs = read_sweep(sweep_dir)
    assert jobs.status.tolist() == ["completed", "completed"], jobs

    reference_dir = tmp_path / "reference"
    reference = run_cli(*LONG_SWEEP, f"hydra.sweep.dir={reference_dir}", cwd=tmp_path, env=ENV)
    assert reference.returncode == 0, reference.stderr[-3000:]
    expected, _ = read_sweep(reference_dir)
    assert len(merged) == len(expected) == 2 * 41 * 2  # jobs x evaluations (step 0 + 40) x 2
    pd.testing.assert_frame_equal(comparable(expected), comparable(merged), check_exact=True)


def _evals_done(job_dir: Path) -> int:
    try:
        return int(json.loads((job_dir / "status.json").read_text()).get("evals_done") or 0)
    except (OSError, ValueError):
        return 0


# ---------------------------------------------------------------------------- Slurm down


def _down_slurm_conf(tmp_path: Path) -> Path:
    """A slurm.conf whose controller port has no one listening: an installed, down Slurm."""
    conf = tmp_path / "slurm.conf"
    conf.write_text(
        "ClusterName=down\nSlurmctldHost=localhost\nSlurmctldPort=6899\n"
        "NodeName=localhost CPUs=1 State=UNKNOWN\n"
        "PartitionName=debug Nodes=localhost Default=YES State=UP\n"
    )
    return conf


@pytest.mark.slurm
def test_a_slurm_that_is_down_stops_the_sweep_with_its_reason(tmp_path):
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        pytest.skip("Slurm is not installed (no sbatch/sinfo on PATH)")
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = tmp_path / "sweep"
    env = {"SLURM_CONF": str(_down_slurm_conf(tmp_path))}
    proc = run_cli(*SWEEP, *slurm_args("debug", sweep_dir), cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("infoflow: error: Slurm is not answering (`sinfo` failed:"), last
    assert "Traceback" not in proc.stderr
    assert not sweep_dir.exists()  # nothing submitted, no job recorded at all


@pytest.mark.slurm
def test_an_unknown_partition_stops_the_sweep_naming_it(partition, tmp_path):
    sweep_dir = tmp_path / "sweep"
    args = (*SWEEP, *slurm_args(partition, sweep_dir), "hydra.launcher.partition=nosuchpart")
    proc = run_cli(*args, cwd=tmp_path, timeout=300)
    assert proc.returncode == 1
    last = proc.stderr.strip().splitlines()[-1]
    assert last == (
        "infoflow: error: hydra.launcher.partition=nosuchpart: no partition nosuchpart on this "
        f"Slurm cluster (partitions: {', '.join(partitions()[0])})"
    )
    assert not sweep_dir.exists()


# ---------------------------------------------------------------------------- the check alone


@pytest.fixture
def fake_sinfo(tmp_path, monkeypatch):
    """Put an ``sinfo`` printing ``stdout`` (exit ``rc``, ``stderr``) first on PATH."""

    def _make(stdout: str = "", rc: int = 0, stderr: str = "") -> None:
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "out").write_text(stdout)
        (bin_dir / "err").write_text(stderr)
        script = bin_dir / "sinfo"
        script.write_text(f'#!/bin/sh\ncat "{bin_dir}/out"\ncat "{bin_dir}/err" >&2\nexit {rc}\n')
        script.chmod(0o755)
        monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")

    return _make


def test_partitions_are_read_with_the_default_marked(fake_sinfo):
    fake_sinfo("debug*|up\ngpu|down\n")
    assert partitions() == ({"debug": "up", "gpu": "down"}, "debug")
    assert slurm_problem(None) is None
    assert slurm_problem("gpu") is None  # down: queued, with a warning
    assert slurm_problem("gpu,debug") is None


def test_unknown_partition_and_missing_default_are_named(fake_sinfo):
    fake_sinfo("debug*|up\ngpu|up\n")
    assert slurm_problem("cpu") == (
        "hydra.launcher.partition=cpu: no partition cpu on this Slurm cluster "
        "(partitions: debug, gpu)"
    )
    fake_sinfo("gpu|up\n")
    assert slurm_problem(None) == (
        "hydra.launcher.partition is not set and this Slurm cluster has no default partition "
        "(partitions: gpu)"
    )


def test_a_failing_sinfo_is_quoted(fake_sinfo):
    msg = "slurm_load_partitions: Unable to contact slurm controller (connect failure)"
    fake_sinfo(rc=1, stderr=msg + "\n")
    assert slurm_problem("debug") == f"Slurm is not answering (`sinfo` failed: {msg})"


def test_no_sinfo_on_path_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert "`sinfo` is not on PATH" in slurm_problem("debug")


@pytest.mark.parametrize(
    "launcher", ["hydra/launcher=submitit_slurm", "hydra.launcher.executor=slurm"]
)
def test_the_check_stops_a_slurm_sweep_before_anything_is_written(fake_sinfo, tmp_path, launcher):
    if "submitit" in launcher:
        pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    fake_sinfo("debug*|up\n")
    sweep_dir = tmp_path / "sweep"
    args = (*SWEEP, *slurm_args("nosuchpart", sweep_dir, launcher))
    proc = run_cli(*args, cwd=tmp_path, env={"PATH": os.environ["PATH"]})
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == (
        "infoflow: error: hydra.launcher.partition=nosuchpart: no partition nosuchpart on this "
        "Slurm cluster (partitions: debug)"
    )
    assert not sweep_dir.exists()


@pytest.mark.slow
def test_the_check_leaves_other_launchers_alone(fake_sinfo, tmp_path):
    fake_sinfo(rc=1, stderr="no Slurm here\n")  # would stop a Slurm sweep
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(
        "-m", "model=mlp1", "trainer.epochs=1", f"hydra.sweep.dir={sweep_dir}", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep_dir / "results.parquet").is_file()


# ---------------------------------------------------------------------------- infoflow's units


# four seeds in stacks of two: two units, so two Slurm jobs; one thread everywhere
UNITS = ("-m", "model=mlp1", "seed=0,1,2,3", "hydra.launcher.max_stack=2", f"{DEVICE_KEY}=cpu",
         "runtime.threads=1")  # fmt: skip


def units_on_slurm(partition: str, sweep_dir: Path) -> tuple[str, ...]:
    return slurm_args(partition, sweep_dir, "hydra.launcher.executor=slurm")


def numbers(sweep_dir: Path) -> pd.DataFrame:
    merged, _ = read_sweep(sweep_dir)
    merged = merged.drop(columns=[c for c in merged.columns if c in ("run_id", "status")])
    return merged.sort_values(["seed", "epoch", "layer"]).reset_index(drop=True)


@pytest.mark.slurm
@pytest.mark.slow
def test_infoflow_units_on_slurm_give_the_local_tables(partition, tmp_path):
    """Two stacks of two seeds, each a Slurm job of one array: the tables of the same sweep
    run here in one process, bit for bit; each job keeps its directory, status and log."""
    args = (*UNITS, "trainer.epochs=2")
    local = run_cli(*args, "hydra.launcher.n_workers=1", f"hydra.sweep.dir={tmp_path / 'local'}",
                    cwd=tmp_path, env=ENV)  # fmt: skip
    assert local.returncode == 0, local.stderr[-3000:]
    sweep_dir = tmp_path / "sweep"
    proc = run_cli(*args, *units_on_slurm(partition, sweep_dir), cwd=tmp_path, timeout=900,
                   env=ENV)  # fmt: skip
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-3000:]
    assert "Launching 4 jobs as 2 Slurm job(s), one per unit" in log
    (array,) = submitted_job_ids(sweep_dir)  # one array, a task per unit
    for task, seeds in ((0, "0, 1"), (1, "2, 3")):
        text = "".join(p.read_text() for p in (sweep_dir / ".submitit" / f"{array}_{task}").glob(
            "*_log.*"))  # fmt: skip
        assert f"Starting with JobEnvironment(job_id={array}_{task}," in text
        assert f"seeds {seeds} trained as one stack" in text
    _, jobs = read_sweep(sweep_dir)
    assert jobs.status.tolist() == ["completed"] * 4
    for job in range(4):
        assert f"seed {job}: eval 2/2" in (sweep_dir / str(job) / "__main__.log").read_text()
    pd.testing.assert_frame_equal(numbers(sweep_dir), numbers(tmp_path / "local"),
                                  check_exact=True)  # fmt: skip


def _start(args: tuple[str, ...], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", **ENV}
    return subprocess.Popen(
        [sys.executable, "-m", "infoflow", *args],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _until(predicate, driver: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and driver.poll() is None:
        if predicate():
            return
        time.sleep(0.5)
    driver.kill()
    pytest.fail(f"not reached:\n{driver.communicate()[0][-3000:]}")


def _start_requeued_now(task: str, driver: subprocess.Popen) -> None:
    """Slurm holds a requeued job back for about two minutes (its begin time): start it now."""

    def pending() -> bool:
        state = subprocess.run(["squeue", "--noheader", "--jobs", task, "--format=%T"],
                               capture_output=True, text=True).stdout.split()  # fmt: skip
        return state == ["PENDING"]

    _until(pending, driver, timeout=120)
    subprocess.run(["scontrol", "update", f"JobId={task}", "StartTime=now"], check=True)


@pytest.mark.slurm
@pytest.mark.slow
@pytest.mark.parametrize("how", ["scancel", "requeue"])
def test_a_unit_cancelled_or_requeued_on_slurm_resumes_to_the_uninterrupted_tables(
    partition, tmp_path, how
):
    """``scancel`` of one unit's Slurm job: its jobs write their rows and end ``interrupted``,
    the other unit completes, the sweep exits 1, and ``runtime.resume=true`` finishes it.
    A requeue (submitit's SIGUSR2, as ahead of a time limit or a preemption): the unit's jobs
    write theirs, submitit requeues the Slurm job and the unit resumes them by itself. Either
    way the tables are those of the sweep run here uninterrupted."""
    args = (*UNITS, "trainer.epochs=40", "runtime.flush_s=0.3")
    sweep_dir = tmp_path / "sweep"
    slurm = (*units_on_slurm(partition, sweep_dir), "hydra.launcher.max_num_timeout=2")
    driver = _start((*args, *slurm), tmp_path)
    _until(lambda: all(_evals_done(sweep_dir / str(i)) >= 3 for i in range(4)), driver)
    (array,) = submitted_job_ids(sweep_dir)
    if how == "scancel":
        subprocess.run(["scancel", f"{array}_0"], check=True)
    else:
        subprocess.run(["scancel", "--signal=USR2", f"{array}_0"], check=True)
        _start_requeued_now(f"{array}_0", driver)
    try:
        out = driver.communicate(timeout=600)[0]
    finally:
        if driver.poll() is None:
            driver.kill()
    if how == "scancel":
        assert driver.returncode == 1, out[-3000:]
        _, jobs = read_sweep(sweep_dir)
        assert jobs.status.tolist() == ["interrupted"] * 2 + ["completed"] * 2, jobs
        assert "runtime.resume=true continues them" in out
        again = run_cli(*args, *slurm, f"{RESUME_KEY}=true", cwd=tmp_path, timeout=900, env=ENV)
        assert again.returncode == 0, again.stderr[-3000:]
        out = again.stdout + again.stderr
    else:
        assert driver.returncode == 0, out[-3000:]
        unit_log = "".join(p.read_text() for p in (sweep_dir / ".submitit" / f"{array}_0").glob(
            "*_log.*"))  # fmt: skip
        assert "Requeued job" in unit_log or "requeue" in unit_log.lower(), unit_log[-3000:]
        assert "resuming after evaluation" in unit_log
    _, jobs = read_sweep(sweep_dir)
    assert jobs.status.tolist() == ["completed"] * 4, jobs
    reference = run_cli(
        *args,
        "hydra.launcher.n_workers=1",
        f"hydra.sweep.dir={tmp_path / 'reference'}",
        cwd=tmp_path,
        env=ENV,
    )
    assert reference.returncode == 0, reference.stderr[-3000:]
    pd.testing.assert_frame_equal(numbers(sweep_dir), numbers(tmp_path / "reference"),
                                  check_exact=True)  # fmt: skip


def test_infoflow_slurm_keys_make_a_valid_sbatch_script(tmp_path, monkeypatch):
    """hydra.launcher's Slurm keys, as the launcher hands them to submitit, in sbatch's words;
    nothing is submitted."""
    pytest.importorskip("submitit")
    from submitit.slurm.slurm import _make_sbatch_string

    from infoflow.sweep.slurm import executor_for

    fake_bin = tmp_path / "bin"  # submitit checks that srun exists
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    options = {"partition": "gpu", "account": "myproject", "timeout_min": 120,
               "gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "max_num_timeout": 3,
               "additional_parameters": {"mail_type": "END"}}  # fmt: skip
    inner = executor_for(options, str(tmp_path / "sweep"))._executor
    assert inner.max_num_timeout == 3
    script = _make_sbatch_string(command="python", folder=inner.folder, **inner.parameters)
    for line in ("--partition=gpu", "--account=myproject", "--time=120", "--gpus-per-node=1",
                 "--cpus-per-task=8", "--mem=32GB", "--signal=USR2@", "--mail-type=END",
                 f"--output={tmp_path}/sweep/.submitit/"):  # fmt: skip
        assert f"#SBATCH {line}" in script, line


def test_slurm_keys_without_the_slurm_executor_are_refused(tmp_path):
    proc = run_cli(*SWEEP, "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path / 'sw'}",
                   cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 1
    assert (
        "infoflow: error: hydra.launcher.partition is a Slurm option: it needs "
        "hydra.launcher.executor=slurm" in proc.stdout + proc.stderr
    )
    assert not (tmp_path / "sw" / "0").exists()
