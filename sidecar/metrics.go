package sidecar

import (
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"

	"podfs.io/podfs/pkg/metricserver"
)

// VolumeLabel is the label that tells the volumes' series apart.
const VolumeLabel = "volume"

// Metrics serves the Prometheus metrics of every volume of the sidecar on
// one endpoint: each mount keeps its own registry (pkg/fs), and a scrape
// gathers them all, adding volume="<pod volume name>" to every series. The
// process's Go runtime and process metrics appear once, unlabelled.
type Metrics struct {
	proc *prometheus.Registry

	mu   sync.Mutex
	vols map[string]prometheus.Gatherer
}

// NewMetrics returns an endpoint with no volumes yet.
func NewMetrics() *Metrics {
	proc := prometheus.NewRegistry()
	proc.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return &Metrics{proc: proc, vols: map[string]prometheus.Gatherer{}}
}

// Set serves g as volume's metrics (replacing an earlier mount's).
func (m *Metrics) Set(volume string, g prometheus.Gatherer) {
	if m == nil {
		return
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.vols[volume] = g
}

// Gather implements prometheus.Gatherer.
func (m *Metrics) Gather() ([]*dto.MetricFamily, error) {
	m.mu.Lock()
	gs := prometheus.Gatherers{m.proc}
	names := make([]string, 0, len(m.vols))
	for n := range m.vols {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		gs = append(gs, labelled{volume: n, g: m.vols[n]})
	}
	m.mu.Unlock()
	return gs.Gather()
}

// labelled is one volume's gatherer with the volume label added and the
// per-process families (each mount registers its own copy) left out.
type labelled struct {
	volume string
	g      prometheus.Gatherer
}

func (l labelled) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := l.g.Gather()
	out := mfs[:0]
	for _, mf := range mfs {
		if n := mf.GetName(); strings.HasPrefix(n, "go_") || strings.HasPrefix(n, "process_") {
			continue
		}
		mf = proto.Clone(mf).(*dto.MetricFamily) // the mount's registry may cache it
		for _, metric := range mf.Metric {
			metric.Label = append(metric.Label, &dto.LabelPair{Name: proto.String(VolumeLabel), Value: proto.String(l.volume)})
			slices.SortFunc(metric.Label, func(a, b *dto.LabelPair) int { return strings.Compare(a.GetName(), b.GetName()) })
		}
		out = append(out, mf)
	}
	if err != nil {
		err = fmt.Errorf("volume %q: %w", l.volume, err)
	}
	return out, err
}

// Serve answers GET /metrics on addr until the returned stop is called. A
// listen failure is returned: the caller decides whether it matters (the
// sidecar serves its volumes anyway).
func (m *Metrics) Serve(addr string, log *slog.Logger) (stop func(), err error) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError}))
	return metricserver.Serve(addr, mux, log)
}
