package webhook

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	jsoniter "github.com/json-iterator/go"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

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
	// Native says whether to inject native sidecars (the API server runs
	// them, or --native-sidecar=true).
	Native bool
	// Nodes, when set, narrows Native per pod to nodes whose kubelet runs
	// native sidecars (see NodeVersions); nil trusts Native.
	Nodes *NodeVersions
	// Secrets, when set, checks that the sidecar's imagePullSecrets exist
	// in the pod's namespace (a warning names each missing one).
	Secrets SecretChecker
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
		// A second server in one process (tests) shares the collectors.
		m.Admissions = registerOnce(reg, m.Admissions)
		m.Latency = registerOnce(reg, m.Latency)
	}
	return m
}

func registerOnce[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if existing, ok := are.ExistingCollector.(C); ok {
			return existing
		}
	}
	return c
}

// fastJSON decodes and encodes like encoding/json (the Kubernetes types'
// own (Un)MarshalJSON methods included) but about twice as fast; keys are
// matched case-sensitively, as the API server does.
var fastJSON = jsoniter.Config{EscapeHTML: true, SortMapKeys: true, ValidateJsonRawMessage: true, CaseSensitive: true}.Froze()

var bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}

// reviewIn is the part of an AdmissionReview the handler reads, decoded in
// one pass with the pod in place: userInfo, oldObject and options are
// skipped, and the pod's bytes are scanned once.
type reviewIn struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Request    *struct {
		UID         types.UID               `json:"uid"`
		Kind        metav1.GroupVersionKind `json:"kind"`
		SubResource string                  `json:"subResource"`
		Namespace   string                  `json:"namespace"`
		Operation   admissionv1.Operation   `json:"operation"`
		Object      *corev1.Pod             `json:"object"`
	} `json:"request"`
}

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
	var review reviewIn
	if err := fastJSON.Unmarshal(buf.Bytes(), &review); err != nil || review.Request == nil {
		http.Error(w, fmt.Sprintf("not an AdmissionReview: %v", err), http.StatusBadRequest)
		return
	}
	req := review.Request
	var resp *admissionv1.AdmissionResponse
	var result string
	switch {
	case req.Operation != admissionv1.Create || req.Kind.Kind != "Pod" || req.SubResource != "" || req.Object == nil:
		resp, result = &admissionv1.AdmissionResponse{Allowed: true}, "skipped"
	default:
		resp, result = h.admit(r.Context(), req.Namespace, req.Object)
	}
	resp.UID = req.UID
	apiVersion := review.APIVersion
	if apiVersion == "" {
		apiVersion = "admission.k8s.io/v1"
	}
	buf.Reset()
	if resp.Allowed && resp.Result == nil {
		// The common answers, written by hand: no reflection.
		b := buf.AvailableBuffer()
		b = append(b, `{"apiVersion":`...)
		b = appendJSONString(b, apiVersion)
		b = append(b, `,"kind":"AdmissionReview","response":{"uid":`...)
		b = appendJSONString(b, string(resp.UID))
		b = append(b, `,"allowed":true`...)
		if len(resp.Warnings) > 0 {
			b = append(b, `,"warnings":[`...)
			for i, w := range resp.Warnings {
				if i > 0 {
					b = append(b, ',')
				}
				b = appendJSONString(b, w)
			}
			b = append(b, ']')
		}
		if len(resp.Patch) > 0 {
			b = append(b, `,"patchType":"JSONPatch","patch":"`...)
			b = base64.StdEncoding.AppendEncode(b, resp.Patch)
			b = append(b, '"')
		}
		b = append(b, "}}\n"...)
		buf.Write(b)
	} else {
		out := admissionv1.AdmissionReview{Response: resp}
		out.APIVersion, out.Kind = apiVersion, "AdmissionReview"
		if err := json.NewEncoder(buf).Encode(&out); err != nil {
			http.Error(w, "encode response: "+err.Error(), http.StatusInternalServerError)
			return
		}
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(buf.Bytes())
	if h.Metrics != nil {
		h.Metrics.Admissions.WithLabelValues(result).Inc()
		h.Metrics.Latency.Observe(time.Since(start).Seconds())
	}
}

// admit decides one pod creation; result labels the metric.
func (h *Handler) admit(ctx context.Context, namespace string, pod *corev1.Pod) (*admissionv1.AdmissionResponse, string) {
	allow := &admissionv1.AdmissionResponse{Allowed: true}
	in := Input{Pod: pod, Namespace: namespace, Native: h.Native, Config: h.Config.Load()}
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
	if in.Native && h.Nodes != nil {
		in.Native = h.Nodes.NativeOK(pod, in.Serverless || targetsVirtualKubelet(pod))
	}
	warnings := annotationWarnings(pod)
	m, err := mutate(ctx, h.Lookup, in)
	ops := m.ops
	var ref *Refusal
	switch {
	case errors.As(err, &ref):
		if h.Log != nil {
			h.Log.Info("pod refused", "namespace", in.Namespace, "pod", podName(pod), "reason", ref.Msg)
		}
		r := deny(http.StatusForbidden, "podfs: "+ref.Msg)
		r.Warnings = warnings
		return r, "refused"
	case err != nil:
		if h.Log != nil {
			h.Log.Error("admission failed", "namespace", in.Namespace, "pod", podName(pod), "err", err)
		}
		return deny(http.StatusInternalServerError, "podfs: "+err.Error()), "error"
	case len(ops) == 0:
		allow.Warnings = warnings
		return allow, "skipped"
	}
	allow.Warnings = append(warnings, h.pullSecretWarnings(ctx, in.Namespace, m.pullSecrets)...)
	patch, err := fastJSON.Marshal(ops)
	if err != nil {
		return deny(http.StatusInternalServerError, "podfs: encode the patch: "+err.Error()), "error"
	}
	allow.Patch = patch
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

// appendJSONString appends s as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}
