//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

const (
	haPods    = 50
	haWorkers = 10
	// Creations before the webhook replica is deleted.
	haBeforeDelete = 10
	// Creations are paced so that the burst spans the replica's preStop,
	// SIGTERM and drain; the last ones wait until the replica is gone.
	haPace       = 250 * time.Millisecond
	haAfterGone  = 10
	webhookPort  = 9443
	webhookLabel = "app.kubernetes.io/component=webhook"
)

// Scenario 19: two webhook replicas share 127.0.0.1:9443 (SO_REUSEPORT,
// values-single-node.yaml). During a burst of 50 pod creations from 10
// workers in a labelled namespace, the replica holding the API server's
// connection is deleted (default grace period: preStop, then SIGTERM and a
// graceful drain). Every creation must succeed with the sidecar injected;
// the Deployment returns to 2 ready replicas; of two evictions in a row the
// PodDisruptionBudget allows the first and refuses the second (429).
func (e *env) testWebhookHA(t *testing.T) {
	ctx := ctxT(t, 10*time.Minute)
	deploy := e.webhookDeployment()
	sel := webhookLabel + ",app.kubernetes.io/instance=" + e.release
	ready := e.waitWebhookReplicas(t, ctx, deploy, sel, 2, "")
	t.Logf("webhook replicas ready: %v", podNames(ready))

	ns := e.newNamespace(t, "s19", "enabled")
	// Never formatted: the pods stay Pending (no node matches their
	// nodeSelector), so nothing serves or mounts the volume; admission
	// still looks the claim up and injects the sidecar.
	v := volume{name: "ha", metaURL: "etcd://" + e.etcdAddr + "/ha-unformatted", storageURL: "rados://podfs?mon_host=v1:127.0.0.1:1"}
	_, claim := e.createVolume(t, ns, v, nil)
	t.Cleanup(func() { e.deleteAllPods(t, ns) })

	type result struct {
		i        int
		err      error
		injected bool
		during   bool // created while the replica was being deleted
	}
	var (
		mu       sync.Mutex
		results  []result
		created  = make(chan struct{}, haPods)
		deleting = make(chan struct{})
		gone     = make(chan struct{})
		tokens   = make(chan int)
	)
	// Hands out pod indices: the first haBeforeDelete at once, then one per
	// haPace; the last haAfterGone only once the deleted replica is gone.
	go func() {
		defer close(tokens)
		for i := range haPods {
			switch {
			case i < haBeforeDelete:
			case i == haPods-haAfterGone:
				select {
				case <-gone:
				case <-ctx.Done():
					return
				}
			default:
				time.Sleep(haPace)
			}
			select {
			case tokens <- i:
			case <-ctx.Done():
				return
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for range haWorkers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range tokens {
				during := closed(deleting) && !closed(gone)
				p := withClaim(e.appPod(fmt.Sprintf("ha-%02d", i), "sleep 3600"), claim, "/data")
				p.Spec.NodeSelector = map[string]string{"podfs.io/e2e": "nowhere"}
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				out, err := e.kc.CoreV1().Pods(ns).Create(cctx, p, metav1.CreateOptions{})
				cancel()
				r := result{i: i, err: err, during: during}
				if err == nil {
					r.injected = hasSidecar(out) && out.Annotations[injectedAnno] != ""
				}
				mu.Lock()
				results = append(results, r)
				mu.Unlock()
				created <- struct{}{}
			}
		}()
	}

	for range haBeforeDelete {
		<-created
	}
	victim, conns := e.connectionHolder(t, ready)
	t.Logf("deleting webhook pod %s (holds %d of the API server's connections to port %d)", victim.Name, conns, webhookPort)
	// The victim's own account of its drain, until its container ends.
	logs := exec.CommandContext(ctx, e.kubectl, "--kubeconfig", e.kubeconfig, "-n", e.releaseNS, "logs", "-f", victim.Name, "-c", "webhook", "--since=10m")
	var logBuf bytes.Buffer
	logs.Stdout, logs.Stderr = &logBuf, &logBuf
	if err := logs.Start(); err != nil {
		t.Fatalf("kubectl logs -f %s: %v", victim.Name, err)
	}
	delStart := time.Now()
	close(deleting)
	if err := e.kc.CoreV1().Pods(e.releaseNS).Delete(ctx, victim.Name, metav1.DeleteOptions{}); err != nil {
		close(gone)
		wg.Wait()
		t.Fatalf("delete webhook pod %s: %v", victim.Name, err)
	}
	var delErr error
	for {
		_, err := e.kc.CoreV1().Pods(e.releaseNS).Get(ctx, victim.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			break
		}
		if ctx.Err() != nil {
			delErr = fmt.Errorf("webhook pod %s still exists after its deletion: %v", victim.Name, err)
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	delTook := time.Since(delStart)
	close(gone)
	wg.Wait()
	burst := time.Since(start)
	if delErr != nil {
		t.Fatal(delErr)
	}
	logDone := make(chan error, 1)
	go func() { logDone <- logs.Wait() }()
	select {
	case <-logDone:
	case <-time.After(30 * time.Second):
		_ = logs.Process.Kill()
		<-logDone
	}
	drained := ""
	for _, line := range strings.Split(logBuf.String(), "\n") {
		if strings.Contains(line, "webhook server drained") || strings.Contains(line, "did not drain") {
			drained = line
		}
	}
	if !strings.Contains(drained, "webhook server drained") {
		t.Errorf("the deleted replica did not log a completed drain (SIGTERM, then Shutdown); its last log lines:\n%s", tail(logBuf.String(), 15))
	}
	t.Logf("deleted replica: %s", drained)

	failures, notInjected, during := 0, 0, 0
	for _, r := range results {
		if r.during {
			during++
		}
		if r.err != nil {
			failures++
			t.Errorf("creation of pod ha-%02d refused: %v", r.i, r.err)
		} else if !r.injected {
			notInjected++
			t.Errorf("pod ha-%02d was created without the %s sidecar or the %s annotation", r.i, sidecarName, injectedAnno)
		}
	}
	t.Logf("E2E-WEBHOOK-HA creations=%d failures=%d not_injected=%d during_deletion=%d deletion_took=%s burst=%s",
		len(results), failures, notInjected, during, delTook.Round(time.Millisecond), burst.Round(time.Millisecond))
	if len(results) != haPods {
		t.Fatalf("%d creations ran, want %d", len(results), haPods)
	}
	if during == 0 {
		t.Fatal("no creation ran while the replica was being deleted: the scenario proved nothing")
	}
	// Every pod the API server holds was admitted with the sidecar.
	pods, err := e.kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	injected := 0
	for i := range pods.Items {
		if hasSidecar(&pods.Items[i]) {
			injected++
		}
	}
	if injected != haPods {
		t.Errorf("%d of %d pods in %s carry the sidecar, want all %d", injected, len(pods.Items), ns, haPods)
	}

	back := time.Now()
	ready = e.waitWebhookReplicas(t, ctx, deploy, sel, 2, victim.Name)
	t.Logf("the Deployment is back to 2 ready replicas %s after the deletion (%v)", time.Since(back).Round(time.Millisecond), podNames(ready))

	holder, n := e.connectionHolder(t, ready)
	t.Logf("the API server's connections to port %d are now held by %s (%d)", webhookPort, holder.Name, n)

	e.evictTwo(t, ctx, ready)
	// Later scenarios need both replicas.
	e.waitWebhookReplicas(t, ctx, deploy, sel, 2, ready[0].Name)
}

// evictTwo evicts the two webhook pods in turn: the budget (minAvailable 1)
// allows the first and refuses the second with 429.
func (e *env) evictTwo(t *testing.T, ctx context.Context, pods []corev1.Pod) {
	t.Helper()
	pdbs := e.kc.PolicyV1().PodDisruptionBudgets(e.releaseNS)
	name := e.webhookDeployment()
	// The disruption controller must have counted both replicas first.
	poll(t, 60*time.Second, "PodDisruptionBudget "+name+" to allow one disruption of 2 healthy replicas", func() (bool, error) {
		pdb, err := pdbs.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == 2 && pdb.Status.DisruptionsAllowed == 1, nil
	})
	evict := func(p corev1.Pod) error {
		return e.kc.CoreV1().Pods(p.Namespace).EvictV1(ctx, &policyv1.Eviction{ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace}})
	}
	if err := evict(pods[0]); err != nil {
		t.Fatalf("eviction of webhook pod %s (1 of 2 healthy, budget minAvailable 1) refused: %v", pods[0].Name, err)
	}
	err := evict(pods[1])
	switch {
	case err == nil:
		t.Fatalf("the second eviction (%s) was allowed: the PodDisruptionBudget let both webhook replicas go", pods[1].Name)
	case !apierrors.IsTooManyRequests(err):
		t.Fatalf("the second eviction (%s) failed with %v, want 429 from the PodDisruptionBudget", pods[1].Name, err)
	}
	t.Logf("eviction of %s allowed; of %s refused: %v", pods[0].Name, pods[1].Name, err)
}

// webhookDeployment is the name the chart gives the webhook Deployment
// (and its PodDisruptionBudget).
func (e *env) webhookDeployment() string {
	if strings.Contains(e.release, "podfs") {
		return e.release + "-webhook"
	}
	return e.release + "-podfs-webhook"
}

// waitWebhookReplicas waits until the Deployment reports n ready replicas
// and exactly n webhook pods exist, all Ready and none being deleted nor
// named not; it returns them.
func (e *env) waitWebhookReplicas(t *testing.T, ctx context.Context, deploy, sel string, n int, not string) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	poll(t, 3*time.Minute, fmt.Sprintf("%d ready webhook replicas", n), func() (bool, error) {
		d, err := e.kc.AppsV1().Deployments(e.releaseNS).Get(ctx, deploy, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if d.Status.ReadyReplicas != int32(n) || d.Status.Replicas != int32(n) {
			return false, fmt.Errorf("deployment %s: %d replicas, %d ready", deploy, d.Status.Replicas, d.Status.ReadyReplicas)
		}
		l, err := e.kc.CoreV1().Pods(e.releaseNS).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return false, err
		}
		pods = pods[:0]
		for _, p := range l.Items {
			if p.DeletionTimestamp != nil || p.Name == not || !podReady(&p) {
				return false, fmt.Errorf("webhook pod %s: deleting %v, ready %v", p.Name, p.DeletionTimestamp != nil, podReady(&p))
			}
			pods = append(pods, p)
		}
		return len(pods) == n, nil
	})
	return pods
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func closed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func podNames(pods []corev1.Pod) []string {
	var n []string
	for _, p := range pods {
		n = append(n, p.Name)
	}
	return n
}

// connectionHolder returns the webhook pod that holds the most established
// connections on port webhookPort (the API server's, to the shared port)
// and their number, read from the host's /proc: the socket inodes of
// /proc/net/tcp, the processes holding them, those processes' pod cgroups.
func (e *env) connectionHolder(t *testing.T, pods []corev1.Pod) (corev1.Pod, int) {
	t.Helper()
	raw, err := os.ReadFile("/proc/net/tcp")
	if err != nil {
		t.Fatalf("read /proc/net/tcp: %v", err)
	}
	local := fmt.Sprintf("0100007F:%04X", webhookPort)
	inodes := map[string]bool{}
	for _, line := range strings.Split(string(raw), "\n")[1:] {
		f := strings.Fields(line)
		if len(f) > 9 && f[1] == local && f[3] == "01" { // ESTABLISHED
			inodes["socket:["+f[9]+"]"] = true
		}
	}
	count := map[string]int{} // pod UID -> connections
	procs, _ := os.ReadDir("/proc")
	for _, d := range procs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		fds, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		n := 0
		for _, fd := range fds {
			if l, err := os.Readlink(filepath.Join(fmt.Sprintf("/proc/%d/fd", pid), fd.Name())); err == nil && inodes[l] {
				n++
			}
		}
		if n == 0 {
			continue
		}
		cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", pid))
		for _, p := range pods {
			if strings.Contains(string(cg), "pod"+string(p.UID)) {
				count[string(p.UID)] += n
			}
		}
	}
	best, most := -1, 0
	for i, p := range pods {
		if c := count[string(p.UID)]; c > most {
			best, most = i, c
		}
	}
	if best < 0 {
		t.Fatalf("no webhook pod of %v holds a connection on 127.0.0.1:%d (%d established): the API server does not call the webhook there?",
			podNames(pods), webhookPort, len(inodes))
	}
	return pods[best], most
}

// deleteAllPods deletes every pod of ns and waits until none is left.
func (e *env) deleteAllPods(t *testing.T, ns string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := e.kc.CoreV1().Pods(ns).DeleteCollection(ctx, metav1.DeleteOptions{}, metav1.ListOptions{}); err != nil {
		t.Errorf("delete the pods of %s: %v", ns, err)
		return
	}
	for {
		l, err := e.kc.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err == nil && len(l.Items) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Errorf("pods of %s left 2 minutes after their deletion: %v", ns, err)
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}
