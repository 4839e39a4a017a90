// Package meta is a podfs volume's namespace: inodes, directory entries,
// attributes, chunk slice lists, xattrs, sessions and locks, kept in a
// transactional key-value store (package kv) whose engine the metadata URL
// names: bolt:///path (embedded, one process), etcd://h:p[,h:p]/volume or
// tikv://pd:p[,pd:p]/volume (networked, many clients).
//
// # Metadata URLs
//
// ParseURL reads them; credentials are files, the way a Kubernetes Secret
// reaches a pod (a Secret volume), and must be absolute paths:
//
//	bolt:///var/lib/podfs/meta.db
//	etcd://[USER[:PASSWORD]@]HOST:PORT[,...]/VOLUME[?cacert=PATH&cert=PATH&key=PATH&passwordFile=PATH]
//	etcds://...                   etcd over TLS, the system's CAs unless cacert= names one
//	tikv://PD:PORT[,...]/VOLUME[?ca=PATH&cert=PATH&key=PATH]
//
// Any of cacert, cert, key turns TLS on for etcd; cert and key go together.
// passwordFile holds USER's password (prefer it to USER:PASSWORD@). For TiKV
// the files become client-go's config.Security (kv.TiKVSecurity), which
// client-go keeps process-wide; ca= is required for TLS. An unknown or
// repeated parameter is refused, naming the known ones. Errors show URLs
// redacted (package redact), and a connection that fails names the
// credential at fault (user, password file, CA file, client certificate).
//
// Every operation is one transaction, retried on conflict; a client caches
// nothing another client could change, so all clients see each other's
// committed changes at once.
//
// # Key schema
//
// Keys are binary; inode numbers, slice ids and session ids are 8-byte
// big-endian so a scan visits them in order. The etcd and TiKV engines put
// every key of a volume under "podfs\x00<volume>\x00"; a bolt file holds one
// volume in one bucket.
//
//	key                          value                                  what
//	F                            JSON Format                            volume settings (Init, Load)
//	Cinode, Cslice, Csession     8-byte next id                         id counters; clients reserve inode and slice ids 1024 at a time
//	U shard(2)                   space(8) inodes(8), signed             usage counters, 1024 shards summed by StatFS so writers seldom collide
//	U owner(8) stripe(1) n(4)    space(8) inodes(8), signed             a client's usage slot: creates count here, 16 writes per key (usage.go)
//	A ino                        Attr, 60 bytes fixed                   inode attributes (mode, uid, gid, nlink, rdev, size, a/m/ctime, parent dir)
//	D parent name                ino(8) type(1)                         directory entry; type is mode>>12 so readdir needs no inode read
//	S ino                        target bytes                           symlink target
//	X ino name                   value bytes                            extended attribute
//	K ino index(4)               Slice records, 24 bytes each           a chunk's slice list, oldest first (later ones cover earlier)
//	E slice-id                   8-byte count                           extra references to a slice (copy_file_range); absent = one
//	P slice-id                   size(4)                                slice no file references: its objects may be deleted (PendingDeletes)
//	R ino                        size(8)                                removed file whose chunks still await release into P
//	N session-id                 JSON Session                           a client's registration and heartbeat
//	O ino session-id             empty                                  ino is open in that session (kept after unlink until closed); on bolt only once unlinked
//	Q session-id ino             empty                                  the same, indexed by session (reclaim)
//	Y dir                        maxBytes(8) maxInodes(8)               directory quota of dir's tree (quota.go)
//	y dir shard(1)               space(8) inodes(8), signed             usage of dir's quota: the sum of up to 256 shards, a shard per (client, stripe)
//	L ino                        flock records                          whole-file locks: (session, owner, type) each
//	M ino                        plock records                          fcntl byte-range locks: (session, owner, pid, type, start, end) each
//
// # Engines
//
// bolt: one process per file (a second gets a clear error after
// Options.LockTimeout); read-write transactions are group-committed, many
// callers sharing one record in a write-ahead log (one fdatasync), and
// checkpointed into the bolt file in the background (see kv.Bolt). With
// Options.SyncDelay (20 ms by default) a commit is answered once its record
// is in the page cache (a staging file: a crash of the process loses
// nothing) and reaches the log within the delay or at Sync (fsync), after
// Options.DataBarrier made the data it refers to durable. As no
// other client can reach a bolt volume, a client keeps its open files in
// memory and stores an O/Q marker only when it unlinks (or renames over) a
// file it has open (Meta.LocalOpens). etcd: transactions read at one
// revision and commit only if every key read is unchanged and no key was
// inserted into a range scanned (serializable); a truncation or a removal
// writes a few operations per chunk, so run etcd with --max-txn-ops of 1024
// or more for large files (the tests use 4096). tikv: optimistic snapshot-isolation transactions; where a
// decision rests on a key that is only read (an ancestor during rename, the
// inode during open, a directory a link or rename adds to without writing
// its times) the transaction rewrites it (Tx.Lock) to make concurrent changes
// conflict. Creates, which leave a directory's attributes alone within
// DirMtimeSkip so that creates in one directory never conflict, instead
// re-read the directory after committing and take themselves back if an
// rmdir removed it; the rmdir sweeps away entries that raced it. Within one client, transactions on the same
// directory or file take turns (striped locks) instead of conflicting, and on
// tikv the creates that arrive while one runs share the next transaction and
// its confirming read (creategroup.go), each checked and refused on its own.
// A client knows what its usage slots hold, so on tikv and etcd creates
// write them without reading them (usage.go).
//
// # Invariants (what Check verifies)
//
// Every entry names a live inode of the entry's type; a directory's parent
// field names the directory holding its entry; a directory's nlink is 2 plus
// its subdirectories, a file's nlink its entries; an inode without entries
// has nlink 0 and is open in a live session; chunk keys belong to live or
// removed files; the usage counters equal the sum over the inodes; each
// directory quota's usage equals the sum over the inodes charged to it
// (every inode but the root, by the quotas above its Attr.Parent).
//
// # Slices and garbage collection
//
// WriteChunk appends a slice (one per call, each with a fresh id from
// NewSliceID); CompactChunk replaces a prefix of the list with one slice;
// truncation drops whole chunks and covers the cut part with a hole (id 0);
// the last unlink of a closed file marks it removed. Every slice that loses
// its last reference becomes a pending delete, which the data layer's
// garbage collector deletes and acknowledges with DoneDeleting.
package meta
