package meta

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/tikv/client-go/v2/config"

	"podfs.io/podfs/internal/testenv"
	"podfs.io/podfs/pkg/meta/kv"
)

func TestParseURLCredentials(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want *ParsedURL
	}{
		{"etcd://podfs:pw@127.0.0.1:2379/vol", &ParsedURL{Scheme: "etcd", Hosts: []string{"127.0.0.1:2379"}, Volume: "vol", User: "podfs", Password: "pw"}},
		{"etcd://podfs:p%40ss%2Fw@h:1/vol", &ParsedURL{Scheme: "etcd", Hosts: []string{"h:1"}, Volume: "vol", User: "podfs", Password: "p@ss/w"}},
		{"etcd://podfs@h:1,h:2/vol?passwordFile=/s/pw", &ParsedURL{Scheme: "etcd", Hosts: []string{"h:1", "h:2"}, Volume: "vol", User: "podfs", PasswordFile: "/s/pw"}},
		{"etcds://h:1/vol", &ParsedURL{Scheme: "etcd", Hosts: []string{"h:1"}, Volume: "vol", TLS: &kv.TLSFiles{}}},
		{"etcd://h:1/vol?cacert=/s/ca.crt", &ParsedURL{Scheme: "etcd", Hosts: []string{"h:1"}, Volume: "vol", TLS: &kv.TLSFiles{CA: "/s/ca.crt"}}},
		{"etcds://u@h:1/vol?cacert=/s/ca&cert=/s/c&key=/s/k&passwordFile=/s/pw", &ParsedURL{Scheme: "etcd", Hosts: []string{"h:1"}, Volume: "vol",
			User: "u", PasswordFile: "/s/pw", TLS: &kv.TLSFiles{CA: "/s/ca", Cert: "/s/c", Key: "/s/k"}}},
		{"tikv://pd:2379/vol?ca=/s/ca&cert=/s/c&key=/s/k", &ParsedURL{Scheme: "tikv", Hosts: []string{"pd:2379"}, Volume: "vol",
			TLS: &kv.TLSFiles{CA: "/s/ca", Cert: "/s/c", Key: "/s/k"}}},
		{"tikv://pd:2379/vol?ca=/s/ca", &ParsedURL{Scheme: "tikv", Hosts: []string{"pd:2379"}, Volume: "vol", TLS: &kv.TLSFiles{CA: "/s/ca"}}},
	} {
		got, err := ParseURL(tc.url)
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("ParseURL(%q) = %+v, %v; want %+v", tc.url, got, err, tc.want)
		}
	}
	for _, tc := range []struct{ url, want string }{
		{"etcd://h:1/vol?cafile=/x", `unknown parameter "cafile" for etcd (known: cacert, cert, key, passwordFile)`},
		{"tikv://h:1/vol?cacert=/x", `unknown parameter "cacert" for tikv (known: ca, cert, key)`},
		{"etcd://h:1/vol?cacert=ca.crt", "must be an absolute file path"},
		{"etcd://h:1/vol?cert=/c", "needs both cert= and key="},
		{"etcd://h:1/vol?key=/k", "needs both cert= and key="},
		{"tikv://h:1/vol?cert=/c&key=/k", "TLS to TiKV needs ca="},
		{"etcd://h:1/vol?passwordFile=/p", "passwordFile= needs a user"},
		{"etcd://u:secretpw@h:1/vol?passwordFile=/p", "give the password once"},
		{"etcd://u@h:1/vol", `user "u" has no password`},
		{"etcd://u:@h:1/vol", "password after 'user:' is empty"},
		{"tikv://u:secretpw@h:1/vol", "tikv takes no user or password"},
		{"etcd://h:1/vol?cacert=/a&cacert=/b", "given 2 times"},
	} {
		_, err := ParseURL(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), URLForms) {
			t.Errorf("ParseURL(%q): %v; want an error containing %q and the accepted forms", tc.url, err, tc.want)
		} else if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("ParseURL(%q): error shows the password: %v", tc.url, err)
		}
	}
}

