//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podfs.io/podfs/internal/testenv"
)

// Scenario 18: credentials from a Secret. The volume's metadata lives in an
// etcd that wants TLS with a client certificate and a password, its data in
// a Ceph with cephx on; the PV names a Secret (in the release's namespace,
// not the pod's) holding both URLs and every credential as files. The pod
// writes and reads its files; no URL, password or key shows in the pod
// spec, the sidecar's environment, its log or the pod's events.
func (e *env) testCredentials(t *testing.T) {
	ns := e.newNamespace(t, "s18", "enabled")
	name := "cred-" + strings.TrimPrefix(ns, "e2e-s18-")
	etcd := testenv.StartEtcdTLS(t)
	const password = "s18-etcd-password"
	pwFile := etcd.AddUser(t, "podfs", password, "podfs\x00")
	ceph := testenv.StartCephx(t)

	// Format from the host with the host's paths of the same files.
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, e.podfsBin, "format", etcd.URL("podfs", pwFile, name), name,
		"--storage", ceph.PodfsURL("namespace="+name)).CombinedOutput(); err != nil {
		t.Fatalf("podfs format over TLS+auth etcd and cephx Ceph: %v\n%s", err, out)
	}
	read := func(p string) []byte {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const dir = "/etc/podfs/secret/"
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: e.releaseNS},
		Data: map[string][]byte{
			"ca.crt":       read(etcd.CA),
			"client.crt":   read(etcd.ClientCert),
			"client.key":   read(etcd.ClientKey),
			"password":     read(pwFile),
			"ceph.keyring": read(ceph.PodfsKeyring),
			"metaURL": []byte(fmt.Sprintf("etcds://podfs@%s/%s?cacert=%sca.crt&cert=%sclient.crt&key=%sclient.key&passwordFile=%spassword",
				etcd.Endpoint, name, dir, dir, dir, dir)),
			"storageURL": []byte(fmt.Sprintf("rados://%s?mon_host=v1:%s&user=podfs&keyring=%sceph.keyring&namespace=%s",
				ceph.Pool, ceph.MonAddr, dir, name)),
		},
	}
	kctx := ctxT(t, 60*time.Second)
	if _, err := e.kc.CoreV1().Secrets(e.releaseNS).Create(kctx, secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kc.CoreV1().Secrets(e.releaseNS).Delete(context.Background(), name, metav1.DeleteOptions{})
	})
	pvName := ns + "-" + name
	size := resource.MustParse("1Gi")
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany},
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimRetain,
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: driverName, VolumeHandle: pvName,
				NodePublishSecretRef: &corev1.SecretReference{Name: name, Namespace: e.releaseNS},
				VolumeAttributes:     map[string]string{"metaURLSecretKey": "metaURL", "storageURLSecretKey": "storageURL"},
			}},
		},
	}
	if _, err := e.kc.CoreV1().PersistentVolumes().Create(kctx, pv, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = e.kc.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})
	empty := ""
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: "cred", Namespace: ns},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteMany}, StorageClassName: &empty, VolumeName: pvName,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if _, err := e.kc.CoreV1().PersistentVolumeClaims(ns).Create(kctx, pvc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	e.waitBound(t, ns, "cred")

	p := e.createPod(t, ns, withClaim(e.appPod("app", "echo secret-backed > /data/f && sleep 3600"), "cred", "/data"))
	e.waitRunning(t, ns, "app")
	poll(t, 30*time.Second, "the app's file", func() (bool, error) {
		out, err := e.exec(ns, "app", "app", "cat", "/data/f")
		return err == nil && out == "secret-backed", nil
	})

	// Nothing secret in the pod, the sidecar's log or the events.
	cephKey := testenv.CephKey(t, ceph.PodfsKeyring)
	got, err := e.kc.CoreV1().Pods(ns).Get(kctx, p.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	specJSON, err := json.Marshal(got.Spec)
	if err != nil {
		t.Fatal(err)
	}
	logs, _ := exec.Command(e.kubectl, "--kubeconfig", e.kubeconfig, "-n", ns, "logs", "app", "-c", sidecarName).CombinedOutput()
	events, _ := e.kc.CoreV1().Events(ns).List(kctx, metav1.ListOptions{})
	var evText strings.Builder
	for _, ev := range events.Items {
		evText.WriteString(ev.Message + "\n")
	}
	for _, s := range []string{password, cephKey} {
		for where, text := range map[string]string{"pod spec": string(specJSON), "sidecar log": string(logs), "events": evText.String()} {
			if strings.Contains(text, s) {
				t.Errorf("the %s shows a secret", where)
			}
		}
	}
	if strings.Contains(string(specJSON), etcd.Endpoint) {
		t.Errorf("the pod spec names the metadata server: %s", specJSON)
	}
	e.deletePod(t, ns, "app")
}
