package meta

// The networked engines benchmarked beside bolt: the tikv mock cluster
// (in-process, several regions) and a real etcd server on 127.0.0.1.
func benchNetEngines() []engineCase { return []engineCase{tikvCase(), etcdCase()} }
