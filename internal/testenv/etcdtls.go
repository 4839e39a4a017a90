package testenv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdTLS is an etcd server that wants TLS with a client certificate and
// has auth on: a root user, and the users AddUser makes.
type EtcdTLS struct {
	Endpoint   string // 127.0.0.1:PORT
	Dir        string // certificates and password files
	CA         string // the CA that signed the server's and the client's certificates
	ClientCert string // a client certificate the server accepts
	ClientKey  string
	OtherCA    string // a CA that signed neither
	rootPass   string
}

// StartEtcdTLS runs etcd (as StartEtcd) with --client-cert-auth over TLS,
// certificates made here, and auth enabled. It is stopped when the test ends.
func StartEtcdTLS(t testing.TB) *EtcdTLS {
	t.Helper()
	bin := LookPath(t, "etcd", "hack/deps.sh")
	e := &EtcdTLS{Dir: t.TempDir(), rootPass: "root-pw"}
	ca := NewCA(t, e.Dir, "ca")
	e.CA = ca.Cert
	serverCert, serverKey := ca.Issue(t, "server", true)
	e.ClientCert, e.ClientKey = ca.Issue(t, "client", false)
	e.OtherCA = NewCA(t, e.Dir, "other-ca").Cert
	for attempt := 1; ; attempt++ {
		dir := t.TempDir()
		if err := os.Chmod(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		client, peer := FreePort(t), FreePort(t)
		clientURL := "https://" + Addr(client)
		peerURL := "http://" + Addr(peer)
		p := Start(t, "etcd-tls", bin,
			"--name", "podfs-tls",
			"--data-dir", dir,
			"--listen-client-urls", clientURL,
			"--advertise-client-urls", clientURL,
			"--listen-peer-urls", peerURL,
			"--initial-advertise-peer-urls", peerURL,
			"--initial-cluster", "podfs-tls="+peerURL,
			"--initial-cluster-state", "new",
			"--cert-file", serverCert,
			"--key-file", serverKey,
			"--trusted-ca-file", e.CA,
			"--client-cert-auth",
			"--max-txn-ops", "4096",
			"--logger", "zap",
			"--log-level", "error",
		)
		err := WaitTCP(p, Addr(client), 30*time.Second)
		if err == nil {
			e.Endpoint = Addr(client)
			break
		}
		if attempt < 3 && strings.Contains(p.Output(), "address already in use") {
			continue
		}
		t.Fatalf("etcd with TLS did not start: %v", err)
	}
	e.enableAuth(t)
	return e
}

// TLSConfig is a client configuration the server accepts.
func (e *EtcdTLS) TLSConfig(t testing.TB) *tls.Config {
	t.Helper()
	pem, err := os.ReadFile(e.CA)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pem)
	pair, err := tls.LoadX509KeyPair(e.ClientCert, e.ClientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
}

func (e *EtcdTLS) client(t testing.TB, user, pass string) *clientv3.Client {
	t.Helper()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{e.Endpoint}, TLS: e.TLSConfig(t),
		Username: user, Password: pass, DialTimeout: 10 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatalf("etcd client: %v", err)
	}
	return cli
}

func (e *EtcdTLS) enableAuth(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := e.client(t, "", "")
	defer cli.Close()
	steps := []func() error{
		func() error { _, err := cli.UserAdd(ctx, "root", e.rootPass); return err },
		func() error { _, err := cli.UserGrantRole(ctx, "root", "root"); return err },
		func() error { _, err := cli.AuthEnable(ctx); return err },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("etcd auth setup step %d: %v", i, err)
		}
	}
}

// AddUser makes a user whose role may read and write the keys starting with
// prefix (and nothing else), and writes its password to a file (mode 0600)
// as a mounted Secret would, returning the file.
func (e *EtcdTLS) AddUser(t testing.TB, user, password, prefix string) (passwordFile string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := e.client(t, "root", e.rootPass)
	defer cli.Close()
	role := user + "-role"
	steps := []func() error{
		func() error { _, err := cli.RoleAdd(ctx, role); return err },
		func() error {
			_, err := cli.RoleGrantPermission(ctx, role, prefix, clientv3.GetPrefixRangeEnd(prefix), clientv3.PermissionType(clientv3.PermReadWrite))
			return err
		},
		func() error { _, err := cli.UserAdd(ctx, user, password); return err },
		func() error { _, err := cli.UserGrantRole(ctx, user, role); return err },
	}
	for i, s := range steps {
		if err := s(); err != nil {
			t.Fatalf("etcd user %s, step %d: %v", user, i, err)
		}
	}
	passwordFile = filepath.Join(e.Dir, user+".password")
	// A trailing newline, as `kubectl create secret --from-file` keeps one.
	if err := os.WriteFile(passwordFile, []byte(password+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return passwordFile
}

// URL is an etcds:// metadata URL for volume as user (its password in
// passwordFile) with the server's CA and the accepted client certificate.
func (e *EtcdTLS) URL(user, passwordFile, volume string) string {
	return fmt.Sprintf("etcds://%s@%s/%s?cacert=%s&cert=%s&key=%s&passwordFile=%s",
		user, e.Endpoint, volume, e.CA, e.ClientCert, e.ClientKey, passwordFile)
}
