package webhook

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

const (
	whNamespace = "podfs-system"
	whConfigMap = "podfs-webhook"
	whMWC       = "podfs-webhook"
	whCASecret  = "podfs-webhook-ca"
)

// kubeWorld is a real API server with the podfs webhook registered and
// serving, and namespaces inj (enabled), sls (serverless), plain (none).
type kubeWorld struct {
	c      client.Client
	srv    *Server
	health string
	ctx    context.Context
	url    string
}

func newClient(t testing.TB, k *testenv.Kube) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c, err := client.New(k.Config, client.Options{Scheme: scheme})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func startWorld(t testing.TB, config string, log *slog.Logger) *kubeWorld {
	return startWorldAs(t, config, log, nil)
}

// tweakOptions, when set by a test, edits the server's Options.
type tweakOptions func(k *testenv.Kube, c client.Client, o *Options)

// startWorldAs is startWorld with the webhook running under the identity
// asUser returns (nil: the admin).
func startWorldAs(t testing.TB, config string, log *slog.Logger, asUser func(k *testenv.Kube, c client.Client) *rest.Config, tweak ...tweakOptions) *kubeWorld {
	return startWorldOn(t, testenv.StartKube(t), config, log, asUser, tweak...)
}

// startWorldOn is startWorldAs on an API server the caller started.
func startWorldOn(t testing.TB, k *testenv.Kube, config string, log *slog.Logger, asUser func(k *testenv.Kube, c client.Client) *rest.Config, tweak ...tweakOptions) *kubeWorld {
	c := newClient(t, k)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	for ns, label := range map[string]string{whNamespace: "", "inj": "enabled", "sls": "serverless", "plain": ""} {
		n := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if label != "" {
			n.Labels = map[string]string{volumeset.InjectionLabel: label}
		}
		must(t, c.Create(ctx, n))
	}
	must(t, c.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: whNamespace, Name: whConfigMap},
		Data: map[string]string{ConfigKey: config}}))

	port := testenv.FreePort(t)
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	ifNeeded := admissionregistrationv1.IfNeededReinvocationPolicy
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, MutatePath)
	must(t, c.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: whMWC},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "pods.podfs.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			ReinvocationPolicy:      &ifNeeded,
			TimeoutSeconds:          ptr(int32(10)),
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: volumeset.InjectionLabel, Operator: metav1.LabelSelectorOpIn, Values: []string{"enabled", "serverless"}}}},
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: volumeset.InjectLabel, Operator: metav1.LabelSelectorOpNotIn, Values: []string{"false"}}}},
		}},
	}))

	whConfig := k.Config
	if asUser != nil {
		whConfig = asUser(k, c)
	}
	health := testenv.Addr(testenv.FreePort(t))
	if log == nil {
		log = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	opts := Options{
		RestConfig: whConfig, Namespace: whNamespace, ConfigMapName: whConfigMap, DefaultImage: "podfs:default",
		Host: "127.0.0.1", Port: port, CASecretName: whCASecret, WebhookConfig: whMWC,
		IPs: []net.IP{net.ParseIP("127.0.0.1")}, NativeSidecar: "auto",
		MetricsAddr: testenv.Addr(testenv.FreePort(t)), HealthAddr: health, AppsDone: true, Log: log,
		LeaderElection: true, LeaseDuration: 15 * time.Second, RenewDeadline: 10 * time.Second, RetryPeriod: 250 * time.Millisecond,
	}
	for _, f := range tweak {
		f(k, c, &opts)
	}
	srv, err := NewServer(ctx, opts)
	must(t, err)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})
	testenv.Poll(t, "webhook ready", 30*time.Second, func() error {
		select {
		case err := <-done:
			t.Fatalf("webhook server stopped: %v", err)
		default:
		}
		r, err := http.Get("http://" + health + "/readyz")
		if err != nil {
			return err
		}
		r.Body.Close()
		if r.StatusCode != 200 {
			return fmt.Errorf("readyz %d", r.StatusCode)
		}
		return nil
	})
	w := &kubeWorld{c: c, srv: srv, health: health, ctx: ctx, url: url}
	w.createFixtures(t, "inj")
	w.createFixtures(t, "sls")
	w.createFixtures(t, "plain")
	return w
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// createFixtures creates the fixture PVs, PVCs (bound through their status,
// as the PV controller would) and Secret in namespace ns.
func (w *kubeWorld) createFixtures(t testing.TB, ns string) {
	t.Helper()
	ctx, c := w.ctx, w.c
	lk := fixtureLookup()
	must(t, c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "podfs-creds"},
		StringData: map[string]string{"meta": "tikv://pd:2379/models", "storage": "rados://models"}}))
	for _, class := range lk.classes {
		if ns == "inj" {
			must(t, c.Create(ctx, class.DeepCopy()))
		}
	}
	for key, pvc := range lk.pvcs {
		pvc = pvc.DeepCopy()
		pvc.Namespace = ns
		status := pvc.Status
		if pvc.Spec.VolumeName != "" {
			if pv, ok := lk.pvs[pvc.Spec.VolumeName]; ok {
				pv = pv.DeepCopy()
				pv.Name = ns + "-" + pv.Name
				if ref := pv.Spec.CSI.NodePublishSecretRef; ref != nil && ref.Namespace == "apps" {
					ref.Namespace = ns
				}
				pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: pvc.Name}
				must(t, c.Create(ctx, pv))
				pv.Status.Phase = corev1.VolumeBound
				must(t, c.Status().Update(ctx, pv))
			}
			pvc.Spec.VolumeName = ns + "-" + pvc.Spec.VolumeName
		}
		must(t, c.Create(ctx, pvc))
		pvc.Status = status
		must(t, c.Status().Update(ctx, pvc))
		_ = key
	}
}

