package fs

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"podfs.io/podfs/internal/testenv"
)

// Test users: the owner, a stranger, and a member of the owner's group
// through a supplementary group only.
var (
	owner    = user{uid: 1001, gid: 1001}
	stranger = user{uid: 1002, gid: 1002}
	member   = user{uid: 1003, gid: 1003, groups: []uint32{1001}}
)

type user struct {
	uid, gid uint32
	groups   []uint32
}

// permCase prepares a directory as root, then runs a shell command in it as
// a user. The outcome (exit status and output) must be the same on podfs
// as on a local ext4 directory, and its success must be ok.
type permCase struct {
	name  string
	setup string // shell, as root, in the case's directory
	// byOwner, if set, runs after setup as the owner (1001), for files a
	// case needs created by a user rather than root.
	byOwner string
	as      user
	run     string // shell, as the user, in the case's directory
	ok      bool
}

var permCases = []permCase{
	// Owner, group (supplementary) and other bits.
	{"owner reads 0640", "echo x >f; chown 1001:1001 f; chmod 640 f", "", owner, "cat f", true},
	{"supplementary group reads 0640", "echo x >f; chown 1001:1001 f; chmod 640 f", "", member, "cat f", true},
	{"other cannot read 0640", "echo x >f; chown 1001:1001 f; chmod 640 f", "", stranger, "cat f", false},
	{"other cannot write 0644", "echo x >f; chown 1001:1001 f; chmod 644 f", "", stranger, "echo y >>f", false},
	{"owner without w cannot write", "echo x >f; chown 1001:1001 f; chmod 444 f", "", owner, "echo y >>f", false},
	{"other cannot truncate 0644", "echo x >f; chown 1001:1001 f; chmod 644 f", "", stranger, "truncate -s 0 f", false},
	// Directories: search, write.
	{"no search without x", "mkdir d; echo x >d/f; chmod 644 d/f; chown -R 1001:1001 d; chmod 766 d", "", stranger, "cat d/f", false},
	{"owner without x cannot search", "mkdir d; echo x >d/f; chmod 644 d/f; chown -R 1001:1001 d; chmod 666 d", "", owner, "cat d/f", false},
	{"no create without w", "mkdir d; chown 1001:1001 d; chmod 755 d", "", stranger, "touch d/g", false},
	{"no unlink without w", "mkdir d; touch d/f; chown -R 1002:1002 d/f; chown 1001:1001 d; chmod 755 d", "", stranger, "rm -f d/f", false},
	{"group member creates in 0775", "mkdir d; chown 1001:1001 d; chmod 775 d", "", member, "touch d/g && stat -c '%u %g %a' d/g", true},
	{"listing needs r", "mkdir d; touch d/f; chown -R 1001:1001 d; chmod 711 d", "", stranger, "ls d", false},
	// Sticky directories.
	{"sticky: other cannot unlink", "mkdir t; chmod 1777 t; touch t/f; chown 1001:1001 t/f; chmod 666 t/f", "", stranger, "rm -f t/f", false},
	{"sticky: owner unlinks", "mkdir t; chmod 1777 t; touch t/f; chown 1001:1001 t/f", "", owner, "rm -f t/f", true},
	{"sticky: other cannot rename over", "mkdir t; chmod 1777 t; touch t/f t/g; chown 1001:1001 t/f; chown 1002:1002 t/g", "", stranger, "mv -f t/g t/f", false},
	// chmod and chown.
	{"other cannot chmod", "touch f; chown 1001:1001 f; chmod 666 f", "", stranger, "chmod 600 f", false},
	{"owner chmods", "touch f; chown 1001:1001 f; chmod 644 f", "", owner, "chmod 600 f && stat -c %a f", true},
	{"owner outside the group loses setgid on chmod", "touch f; chown 1001:1002 f", "", owner, "chmod 2755 f; stat -c %a f", true},
	{"owner cannot give away a file", "touch f; chown 1001:1001 f", "", owner, "chown 1002 f", false},
	{"owner chgrps to a supplementary group", "touch f; chown 1003:1003 f", "", member, "chgrp 1001 f && stat -c %g f", true},
	{"owner cannot chgrp to a foreign group", "touch f; chown 1001:1001 f", "", owner, "chgrp 1002 f", false},
	{"other cannot chgrp", "touch f; chown 1001:1001 f; chmod 666 f", "", stranger, "chgrp 1002 f", false},
	// Set-group-ID directories.
	{"setgid dir: files take its group", "mkdir d; chown 0:1001 d; chmod 2777 d", "", stranger, "touch d/f && stat -c '%g %a' d/f", true},
	{"setgid dir: subdirs inherit the bit", "mkdir d; chown 0:1001 d; chmod 2777 d", "", stranger, "mkdir d/s && stat -c '%g %a' d/s", true},
	{"write by other clears setuid", "echo x >f; chown 1001:1001 f; chmod 4777 f", "", stranger, "echo y >>f; stat -c %a f", true},
	// utimes.
	{"other with w touches to now", "touch -d @1000 f; chown 1001:1001 f; chmod 666 f", "", stranger, "touch f", true},
	{"other with w cannot set a time", "touch f; chown 1001:1001 f; chmod 666 f", "", stranger, "touch -d @1000 f", false},
	{"other without w cannot touch", "touch f; chown 1001:1001 f; chmod 644 f", "", stranger, "touch f", false},
	{"owner sets a time", "touch f; chown 1001:1001 f; chmod 444 f", "", owner, "touch -d @1000 f && stat -c %Y f", true},
	// POSIX ACLs.
	{"acl: named user reads", "echo x >f; chown 1001:1001 f; chmod 600 f; setfacl -m u:1002:r f", "", stranger, "cat f", true},
	{"acl: named group writes", "echo x >f; chown 1001:1001 f; chmod 600 f; setfacl -m g:1003:rw f", "", member, "echo y >>f && cat f", true},
	{"acl: mask limits named entries", "echo x >f; chown 1001:1001 f; setfacl -m u:1002:rw f; chmod 640 f", "", stranger, "echo y >>f", false},
	{"acl: mode shows the mask", "touch f; setfacl -m u:1002:rwx f", "", stranger, "stat -c %a f; getfacl -cp f", true},
	{"acl: chmod rewrites the mask", "touch f; setfacl -m u:1002:rwx f; chmod 604 f", "", stranger, "getfacl -cp f", true},
	{"acl: an ACL of bits only is no ACL", "touch f; setfacl -m u:1002:r f; setfacl -b f", "", stranger, "stat -c %a f; getfacl -cp f", true},
	{"acl: default inherited by files", "mkdir d; setfacl -d -m u:1002:rwx,g::rx,o::- d; chmod 777 d", "", owner,
		"umask 077; touch d/f; stat -c %a d/f; getfacl -cp d/f", true},
	{"acl: default inherited by dirs", "mkdir d; setfacl -d -m u:1002:rx d; chmod 777 d", "", owner,
		"umask 022; mkdir d/s; stat -c %a d/s; getfacl -cp d/s", true},
	{"acl: inherited grant works", "mkdir d; setfacl -d -m u:1002:rw d; chmod 777 d", "umask 077; echo x >d/f", stranger,
		"cat d/f", true},
	{"acl: kept through rename", "mkdir a b; touch a/f; setfacl -m u:1002:rw a/f; mv a/f b/g", "", stranger, "getfacl -cp b/g", true},
	{"acl: non-owner cannot setfacl", "touch f; chown 1001:1001 f; chmod 666 f", "", stranger, "setfacl -m u:1002:rwx f", false},
}

