package webhook

import (
	"context"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"

	"podfs.io/podfs/sidecar/volumeset"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/golden")

func pvcVol(name, claim string) corev1.Volume {
	return corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}
}

func mount(name, path string) corev1.VolumeMount {
	return corev1.VolumeMount{Name: name, MountPath: path}
}

func app(name string, mounts ...corev1.VolumeMount) corev1.Container {
	return corev1.Container{Name: name, Image: "busybox:1.36", Command: []string{"sleep", "3600"}, VolumeMounts: mounts}
}

// pod builds a pod in namespace apps; edit tweaks it.
func pod(edit func(p *corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Pod"},
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "apps"},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{app("app", mount("data", "/data"))},
			Volumes:    []corev1.Volume{pvcVol("data", "shared")},
		},
	}
	if edit != nil {
		edit(p)
	}
	return p
}

// restrictedPod is a pod that meets Pod Security "restricted" by itself,
// with a pod-level runAsNonRoot.
func restrictedPod() *corev1.Pod {
	return pod(func(p *corev1.Pod) {
		p.Spec.SecurityContext = &corev1.PodSecurityContext{
			RunAsNonRoot: ptr(true), RunAsUser: ptr(int64(1000)), RunAsGroup: ptr(int64(1000)), FSGroup: ptr(int64(1000)),
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		}
		p.Spec.Containers[0].SecurityContext = &corev1.SecurityContext{
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
		}
	})
}

type mutateCase struct {
	name       string
	pod        *corev1.Pod
	native     bool
	serverless bool
	refuse     string // substring of the refusal; "" = must be allowed
	noPatch    bool   // allowed untouched
}