// podIn copies p into namespace ns with a fresh name.
func podIn(p *corev1.Pod, ns, name string) *corev1.Pod {
	p = p.DeepCopy()
	p.Namespace, p.Name, p.GenerateName, p.OwnerReferences = ns, name, "", nil
	return p
}

func TestKubeAdmission(t *testing.T) {
	w := startWorld(t, "image: podfs:from-configmap\nmountOptions: [allow_other]\n", nil)
	ctx, c := w.ctx, w.c
	if !w.srv.Handler.Native {
		t.Fatal("API server v1.33 detected as without native sidecars")
	}
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	must(t, c.Get(ctx, types.NamespacedName{Name: whMWC}, &mwc))
	if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Fatal("caBundle not patched into the MutatingWebhookConfiguration")
	}

	t.Run("injected-in-labelled-namespace", func(t *testing.T) {
		p := podIn(pod(nil), "inj", "bare")
		must(t, c.Create(ctx, p))
		if p.Annotations[volumeset.InjectedAnnotation] != "native" {
			t.Fatalf("pod not injected: annotations %v", p.Annotations)
		}
		if len(p.Spec.InitContainers) != 1 || p.Spec.InitContainers[0].Name != volumeset.ContainerName || p.Spec.InitContainers[0].Image != "podfs:from-configmap" {
			t.Fatalf("sidecar missing or wrong: %+v", p.Spec.InitContainers)
		}
		checkInjected(t, pod(nil), p)
	})
	t.Run("untouched-elsewhere", func(t *testing.T) {
		p := podIn(pod(nil), "plain", "bare")
		must(t, c.Create(ctx, p))
		if len(p.Spec.InitContainers) != 0 || p.Annotations[volumeset.InjectedAnnotation] != "" {
			t.Fatalf("pod in an unlabelled namespace was changed: %+v", p)
		}
	})
	t.Run("opted-out", func(t *testing.T) {
		p := podIn(pod(nil), "inj", "opted-out")
		p.Labels = map[string]string{volumeset.InjectLabel: "false"}
		must(t, c.Create(ctx, p))
		if len(p.Spec.InitContainers) != 0 {
			t.Fatalf("opted-out pod injected")
		}
	})
	t.Run("serverless", func(t *testing.T) {
		p := podIn(pod(nil), "sls", "bare")
		must(t, c.Create(ctx, p))
		if p.Spec.Volumes[0].EmptyDir == nil || p.Annotations[volumeset.InjectedAnnotation] != "native,serverless" {
			t.Fatalf("serverless pod: volumes %+v annotations %v", p.Spec.Volumes, p.Annotations)
		}
	})
	t.Run("refused-with-reason", func(t *testing.T) {
		// A serverless sidecar must see the claim bound at admission.
		p := podIn(pod(nil), "sls", "missing")
		p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "nope"
		err := c.Create(ctx, p)
		if err == nil || !strings.Contains(err.Error(), `volume "data": PersistentVolumeClaim sls/nope does not exist: on serverless nodes`) {
			t.Fatalf("want a refusal naming the PVC, got %v", err)
		}
	})
	t.Run("claim-not-yet-created", func(t *testing.T) {
		// On an ordinary node the sidecar learns the PV from the CSI node.
		p := podIn(pod(nil), "inj", "early")
		p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "later"
		must(t, c.Create(ctx, p))
		i := slices.IndexFunc(p.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == volumeset.ContainerName })
		if i < 0 {
			t.Fatalf("pod with a claim not created yet got no sidecar: %+v", p.Spec.InitContainers)
		}
		var set *volumeset.VolumeSet
		for _, e := range p.Spec.InitContainers[i].Env {
			if e.Name == volumeset.EnvVar {
				var err error
				if set, err = volumeset.Decode(e.Value); err != nil {
					t.Fatal(err)
				}
			}
		}
		if set == nil || len(set.Volumes) != 1 || set.Volumes[0].Claim != "later" || set.Volumes[0].Handoff != "" {
			t.Fatalf("volume set %+v, want the claim %q to be resolved by the CSI node", set, "later")
		}
	})
	// Every shape of the table test goes through the real webhook (native)
	// and, patched by hand with the non-native mutation, through the API
	// server's validation.
	t.Run("all-shapes-validate", func(t *testing.T) {
		lk := &CachedLookup{Cache: c}
		for i, tc := range mutateCases() {
			if tc.refuse != "" {
				continue
			}
			ns := "inj"
			if tc.serverless {
				ns = "sls"
			}
			p := podIn(tc.pod, ns, fmt.Sprintf("shape-%d", i))
			if err := c.Create(ctx, p); err != nil {
				t.Errorf("%s: create through the webhook: %v", tc.name, err)
				continue
			}
			if !tc.noPatch {
				checkInjected(t, tc.pod, p)
			}
			q := podIn(tc.pod, "plain", fmt.Sprintf("shape-%d", i))
			ops, err := Mutate(ctx, lk, Input{Pod: q, Namespace: "plain", Native: false, Serverless: tc.serverless, Config: w.srv.Config()})
			if err != nil {
				if strings.Contains(err.Error(), "native sidecar") {
					continue // refused without native sidecars, by design
				}
				t.Errorf("%s: non-native mutation: %v", tc.name, err)
				continue
			}
			if ops == nil {
				continue
			}
			q = applyOps(t, q, ops)
			if err := c.Create(ctx, q); err != nil {
				t.Errorf("%s: the API server rejects the non-native patched pod: %v", tc.name, err)
			}
		}
	})
	t.Run("config-reload", func(t *testing.T) {
		var cm corev1.ConfigMap
		must(t, c.Get(ctx, types.NamespacedName{Namespace: whNamespace, Name: whConfigMap}, &cm))
		cm.Data[ConfigKey] = "image: [not, a, string]\n"
		must(t, c.Update(ctx, &cm))
		testenv.Poll(t, "InvalidConfig event", 20*time.Second, func() error {
			var evs corev1.EventList
			if err := c.List(ctx, &evs, client.InNamespace(whNamespace)); err != nil {
				return err
			}
			if slices.ContainsFunc(evs.Items, func(e corev1.Event) bool { return e.Reason == "InvalidConfig" }) {
				return nil
			}
			return fmt.Errorf("no InvalidConfig event among %d", len(evs.Items))
		})
		if img := w.srv.Config().Image; img != "podfs:from-configmap" {
			t.Fatalf("invalid ConfigMap replaced the configuration: image %q", img)
		}
		must(t, c.Get(ctx, types.NamespacedName{Namespace: whNamespace, Name: whConfigMap}, &cm))
		cm.Data[ConfigKey] = "image: podfs:v2\n"
		must(t, c.Update(ctx, &cm))
		testenv.Poll(t, "new configuration", 20*time.Second, func() error {
			if img := w.srv.Config().Image; img != "podfs:v2" {
				return fmt.Errorf("image %q", img)
			}
			return nil
		})
		p := podIn(pod(nil), "inj", "after-reload")
		must(t, c.Create(ctx, p))
		if p.Spec.InitContainers[0].Image != "podfs:v2" {
			t.Fatalf("sidecar image %q after reload", p.Spec.InitContainers[0].Image)
		}
	})
	t.Run("apps-done", func(t *testing.T) {
		// A pod injected on a cluster without native sidecars, as the
		// non-native mutation leaves it.
		lk := &CachedLookup{Cache: c}
		q := podIn(pod(func(p *corev1.Pod) { p.Spec.RestartPolicy = corev1.RestartPolicyNever }), "plain", "job-1")
		ops, err := Mutate(ctx, lk, Input{Pod: q, Namespace: "plain", Config: w.srv.Config()})
		must(t, err)
		q = applyOps(t, q, ops)
		must(t, c.Create(ctx, q))
		now := metav1.Now()
		q.Status.Phase = corev1.PodRunning
		q.Status.ContainerStatuses = []corev1.ContainerStatus{
			{Name: volumeset.ContainerName, Image: "podfs", ImageID: "x", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
			{Name: "app", Image: "busybox", ImageID: "y", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}}},
		}
		must(t, c.Status().Update(ctx, q))
		// Still running: no signal. Controllers see the update within
		// milliseconds; poll the opposite below for the real transition.
		must(t, c.Get(ctx, client.ObjectKeyFromObject(q), q))
		q.Status.ContainerStatuses[1].State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, StartedAt: now, FinishedAt: now}}
		must(t, c.Status().Update(ctx, q))
		testenv.Poll(t, "apps-done annotation", 20*time.Second, func() error {
			if err := c.Get(ctx, client.ObjectKeyFromObject(q), q); err != nil {
				return err
			}
			if q.Annotations[volumeset.AppsDoneAnnotation] != "true" {
				return fmt.Errorf("annotations %v", q.Annotations)
			}
			return nil
		})
	})
	t.Run("metrics", func(t *testing.T) {
		// The handler counted the admissions above.
		var n int
		for _, r := range []string{"injected", "refused"} {
			if v := testutil.ToFloat64(w.srv.Handler.Metrics.Admissions.WithLabelValues(r)); v > 0 {
				n++
			}
		}
		if n != 2 {
			t.Fatal("admission metrics did not count injections and refusals")
		}
	})
}

