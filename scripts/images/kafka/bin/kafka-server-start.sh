#!/bin/sh
# Starts the broker (and controller, in KRaft combined mode) in the foreground, as the
# distribution's script does: 1 GiB of heap unless KAFKA_HEAP_OPTS says otherwise, logging
# configured by config/log4j2.yaml unless KAFKA_LOG4J_OPTS says otherwise.
# usage: kafka-server-start.sh [-daemon] server.properties [--override property=value]...
base_dir=$(cd "$(dirname "$0")/.." && pwd)
if [ "${1:-}" = "-daemon" ]; then shift; fi
if [ $# -lt 1 ]; then
  echo "usage: $0 [-daemon] server.properties [--override property=value]..." >&2
  exit 1
fi
: "${KAFKA_HEAP_OPTS:=-Xmx1G -Xms1G}"
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=$base_dir/config/log4j2.yaml}"
export KAFKA_HEAP_OPTS KAFKA_LOG4J_OPTS
exec "$base_dir/bin/kafka-run-class.sh" kafka.Kafka "$@"
