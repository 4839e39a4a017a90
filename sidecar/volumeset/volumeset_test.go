package volumeset

import (
	"strings"
	"testing"
)

func valid() VolumeSet {
	return VolumeSet{Mode: ModeNode, Native: true, Volumes: []Volume{
		{Name: "data", MountPoint: PodsDir + "/" + PodUIDRef + "/pv-1", MetaURL: "bolt:///m.db"},
		{Name: "models", MountPoint: PodsDir + "/" + PodUIDRef + "/pv-2", MetaURLEnv: "PODFS_VOL1_META_URL", StorageURLEnv: "PODFS_VOL1_STORAGE_URL", SubDir: "a/b", Options: []string{"allow_other"}},
	}}
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
	if len(got.Volumes) != 2 || got.Volumes[1].MetaURLEnv != "PODFS_VOL1_META_URL" || got.Volumes[1].SubDir != "a/b" {
		t.Fatalf("round trip lost data: %+v", got)
	}
}

func TestInvalid(t *testing.T) {
	for _, tc := range []struct {
		name, want string
		edit       func(s *VolumeSet)
	}{
		{"mode", `mode "x"`, func(s *VolumeSet) { s.Mode = "x" }},
		{"empty", "no volumes", func(s *VolumeSet) { s.Volumes = nil }},
		{"bad-name", "DNS-1123", func(s *VolumeSet) { s.Volumes[0].Name = "Data_1" }},
		{"dup-name", "name used twice", func(s *VolumeSet) { s.Volumes[1].Name = "data" }},
		{"relative-mp", "clean absolute path", func(s *VolumeSet) { s.Volumes[0].MountPoint = "data" }},
		{"dotdot-mp", "clean absolute path", func(s *VolumeSet) { s.Volumes[0].MountPoint = "/a/../b" }},
		{"other-var", "may reference only", func(s *VolumeSet) { s.Volumes[0].MountPoint = "/a/$(HOME)" }},
		{"dup-mp", "is also volume", func(s *VolumeSet) { s.Volumes[1].MountPoint = s.Volumes[0].MountPoint }},
		{"no-meta", "no metadata URL", func(s *VolumeSet) { s.Volumes[0].MetaURL = "" }},
		{"both-meta", "both metaURL and metaURLEnv", func(s *VolumeSet) { s.Volumes[0].MetaURLEnv = "X" }},
		{"bad-env", "not an environment variable name", func(s *VolumeSet) { s.Volumes[1].MetaURLEnv = "A-B" }},
		{"subdir-escape", "clean relative path", func(s *VolumeSet) { s.Volumes[1].SubDir = "../etc" }},
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
