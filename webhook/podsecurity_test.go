package webhook

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/sidecar/volumeset"
)

// sidecarOf returns the pod's podfs sidecar.
func sidecarOf(t testing.TB, p *corev1.Pod) *corev1.Container {
	t.Helper()
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		if i := slices.IndexFunc(cs, func(c corev1.Container) bool { return c.Name == volumeset.ContainerName }); i >= 0 {
			return &cs[i]
		}
	}
	t.Fatalf("pod %s has no sidecar: annotations %v", p.Name, p.Annotations)
	return nil
}

// TestKubePodSecurity: the API server's own PodSecurity admission (on by
// default in kube-apiserver v1.33) judges the pod after the webhook injected
// it. On ordinary nodes an injected pod is admitted in a namespace that
// enforces "restricted"; the serverless sidecar is privileged, which such a
// namespace refuses (so the check did see the sidecar), and a pod-level
// runAsNonRoot leaves it startable.
func TestKubePodSecurity(t *testing.T) {
	w := startWorld(t, "image: podfs:psa\nmountOptions: [allow_other]\ncache: {cacheDir: /var/cache/podfs, cacheDirSize: 1Gi}\n", nil)
	ctx, c := w.ctx, w.c
	for ns, injection := range map[string]string{"restricted": "enabled", "restricted-sls": "serverless"} {
		must(t, c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns, Labels: map[string]string{
			volumeset.InjectionLabel:             injection,
			"pod-security.kubernetes.io/enforce": "restricted",
		}}}))
		w.createFixtures(t, ns)
	}

	// The control: the app pod alone is what "restricted" allows, and a
	// privileged container in it is refused.
	bad := podIn(restrictedPod(), "restricted", "control")
	bad.Labels = map[string]string{volumeset.InjectLabel: "false"}
	bad.Spec.Containers[0].SecurityContext.AllowPrivilegeEscalation = ptr(true)
	if err := c.Create(ctx, bad); err == nil || !strings.Contains(err.Error(), "violates PodSecurity") {
		t.Fatalf("PodSecurity admission is not enforcing restricted: %v", err)
	}

	for _, tc := range []struct {
		name string
		pod  *corev1.Pod
	}{
		{"native", restrictedPod()},
		{"container", func() *corev1.Pod {
			p := restrictedPod()
			p.Annotations = map[string]string{AnnPlacement: PlacementContainer}
			return p
		}()},
		{"inline-csi", func() *corev1.Pod {
			p := restrictedPod()
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
				Driver: volumeset.DriverName, VolumeAttributes: map[string]string{AttrMetaURL: "tikv://pd:2379/inline"}}}}}
			return p
		}()},
		{"several-volumes", func() *corev1.Pod {
			p := restrictedPod()
			p.Spec.Volumes = append(p.Spec.Volumes, pvcVol("models", "models"))
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, mount("models", "/models"))
			return p
		}()},
	} {
		t.Run("restricted-"+tc.name, func(t *testing.T) {
			p := podIn(tc.pod, "restricted", "psa-"+tc.name)
			if err := c.Create(ctx, p); err != nil {
				t.Fatalf("injected pod refused in a restricted namespace: %v", err)
			}
			want := PlacementNative
			if tc.name == "container" {
				want = PlacementContainer
			}
			if got := p.Annotations[volumeset.InjectedAnnotation]; got != want {
				t.Fatalf("injected %q, want %q", got, want)
			}
			checkInjected(t, tc.pod, p)
			sc := sidecarOf(t, p)
			if !slices.ContainsFunc(sc.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == "/var/cache/podfs" }) {
				t.Fatalf("no cache emptyDir in the sidecar: %+v", sc.VolumeMounts)
			}
		})
	}
	t.Run("serverless-refused-in-restricted", func(t *testing.T) {
		err := c.Create(ctx, podIn(restrictedPod(), "restricted-sls", "psa-sls"))
		if err == nil || !strings.Contains(err.Error(), "violates PodSecurity") || !strings.Contains(err.Error(), volumeset.ContainerName) {
			t.Fatalf("the privileged serverless sidecar passed restricted: %v", err)
		}
	})
	t.Run("serverless-pod-run-as-non-root", func(t *testing.T) {
		p := podIn(restrictedPod(), "sls", "nonroot")
		must(t, c.Create(ctx, p))
		if p.Annotations[volumeset.InjectedAnnotation] != "native,serverless" {
			t.Fatalf("not injected for serverless: %v", p.Annotations)
		}
		checkInjected(t, restrictedPod(), p)
	})
}

