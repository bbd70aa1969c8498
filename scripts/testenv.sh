#!/usr/bin/env bash
# The real services the tests talk to, on loopback only.
#
#   scripts/testenv.sh build   install and build what is missing from the cache; start nothing
#   scripts/testenv.sh up      install what is missing, start every service, write the env file
#   scripts/testenv.sh images  rebuild the images and load them into the running node
#   scripts/testenv.sh down    stop exactly the processes `up` started, delete their data
#   scripts/testenv.sh env     print the path of the env file (for `set -a; . "$(…)"; set +a`)
#   scripts/testenv.sh status  show which recorded processes are alive
#
# Built and downloaded components are cached under $FINTECH_CACHE (default
# ~/.cache/fintech), one folder per component and version, so a second `up` only starts
# processes. Service data lives in a fresh temporary folder that `down` removes.
set -euo pipefail

readonly ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
readonly CACHE="${FINTECH_CACHE:-$HOME/.cache/fintech}"
readonly STATE="${FINTECH_TESTENV_STATE:-$CACHE/testenv}"
readonly ENV_FILE="$STATE/env"
readonly PIDS_FILE="$STATE/pids"

# Pinned versions. Changing one rebuilds that component into a new cache folder.
readonly KAFKA_VERSION="4.3.1"
readonly KUBERNETES_VERSION="v1.36.3"
readonly MINIO_VERSION="v0.0.0-20260212201848-7aac2a2c5b7c"
readonly HELM_VERSION="v3.22.0"
# Prometheus 3.16.0, whose Go module is versioned v0.316.0; only promtool is built.
readonly PROMETHEUS_VERSION="v0.316.0"

readonly BUCKET="fintech-test"
readonly S3_ACCESS_KEY="fintech"
readonly S3_SECRET_KEY="fintech-secret-key"
readonly S3_REGION="us-east-1"
readonly PG_USER="fintech"
readonly PG_PASSWORD="fintech"
readonly PG_DATABASE="fintech"

# shellcheck source=scripts/lib/node-build.sh
. "$ROOT/scripts/lib/node-build.sh"
# shellcheck source=scripts/lib/node.sh
. "$ROOT/scripts/lib/node.sh"

log() { printf '[testenv] %s\n' "$*" >&2; }
die() { printf '[testenv] error: %s\n' "$*" >&2; exit 1; }

