package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"podfs.io/podfs/sidecar/volumeset"
)

// MutatePath is where the API server sends pod admissions.
const MutatePath = "/mutate-v1-pod"

// maxBody bounds an AdmissionReview (the API server caps objects at 3 MiB).
const maxBody = 8 << 20

// Handler serves MutatePath. It decodes the AdmissionReview itself with
// encoding/json and answers with the patch Mutate built, so a request costs
// one decode of the pod and one small encode: no copy of the pod is
// marshalled or diffed.
type Handler struct {
	Lookup Lookup
	// Namespaces gives a namespace's labels (from a cache).
	Namespaces func(ctx context.Context, name string) (map[string]string, error)
	Config     *ConfigStore
	// Native says whether to inject native sidecars.
	Native  bool
	Log     *slog.Logger
	Metrics *Metrics
}

// ConfigStore holds the current configuration; readers never block.
type ConfigStore struct{ p atomic.Pointer[Config] }

// NewConfigStore starts with c.
func NewConfigStore(c *Config) *ConfigStore {
	s := &ConfigStore{}
	s.p.Store(c)
	return s
}

// Load returns the current configuration.
func (s *ConfigStore) Load() *Config { return s.p.Load() }

// Store replaces it.
func (s *ConfigStore) Store(c *Config) { s.p.Store(c) }

// Metrics counts admissions.
type Metrics struct {
	Admissions *prometheus.CounterVec
	Latency    prometheus.Histogram
}

// NewMetrics registers the webhook's metrics with reg (nil: unregistered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "podfs_webhook_admissions_total",
			Help: "Pod admissions by result: injected, skipped, refused, error.",
		}, []string{"result"}),
		Latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "podfs_webhook_admission_seconds",
			Help:    "Time to decide one pod admission, decode to encode.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 14),
		}),
	}
	if reg != nil {
		reg.MustRegister(m.Admissions, m.Latency)
	}
	return m
}

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		http.Error(w, "POST an AdmissionReview", http.StatusMethodNotAllowed)
		return
	}
	buf := bufPool.Get().(*bytes.Buffer)
	buf.Reset()
	defer bufPool.Put(buf)
	if _, err := buf.ReadFrom(io.LimitReader(r.Body, maxBody+1)); err != nil || buf.Len() > maxBody {
		http.Error(w, "cannot read the request body", http.StatusBadRequest)
		return
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(buf.Bytes(), &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	resp, result := h.admit(r.Context(), review.Request)
	resp.UID = review.Request.UID
	out := admissionv1.AdmissionReview{TypeMeta: review.TypeMeta, Response: resp}
	if out.APIVersion == "" {
		out.APIVersion, out.Kind = "admission.k8s.io/v1", "AdmissionReview"
	}
	buf.Reset()
	if err := json.NewEncoder(buf).Encode(&out); err != nil {
		http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
	if h.Metrics != nil {
		h.Metrics.Admissions.WithLabelValues(result).Inc()
		h.Metrics.Latency.Observe(time.Since(start).Seconds())
	}
}

// admit decides one request; result labels the metric.
func (h *Handler) admit(ctx context.Context, req *admissionv1.AdmissionRequest) (*admissionv1.AdmissionResponse, string) {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" {
		return allow, "skipped"
	}
	var pod corev1.Pod
	if err := json.Unmarshal(req.Object.Raw, &pod); err != nil {
		return deny(http.StatusBadRequest, "decode the pod: "+err.Error()), "error"
	}
	in := Input{Pod: &pod, Namespace: req.Namespace, Native: h.Native, Config: h.Config.Load()}
	if in.Namespace == "" {
		in.Namespace = pod.Namespace
	}
	if h.Namespaces != nil {
		labels, err := h.Namespaces(ctx, in.Namespace)
		if err != nil {
			return deny(http.StatusInternalServerError, fmt.Sprintf("read namespace %q: %v", in.Namespace, err)), "error"
		}
		in.Serverless = labels[volumeset.InjectionLabel] == "serverless"
	}
	ops, err := Mutate(ctx, h.Lookup, in)
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		if h.Log != nil {
			h.Log.Info("pod refused", "namespace", in.Namespace, "pod", podName(&pod), "reason", ref.Msg)
		}
		return deny(http.StatusForbidden, "podfs: "+ref.Msg), "refused"
	case err != nil:
		if h.Log != nil {
			h.Log.Error("admission failed", "namespace", in.Namespace, "pod", podName(&pod), "err", err)
		}
		return deny(http.StatusInternalServerError, "podfs: "+err.Error()), "error"
	case len(ops) == 0:
		return allow, "skipped"
	}
	patch, err := json.Marshal(ops)
	if err != nil {
		return deny(http.StatusInternalServerError, "podfs: encode the patch: "+err.Error()), "error"
	}
	pt := admissionv1.PatchTypeJSONPatch
	allow.Patch, allow.PatchType = patch, &pt
	return allow, "injected"
}

func deny(code int32, msg string) *admissionv1.AdmissionResponse {
	return &admissionv1.AdmissionResponse{Allowed: false, Result: &metav1.Status{
		Status: metav1.StatusFailure, Code: code, Message: msg, Reason: metav1.StatusReasonForbidden}}
}

func podName(p *corev1.Pod) string {
	if p.Name != "" {
		return p.Name
	}
	return p.GenerateName + "*"
}
