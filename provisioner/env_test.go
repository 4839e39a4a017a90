package provisioner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/fs"
	"podfs.io/podfs/pkg/meta"
)

// world is a real kube-apiserver (envtest) and the metadata clients the
// controllers under test share (a bolt volume is open in one place only).
type world struct {
	t      testing.TB
	ctx    context.Context
	kube   *testenv.Kube
	c      client.Client
	vols   *Volumes
	quotas *recQuotas
	logs   *testenv.SyncBuffer
	now    time.Time
	stop   func() // stops the controller start ran last
	dir    string // for volumes
}

func newWorld(t testing.TB) *world {
	t.Helper()
	k := testenv.StartKube(t)
	scheme := runtime.NewScheme()
	must(t, clientgoscheme.AddToScheme(scheme))
	c, err := client.New(k.Config, client.Options{Scheme: scheme})
	must(t, err)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w := &world{t: t, ctx: ctx, kube: k, c: c, quotas: &recQuotas{}, logs: &testenv.SyncBuffer{},
		now: time.Date(2026, 12, 6, 10, 30, 0, 0, time.UTC)}
	w.vols = &Volumes{OpenTimeout: 5 * time.Second}
	// Volumes outlive subtests: their files go when the test ends, after
	// the clients are closed.
	w.dir = t.TempDir()
	t.Cleanup(func() {
		if err := w.vols.Close(context.Background()); err != nil {
			t.Errorf("close volumes: %v", err)
		}
		if t.Failed() {
			t.Logf("controller log:\n%s", w.logs.String())
		}
	})
	return w
}

// start runs a controller until w.stop is called (or the test ends).
func (w *world) start(tweak ...func(*Options)) *Controller {
	w.t.Helper()
	log := slog.New(slog.NewTextHandler(w.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o := Options{RestConfig: w.kube.Config, Volumes: w.vols, Quotas: w.quotas.of,
		RetryBase: 50 * time.Millisecond, RetryMax: time.Second, Now: func() time.Time { return w.now }, Log: log}
	for _, f := range tweak {
		f(&o)
	}
	ctl, err := New(o)
	must(w.t, err)
	ctx, cancel := context.WithCancel(w.ctx)
	done := make(chan error, 1)
	go func() { done <- ctl.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				w.t.Errorf("controller: %v", err)
			}
		})
	}
	w.t.Cleanup(stop)
	w.stop = stop
	return ctl
}

// recQuotas records every SetQuota and passes it on to the volume's client.
type recQuotas struct {
	mu    sync.Mutex
	calls []quotaCall
}

type quotaCall struct {
	dir      meta.Ino
	maxBytes uint64
}

func (r *recQuotas) of(m meta.Meta) Quotas { return quotaRecorder{r: r, next: MetaQuotas(m)} }

type quotaRecorder struct {
	r    *recQuotas
	next Quotas
}

func (q quotaRecorder) SetQuota(ctx context.Context, dir meta.Ino, maxBytes, maxInodes uint64) error {
	q.r.mu.Lock()
	q.r.calls = append(q.r.calls, quotaCall{dir, maxBytes})
	q.r.mu.Unlock()
	return q.next.SetQuota(ctx, dir, maxBytes, maxInodes)
}

// checkQuota checks that the last quota set on dir is want bytes and,
// where the volume's client reports a directory's statfs (pkg/meta's
// directory quotas), that it shows want as the directory's size.
func (w *world) checkQuota(m meta.Meta, dir meta.Ino, want uint64) {
	w.t.Helper()
	if q, ok := w.quotas.last(dir); !ok || q != want {
		w.t.Errorf("quota of inode %d: %d (set %v), want %d", dir, q, ok, want)
	}
	sd, ok := m.(interface {
		StatFSDir(context.Context, meta.Ino) (meta.StatFS, error)
	})
	if !ok {
		return
	}
	st, err := sd.StatFSDir(w.ctx, dir)
	if err != nil || st.TotalSpace != want {
		w.t.Errorf("statfs of inode %d: total %d, %v; want the quota %d", dir, st.TotalSpace, err, want)
	}
}

// last returns the last quota set on dir.
func (r *recQuotas) last(dir meta.Ino) (uint64, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i := len(r.calls) - 1; i >= 0; i-- {
		if r.calls[i].dir == dir {
			return r.calls[i].maxBytes, true
		}
	}
	return 0, false
}

// volume is a bolt-backed podfs volume in a temp dir with file storage,
// and the provisioner Secret pointing at it.
type testVolume struct {
	metaURL, storageURL string
}

func (w *world) newVolume() testVolume {
	dir, err := os.MkdirTemp(w.dir, "vol-")
	must(w.t, err)
	return testVolume{metaURL: "bolt://" + filepath.Join(dir, "meta.db"), storageURL: "file://" + filepath.Join(dir, "data")}
}

