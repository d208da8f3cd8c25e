//go:build tools

// Package tools pins the kubelet the Ferry development cluster's real node runs (see build-kubelet.sh).
package tools

import (
	_ "k8s.io/kubernetes/cmd/kubelet"
)
