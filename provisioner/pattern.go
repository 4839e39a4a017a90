package provisioner

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unicode"
)

// DefaultPathPattern places each claim's directory at <namespace>/<name>.
const DefaultPathPattern = "${pvc.metadata.namespace}/${pvc.metadata.name}"

// PathInput is what a path pattern's variables expand to.
type PathInput struct {
	Namespace, Name, UID string // the claim's
	PVName               string
	Labels, Annotations  map[string]string // the claim's
}

// pattern is a parsed pathPattern: segments of literal text and variables.
type pattern struct {
	src   string
	parts []patternPart
}

type patternPart struct {
	lit string // literal text when v is ""
	v   string // variable: namespace, name, uid, pv, label, annotation
	key string // label or annotation key
}

// maxPathLen bounds an expanded path: a directory's whole path must stay
// far below PATH_MAX inside the pod, and it becomes part of the PV's
// volumeHandle.
const maxPathLen = 512

// ParsePattern checks a pathPattern on its own: only known variables,
// nothing that could leave the volume, and a result unique per claim.
func ParsePattern(src string) (*pattern, error) {
	if src == "" {
		src = DefaultPathPattern
	}
	p := &pattern{src: src}
	rest := src
	for rest != "" {
		i := strings.Index(rest, "${")
		if i < 0 {
			p.parts = append(p.parts, patternPart{lit: rest})
			break
		}
		if i > 0 {
			p.parts = append(p.parts, patternPart{lit: rest[:i]})
		}
		j := strings.IndexByte(rest[i:], '}')
		if j < 0 {
			return nil, fmt.Errorf("pathPattern %q: %q is not closed with '}'", src, rest[i:])
		}
		part, err := parseVariable(rest[i+2 : i+j])
		if err != nil {
			return nil, fmt.Errorf("pathPattern %q: %w", src, err)
		}
		p.parts = append(p.parts, part)
		rest = rest[i+j+1:]
	}
	if err := p.checkLiterals(); err != nil {
		return nil, fmt.Errorf("pathPattern %q: %w", src, err)
	}
	if err := p.checkUnique(); err != nil {
		return nil, fmt.Errorf("pathPattern %q: %w", src, err)
	}
	return p, nil
}

func parseVariable(v string) (patternPart, error) {
	switch v {
	case "pvc.metadata.namespace":
		return patternPart{v: "namespace"}, nil
	case "pvc.metadata.name":
		return patternPart{v: "name"}, nil
	case "pvc.metadata.uid":
		return patternPart{v: "uid"}, nil
	case "pv.metadata.name":
		return patternPart{v: "pv"}, nil
	}
	for _, kind := range []string{"labels", "annotations"} {
		prefix := "pvc.metadata." + kind + "["
		if !strings.HasPrefix(v, prefix) || !strings.HasSuffix(v, "]") {
			continue
		}
		k := strings.TrimSuffix(strings.TrimPrefix(v, prefix), "]")
		if len(k) < 3 || (k[0] != '\'' && k[0] != '"') || k[len(k)-1] != k[0] {
			return patternPart{}, fmt.Errorf("${%s}: write the key in quotes, e.g. ${pvc.metadata.%s['example.com/team']}", v, kind)
		}
		return patternPart{v: strings.TrimSuffix(kind, "s"), key: k[1 : len(k)-1]}, nil
	}
	return patternPart{}, fmt.Errorf("unknown variable ${%s}: use ${pvc.metadata.namespace}, ${pvc.metadata.name}, ${pvc.metadata.uid}, ${pv.metadata.name}, ${pvc.metadata.labels['KEY']} or ${pvc.metadata.annotations['KEY']}", v)
}

// checkLiterals refuses literal text that makes an absolute path, climbs
// out, or holds control characters.
func (p *pattern) checkLiterals() error {
	var lit strings.Builder
	for i, part := range p.parts {
		if part.v != "" {
			lit.WriteString("x") // a variable expands to something non-empty
			continue
		}
		if i == 0 && strings.HasPrefix(part.lit, "/") {
			return errors.New("starts with '/': the path is relative to the volume's root, drop the leading '/'")
		}
		if err := checkChars(part.lit); err != nil {
			return err
		}
		lit.WriteString(part.lit)
	}
	return checkSegments(lit.String())
}

