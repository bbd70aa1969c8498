# Sourced by scripts/testenv.sh: the Kubernetes node beside the control plane.
#
# containerd 2 with runc runs the pods; Debian's CNI plugins give each pod an address on the
# bridge $CNI_BRIDGE; the kubelet registers the node $NODE_NAME; kube-proxy turns Services
# into iptables rules; CoreDNS answers for cluster.local on the node's address; the
# local-path provisioner backs PersistentVolumeClaims of the default StorageClass with folders.
# The images come from the local Docker engine (scripts/images/build.sh) and are imported into
# containerd, so no pod ever pulls from a registry.
#
# Every address is private to this machine: the node's is added to the loopback interface,
# pods get $POD_CIDR on a bridge without masquerading, Services get $SERVICE_CIDR, NodePorts
# listen on the node's address only, a firewall chain rejects anything a pod sends off the
# machine, and CoreDNS answers cluster names only, never forwarding a query.

readonly NODE_NAME="fintech-node"
readonly NODE_IP="10.201.0.1"
readonly POD_CIDR="10.244.0.0/24"
readonly SERVICE_CIDR="10.0.0.0/24"
readonly KUBERNETES_SERVICE_IP="10.0.0.1"
readonly CNI_BRIDGE="fintech-cni0"
readonly FIREWALL_CHAIN="FINTECH-TESTENV"
readonly STORAGE_CLASS="standard"
# The pod sandbox image and the image of the provisioner's helper pods (it needs a shell);
# both are among the images scripts/images/build.sh makes.
readonly PAUSE_IMAGE="registry.k8s.io/pause:3.10.1"
readonly HELPER_IMAGE="debian:bookworm-slim"

require_root() {
  [[ $(id -u) -eq 0 ]] || die "the Kubernetes node (containerd, kubelet, kube-proxy) must run as root; run scripts/testenv.sh as root"
}

# The node's address on loopback, forwarding, and bridged traffic through iptables (kube-proxy
# rewrites Service addresses there).
start_node_network() {
  ip addr show dev lo | grep -q " $NODE_IP/32 " || ip addr add "$NODE_IP/32" dev lo
  sysctl -qw net.ipv4.ip_forward=1
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter ||
    die "bridged traffic cannot reach iptables (br_netfilter); Services would not work"
  sysctl -qw net.bridge.bridge-nf-call-iptables=1
  # Pods may talk to pods and to this machine; anything they send off the machine is refused.
  iptables -N "$FIREWALL_CHAIN" 2>/dev/null || iptables -F "$FIREWALL_CHAIN"
  iptables -A "$FIREWALL_CHAIN" -s "$POD_CIDR" -d "$POD_CIDR" -j RETURN
  iptables -A "$FIREWALL_CHAIN" -s "$POD_CIDR" -j REJECT
  iptables -C FORWARD -j "$FIREWALL_CHAIN" 2>/dev/null || iptables -I FORWARD -j "$FIREWALL_CHAIN"
}

stop_node_network() {
  local table rule chain
  # The kubelet's own chains (KUBE-FIREWALL, KUBE-KUBELET-CANARY, ...), which kube-proxy
  # --cleanup leaves: first the rules that jump to them, then the chains.
  for table in mangle nat filter; do
    while read -r rule; do
      eval "iptables -t $table ${rule/#-A/-D}" 2>/dev/null || true
    done < <(iptables -t "$table" -S 2>/dev/null | grep -E '^-A [A-Z]+ .*-j KUBE-' || true)
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do
      iptables -t "$table" -F "$chain" 2>/dev/null || true
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '/^-N KUBE-/ { print $2 }'); do
      iptables -t "$table" -X "$chain" 2>/dev/null || true
    done
  done
  iptables -D FORWARD -j "$FIREWALL_CHAIN" 2>/dev/null || true
  iptables -F "$FIREWALL_CHAIN" 2>/dev/null || true
  iptables -X "$FIREWALL_CHAIN" 2>/dev/null || true
  ip link del "$CNI_BRIDGE" 2>/dev/null || true
  ip addr del "$NODE_IP/32" dev lo 2>/dev/null || true
}

