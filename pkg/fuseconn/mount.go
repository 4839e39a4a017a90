package fuseconn

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// MountOptions say how Mount mounts.
type MountOptions struct {
	FsName  string // the mount's source, as mount(8) and /proc/mounts show it
	Subtype string // the type is "fuse.<Subtype>"; "" = plain "fuse"
	// ReadOnly mounts with MS_RDONLY: the kernel answers EROFS to writes
	// itself, whatever the server would do.
	ReadOnly           bool
	AllowOther         bool
	DefaultPermissions bool
	// MaxRead bounds the size of a read request; 0 = the kernel's default.
	MaxRead int
}

// Mount opens /dev/fuse and mounts it at mp with mount(2), returning the
// connection: the kernel has queued its INIT request, which whoever serves
// the connection reads first (see Attach). The descriptor is blocking and
// close-on-exec. Nothing is left mounted on error.
func Mount(mp string, o MountOptions) (*os.File, error) {
	// Opened with open(2), not os.OpenFile: that one would register the
	// descriptor with the Go poller and make the shared file description
	// non-blocking, which the serving process's go-fuse cannot read.
	fd, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w (load the fuse module, or give the container the /dev/fuse device)", err)
	}
	fstype := "fuse"
	if o.Subtype != "" {
		fstype += "." + o.Subtype
	}
	source := o.FsName
	if source == "" {
		source = fstype
	}
	data, flags := mountData(fd, o)
	if err := unix.Mount(source, mp, fstype, flags, data); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("mount(2) %s at %s with %q: %w", fstype, mp, data, err)
	}
	return os.NewFile(uintptr(fd), "/dev/fuse"), nil
}

// mountData is mount(2)'s data string and flags for o. The mount belongs
// to root: the holder is root, and the server is told to trust the
// kernel's permission checks (default_permissions) or do its own.
func mountData(fd int, o MountOptions) (string, uintptr) {
	opts := []string{
		fmt.Sprintf("fd=%d", fd),
		fmt.Sprintf("rootmode=%o", unix.S_IFDIR),
		"user_id=0",
		"group_id=0",
	}
	if o.MaxRead > 0 {
		opts = append(opts, fmt.Sprintf("max_read=%d", o.MaxRead))
	}
	if o.AllowOther {
		opts = append(opts, "allow_other")
	}
	if o.DefaultPermissions {
		opts = append(opts, "default_permissions")
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV)
	if o.ReadOnly {
		flags |= unix.MS_RDONLY
	}
	return strings.Join(opts, ","), flags
}

// Volume is the identity of the volume a connection serves, sent with it.
type Volume struct {
	Name     string `json:"name"`
	VolumeID string `json:"volume_id,omitempty"`
	ReadOnly bool   `json:"read_only,omitempty"`
	// Source is what the server needs to serve the volume. It may carry
	// credentials: it travels only over the socket, never to disk.
	Source *Source `json:"source,omitempty"`
}

// Source says where a volume's metadata and data live, as the holder
// resolved them from the volume's attributes and Secret.
type Source struct {
	// PodVolume is the pod's name for the volume (spec.volumes[].name).
	PodVolume  string   `json:"pod_volume,omitempty"`
	MetaURL    string   `json:"meta_url"`
	StorageURL string   `json:"storage_url,omitempty"`
	SubDir     string   `json:"sub_dir,omitempty"`
	Options    []string `json:"options,omitempty"`
}

// Status is what a server reports about its serving of a connection.
type Status struct {
	Served bool   `json:"served,omitempty"`
	Error  string `json:"error,omitempty"`
	// Detached: the server stopped cleanly; everything it acknowledged is
	// committed, and the next server owes the kernel no error for it.
	Detached bool `json:"detached,omitempty"`
}

// Stats are a volume's usage figures, as statfs reports them.
type Stats struct {
	TotalBytes  int64 `json:"total_bytes"`
	UsedBytes   int64 `json:"used_bytes"`
	AvailBytes  int64 `json:"avail_bytes"`
	TotalInodes int64 `json:"total_inodes"`
	UsedInodes  int64 `json:"used_inodes"`
	FreeInodes  int64 `json:"free_inodes"`
}

// SocketName is the file name of the socket for the volume called name:
// short and of fixed length whatever the name, so it always fits.
func SocketName(name string) string {
	sum := sha256.Sum256([]byte(name))
	return "v-" + hex.EncodeToString(sum[:8]) + ".sock"
}

// isFUSE reports whether f is a /dev/fuse descriptor (character device
// 10:229), so a peer cannot make us hold or serve something else.
func isFUSE(f *os.File) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return fmt.Errorf("fstat the received descriptor: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || unix.Major(st.Rdev) != 10 || unix.Minor(st.Rdev) != 229 {
		return errors.New("the received descriptor is not /dev/fuse")
	}
	return nil
}
