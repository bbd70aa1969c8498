#!/usr/bin/env bash
# Builds, on this machine, every container image the project's Dockerfiles and Helm chart
# name, for a Docker engine that can reach package registries (Debian's archive, the Rust
# crate registry, Maven Central, the Go module proxy) but no container registry.
#
#   scripts/images/build.sh base   the stand-ins: Debian bases, rust, distroless, kafka,
#                                  postgres, minio, mc, pause
#   scripts/images/build.sh all    the stand-ins, then fintech/operator and fintech/workers
#   scripts/images/build.sh list   the images a cluster node needs, one per line
#
# Inputs (environment):
#   DOCKER_HOST     the engine to build with (required, so that no other engine is used by
#                   accident); it must allow `docker build --network host`
#   FINTECH_CACHE   cache folder (default ~/.cache/fintech); root file systems, Kafka's jars,
#                   the Rust toolchain archive and the build contexts live in $FINTECH_CACHE/images
#   MINIO_BIN       a built MinIO server binary (the test environment's pinned build)
#   MC_BIN          a built MinIO client binary
#   DEBIAN_MIRROR, DEBIAN_SECURITY_MIRROR
#                   optional; by default the mirrors this host's apt uses
#
# Everything is cached: a Debian root file system is made once with debootstrap and kept as a
# tarball, imported only when its image is missing or was made by an older recipe; the images
# are built with Docker's layer cache, so a second run only re-checks the caches.
#
# Each stand-in's Dockerfile (and entrypoint) lives in its own folder here; its header says
# which upstream image it replaces and which part of that image's contract it honours.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
readonly HERE ROOT
readonly CACHE="${FINTECH_CACHE:-$HOME/.cache/fintech}"
readonly WORK="$CACHE/images"
readonly LOGS="$WORK/logs"

# Bump when debian_rootfs changes what goes into a root file system tarball: the tarball is
# then made again and the image re-imported (which invalidates every image built on it).
readonly ROOTFS_RECIPE=1

readonly RUST_VERSION="1.95.0"
readonly KAFKA_VERSION="4.3.1"

# The names the Dockerfiles (FROM) and the chart (values.yaml) use.
readonly RUST_IMAGE="rust:1.95-bookworm"
readonly DISTROLESS_IMAGE="gcr.io/distroless/cc-debian12:nonroot"
readonly KAFKA_IMAGE="apache/kafka:$KAFKA_VERSION"
readonly POSTGRES_IMAGE="postgres:17"
readonly MINIO_IMAGE="quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z"
readonly MC_IMAGE="quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z"
readonly PAUSE_IMAGE="registry.k8s.io/pause:3.10.1"

log() { printf '[images] %s\n' "$*" >&2; }
die() { printf '[images] error: %s\n' "$*" >&2; exit 1; }

# Runs "$@" and prints how long it took, labelled $1.
timed() {
  local label=$1 start
  shift
  start=$(date +%s)
  "$@"
  log "$label: $(($(date +%s) - start)) s"
}

require_env() {
  local name
  for name; do
    [[ -n ${!name:-} ]] || die "$name is not set (see the header of $0)"
  done
}

# The product images are tagged with the chart's appVersion, the tag the chart pulls by default.
app_version() {
  awk -F'"' '/^appVersion:/ { print $2 }' "$ROOT/helm/fintech-operator/Chart.yaml"
}

product_images() {
  local version
  version=$(app_version)
  [[ -n $version ]] || die "no appVersion in helm/fintech-operator/Chart.yaml"
  printf '%s\n' "fintech/operator:$version" "fintech/workers:$version"
}

# What a node runs: the pod sandbox, debian:bookworm-slim (the test environment's
# local-path provisioner runs its helper pods with it: they need a shell), the chart's
# infrastructure and the product images. (rust, distroless and trixie are only build stages.)
node_images() {
  printf '%s\n' "$PAUSE_IMAGE" "debian:bookworm-slim" "$KAFKA_IMAGE" "$POSTGRES_IMAGE" \
    "$MINIO_IMAGE" "$MC_IMAGE"
  product_images
}

