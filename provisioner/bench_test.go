package provisioner

import (
	"fmt"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
)

// BenchmarkProvision measures claim-create to PV-created on a real API
// server and a bolt volume (go test -run ^$ -bench Provision ./provisioner/).
// It excludes binding, which kube-controller-manager does.
func BenchmarkProvision(b *testing.B) {
	b.StopTimer()
	w := newWorld(b)
	w.namespace("bench", w.newVolume())
	w.class("podfs-bench", nil, nil)
	w.start()
	var d []time.Duration
	b.StartTimer()
	for i := range b.N {
		start := time.Now()
		pvc := w.claim("bench", fmt.Sprintf("c-%d", i), "podfs-bench", "1Gi", corev1.ReadWriteMany, nil)
		var pv corev1.PersistentVolume
		for w.c.Get(w.ctx, types.NamespacedName{Name: PVName(pvc)}, &pv) != nil { // a fine-grained poll: the figure is the point
			if time.Since(start) > 30*time.Second {
				b.Fatal("no PV after 30 s")
			}
			time.Sleep(time.Millisecond)
		}
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "ms-median")
	b.ReportMetric(float64(d[len(d)*9/10].Microseconds())/1000, "ms-p90")
}
