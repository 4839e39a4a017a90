package fs

import (
	"errors"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// DefaultTimeout is how long the kernel caches attributes and entries when
// the configuration says nothing.
const DefaultTimeout = time.Second

// ioSize is the largest read or write request the kernel sends (and our
// readahead window): 1 MiB requests reach the disk's streaming speed, 128 KiB
// ones half of it on this kind of machine.
const ioSize = 1 << 20

// mountOptions is what the -o options and Config say, resolved.
type mountOptions struct {
	fuse         fuse.MountOptions
	readOnly     bool
	attrTimeout  time.Duration
	entryTimeout time.Duration
}

// errNoDefaultPermissions explains why podfs leaves permission checks to
// the kernel. Without default_permissions the kernel walks cached path
// components without asking the file system, so a directory's search
// permission could only be enforced by giving up the entry cache (a
// request per path component); and with FUSE's POSIX ACL support, which
// podfs negotiates, the kernel turns default_permissions on anyway.
var errNoDefaultPermissions = errors.New("mount option no_default_permissions is not supported: podfs relies on the kernel's permission checks " +
	"(default_permissions, which also enforce POSIX ACLs), because without them the kernel resolves cached paths without asking podfs " +
	"and directory search permission could not be enforced; remove the option")

// knownOptions lists every -o option mount accepts, for the error that names
// an unknown one.
var knownOptions = []string{
	"allow_other", "default_permissions", "ro", "rw",
	"attr_timeout=DURATION", "entry_timeout=DURATION", "fsname=NAME", "debug",
	"nonempty", "dev", "nodev", "suid", "nosuid", "exec", "noexec",
}

// parseDuration accepts a Go duration ("1s", "500ms") or seconds as a number
// ("1", "0.5"), as FUSE tools write timeouts.
func parseDuration(s string) (time.Duration, error) {
	if f, err := strconv.ParseFloat(s, 64); err == nil {
		if f < 0 {
			return 0, fmt.Errorf("negative")
		}
		return time.Duration(f * float64(time.Second)), nil
	}
	d, err := time.ParseDuration(s)
	if err == nil && d < 0 {
		return 0, fmt.Errorf("negative")
	}
	return d, err
}

// resolveOptions turns Config into go-fuse mount options. Unknown options are
// an error: a typo must not silently mount with other semantics than asked.
func resolveOptions(cfg *Config) (*mountOptions, error) {
	mo := &mountOptions{
		readOnly:     cfg.ReadOnly,
		attrTimeout:  cfg.AttrTimeout,
		entryTimeout: cfg.EntryTimeout,
	}
	if mo.attrTimeout == 0 {
		mo.attrTimeout = DefaultTimeout
	}
	if mo.entryTimeout == 0 {
		mo.entryTimeout = DefaultTimeout
	}
	var kernel []string
	fo := &mo.fuse
	for _, raw := range cfg.Options {
		for _, o := range strings.Split(raw, ",") {
			o = strings.TrimSpace(o)
			if o == "" {
				continue
			}
			key, val, hasVal := strings.Cut(o, "=")
			switch key {
			case "allow_other":
				fo.AllowOther = true
			case "default_permissions":
				// always on
			case "no_default_permissions":
				return nil, errNoDefaultPermissions
			case "ro":
				mo.readOnly = true
			case "rw":
				mo.readOnly = false
			case "debug":
				fo.Debug = true
			case "fsname":
				if val == "" {
					return nil, fmt.Errorf("mount option fsname needs a value: fsname=NAME")
				}
				fo.FsName = val
			case "nonempty":
				// the kernel mounts over non-empty directories anyway
			case "dev", "nodev", "suid", "nosuid", "exec", "noexec":
				kernel = append(kernel, key)
			case "attr_timeout", "entry_timeout":
				if !hasVal {
					return nil, fmt.Errorf("mount option %s needs a value, e.g. %s=1s", key, key)
				}
				d, err := parseDuration(val)
				if err != nil {
					return nil, fmt.Errorf("mount option %s=%s: want a duration like 1s, 500ms or 0.5", key, val)
				}
				if key == "attr_timeout" {
					mo.attrTimeout = d
				} else {
					mo.entryTimeout = d
				}
			default:
				known := append([]string(nil), knownOptions...)
				sort.Strings(known)
				return nil, fmt.Errorf("unknown mount option %q; known options: %s", o, strings.Join(known, ", "))
			}
		}
	}
	// A zero timeout must be reachable through -o: Config's zero means default.
	if mo.attrTimeout < 0 || mo.entryTimeout < 0 {
		return nil, fmt.Errorf("attribute and entry timeouts must not be negative")
	}
	kernel = append(kernel, "default_permissions")
	fo.Options = kernel
	// The kernel enforces POSIX ACLs and caches them per inode (forgetting
	// them with the attributes), so ls -l's ACL probe costs one request per
	// file and attribute timeout, answered from memory while the volume has
	// none. It leaves the umask to us (DONT_MASK: a default ACL replaces
	// it) and tells whether setting an ACL clears set-group-ID (SETXATTR_EXT).
	fo.EnableAcl = true
	fo.ExtraCapabilities |= fuse.CAP_DONT_MASK | fuse.CAP_SETXATTR_EXT
	fo.Name = "podfs"
	fo.MaxWrite = ioSize
	fo.MaxReadAhead = ioSize
	fo.MaxBackground = 64
	fo.EnableLocks = true
	// Replies are byte slices; splicing them only fails on 1 MiB reads (pipe size).
	fo.DisableSplice = true
	fo.DisableXAttrs = false
	if os.Geteuid() == 0 {
		// No fusermount needed (containers rarely have it); fall back to it
		// if the mount(2) call is refused.
		fo.DirectMount = true
		flags := uintptr(syscall.MS_NOSUID | syscall.MS_NODEV)
		for _, k := range kernel {
			switch k {
			case "dev":
				flags &^= syscall.MS_NODEV
			case "suid":
				flags &^= syscall.MS_NOSUID
			}
		}
		if mo.readOnly {
			flags |= syscall.MS_RDONLY
		}
		fo.DirectMountFlags = flags
	}
	if mo.readOnly && !fo.DirectMount {
		fo.Options = append(fo.Options, "ro") // for fusermount
	}
	return mo, nil
}