func mutateCases() []mutateCase {
	always := corev1.ContainerRestartPolicyAlways
	rtrue := true
	return []mutateCase{
		{name: "bare-pod", native: true, pod: pod(nil)},
		{name: "bare-pod-no-native", pod: pod(nil)},
		{name: "deployment-template", native: true, pod: pod(func(p *corev1.Pod) {
			p.Name, p.GenerateName = "", "web-7d9f8b6c5-"
			p.Labels = map[string]string{"app": "web", "pod-template-hash": "7d9f8b6c5"}
			p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-7d9f8b6c5", UID: "1b2c", Controller: &rtrue}}
			p.Spec.Containers = append(p.Spec.Containers, app("metrics"))
		})},
		{name: "job-template", pod: pod(func(p *corev1.Pod) {
			p.Name, p.GenerateName = "", "train-"
			p.Labels = map[string]string{"batch.kubernetes.io/job-name": "train"}
			p.Spec.RestartPolicy = corev1.RestartPolicyNever
			p.Spec.Containers[0].Command = []string{"sh", "-c", "cp -r /data/in /data/out"}
		})},
		{name: "job-template-native", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.RestartPolicy = corev1.RestartPolicyOnFailure
		})},
		{name: "statefulset-template", native: true, pod: pod(func(p *corev1.Pod) {
			p.Name = "web-0"
			p.Spec.Hostname, p.Spec.Subdomain = "web-0", "web"
			p.Spec.Volumes = []corev1.Volume{pvcVol("data", "data-web-0")}
		})},
		{name: "several-podfs-volumes", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, pvcVol("models", "models"))
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, mount("models", "/models"))
		})},
		{name: "subpath-readonly", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ReadOnly = true
			p.Spec.Containers[0].VolumeMounts = []corev1.VolumeMount{
				{Name: "data", MountPath: "/etc/app", SubPath: "config", ReadOnly: true},
				{Name: "data", MountPath: "/logs", SubPathExpr: "logs/$(POD_NAME)"},
			}
		})},
		{name: "init-container-uses-volume", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{app("seed", mount("data", "/data")), app("unrelated")}
		})},
		{name: "init-container-uses-volume-no-native", pod: pod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{app("seed", mount("data", "/data"))}
		}), refuse: `init container "seed" uses podfs volume`},
		{name: "non-podfs-pvc-beside", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, pvcVol("ebs", "ebs"), pvcVol("scratch", "local-wffc"),
				corev1.Volume{Name: "cfg", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}}}})
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, mount("ebs", "/ebs"), mount("scratch", "/scratch"), mount("cfg", "/cfg"))
		})},
		{name: "istio-native", native: true, pod: pod(func(p *corev1.Pod) {
			proxy := app("istio-proxy")
			proxy.RestartPolicy = &always
			p.Spec.InitContainers = []corev1.Container{app("istio-init"), proxy, app("seed", mount("data", "/data"))}
		})},
		{name: "istio-container", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{app("istio-proxy"), p.Spec.Containers[0]}
			p.Spec.InitContainers = []corev1.Container{app("istio-init")}
		})},
		{name: "istio-container-last", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{p.Spec.Containers[0], app("istio-proxy"), app("second", mount("data", "/data"))}
		})},
		{name: "istio-container-last-serverless", serverless: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{p.Spec.Containers[0], app("istio-proxy")}
		})},
		{name: "unknown-mount-option-annotation", native: true, refuse: `annotation podfs.io/mount-options="allow_other,max_readahead=1M": unknown mount option "max_readahead=1M"; known options: allow_other, attr_timeout=DURATION`, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnMountOptions: "allow_other,max_readahead=1M"}
		})},
		{name: "unknown-mount-option-pv", native: true, refuse: `volume "data": unknown mount option "max_readahead=1M"; known options: `, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "bad-opts"
		})},
		{name: "unsupported-mount-option", native: true, refuse: `mount option no_default_permissions is not supported`, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnMountOptions: "no_default_permissions"}
		})},
		{name: "pull-secrets-pod-has-some", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.ImagePullSecrets = []corev1.LocalObjectReference{{Name: "app-pull"}, {Name: "podfs-pull"}}
			p.Spec.Volumes = append(p.Spec.Volumes, pvcVol("models", "models"))
		})},
		{name: "metrics-port-taken", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers[0].Ports = []corev1.ContainerPort{{Name: "metrics", ContainerPort: DefaultMetricsPort}}
		})},
		{name: "existing-native-sidecar", native: true, pod: pod(func(p *corev1.Pod) {
			logs := app("log-shipper", mount("data", "/data"))
			logs.RestartPolicy = &always
			p.Spec.InitContainers = []corev1.Container{logs}
		})},
		{name: "host-network", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.HostNetwork = true
			p.Spec.DNSPolicy = corev1.DNSClusterFirstWithHostNet
		})},
		{name: "inline-csi", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
				Driver: volumeset.DriverName, ReadOnly: &rtrue,
				VolumeAttributes:     map[string]string{AttrMetaURLSecretKey: "meta", AttrSubDir: "/shared/"},
				NodePublishSecretRef: &corev1.LocalObjectReference{Name: "podfs-creds"}}}}}
		})},
		{name: "serverless-namespace", native: true, serverless: true, pod: pod(nil)},
		{name: "serverless-toleration", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "virtual-kubelet.io/provider", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}
		})},
		{name: "serverless-node-selector", pod: pod(func(p *corev1.Pod) {
			p.Spec.NodeSelector = map[string]string{"type": "virtual-kubelet"}
		})},
		{name: "annotations-tune", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, pvcVol("models", "models"))
			p.Annotations = map[string]string{AnnCPURequest: "500m", AnnCPULimit: "2", AnnMemoryRequest: "1Gi", AnnMemoryLimit: "8Gi",
				AnnMountOptions: "attr_timeout=1s, entry_timeout=1s"}
		})},
		{name: "already-injected", native: true, noPatch: true, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{volumeset.InjectedAnnotation: "native"}
		})},
		{name: "opted-out", native: true, noPatch: true, pod: pod(func(p *corev1.Pod) {
			p.Labels = map[string]string{volumeset.InjectLabel: "false"}
		})},
		{name: "no-podfs-volumes", native: true, noPatch: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{pvcVol("data", "ebs"), pvcVol("s", "local-wffc")}
		})},
		{name: "no-volumes", native: true, noPatch: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = nil
			p.Spec.Containers[0].VolumeMounts = nil
		})},
		{name: "malformed-cpu", native: true, refuse: `annotation podfs.io/sidecar-cpu-limit="two cores"`, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnCPULimit: "two cores"}
		})},
		{name: "malformed-memory", native: true, refuse: `annotation podfs.io/sidecar-memory-request="-1Gi"`, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnMemoryRequest: "-1Gi"}
		})},
		{name: "request-over-limit", native: true, refuse: `memory request 4Gi exceeds its limit 1Gi`, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnMemoryRequest: "4Gi"}
		})},
		{name: "malformed-mount-options", native: true, refuse: `annotation podfs.io/mount-options=`, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnMountOptions: "allow_other,attr timeout=1"}
		})},
		// On ordinary nodes a claim not yet created or bound gets a
		// sidecar that learns its PV from the CSI node; a serverless
		// sidecar has no one to learn from.
		{name: "missing-pvc", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "nope"
		})},
		{name: "missing-pvc-serverless", native: true, serverless: true, refuse: `volume "data": PersistentVolumeClaim apps/nope does not exist: on serverless nodes`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "nope"
		})},
		{name: "pending-pvc", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "pending"
			p.Spec.Volumes = append(p.Spec.Volumes, pvcVol("bound", "shared"))
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, mount("bound", "/bound"))
		})},
		{name: "pending-pvc-serverless", native: true, serverless: true, refuse: `volume "data": PersistentVolumeClaim apps/pending is not bound (phase "Pending"): on serverless nodes`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "pending"
		})},
		{name: "dangling-pv", native: true, refuse: `bound to PersistentVolume "pv-gone", which does not exist`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "dangling"
		})},
		// The kubelet reads the Secret for the CSI node; only a serverless
		// sidecar would need it in the pod's namespace.
		{name: "secret-other-namespace", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "cross-ns"
		})},
		{name: "secret-other-namespace-serverless", native: true, serverless: true, refuse: `names Secret kube-system/creds in nodePublishSecretRef, but the pod runs in namespace "apps" on a serverless node`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "cross-ns"
		})},
		{name: "no-meta-url", native: true, refuse: `volume "data": volumeAttributes has neither metaURL nor metaURLSecretKey`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "no-meta"
		})},
		{name: "bad-subdir", native: true, refuse: `volume "data": volumeAttributes subDir "../etc" must be a clean relative path`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = append([]corev1.Volume{{Name: "inline", VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{Driver: volumeset.DriverName, VolumeAttributes: map[string]string{AttrMetaURL: "bolt:///x.db"}}}}}, p.Spec.Volumes...)
			p.Spec.Volumes[1].PersistentVolumeClaim.ClaimName = "bad-subdir"
		})},
		{name: "placement-container", native: true, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnPlacement: PlacementContainer}
		})},
		{name: "placement-native-explicit", native: true, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnPlacement: PlacementNative}
		})},
		{name: "malformed-placement", native: true, refuse: `annotation podfs.io/sidecar-placement="sidecar": want "native"`, pod: pod(func(p *corev1.Pod) {
			p.Annotations = map[string]string{AnnPlacement: "sidecar"}
		})},
		{name: "cache-dir", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "cached"
		})},
		{name: "cache-dirs-two", native: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{pvcVol("data", "cached"), pvcVol("more", "cached-b")}
			p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts, mount("more", "/more"))
		})},
		{name: "cache-dir-serverless", native: true, serverless: true, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "cached"
		})},
		{name: "cache-dir-overlaps-run", native: true, refuse: `volume "data": cacheDir "/run/podfs/cache" overlaps /run/podfs`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Volumes[0].PersistentVolumeClaim.ClaimName = "bad-cache"
		})},
		{name: "pod-run-as-non-root", native: true, pod: restrictedPod()},
		{name: "pod-run-as-non-root-no-native", pod: restrictedPod()},
		{name: "pod-run-as-non-root-serverless", native: true, serverless: true, pod: restrictedPod()},
		{name: "app-propagation-kept", native: true, pod: pod(func(p *corev1.Pod) {
			htc := corev1.MountPropagationHostToContainer
			p.Spec.Containers[0].VolumeMounts[0].MountPropagation = &htc
			p.Spec.Containers = append(p.Spec.Containers, app("second", mount("data", "/data")))
		})},
		{name: "own-volume-names-taken", pod: pod(func(p *corev1.Pod) {
			for _, n := range []string{"podfs-run", "podfs-podinfo"} {
				p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: n, VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
			}
		})},
		{name: "name-clash", native: true, refuse: `already has a container named "podfs-sidecar"`, pod: pod(func(p *corev1.Pod) {
			p.Spec.Containers = append(p.Spec.Containers, app(volumeset.ContainerName))
		})},
	}
}