# A Docker engine of the environment's own, for building images: its layers are cached in
# $CACHE/docker, and it leaves the host's firewall and bridges alone (builds use the host's
# network). FINTECH_TESTENV_DOCKER_HOST names an engine to use instead; it must allow
# `docker build --network host`.
start_docker() {
  local dir="$DATA/docker"
  mkdir -p "$dir"
  export DOCKER_HOST=${FINTECH_TESTENV_DOCKER_HOST:-unix://$dir/docker.sock}
  # For `scripts/testenv.sh images`, which runs in another shell.
  echo "$DOCKER_HOST" >"$dir/docker-host"
  if [[ -z ${FINTECH_TESTENV_DOCKER_HOST:-} ]]; then
    spawn dockerd dockerd --host "$DOCKER_HOST" --data-root "$CACHE/docker" --exec-root "$dir/exec" \
      --pidfile "$dir/dockerd.pid" --bridge none --iptables=false --ip6tables=false --ip-masq=false
  fi
  wait_for "the Docker engine at $DOCKER_HOST" docker version
}

write_containerd_config() {
  local dir=$1
  cat >"$dir/config.toml" <<EOF
version = 3
root = "$dir/root"
state = "$dir/state"
# Never ask to lower containerd's own OOM score: this machine refuses it.
oom_score = 0

[grpc]
  address = "$CONTAINERD_SOCKET"

[ttrpc]
  address = "$CONTAINERD_SOCKET.ttrpc"

[plugins]
  [plugins.'io.containerd.cri.v1.images']
    snapshotter = "overlayfs"
    [plugins.'io.containerd.cri.v1.images'.pinned_images]
      sandbox = "$PAUSE_IMAGE"

  [plugins.'io.containerd.cri.v1.runtime']
    # This machine refuses to lower oom_score_adj; without this every sandbox fails to start
    # (runc: "can't get final child's PID from pipe: EOF").
    restrict_oom_score_adj = true
    # The kubelet's pods ask for no AppArmor profile; this makes containerd not look for one.
    disable_apparmor = true
    # Pods' network namespaces under the state folder rather than /run/netns, so that down
    # finds and removes exactly this node's.
    netns_mounts_under_state_dir = true
    [plugins.'io.containerd.cri.v1.runtime'.containerd]
      default_runtime_name = "runc"
      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
          BinaryName = "$CONTAINERD_BIN/runc"
          SystemdCgroup = false
    [plugins.'io.containerd.cri.v1.runtime'.cni]
      bin_dirs = ["/usr/lib/cni"]
      conf_dir = "$dir/cni"
EOF
}

write_cni_config() {
  local dir=$1
  mkdir -p "$dir"
  cat >"$dir/10-fintech.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "fintech",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CNI_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{ "subnet": "$POD_CIDR" }]],
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "$DATA/node/cni-ipam"
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
EOF
}

# The socket of the node's containerd in the data folder $1; its other files are beside it.
containerd_socket() {
  echo "$1/node/containerd/containerd.sock"
}

start_containerd() {
  CONTAINERD_SOCKET=$(containerd_socket "$DATA")
  local dir=${CONTAINERD_SOCKET%/*}
  mkdir -p "$dir"
  write_containerd_config "$dir"
  write_cni_config "$dir/cni"
  # containerd starts the shim it finds first on PATH; Debian's containerd package may have put
  # an older one on it.
  spawn containerd env PATH="$CONTAINERD_BIN:$PATH" "$CONTAINERD_BIN/containerd" --config "$dir/config.toml"
  wait_for "containerd" "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCKET" version
}

ctr_k8s() {
  "$CONTAINERD_BIN/ctr" --address "$CONTAINERD_SOCKET" --namespace k8s.io "$@"
}

# Builds the images (stand-ins, then the two from the repository's Dockerfiles) and imports
# every image the node runs into containerd.
load_images() {
  local images
  timed "images (build)" env MINIO_BIN="$MINIO_BIN" MC_BIN="$MC_BIN" FINTECH_CACHE="$CACHE" \
    "$ROOT/scripts/images/build.sh" all
  mapfile -t images < <("$ROOT/scripts/images/build.sh" list)
  timed "images (import into the node)" import_images "${images[@]}"
}

import_images() {
  docker save "$@" | ctr_k8s images import - >/dev/null
}

write_kubelet_config() {
  local dir=$1 pki="$DATA/kubernetes/pki"
  # Pods with dnsPolicy Default get this resolver: CoreDNS too, so that no pod queries the
  # host's resolver.
  echo "nameserver $NODE_IP" >"$dir/resolv.conf"
  cat >"$dir/config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# This machine's cgroups are v1; kubelets from 1.35 refuse them unless told otherwise.
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
address: $NODE_IP
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $pki/ca.crt
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS:
  - $NODE_IP
resolvConf: $dir/resolv.conf
failSwapOn: false
# A shared test machine's disk is often fuller than a kubelet likes: no eviction for disk
# ("0%" turns a signal off), and no image garbage collection (100), because an image removed
# here could not be pulled again.
evictionHard:
  memory.available: "100Mi"
  nodefs.available: "0%"
  nodefs.inodesFree: "0%"
  imagefs.available: "0%"
  imagefs.inodesFree: "0%"
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
EOF
}

start_kubelet() {
  local dir="$DATA/node/kubelet"
  mkdir -p "$dir/root"
  KUBELET_PORT=$(free_port)
  KUBELET_HEALTHZ_PORT=$(free_port)
  write_kubelet_config "$dir"
  write_kubeconfig "$dir/kubeconfig" kubelet
  spawn kubelet env PATH="$CONTAINERD_BIN:$PATH" "$K8S_BIN/kubelet" \
    --config "$dir/config.yaml" --kubeconfig "$dir/kubeconfig" --root-dir "$dir/root" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP" --v=1
  WAIT_SECONDS=120 wait_for "the node to be Ready" kubectl_admin wait --for=condition=Ready "node/$NODE_NAME" --timeout=2s
  # Cordoned until a test that needs pods running lifts it (operator/tests/walkthrough.rs),
  # so that the other tests' pods stay Pending, as they were written to expect.
  kubectl_admin cordon "$NODE_NAME" >/dev/null
}

kubectl_admin() {
  "$K8S_BIN/kubectl" --kubeconfig "$DATA/kubernetes/kubeconfig" "$@"
}

start_kube_proxy() {
  local dir="$DATA/node/kube-proxy"
  mkdir -p "$dir"
  write_kubeconfig "$dir/kubeconfig" kube-proxy
  cat >"$dir/config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: $POD_CIDR
hostnameOverride: $NODE_NAME
clientConnection:
  kubeconfig: $dir/kubeconfig
# NodePorts on the node's address only, never on the machine's network interfaces.
nodePortAddresses:
  - $NODE_IP/32
iptables:
  localhostNodePorts: false
healthzBindAddress: 127.0.0.1:$(free_port)
metricsBindAddress: 127.0.0.1:$(free_port)
# Leave the machine's conntrack limits alone (a VM may not allow changing them).
conntrack:
  maxPerCore: 0
  min: 0
EOF
  spawn kube-proxy "$K8S_BIN/kube-proxy" --config "$dir/config.yaml" --v=1
  wait_for "kube-proxy" iptables -t nat -S KUBE-SERVICES
}

start_coredns() {
  local dir="$DATA/node/coredns" ready_port health_port
  mkdir -p "$dir"
  ready_port=$(free_port)
  health_port=$(free_port)
  # Names outside these zones match no server block, so CoreDNS refuses them: nothing is
  # forwarded off the machine.
  cat >"$dir/Corefile" <<EOF
cluster.local:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $NODE_IP
    errors
    ready 127.0.0.1:$ready_port
    health 127.0.0.1:$health_port
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig $DATA/kubernetes/kubeconfig fintech-test
        pods insecure
    }
    cache 5
}
EOF
  spawn coredns "$COREDNS_BIN" -conf "$dir/Corefile"
  wait_for "CoreDNS" curl -fsS "http://127.0.0.1:$ready_port/ready"
}

# rancher.io/local-path: a PersistentVolume is a folder under $DATA/node/volumes, made and
# removed by a short helper pod that runs the ConfigMap's setup and teardown scripts; the
# StorageClass is the cluster's default, as on kind. The provisioner runs on the host with the
# admin's kubeconfig; its helper pods need their namespace, ServiceAccount and ConfigMap.
start_local_path_provisioner() {
  local dir="$DATA/node/local-path" namespace=local-path-storage
  mkdir -p "$dir" "$DATA/node/volumes"
  # The file name must end in .json, or the provisioner takes the argument for JSON text.
  cat >"$dir/config.json" <<EOF
{
  "nodePathMap": [
    { "node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": ["$DATA/node/volumes"] }
  ]
}
EOF
  cat >"$dir/helper-pod.yaml" <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: helper-pod
spec:
  containers:
    - name: helper-pod
      image: $HELPER_IMAGE
      imagePullPolicy: IfNotPresent
EOF
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Namespace
metadata:
  name: $namespace
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: local-path-provisioner-service-account
  namespace: $namespace
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: local-path-config
  namespace: $namespace
data:
  # A fresh volume is writable by every user: hostPath volumes ignore a pod's fsGroup.
  setup: |-
    #!/bin/sh
    set -eu
    mkdir -m 0777 -p "\$VOL_DIR"
  teardown: |-
    #!/bin/sh
    set -eu
    rm -rf "\$VOL_DIR"
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: $STORAGE_CLASS
  annotations:
    storageclass.kubernetes.io/is-default-class: "true"
provisioner: rancher.io/local-path
# The provisioner needs the node the pod was scheduled to.
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Delete
EOF
  spawn local-path-provisioner "$LOCAL_PATH_PROVISIONER_BIN" start \
    --kubeconfig "$DATA/kubernetes/kubeconfig" --namespace "$namespace" \
    --config "$dir/config.json" --helper-pod-file "$dir/helper-pod.yaml" \
    --configmap-name local-path-config --provisioner-name rancher.io/local-path
}

start_node() {
  timed "node (containerd)" start_containerd
  load_images
  timed "node (kubelet)" start_kubelet
  timed "node (kube-proxy)" start_kube_proxy
  timed "node (coredns)" start_coredns
  timed "node (storage)" start_local_path_provisioner
  {
    echo "FINTECH_TEST_NODE=$NODE_NAME"
    echo "FINTECH_TEST_NODE_IP=$NODE_IP"
  } >>"$ENV_FILE"
}

# Kills every container of the node's pods; the kubelet is stopped first, so none restarts.
stop_node_containers() {
  local id
  CONTAINERD_SOCKET=$(containerd_socket "$1")
  [[ -S $CONTAINERD_SOCKET ]] || return 0
  for id in $(ctr_k8s tasks list -q 2>/dev/null); do
    ctr_k8s tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true
  done
}

# After every process is stopped: containerd's shims (they outlive it), the mounts under the
# data folder (pod volumes, container root file systems, network namespaces), Services' and
# the node's iptables rules, the bridge and the node's address. Then `rm -rf` of the data folder
# cannot reach into a mounted folder, and the next `up` starts clean.
stop_node_leftovers() {
  local data=$1 mount
  pkill -KILL -f "containerd-shim-runc-v2 .*-address $(containerd_socket "$data")" 2>/dev/null || true
  while read -r mount; do
    umount -l "$mount" 2>/dev/null || true
  done < <(findmnt -rn -o TARGET | grep -F "$data/" | sort -r)
  [[ ! -x $K8S_BIN/kube-proxy ]] || "$K8S_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop_node_network
}
