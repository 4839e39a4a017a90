package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"math/rand/v2"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"

	"podfs.io/podfs/sidecar/volumeset"
)

// randomPod builds a pod from seed: a mix of podfs and other volumes
// (existing, missing, unbound, inline), containers and init containers
// mounting them in every way, istio-proxy, native sidecars, tuning
// annotations (valid and not), opt-out labels, virtual-kubelet targeting.
func randomPod(seed uint64) *corev1.Pod {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	pick := func(xs ...string) string { return xs[r.IntN(len(xs))] }
	p := &corev1.Pod{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"}, ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "apps"}}
	if r.IntN(8) == 0 {
		p.Labels = map[string]string{volumeset.InjectLabel: pick("false", "true", "")}
	}
	nann := 0
	if r.IntN(3) == 0 {
		nann = 1 + r.IntN(3)
	}
	for range nann {
		if p.Annotations == nil {
			p.Annotations = map[string]string{}
		}
		p.Annotations[pick(AnnCPURequest, AnnCPULimit, AnnMemoryRequest, AnnMemoryLimit, AnnMountOptions, volumeset.InjectedAnnotation, "x/y~z")] =
			pick("", "100m", "2", "1Gi", "-1", "lots", "a,b=c", "a b", ",,", "0", "1e3", "∞")
	}
	nvol := r.IntN(5)
	var names []string
	for i := range nvol {
		name := pick("data", "models", "cfg", "scratch", "podfs-run", "podfs-cache", "podfs-podinfo", "x") + strings.Repeat("1", i%2)
		names = append(names, name)
		v := corev1.Volume{Name: name}
		switch r.IntN(5) {
		case 0, 1:
			claim := pick("shared", "models", "ebs", "local-wffc", "data-web-0", "data-web-1")
			if r.IntN(6) == 0 {
				claim = pick("nope", "pending", "cross-ns", "no-meta", "dangling", "bad-subdir")
			}
			v.PersistentVolumeClaim = &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim, ReadOnly: r.IntN(2) == 0}
		case 2:
			attrs := map[string]string{AttrMetaURL: "bolt:///x.db"}
			for range r.IntN(3) {
				attrs[pick(AttrMetaURL, AttrMetaURLSecretKey, AttrStorageURL, AttrStorageURLSecret, AttrSubDir, AttrMountOptions)] = pick("bolt:///x.db", "meta", "a/b", "../x", "/", "o1,o2", "o 1", "")
			}
			v.CSI = &corev1.CSIVolumeSource{Driver: pick(volumeset.DriverName, "other.csi"), VolumeAttributes: attrs}
			if r.IntN(2) == 0 {
				v.CSI.NodePublishSecretRef = &corev1.LocalObjectReference{Name: "s"}
			}
		case 3:
			v.EmptyDir = &corev1.EmptyDirVolumeSource{}
		case 4:
			class := pick("podfs", "local-path", "")
			v.Ephemeral = &corev1.EphemeralVolumeSource{VolumeClaimTemplate: &corev1.PersistentVolumeClaimTemplate{Spec: corev1.PersistentVolumeClaimSpec{StorageClassName: &class}}}
		}
		p.Spec.Volumes = append(p.Spec.Volumes, v)
	}
	always := corev1.ContainerRestartPolicyAlways
	container := func() corev1.Container {
		c := corev1.Container{Name: pick("app", "istio-proxy", "istio-init", "side", volumeset.ContainerName, "init") + string(rune('a'+r.IntN(3))), Image: "i"}
		if r.IntN(6) == 0 {
			c.Name = pick("istio-proxy", volumeset.ContainerName)
		}
		for range r.IntN(3) {
			if len(names) == 0 {
				break
			}
			m := corev1.VolumeMount{Name: names[r.IntN(len(names))], MountPath: "/m" + string(rune('a'+r.IntN(26))), ReadOnly: r.IntN(2) == 0, SubPath: pick("", "sub")}
			if r.IntN(3) == 0 {
				mp := corev1.MountPropagationMode(pick("None", "HostToContainer", "Bidirectional"))
				m.MountPropagation = &mp
			}
			c.VolumeMounts = append(c.VolumeMounts, m)
		}
		return c
	}
	for range 1 + r.IntN(3) {
		p.Spec.Containers = append(p.Spec.Containers, container())
	}
	for range r.IntN(3) {
		c := container()
		if r.IntN(2) == 0 {
			c.RestartPolicy = &always
		}
		p.Spec.InitContainers = append(p.Spec.InitContainers, c)
	}
	switch r.IntN(5) {
	case 0:
		p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists}}
	case 1:
		p.Spec.NodeSelector = map[string]string{"type": "virtual-kubelet"}
	case 2:
		p.Spec.HostNetwork = true
	}
	p.Spec.RestartPolicy = corev1.RestartPolicy(pick("", "Always", "Never", "OnFailure"))
	return p
}

