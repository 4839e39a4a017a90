package provisioner

import (
	"net/http"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/fs"
)

// TestRestartMidCreate leaves what a controller killed half-way through
// provisioning leaves (one claim's directory made and in place, another's
// still under its temporary name; no PVs), then starts a new controller:
// it must finish both with the directories already there, not new ones.
func TestRestartMidCreate(t *testing.T) {
	w := newWorld(t)
	v := w.newVolume()
	w.namespace("restart", v)
	w.class("podfs-restart", nil, nil)
	a := w.claim("restart", "a", "podfs-restart", "1Gi", corev1.ReadWriteMany, nil)
	b := w.claim("restart", "b", "podfs-restart", "2Gi", corev1.ReadWriteMany, nil)

	// What the first controller got done before it died.
	m, _, err := w.vols.get(w.ctx, &volumeSecret{MetaURL: v.metaURL, StorageURL: v.storageURL, Format: &fs.FormatOptions{Name: "vol"}})
	must(t, err)
	dirA, err := ensureClaimDir(w.ctx, m, w.quotas.of(m), "restart/a", string(a.UID), 1<<30)
	must(t, err)
	parent := w.dirIno(m, "restart")
	tmpB, _, err := m.Mkdir(w.ctx, parent, tmpPrefix+string(b.UID), claimMode, 0, 0)
	must(t, err)
	must(t, m.SetXattr(w.ctx, tmpB, ownerXattr, []byte(b.UID), 0))

	w.start()
	w.waitPV(a)
	w.waitPV(b)
	if got := w.claimDir(m, "restart/a", a.UID); got != dirA.ino {
		t.Errorf("claim a got directory inode %d, want the one made before the restart, %d", got, dirA.ino)
	}
	if got := w.claimDir(m, "restart/b", b.UID); got != tmpB {
		t.Errorf("claim b got directory inode %d, want the one made before the restart, %d", got, tmpB)
	}
	w.checkQuota(m, tmpB, 2<<30)
	ents, err := m.Readdir(w.ctx, parent, "", 100)
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "a,b" {
		t.Errorf("restart/ holds %v, want exactly a and b", names)
	}
}

// TestLeaderElection runs two replicas with leader election: one leads
// (holding the Lease) and provisions; the other waits.
func TestLeaderElection(t *testing.T) {
	w := newWorld(t)
	must(t, w.c.Create(w.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "podfs-system"}}))
	var health []string
	elect := func(o *Options) {
		o.LeaderElection, o.LeaderElectionNamespace = true, "podfs-system"
		o.HealthAddr = testenv.Addr(testenv.FreePort(t))
		health = append(health, o.HealthAddr)
	}
	first := w.start(elect)
	second := w.start(elect)
	var other *Controller
	select {
	case <-first.Elected():
		other = second
	case <-second.Elected():
		other = first
	case <-time.After(60 * time.Second):
		t.Fatal("no replica became leader within 60 s")
	}
	var lease coordinationv1.Lease
	must(t, w.c.Get(w.ctx, types.NamespacedName{Namespace: "podfs-system", Name: "podfs-controller"}, &lease))
	if lease.Spec.HolderIdentity == nil || *lease.Spec.HolderIdentity == "" {
		t.Errorf("Lease podfs-controller has no holder: %+v", lease.Spec)
	}
	v := w.newVolume()
	w.namespace("elected", v)
	w.class("podfs-elected", nil, nil)
	w.waitPV(w.claim("elected", "data", "podfs-elected", "1Gi", corev1.ReadWriteMany, nil))
	select {
	case <-other.Elected():
		t.Error("both replicas lead")
	default:
	}
	// Both answer their probes, the waiting one too.
	for _, addr := range health {
		for _, path := range []string{"/healthz", "/readyz"} {
			resp, err := http.Get("http://" + addr + path)
			if err != nil {
				t.Errorf("%s%s: %v", addr, path, err)
				continue
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("%s%s: %s", addr, path, resp.Status)
			}
		}
	}
}