# docker build's output goes to a log file; only a failure shows it.
# usage: docker_build TAG DOCKERFILE CONTEXT [docker build options...]
docker_build() {
  local tag=$1 dockerfile=$2 context=$3 logfile
  shift 3
  logfile="$LOGS/$(printf '%s' "$tag" | tr -c 'A-Za-z0-9.-' '_').log"
  # The engine's containers have no network of their own: RUN steps borrow the host's.
  # --force-rm: a failed step leaves no stopped container behind.
  if ! docker build --network host --force-rm -f "$dockerfile" -t "$tag" "$@" "$context" >"$logfile" 2>&1; then
    tail -n 40 "$logfile" >&2
    die "building $tag failed; the whole log is $logfile"
  fi
}

# Fills $WORK/context-NAME afresh with the files of scripts/images/NAME; the caller then adds
# its assembled inputs (jars, binaries), so that none of them enters the repository.
# usage: context NAME -> prints the folder
context() {
  local dir="$WORK/context-$1"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp -a "$HERE/$1/." "$dir/"
  printf '%s\n' "$dir"
}

# --- Debian bases ------------------------------------------------------------------------

# Prints the first URI of this host's apt sources whose path ends in /$1.
host_apt_uri() {
  local path=$1
  {
    sed -n 's/^URIs:[[:space:]]*//p' /etc/apt/sources.list.d/*.sources 2>/dev/null | tr ' ' '\n'
    sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]*\).*/\2/p' \
      /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null
  } | grep -m1 -E "/$path/?\$" | sed 's:/*$::'
}

mirrors() {
  MIRROR=${DEBIAN_MIRROR:-$(host_apt_uri debian || true)}
  SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$(host_apt_uri debian-security || true)}
  [[ -n $MIRROR ]] || die "cannot tell this host's Debian mirror from /etc/apt; set DEBIAN_MIRROR"
  [[ -n $SECURITY_MIRROR ]] || SECURITY_MIRROR="$MIRROR-security"
}

