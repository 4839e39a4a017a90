package volumeset

import (
	"strings"
	"testing"
)

func valid() VolumeSet {
	return VolumeSet{Mode: ModeNode, Native: true, Volumes: []Volume{
		{Name: "data", Handoff: "pv-1"},
		{Name: "models", Handoff: "pvc-0b6c.models", Options: []string{"allow_other"}},
		{Name: "later", Claim: "scratch"},
	}}
}

func validServerless() VolumeSet {
	return VolumeSet{Mode: ModeServerless, Native: true, Volumes: []Volume{
		{Name: "data", MountPoint: ServerlessDir + "/data", MetaURL: "bolt:///m.db"},
		{Name: "models", MountPoint: ServerlessDir + "/models", MetaURLEnv: "PODFS_VOL1_META_URL", StorageURLEnv: "PODFS_VOL1_STORAGE_URL", SubDir: "a/b"},
	}}
}

// TestContract pins the paths and ids the webhook, the sidecar and the CSI
// node agree on: changing one breaks pods injected by an older webhook.
func TestContract(t *testing.T) {
	for got, want := range map[string]string{
		RunDir:                 "/run/podfs",
		ProbeSocket:            "/run/podfs/sidecar.sock",
		HandoffDir:             "/run/podfs/handoff",
		ClaimsDir:              "/run/podfs/handoff/claims",
		ServerlessDir:          "/podfs",
		PodInfoDir:             "/etc/podfs/podinfo",
		DriverName:             "csi.podfs.io",
		ContainerName:          "podfs-sidecar",
		InjectedAnnotation:     "podfs.io/injected",
		string(ModeNode):       "node",
		string(ModeServerless): "serverless",
	} {
		if got != want {
			t.Errorf("got %q, want %q", got, want)
		}
	}
	if SidecarUID != 65532 || SidecarGID != 65532 {
		t.Errorf("sidecar ids %d:%d, want 65532:65532", SidecarUID, SidecarGID)
	}
	js, err := (&VolumeSet{Mode: ModeNode, Volumes: []Volume{{Name: "data", Handoff: "pv-1"}, {Name: "later", Claim: "c"}}}).Encode()
	if want := `{"mode":"node","volumes":[{"name":"data","handoff":"pv-1"},{"name":"later","claim":"c"}],"native":false}`; err != nil || js != want {
		t.Errorf("encoded node set %s, %v; want %s", js, err, want)
	}
}