// TestPermissions runs permCases through the kernel as other users against
// a podfs mount (default options, which check permissions in the kernel
// and enforce POSIX ACLs) and against a local ext4 directory, and compares.
func TestPermissions(t *testing.T) {
	testenv.RequireRoot(t)
	for _, tool := range []string{"setfacl", "getfacl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: install the acl package (hack/deps.sh does)", tool)
		}
	}
	ref := localRef(t)
	v := newBoltVolume(t)
	_, mp := mountVolume(t, v, func(c *Config) { c.Options = []string{"allow_other"} })
	openPath(t, mp)
	for _, c := range permCases {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			var got [2]outcome
			for i, root := range []string{ref, mp} {
				dir := filepath.Join(root, fmt.Sprintf("case%d", time.Now().UnixNano()))
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				setup := inDir(exec.Command("sh", "-ec", `cd "$1"; `+c.setup, "sh", dir))
				if out, err := setup.CombinedOutput(); err != nil {
					t.Fatalf("setup in %s: %v\n%s", dir, err, out)
				}
				if c.byOwner != "" {
					if o := runAs(dir, owner, c.byOwner); o.err != nil {
						t.Fatalf("%q as the owner in %s: %s", c.byOwner, dir, o)
					}
				}
				got[i] = runAs(dir, c.as, c.run)
			}
			if got[0].String() != got[1].String() {
				t.Errorf("%q as uid %d:\next4:  %s\npodfs: %s", c.run, c.as.uid, got[0], got[1])
			}
			if (got[1].err == nil) != c.ok {
				t.Errorf("%q as uid %d on podfs: %s, want success %v", c.run, c.as.uid, got[1], c.ok)
			}
		})
	}
}

