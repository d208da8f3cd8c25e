#!/usr/bin/env bash
# Build the pinned kubelet (and the pod sandbox's pause process) for the development cluster's real node into $1/bin and record
# its sha256 in $1/SHA256SUMS. Called by shared/devtools/k8s_cluster.py (`ferry k8s build
# --kubelet`). A cache entry of its own, next to the control plane's: adding the kubelet
# does not rebuild the control plane binaries a cache already holds.
#
# Same wrapper-module trick as build.sh (k8s.io/kubernetes replaces its staging modules with
# ./staging/..., so it cannot be `go install`ed); the module in kubelet/ (go.mod/go.sum
# committed, so every module checksum is pinned) is build.sh's plus the kubelet's closure.
set -euo pipefail

K8S_VERSION="${FERRY_K8S_VERSION:-1.35.4}"
OUT="${1:?usage: build-kubelet.sh OUT_DIR}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
MINOR="${K8S_VERSION#*.}"; MINOR="${MINOR%%.*}"; MAJOR="${K8S_VERSION%%.*}"

command -v go >/dev/null || { echo "build-kubelet.sh: 'go' is not on PATH (Debian: apt-get install golang-go, >= 1.24)" >&2; exit 2; }
grep -q "k8s.io/kubernetes v$K8S_VERSION\$" "$HERE/kubelet/go.mod" \
    || { echo "build-kubelet.sh: kubelet/go.mod does not pin k8s.io/kubernetes v$K8S_VERSION" >&2; exit 1; }
mkdir -p "$OUT/bin" "$OUT/src"
SRC="$OUT/src"
cp -r "$HERE/kubelet/go.mod" "$HERE/kubelet/go.sum" "$HERE/kubelet/tools.go" "$HERE/kubelet/pause" "$SRC/"
export CGO_ENABLED=0 GOFLAGS="${GOFLAGS:--buildvcs=false} -mod=readonly" GOTOOLCHAIN=local
start=$(date +%s)
V=k8s.io/component-base/version
LDFLAGS="-s -w -X $V.gitVersion=v$K8S_VERSION -X $V.gitMajor=$MAJOR -X $V.gitMinor=$MINOR \
 -X $V.gitTreeState=clean -X $V.buildDate=1970-01-01T00:00:00Z"
(cd "$SRC" && go build -trimpath -ldflags "$LDFLAGS" -o "$OUT/bin/kubelet" k8s.io/kubernetes/cmd/kubelet)
echo "build-kubelet.sh: kubelet built at $(( $(date +%s) - start )) s" >&2
# The pod sandbox's process (see kubelet/pause/main.go): no pause image can be pulled here.
(cd "$SRC" && go build -trimpath -ldflags "-s -w" -o "$OUT/bin/pause" ./pause)
(cd "$OUT/bin" && sha256sum kubelet pause) > "$OUT/SHA256SUMS"
echo "build-kubelet.sh: done in $(( $(date +%s) - start )) s" >&2
