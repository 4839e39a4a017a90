package provisioner

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/validation"

	"podfs.io/podfs/pkg/fs"
)

// DriverName is the CSI driver and the StorageClass provisioner podfs serves.
const DriverName = "csi.podfs.io"

// StorageClass parameters.
const (
	ParamProvisionerSecretName      = "csi.storage.k8s.io/provisioner-secret-name"
	ParamProvisionerSecretNamespace = "csi.storage.k8s.io/provisioner-secret-namespace"
	ParamNodePublishSecretName      = "csi.storage.k8s.io/node-publish-secret-name"
	ParamNodePublishSecretNamespace = "csi.storage.k8s.io/node-publish-secret-namespace"
	// ParamSecretName and ParamSecretNamespace set both Secrets at once
	// (as external-provisioner's csi.storage.k8s.io/secret-name does).
	ParamSecretName      = "csi.storage.k8s.io/secret-name"
	ParamSecretNamespace = "csi.storage.k8s.io/secret-namespace"
	ParamPathPattern     = "pathPattern"
	ParamOnDelete        = "onDelete"
)

// Keys of the provisioner Secret (and of the node-publish Secret, whose
// metaURL and storageURL the sidecar reads).
const (
	KeyMetaURL    = "metaURL"
	KeyStorageURL = "storageURL"
	KeyFormat     = "format"    // "true": format the volume on first use
	KeyName       = "name"      // the volume's name, for format
	KeyBlockSize  = "blockSize" // for format: a quantity, e.g. 4Mi
	KeyCapacity   = "capacity"  // for format: the volume's quota, e.g. 10Ti
	KeyInodes     = "inodes"    // for format: the volume's inode quota
)

// What onDelete may say.
const (
	OnDeleteDelete  = "delete"
	OnDeleteRetain  = "retain"
	OnDeleteArchive = "archive"
)

// PV volumeAttributes keys, as the webhook and the CSI node read them.
const (
	AttrMetaURLSecretKey = "metaURLSecretKey"
	AttrStorageURLSecret = "storageURLSecretKey"
	AttrSubDir           = "subDir"
)

// secretRef is a Secret's namespace and name, possibly with templates.
type secretRef struct{ Namespace, Name string }

// classParams is a podfs StorageClass's parameters, checked.
type classParams struct {
	provisioner secretRef
	nodePublish secretRef
	pattern     *pattern
	onDelete    string
}

