"""Dataflow launch paths, checked offline: the dry-run plan, the container files, the flex template."""

from __future__ import annotations

import base64
import bz2
import json
import os
import re
import socket
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from apache_beam.portability import common_urns
from apache_beam.portability.api import beam_runner_api_pb2
from packaging.requirements import Requirement

from pipeline.cli.main import curate_flags, from_template_args, main
from pipeline.curation.config import build_config
from pipeline.curation.plan import planned_pipeline
from tests.flags import SIFT

REPO = Path(__file__).resolve().parents[1]
DATAFLOW = [
    "--runner",
    "DataflowRunner",
    "--project",
    "my-project-123",
    "--region",
    "us-central1",
    "--temp_location",
    "gs://my-bucket/tmp",
    "--staging_location",
    "gs://my-bucket/staging",
]
GS = ["--train-csv", "gs://my-bucket/gldv2/train.csv", "--output", "gs://my-bucket/runs/001"]


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network access during a dry run: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _plan(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, dict, str]:
    code = main(["curate", *argv, "--dry-run"])
    captured = capsys.readouterr()
    return code, json.loads(captured.out.strip().splitlines()[-1]), captured.err


# ---------------------------------------------------------------------------------------------
# gld curate --dry-run


def test_dry_run_with_dataflow_options_is_offline_and_lists_every_stage(offline, capsys) -> None:
    code, plan, _ = _plan([*GS, "--tar-dir", "gs://my-bucket/gldv2/tars", *DATAFLOW], capsys)
    assert code == 0
    assert plan["runner"] == "DataflowRunner"
    assert (plan["project"], plan["region"]) == ("my-project-123", "us-central1")
    names = [step["name"] for step in plan["steps"]]
    for stage in ("ReadManifest", "Ingest", "ExtractFeatures", "VerifyPairs", "SelectClean", "WriteTrainClean"):
        assert stage in names
    assert all(step["resource_hints"] == {} for step in plan["steps"])  # SIFT: no GPU anywhere
    assert plan["job_wide_accelerator"] == "" and plan["local_paths"] == []
    assert all(path.startswith("gs://") for path in plan["paths"].values())


def test_a_job_wide_accelerator_is_refused(offline, capsys) -> None:
    job_wide = "--dataflow_service_options=worker_accelerator=type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    code, plan, err = _plan([*GS, *DATAFLOW, job_wide], capsys)
    assert code == 1
    assert plan["job_wide_accelerator"] == job_wide
    assert "--gpu-accelerator" in err


def test_job_wide_resource_hints_show_on_every_step(offline, capsys) -> None:
    code, plan, _ = _plan([*GS, *DATAFLOW, "--resource_hints=accelerator=type:nvidia-tesla-t4;count:1"], capsys)
    assert code == 1
    assert all(step["resource_hints"].get("accelerator") for step in plan["steps"])


def test_local_paths_are_flagged_for_a_remote_runner(offline, capsys, tmp_path: Path) -> None:
    reviews = ["--reviews", str(tmp_path / "reviews.csv")]  # read by the selection job's workers
    code, plan, err = _plan([*GS, "--images-dir", str(tmp_path), *reviews, *DATAFLOW], capsys)
    assert code == 1
    assert plan["local_paths"] == ["images_dir", "reviews"]
    assert "ApplyReviews" in [step["name"] for step in plan["steps"]]
    assert "cannot reach" in err


