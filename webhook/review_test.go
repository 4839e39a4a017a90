package webhook

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podfs.io/podfs/sidecar/volumeset"
)

// admitReview sends pod through h and returns the response.
func admitReview(t *testing.T, h *Handler, pod *corev1.Pod) *admissionv1.AdmissionResponse {
	t.Helper()
	code, out := serve(h, reviewFor(t, pod))
	var review admissionv1.AdmissionReview
	if code != http.StatusOK || json.Unmarshal(out, &review) != nil || review.Response == nil {
		t.Fatalf("status %d, answer %s", code, out)
	}
	return review.Response
}

func TestUnknownAnnotationWarns(t *testing.T) {
	h := &Handler{Lookup: fixtureLookup(), Config: NewConfigStore(fixtureConfig(t)), Native: true}
	for _, tc := range []struct {
		name    string
		pod     *corev1.Pod
		allowed bool
	}{
		{"injected", pod(nil), true},
		{"no-podfs-volume", pod(func(p *corev1.Pod) { p.Spec.Volumes = nil; p.Spec.Containers[0].VolumeMounts = nil }), true},
		{"refused", pod(func(p *corev1.Pod) { p.Spec.Containers = append(p.Spec.Containers, app(volumeset.ContainerName)) }), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := tc.pod
			p.Annotations = map[string]string{"podfs.io/sidecar-cpu-limt": "1", AnnCPULimit: "2", "example.com/x": "y"}
			resp := admitReview(t, h, p)
			if resp.Allowed != tc.allowed {
				t.Fatalf("allowed=%v, want %v: %+v", resp.Allowed, tc.allowed, resp.Result)
			}
			if len(resp.Warnings) != 1 {
				t.Fatalf("warnings %q, want one", resp.Warnings)
			}
			w := resp.Warnings[0]
			for _, want := range append([]string{"unknown annotation podfs.io/sidecar-cpu-limt"}, KnownAnnotations...) {
				if !strings.Contains(w, want) {
					t.Errorf("warning %q does not name %q", w, want)
				}
			}
		})
	}
	if r := admitReview(t, h, pod(func(p *corev1.Pod) { p.Annotations = map[string]string{AnnCPULimit: "2"} })); len(r.Warnings) != 0 {
		t.Fatalf("warnings for known annotations only: %q", r.Warnings)
	}
}

func TestConfigRefusesUnknownMountOption(t *testing.T) {
	_, err := ParseConfig([]byte("image: x\nmountOptions: [allow_other, big_writes]\n"), "")
	if err == nil || !strings.Contains(err.Error(), `mountOptions: unknown mount option "big_writes"; known options: allow_other`) {
		t.Fatalf("ParseConfig: %v", err)
	}
	_, err = ParseConfig([]byte("image: x\npatches:\n- name: p\n  storageClassNames: [a]\n  mountOptions: [nodev, bogus=1]\n"), "")
	if err == nil || !strings.Contains(err.Error(), `patches[0] ("p").mountOptions: unknown mount option "bogus=1"`) {
		t.Fatalf("ParseConfig: %v", err)
	}
}

func node(name, kubelet string, edit func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name}}
	n.Status.NodeInfo.KubeletVersion = kubelet
	if edit != nil {
		edit(n)
	}
	return n
}

func TestNodeVersions(t *testing.T) {
	vkTaint := func(n *corev1.Node) {
		n.Spec.Taints = []corev1.Taint{{Key: "virtual-kubelet.io/provider", Value: "azure", Effect: corev1.TaintEffectNoSchedule}}
	}
	nv := NewNodeVersions()
	plain, bound, vk := pod(nil), pod(func(p *corev1.Pod) { p.Spec.NodeName = "new" }), pod(nil)
	if !nv.NativeOK(plain, false) || !nv.NativeOK(vk, true) {
		t.Fatal("no nodes known: the API server's version alone must decide")
	}
	nv.Set("new", node("new", "v1.31.2", nil))
	nv.Set("old", node("old", "v1.28.9-eks-1234", nil))
	nv.Set("vk", node("vk", "v1.30.0-vk-azure-aci-1.6", vkTaint))
	if nv.NativeOK(plain, false) {
		t.Fatal("native for an unbound pod while a node runs kubelet 1.28")
	}
	if !nv.NativeOK(bound, false) {
		t.Fatal("not native for a pod bound to a kubelet 1.31 node")
	}
	if !nv.NativeOK(vk, true) {
		t.Fatal("a virtual-kubelet pod is held back by an ordinary 1.28 node")
	}
	nv.Set("old", node("old", "v1.29.0", nil)) // upgraded
	if !nv.NativeOK(plain, false) {
		t.Fatal("still not native after the old node's upgrade")
	}
	nv.Set("weird", node("weird", "unknown", nil))
	if nv.NativeOK(plain, false) {
		t.Fatal("an unreadable kubelet version counted as able")
	}
	nv.Set("weird", nil)
	if !nv.NativeOK(plain, false) {
		t.Fatal("a deleted old node still holds native placement back")
	}

	// Through the handler: the same pod becomes an ordinary container.
	nv.Set("old", node("old", "v1.27.3", nil))
	h := &Handler{Lookup: fixtureLookup(), Config: NewConfigStore(fixtureConfig(t)), Native: true, Nodes: nv}
	for _, tc := range []struct {
		pod  *corev1.Pod
		want string
	}{{plain, "container"}, {bound, "native"}} {
		resp := admitReview(t, h, tc.pod)
		var ops []Op
		if err := json.Unmarshal(resp.Patch, &ops); err != nil {
			t.Fatal(err)
		}
		got := applyOps(t, tc.pod, ops)
		if v := got.Annotations[volumeset.InjectedAnnotation]; v != tc.want {
			t.Fatalf("pod on node %q injected %q, want %q", tc.pod.Spec.NodeName, v, tc.want)
		}
	}
}