func TestMutate(t *testing.T) {
	lk, cfg := fixtureLookup(), fixtureConfig(t)
	for _, tc := range mutateCases() {
		t.Run(tc.name, func(t *testing.T) {
			ops, err := Mutate(context.Background(), lk, Input{Pod: tc.pod.DeepCopy(), Namespace: "apps", Native: tc.native, Serverless: tc.serverless, Config: cfg})
			if tc.refuse != "" {
				var r *Refusal
				if !errors.As(err, &r) {
					t.Fatalf("want a refusal containing %q, got ops=%v err=%v", tc.refuse, ops, err)
				}
				if !strings.Contains(r.Msg, tc.refuse) {
					t.Fatalf("refusal %q does not contain %q", r.Msg, tc.refuse)
				}
				return
			}
			if err != nil {
				t.Fatalf("Mutate: %v", err)
			}
			if tc.noPatch {
				if ops != nil {
					t.Fatalf("want no patch, got %v", ops)
				}
				return
			}
			got := applyOps(t, tc.pod, ops)
			checkInjected(t, tc.pod, got)
			// Reinvocation (reinvocationPolicy: IfNeeded) must not patch again.
			again, err := Mutate(context.Background(), lk, Input{Pod: got, Namespace: "apps", Native: tc.native, Serverless: tc.serverless, Config: cfg})
			if err != nil || again != nil {
				t.Fatalf("second admission: ops=%v err=%v, want none", again, err)
			}
			b, err := yaml.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "golden", tc.name+".yaml")
			if *update {
				if err := os.WriteFile(golden, b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden file (run go test ./webhook -run TestMutate -update and review it): %v", err)
			}
			if string(want) != string(b) {
				t.Errorf("patched pod differs from %s (rerun with -update and review the diff):\n%s", golden, b)
			}
		})
	}
}

