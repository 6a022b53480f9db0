// etcd, built from go.etcd.io/etcd/server/v3 at the version k8s.io/kubernetes pins
// (the etcd that Kubernetes tests against), exactly as etcd's own main.go.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
