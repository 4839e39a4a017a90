package webhook

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Keys of the CA Secret.
const (
	caCertKey = "ca.crt"
	caKeyKey  = "ca.key"
)

// CertManager keeps the webhook's TLS: a CA persisted in a Secret (so every
// replica signs with the same CA and the one caBundle fits all of them), a
// serving certificate each replica issues itself in memory, and the CA
// bundle patched into the MutatingWebhookConfiguration. Certificates are
// ECDSA P-256: cheap handshakes.
type CertManager struct {
	// Client reads and writes the Secret and the webhook configuration
	// directly (no cache: the webhook does not watch Secrets).
	Client          client.Client
	SecretNamespace string
	SecretName      string
	// WebhookConfig names the MutatingWebhookConfiguration to patch; "" = none.
	WebhookConfig string
	DNSNames      []string
	IPs           []net.IP
	CAValidity    time.Duration // default 10 years
	CertValidity  time.Duration // default 1 year
	// Renewal happens once less than a third of the validity is left.
	Log *slog.Logger
	Now func() time.Time // for tests; default time.Now

	mu       sync.RWMutex
	ca       *x509.Certificate
	caKey    *ecdsa.PrivateKey
	bundle   []byte // PEM of the CA(s) clients must trust
	cert     *tls.Certificate
	certLeaf *x509.Certificate
}

func (m *CertManager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

func (m *CertManager) defaults() {
	if m.CAValidity == 0 {
		m.CAValidity = 10 * 365 * 24 * time.Hour
	}
	if m.CertValidity == 0 {
		m.CertValidity = 365 * 24 * time.Hour
	}
	if m.Log == nil {
		m.Log = slog.New(slog.DiscardHandler)
	}
}

// GetCertificate serves the current certificate (tls.Config.GetCertificate).
func (m *CertManager) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	if m.cert == nil {
		return nil, errors.New("no serving certificate yet")
	}
	return m.cert, nil
}

// CABundle is the PEM clients must trust.
func (m *CertManager) CABundle() []byte {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return bytes.Clone(m.bundle)
}

// Ensure loads or creates the CA, renews it and the serving certificate when
// due, and patches the CA bundle into the webhook configuration. Run it at
// start (before serving) and periodically.
func (m *CertManager) Ensure(ctx context.Context) error {
	if err := m.ensureServing(ctx, true); err != nil {
		return err
	}
	if m.WebhookConfig != "" {
		return m.patchBundle(ctx)
	}
	return nil
}

// ensureServing loads the CA (creating it when missing, rotating it when
// due and rotate is set) and renews the serving certificate when due.
func (m *CertManager) ensureServing(ctx context.Context, rotate bool) error {
	m.defaults()
	if err := m.ensureCA(ctx, rotate); err != nil {
		return err
	}
	m.mu.RLock()
	due := m.certLeaf == nil || m.renewDue(m.certLeaf) || m.certLeaf.AuthorityKeyId == nil || !bytes.Equal(m.certLeaf.AuthorityKeyId, m.ca.SubjectKeyId)
	m.mu.RUnlock()
	if due {
		if err := m.issue(); err != nil {
			return err
		}
	}
	return nil
}

// Run calls Ensure every interval until ctx ends; errors are logged and
// retried (the current certificate keeps serving). With several replicas
// only the leader runs it: CA rotation and the caBundle have one writer.
func (m *CertManager) Run(ctx context.Context, interval time.Duration) error {
	return m.every(ctx, interval, m.Ensure)
}

// RunServing keeps this replica's serving certificate signed by the
// current CA and renewed, every interval; every replica runs it. It rotates
// nothing: a CA past two thirds of its life keeps signing until the leader
// has rotated it.
func (m *CertManager) RunServing(ctx context.Context, interval time.Duration) error {
	return m.every(ctx, interval, func(ctx context.Context) error { return m.ensureServing(ctx, false) })
}

