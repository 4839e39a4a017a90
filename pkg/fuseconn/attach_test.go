package fuseconn

import (
	"encoding/binary"
	"strings"
	"testing"
)

// initPair builds an INIT request and a reply to it.
func initPair(maxWrite uint32, flags uint64) (req, reply []byte) {
	le := binary.LittleEndian
	req = make([]byte, inHeaderSize+64)
	le.PutUint32(req[0:], uint32(len(req)))
	le.PutUint32(req[4:], opInit)
	le.PutUint64(req[8:], 2)
	le.PutUint32(req[inHeaderSize:], 7)
	le.PutUint32(req[inHeaderSize+4:], 45)
	reply = make([]byte, outHeaderSize+64)
	le.PutUint32(reply[0:], uint32(len(reply)))
	le.PutUint64(reply[8:], 2)
	b := reply[outHeaderSize:]
	le.PutUint32(b[0:], 7)
	le.PutUint32(b[4:], 45)
	le.PutUint32(b[12:], uint32(flags))
	le.PutUint32(b[20:], maxWrite)
	le.PutUint16(b[28:], uint16(maxWrite/4096))
	le.PutUint32(b[32:], uint32(flags>>32))
	return req, reply
}

func TestExchangeRoundTrip(t *testing.T) {
	req, reply := initPair(1<<20, 1<<3|1<<39)
	r, p, err := decodeExchange(encodeExchange(req, reply))
	if err != nil || string(r) != string(req) || string(p) != string(reply) {
		t.Fatalf("decode(encode) = %d, %d bytes, %v", len(r), len(p), err)
	}
	for name, bad := range map[string][]byte{
		"empty":     nil,
		"magic":     append([]byte("XXXX"), encodeExchange(req, reply)[4:]...),
		"truncated": encodeExchange(req, reply)[:20],
		"no reply":  encodeExchange(req, nil),
	} {
		if _, _, err := decodeExchange(bad); err == nil {
			t.Errorf("%s: decoded a bad exchange", name)
		}
	}
}

func TestSameNegotiation(t *testing.T) {
	_, old := initPair(1<<20, 1<<3|1<<39)
	if err := sameNegotiation(old, old); err != nil {
		t.Fatalf("same reply: %v", err)
	}
	_, smaller := initPair(128<<10, 1<<3|1<<39)
	if err := sameNegotiation(old, smaller); err == nil || !strings.Contains(err.Error(), "max_write 1048576") {
		t.Errorf("a smaller max_write: %v", err)
	}
	_, flags := initPair(1<<20, 1<<3)
	if err := sameNegotiation(old, flags); err == nil || !strings.Contains(err.Error(), "differing: 0x8000000000") {
		t.Errorf("other flags: %v", err)
	}
}