func reviewFor(t testing.TB, pod *corev1.Pod) []byte {
	raw, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "u", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Namespace: "apps", Operation: admissionv1.Create, Object: k8sruntime.RawExtension{Raw: raw}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// FuzzAdmission: random pods never panic the handler, every answer is a
// well-formed AdmissionReview, every patch applies to its pod and yields a
// correctly injected pod, and a refusal carries a message. Raw bytes as the
// body must not panic either.
//
//	go test ./webhook -run '^$' -fuzz FuzzAdmission -fuzztime 60s
func FuzzAdmission(f *testing.F) {
	for s := range uint64(64) {
		f.Add(s, []byte(nil))
	}
	f.Add(uint64(0), []byte(`{"request":{"operation":"CREATE","kind":{"kind":"Pod"},"object":{"spec":{"volumes":[{"name":"a","csi":{"driver":"csi.podfs.io"}}]}}}}`))
	f.Add(uint64(0), []byte(`{"request":{"object":7}}`))
	lk, cfg := fixtureLookup(), fixtureConfig(f)
	f.Fuzz(func(t *testing.T, seed uint64, raw []byte) {
		h := &Handler{Lookup: lk, Config: NewConfigStore(cfg), Native: seed%2 == 0,
			Namespaces: func(context.Context, string) (map[string]string, error) {
				return map[string]string{volumeset.InjectionLabel: []string{"enabled", "serverless"}[seed%3%2]}, nil
			}}
		if len(raw) > 0 {
			serve(h, raw) // must not panic; any status is fine
			return
		}
		pod := randomPod(seed)
		code, out := serve(h, reviewFor(t, pod))
		if code != http.StatusOK {
			t.Fatalf("status %d for a well-formed review: %s", code, out)
		}
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(out, &review); err != nil || review.Response == nil || review.Response.UID != "u" {
			t.Fatalf("malformed answer %s: %v", out, err)
		}
		resp := review.Response
		if !resp.Allowed {
			if resp.Result == nil || !strings.HasPrefix(resp.Result.Message, "podfs: ") {
				t.Fatalf("refusal without a message: %s", out)
			}
			return
		}
		if len(resp.Patch) == 0 {
			return
		}
		var ops []Op
		if err := json.Unmarshal(resp.Patch, &ops); err != nil {
			t.Fatalf("patch is not JSON patch: %v", err)
		}
		got := applyOps(t, pod, ops)
		checkInjected(t, pod, got)
	})
}

func serve(h *Handler, body []byte) (int, []byte) {
	req, _ := http.NewRequest(http.MethodPost, MutatePath, bytes.NewReader(body))
	w := &discardWriter{h: http.Header{}}
	h.ServeHTTP(w, req)
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.code, w.body
}

// TestRandomPods runs 3000 generated pods through the fuzz checks without
// the fuzzing engine, and makes sure the generator reaches every outcome.
func TestRandomPods(t *testing.T) {
	lk, cfg := fixtureLookup(), fixtureConfig(t)
	outcomes := map[string]int{}
	for seed := range uint64(3000) {
		h := &Handler{Lookup: lk, Config: NewConfigStore(cfg), Native: seed%2 == 0,
			Namespaces: func(context.Context, string) (map[string]string, error) {
				return map[string]string{volumeset.InjectionLabel: []string{"enabled", "serverless"}[seed%3%2]}, nil
			}}
		pod := randomPod(seed)
		code, out := serve(h, reviewFor(t, pod))
		var review admissionv1.AdmissionReview
		if code != http.StatusOK || json.Unmarshal(out, &review) != nil || review.Response == nil {
			t.Fatalf("seed %d: status %d, answer %s", seed, code, out)
		}
		switch resp := review.Response; {
		case !resp.Allowed:
			outcomes["refused"]++
		case len(resp.Patch) == 0:
			outcomes["untouched"]++
		default:
			outcomes["injected"]++
			var ops []Op
			if err := json.Unmarshal(resp.Patch, &ops); err != nil {
				t.Fatal(err)
			}
			checkInjected(t, pod, applyOps(t, pod, ops))
		}
	}
	t.Logf("outcomes: %v", outcomes)
	for _, o := range []string{"refused", "untouched", "injected"} {
		if outcomes[o] < 100 {
			t.Errorf("only %d of 3000 random pods %s: the generator misses cases (%v)", outcomes[o], o, outcomes)
		}
	}
}
