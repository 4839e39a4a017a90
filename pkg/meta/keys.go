package meta

import (
	"encoding/binary"
	"fmt"

	"podfs.io/podfs/pkg/meta/kv"
)

// Key prefixes; see the schema table in doc.go.
const (
	pFormat   = 'F'
	pCounter  = 'C'
	pUsage    = 'U'
	pAttr     = 'A'
	pEntry    = 'D'
	pSymlink  = 'S'
	pXattr    = 'X'
	pChunk    = 'K'
	pRefs     = 'E'
	pPending  = 'P'
	pRemoved  = 'R'
	pSession  = 'N'
	pOpen     = 'O'
	pSessOpen = 'Q'
	pFlock    = 'L'
	pPlock    = 'M'
)

var (
	keyFormat     = []byte{pFormat}
	keyNextInode  = []byte("Cinode")
	keyNextSlice  = []byte("Cslice")
	keyNextSessID = []byte("Csession")
)

func be64(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
func be32(b []byte, v uint32) []byte { return binary.BigEndian.AppendUint32(b, v) }

func inoKey(p byte, ino Ino) []byte { return be64(append(make([]byte, 0, 9), p), uint64(ino)) }

func attrKey(ino Ino) []byte    { return inoKey(pAttr, ino) }
func symlinkKey(ino Ino) []byte { return inoKey(pSymlink, ino) }
func removedKey(ino Ino) []byte { return inoKey(pRemoved, ino) }
func flockKey(ino Ino) []byte   { return inoKey(pFlock, ino) }
func plockKey(ino Ino) []byte   { return inoKey(pPlock, ino) }

func entryKey(parent Ino, name string) []byte {
	return append(inoKey(pEntry, parent), name...)
}

func xattrKey(ino Ino, name string) []byte { return append(inoKey(pXattr, ino), name...) }

func chunkKey(ino Ino, index uint32) []byte { return be32(inoKey(pChunk, ino), index) }

func refsKey(id uint64) []byte    { return be64([]byte{pRefs}, id) }
func pendingKey(id uint64) []byte { return be64([]byte{pPending}, id) }
func sessionKey(sid uint64) []byte {
	return be64([]byte{pSession}, sid)
}
func openKey(ino Ino, sid uint64) []byte     { return be64(inoKey(pOpen, ino), sid) }
func sessOpenKey(sid uint64, ino Ino) []byte { return be64(be64([]byte{pSessOpen}, sid), uint64(ino)) }
func usageKey(shard uint16) []byte           { return binary.BigEndian.AppendUint16([]byte{pUsage}, shard) }

func u64(b []byte) uint64 {
	if len(b) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(b)
}

// attrSize is the encoded size of an Attr.
const attrSize = 4*5 + 8*5

func encodeAttr(a *Attr) []byte {
	b := make([]byte, 0, attrSize)
	b = be32(b, a.Mode)
	b = be32(b, a.Uid)
	b = be32(b, a.Gid)
	b = be32(b, a.Nlink)
	b = be32(b, a.Rdev)
	b = be64(b, a.Size)
	b = be64(b, uint64(a.Atime))
	b = be64(b, uint64(a.Mtime))
	b = be64(b, uint64(a.Ctime))
	b = be64(b, uint64(a.Parent))
	return b
}

func decodeAttr(b []byte, a *Attr) error {
	if len(b) != attrSize {
		return fmt.Errorf("corrupt attribute record: %d bytes, want %d", len(b), attrSize)
	}
	be := binary.BigEndian
	a.Mode = be.Uint32(b[0:])
	a.Uid = be.Uint32(b[4:])
	a.Gid = be.Uint32(b[8:])
	a.Nlink = be.Uint32(b[12:])
	a.Rdev = be.Uint32(b[16:])
	a.Size = be.Uint64(b[20:])
	a.Atime = int64(be.Uint64(b[28:]))
	a.Mtime = int64(be.Uint64(b[36:]))
	a.Ctime = int64(be.Uint64(b[44:]))
	a.Parent = Ino(be.Uint64(b[52:]))
	return nil
}

// An entry's value: the child's inode and its file type (mode >> 12), so
// Readdir without attributes and Check can tell types without the inode.
func encodeEntry(ino Ino, mode uint32) []byte {
	return append(be64(make([]byte, 0, 9), uint64(ino)), byte(mode>>12))
}

func decodeEntry(b []byte) (Ino, uint32, error) {
	if len(b) != 9 {
		return 0, 0, fmt.Errorf("corrupt directory entry: %d bytes, want 9", len(b))
	}
	return Ino(binary.BigEndian.Uint64(b)), uint32(b[8]) << 12, nil
}

// sliceSize is the encoded size of one Slice in a chunk's list.
const sliceSize = 8 + 4*4

func appendSlice(b []byte, s Slice) []byte {
	b = be64(b, s.ID)
	b = be32(b, s.Size)
	b = be32(b, s.Off)
	b = be32(b, s.Len)
	return be32(b, s.Pos)
}

func encodeSlices(ss []Slice) []byte {
	b := make([]byte, 0, len(ss)*sliceSize)
	for _, s := range ss {
		b = appendSlice(b, s)
	}
	return b
}

func decodeSlices(b []byte) ([]Slice, error) {
	if len(b)%sliceSize != 0 {
		return nil, fmt.Errorf("corrupt chunk record: %d bytes is not a multiple of %d", len(b), sliceSize)
	}
	ss := make([]Slice, len(b)/sliceSize)
	be := binary.BigEndian
	for i := range ss {
		r := b[i*sliceSize:]
		ss[i] = Slice{ID: be.Uint64(r), Size: be.Uint32(r[8:]), Off: be.Uint32(r[12:]), Len: be.Uint32(r[16:]), Pos: be.Uint32(r[20:])}
	}
	return ss, nil
}

// present is the value of keys whose existence is the information (TiKV
// stores no empty values).
var present = []byte{1}

// deletePrefixTx deletes every key starting with prefix in tx.
func deletePrefixTx(tx kv.Tx, prefix []byte) error {
	var keys [][]byte
	if err := tx.Scan(prefix, kv.PrefixEnd(prefix), 0, func(k, _ []byte) bool {
		keys = append(keys, k)
		return true
	}); err != nil {
		return fmt.Errorf("scan keys under %x: %w", prefix, err)
	}
	for _, k := range keys {
		tx.Delete(k)
	}
	return nil
}