// checkInjected asserts what every injected pod must satisfy.
func checkInjected(t testing.TB, before, after *corev1.Pod) {
	t.Helper()
	if _, ok := after.Annotations[volumeset.InjectedAnnotation]; !ok {
		t.Fatalf("no %s annotation", volumeset.InjectedAnnotation)
	}
	var sc *corev1.Container
	native := false
	if i := slices.IndexFunc(after.Spec.InitContainers, func(c corev1.Container) bool { return c.Name == volumeset.ContainerName }); i >= 0 {
		sc, native = &after.Spec.InitContainers[i], true
		if sc.RestartPolicy == nil || *sc.RestartPolicy != corev1.ContainerRestartPolicyAlways {
			t.Fatalf("native sidecar without restartPolicy Always: %+v", sc)
		}
	}
	if i := slices.IndexFunc(after.Spec.Containers, func(c corev1.Container) bool { return c.Name == volumeset.ContainerName }); i >= 0 {
		if sc != nil {
			t.Fatal("two sidecars")
		}
		sc = &after.Spec.Containers[i]
		// Before every app container, after istio-proxy wherever it was.
		hasProxy := slices.ContainsFunc(after.Spec.Containers, func(c corev1.Container) bool { return c.Name == istioProxy })
		for j, c := range after.Spec.Containers {
			if c.Name != istioProxy && j < i || hasProxy && (i == 0 || after.Spec.Containers[0].Name != istioProxy) {
				t.Fatalf("sidecar at %d among the containers %v: want it right after istio-proxy and before every app", i, containerNames(after.Spec.Containers))
			}
		}
	}
	if sc == nil {
		t.Fatal("no sidecar")
	}
	// Both placements hold the next container back until every mount is served.
	if h := sc.Lifecycle; h == nil || h.PostStart == nil || h.PostStart.Exec == nil ||
		!slices.Contains(h.PostStart.Exec.Command, "--wait=5m") {
		t.Fatalf("sidecar without a postStart hook waiting for the mounts: %+v", sc.Lifecycle)
	}
	var js string
	for _, e := range sc.Env {
		if e.Name == volumeset.EnvVar {
			js = e.Value
		}
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef == nil && e.ValueFrom.FieldRef == nil {
			t.Fatalf("env %s: only secretKeyRef/fieldRef are injected", e.Name)
		}
	}
	vs, err := volumeset.Decode(js)
	if err != nil {
		t.Fatalf("the sidecar's volume set does not validate: %v", err)
	}
	if vs.Native != native {
		t.Fatalf("volume set says native=%v, placement says %v", vs.Native, native)
	}
	podVols := map[string]corev1.Volume{}
	for _, v := range after.Spec.Volumes {
		podVols[v.Name] = v
	}
	podfs := map[string]bool{}
	for _, v := range vs.Volumes {
		podfs[v.Name] = true
	}
	checkSidecarSecurity(t, after, sc, vs.Mode)

	// The run-time emptyDir at RunDir, writable (the CSI node finds it by
	// this mount path); the cache emptyDir with a size limit; nothing from
	// the host; no service-account token.
	runDirs := 0
	for _, m := range sc.VolumeMounts {
		v, ok := podVols[m.Name]
		if !ok {
			t.Fatalf("sidecar mounts %q, which is no volume of the pod", m.Name)
		}
		switch {
		case m.MountPath == volumeset.RunDir:
			runDirs++
			if v.EmptyDir == nil || m.ReadOnly || m.SubPath != "" {
				t.Fatalf("%s is not a writable emptyDir: %+v %+v", volumeset.RunDir, m, v)
			}
		case strings.HasPrefix(m.MountPath, "/var/run/secrets/"):
			t.Fatalf("sidecar mounts %s: it needs no API access", m.MountPath)
		case m.MountPath == volumeset.SecretsDir:
			if vs.Mode != volumeset.ModeNode || v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory {
				t.Fatalf("%s in mode %s is %+v, want an in-memory emptyDir on ordinary nodes only", volumeset.SecretsDir, vs.Mode, v)
			}
		case v.EmptyDir != nil && !podfs[m.Name]:
			if !slices.ContainsFunc(vs.Volumes, func(pv volumeset.Volume) bool { return pv.Cache.CacheDir == m.MountPath }) {
				t.Fatalf("sidecar mounts emptyDir %q at %s, which is neither %s nor a cache dir", m.Name, m.MountPath, volumeset.RunDir)
			}
			if v.EmptyDir.SizeLimit == nil || v.EmptyDir.SizeLimit.Sign() <= 0 {
				t.Fatalf("cache emptyDir %q without a sizeLimit", m.Name)
			}
		}
		if m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationBidirectional && (vs.Mode != volumeset.ModeServerless || !podfs[m.Name]) {
			t.Fatalf("sidecar mount %q is Bidirectional in mode %s", m.Name, vs.Mode)
		}
	}
	if runDirs != 1 {
		t.Fatalf("sidecar mounts %s %d times, want once", volumeset.RunDir, runDirs)
	}
	for _, v := range after.Spec.Volumes {
		if v.HostPath != nil {
			t.Fatalf("volume %q is a hostPath", v.Name)
		}
	}
	for _, v := range vs.Volumes {
		if vs.Mode == volumeset.ModeNode && ((v.Handoff == "") == (v.Claim == "") || v.MountPoint != "") {
			t.Fatalf("node-mode volume %q: handoff %q, claim %q, mountPoint %q", v.Name, v.Handoff, v.Claim, v.MountPoint)
		}
		if vs.Mode == volumeset.ModeNode && (v.MetaURL != "" || v.MetaURLEnv != "" || v.StorageURL != "" || v.StorageURLEnv != "") {
			t.Fatalf("node-mode volume %q carries a URL or its env var: the CSI node sends them", v.Name)
		}
	}

	// App mounts of podfs volumes: HostToContainer on serverless nodes (the
	// sidecar mounts after they start), left as written on ordinary nodes.
	// The containers other than the sidecar keep their order: compare their
	// mounts position by position.
	type mnt struct {
		c string
		m corev1.VolumeMount
	}
	flatten := func(p *corev1.Pod) []mnt {
		var out []mnt
		for _, c := range slices.Concat(p.Spec.InitContainers, p.Spec.Containers) {
			if c.Name == volumeset.ContainerName && p == after {
				continue
			}
			for _, m := range c.VolumeMounts {
				if m.MountPath != ServiceAccountTokenPath { // the API server's, not the webhook's
					out = append(out, mnt{c.Name, m})
				}
			}
		}
		return out
	}
	was, is := flatten(before), flatten(after)
	if len(was) != len(is) {
		t.Fatalf("the app containers had %d volume mounts, now %d", len(was), len(is))
	}
	for i, a := range is {
		if !podfs[a.m.Name] {
			continue
		}
		o, m := was[i].m.MountPropagation, a.m.MountPropagation
		unset := m == nil || *m == corev1.MountPropagationNone
		switch vs.Mode {
		case volumeset.ModeServerless:
			if unset {
				t.Fatalf("container %q mounts podfs volume %q without HostToContainer", a.c, a.m.Name)
			}
		case volumeset.ModeNode:
			if (o == nil) != (m == nil) || o != nil && *o != *m {
				t.Fatalf("container %q: the webhook changed the propagation of podfs volume %q on an ordinary node", a.c, a.m.Name)
			}
		}
	}
	if len(after.Spec.Containers) < len(before.Spec.Containers) || len(after.Spec.InitContainers) < len(before.Spec.InitContainers) {
		t.Fatal("containers lost")
	}
}

