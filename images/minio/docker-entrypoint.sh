#!/bin/sh
# The official `minio/minio` image's entrypoint contract: arguments that do not start with `minio` are
# MinIO's (`server /data …` runs `minio server /data …`); exec, so MinIO is the container's main process.
set -e
if [ "$1" != minio ] && [ -n "$1" ]; then
  set -- minio "$@"
fi
exec "$@"
