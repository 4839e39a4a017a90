package kv

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/tikv/client-go/v2/config"
	"github.com/tikv/client-go/v2/txnkv"
)

// TiKVConfig says how to reach TiKV's placement driver (PD).
type TiKVConfig struct {
	PD      []string // host:port each
	Volume  string   // for names and messages
	Prefix  []byte   // every key of the volume starts with it
	Timeout time.Duration
	// TLS, when set, is client-go's security configuration: CA, client
	// certificate and key (client-go turns TLS on only with a CA).
	TLS *TLSFiles
}

// TiKVSecurity is client-go's security configuration for the files.
func TiKVSecurity(f *TLSFiles) config.Security {
	if f == nil {
		return config.Security{}
	}
	return config.NewSecurity(f.CA, f.Cert, f.Key, nil)
}

// tikvSecurity is the process's one client-go security configuration.
// client-go reads it from its global config, and not only in
// txnkv.NewClient (health checks of stores read it later), so every TiKV
// client of a process must share it: OpenTiKV refuses another while a
// client opened with a different one is open. This is the only global
// state in the package, forced by client-go's.
var tikvSecurity struct {
	sync.Mutex
	sec  config.Security
	refs int
}

// acquireTiKVSecurity installs sec as client-go's security configuration,
// or fails if open clients use another. release undoes the acquisition.
func acquireTiKVSecurity(sec config.Security) (release func(), err error) {
	s := &tikvSecurity
	s.Lock()
	defer s.Unlock()
	if s.refs > 0 && !reflect.DeepEqual(s.sec, sec) {
		return nil, fmt.Errorf("this process already has a TiKV client with other TLS settings (ca=%q cert=%q); client-go keeps one per process: serve volumes with other TiKV credentials from another process",
			s.sec.ClusterSSLCA, s.sec.ClusterSSLCert)
	}
	if s.refs == 0 {
		s.sec = sec
		config.UpdateGlobal(func(c *config.Config) { c.Security = sec })
	}
	s.refs++
	var once sync.Once
	return func() {
		once.Do(func() {
			s.Lock()
			s.refs--
			s.Unlock()
		})
	}, nil
}

// OpenTiKV connects to the PD servers. txnkv.NewClient retries for minutes
// when no PD answers, so the attempt is bounded by the timeout.
func OpenTiKV(ctx context.Context, c TiKVConfig) (*TiKV, error) {
	pd := strings.Join(c.PD, ",")
	var conf *tls.Config // for explaining a failure only: client-go reads the files itself
	if c.TLS != nil {
		if c.TLS.CA == "" {
			return nil, fmt.Errorf("tikv %s: TLS needs ca= (client-go turns TLS on only with a CA)", pd)
		}
		// Read the files here, so a bad one is named before client-go
		// retries the connection for the whole timeout.
		var err error
		if conf, err = c.TLS.clientConfig("ca"); err != nil {
			return nil, fmt.Errorf("tikv %s: %w", pd, err)
		}
	}
	if conf != nil {
		// As for etcd: a certificate refused fails at once.
		if why, sure := probeTLS(ctx, c.PD, c.Timeout, c.TLS, conf, tikvTLSHints); sure {
			return nil, fmt.Errorf("tikv: PD %s: %s", pd, why)
		}
	}
	release, err := acquireTiKVSecurity(TiKVSecurity(c.TLS))
	if err != nil {
		return nil, fmt.Errorf("tikv %s: %w", pd, err)
	}
	type result struct {
		c   *txnkv.Client
		err error
	}
	ch := make(chan result, 1)
	go func() {
		c, err := txnkv.NewClient(c.PD)
		ch <- result{c, err}
	}()
	t := time.NewTimer(c.Timeout)
	defer t.Stop()
	var r result
	select {
	case r = <-ch:
	case <-t.C:
		r.err = fmt.Errorf("no answer within %s", c.Timeout)
	case <-ctx.Done():
		r.err = ctx.Err()
	}
	if r.c == nil && r.err == nil {
		r.err = errors.New("no client")
	}
	if r.err != nil {
		// A late client is closed when it arrives, unused: another
		// configuration may take client-go's global one meanwhile.
		release()
		go func() {
			if late := <-ch; late.c != nil {
				late.c.Close()
			}
		}()
		if why, _ := probeTLS(ctx, c.PD, c.Timeout, c.TLS, conf, tikvTLSHints); why != "" {
			return nil, fmt.Errorf("tikv: PD %s: %s (connect: %w)", pd, why, r.err)
		}
		return nil, fmt.Errorf("tikv: connect to PD %s: %w (is PD running and reachable from here?)", pd, r.err)
	}
	e := NewTiKV(r.c, "tikv://"+pd+"/"+c.Volume, c.Prefix)
	e.owned = true
	e.done = release
	return e, nil
}

var tikvTLSHints = tlsHints{
	caParam: "ca",
	useTLS:  "add ca= (and cert= and key= if it asks for a client certificate)",
	noTLS:   "drop ca=, cert= and key= from the URL",
}
