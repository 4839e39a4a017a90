package kv

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"
)

// TLSFiles names the PEM files of a TLS client. Files are how a Kubernetes
// Secret reaches the sidecar (a mounted Secret volume).
type TLSFiles struct {
	CA   string // the CA that signed the server's certificate; empty: the system's pool
	Cert string // a client certificate (with Key), for servers that ask for one
	Key  string // the client certificate's private key
}

// mountHint is the likely cause of a credential file that is not there.
func mountHint(err error) string {
	if errors.Is(err, os.ErrNotExist) {
		return " (is the Secret holding it mounted there?)"
	}
	return ""
}

// caName names the trust roots in messages.
func (f *TLSFiles) caName(param string) string {
	if f.CA == "" {
		return "the system's CA pool (no " + param + "= in the URL)"
	}
	return param + " " + f.CA
}

// clientConfig reads the files into a tls.Config. caParam names the URL
// parameter of the CA file, for messages.
func (f *TLSFiles) clientConfig(caParam string) (*tls.Config, error) {
	c := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.CA != "" {
		pem, err := os.ReadFile(f.CA)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w%s", caParam, err, mountHint(err))
		}
		c.RootCAs = x509.NewCertPool()
		if !c.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s %s holds no PEM certificate", caParam, f.CA)
		}
	}
	if (f.Cert == "") != (f.Key == "") {
		return nil, fmt.Errorf("a client certificate needs both cert= and key= (got cert=%q, key=%q)", f.Cert, f.Key)
	}
	if f.Cert != "" {
		pair, err := tls.LoadX509KeyPair(f.Cert, f.Key)
		if err != nil {
			return nil, fmt.Errorf("load the client certificate cert=%s key=%s: %w%s", f.Cert, f.Key, err, mountHint(err))
		}
		c.Certificates = []tls.Certificate{pair}
	}
	return c, nil
}

// tlsHints are the URL's words for TLS, for messages.
type tlsHints struct {
	caParam string // the URL parameter naming the CA file
	useTLS  string // how to ask for TLS
	noTLS   string // how to ask for plain TCP
}

// probeTLS shakes hands with the first endpoint that takes a TCP
// connection and describes what went wrong, or returns "" when it cannot
// tell (nothing listens, or the handshake succeeds). sure says the failure
// is certain to stop the real client too (a certificate refused by either
// side, or no TLS where TLS is wanted), so it need not be tried. files and
// conf are nil when the URL asks for no TLS.
func probeTLS(ctx context.Context, endpoints []string, timeout time.Duration, files *TLSFiles, conf *tls.Config, h tlsHints) (why string, sure bool) {
	d := net.Dialer{Timeout: min(timeout, 5*time.Second)}
	for _, ep := range endpoints {
		raw, err := d.DialContext(ctx, "tcp", ep)
		if err != nil {
			continue
		}
		defer raw.Close()
		_ = raw.SetDeadline(time.Now().Add(d.Timeout))
		if conf == nil {
			// Does the server want TLS that the URL does not ask for?
			conn := tls.Client(raw, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS12}) //nolint:gosec // only asks whether the server speaks TLS
			if conn.Handshake() == nil {
				return "the server speaks TLS: " + h.useTLS, true
			}
			return "", false
		}
		host, _, _ := net.SplitHostPort(ep)
		pc := conf.Clone()
		pc.ServerName = host
		// TLS 1.2 fails the handshake itself when the server refuses the
		// client certificate (1.3 tells only after it).
		pc.MaxVersion = tls.VersionTLS12
		err = tls.Client(raw, pc).Handshake()
		if err == nil {
			return "", false
		}
		return describeTLS(ep, files, h, err)
	}
	return "", false
}

// describeTLS names the TLS credential a handshake error points at; sure as
// for probeTLS.
func describeTLS(ep string, f *TLSFiles, h tlsHints, err error) (why string, sure bool) {
	caParam := h.caParam
	msg := err.Error()
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	var host x509.HostnameError
	var rec tls.RecordHeaderError
	switch {
	case errors.As(err, &unknown):
		return fmt.Sprintf("TLS handshake with %s: certificate signed by unknown authority for %s (is it the CA that signed the server's certificate?)", ep, f.caName(caParam)), true
	case errors.As(err, &host):
		return fmt.Sprintf("TLS handshake with %s: the server's certificate is not valid for %s: %v (name the server by an address its certificate lists)", ep, ep, err), true
	case errors.As(err, &invalid):
		return fmt.Sprintf("TLS handshake with %s: the server's certificate is not valid (checked against %s): %v", ep, f.caName(caParam), err), true
	case errors.As(err, &rec):
		return fmt.Sprintf("TLS handshake with %s: the server does not speak TLS: %s", ep, h.noTLS), true
	case strings.Contains(msg, "bad certificate"), strings.Contains(msg, "certificate required"), strings.Contains(msg, "unknown certificate authority"):
		if f.Cert == "" {
			return fmt.Sprintf("TLS handshake with %s: the server requires a client certificate: add cert= and key= (%v)", ep, err), true
		}
		return fmt.Sprintf("TLS handshake with %s: the server refused the client certificate cert=%s (is it signed by a CA the server trusts?): %v", ep, f.Cert, err), true

	case strings.Contains(msg, "handshake failure"):
		// Go servers (and others) answer a missing or refused client
		// certificate with this generic alert, as they do other mismatches.
		if f.Cert == "" {
			return fmt.Sprintf("TLS handshake with %s refused: the server probably requires a client certificate: add cert= and key= (%v)", ep, err), false
		}
		return fmt.Sprintf("TLS handshake with %s refused: does the server accept the client certificate cert=%s? (%v)", ep, f.Cert, err), false
	}
	return fmt.Sprintf("TLS handshake with %s: %v", ep, err), false
}
