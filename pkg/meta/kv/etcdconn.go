package kv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// EtcdConfig says how to reach and authenticate to etcd.
type EtcdConfig struct {
	Endpoints []string // host:port each
	Volume    string   // for names and messages
	Prefix    []byte   // every key of the volume starts with it
	Timeout   time.Duration
	// User and its password (Password, or the contents of PasswordFile)
	// authenticate to an etcd with auth enabled; empty: no auth.
	User, Password, PasswordFile string
	// TLS, when set, makes the connection TLS.
	TLS *TLSFiles
}

// password returns the configured password, reading PasswordFile. A
// trailing newline in the file (echo, kubectl create secret --from-file)
// is not part of it.
func (c *EtcdConfig) password() (string, error) {
	if c.PasswordFile == "" {
		return c.Password, nil
	}
	b, err := os.ReadFile(c.PasswordFile)
	if err != nil {
		return "", fmt.Errorf("read passwordFile: %w%s", err, mountHint(err))
	}
	pw := strings.TrimRight(string(b), "\r\n")
	if pw == "" {
		return "", fmt.Errorf("passwordFile %s is empty", c.PasswordFile)
	}
	return pw, nil
}

// OpenEtcd connects to etcd and checks that it answers within the timeout
// and lets the user read the volume's keys. A failure says which part
// failed: the TLS handshake (and with which CA file), the password, or the
// role's permissions.
func OpenEtcd(ctx context.Context, c EtcdConfig) (*Etcd, error) {
	hosts := strings.Join(c.Endpoints, ",")
	scheme := "etcd"
	var tlsConf *tls.Config
	if c.TLS != nil {
		scheme = "etcds"
		var err error
		if tlsConf, err = c.TLS.clientConfig("cacert"); err != nil {
			return nil, fmt.Errorf("etcd %s: %w", hosts, err)
		}
	}
	if c.User == "" && (c.Password != "" || c.PasswordFile != "") {
		return nil, fmt.Errorf("etcd %s: a password needs a user: etcd://USER@host:port/volume?passwordFile=PATH", hosts)
	}
	pw, err := c.password()
	if err != nil {
		return nil, fmt.Errorf("etcd %s: %w", hosts, err)
	}
	if c.User != "" && pw == "" {
		return nil, fmt.Errorf("etcd %s: user %q has no password: add passwordFile=PATH (or user:password@ in the URL)", hosts, c.User)
	}
	if tlsConf != nil {
		// A certificate refused by either side fails at once here; the
		// client would retry it for the whole timeout.
		if why, sure := probeTLS(ctx, c.Endpoints, c.Timeout, c.TLS, tlsConf, etcdTLSHints); sure {
			return nil, fmt.Errorf("etcd %s: %s", hosts, why)
		}
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints:   c.Endpoints,
		DialTimeout: c.Timeout,
		TLS:         tlsConf,
		Username:    c.User,
		Password:    pw,
		Logger:      zap.NewNop(),
		Context:     context.WithoutCancel(ctx),
	})
	if err != nil {
		// With credentials the client authenticates, and over TLS it
		// shakes hands, before New returns.
		return nil, explainEtcd(ctx, c, tlsConf, err)
	}
	cctx, cancel := context.WithTimeout(ctx, c.Timeout)
	defer cancel()
	// A key inside the volume's range: a user whose role covers only the
	// volume may read nothing else.
	if _, err := cli.Get(cctx, string(c.Prefix), clientv3.WithCountOnly()); err != nil {
		cli.Close()
		return nil, explainEtcd(ctx, c, tlsConf, err)
	}
	name := scheme + "://" + hosts + "/" + c.Volume
	if c.User != "" {
		name = scheme + "://" + c.User + "@" + hosts + "/" + c.Volume
	}
	return &Etcd{cli: cli, prefix: string(c.Prefix), name: name}, nil
}

// explainEtcd turns the first request's failure into an error naming the
// credential at fault.
func explainEtcd(ctx context.Context, c EtcdConfig, tlsConf *tls.Config, err error) error {
	hosts := strings.Join(c.Endpoints, ",")
	is := func(target error) bool { return errors.Is(err, target) || rpctypes.Error(err) == target }
	switch {
	case is(rpctypes.ErrAuthFailed):
		from := "the password in the URL"
		if c.PasswordFile != "" {
			from = "passwordFile " + c.PasswordFile
		}
		return fmt.Errorf("etcd %s: auth failed for user %q: wrong user or password (%s): %w", hosts, c.User, from, err)
	case is(rpctypes.ErrUserEmpty), is(rpctypes.ErrInvalidAuthToken):
		return fmt.Errorf("etcd %s has auth enabled: put a user and its password in the URL (etcd://USER@host:port/volume?passwordFile=PATH): %w", hosts, err)
	case is(rpctypes.ErrPermissionDenied) && c.User == "":
		// Over TLS etcd takes the client certificate's common name as the
		// user when the request names none.
		return fmt.Errorf("etcd %s has auth enabled and the URL names no user (etcd then takes the client certificate's common name, if any, as the user), which may not read volume %q: put the user and its password in the URL (etcd://USER@host:port/volume?passwordFile=PATH): %w",
			hosts, c.Volume, err)
	case is(rpctypes.ErrPermissionDenied):
		return fmt.Errorf("etcd %s: user %q may not read volume %q: grant its role readwrite on the key prefix \"podfs\" (or on the volume's own prefix %q): %w",
			hosts, c.User, c.Volume, c.Prefix, err)
	}
	// A transport failure: a handshake of our own says what TLS thinks.
	if why, _ := probeTLS(ctx, c.Endpoints, c.Timeout, c.TLS, tlsConf, etcdTLSHints); why != "" {
		return fmt.Errorf("etcd %s: %s (first request: %w)", hosts, why, err)
	}
	return fmt.Errorf("etcd: no answer from %s within %s: %w (is etcd running and reachable?)", hosts, c.Timeout, err)
}

var etcdTLSHints = tlsHints{
	caParam: "cacert",
	useTLS:  "use etcds:// (with cacert=, and cert= and key= if it asks for a client certificate)",
	noTLS:   "use etcd:// without cacert=, cert= and key=",
}