// namespace makes a namespace with a Secret "podfs" for v (format on first use).
func (w *world) namespace(name string, v testVolume) {
	w.t.Helper()
	must(w.t, w.c.Create(w.ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}}))
	if v.metaURL != "" {
		w.secret(name, "podfs", map[string]string{KeyMetaURL: v.metaURL, KeyStorageURL: v.storageURL, KeyFormat: "true", KeyName: "vol"})
	}
}

func (w *world) secret(ns, name string, data map[string]string) {
	w.t.Helper()
	s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, StringData: data}
	must(w.t, w.c.Create(w.ctx, s))
}

// class makes a podfs StorageClass whose Secrets are "podfs" in the claim's namespace.
func (w *world) class(name string, extra map[string]string, edit func(*storagev1.StorageClass)) {
	w.t.Helper()
	params := map[string]string{ParamSecretName: "podfs", ParamSecretNamespace: "${pvc.namespace}"}
	for k, v := range extra {
		params[k] = v
	}
	sc := &storagev1.StorageClass{ObjectMeta: metav1.ObjectMeta{Name: name}, Provisioner: DriverName, Parameters: params}
	if edit != nil {
		edit(sc)
	}
	must(w.t, w.c.Create(w.ctx, sc))
}

func (w *world) claim(ns, name, class, size string, mode corev1.PersistentVolumeAccessMode, edit func(*corev1.PersistentVolumeClaim)) *corev1.PersistentVolumeClaim {
	w.t.Helper()
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.PersistentVolumeClaimSpec{
			StorageClassName: &class,
			AccessModes:      []corev1.PersistentVolumeAccessMode{mode},
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse(size)}},
		},
	}
	if edit != nil {
		edit(pvc)
	}
	must(w.t, w.c.Create(w.ctx, pvc))
	return pvc
}

// waitPV waits for the claim's PV.
func (w *world) waitPV(pvc *corev1.PersistentVolumeClaim) *corev1.PersistentVolume {
	w.t.Helper()
	var pv corev1.PersistentVolume
	testenv.Poll(w.t, "PV of "+pvc.Name, 30*time.Second, func() error {
		return w.c.Get(w.ctx, types.NamespacedName{Name: PVName(pvc)}, &pv)
	})
	return &pv
}

// waitEvent waits for an event of reason on the object and returns its message.
func (w *world) waitEvent(ns, object, reason string) string {
	w.t.Helper()
	var msg string
	testenv.Poll(w.t, reason+" event on "+object, 30*time.Second, func() error {
		var list corev1.EventList
		if err := w.c.List(w.ctx, &list, client.InNamespace(ns)); err != nil {
			return err
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Name == object && e.Reason == reason {
				msg = e.Message
				return nil
			}
		}
		return fmt.Errorf("no %s event", reason)
	})
	return msg
}

func (w *world) noPV(pvc *corev1.PersistentVolumeClaim) {
	w.t.Helper()
	var pv corev1.PersistentVolume
	if err := w.c.Get(w.ctx, types.NamespacedName{Name: PVName(pvc)}, &pv); !apierrors.IsNotFound(err) {
		w.t.Errorf("claim %s has a PV (%v), want none", pvc.Name, err)
	}
}

// format formats v as the controller would on first use, and returns its client.
func (w *world) format(v testVolume) meta.Meta {
	w.t.Helper()
	m, _, err := w.vols.get(w.ctx, &volumeSecret{MetaURL: v.metaURL, StorageURL: v.storageURL, Format: &fs.FormatOptions{Name: "vol"}})
	must(w.t, err)
	return m
}

// meta returns the shared client of v (the one the controller uses).
func (w *world) meta(v testVolume) meta.Meta {
	w.t.Helper()
	vol, err := w.vols.client(w.ctx, v.metaURL, true)
	must(w.t, err)
	return vol.m
}

// waitLog waits for a log line holding every one of parts.
func (w *world) waitLog(parts ...string) {
	w.t.Helper()
	testenv.Poll(w.t, fmt.Sprintf("log line with %q", parts), 30*time.Second, func() error {
		for _, line := range strings.Split(w.logs.String(), "\n") {
			all := true
			for _, p := range parts {
				all = all && strings.Contains(line, p)
			}
			if all {
				return nil
			}
		}
		return errors.New("not logged")
	})
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// client returns url's connected client (tests).
func (vs *Volumes) client(ctx context.Context, url string, create bool) (*volume, error) {
	v := vs.entry(url)
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := vs.connect(ctx, v, url, create); err != nil {
		return nil, err
	}
	return v, nil
}
