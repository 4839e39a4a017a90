package fs

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"podfs.io/podfs/pkg/metricserver"
	"podfs.io/podfs/pkg/storage"
)

// FUSE operations counted and timed, one label value each.
const (
	opLookup = iota
	opGetattr
	opSetattr
	opMknod
	opMkdir
	opUnlink
	opRmdir
	opRename
	opLink
	opSymlink
	opReadlink
	opAccess
	opStatfs
	opCreate
	opOpen
	opRead
	opWrite
	opFlush
	opFsync
	opRelease
	opFallocate
	opCopyFileRange
	opGetlk
	opSetlk
	opOpendir
	opReaddir
	opReaddirplus
	opGetxattr
	opListxattr
	opSetxattr
	opRemovexattr
	numOps
)

var opNames = [numOps]string{
	"lookup", "getattr", "setattr", "mknod", "mkdir", "unlink", "rmdir", "rename", "link", "symlink",
	"readlink", "access", "statfs", "create", "open", "read", "write", "flush", "fsync", "release",
	"fallocate", "copy_file_range", "getlk", "setlk", "opendir", "readdir", "readdirplus",
	"getxattr", "listxattr", "setxattr", "removexattr",
}

// metrics are one mount's Prometheus metrics, in a registry of its own (a
// sidecar may serve several mounts).
type metrics struct {
	reg       *prometheus.Registry
	ops       [numOps]prometheus.Counter
	latency   [numOps]prometheus.Observer
	readBytes prometheus.Counter
	writeBytes,
	xattrFastPath prometheus.Counter
	openFiles, handles prometheus.Gauge

	objRequests *prometheus.CounterVec
	objLatency  *prometheus.HistogramVec
	objBytes    *prometheus.CounterVec
}

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	ops := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podfs_fuse_ops_total", Help: "FUSE requests served, by operation.",
	}, []string{"op"})
	lat := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "podfs_fuse_op_duration_seconds", Help: "Time to serve a FUSE request, by operation.",
		Buckets: prometheus.ExponentialBuckets(10e-6, 4, 10), // 10 µs .. 2.6 s
	}, []string{"op"})
	for i := range numOps {
		m.ops[i] = ops.WithLabelValues(opNames[i])
		m.latency[i] = lat.WithLabelValues(opNames[i])
	}
	m.readBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podfs_fuse_read_bytes_total", Help: "Bytes returned to read requests."})
	m.writeBytes = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podfs_fuse_written_bytes_total", Help: "Bytes accepted from write requests."})
	m.xattrFastPath = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "podfs_xattr_fast_negative_total", Help: "security/ACL xattr lookups answered ENODATA without metadata."})
	m.openFiles = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podfs_open_inodes", Help: "Files open in this mount (inodes)."})
	m.handles = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "podfs_open_handles", Help: "Open file handles in this mount."})
	m.objRequests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podfs_object_requests_total", Help: "Object store requests, by method and result."},
		[]string{"method", "result"})
	m.objLatency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "podfs_object_request_duration_seconds", Help: "Object store request latency, by method.",
		Buckets: prometheus.ExponentialBuckets(50e-6, 4, 10)}, []string{"method"})
	m.objBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "podfs_object_bytes_total", Help: "Bytes moved to (put) and from (get) the object store."},
		[]string{"direction"})
	m.reg.MustRegister(ops, lat, m.readBytes, m.writeBytes, m.xattrFastPath, m.openFiles, m.handles,
		m.objRequests, m.objLatency, m.objBytes,
		prometheus.NewGoCollector(), prometheus.NewProcessCollector(prometheus.ProcessCollectorOpts{}))
	return m
}

// op counts one request of kind i and returns the function that records its
// latency (deferred by the caller).
func (m *metrics) op(i int) func() {
	start := time.Now()
	m.ops[i].Inc()
	return func() { m.latency[i].Observe(time.Since(start).Seconds()) }
}

// register adds collectors another layer provides (meta, data), if any.
func (m *metrics) register(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := m.reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				slog.Default().Warn("metrics collector not registered", "err", err)
			}
		}
	}
}

// serve starts the HTTP endpoint; the returned function stops it.
func (m *metrics) serve(addr string, log *slog.Logger) (func(), error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
	// Profiles of the mount process, for finding where time goes under a
	// real workload (go tool pprof http://ADDR/debug/pprof/profile).
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	stop, err := metricserver.Serve(addr, mux, log)
	if err != nil {
		return nil, fmt.Errorf("%w (pick a free address with --metrics)", err)
	}
	return stop, nil
}

// instrumentedStore counts and times the object requests the data layer makes.
type instrumentedStore struct {
	storage.Store
	m *metrics
}

// Unwrap lets storage.IsLocal see the store underneath, so the data layer
// still reads a local file store directly instead of through its block cache.
func (s *instrumentedStore) Unwrap() storage.Store { return s.Store }

func (s *instrumentedStore) done(method string, start time.Time, err error) {
	result := "ok"
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			result = "not_found"
		} else {
			result = "error"
		}
	}
	s.m.objRequests.WithLabelValues(method, result).Inc()
	s.m.objLatency.WithLabelValues(method).Observe(time.Since(start).Seconds())
}

func (s *instrumentedStore) Put(ctx context.Context, key string, data []byte) error {
	start := time.Now()
	err := s.Store.Put(ctx, key, data)
	s.done("put", start, err)
	if err == nil {
		s.m.objBytes.WithLabelValues("put").Add(float64(len(data)))
	}
	return err
}

func (s *instrumentedStore) Get(ctx context.Context, key string, off int64, p []byte) (int, error) {
	start := time.Now()
	n, err := s.Store.Get(ctx, key, off, p)
	s.done("get", start, err)
	s.m.objBytes.WithLabelValues("get").Add(float64(n))
	return n, err
}

func (s *instrumentedStore) Delete(ctx context.Context, key string) error {
	start := time.Now()
	err := s.Store.Delete(ctx, key)
	s.done("delete", start, err)
	return err
}

func (s *instrumentedStore) Head(ctx context.Context, key string) (storage.Object, error) {
	start := time.Now()
	o, err := s.Store.Head(ctx, key)
	s.done("head", start, err)
	return o, err
}

func (s *instrumentedStore) List(ctx context.Context, prefix, marker string, limit int) ([]storage.Object, error) {
	start := time.Now()
	o, err := s.Store.List(ctx, prefix, marker, limit)
	s.done("list", start, err)
	return o, err
}