func TestKubeCertificates(t *testing.T) {
	k := testenv.StartKube(t)
	c := newClient(t, k)
	ctx := context.Background()
	must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: whNamespace}}))
	now := time.Now()
	clock := func() time.Time { return now }
	a := &CertManager{Client: c, SecretNamespace: whNamespace, SecretName: whCASecret, IPs: []net.IP{net.ParseIP("127.0.0.1")},
		CAValidity: 30 * 24 * time.Hour, CertValidity: 24 * time.Hour, Now: clock}
	b := &CertManager{Client: c, SecretNamespace: whNamespace, SecretName: whCASecret, IPs: []net.IP{net.ParseIP("127.0.0.1")},
		CAValidity: 30 * 24 * time.Hour, CertValidity: 24 * time.Hour, Now: clock}
	must(t, a.Ensure(ctx))
	must(t, b.Ensure(ctx))
	if string(a.CABundle()) != string(b.CABundle()) {
		t.Fatal("two replicas made different CAs")
	}
	verify := func(m *CertManager, bundle []byte) error {
		cert, err := m.GetCertificate(nil)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(bundle)
		_, err = cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, CurrentTime: now})
		return err
	}
	must(t, verify(b, a.CABundle()))
	first, _ := a.GetCertificate(nil)

	// 17 hours in, less than a third of the serving certificate's day is left.
	now = now.Add(17 * time.Hour)
	must(t, a.Ensure(ctx))
	renewed, _ := a.GetCertificate(nil)
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Fatal("serving certificate not renewed before expiry")
	}
	// 21 days in, the CA is due: it rotates, and the bundle keeps the old
	// CA so replicas still serving old certificates verify.
	now = now.Add(21 * 24 * time.Hour)
	must(t, a.Ensure(ctx))
	must(t, b.Ensure(ctx))
	if n := strings.Count(string(a.CABundle()), "BEGIN CERTIFICATE"); n != 2 {
		t.Fatalf("rotated bundle holds %d certificates, want old and new", n)
	}
	must(t, verify(a, b.CABundle()))
	must(t, verify(b, a.CABundle()))

	// Served over TLS with the bundle as the only root.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(a.CABundle())
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{GetCertificate: a.GetCertificate})
	must(t, err)
	defer l.Close()
	go func() {
		conn, err := l.Accept()
		if err == nil {
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", l.Addr().String(), &tls.Config{RootCAs: pool, Time: clock})
	must(t, err)
	conn.Close()
}

// TestKubeChartRBAC runs the webhook with only the permissions the Helm
// chart grants (no Secrets, no pods): the CA stays in memory, the apps-done
// controller is off, and injection works.
func TestKubeChartRBAC(t *testing.T) {
	w := startWorldAs(t, "image: podfs:rbac\n", nil, chartUser(t))
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	must(t, w.c.Get(w.ctx, types.NamespacedName{Name: whMWC}, &mwc))
	if len(mwc.Webhooks[0].ClientConfig.CABundle) == 0 {
		t.Fatal("caBundle not patched")
	}
	p := podIn(pod(nil), "inj", "rbac")
	must(t, w.c.Create(w.ctx, p))
	if p.Annotations[volumeset.InjectedAnnotation] != "native" || p.Spec.InitContainers[0].Image != "podfs:rbac" {
		t.Fatalf("not injected with the ConfigMap's image: %v %+v", p.Annotations, p.Spec.InitContainers)
	}
}

// TestKubeMountedCerts serves certificates from files (cert-manager's way,
// --cert-dir), the caBundle put into the webhook configuration by someone
// else, and a renewed certificate is picked up without a restart; by
// controller-runtime's server and by PortServer (--reuse-port).
func TestKubeMountedCerts(t *testing.T) {
	t.Run("default-server", func(t *testing.T) { testMountedCerts(t, false) })
	t.Run("reuse-port", func(t *testing.T) { testMountedCerts(t, true) })
}

func testMountedCerts(t *testing.T, reusePort bool) {
	certDir := t.TempDir()
	issuer := &CertManager{IPs: []net.IP{net.ParseIP("127.0.0.1")}}
	issuer.defaults()
	certPEM, keyPEM, err := issuer.newCA()
	must(t, err)
	ca, key, bundle, err := parseCASecret(&corev1.Secret{Data: map[string][]byte{caCertKey: certPEM, caKeyKey: keyPEM}})
	must(t, err)
	issuer.ca, issuer.caKey, issuer.bundle = ca, key, bundle
	writeCert := func() *x509.Certificate {
		must(t, issuer.issue())
		c, _ := issuer.GetCertificate(nil)
		kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
		must(t, err)
		must(t, os.WriteFile(certDir+"/tls.key.new", pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
		must(t, os.WriteFile(certDir+"/tls.crt.new", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644))
		must(t, os.Rename(certDir+"/tls.key.new", certDir+"/tls.key"))
		must(t, os.Rename(certDir+"/tls.crt.new", certDir+"/tls.crt"))
		return c.Leaf
	}
	first := writeCert()
	w := startWorldAs(t, "image: podfs:mounted\n", nil, nil, func(k *testenv.Kube, c client.Client, o *Options) {
		o.CertDir, o.CASecretName, o.ReusePort = certDir, "", reusePort
		var mwc admissionregistrationv1.MutatingWebhookConfiguration
		must(t, c.Get(context.Background(), types.NamespacedName{Name: whMWC}, &mwc))
		mwc.Webhooks[0].ClientConfig.CABundle = bundle
		must(t, c.Update(context.Background(), &mwc))
	})
	if w.srv.Certs != nil {
		t.Fatal("self-managed certificates despite --cert-dir")
	}
	p := podIn(pod(nil), "inj", "mounted")
	must(t, w.c.Create(w.ctx, p))
	if p.Annotations[volumeset.InjectedAnnotation] != "native" {
		t.Fatalf("not injected: %v", p.Annotations)
	}
	served := func() *x509.Certificate {
		u, _ := url.Parse(w.url)
		conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			return nil
		}
		defer conn.Close()
		return conn.ConnectionState().PeerCertificates[0]
	}
	if c := served(); c == nil || c.SerialNumber.Cmp(first.SerialNumber) != 0 {
		t.Fatal("the server does not serve the mounted certificate")
	}
	second := writeCert()
	testenv.Poll(t, "renewed certificate served", 30*time.Second, func() error {
		if c := served(); c == nil || c.SerialNumber.Cmp(second.SerialNumber) != 0 {
			return fmt.Errorf("still the old certificate")
		}
		return nil
	})
}
