//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
)

const (
	driverName     = "csi.podfs.io"
	sidecarName    = "podfs-sidecar"
	injectionLabel = "podfs.io/injection"
	injectLabel    = "podfs.io/inject"
	injectedAnno   = "podfs.io/injected"
)

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// poll calls f until it returns true or an error, or fails the test after
// timeout saying what it waited for.
func poll(t *testing.T, timeout time.Duration, what string, f func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := f()
		if ok {
			return
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// newNamespace creates a namespace with the injection label set to
// injection ("" = unlabelled) and deletes it, waiting until it is gone,
// when the test ends: a pod stuck Terminating fails the test there.
func (e *env) newNamespace(t *testing.T, prefix, injection string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name:   fmt.Sprintf("e2e-%s-%s", prefix, rand.String(5)),
		Labels: map[string]string{},
	}}
	if injection != "" {
		ns.Labels[injectionLabel] = injection
	}
	ctx := ctxT(t, 30*time.Second)
	if _, err := e.kc.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() { e.deleteNamespace(t, ns.Name) })
	// Pods need the namespace's default service account.
	poll(t, 60*time.Second, "service account default in "+ns.Name, func() (bool, error) {
		_, err := e.kc.CoreV1().ServiceAccounts(ns.Name).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, err
	})
	return ns.Name
}

func (e *env) deleteNamespace(t *testing.T, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 150*time.Second)
	defer cancel()
	if t.Failed() {
		e.dumpNamespace(t, ns)
	}
	if err := e.kc.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Errorf("delete namespace %s: %v", ns, err)
		return
	}
	for {
		_, err := e.kc.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return
		}
		if ctx.Err() != nil {
			e.dumpNamespace(t, ns)
			t.Errorf("namespace %s still exists 150 s after deletion (a pod stuck Terminating?)", ns)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// dumpNamespace logs the pods of ns and their podfs sidecars' logs.
func (e *env) dumpNamespace(t *testing.T, ns string) {
	out, _ := exec.Command(e.kubectl, "--kubeconfig", e.kubeconfig, "-n", ns, "get", "pods,pvc,events", "-o", "wide").CombinedOutput()
	t.Logf("namespace %s:\n%s", ns, out)
	pods, err := e.kc.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		st, _ := exec.Command(e.kubectl, "--kubeconfig", e.kubeconfig, "-n", ns, "get", "pod", p.Name, "-o", "jsonpath={.status}").CombinedOutput()
		t.Logf("pod %s status: %s", p.Name, st)
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			logs, _ := exec.Command(e.kubectl, "--kubeconfig", e.kubeconfig, "-n", ns, "logs", p.Name, "-c", c.Name, "--tail=40").CombinedOutput()
			t.Logf("pod %s container %s logs:\n%s", p.Name, c.Name, logs)
		}
	}
}

// createVolume makes a PV of the podfs driver for v and a PVC bound to it in
// ns, and waits for the claim to be Bound. Returns the claim's name.
func (e *env) createVolume(t *testing.T, ns string, v volume, attrs map[string]string) (pvName, claim string) {
	t.Helper()
	return e.createVolumeWith(t, ns, v, attrs, corev1.ReadWriteMany)
}

// createVolumeModes is createVolume with another access mode.
func (e *env) createVolumeModes(t *testing.T, ns string, v volume, mode corev1.PersistentVolumeAccessMode) (pvName, claim string) {
	t.Helper()
	return e.createVolumeWith(t, ns, v, nil, mode)
}

func (e *env) createVolumeWith(t *testing.T, ns string, v volume, attrs map[string]string, mode corev1.PersistentVolumeAccessMode) (pvName, claim string) {
	t.Helper()
	ctx := ctxT(t, 60*time.Second)
	pvName = ns + "-" + v.name
	va := map[string]string{"metaURL": v.metaURL, "storageURL": v.storageURL}
	for k, val := range attrs {
		va[k] = val
	}
	size := resource.MustParse("10Gi")
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{mode},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			StorageClassName:              "",
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver:           driverName,
				VolumeHandle:     pvName,
				VolumeAttributes: va,
			}},
		},
	}
	if _, err := e.kc.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PV: %v", err)
	}
	t.Cleanup(func() {
		_ = e.kc.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})
	empty := ""
	claim = v.name
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes:      []corev1.PersistentVolumeAccessMode{mode},
			StorageClassName: &empty,
			VolumeName:       pvName,
			Resources:        corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if _, err := e.kc.CoreV1().PersistentVolumeClaims(ns).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create PVC: %v", err)
	}
	poll(t, 60*time.Second, "PVC "+claim+" Bound", func() (bool, error) {
		c, err := e.kc.CoreV1().PersistentVolumeClaims(ns).Get(ctx, claim, metav1.GetOptions{})
		return err == nil && c.Status.Phase == corev1.ClaimBound, err
	})
	return pvName, claim
}

