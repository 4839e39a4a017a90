package webhook

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// CachedLookup reads PVCs, PVs and StorageClasses from informer caches. A
// miss is retried once against the API server, because an object created a
// moment before the pod (kubectl apply -f of both) may not have reached the
// cache yet; hits, the common case, cost no round trip.
type CachedLookup struct {
	Cache client.Reader
	API   client.Reader // uncached; nil = trust the cache's misses
}

func (l *CachedLookup) get(ctx context.Context, key types.NamespacedName, obj client.Object) error {
	err := l.Cache.Get(ctx, key, obj)
	if apierrors.IsNotFound(err) && l.API != nil {
		err = l.API.Get(ctx, key, obj)
	}
	return err
}

func (l *CachedLookup) PVC(ctx context.Context, ns, name string) (*corev1.PersistentVolumeClaim, error) {
	var o corev1.PersistentVolumeClaim
	return &o, l.get(ctx, types.NamespacedName{Namespace: ns, Name: name}, &o)
}

func (l *CachedLookup) PV(ctx context.Context, name string) (*corev1.PersistentVolume, error) {
	var o corev1.PersistentVolume
	return &o, l.get(ctx, types.NamespacedName{Name: name}, &o)
}

func (l *CachedLookup) StorageClass(ctx context.Context, name string) (*storagev1.StorageClass, error) {
	var o storagev1.StorageClass
	return &o, l.get(ctx, types.NamespacedName{Name: name}, &o)
}

// NamespaceLabels returns a namespace's labels from the cache.
func (l *CachedLookup) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	var o corev1.Namespace
	if err := l.get(ctx, types.NamespacedName{Name: name}, &o); err != nil {
		return nil, err
	}
	return o.Labels, nil
}