// checkUnique refuses a pattern under which two claims could get the same
// directory: it must use the claim's uid or the PV's name (both unique in
// the cluster), or the namespace and the name, each in a segment of its own
// with no other variable (so that "a-b"+"c" and "a"+"b-c" cannot meet).
func (p *pattern) checkUnique() error {
	seg := 0
	vars := map[int][]string{} // segment -> variables in it
	for _, part := range p.parts {
		if part.v == "" {
			seg += strings.Count(part.lit, "/")
			continue
		}
		if part.v == "uid" || part.v == "pv" {
			return nil
		}
		vars[seg] = append(vars[seg], part.v)
	}
	alone := map[string]bool{}
	for _, vs := range vars {
		if len(vs) == 1 {
			alone[vs[0]] = true
		}
	}
	if alone["namespace"] && alone["name"] {
		return nil
	}
	return errors.New("two claims could get the same directory: include ${pvc.metadata.uid} or ${pv.metadata.name}, or both ${pvc.metadata.namespace} and ${pvc.metadata.name} in path segments of their own (e.g. the default " + DefaultPathPattern + ")")
}

// Expand returns the claim's directory, relative to the volume's root.
func (p *pattern) Expand(in PathInput) (string, error) {
	var b strings.Builder
	for _, part := range p.parts {
		var val string
		switch part.v {
		case "":
			b.WriteString(part.lit)
			continue
		case "namespace":
			val = in.Namespace
		case "name":
			val = in.Name
		case "uid":
			val = in.UID
		case "pv":
			val = in.PVName
		case "label", "annotation":
			m := in.Labels
			if part.v == "annotation" {
				m = in.Annotations
			}
			v, ok := m[part.key]
			if !ok || v == "" {
				return "", fmt.Errorf("pathPattern %q needs the claim's %s %q, which it does not have (or is empty): add it to the PersistentVolumeClaim", p.src, part.v, part.key)
			}
			val = v
		}
		// A value is part of one segment: it may not add levels or climb.
		if strings.Contains(val, "/") || val == "." || val == ".." {
			return "", fmt.Errorf("pathPattern %q: the claim's %s %q would change the path's shape (it contains '/' or is '.' or '..'): use another value", p.src, part.v, val)
		}
		if err := checkChars(val); err != nil {
			return "", fmt.Errorf("pathPattern %q: the claim's %s: %w", p.src, part.v, err)
		}
		b.WriteString(val)
	}
	out := b.String()
	if err := checkSegments(out); err != nil {
		return "", fmt.Errorf("pathPattern %q expands to %q: %w", p.src, out, err)
	}
	if len(out) > maxPathLen {
		return "", fmt.Errorf("pathPattern %q expands to a path of %d bytes, more than %d: shorten it", p.src, len(out), maxPathLen)
	}
	return out, nil
}

func checkChars(s string) error {
	for _, r := range s {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return fmt.Errorf("%q holds a control character or invalid UTF-8", s)
		}
	}
	return nil
}

// checkSegments refuses paths that are empty, absolute, have empty
// segments (a//b, a trailing '/'), '.' or '..', or start with the
// controller's own reserved names.
func checkSegments(s string) error {
	if s == "" {
		return errors.New("the path is empty")
	}
	if path.IsAbs(s) {
		return errors.New("the path is absolute: it must be relative to the volume's root")
	}
	for i, seg := range strings.Split(s, "/") {
		switch {
		case seg == "":
			return errors.New("the path has an empty segment ('//' or a '/' at either end)")
		case seg == "." || seg == "..":
			return fmt.Errorf("the path has a %q segment: it could leave the claim's place in the volume", seg)
		case len(seg) > 255:
			return fmt.Errorf("segment %q is longer than 255 bytes", seg[:32]+"...")
		case strings.HasPrefix(seg, tmpPrefix):
			return fmt.Errorf("segment %q starts with %q, which the controller reserves", seg, tmpPrefix)
		case i == 0 && seg == archiveDir:
			return fmt.Errorf("the path starts with %q, where the controller archives deleted claims", archiveDir)
		}
	}
	return nil
}