// A TiKV URL's TLS files become client-go's config.Security, installed in
// client-go's global config where txnkv.NewClient and its store health
// checks read it; a second client with other settings is refused while
// the first is open. A real TiKV cannot run here (see docs/install.md):
// the connection goes to a port where nothing listens.
func TestTiKVSecurity(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	cert, key := ca.Issue(t, "client", false)
	p, err := ParseURL(fmt.Sprintf("tikv://127.0.0.1:1/vol?ca=%s&cert=%s&key=%s", ca.Cert, cert, key))
	if err != nil {
		t.Fatal(err)
	}
	want := config.Security{ClusterSSLCA: ca.Cert, ClusterSSLCert: cert, ClusterSSLKey: key}
	if got := kv.TiKVSecurity(p.TLS); !reflect.DeepEqual(got, want) {
		t.Fatalf("TiKVSecurity = %+v, want %+v", got, want)
	}
	if got := kv.TiKVSecurity(nil); !reflect.DeepEqual(got, config.Security{}) {
		t.Fatalf("TiKVSecurity(nil) = %+v, want none", got)
	}
	tc, err := want.ToTLSConfig()
	if err != nil || tc == nil || tc.RootCAs == nil || tc.GetClientCertificate == nil && len(tc.Certificates) == 0 {
		t.Fatalf("client-go's TLS config from the files: %+v, %v", tc, err)
	}

	// Open (through the engine constructor, with a PD that never answers)
	// installs the security config before connecting.
	ctx := context.Background()
	opt := testOptions()
	opt.ConnectTimeout = 500 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, err := Open(ctx, "tikv://"+testenv.Addr(testenv.FreePort(t))+"/vol?ca="+ca.Cert+"&cert="+cert+"&key="+key, opt)
		done <- err
	}()
	// Read while the open is in flight.
	deadline := time.Now().Add(30 * time.Second)
	for !reflect.DeepEqual(config.GetGlobalConfig().Security, want) {
		if time.Now().After(deadline) {
			t.Fatalf("client-go's global security = %+v, want %+v", config.GetGlobalConfig().Security, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := <-done; err == nil || !strings.Contains(err.Error(), "connect to PD") {
		t.Fatalf("open with an unreachable PD: %v", err)
	}
	// Another configuration is refused only while a client holds one.
	if _, err := kv.OpenTiKV(ctx, kv.TiKVConfig{PD: []string{"127.0.0.1:1"}, Timeout: 200 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "connect to PD") {
		t.Fatalf("open without TLS after the failed one: %v", err)
	}

	// Files that do not load are named before any connection.
	for _, tc := range []struct{ url, want string }{
		{"tikv://127.0.0.1:1/vol?ca=" + filepath.Join(dir, "none.crt"), "read ca: open " + filepath.Join(dir, "none.crt")},
		{"tikv://127.0.0.1:1/vol?ca=" + key, "ca " + key + " holds no PEM certificate"},
		{"tikv://127.0.0.1:1/vol?ca=" + ca.Cert + "&cert=" + cert + "&key=" + ca.Cert, "load the client certificate cert=" + cert},
	} {
		_, err := Open(ctx, tc.url, opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s): %v; want an error containing %q", tc.url, err, tc.want)
		}
	}
}

// A PD address that speaks TLS with a certificate the URL's CA did not
// sign, or that wants a client certificate the URL lacks: the error names
// the file at fault. A TLS listener stands in for PD (the handshake is all
// that is checked; a real PD cannot run here).
func TestTiKVTLSErrors(t *testing.T) {
	dir := t.TempDir()
	ca := testenv.NewCA(t, dir, "ca")
	other := testenv.NewCA(t, dir, "other")
	srvCert, srvKey := ca.Issue(t, "pd", true)
	cliCert, cliKey := ca.Issue(t, "client", false)
	pair, err := tls.LoadX509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(ca.Cert)
	pool.AppendCertsFromPEM(pem)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair},
		ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: pool, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	pd := l.Addr().String()
	opt := testOptions()
	opt.ConnectTimeout = time.Second
	for _, tc := range []struct{ url, want string }{
		{"tikv://" + pd + "/vol?ca=" + other.Cert + "&cert=" + cliCert + "&key=" + cliKey,
			"certificate signed by unknown authority for ca " + other.Cert},
		{"tikv://" + pd + "/vol?ca=" + ca.Cert,
			"requires a client certificate: add cert= and key="},
		{"tikv://" + pd + "/vol",
			"the server speaks TLS: add ca="},
	} {
		_, err := Open(context.Background(), tc.url, opt)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Open(%s): %v\nwant an error containing %q", tc.url, err, tc.want)
		}
	}
}

