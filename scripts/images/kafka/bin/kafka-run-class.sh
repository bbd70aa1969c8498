#!/bin/sh
# Runs one Java class of this Kafka installation with /opt/kafka/libs as its class path, the
# way the distribution's script of the same name does, for the variables a container sets:
#   KAFKA_HEAP_OPTS (default -Xmx256M), KAFKA_JVM_PERFORMANCE_OPTS, KAFKA_JMX_OPTS and
#   JMX_PORT, KAFKA_LOG4J_OPTS (default: config/tools-log4j2.yaml), KAFKA_OPTS, LOG_DIR,
#   CLASSPATH (appended), JAVA_HOME or JAVA.
# usage: kafka-run-class.sh [-daemon] [-name NAME] [-loggc] CLASS [ARGUMENTS...]
set -e
base_dir=$(cd "$(dirname "$0")/.." && pwd)

# -daemon, -name and -loggc of the upstream script: a container's process stays in the
# foreground and logs to stdout, so they are accepted and ignored.
while [ $# -gt 0 ]; do
  case $1 in
    -daemon | -loggc) shift ;;
    -name) shift 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 1 ]; then
  echo "usage: $0 [-daemon] [-name NAME] [-loggc] CLASS [ARGUMENTS...]" >&2
  exit 1
fi

: "${LOG_DIR:=$base_dir/logs}"
: "${KAFKA_HEAP_OPTS:=-Xmx256M}"
: "${KAFKA_JVM_PERFORMANCE_OPTS:=-server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true}"
: "${KAFKA_LOG4J_OPTS:=-Dlog4j2.configurationFile=$base_dir/config/tools-log4j2.yaml}"
if [ -n "${JMX_PORT:-}" ]; then
  : "${KAFKA_JMX_OPTS:=-Dcom.sun.management.jmxremote -Dcom.sun.management.jmxremote.authenticate=false -Dcom.sun.management.jmxremote.ssl=false}"
  KAFKA_JMX_OPTS="$KAFKA_JMX_OPTS -Dcom.sun.management.jmxremote.port=$JMX_PORT"
fi
if [ -n "${JAVA_HOME:-}" ]; then java="$JAVA_HOME/bin/java"; else java=${JAVA:-java}; fi

# The option variables hold several words each: split on purpose.
# shellcheck disable=SC2086
exec "$java" $KAFKA_HEAP_OPTS $KAFKA_JVM_PERFORMANCE_OPTS ${KAFKA_JMX_OPTS:-} $KAFKA_LOG4J_OPTS \
  "-Dkafka.logs.dir=$LOG_DIR" ${KAFKA_OPTS:-} -cp "$base_dir/libs/*${CLASSPATH:+:$CLASSPATH}" "$@"