func (m *CertManager) every(ctx context.Context, interval time.Duration, f func(context.Context) error) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := f(ctx); err != nil {
				m.Log.Error("renew webhook certificates", "err", err)
			}
		}
	}
}

func (m *CertManager) renewDue(c *x509.Certificate) bool {
	life := c.NotAfter.Sub(c.NotBefore)
	return m.now().After(c.NotAfter.Add(-life / 3))
}

// ensureCA reads the CA Secret, creating or rotating it. Replicas race
// through optimistic concurrency: whoever loses re-reads the winner's CA.
func (m *CertManager) ensureCA(ctx context.Context, rotate bool) error {
	for attempt := 0; attempt < 5; attempt++ {
		var s corev1.Secret
		err := m.Client.Get(ctx, types.NamespacedName{Namespace: m.SecretNamespace, Name: m.SecretName}, &s)
		switch {
		case apierrors.IsNotFound(err):
			certPEM, keyPEM, err := m.newCA()
			if err != nil {
				return err
			}
			s = corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Namespace: m.SecretNamespace, Name: m.SecretName},
				Type:       corev1.SecretTypeOpaque,
				Data:       map[string][]byte{caCertKey: certPEM, caKeyKey: keyPEM},
			}
			if err := m.Client.Create(ctx, &s); apierrors.IsAlreadyExists(err) {
				continue
			} else if err != nil {
				return fmt.Errorf("create CA Secret %s/%s: %w", m.SecretNamespace, m.SecretName, err)
			}
			m.Log.Info("created webhook CA", "secret", m.SecretNamespace+"/"+m.SecretName)
		case apierrors.IsForbidden(err):
			// No RBAC for Secrets: a CA of our own, in memory. Fine for one
			// replica; replicas would each patch their own bundle in.
			m.mu.RLock()
			have := m.ca != nil && !m.renewDue(m.ca)
			m.mu.RUnlock()
			if have {
				return nil
			}
			m.Log.Warn("cannot read the CA Secret; keeping the CA in memory (grant get/create/update on secrets for replicas to share one)", "secret", m.SecretNamespace+"/"+m.SecretName, "err", err)
			certPEM, keyPEM, err := m.newCA()
			if err != nil {
				return err
			}
			ca, key, bundle, err := parseCASecret(&corev1.Secret{Data: map[string][]byte{caCertKey: certPEM, caKeyKey: keyPEM}})
			if err != nil {
				return err
			}
			m.mu.Lock()
			m.ca, m.caKey, m.bundle = ca, key, bundle
			m.mu.Unlock()
			return nil
		case err != nil:
			return fmt.Errorf("read CA Secret %s/%s: %w", m.SecretNamespace, m.SecretName, err)
		}
		ca, key, bundle, err := parseCASecret(&s)
		if err != nil {
			return fmt.Errorf("CA Secret %s/%s: %w; delete it to have a new CA made", m.SecretNamespace, m.SecretName, err)
		}
		if rotate && m.renewDue(ca) {
			// Rotate: the new CA signs from now on; the bundle keeps the
			// old one until it expires so certificates of replicas that
			// have not renewed yet still verify.
			certPEM, keyPEM, err := m.newCA()
			if err != nil {
				return err
			}
			s.Data = map[string][]byte{caCertKey: append(certPEM, bundle...), caKeyKey: keyPEM}
			if err := m.Client.Update(ctx, &s); apierrors.IsConflict(err) {
				continue
			} else if err != nil {
				return fmt.Errorf("rotate CA in Secret %s/%s: %w", m.SecretNamespace, m.SecretName, err)
			}
			m.Log.Info("rotated webhook CA", "old_expiry", ca.NotAfter)
			continue
		}
		m.mu.Lock()
		m.ca, m.caKey, m.bundle = ca, key, pruneExpired(bundle, m.now())
		m.mu.Unlock()
		return nil
	}
	return fmt.Errorf("CA Secret %s/%s keeps changing under us; retry later", m.SecretNamespace, m.SecretName)
}

