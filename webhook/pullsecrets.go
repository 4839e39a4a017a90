package webhook

import (
	"context"
	"fmt"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// SecretChecker tells whether a Secret exists.
type SecretChecker interface {
	SecretExists(ctx context.Context, namespace, name string) (bool, error)
}

// SecretMetadata checks a Secret's existence with one GET of its metadata
// (never its data) per name and admission, remembering the ones it found
// for TTL, so a burst of pods costs one request. Neither list nor watch:
// RBAC grants get on the configured names only (a ClusterRole rule with
// resourceNames), so the webhook can read no other Secret. A missing
// Secret is never remembered: creating it takes effect at once.
type SecretMetadata struct {
	Reader client.Reader // uncached (the manager's API reader)
	TTL    time.Duration // default 1m
	Now    func() time.Time

	mu    sync.Mutex
	found map[types.NamespacedName]time.Time
}

// SecretExists implements SecretChecker.
func (s *SecretMetadata) SecretExists(ctx context.Context, namespace, name string) (bool, error) {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	ttl := s.TTL
	if ttl == 0 {
		ttl = time.Minute
	}
	key := types.NamespacedName{Namespace: namespace, Name: name}
	s.mu.Lock()
	at, ok := s.found[key]
	s.mu.Unlock()
	if ok && now().Sub(at) < ttl {
		return true, nil
	}
	obj := &metav1.PartialObjectMetadata{}
	obj.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Secret"))
	err := s.Reader.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read Secret %s: %w", key, err)
	}
	s.mu.Lock()
	if s.found == nil {
		s.found = map[types.NamespacedName]time.Time{}
	}
	if len(s.found) > 10000 { // bounded: forget all, refill on demand
		clear(s.found)
	}
	s.found[key] = now()
	s.mu.Unlock()
	return true, nil
}

// pullSecretWarnings names the pull secrets missing from namespace ns.
func (h *Handler) pullSecretWarnings(ctx context.Context, ns string, names []string) []string {
	if h.Secrets == nil {
		return nil
	}
	var out []string
	for _, n := range names {
		ok, err := h.Secrets.SecretExists(ctx, ns, n)
		if err != nil {
			if h.Log != nil {
				h.Log.Warn("cannot check the sidecar's imagePullSecret", "namespace", ns, "secret", n, "err", err)
			}
			continue
		}
		if !ok {
			out = append(out, fmt.Sprintf("podfs: imagePullSecret %q, added for the podfs sidecar's image, does not exist in namespace %q: the image pull may fail; create it there (kubectl -n %s create secret docker-registry %s ...)", n, ns, ns, n))
		}
	}
	return out
}
