#!/usr/bin/env bash
# Build a pinned Kubernetes control plane (kube-apiserver, kube-controller-manager,
# kube-scheduler, kubectl), etcd and kwok from the Go module proxy into $1/bin, and record their
# sha256 in $1/SHA256SUMS. Called by shared/devtools/k8s_cluster.py (`ferry k8s build`).
#
# Why a wrapper module: k8s.io/kubernetes replaces every k8s.io/<staging> module with
# ./staging/..., so it cannot be `go install`ed. This module (go.mod/go.sum committed
# next to this script, so every module checksum is pinned) requires k8s.io/kubernetes and
# replaces each staging module with its published v0.Y.Z twin. etcd's server module has
# replace directives too, so it is built inside the same module at the Kubernetes pins.
# kwok has none and is `go install`ed directly.
set -euo pipefail

K8S_VERSION="${FERRY_K8S_VERSION:-1.35.4}"
ETCD_VERSION="${FERRY_ETCD_VERSION:-3.6.5}"
KWOK_VERSION="${FERRY_KWOK_VERSION:-0.8.0}"
OUT="${1:?usage: build.sh OUT_DIR [--regenerate-module]}"
REGEN="${2:-}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
STAGING_VERSION="0.${K8S_VERSION#*.}"
MINOR="${K8S_VERSION#*.}"; MINOR="${MINOR%%.*}"; MAJOR="${K8S_VERSION%%.*}"

command -v go >/dev/null || { echo "build.sh: 'go' is not on PATH (Debian: apt-get install golang-go, >= 1.24)" >&2; exit 2; }
mkdir -p "$OUT/bin" "$OUT/src"
SRC="$OUT/src"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=mod" GOTOOLCHAIN=local
start=$(date +%s)

if [[ -f "$HERE/go.mod" && "$REGEN" != "--regenerate-module" ]]; then
    cp "$HERE/go.mod" "$HERE/go.sum" "$HERE/tools.go" "$SRC/"
else
    echo "build.sh: generating the wrapper module for k8s.io/kubernetes v$K8S_VERSION" >&2
    rm -f "$SRC/go.mod" "$SRC/go.sum"
    cp "$HERE/tools.go" "$SRC/"
    (cd "$SRC" && go mod init ferry.dev/k8s-dev-cluster >/dev/null 2>&1)
    gomod="$(cd "$SRC" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
    staging=$(sed -n 's#^[[:space:]]*\(k8s.io/[^ ]*\) => ./staging/.*#\1#p' "$gomod")
    [[ -n "$staging" ]] || { echo "build.sh: no staging replaces found in $gomod" >&2; exit 1; }
    args=()
    for m in $staging; do args+=("-replace=$m=$m@v$STAGING_VERSION"); done
    (cd "$SRC" && go mod edit "${args[@]}" \
        -require="k8s.io/kubernetes@v$K8S_VERSION" \
        -require="go.etcd.io/etcd/server/v3@v$ETCD_VERSION" \
        -require="go.etcd.io/etcd/etcdutl/v3@v$ETCD_VERSION" \
        -require="go.etcd.io/etcd/etcdctl/v3@v$ETCD_VERSION" \
        && go mod tidy)
    echo "build.sh: module generated in $(( $(date +%s) - start )) s; copy $SRC/go.mod and go.sum next to build.sh to pin it" >&2
fi

V=k8s.io/component-base/version
LDFLAGS="-s -w -X $V.gitVersion=v$K8S_VERSION -X $V.gitMajor=$MAJOR -X $V.gitMinor=$MINOR \
 -X $V.gitTreeState=clean -X $V.buildDate=1970-01-01T00:00:00Z"
# One binary at a time, smallest closure first: a failure shows early, and the packages each
# build compiles are cached for the next (the total work is the same as one go build).
build() {  # build NAME PACKAGE
    (cd "$SRC" && go build -trimpath -ldflags "$LDFLAGS" -o "$OUT/bin/$1" "$2")
    echo "build.sh: $1 built at $(( $(date +%s) - start )) s" >&2
}
build etcd go.etcd.io/etcd/server/v3
build etcdctl go.etcd.io/etcd/etcdctl/v3
build kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
build kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager
build kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler
GOBIN="$OUT/bin" GOFLAGS="${GOFLAGS% -mod=mod}" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@v$KWOK_VERSION"
echo "build.sh: kwok built at $(( $(date +%s) - start )) s" >&2
build kubectl k8s.io/kubernetes/cmd/kubectl  # only `kubectl apply -k` of deploy/ needs it

(cd "$OUT/bin" && sha256sum kube-apiserver kube-controller-manager kube-scheduler kubectl etcd etcdctl kwok) > "$OUT/SHA256SUMS"
echo "build.sh: done in $(( $(date +%s) - start )) s" >&2