// The option that would turn the kernel's checks off is refused, saying why.
func TestNoDefaultPermissionsRefused(t *testing.T) {
	v := newBoltVolume(t)
	testenv.RequireRoot(t)
	mp := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mp, 0o755); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	m, err := New(ctx, Config{MetaURL: v.metaURL, MountPoint: mp, Options: []string{"no_default_permissions"}, Logger: testLogger(t)})
	if err == nil {
		unmountForCleanup(t, m, mp)
		t.Fatal("mounted with no_default_permissions")
	}
	if !strings.Contains(err.Error(), "no_default_permissions is not supported") || IsMounted(mp) {
		t.Fatalf("error %q (mounted: %v): want a refusal that names the option", err, IsMounted(mp))
	}
}

type outcome struct {
	out string
	err error
}

func (o outcome) String() string {
	status := "ok"
	var ee *exec.ExitError
	if errors.As(o.err, &ee) {
		status = fmt.Sprintf("exit %d", ee.ExitCode())
	} else if o.err != nil {
		status = o.err.Error()
	}
	return fmt.Sprintf("%s: %q", status, o.out)
}

// runAs runs script with sh in dir as u and returns its outcome.
func runAs(dir string, u user, script string) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute) // a hang guard
	defer cancel()
	cmd := inDir(exec.CommandContext(ctx, "sh", "-c", `cd "$1" && { `+script+`
}`, "sh", dir))
	cmd.Env = []string{"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.uid, Gid: u.gid, Groups: u.groups}}
	if u.groups == nil {
		cmd.SysProcAttr.Credential.Groups = []uint32{}
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return outcome{out: out.String(), err: err}
}

// inDir returns cmd, which changes into its directory itself (the script's
// "cd "$1""): the child must not start in a directory of a mount this
// process serves, since the Go runtime forks it with vfork and the parent
// thread waits, unpreemptible, until the child has changed directory,
// which needs this process's FUSE server to answer (a stop-the-world then
// deadlocks).
func inDir(cmd *exec.Cmd) *exec.Cmd {
	cmd.Dir = "/"
	return cmd
}

// localRef is a directory on the local ext4 disk that other users can
// reach, removed at the end.
func localRef(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("/var/tmp", "podfs-perm-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil || st.Type != 0xef53 {
		t.Fatalf("%s is not on ext4 (statfs type %#x, %v): the reference needs a local ext4 directory", dir, st.Type, err)
	}
	openPath(t, dir)
	return dir
}

// openPath lets other users reach path: every directory on the way gets
// search permission (test directories are private by default).
func openPath(t *testing.T, path string) {
	t.Helper()
	for p := path; p != "/" && p != "."; p = filepath.Dir(p) {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm()&0o011 != 0o011 {
			if err := os.Chmod(p, st.Mode().Perm()|0o755); err != nil {
				t.Fatal(err)
			}
		}
	}
}
