package meta

// The networked engines benchmarked beside bolt: the tikv mock cluster
// (in-process, one region: see tikvCaseRegions) and a real etcd server on 127.0.0.1.
//
// Reading the tikv figures: the mock keeps MVCC data in an in-memory leveldb
// that never compacts, so every commit leaves a tombstone (its lock record)
// that later reads of the same key step over. A key written on every
// operation gets slower the longer a benchmark runs; BenchmarkTiKVUpdate in
// package kv shows the mock's own rate on fresh keys. Creates therefore
// count inodes in per-client usage slots of 16 writes each (usage.go), and
// creates leave their directory's attributes alone within DirMtimeSkip
// (see touchDir).
//
// The mock serializes every prewrite and commit under one lock and seeks a
// fresh iterator for each key a request names, so its work per create is
// about the keys/op figure the tikv benchmarks report; rpc/op is the round
// trips a real cluster would serve (a one-phase commit counts one).
func benchNetEngines() []engineCase { return []engineCase{tikvCaseRegions(false), etcdCase()} }