// checkSidecarSecurity: on ordinary nodes the sidecar meets Pod Security
// "restricted" by itself; on serverless nodes it is privileged as root, said
// explicitly. In both, the kubelet's runAsNonRoot check (container fields
// over the pod's) passes.
func checkSidecarSecurity(t testing.TB, pod *corev1.Pod, sc *corev1.Container, mode volumeset.Mode) {
	t.Helper()
	s := sc.SecurityContext
	if s == nil {
		t.Fatal("sidecar without a securityContext")
	}
	switch mode {
	case volumeset.ModeNode:
		switch {
		case s.Privileged != nil && *s.Privileged:
			t.Fatal("sidecar privileged on an ordinary node")
		case s.RunAsNonRoot == nil || !*s.RunAsNonRoot:
			t.Fatal("sidecar without runAsNonRoot: true")
		case s.RunAsUser == nil || *s.RunAsUser != volumeset.SidecarUID || s.RunAsGroup == nil || *s.RunAsGroup != volumeset.SidecarGID:
			t.Fatalf("sidecar runs as %v:%v, want %d:%d", s.RunAsUser, s.RunAsGroup, volumeset.SidecarUID, volumeset.SidecarGID)
		case s.AllowPrivilegeEscalation == nil || *s.AllowPrivilegeEscalation:
			t.Fatal("sidecar may escalate privileges")
		case s.Capabilities == nil || !slices.Equal(s.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(s.Capabilities.Add) > 0:
			t.Fatalf("sidecar capabilities %+v, want drop [ALL]", s.Capabilities)
		case s.SeccompProfile == nil || s.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault:
			t.Fatalf("sidecar seccomp %+v, want RuntimeDefault", s.SeccompProfile)
		case s.ReadOnlyRootFilesystem == nil || !*s.ReadOnlyRootFilesystem:
			t.Fatal("sidecar root file system writable")
		}
	case volumeset.ModeServerless:
		if s.Privileged == nil || !*s.Privileged || s.RunAsUser == nil || *s.RunAsUser != 0 || s.RunAsNonRoot == nil || *s.RunAsNonRoot {
			t.Fatalf("serverless sidecar securityContext %+v: want privileged, runAsUser 0, runAsNonRoot false", s)
		}
	default:
		t.Fatalf("mode %q", mode)
	}
	// What the kubelet checks before starting the container.
	nonRoot, uid := s.RunAsNonRoot, s.RunAsUser
	if ps := pod.Spec.SecurityContext; ps != nil {
		if nonRoot == nil {
			nonRoot = ps.RunAsNonRoot
		}
		if uid == nil {
			uid = ps.RunAsUser
		}
	}
	if nonRoot != nil && *nonRoot && (uid == nil || *uid == 0) {
		t.Fatalf("the kubelet would refuse the sidecar: runAsNonRoot with user %v", uid)
	}
}

// TestReinvocationDropsToken: called again after the in-tree plugins ran a
// second time, the webhook removes the token the ServiceAccount plugin
// mounted into the sidecar, and only there.
func TestReinvocationDropsToken(t *testing.T) {
	lk, cfg := fixtureLookup(), fixtureConfig(t)
	for _, native := range []bool{true, false} {
		ops, err := Mutate(context.Background(), lk, Input{Pod: pod(nil), Namespace: "apps", Native: native, Config: cfg})
		if err != nil {
			t.Fatal(err)
		}
		got := applyOps(t, pod(nil), ops)
		token := corev1.VolumeMount{Name: "kube-api-access-x", MountPath: ServiceAccountTokenPath, ReadOnly: true}
		for _, cs := range [][]corev1.Container{got.Spec.InitContainers, got.Spec.Containers} {
			for i := range cs {
				cs[i].VolumeMounts = append(cs[i].VolumeMounts, token)
			}
		}
		ops, err = Mutate(context.Background(), lk, Input{Pod: got, Namespace: "apps", Native: native, Config: cfg})
		if err != nil || len(ops) != 1 || ops[0].Op != "remove" {
			t.Fatalf("native=%v: want one remove, got %v, %v", native, ops, err)
		}
		again := applyOps(t, got, ops)
		for _, c := range slices.Concat(again.Spec.InitContainers, again.Spec.Containers) {
			has := slices.ContainsFunc(c.VolumeMounts, func(m corev1.VolumeMount) bool { return m.MountPath == ServiceAccountTokenPath })
			if has == (c.Name == volumeset.ContainerName) {
				t.Fatalf("native=%v: container %q token mount %v after the reinvocation", native, c.Name, has)
			}
		}
	}
}

func containerNames(cs []corev1.Container) []string {
	out := make([]string, len(cs))
	for i, c := range cs {
		out[i] = c.Name
	}
	return out
}
