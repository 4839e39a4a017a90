package meta

// The networked engines benchmarked beside bolt: the tikv mock cluster
// (in-process, one region: see tikvCaseRegions) and a real etcd server on 127.0.0.1.
//
// Reading the tikv figures: the mock keeps MVCC data in an in-memory leveldb
// that never compacts, so every commit leaves a tombstone (its lock record)
// that later reads of the same key step over. A key written on every
// operation gets slower the longer a benchmark runs; BenchmarkTiKVUpdate in
// package kv shows the mock's own rate on fresh keys. Creates therefore
// leave the directory's attributes alone within DirMtimeSkip and count
// inodes in per-client usage slots of 16 writes each (usage.go): 8-way tikv
// create 0.76k/s before both; shared shards then cost ~300 us of CPU per
// create as their histories grew, slots ~230 us.
func benchNetEngines() []engineCase { return []engineCase{tikvCaseRegions(false), etcdCase()} }
