package webhook

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"podfs.io/podfs/sidecar/volumeset"
)

// annotationPrefix is the domain of podfs's pod annotations.
const annotationPrefix = "podfs.io/"

// KnownAnnotations are the podfs.io/ pod annotations podfs reads or writes.
// Any other key under podfs.io/ is most likely a typo that would otherwise
// be ignored silently: admission answers it with a warning.
var KnownAnnotations = []string{
	AnnCPULimit, AnnCPURequest, AnnMemoryLimit, AnnMemoryRequest,
	AnnMountOptions, AnnPlacement,
	volumeset.InjectedAnnotation, volumeset.AppsDoneAnnotation,
}

// annotationWarnings returns an admission warning per podfs.io/ annotation
// of pod that podfs does not know, naming the known ones.
func annotationWarnings(pod *corev1.Pod) []string {
	var unknown []string
	for k := range pod.Annotations {
		if strings.HasPrefix(k, annotationPrefix) && !slices.Contains(KnownAnnotations, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	known := slices.Sorted(slices.Values(KnownAnnotations))
	out := make([]string, len(unknown))
	for i, k := range unknown {
		out[i] = "podfs: unknown annotation " + k + " is ignored; known podfs.io annotations: " + strings.Join(known, ", ")
	}
	return out
}
