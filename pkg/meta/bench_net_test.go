package meta

// The networked engines benchmarked beside bolt: the tikv mock cluster
// (in-process, one region: see tikvCaseRegions) and a real etcd server on 127.0.0.1.
func benchNetEngines() []engineCase { return []engineCase{tikvCaseRegions(false), etcdCase()} }
