//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	corev1 "k8s.io/api/core/v1"
)

// Scenario "sidecar metrics": a pod on the pod network with two podfs
// volumes; the sidecar serves one Prometheus endpoint on its podfs-metrics
// port, scraped from the host at the pod's IP as Prometheus would. A write
// to one volume grows that volume's byte counters and not the other's.
// Wire it into TestE2E with t.Run("16-sidecar-metrics", e.testSidecarMetrics).
func (e *env) testSidecarMetrics(t *testing.T) {
	ns := e.newNamespace(t, "met", "enabled")
	suffix := strings.TrimPrefix(ns, "e2e-met-")
	va, vb := e.podNetVolume(t, "meta-"+suffix), e.podNetVolume(t, "metb-"+suffix)
	_, ca := e.createVolume(t, ns, va, nil)
	_, cb := e.createVolume(t, ns, vb, nil)
	p := e.appPod("app", "sleep 3600")
	p.Spec.HostNetwork = false // the sidecar's port is on the pod's own address
	p = withClaim(p, ca, "/a")
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "b", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: cb}}})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, corev1.VolumeMount{Name: "b", MountPath: "/b"})
	p = e.createPod(t, ns, p)

	var port int32
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		for _, cp := range c.Ports {
			if c.Name == sidecarName && cp.Name == "podfs-metrics" {
				port = cp.ContainerPort
			}
		}
	}
	if port == 0 {
		t.Fatalf("the injected sidecar has no podfs-metrics port")
	}
	if p.Labels["podfs.io/sidecar"] == "" {
		t.Errorf("the injected pod lacks the podfs.io/sidecar label a PodMonitor selects")
	}
	p = e.waitRunning(t, ns, "app")
	if p.Status.PodIP == "" {
		t.Fatal("running pod without an IP")
	}
	url := "http://" + net.JoinHostPort(p.Status.PodIP, strconv.Itoa(int(port))) + "/metrics"

	written := func(vol string) string { return `podfs_fuse_written_bytes_total{volume="` + vol + `"}` }
	put := func(vol string) string { return `podfs_object_bytes_total{direction="put",volume="` + vol + `"}` }
	var before map[string]float64
	poll(t, 30*time.Second, "the sidecar's metrics at "+url, func() (bool, error) {
		m, err := scrapeURL(t, url)
		before = m
		return err == nil && hasAll(m, written("data"), written("b")), nil
	})

	e.mustExec(t, ns, "app", "app", "sh", "-c", "dd if=/dev/urandom of=/a/f bs=1M count=4 2>/dev/null && sync")
	after, err := scrapeURL(t, url)
	if err != nil {
		t.Fatal(err)
	}
	if got := after[written("data")] - before[written("data")]; got < 4<<20 {
		t.Errorf("%s grew by %.0f after a 4 MiB write, want >= %d", written("data"), got, 4<<20)
	}
	if after[put("data")] <= before[put("data")] {
		t.Errorf("%s did not grow after a synced write: %.0f -> %.0f", put("data"), before[put("data")], after[put("data")])
	}
	if after[written("b")] != before[written("b")] {
		t.Errorf("a write to volume data moved %s: %.0f -> %.0f", written("b"), before[written("b")], after[written("b")])
	}
}

func hasAll(m map[string]float64, keys ...string) bool {
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			return false
		}
	}
	return true
}

// scrapeURL reads a Prometheus text endpoint into "name{l1="v1",...}" ->
// value (labels in the order the endpoint writes them, sorted by name).
// scrapeURL fetches url from the pod network: the host has no address
// there, so curl runs in the backends' network namespace, beside the pods.
func scrapeURL(t *testing.T, url string) (map[string]float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	body, err := loadPodNet(t).command(ctx, "curl", "-sSf", "--max-time", "10", url).Output()
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
	}
	var p expfmt.TextParser
	mfs, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		return nil, fmt.Errorf("GET %s: %w", url, err)
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
	return out, nil
}
