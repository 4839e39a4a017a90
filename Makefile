# podfs: see README.md. Every target works on a fresh Debian 12 machine as root.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := bin/podfs

.PHONY: build build-norados image push test e2e bench demo deps vet clean

build:
	hack/deps.sh --minimal
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/podfs

# Without cgo and librados: no rados:// storage.
build-norados:
	CGO_ENABLED=0 $(GO) build -tags norados -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN)-norados ./cmd/podfs

# The podfs image as a docker-archive tarball, bin/images/podfs.tar, built
# without a daemon; reproducible: the same commit gives the same digest.
image:
	hack/image.sh podfs --no-import

# Push it: make push REF=registry.example.com/podfs/podfs:v1 (credentials:
# $$PODFS_REGISTRY_USERNAME/_PASSWORD or docker's config; see hack/image.sh).
push:
	@test -n "$(REF)" || { echo "make push REF=registry/repository:tag" >&2; exit 2; }
	hack/image.sh podfs --push "$(REF)"

deps:
	hack/deps.sh

vet:
	$(GO) vet ./...

# The whole test suite against real components (FUSE, etcd, Ceph, kube-apiserver).
test:
	hack/test.sh

# End to end on a real single-node Kubernetes brought up on this machine
# (cluster, images, chart, scenarios, teardown). Separate from test.
e2e:
	hack/e2e.sh

bench:
	hack/bench.sh

# Set up this machine and run podfs on the embedded default.
demo:
	hack/quickstart.sh

clean:
	rm -rf bin
