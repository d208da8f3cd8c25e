// Command pause holds a pod sandbox's namespaces until it is stopped: the real node's sandbox
// image (Kubernetes' own pause image would have to be pulled from a registry).
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
}
