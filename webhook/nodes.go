package webhook

import (
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// NodeVersions tracks which nodes' kubelets run native sidecars, from an
// informer over the Nodes (stripped to name, labels, taints and kubelet
// version). The API server's version says nothing about the kubelets: the
// version skew policy lets them be three minor versions older, and a
// kubelet older than 1.29 treats an init container with restartPolicy
// Always as one that must complete, so the pod never starts.
//
// The rule, per pod: a pod bound to a node (spec.nodeName) gets a native
// sidecar when that node's kubelet is >= 1.29; any other pod when every
// node of its kind is — virtual-kubelet nodes (a taint key under
// virtual-kubelet.io/ or the label type=virtual-kubelet) for pods that
// target them, all other nodes otherwise. A kind with no nodes, or a
// version that cannot be read, decides nothing by itself: unknown nodes
// count as old, an empty kind as able.
type NodeVersions struct {
	mu    sync.RWMutex
	nodes map[string]nodeKind // name -> kind and whether it runs native sidecars
	old   [2]int              // nodes that cannot, per kind (0 ordinary, 1 virtual-kubelet)
}

type nodeKind struct {
	vk, native bool
}

// NewNodeVersions returns an empty tracker; feed it with Handler.
func NewNodeVersions() *NodeVersions {
	return &NodeVersions{nodes: map[string]nodeKind{}}
}

// Handler is the informer event handler that keeps the tracker current.
func (n *NodeVersions) Handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.set(obj) },
		UpdateFunc: func(_, obj any) { n.set(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if node, ok := obj.(*corev1.Node); ok {
				n.Set(node.Name, nil)
			}
		},
	}
}

func (n *NodeVersions) set(obj any) {
	if node, ok := obj.(*corev1.Node); ok {
		n.Set(node.Name, node)
	}
}

// Set records node under name (nil: it is gone).
func (n *NodeVersions) Set(name string, node *corev1.Node) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if k, ok := n.nodes[name]; ok {
		if !k.native {
			n.old[kindIndex(k.vk)]--
		}
		delete(n.nodes, name)
	}
	if node == nil {
		return
	}
	k := nodeKind{vk: isVirtualKubelet(node), native: kubeletRunsNative(node.Status.NodeInfo.KubeletVersion)}
	n.nodes[name] = k
	if !k.native {
		n.old[kindIndex(k.vk)]++
	}
}

// NativeOK reports whether pod's sidecar may be native as far as the nodes
// are concerned; vk says the pod targets virtual-kubelet nodes.
func (n *NodeVersions) NativeOK(pod *corev1.Pod, vk bool) bool {
	n.mu.RLock()
	defer n.mu.RUnlock()
	if pod.Spec.NodeName != "" {
		if k, ok := n.nodes[pod.Spec.NodeName]; ok {
			return k.native
		}
	}
	return n.old[kindIndex(vk)] == 0
}

func kindIndex(vk bool) int {
	if vk {
		return 1
	}
	return 0
}

// isVirtualKubelet recognises a virtual-kubelet node the way pods target
// one (targetsVirtualKubelet).
func isVirtualKubelet(node *corev1.Node) bool {
	if node.Labels["type"] == "virtual-kubelet" {
		return true
	}
	for _, t := range node.Spec.Taints {
		if strings.HasPrefix(t.Key, "virtual-kubelet.io/") {
			return true
		}
	}
	return false
}

// kubeletRunsNative reads a kubelet version ("v1.29.3", "v1.30.0-eks-1")
// and reports whether it is >= 1.29; an unreadable one counts as older.
func kubeletRunsNative(v string) bool {
	v = strings.TrimPrefix(v, "v")
	major, rest, ok := strings.Cut(v, ".")
	if !ok {
		return false
	}
	minor, _, _ := strings.Cut(rest, ".")
	minor = strings.TrimRightFunc(minor, func(r rune) bool { return r < '0' || r > '9' })
	native, err := NativeSidecarsSupported(major, minor)
	return err == nil && native
}

// stripNode keeps what NodeVersions reads, so the cache holds little per
// node (a Node's status lists its images and can be large).
func stripNode(obj any) (any, error) {
	node, ok := obj.(*corev1.Node)
	if !ok {
		return obj, nil
	}
	out := &corev1.Node{}
	out.Name, out.Labels, out.ResourceVersion = node.Name, node.Labels, node.ResourceVersion
	out.Spec.Taints = node.Spec.Taints
	out.Status.NodeInfo.KubeletVersion = node.Status.NodeInfo.KubeletVersion
	return out, nil
}
