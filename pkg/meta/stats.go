package meta

import (
	"sync/atomic"
	"time"

	"podfs.io/podfs/pkg/meta/kv"
)

// Stats are a client's counters since it opened.
type Stats struct {
	Txns       int64         // read-write transactions run (each with its retries)
	Conflicts  int64         // attempts that lost a race and were retried
	TxnTime    time.Duration // time spent in read-write transactions, retries included
	Views      int64         // read-only transactions
	Unsynced   uint64        // committed log records not yet durable (bolt with SyncDelay)
	LogFlushes int64         // fdatasyncs that made such records durable
}

type clientStats struct {
	txns, conflicts, views, txnNanos atomic.Int64
}

func (s *clientStats) txnDone(start time.Time, attempts int) {
	s.txns.Add(1)
	s.conflicts.Add(int64(attempts - 1))
	s.txnNanos.Add(int64(time.Since(start)))
}

// Stats implements Meta.
func (c *Client) Stats() Stats {
	st := Stats{
		Txns: c.stats.txns.Load(), Conflicts: c.stats.conflicts.Load(),
		TxnTime: time.Duration(c.stats.txnNanos.Load()), Views: c.stats.views.Load(),
	}
	if r, ok := c.e.(kv.SyncReporter); ok {
		s := r.SyncStats()
		st.Unsynced, st.LogFlushes = s.Pending, s.Flushes
	}
	return st
}