func TestRoundTrip(t *testing.T) {
	s := valid()
	js, err := s.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := Decode(js)
	if err != nil {
		t.Fatal(err)
	}
	if len(got.Volumes) != 3 || got.Volumes[1].Handoff != "pvc-0b6c.models" || got.Volumes[2].Claim != "scratch" {
		t.Fatalf("round trip lost data: %+v", got)
	}
	sl := validServerless()
	js, err = sl.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if got, err = Decode(js); err != nil || got.Volumes[0].MountPoint != "/podfs/data" || got.Mode != ModeServerless ||
		got.Volumes[1].MetaURLEnv != "PODFS_VOL1_META_URL" || got.Volumes[1].SubDir != "a/b" {
		t.Fatalf("serverless round trip: %+v, %v", got, err)
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		edit       func(s *VolumeSet)
	}{
		{"node-mountpoint", "leave mountPoint empty", func(s *VolumeSet) { s.Volumes[0].MountPoint = "/var/lib/podfs/pods/$(POD_UID)/pv-1" }},
		{"node-no-handoff", "neither handoff nor claim", func(s *VolumeSet) { s.Volumes[0].Handoff = "" }},
		{"node-both", "a volume whose PV is known needs no claim", func(s *VolumeSet) { s.Volumes[0].Claim = "c" }},
		{"node-bad-claim", `claim "C_1" is not`, func(s *VolumeSet) { s.Volumes[2].Claim = "C_1" }},
		{"node-url", "come from the CSI node", func(s *VolumeSet) { s.Volumes[0].MetaURL = "bolt:///m.db" }},
		{"node-env", "come from the CSI node", func(s *VolumeSet) { s.Volumes[1].StorageURLEnv = "X" }},
		{"node-subdir", "come from the CSI node", func(s *VolumeSet) { s.Volumes[1].SubDir = "a" }},
		{"serverless-claim", "has no CSI node", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].Claim = "c" }},
		{"node-handoff-slash", `handoff "../pv" is not`, func(s *VolumeSet) { s.Volumes[0].Handoff = "../pv" }},
		{"node-handoff-upper", `handoff "PV-1" is not`, func(s *VolumeSet) { s.Volumes[0].Handoff = "PV-1" }},
		{"node-handoff-long", "is not a PV", func(s *VolumeSet) { s.Volumes[0].Handoff = strings.Repeat("a.", 127) + "a" }},
		{"node-dup-handoff", `handoff "pv-1" is also volume "data"'s`, func(s *VolumeSet) { s.Volumes[1].Handoff = "pv-1" }},
		{"serverless-handoff", "has no CSI node", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].Handoff = "pv-1" }},
		{"mode", `mode "x"`, func(s *VolumeSet) { s.Mode = "x" }},
		{"empty", "no volumes", func(s *VolumeSet) { s.Volumes = nil }},
		{"bad-name", "DNS-1123", func(s *VolumeSet) { s.Volumes[0].Name = "Data_1" }},
		{"dup-name", "name used twice", func(s *VolumeSet) { s.Volumes[1].Name = "data" }},
		{"relative-mp", "clean absolute path", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].MountPoint = "data" }},
		{"dotdot-mp", "clean absolute path", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].MountPoint = "/a/../b" }},
		{"other-var", "may reference only", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].MountPoint = "/a/$(HOME)" }},
		{"no-mp", "clean absolute path", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].MountPoint = "" }},
		{"dup-mp", "is also volume", func(s *VolumeSet) { *s = validServerless(); s.Volumes[1].MountPoint = s.Volumes[0].MountPoint }},
		{"no-meta", "no metadata URL", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].MetaURL = "" }},
		{"both-meta", "both metaURL and metaURLEnv", func(s *VolumeSet) { *s = validServerless(); s.Volumes[0].MetaURLEnv = "X" }},
		{"bad-env", "not an environment variable name", func(s *VolumeSet) { *s = validServerless(); s.Volumes[1].MetaURLEnv = "A-B" }},
		{"subdir-escape", "clean relative path", func(s *VolumeSet) { *s = validServerless(); s.Volumes[1].SubDir = "../etc" }},
		{"option-comma", "one option per entry", func(s *VolumeSet) { s.Volumes[1].Options = []string{"a,b"} }},
		{"neg-cache", "negative", func(s *VolumeSet) { s.Volumes[0].Cache.CacheSize = -1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := valid()
			tc.edit(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("want an error containing %q, got %v", tc.want, err)
			}
		})
	}
	for _, js := range []string{"", "  ", "{", `{"mode":"node","volumes":[],"extra":1}`} {
		if _, err := Decode(js); err == nil || !strings.Contains(err.Error(), EnvVar) {
			t.Errorf("Decode(%q): want an error naming %s, got %v", js, EnvVar, err)
		}
	}
}

func TestExpandMountPoint(t *testing.T) {
	got, err := ExpandMountPoint("/var/lib/podfs/pods/$(POD_UID)/pv", "1234-ab")
	if err != nil || got != "/var/lib/podfs/pods/1234-ab/pv" {
		t.Fatalf("got %q, %v", got, err)
	}
	for _, uid := range []string{"", "..", "a/b"} {
		if _, err := ExpandMountPoint("/x/$(POD_UID)", uid); err == nil {
			t.Errorf("uid %q accepted", uid)
		}
	}
	if got, err := ExpandMountPoint("/podfs/data", ""); err != nil || got != "/podfs/data" {
		t.Fatalf("no reference: got %q, %v", got, err)
	}
}

func TestParseOptions(t *testing.T) {
	got, err := ParseOptions(" allow_other, ,attr_timeout=1s ")
	if err != nil || strings.Join(got, "|") != "allow_other|attr_timeout=1s" {
		t.Fatalf("got %q, %v", got, err)
	}
	if _, err := ParseOptions("a b"); err == nil {
		t.Fatal("space accepted")
	}
}
