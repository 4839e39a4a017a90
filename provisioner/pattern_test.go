package provisioner

import (
	"strings"
	"testing"
)

func TestParsePattern(t *testing.T) {
	for _, tc := range []struct {
		pattern string
		bad     string // substring of the error; "" = accepted
	}{
		{"", ""},
		{DefaultPathPattern, ""},
		{"${pvc.metadata.uid}", ""},
		{"${pv.metadata.name}", ""},
		{"claims/${pvc.metadata.namespace}/${pvc.metadata.name}", ""},
		{"${pvc.metadata.namespace}-ns/pvc-${pvc.metadata.name}", ""},
		{"${pvc.metadata.labels['team']}/${pvc.metadata.uid}", ""},
		{`${pvc.metadata.annotations["example.com/dir"]}-${pv.metadata.name}`, ""},
		{"${pvc.metadata.name}-${pvc.metadata.uid}", ""},
		// Could collide between claims.
		{"${pvc.metadata.name}", "same directory"},
		{"${pvc.metadata.namespace}", "same directory"},
		{"${pvc.metadata.namespace}-${pvc.metadata.name}", "same directory"},
		{"${pvc.metadata.namespace}/${pvc.metadata.labels['a']}${pvc.metadata.name}", "same directory"},
		{"shared", "same directory"},
		// Could leave the volume or make odd paths.
		{"/${pvc.metadata.uid}", "leading '/'"},
		{"../${pvc.metadata.uid}", `".." segment`},
		{"a/../../${pvc.metadata.uid}", `".." segment`},
		{"./${pvc.metadata.uid}", `"." segment`},
		{"a//${pvc.metadata.uid}", "empty segment"},
		{"${pvc.metadata.uid}/", "empty segment"},
		{"a\x00/${pvc.metadata.uid}", "control character"},
		{"a\n${pvc.metadata.uid}", "control character"},
		{".podfs-archive/${pvc.metadata.uid}", "archives"},
		{".podfs-provisioning-x/${pvc.metadata.uid}", "reserves"},
		// Syntax.
		{"${pvc.metadata.uid", "not closed"},
		{"${pvc.namespace}/${pvc.metadata.uid}", "unknown variable"},
		{"${pvc.metadata.labels[team]}/${pvc.metadata.uid}", "in quotes"},
	} {
		_, err := ParsePattern(tc.pattern)
		switch {
		case tc.bad == "" && err != nil:
			t.Errorf("%q: %v", tc.pattern, err)
		case tc.bad != "" && err == nil:
			t.Errorf("%q accepted, want an error about %q", tc.pattern, tc.bad)
		case tc.bad != "" && !strings.Contains(err.Error(), tc.bad):
			t.Errorf("%q: %v, want it to mention %q", tc.pattern, err, tc.bad)
		}
	}
}

func TestExpandPattern(t *testing.T) {
	in := PathInput{Namespace: "team-a", Name: "data", UID: "0b5c3f2e-1111-4222-8333-444455556666", PVName: "pvc-0b5c",
		Labels: map[string]string{"team": "blue", "empty": ""}, Annotations: map[string]string{"dir": "x/y", "dots": "..", "ctl": "a\tb", "ok": "proj"}}
	for _, tc := range []struct {
		pattern, want, bad string
	}{
		{"", "team-a/data", ""},
		{"k8s/${pvc.metadata.namespace}/${pvc.metadata.name}", "k8s/team-a/data", ""},
		{"${pvc.metadata.labels['team']}/${pvc.metadata.uid}", "blue/0b5c3f2e-1111-4222-8333-444455556666", ""},
		{"${pvc.metadata.annotations['ok']}/${pv.metadata.name}", "proj/pvc-0b5c", ""},
		{"${pvc.metadata.labels['missing']}/${pvc.metadata.uid}", "", "does not have"},
		{"${pvc.metadata.labels['empty']}/${pvc.metadata.uid}", "", "does not have"},
		{"${pvc.metadata.annotations['dir']}/${pvc.metadata.uid}", "", "contains '/'"},
		{"${pvc.metadata.annotations['dots']}/${pvc.metadata.uid}", "", "'..'"},
		{"${pvc.metadata.annotations['ctl']}/${pvc.metadata.uid}", "", "control character"},
		{strings.Repeat("long/", 120) + "${pvc.metadata.uid}", "", "more than"},
	} {
		p, err := ParsePattern(tc.pattern)
		if err != nil {
			t.Fatalf("%q: %v", tc.pattern, err)
		}
		got, err := p.Expand(in)
		switch {
		case tc.bad == "" && (err != nil || got != tc.want):
			t.Errorf("%q: got %q, %v; want %q", tc.pattern, got, err, tc.want)
		case tc.bad != "" && (err == nil || !strings.Contains(err.Error(), tc.bad)):
			t.Errorf("%q: got %q, %v; want an error about %q", tc.pattern, got, err, tc.bad)
		}
	}
}
