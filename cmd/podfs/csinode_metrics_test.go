package main

import (
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"podfs.io/podfs/internal/testenv"
)

func TestCSINodeMetrics(t *testing.T) {
	addr := testenv.Addr(testenv.FreePort(t))
	stop, err := serveProcessMetrics(addr, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(b), "go_goroutines ") || !strings.Contains(string(b), "process_resident_memory_bytes ") {
		t.Fatalf("status %d, body without the Go and process metrics:\n%.500s", resp.StatusCode, b)
	}
	if _, err := serveProcessMetrics(addr, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "--metrics-addr") {
		t.Fatalf("a second listener on %s: %v, want an error naming --metrics-addr", addr, err)
	}
}