// appPod is a pod whose one container "app" runs script in the podfs image's
// busybox. It uses the host network: the podfs backends listen on the
// host's loopback only.
func (e *env) appPod(name, script string) *corev1.Pod {
	grace := int64(2)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: corev1.PodSpec{
			HostNetwork:                   true,
			TerminationGracePeriodSeconds: &grace,
			RestartPolicy:                 corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           e.image,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"sh", "-c", script},
			}},
		},
	}
}

// withClaim mounts the PVC claim at path in the app container.
func withClaim(p *corev1.Pod, claim, path string) *corev1.Pod {
	p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "data", VolumeSource: corev1.VolumeSource{
		PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim},
	}})
	p.Spec.Containers[0].VolumeMounts = append(p.Spec.Containers[0].VolumeMounts,
		corev1.VolumeMount{Name: "data", MountPath: path})
	return p
}

func (e *env) createPod(t *testing.T, ns string, p *corev1.Pod) *corev1.Pod {
	t.Helper()
	out, err := e.kc.CoreV1().Pods(ns).Create(ctxT(t, 30*time.Second), p, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", ns, p.Name, err)
	}
	return out
}

// waitRunning waits until the pod's app container runs and is ready.
func (e *env) waitRunning(t *testing.T, ns, name string) *corev1.Pod {
	t.Helper()
	var pod *corev1.Pod
	poll(t, 120*time.Second, "pod "+ns+"/"+name+" running", func() (bool, error) {
		p, err := e.kc.CoreV1().Pods(ns).Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		pod = p
		if p.Status.Phase == corev1.PodFailed || p.Status.Phase == corev1.PodSucceeded {
			e.dumpNamespace(t, ns)
			t.Fatalf("pod %s/%s ended (%s) instead of running", ns, name, p.Status.Phase)
		}
		return appRunning(p), nil
	})
	return pod
}

func appRunning(p *corev1.Pod) bool {
	for _, c := range p.Status.ContainerStatuses {
		if c.Name == "app" {
			return c.State.Running != nil
		}
	}
	return false
}

// deletePod deletes the pod and waits until it is gone.
func (e *env) deletePod(t *testing.T, ns, name string) {
	t.Helper()
	ctx := ctxT(t, 120*time.Second)
	if err := e.kc.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatalf("delete pod %s/%s: %v", ns, name, err)
	}
	poll(t, 90*time.Second, "pod "+ns+"/"+name+" gone (not stuck Terminating)", func() (bool, error) {
		_, err := e.kc.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
}

// exec runs cmd in the pod's container with kubectl exec. It returns the
// command's standard output, and on failure its standard error too. Success
// ignores standard error: kubectl writes its own stream warnings there
// ("Unknown stream id 1, discarding message"), mixed with the command's.
func (e *env) exec(ns, pod, container string, cmd ...string) (string, error) {
	args := append([]string{"--kubeconfig", e.kubeconfig, "-n", ns, "exec", pod, "-c", container, "--"}, cmd...)
	var stdout, stderr bytes.Buffer
	c := exec.Command(e.kubectl, args...)
	c.Stdout, c.Stderr = &stdout, &stderr
	if err := c.Run(); err != nil {
		return strings.TrimSpace(stdout.String() + "\n" + stderr.String()), err
	}
	return strings.TrimSpace(stdout.String()), nil
}

func (e *env) mustExec(t *testing.T, ns, pod, container string, cmd ...string) string {
	t.Helper()
	out, err := e.exec(ns, pod, container, cmd...)
	if err != nil {
		t.Fatalf("kubectl exec %s/%s -c %s -- %q: %v\n%s", ns, pod, container, cmd, err, out)
	}
	return out
}

// hasSidecar reports whether the webhook injected the podfs sidecar.
func hasSidecar(p *corev1.Pod) bool {
	for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
		if c.Name == sidecarName {
			return true
		}
	}
	return false
}

// noMountsLeft fails the test if the host still has a mount of the pod.
func (e *env) noMountsLeft(t *testing.T, uid string) {
	t.Helper()
	// Kubelet unmounts volumes shortly after the pod object is gone; give it
	// a deadline, then insist.
	var left []string
	poll(t, 60*time.Second, "no host mount of pod "+uid, func() (bool, error) {
		left = hostMounts(t, uid)
		return len(left) == 0, nil
	})
	if len(left) > 0 {
		t.Errorf("mounts of pod %s left on the host: %v", uid, left)
	}
}
