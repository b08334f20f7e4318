#!/usr/bin/env bash
# Build and push both images and register the flex template (needs docker and gcloud).
#
#   PROJECT=my-project BUCKET=my-bucket REPO=gld deploy/dataflow/build_template.sh
#   gcloud dataflow flex-template run "gld-$(date +%Y%m%d-%H%M%S)" --region us-central1 \
#       --template-file-gcs-location "gs://$BUCKET/templates/gld-curate.json" \
#       --parameters train_csv=gs://$BUCKET/gldv2/train.csv,tar_dir=gs://$BUCKET/gldv2/tars,output=gs://$BUCKET/runs/001 \
#       --parameters sdk_container_image=$REGION-docker.pkg.dev/$PROJECT/$REPO/gld-worker:$TAG,experiments=use_runner_v2
set -euo pipefail
: "${PROJECT:?set PROJECT}" "${BUCKET:?set BUCKET}" "${REPO:?set REPO (an Artifact Registry docker repository)}"
REGION="${REGION:-us-central1}"
TAG="${TAG:-$(git rev-parse --short HEAD)}"
REGISTRY="$REGION-docker.pkg.dev/$PROJECT/$REPO"
cd "$(dirname "$0")/../.."

docker build -f deploy/Dockerfile -t "$REGISTRY/gld-worker:$TAG" .
docker build -f deploy/dataflow/Dockerfile.launcher -t "$REGISTRY/gld-launcher:$TAG" .
docker push "$REGISTRY/gld-worker:$TAG"
docker push "$REGISTRY/gld-launcher:$TAG"
gcloud dataflow flex-template build "gs://$BUCKET/templates/gld-curate.json" \
    --image "$REGISTRY/gld-launcher:$TAG" \
    --sdk-language PYTHON \
    --metadata-file deploy/dataflow/metadata.json
echo "worker image: $REGISTRY/gld-worker:$TAG"
