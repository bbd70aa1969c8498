# Sourced by scripts/testenv.sh: builds what the Kubernetes node runs besides the Kubernetes
# commands themselves, each into its own cache folder named by version.

readonly CONTAINERD_VERSION="v2.4.2"
readonly RUNC_VERSION="v1.3.5"
readonly COREDNS_VERSION="v1.14.7"
readonly LOCAL_PATH_PROVISIONER_VERSION="v0.0.30"
# The MinIO client of the bucket Job's stand-in image (the newest version the Go module proxy
# serves; the chart's tag names the upstream release).
readonly MC_VERSION="v0.0.0-20250313080218-cf909e1063a9"

# Where each build lands; known without building, so that `down` can find the tools it needs.
readonly CONTAINERD_BIN="$CACHE/containerd-$CONTAINERD_VERSION-runc-$RUNC_VERSION/bin"
readonly COREDNS_BIN="$CACHE/coredns-$COREDNS_VERSION/bin/coredns"
readonly LOCAL_PATH_PROVISIONER_BIN="$CACHE/local-path-provisioner-$LOCAL_PATH_PROVISIONER_VERSION/bin/local-path-provisioner"
readonly MC_BIN="$CACHE/mc-$MC_VERSION/bin/mc"

# containerd 2 with its runc shim, and runc with seccomp (the kubelet's RuntimeDefault profile).
ensure_container_runtime() {
  local command
  for command in containerd containerd-shim-runc-v2 ctr runc; do
    [[ -x $CONTAINERD_BIN/$command ]] || break
  done
  if [[ ! -x $CONTAINERD_BIN/$command ]]; then
    [[ -f /usr/include/seccomp.h ]] || apt_install libseccomp-dev
    GOBIN="$CONTAINERD_BIN" go install -ldflags="-s -w" \
      "github.com/containerd/containerd/v2/cmd/containerd@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
      "github.com/containerd/containerd/v2/cmd/ctr@$CONTAINERD_VERSION"
    GOBIN="$CONTAINERD_BIN" go install -tags seccomp -ldflags="-s -w" \
      "github.com/opencontainers/runc@$RUNC_VERSION"
  fi
}

# Debian's CNI plugins (bridge, host-local, loopback, portmap, firewall) and the tools the node
# needs on the host: iptables for kube-proxy, conntrack, and Docker to build the images.
ensure_node_packages() {
  local missing=()
  [[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v conntrack >/dev/null || missing+=(conntrack)
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  command -v ip >/dev/null || missing+=(iproute2)
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

ensure_coredns() {
  [[ -x $COREDNS_BIN ]] || GOBIN="${COREDNS_BIN%/*}" go install -ldflags="-s -w" \
    "github.com/coredns/coredns@$COREDNS_VERSION"
}

ensure_local_path_provisioner() {
  [[ -x $LOCAL_PATH_PROVISIONER_BIN ]] || GOBIN="${LOCAL_PATH_PROVISIONER_BIN%/*}" go install -ldflags="-s -w" \
    "github.com/rancher/local-path-provisioner@$LOCAL_PATH_PROVISIONER_VERSION"
}

ensure_mc() {
  [[ -x $MC_BIN ]] || GOBIN="${MC_BIN%/*}" go install -ldflags="-s -w" "github.com/minio/mc@$MC_VERSION"
}
