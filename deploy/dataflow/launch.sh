#!/usr/bin/env bash
# Submit `gld curate` to Google Cloud Dataflow from a checkout (the package must be installed:
# `make install`, or `pip install .`). The GPU, if any, goes on the feature step only, through
# --gpu-accelerator (a Beam resource hint); nothing here asks for a job-wide accelerator.
#
#   PROJECT=my-project BUCKET=my-bucket deploy/dataflow/launch.sh \
#       --train-csv gs://my-bucket/gldv2/train.csv --tar-dir gs://my-bucket/gldv2/tars \
#       --output gs://my-bucket/runs/clean-001
#
# Environment: PROJECT, BUCKET (required); REGION (us-central1), MACHINE_TYPE (n2-standard-8),
# MAX_WORKERS (50), WORKER_IMAGE (the image of deploy/Dockerfile; without it workers install
# setup.py on the stock Beam image, fine for SIFT), GPU (e.g. "type:nvidia-tesla-t4;count:1;install-nvidia-driver",
# only with --extractor delf), DRY_RUN=1 (print the plan instead of submitting).
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${BUCKET:?set BUCKET}"
REGION="${REGION:-us-central1}"
MACHINE_TYPE="${MACHINE_TYPE:-n2-standard-8}"
MAX_WORKERS="${MAX_WORKERS:-50}"
GLD="${GLD:-gld}"
cd "$(dirname "$0")/../.."

args=(
    --runner DataflowRunner
    --project "$PROJECT"
    --region "$REGION"
    --temp_location "gs://$BUCKET/tmp"
    --staging_location "gs://$BUCKET/staging"
    --machine_type "$MACHINE_TYPE"
    --max_num_workers "$MAX_WORKERS"
    --experiments use_runner_v2
    --no-progress
)
if [[ -n "${WORKER_IMAGE:-}" ]]; then
    args+=(--sdk_container_image "$WORKER_IMAGE" --sdk_location container)
else
    args+=(--setup_file ./setup.py)
    export GLD_WORKER_PACKAGE=1  # the staged package leaves out pipeline.demo (setup.py)
fi
if [[ -n "${GPU:-}" ]]; then
    args+=(--gpu-accelerator "$GPU")
fi
if [[ "${DRY_RUN:-0}" == "1" ]]; then
    args+=(--dry-run)
fi
exec "$GLD" curate "$@" "${args[@]}"