// etcd with TLS (client certificates required) and auth on: a user whose
// role covers its volumes formats, creates and reads through podfs; each
// wrong credential fails with an error naming it.
func TestEtcdTLSAuth(t *testing.T) {
	e := testenv.StartEtcdTLS(t)
	// The role covers the volumes t1, t2, ... ("podfs\x00t..."), not others.
	pwFile := e.AddUser(t, "podfs", "podfs-pw", "podfs\x00t")
	ctx := context.Background()

	for i, tc := range conformance {
		if tc.name != "format" && tc.name != "create-lookup" && tc.name != "chunks" && tc.name != "readdir" {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			m, err := Open(ctx, e.URL("podfs", pwFile, fmt.Sprintf("t%d", i)), testOptions())
			if err != nil {
				t.Fatal(err)
			}
			c := m.(*Client)
			defer c.Close(ctx)
			ok(t, c.Init(ctx, Format{Name: "test", Storage: "file:///tmp/x"}))
			ok(t, errOf(c.Load(ctx)))
			tc.fn(t, c)
			checkClean(t, c)
		})
	}

	base := fmt.Sprintf("etcds://podfs@%s/t0?passwordFile=%s&", e.Endpoint, pwFile)
	clientCert := "&cert=" + e.ClientCert + "&key=" + e.ClientKey
	wrongPw := filepath.Join(e.Dir, "wrong.password")
	if err := os.WriteFile(wrongPw, []byte("not-it\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, url string
		want      []string
	}{
		{"no client certificate", base + "cacert=" + e.CA,
			[]string{"TLS handshake with " + e.Endpoint, "requires a client certificate: add cert= and key="}},
		{"wrong CA", base + "cacert=" + e.OtherCA + clientCert,
			[]string{"certificate signed by unknown authority for cacert " + e.OtherCA}},
		{"no TLS", fmt.Sprintf("etcd://podfs@%s/t0?passwordFile=%s", e.Endpoint, pwFile),
			[]string{"the server speaks TLS: use etcds://"}},
		{"wrong password in a file", fmt.Sprintf("etcds://podfs@%s/t0?passwordFile=%s&cacert=%s", e.Endpoint, wrongPw, e.CA) + clientCert,
			[]string{`auth failed for user "podfs"`, "passwordFile " + wrongPw}},
		{"wrong password in the URL", fmt.Sprintf("etcds://podfs:not-it@%s/t0?cacert=%s", e.Endpoint, e.CA) + clientCert,
			[]string{`auth failed for user "podfs"`, "the password in the URL"}},
		{"unknown user", fmt.Sprintf("etcds://nobody@%s/t0?passwordFile=%s&cacert=%s", e.Endpoint, pwFile, e.CA) + clientCert,
			[]string{`auth failed for user "nobody"`}},
		{"volume outside the role", fmt.Sprintf("etcds://podfs@%s/other?passwordFile=%s&cacert=%s", e.Endpoint, pwFile, e.CA) + clientCert,
			[]string{`user "podfs" may not read volume "other"`, "grant its role readwrite"}},
		{"no user", fmt.Sprintf("etcds://%s/t0?cacert=%s", e.Endpoint, e.CA) + clientCert,
			[]string{"has auth enabled and the URL names no user", "etcd://USER@host:port/volume?passwordFile=PATH"}},
		{"missing password file", fmt.Sprintf("etcds://podfs@%s/t0?passwordFile=%s&cacert=%s", e.Endpoint, filepath.Join(e.Dir, "none"), e.CA) + clientCert,
			[]string{"read passwordFile: open " + filepath.Join(e.Dir, "none")}},
		{"missing CA file", base + "cacert=" + filepath.Join(e.Dir, "none.crt") + clientCert,
			[]string{"read cacert: open " + filepath.Join(e.Dir, "none.crt")}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opt := testOptions()
			opt.ConnectTimeout = 3 * time.Second
			m, err := Open(ctx, tc.url, opt)
			if err == nil {
				m.Close(ctx)
				t.Fatal("opened")
			}
			t.Log(err)
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q\nwant it to contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "not-it") {
				t.Errorf("error shows the password: %v", err)
			}
		})
	}
}