func (m *CertManager) newCA() (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := m.now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial(),
		Subject:               pkix.Name{CommonName: "podfs-webhook-ca"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(m.CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("sign CA: %w", err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), nil
}

// parseCASecret returns the signing CA (first certificate), its key and the
// whole bundle.
func parseCASecret(s *corev1.Secret) (*x509.Certificate, *ecdsa.PrivateKey, []byte, error) {
	bundle := s.Data[caCertKey]
	b, _ := pem.Decode(bundle)
	if b == nil {
		return nil, nil, nil, fmt.Errorf("%s holds no PEM certificate", caCertKey)
	}
	ca, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse %s: %w", caCertKey, err)
	}
	kb, _ := pem.Decode(s.Data[caKeyKey])
	if kb == nil {
		return nil, nil, nil, fmt.Errorf("%s holds no PEM key", caKeyKey)
	}
	key, err := x509.ParseECPrivateKey(kb.Bytes)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse %s: %w", caKeyKey, err)
	}
	if !key.PublicKey.Equal(ca.PublicKey) {
		return nil, nil, nil, fmt.Errorf("%s does not match %s", caKeyKey, caCertKey)
	}
	return ca, key, bundle, nil
}

// pruneExpired drops expired certificates from a PEM bundle.
func pruneExpired(bundle []byte, now time.Time) []byte {
	var out []byte
	for rest := bundle; ; {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			return out
		}
		if c, err := x509.ParseCertificate(b.Bytes); err == nil && now.Before(c.NotAfter) {
			out = append(out, pem.EncodeToMemory(b)...)
		}
	}
}

// issue signs a new serving certificate with the current CA.
func (m *CertManager) issue() error {
	m.mu.RLock()
	ca, caKey := m.ca, m.caKey
	m.mu.RUnlock()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generate serving key: %w", err)
	}
	now := m.now()
	notAfter := now.Add(m.CertValidity)
	if notAfter.After(ca.NotAfter) {
		notAfter = ca.NotAfter
	}
	cn := "podfs-webhook"
	if len(m.DNSNames) > 0 {
		cn = m.DNSNames[0]
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: cn},
		DNSNames:     m.DNSNames,
		IPAddresses:  m.IPs,
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return fmt.Errorf("sign serving certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return err
	}
	m.mu.Lock()
	m.cert = &tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
	m.certLeaf = leaf
	m.mu.Unlock()
	m.Log.Info("issued webhook serving certificate", "dns", m.DNSNames, "ips", m.IPs, "not_after", leaf.NotAfter)
	return nil
}

// patchBundle writes the CA bundle into every webhook of the configuration
// whose caBundle differs.
func (m *CertManager) patchBundle(ctx context.Context) error {
	bundle := m.CABundle()
	var mwc admissionregistrationv1.MutatingWebhookConfiguration
	if err := m.Client.Get(ctx, types.NamespacedName{Name: m.WebhookConfig}, &mwc); err != nil {
		return fmt.Errorf("read MutatingWebhookConfiguration %q (--webhook-config): %w", m.WebhookConfig, err)
	}
	orig := mwc.DeepCopy()
	changed := false
	for i := range mwc.Webhooks {
		if !bytes.Equal(mwc.Webhooks[i].ClientConfig.CABundle, bundle) {
			mwc.Webhooks[i].ClientConfig.CABundle = bundle
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if err := m.Client.Patch(ctx, &mwc, client.MergeFromWithOptions(orig, client.MergeFromWithOptimisticLock{})); err != nil {
		return fmt.Errorf("patch caBundle into MutatingWebhookConfiguration %q: %w", m.WebhookConfig, err)
	}
	m.Log.Info("patched CA bundle", "webhook_config", m.WebhookConfig)
	return nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}
