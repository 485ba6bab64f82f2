// Command etcd is the upstream etcd server (etcdmain) built at the version that the
// pinned Kubernetes release requires, so the dev control plane needs no Debian etcd
// (3.4 is too old for watch-progress requests of a recent kube-apiserver).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