// TestKubeNoServiceAccountToken: nothing the webhook injects mounts a
// service-account token, with the API server's ServiceAccount admission on
// (envtest turns it off by default) — also when a later webhook changes the
// pod, which reinvokes the in-tree plugins after the sidecar was added.
func TestKubeNoServiceAccountToken(t *testing.T) {
	env := &envtest.Environment{BinaryAssetsDirectory: testenv.KubeAssets(t), ControlPlaneStopTimeout: 20e9}
	env.ControlPlane.GetAPIServer().Configure().Disable("disable-admission-plugins")
	cfg, err := env.Start()
	if err != nil {
		t.Fatalf("start envtest: %v", err)
	}
	t.Cleanup(func() {
		if err := env.Stop(); err != nil {
			t.Errorf("stop envtest: %v", err)
		}
	})
	cfg.QPS, cfg.Burst = 500, 1000
	w := startWorldOn(t, &testenv.Kube{Env: env, Config: cfg}, "image: podfs:sa\n", nil, nil)
	ctx, c := w.ctx, w.c
	for _, ns := range []string{"inj", "sls"} {
		must(t, c.Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "default"}}))
	}

	// Another webhook, called after podfs's, that labels every pod.
	other := httptest.NewTLSServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(body, &review); err != nil || review.Request == nil {
			http.Error(rw, "bad review", http.StatusBadRequest)
			return
		}
		var p corev1.Pod
		_ = json.Unmarshal(review.Request.Object.Raw, &p)
		resp := &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
		if p.Labels["touched"] == "" {
			op := map[string]any{"op": "add", "path": "/metadata/labels", "value": map[string]string{"touched": "yes"}}
			if p.Labels != nil {
				op = map[string]any{"op": "add", "path": "/metadata/labels/touched", "value": "yes"}
			}
			resp.Patch, _ = json.Marshal([]any{op})
			pt := admissionv1.PatchTypeJSONPatch
			resp.PatchType = &pt
		}
		review.Response, review.Request = resp, nil
		_ = json.NewEncoder(rw).Encode(&review)
	}))
	t.Cleanup(other.Close)
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: other.Certificate().Raw})
	never := admissionregistrationv1.NeverReinvocationPolicy
	none := admissionregistrationv1.SideEffectClassNone
	url := other.URL + "/"
	must(t, c.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "zz-other"}, // after podfs-webhook
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "other.example.com",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			ReinvocationPolicy:      &never,
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": "sls"}},
		}},
	}))

	for _, tc := range []struct{ ns, name string }{{"inj", "plain"}, {"sls", "reinvoked"}} {
		t.Run(tc.name, func(t *testing.T) {
			p := podIn(pod(nil), tc.ns, tc.name)
			must(t, c.Create(context.Background(), p))
			if tc.ns == "sls" && p.Labels["touched"] != "yes" {
				t.Fatalf("the other webhook did not run: labels %v", p.Labels)
			}
			tokenMount := func(c *corev1.Container) bool {
				return slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool {
					return m.MountPath == "/var/run/secrets/kubernetes.io/serviceaccount"
				})
			}
			if !tokenMount(&p.Spec.Containers[0]) {
				t.Fatalf("ServiceAccount admission did not run: the app has no token mount: %+v", p.Spec.Containers[0].VolumeMounts)
			}
			if sc := sidecarOf(t, p); tokenMount(sc) {
				t.Fatalf("the sidecar mounts a service-account token: %+v", sc.VolumeMounts)
			}
			checkInjected(t, pod(nil), p)
		})
	}
}