# Runs "$@" and prints how long it took, labelled $1.
timed() {
  local label=$1 start end
  shift
  start=$(date +%s)
  "$@"
  end=$(date +%s)
  log "$label: $((end - start)) s"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Waits until "$@" succeeds, up to $WAIT_SECONDS (default 60), naming $what on failure.
wait_for() {
  local what=$1 deadline
  shift
  deadline=$(($(date +%s) + ${WAIT_SECONDS:-60}))
  until "$@" >/dev/null 2>&1; do
    if (($(date +%s) > deadline)); then
      die "$what did not become ready; its log is in $DATA/logs"
    fi
    sleep 0.5
  done
}

as_root() {
  if [[ $(id -u) -eq 0 ]]; then "$@"; else sudo "$@"; fi
}

apt_install() {
  log "installing Debian packages: $*"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# --- prerequisites -----------------------------------------------------------------------

ensure_tools() {
  local missing=()
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)
  command -v python3 >/dev/null || missing+=(python3)
  command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || missing+=(maven)
  # Headless Chromium renders the quickstart's report as a person's browser does.
  command -v chromium >/dev/null || missing+=(chromium)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
  command -v go >/dev/null || die "Go is required to build MinIO, helm and Kubernetes; install Go 1.26 or newer"
  command -v cargo >/dev/null || die "cargo is required; install Rust with rustup"
}

pg_bindir() {
  local dir
  for dir in /usr/lib/postgresql/*/bin; do
    [[ -x $dir/postgres ]] && { echo "$dir"; return 0; }
  done
  return 1
}

ensure_postgres() {
  pg_bindir >/dev/null || apt_install postgresql
  pg_bindir >/dev/null || die "PostgreSQL server binaries not found after installing the postgresql package"
}

ensure_kafka() {
  local dir="$CACHE/kafka-$KAFKA_VERSION"
  if [[ ! -f $dir/.complete ]]; then
    rm -rf "$dir"
    mkdir -p "$dir"
    mvn -q -B -f "$ROOT/scripts/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$dir/libs"
    touch "$dir/.complete"
  fi
  KAFKA_LIBS="$dir/libs"
}

ensure_minio() {
  local dir="$CACHE/minio-$MINIO_VERSION"
  if [[ ! -x $dir/bin/minio ]]; then
    GOBIN="$dir/bin" go install -ldflags="-s -w" "github.com/minio/minio@$MINIO_VERSION"
  fi
  MINIO_BIN="$dir/bin/minio"
}

ensure_helm() {
  local dir="$CACHE/helm-$HELM_VERSION"
  if [[ ! -x $dir/bin/helm ]]; then
    GOBIN="$dir/bin" go install -ldflags="-s -w" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  fi
  HELM_BIN="$dir/bin/helm"
}

# promtool checks and unit-tests the chart's alert rules. Built without the cloud service
# discoveries (remove_all_sd), which it does not need here and which are most of its build.
ensure_promtool() {
  local dir="$CACHE/promtool-$PROMETHEUS_VERSION"
  if [[ ! -x $dir/bin/promtool ]]; then
    GOBIN="$dir/bin" go install -tags remove_all_sd -ldflags="-s -w" \
      "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  fi
  PROMTOOL_BIN="$dir/bin/promtool"
}

# The Kubernetes commands the environment runs: the control plane (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler), the node (kubelet, kube-proxy) and kubectl.
readonly K8S_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
readonly K8S_BIN="$CACHE/kubernetes-$KUBERNETES_VERSION/bin"

# Builds etcd and $K8S_COMMANDS from one wrapper module. k8s.io/kubernetes points its k8s.io/*
# staging modules at folders inside its own tree, so the wrapper replaces each of them with the
# published module of the matching v0.X release; etcd comes at the version that Kubernetes
# release itself requires.
ensure_kubernetes() {
  local dir="${K8S_BIN%/bin}" command missing=0
  for command in etcd "${K8S_COMMANDS[@]}"; do
    [[ -x $K8S_BIN/$command ]] || missing=1
  done
  # A build from before the version was stamped into the binaries reports v0.0.0.
  [[ $("$K8S_BIN/kubectl" version --client 2>/dev/null) == *"$KUBERNETES_VERSION"* ]] || missing=1
  if ((missing)); then
    rm -rf "$dir"
    mkdir -p "$dir/src/cmd/etcd" "$dir/bin"
    local gomod staging="v0.${KUBERNETES_VERSION#v1.}"
    gomod=$(go mod download -json "k8s.io/kubernetes@$KUBERNETES_VERSION" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
    {
      echo "module fintech.local/kubernetes-binaries"
      echo
      grep -E '^go ' "$gomod"
      echo
      echo "require k8s.io/kubernetes $KUBERNETES_VERSION"
      echo
      grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" |
        awk -v v="$staging" '{ print "replace " $1 " => " $1 " " v }'
    } >"$dir/src/go.mod"
    cat >"$dir/src/cmd/etcd/main.go" <<'EOF'
// Command etcd is etcd's server, built at the version Kubernetes requires.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF
    {
      echo '//go:build tools'
      echo
      echo '// Package tools pins the Kubernetes commands this module builds.'
      echo 'package tools'
      echo
      echo 'import ('
      for command in "${K8S_COMMANDS[@]}"; do echo "	_ \"k8s.io/kubernetes/cmd/$command\""; done
      echo ')'
    } >"$dir/src/tools.go"
    local packages=()
    for command in "${K8S_COMMANDS[@]}"; do packages+=("k8s.io/kubernetes/cmd/$command"); done
    (
      cd "$dir/src"
      go mod tidy
      # The version a release build stamps in, so that the API server, the node and kubectl
      # report v1.36.3 instead of a development v0.0.0.
      local minor=${KUBERNETES_VERSION#v1.}
      minor=${minor%%.*}
      local version_package=k8s.io/component-base/version
      go build -ldflags="-s -w -X $version_package.gitVersion=$KUBERNETES_VERSION \
        -X $version_package.gitMajor=1 -X $version_package.gitMinor=$minor \
        -X $version_package.gitTreeState=clean" \
        -o "$K8S_BIN/" ./cmd/etcd "${packages[@]}"
    )
  fi
}

# --- processes ---------------------------------------------------------------------------

# Starts "$@" in the background with its output in $DATA/logs/$name.log and records its pid.
spawn() {
  local name=$1
  shift
  setsid "$@" >"$DATA/logs/$name.log" 2>&1 </dev/null &
  echo "$name $!" >>"$PIDS_FILE"
}

start_postgres() {
  local bindir port run_as=()
  bindir=$(pg_bindir)
  port=$(free_port)
  mkdir -p "$DATA/postgres"
  # PostgreSQL refuses to run as root; run the private cluster as the package's user.
  if [[ $(id -u) -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || as_root useradd --system --home-dir /nonexistent postgres
    chown -R postgres "$DATA/postgres"
    run_as=(runuser -u postgres --)
  fi
  local pwfile="$DATA/postgres/superuser.pw"
  echo "postgres" >"$pwfile"
  chmod 644 "$pwfile"
  "${run_as[@]}" "$bindir/initdb" -D "$DATA/postgres/data" -U postgres --pwfile="$pwfile" \
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 >"$DATA/logs/initdb.log"
  spawn postgres "${run_as[@]}" "$bindir/postgres" -D "$DATA/postgres/data" \
    -c listen_addresses=127.0.0.1 -c port="$port" -c unix_socket_directories="$DATA/postgres" \
    -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200
  wait_for "PostgreSQL" "$bindir/pg_isready" -h 127.0.0.1 -p "$port"
  "$bindir/psql" -q -v ON_ERROR_STOP=1 -h "$DATA/postgres" -p "$port" -U postgres -d postgres \
    -c "CREATE ROLE $PG_USER LOGIN CREATEDB PASSWORD '$PG_PASSWORD'" \
    -c "CREATE DATABASE $PG_DATABASE OWNER $PG_USER" >/dev/null
  {
    echo "DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$port/$PG_DATABASE"
    echo "FINTECH_TEST_PG_BIN=$bindir"
  } >>"$ENV_FILE"
}

start_kafka() {
  local port controller_port dir="$DATA/kafka"
  port=$(free_port)
  controller_port=$(free_port)
  mkdir -p "$dir/logs"
  cat >"$dir/server.properties" <<EOF
process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers=127.0.0.1:$controller_port
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$controller_port
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/logs
num.partitions=3
offsets.topic.replication.factor=1
offsets.topic.num.partitions=5
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
EOF
  local java=(java -Xms256m -Xmx768m -XX:+UseG1GC -XX:TieredStopAtLevel=1 -Djava.awt.headless=true
    -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.yaml" -cp "$KAFKA_LIBS/*")
  local cluster_id
  cluster_id=$("${java[@]}" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -1)
  "${java[@]}" kafka.tools.StorageTool format --standalone -t "$cluster_id" \
    -c "$dir/server.properties" >"$DATA/logs/kafka-format.log" 2>&1 ||
    die "formatting Kafka storage failed; see $DATA/logs/kafka-format.log"
  spawn kafka "${java[@]}" kafka.Kafka "$dir/server.properties"
  WAIT_SECONDS=120 wait_for "Kafka" grep -q 'Kafka Server started' "$DATA/logs/kafka.log"
  # The broker's pid lets a test pause it (SIGSTOP) to take Kafka away from running clients.
  {
    echo "KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$port"
    echo "KAFKA_PID=$(awk '$1 == "kafka" { print $2 }' "$PIDS_FILE")"
  } >>"$ENV_FILE"
}

start_minio() {
  local port console_port
  port=$(free_port)
  console_port=$(free_port)
  mkdir -p "$DATA/minio"
  spawn minio env MINIO_ROOT_USER="$S3_ACCESS_KEY" MINIO_ROOT_PASSWORD="$S3_SECRET_KEY" \
    MINIO_BROWSER=off MINIO_UPDATE=off \
    "$MINIO_BIN" server --quiet --address "127.0.0.1:$port" --console-address "127.0.0.1:$console_port" "$DATA/minio"
  local endpoint="http://127.0.0.1:$port"
  wait_for "MinIO" curl -fsS "$endpoint/minio/health/ready"
  # A signed CreateBucket request; curl signs it with AWS Signature V4 itself.
  curl -fsS -X PUT --aws-sigv4 "aws:amz:$S3_REGION:s3" --user "$S3_ACCESS_KEY:$S3_SECRET_KEY" \
    "$endpoint/$BUCKET" >/dev/null || die "creating bucket $BUCKET in MinIO failed"
  {
    echo "AWS_ENDPOINT_URL=$endpoint"
    echo "AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY"
    echo "AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY"
    echo "AWS_REGION=$S3_REGION"
    echo "AWS_ALLOW_HTTP=true"
    echo "FINTECH_TEST_BUCKET=$BUCKET"
  } >>"$ENV_FILE"
}

# Certificates for a one-node cluster: one CA signs every serving and client certificate
# (the API server's, the admin's in group system:masters, the node's and its components' under
# the names the API server's built-in RBAC knows); a separate key pair signs service-account
# tokens. Every certificate is X.509 v3 (rustls, which kube-rs uses, requires it).
make_pki() {
  local pki=$1
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=fintech-test-ca" \
      -keyout ca.key -out ca.crt 2>/dev/null
    sign apiserver "/CN=kube-apiserver" serverAuth \
      "IP:127.0.0.1,DNS:localhost,IP:$NODE_IP,IP:$KUBERNETES_SERVICE_IP,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign admin "/O=system:masters/CN=fintech-admin" clientAuth
    # The API server's identity towards the kubelet (logs, exec, port-forward).
    sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" clientAuth
    sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" clientAuth
    sign kubelet-serving "/CN=$NODE_NAME" serverAuth "IP:$NODE_IP,DNS:$NODE_NAME"
    sign kube-proxy "/CN=system:kube-proxy" clientAuth
    sign kube-scheduler "/CN=system:kube-scheduler" clientAuth
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

# sign NAME SUBJECT USAGE [SUBJECT_ALT_NAMES]: NAME.key and NAME.crt, signed by ca.key.
sign() {
  local name=$1 subject=$2 usage=$3 alt_names=${4:-}
  openssl req -newkey rsa:2048 -nodes -subj "$subject" -keyout "$name.key" -out "$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$usage"
    [[ -z $alt_names ]] || echo "subjectAltName=$alt_names"
  } >"$name.ext"
  openssl x509 -req -in "$name.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$name.ext" -out "$name.crt" 2>/dev/null
}

# write_kubeconfig FILE USER: a kubeconfig for the API server with USER's certificate.
write_kubeconfig() {
  local file=$1 user=$2 pki="$DATA/kubernetes/pki"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: fintech-test
  cluster:
    server: https://$NODE_IP:$API_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $user
  user:
    client-certificate: $pki/$user.crt
    client-key: $pki/$user.key
contexts:
- name: fintech-test
  context:
    cluster: fintech-test
    user: $user
    namespace: default
current-context: fintech-test
EOF
}

start_kubernetes() {
  local dir="$DATA/kubernetes" pki="$DATA/kubernetes/pki"
  local etcd_port etcd_peer_port kcm_port scheduler_port
  etcd_port=$(free_port)
  etcd_peer_port=$(free_port)
  API_PORT=$(free_port)
  kcm_port=$(free_port)
  scheduler_port=$(free_port)
  make_pki "$pki"

  spawn etcd "$K8S_BIN/etcd" --name fintech-test --data-dir "$dir/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
    --initial-cluster "fintech-test=http://127.0.0.1:$etcd_peer_port" \
    --unsafe-no-fsync --quota-backend-bytes=1073741824 --log-level=warn
  wait_for "etcd" curl -fsS "http://127.0.0.1:$etcd_port/health"

  # On the node's address, which pods reach through the `kubernetes` Service. The Node
  # authorizer and NodeRestriction confine the kubelet to its own node and pods.
  spawn kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" \
    --bind-address "$NODE_IP" --advertise-address "$NODE_IP" --secure-port "$API_PORT" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer https://kubernetes.default.svc \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins NodeRestriction \
    --enable-priority-and-fairness=false \
    --v=1

  local kubeconfig="$dir/kubeconfig"
  write_kubeconfig "$kubeconfig" admin
  WAIT_SECONDS=120 wait_for "kube-apiserver" "$K8S_BIN/kubectl" --kubeconfig "$kubeconfig" get --raw /readyz

  # Garbage collection of owned objects and CronJob -> Job need the controller manager.
  spawn kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$kubeconfig" --authentication-kubeconfig "$kubeconfig" \
    --authorization-kubeconfig "$kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$kcm_port" \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --leader-elect=false --use-service-account-credentials=false \
    --controllers '*,-serviceaccount-token-controller' --v=1
  wait_for "kube-controller-manager" curl -fsSk "https://127.0.0.1:$kcm_port/healthz"

  write_kubeconfig "$dir/kube-scheduler.kubeconfig" kube-scheduler
  spawn kube-scheduler "$K8S_BIN/kube-scheduler" \
    --kubeconfig "$dir/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$dir/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$dir/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$scheduler_port" --leader-elect=false --v=1
  wait_for "kube-scheduler" curl -fsSk "https://127.0.0.1:$scheduler_port/healthz"

  # The default namespace's service account appears once the controllers run.
  wait_for "the default service account" "$K8S_BIN/kubectl" --kubeconfig "$kubeconfig" \
    get serviceaccount default -n default

  {
    echo "KUBECONFIG=$kubeconfig"
    echo "KUBECTL=$K8S_BIN/kubectl"
    echo "HELM=$HELM_BIN"
    echo "PROMTOOL=$PROMTOOL_BIN"
    echo "CHROMIUM=$(command -v chromium)"
  } >>"$ENV_FILE"
}

# --- commands ----------------------------------------------------------------------------

# Installs, downloads and builds whatever is missing from the cache; starts nothing.
cmd_build() {
  timed "prerequisites" ensure_tools
  timed "postgresql (install check)" ensure_postgres
  timed "kafka $KAFKA_VERSION (fetch)" ensure_kafka
  timed "minio (build)" ensure_minio
  timed "helm $HELM_VERSION (build)" ensure_helm
  timed "promtool $PROMETHEUS_VERSION (build)" ensure_promtool
  timed "kubernetes $KUBERNETES_VERSION (build)" ensure_kubernetes
  timed "node packages (install check)" ensure_node_packages
  timed "containerd $CONTAINERD_VERSION, runc $RUNC_VERSION (build)" ensure_container_runtime
  timed "coredns $COREDNS_VERSION (build)" ensure_coredns
  timed "local-path-provisioner $LOCAL_PATH_PROVISIONER_VERSION (build)" ensure_local_path_provisioner
  timed "mc (build)" ensure_mc
}

cmd_up() {
  if [[ -f $PIDS_FILE ]]; then
    log "a previous environment is recorded in $STATE; stopping it first"
    cmd_down
  fi
  require_root
  local started
  started=$(date +%s)
  cmd_build

  mkdir -p "$STATE"
  DATA=$(mktemp -d "${TMPDIR:-/tmp}/fintech-testenv.XXXXXX")
  chmod 755 "$DATA"
  mkdir -p "$DATA/logs"
  echo "$DATA" >"$STATE/data-dir"
  : >"$PIDS_FILE"
  {
    echo "# written by scripts/testenv.sh up at $(date -u +%FT%TZ)"
    echo "FINTECH_TESTENV=1"
    echo "FINTECH_TESTENV_LOGS=$DATA/logs"
  } >"$ENV_FILE"
  # If any start fails, stop what did start.
  trap 'log "start failed; stopping what was started"; cmd_down' ERR

  timed "postgresql (start)" start_postgres
  timed "kafka (start)" start_kafka
  timed "minio (start)" start_minio
  timed "node network" start_node_network
  timed "kubernetes (start)" start_kubernetes
  timed "docker (start)" start_docker
  start_node
  trap - ERR
  log "all services up in $(($(date +%s) - started)) s; env file: $ENV_FILE"
}

# Stops the recorded process $1 (pid $2) and its process group: SIGTERM (SIGINT for
# PostgreSQL, whose SIGTERM waits for every client to leave), SIGKILL after ten seconds.
stop_process() {
  local name=$1 pid=$2 signal=TERM
  kill -0 "$pid" 2>/dev/null || return 0
  [[ $name == postgres ]] && signal=INT
  # Each service runs in its own session (setsid), so its process group is its pid.
  kill "-$signal" -- "-$pid" 2>/dev/null || kill "-$signal" "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.25
  done
  log "$name (pid $pid) ignored SIG$signal; killing it"
  kill -KILL -- "-$pid" 2>/dev/null || kill -KILL "$pid" 2>/dev/null || true
}

cmd_down() {
  if [[ ! -f $PIDS_FILE ]]; then
    log "nothing recorded in $STATE; nothing to stop"
    return 0
  fi
  local name pid data
  data=$(cat "$STATE/data-dir" 2>/dev/null || true)
  # The kubelet first, so that it restarts nothing, then the pods' containers while
  # containerd still runs.
  while read -r name pid; do
    [[ $name == kubelet ]] && stop_process "$name" "$pid"
  done <"$PIDS_FILE"
  [[ -z $data ]] || stop_node_containers "$data"
  # The rest in reverse start order, so clients go before their servers.
  while read -r name pid; do
    stop_process "$name" "$pid"
  done < <(tac "$PIDS_FILE")
  [[ -z $data ]] || stop_node_leftovers "$data"
  if [[ -n $data && -d $data && ${FINTECH_TESTENV_KEEP_DATA:-0} != 1 ]]; then
    rm -rf "$data"
  fi
  rm -f "$PIDS_FILE" "$ENV_FILE" "$STATE/data-dir"
  log "stopped"
}

# Rebuilds the images and loads them into the running node, after a code change.
cmd_images() {
  [[ -f $PIDS_FILE ]] || die "no environment is up; run scripts/testenv.sh up"
  DATA=$(cat "$STATE/data-dir")
  DOCKER_HOST=$(cat "$DATA/docker/docker-host")
  CONTAINERD_SOCKET=$(containerd_socket "$DATA")
  export DOCKER_HOST
  ensure_minio
  load_images
}

cmd_status() {
  [[ -f $PIDS_FILE ]] || { log "not running"; return 0; }
  local name pid
  while read -r name pid; do
    if kill -0 "$pid" 2>/dev/null; then echo "$name $pid running"; else echo "$name $pid stopped"; fi
  done <"$PIDS_FILE"
}

case "${1:-}" in
  build) cmd_build ;;
  up) cmd_up ;;
  images) cmd_images ;;
  down) cmd_down ;;
  env) [[ -f $ENV_FILE ]] || die "no environment is up; run scripts/testenv.sh up"; echo "$ENV_FILE" ;;
  status) cmd_status ;;
  *) echo "usage: $0 build|up|images|down|env|status" >&2; exit 2 ;;
esac
