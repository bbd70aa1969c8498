#!/bin/sh
# Entrypoint of the MinIO stand-in image: `minio ARGS...` for any arguments that do not
# already start with minio (e.g. the chart's `server /data --address=:9000 ...`), exec'd so
# that MinIO receives the container's signals.
set -e
if [ "$#" -gt 0 ] && [ "$1" != minio ]; then
  set -- minio "$@"
fi
exec "$@"