# Makes the root file system of debian:SUITE-slim in $2: debootstrap's minbase (essential
# packages and apt), then what the official slim images change: the same apt sources as
# this host (main, updates, security), dpkg told to skip documentation, manuals and
# translations, apt told to keep no downloaded packages, and no daemon started by a
# package's maintainer scripts.
debian_rootfs() {
  local suite=$1 root=$2
  debootstrap --variant=minbase --components=main "$suite" "$root" "$MIRROR" \
    >"$LOGS/debootstrap-$suite.log" 2>&1 ||
    { tail -n 20 "$LOGS/debootstrap-$suite.log" >&2; die "debootstrap $suite failed"; }

  rm -f "$root/etc/apt/sources.list"
  cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $SECURITY_MIRROR
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  cat >"$root/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
# As in the official slim images: no documentation (but the licences), manuals or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
# Downloaded packages are deleted after every install, so image layers do not keep them.
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  printf 'Acquire::Languages "none";\n' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  printf '#!/bin/sh\n# Containers run no init system: packages must not start services.\nexit 101\n' \
    >"$root/usr/sbin/policy-rc.d"
  chmod 0755 "$root/usr/sbin/policy-rc.d"

  # What the dpkg exclusions above would have skipped, had they been there from the start.
  find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$root"/usr/share/{man,groff,info,lintian,linda}/*
  find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  # The host's files that debootstrap copies in, and its caches and logs.
  rm -f "$root/etc/resolv.conf" "$root/etc/hostname"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin \
    "$root"/var/cache/apt/archives/*.deb "$root"/var/log/*.log "$root"/var/log/apt/*
}

debian_tarball_path() { printf '%s\n' "$WORK/debian-$1-minbase-r$ROOTFS_RECIPE.tar.gz"; }

# Makes the cached root file system tarball of SUITE unless it exists.
debian_tarball() {
  local suite=$1 tarball tmp
  tarball=$(debian_tarball_path "$suite")
  [[ ! -s $tarball ]] || return 0
  command -v debootstrap >/dev/null || die "debootstrap is required (apt-get install debootstrap)"
  [[ $(id -u) -eq 0 ]] || die "debootstrap needs root"
  mirrors
  # Leftovers of an interrupted run; --one-file-system in case debootstrap left /proc mounted.
  rm -rf --one-file-system "$WORK/rootfs-$suite".*
  tmp=$(mktemp -d "$WORK/rootfs-$suite.XXXXXX")
  debian_rootfs "$suite" "$tmp/root"
  tar --numeric-owner --xattrs -C "$tmp/root" -czf "$tmp/rootfs.tar.gz" .
  mv "$tmp/rootfs.tar.gz" "$tarball"
  rm -rf --one-file-system "$tmp"
}

# debian:SUITE-slim, imported from the tarball when the image is missing or was imported from
# an older recipe's tarball (the fintech.rootfs label names the tarball). An image that is
# present and current needs no tarball at all.
debian_image() {
  local suite=$1 image="debian:$1-slim" tarball label
  tarball=$(debian_tarball_path "$suite")
  label=$(basename "$tarball")
  if [[ $(docker image inspect -f '{{ index .Config.Labels "fintech.rootfs" }}' "$image" 2>/dev/null) == "$label" ]]; then
    return 0
  fi
  debian_tarball "$suite"
  docker import \
    --change "LABEL fintech.rootfs=$label" \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["bash"]' \
    "$tarball" "$image" >/dev/null
}

# --- rust:1.95-bookworm ------------------------------------------------------------------

# This host's toolchain without its documentation, as one gzip archive: one file of ~200 MB
# makes the build context quick to send and to checksum on every run (gzip -1 because xz
# would take minutes once, for little gain). Files are made writable by all, as the
# official image makes RUSTUP_HOME and CARGO_HOME, in the archive rather than with a chmod
# layer that would copy the whole toolchain again.
rust_toolchain_archive() {
  local dir=$1 sysroot version
  command -v rustc >/dev/null || die "rustc is required: the image gets this host's toolchain"
  version=$(rustc --version | awk '{ print $2 }')
  [[ $version == "$RUST_VERSION" ]] ||
    die "the host's rustc is $version; $RUST_IMAGE needs $RUST_VERSION (rustup toolchain install $RUST_VERSION)"
  sysroot=$(rustc --print sysroot)
  local commit archive
  commit=$(rustc -vV | awk '/^commit-hash/ { print substr($2, 1, 12) }')
  archive="$WORK/rust-$RUST_VERSION-$commit.tar.gz"
  if [[ ! -s $archive ]]; then
    tar -C "$sysroot" --exclude=./share/doc --exclude='./lib/rustlib/manifest-rust-docs-*' \
      --owner=0 --group=0 --numeric-owner --mode='a+w' -cf - . |
      gzip -1 >"$archive.tmp"
    mv "$archive.tmp" "$archive"
  fi
  ln -f "$archive" "$dir/toolchain.tar.gz" 2>/dev/null || cp "$archive" "$dir/toolchain.tar.gz"
}

# The certificate authorities this host adds to Debian's (/usr/local/share/ca-certificates):
# where HTTPS goes through an inspecting proxy, cargo in the image must trust its CA to reach
# the crate registry, as the host's cargo does.
local_cas() {
  local dir=$1/local-ca
  mkdir -p "$dir"
  if [[ -d /usr/local/share/ca-certificates ]]; then
    find /usr/local/share/ca-certificates -name '*.crt' -type f -exec cp {} "$dir/" \;
  fi
}

build_rust() {
  local dir
  dir=$(context rust)
  rust_toolchain_archive "$dir"
  local_cas "$dir"
  docker_build "$RUST_IMAGE" "$dir/Dockerfile" "$dir" --build-arg "RUST_VERSION=$RUST_VERSION"
}

# --- the other stand-ins -----------------------------------------------------------------

build_distroless() {
  local dir
  dir=$(context distroless)
  docker_build "$DISTROLESS_IMAGE" "$dir/Dockerfile" "$dir"
}

# Kafka's jars from Maven Central, cached per version: the broker, the command-line tools and
# a Log4j 2 binding.
kafka_libs() {
  local libs="$WORK/kafka-$KAFKA_VERSION-libs"
  if [[ ! -f $libs/.complete ]]; then
    command -v mvn >/dev/null || die "Maven (mvn) is required to fetch Kafka's jars"
    rm -rf "$libs"
    mvn -q -B -f "$HERE/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
      dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$libs" \
      >"$LOGS/kafka-maven.log" 2>&1 ||
      { tail -n 20 "$LOGS/kafka-maven.log" >&2; die "fetching Kafka's jars failed"; }
    touch "$libs/.complete"
  fi
  printf '%s\n' "$libs"
}

build_kafka() {
  local dir libs
  libs=$(kafka_libs)
  dir=$(context kafka)
  mkdir -p "$dir/libs"
  cp -l "$libs"/*.jar "$dir/libs/" 2>/dev/null || cp "$libs"/*.jar "$dir/libs/"
  docker_build "$KAFKA_IMAGE" "$dir/Dockerfile" "$dir" --build-arg "KAFKA_VERSION=$KAFKA_VERSION"
}

build_postgres() {
  local dir
  dir=$(context postgres)
  docker_build "$POSTGRES_IMAGE" "$dir/Dockerfile" "$dir"
}

# usage: build_go_binary IMAGE FOLDER BINARY NAME-IN-CONTEXT
build_go_binary() {
  local image=$1 name=$2 binary=$3 target=$4 dir
  [[ -x $binary ]] || die "$binary is not an executable file"
  dir=$(context "$name")
  install -m 0755 "$binary" "$dir/$target"
  docker_build "$image" "$dir/Dockerfile" "$dir"
}

build_pause() {
  local dir
  dir=$(context pause)
  docker_build "$PAUSE_IMAGE" "$dir/Dockerfile" "$dir"
}

# --- the product images ------------------------------------------------------------------

# The repository's own Dockerfiles, from the repository root, as their headers say.
build_product() {
  local component=$1 tag
  tag=$(product_images | grep "^fintech/$component:")
  docker_build "$tag" "$ROOT/$component/Dockerfile" "$ROOT"
}

# --- main ----------------------------------------------------------------------------------

build_base() {
  require_env MINIO_BIN MC_BIN
  local suite
  for suite in bookworm trixie; do
    timed "debian:$suite-slim" debian_image "$suite"
  done
  timed "$RUST_IMAGE" build_rust
  timed "$DISTROLESS_IMAGE" build_distroless
  timed "$PAUSE_IMAGE" build_pause
  timed "$POSTGRES_IMAGE" build_postgres
  timed "$KAFKA_IMAGE" build_kafka
  timed "$MINIO_IMAGE" build_go_binary "$MINIO_IMAGE" minio "$MINIO_BIN" minio
  timed "$MC_IMAGE" build_go_binary "$MC_IMAGE" mc "$MC_BIN" mc
}

build_all() {
  build_base
  timed "$(product_images | grep operator)" build_product operator
  timed "$(product_images | grep workers)" build_product workers
}

main() {
  local command=${1:-}
  case $command in
    list) node_images; return ;;
    base | all) ;;
    *) die "usage: $0 base|all|list" ;;
  esac
  require_env DOCKER_HOST
  export DOCKER_HOST
  docker version >/dev/null 2>&1 || die "no Docker engine answers at DOCKER_HOST=$DOCKER_HOST"
  mkdir -p "$WORK" "$LOGS"
  # One build at a time per cache: the build contexts are remade in place.
  exec 9>"$WORK/.lock"
  flock 9
  timed "$command (total)" "build_$command"
}

main "$@"
