//go:build deps

// Package deps pins the module graph while the real packages are written.
package deps

import (
	_ "github.com/ceph/go-ceph/rados"
	_ "github.com/container-storage-interface/spec/lib/go/csi"
	_ "github.com/google/go-containerregistry/pkg/v1/tarball"
	_ "github.com/hanwen/go-fuse/v2/fuse"
	_ "github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/tikv/client-go/v2/testutils"
	_ "github.com/tikv/client-go/v2/txnkv"
	_ "go.etcd.io/bbolt"
	_ "go.etcd.io/etcd/client/v3"
	_ "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
	_ "k8s.io/mount-utils"
	_ "sigs.k8s.io/controller-runtime/pkg/envtest"
	_ "sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)