// parseClass checks a class's parameters; every error says what to fix.
func parseClass(sc *storagev1.StorageClass) (*classParams, error) {
	p := &classParams{onDelete: OnDeleteDelete}
	var unknown []string
	var patternSrc string
	for k, v := range sc.Parameters {
		switch k {
		case ParamProvisionerSecretName:
			p.provisioner.Name = v
		case ParamProvisionerSecretNamespace:
			p.provisioner.Namespace = v
		case ParamNodePublishSecretName:
			p.nodePublish.Name = v
		case ParamNodePublishSecretNamespace:
			p.nodePublish.Namespace = v
		case ParamSecretName, ParamSecretNamespace, ParamPathPattern:
			if k == ParamPathPattern {
				patternSrc = v
			}
		case ParamOnDelete:
			switch v {
			case OnDeleteDelete, OnDeleteRetain, OnDeleteArchive:
				p.onDelete = v
			default:
				return nil, fmt.Errorf("StorageClass %s: parameter %s=%q: use delete, retain or archive", sc.Name, ParamOnDelete, v)
			}
		default:
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("StorageClass %s: unknown parameters %s: podfs understands %s, %s (or %s), %s (or %s), %s, %s and %s", sc.Name,
			strings.Join(unknown, ", "), ParamProvisionerSecretName+"/-namespace", ParamNodePublishSecretName+"/-namespace",
			ParamSecretName, ParamProvisionerSecretNamespace, ParamSecretNamespace, ParamNodePublishSecretNamespace, ParamPathPattern, ParamOnDelete)
	}
	for _, r := range []*secretRef{&p.provisioner, &p.nodePublish} {
		if r.Name == "" {
			r.Name = sc.Parameters[ParamSecretName]
		}
		if r.Namespace == "" {
			r.Namespace = sc.Parameters[ParamSecretNamespace]
		}
	}
	if p.provisioner.Name == "" || p.provisioner.Namespace == "" {
		return nil, fmt.Errorf("StorageClass %s: set %s and %s (the Secret with %s and %s the controller uses)", sc.Name,
			ParamProvisionerSecretName, ParamProvisionerSecretNamespace, KeyMetaURL, KeyStorageURL)
	}
	if p.nodePublish.Name == "" || p.nodePublish.Namespace == "" {
		return nil, fmt.Errorf("StorageClass %s: set %s and %s (the Secret with %s and %s that pods get; for pods on serverless nodes it must be in the claim's namespace, %s)", sc.Name,
			ParamNodePublishSecretName, ParamNodePublishSecretNamespace, KeyMetaURL, KeyStorageURL, "${pvc.namespace}")
	}
	for _, t := range []struct{ param, v string }{
		{ParamProvisionerSecretName, p.provisioner.Name}, {ParamProvisionerSecretNamespace, p.provisioner.Namespace},
		{ParamNodePublishSecretName, p.nodePublish.Name}, {ParamNodePublishSecretNamespace, p.nodePublish.Namespace},
	} {
		if err := checkSecretTemplate(t.param, t.v); err != nil {
			return nil, fmt.Errorf("StorageClass %s: %w", sc.Name, err)
		}
	}
	pat, err := ParsePattern(patternSrc)
	if err != nil {
		return nil, fmt.Errorf("StorageClass %s: %w", sc.Name, err)
	}
	p.pattern = pat
	return p, nil
}

// Secret reference templates, as external-provisioner expands them.
var (
	nameVars      = []string{"${pvc.namespace}", "${pvc.name}", "${pv.name}"}
	namespaceVars = []string{"${pvc.namespace}", "${pv.name}"}
)

func checkSecretTemplate(param, v string) error {
	vars := nameVars
	if strings.HasSuffix(param, "-namespace") {
		vars = namespaceVars
	}
	rest := v
	for _, t := range vars {
		rest = strings.ReplaceAll(rest, t, "")
	}
	if strings.Contains(rest, "${") {
		return fmt.Errorf("parameter %s=%q: only %s may be used there", param, v, strings.Join(vars, ", "))
	}
	return nil
}

// resolve expands a reference's templates for one claim and checks the
// names the result makes.
func (r secretRef) resolve(pvc *corev1.PersistentVolumeClaim, pvName string) (secretRef, error) {
	rep := strings.NewReplacer("${pvc.namespace}", pvc.Namespace, "${pvc.name}", pvc.Name, "${pv.name}", pvName)
	out := secretRef{Namespace: rep.Replace(r.Namespace), Name: rep.Replace(r.Name)}
	if errs := validation.IsDNS1123Label(out.Namespace); len(errs) > 0 {
		return out, fmt.Errorf("Secret namespace %q (from %q) is not a namespace name: %s", out.Namespace, r.Namespace, strings.Join(errs, "; "))
	}
	if errs := validation.IsDNS1123Subdomain(out.Name); len(errs) > 0 {
		return out, fmt.Errorf("Secret name %q (from %q) is not a valid name: %s", out.Name, r.Name, strings.Join(errs, "; "))
	}
	return out, nil
}

// parseSecret reads a provisioner Secret's keys.
func parseSecret(s *corev1.Secret) (*volumeSecret, error) {
	where := fmt.Sprintf("Secret %s/%s", s.Namespace, s.Name)
	get := func(k string) string { return strings.TrimSpace(string(s.Data[k])) }
	vs := &volumeSecret{MetaURL: get(KeyMetaURL), StorageURL: get(KeyStorageURL)}
	if vs.MetaURL == "" {
		return nil, fmt.Errorf("%s has no key %s: add the volume's metadata URL (e.g. tikv://pd:2379/NAME or etcd://HOST:2379/NAME)", where, KeyMetaURL)
	}
	if !strings.Contains(vs.MetaURL, "://") {
		return nil, fmt.Errorf("%s: %s is not a URL: write it as tikv://..., etcd://... or bolt:///...", where, KeyMetaURL)
	}
	switch f := get(KeyFormat); f {
	case "", "false":
		return vs, nil
	case "true":
	default:
		return nil, fmt.Errorf("%s: %s=%q: use \"true\" or \"false\"", where, KeyFormat, f)
	}
	o := &fs.FormatOptions{Name: get(KeyName), Storage: vs.StorageURL}
	if o.Name == "" {
		return nil, fmt.Errorf("%s: %s is \"true\" but %s is missing: add the volume's name (1-63 letters, digits, '-', '_', '.')", where, KeyFormat, KeyName)
	}
	size := func(k string) (uint64, error) {
		v := get(k)
		if v == "" {
			return 0, nil
		}
		q, err := resource.ParseQuantity(v)
		if err != nil || q.Sign() < 0 {
			return 0, fmt.Errorf("%s: %s=%q is not a size: write e.g. 4Mi or 10Ti", where, k, v)
		}
		return uint64(q.Value()), nil
	}
	bs, err := size(KeyBlockSize)
	if err != nil {
		return nil, err
	}
	o.BlockSize = int(bs)
	if o.Capacity, err = size(KeyCapacity); err != nil {
		return nil, err
	}
	if v := get(KeyInodes); v != "" {
		if o.Inodes, err = strconv.ParseUint(v, 10, 64); err != nil {
			return nil, fmt.Errorf("%s: %s=%q is not a number of inodes", where, KeyInodes, v)
		}
	}
	if err := o.Validate(vs.MetaURL); err != nil {
		return nil, fmt.Errorf("%s: format settings: %w", where, err)
	}
	vs.Format = o
	return vs, nil
}

// CheckClass reports what is wrong with a podfs StorageClass's parameters
// (what the controller would put in every claim's ProvisioningFailed event).
func CheckClass(sc *storagev1.StorageClass) error {
	_, err := parseClass(sc)
	return err
}
