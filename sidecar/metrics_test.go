package sidecar

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/common/expfmt"

	"podfs.io/podfs/internal/testenv"
)

// scrape reads one sample, e.g. podfs_fuse_written_bytes_total{volume="data"}
// (labels as Prometheus' text format writes them); a missing one is an error.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape %s: status %d, %v\n%s", url, resp.StatusCode, err, body)
	}
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("scrape %s: not Prometheus text: %v", url, err)
	}
	out := map[string]float64{}
	for name, mf := range mfs {
		for _, m := range mf.Metric {
			var labels []string
			for _, l := range m.Label {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			key := name
			if len(labels) > 0 {
				key += "{" + strings.Join(labels, ",") + "}"
			}
			switch {
			case m.Counter != nil:
				out[key] = m.Counter.GetValue()
			case m.Gauge != nil:
				out[key] = m.Gauge.GetValue()
			}
		}
	}
	return out
}

// TestFUSESidecarMetrics: one endpoint serves both volumes' metrics, told
// apart by the volume label; a write to one volume grows its byte counters
// and not the other's.
func TestFUSESidecarMetrics(t *testing.T) {
	set, dir := fuseSet(t)
	socket := dir + "/probe.sock"
	addr := testenv.Addr(testenv.FreePort(t))
	url := "http://" + addr + "/metrics"
	cmd, _, done := startChild(t, "fs", set, "SOCKET="+socket, "METRICS="+addr)
	waitReady(t, socket, done)
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("exit after SIGTERM: %v", err)
			}
		case <-time.After(60 * time.Second):
			t.Error("no exit after SIGTERM")
		}
	}()

	written := func(vol string) string { return `podfs_fuse_written_bytes_total{volume="` + vol + `"}` }
	put := func(vol string) string { return `podfs_object_bytes_total{direction="put",volume="` + vol + `"}` }
	before := scrape(t, url)
	for _, k := range []string{written("data"), written("models")} {
		if _, ok := before[k]; !ok {
			t.Fatalf("no series %s before any write", k)
		}
	}
	if _, ok := before["go_goroutines"]; !ok {
		t.Fatal("no go_goroutines: the process metrics are missing")
	}

	payload := bytes.Repeat([]byte("metrics "), 1<<17) // 1 MiB
	for _, step := range []struct{ vol, other string }{{"data", "models"}, {"models", "data"}} {
		if err := os.WriteFile(dir+"/pods/uid-1/"+step.vol+"/f", payload, 0o644); err != nil {
			t.Fatal(err)
		}
		after := scrape(t, url)
		if got := after[written(step.vol)] - before[written(step.vol)]; got < float64(len(payload)) {
			t.Errorf("%s grew by %.0f after a %d-byte write", written(step.vol), got, len(payload))
		}
		if after[put(step.vol)] <= before[put(step.vol)] {
			t.Errorf("%s did not grow after a closed write: %.0f -> %.0f", put(step.vol), before[put(step.vol)], after[put(step.vol)])
		}
		if after[written(step.other)] != before[written(step.other)] {
			t.Errorf("a write to %s moved %s: %.0f -> %.0f", step.vol, written(step.other), before[written(step.other)], after[written(step.other)])
		}
		before = after
	}
}

// TestMetricsGatherLabels: each volume's series carry its name; a volume
// replaced (a remount) is served from its new registry; the process
// metrics appear once.
func TestMetricsGatherLabels(t *testing.T) {
	m := NewMetrics()
	reg := func(v float64) *prometheus.Registry {
		r := prometheus.NewRegistry()
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "podfs_test_total", Help: "x"})
		c.Add(v)
		r.MustRegister(c, prometheus.NewGoCollector())
		return r
	}
	m.Set("a", reg(1))
	m.Set("b", reg(2))
	m.Set("b", reg(3))
	mfs, err := m.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	goroutines := 0
	for _, mf := range mfs {
		if mf.GetName() == "go_goroutines" {
			goroutines += len(mf.Metric)
		}
		if mf.GetName() != "podfs_test_total" {
			continue
		}
		for _, metric := range mf.Metric {
			for _, l := range metric.Label {
				got[l.GetName()+"="+l.GetValue()] = metric.Counter.GetValue()
			}
		}
	}
	if len(got) != 2 || got["volume=a"] != 1 || got["volume=b"] != 3 {
		t.Fatalf("series %v, want volume=a 1 and volume=b 3", got)
	}
	if goroutines != 1 {
		t.Fatalf("go_goroutines %d times, want once", goroutines)
	}
}