def test_dry_run_touches_no_input_or_output(offline, capsys, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, plan, _ = _plan(["--train-csv", str(tmp_path / "absent.csv"), "--output", str(out)], capsys)
    assert code == 0
    assert plan["runner"] == "FnApiRunner" and plan["local_paths"] == []
    assert not out.exists()


def _pickled_functions(pipeline_proto: beam_runner_api_pb2.Pipeline) -> bytes:
    """The uncompressed pickles of every DoFn in the job (what the workers will receive)."""
    found = []
    for transform in pipeline_proto.components.transforms.values():
        if transform.spec.urn != common_urns.primitives.PAR_DO.urn:
            continue
        do_fn = beam_runner_api_pb2.ParDoPayload.FromString(transform.spec.payload).do_fn
        if do_fn.urn == "beam:dofn:pickled_python_info:v1":  # base64 of bz2 (Beam's pickler)
            found.append(bz2.decompress(base64.b64decode(do_fn.payload)))
    return b"\n".join(found)


def test_no_local_path_leaks_into_a_gs_run(offline, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # a default resolved against the working directory would show up below
    config = build_config("gs://my-bucket/gldv2/train.csv", "gs://my-bucket/runs/001")
    pickles = _pickled_functions(planned_pipeline(config, DATAFLOW).to_runner_api())
    assert b"gs://my-bucket/runs/001/decisions.parquet" in pickles  # the check can see paths
    assert str(tmp_path).encode() not in pickles
    # pickled functions carry their source file names (this checkout, wherever it is): nothing else
    assert b"/tmp/" not in pickles.replace(str(REPO).encode(), b"")


# ---------------------------------------------------------------------------------------------
# the container and the flex template


def _dockerfile_lines(path: Path) -> list[str]:
    text = path.read_text().replace("\\\n", " ")
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


def _pins() -> dict[str, Requirement]:
    lines = (REPO / "deploy" / "requirements-worker.txt").read_text().splitlines()
    pins = [Requirement(line) for line in lines if line.strip() and not line.startswith("#")]
    return {pin.name.lower().replace("_", "-"): pin for pin in pins}


def test_worker_dockerfile_has_cuda_beam_boot_and_the_package() -> None:
    lines = _dockerfile_lines(REPO / "deploy" / "Dockerfile")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", "\n".join(lines), flags=re.M))
    froms = [line for line in lines if line.startswith("FROM ")]
    assert froms[0] == "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION} AS beam"
    assert froms[-1].startswith("FROM nvidia/cuda:") and "cudnn" in froms[-1]
    assert "COPY --from=beam /opt/apache/beam /opt/apache/beam" in lines
    assert lines[-1] == 'ENTRYPOINT ["/opt/apache/beam/boot"]'
    assert any("pip install -r deploy/requirements-worker.txt" in line for line in lines)
    (install,) = [line for line in lines if "pip install --no-deps ." in line]
    assert install.startswith("RUN GLD_WORKER_PACKAGE=1 pip install --no-deps . && rm -rf ")
    assert {"schemas", "transforms", "pipeline"} <= set(install.split("rm -rf ")[1].split())  # only the installed copy
    assert "COPY setup.py README.md ./" in lines
    for package in ("schemas", "transforms", "pipeline"):
        assert f"COPY {package} {package}" in lines
    assert str(_pins()["apache-beam"].specifier) == f"=={args['BEAM_VERSION']}"
    python = tuple(int(v) for v in args["PYTHON_VERSION"].split("."))
    assert (3, 10) <= python < (3, 14)  # setup.py's python_requires


def test_worker_package_leaves_the_demo_out(tmp_path: Path) -> None:
    """What `--setup_file` stages (launch.sh sets GLD_WORKER_PACKAGE) and the worker image
    installs: every module of the package but `pipeline.demo`, which only `gld demo` runs."""
    env = {**os.environ, "GLD_WORKER_PACKAGE": "1"}
    command = [sys.executable, "setup.py", "-q", "sdist", "--dist-dir", str(tmp_path)]
    subprocess.run(command, cwd=REPO, env=env, check=True, capture_output=True, timeout=120)
    (sdist,) = tmp_path.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        shipped = {name.split("/", 1)[1] for name in archive.getnames() if name.endswith(".py")}
    modules = {
        str(p.relative_to(REPO))
        for package in ("schemas", "transforms", "pipeline")
        for p in (REPO / package).rglob("*.py")
    }
    demo = {name for name in modules if name.startswith("pipeline/demo/")}
    assert demo and not demo & shipped
    assert modules - demo <= shipped
    assert "export GLD_WORKER_PACKAGE=1" in (REPO / "deploy" / "dataflow" / "launch.sh").read_text()


def test_worker_pins_satisfy_setup_py() -> None:
    setup_py = (REPO / "setup.py").read_text()
    ranges = [Requirement(r) for r in re.findall(r'^\s+"([^"]+)",', setup_py.split("INSTALL_REQUIRES = [")[1], re.M)]
    pins = _pins()
    for wanted in ranges:
        pin = pins[wanted.name.lower().replace("_", "-")]
        version = str(pin.specifier).removeprefix("==")
        assert wanted.specifier.contains(version), (wanted, pin)
        assert wanted.extras == pin.extras


def test_launcher_dockerfile_runs_the_template_entry_point() -> None:
    lines = _dockerfile_lines(REPO / "deploy" / "dataflow" / "Dockerfile.launcher")
    assert lines[0].startswith("FROM gcr.io/dataflow-templates-base/python311-template-launcher-base")
    assert "ENV FLEX_TEMPLATE_PYTHON_PY_FILE=/template/deploy/dataflow/main.py" in lines
    assert (REPO / "deploy" / "dataflow" / "main.py").exists()


def test_template_parameters_are_curate_flags() -> None:
    metadata = json.loads((REPO / "deploy" / "dataflow" / "metadata.json").read_text())
    flags = curate_flags()
    names = [p["name"] for p in metadata["parameters"]]
    assert len(names) == len(set(names))
    for parameter in metadata["parameters"]:
        assert "--" + parameter["name"].replace("_", "-") in flags, parameter["name"]
        assert parameter["helpText"] and parameter["label"]
    required = {p["name"] for p in metadata["parameters"] if not p["isOptional"]}
    assert required == {"train_csv", "output"}


def test_template_arguments_become_curate_flags() -> None:
    argv = [
        "--train_csv=gs://b/t.csv",
        "--retry_failed=true",
        "--allow_private_hosts=false",
        "--temp_location=gs://b/t",
    ]
    assert from_template_args(argv) == ["--train-csv=gs://b/t.csv", "--retry-failed", "--temp_location=gs://b/t"]


def _launch(tmp_path: Path, argv: list[str], **env_extra: str) -> dict:
    """deploy/dataflow/launch.sh with DRY_RUN=1, run against this checkout; its plan."""
    wrapper = tmp_path / "gld"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m pipeline.cli.main "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    env = {**os.environ, "PROJECT": "my-project-123", "BUCKET": "my-bucket", "DRY_RUN": "1", "GLD": str(wrapper)}
    env.update({"PYTHONPATH": str(REPO), **env_extra})
    script = str(REPO / "deploy" / "dataflow" / "launch.sh")
    done = subprocess.run(["bash", script, *argv], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_launch_script_dry_run_submits_nothing_and_asks_for_no_job_wide_gpu(tmp_path: Path) -> None:
    assert "worker_accelerator" not in (REPO / "deploy" / "dataflow" / "launch.sh").read_text()
    plan = _launch(tmp_path, GS)
    assert plan["runner"] == "DataflowRunner" and plan["local_paths"] == []
    assert not any(step["resource_hints"] for step in plan["steps"])


def test_dry_run_puts_the_gpu_on_the_feature_step_alone(offline, capsys) -> None:
    gpu = "type:nvidia-tesla-t4;count:1;install-nvidia-driver"
    delf = [*SIFT, "--extractor", "delf", "--delf-model", "gs://my-bucket/models/delf", "--gpu-accelerator", gpu]
    code, plan, _ = _plan([*GS, "--tar-dir", "gs://my-bucket/gldv2/tars", *delf, *DATAFLOW], capsys)
    assert code == 0 and plan["runner"] == "DataflowRunner"
    hinted = {step["name"]: step["resource_hints"] for step in plan["steps"] if step["resource_hints"]}
    assert hinted == {"ExtractFeatures": {"accelerator": gpu}}


def test_launch_script_with_a_gpu_hints_the_feature_step_only(tmp_path: Path) -> None:
    gpu = "type:nvidia-l4;count:1;install-nvidia-driver"
    argv = [*GS, *SIFT, "--extractor", "delf", "--delf-model", "gs://my-bucket/models/delf"]
    plan = _launch(tmp_path, argv, GPU=gpu, WORKER_IMAGE="us-docker.pkg.dev/p/r/gld-worker:1")
    assert {s["name"]: s["resource_hints"] for s in plan["steps"] if s["resource_hints"]} == {
        "ExtractFeatures": {"accelerator": gpu}
    }


def test_dry_run_puts_the_gpu_on_aliked_extraction_and_lightglue_matching_alone(offline, capsys) -> None:
    gpu = "type:nvidia-l4;count:1;install-nvidia-driver"
    learned = ["--extractor", "aliked", "--matcher", "lightglue", "--gpu-accelerator", gpu]
    code, plan, _ = _plan([*GS, *learned, *DATAFLOW], capsys)
    assert code == 0
    hinted = {step["name"]: step["resource_hints"] for step in plan["steps"] if step["resource_hints"]}
    assert hinted == {"ExtractFeatures": {"accelerator": gpu}, "VerifyPairs": {"accelerator": gpu}}
    # nearest-neighbour matching of the same features stays on CPU workers
    code, plan, _ = _plan(
        [*GS, "--extractor", "aliked", "--matcher", "nn", "--gpu-accelerator", gpu, *DATAFLOW], capsys
    )
    hinted = {step["name"]: step["resource_hints"] for step in plan["steps"] if step["resource_hints"]}
    assert hinted == {"ExtractFeatures": {"accelerator": gpu}}
