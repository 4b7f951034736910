package main

import (
	"syscall"
	"testing"
	"time"

	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	dto "github.com/prometheus/client_model/go"
)

// TestFuseMetrics: every request is counted by kind and result (the
// errno's name) and timed by kind.
func TestFuseMetrics(t *testing.T) {
	m := newFuseMetrics()
	for range 3 {
		m.observe("lookup", time.Millisecond, gofuse.OK)
	}
	m.observe("lookup", time.Millisecond, gofuse.Status(syscall.ENOENT))
	m.observe("write", 2*time.Second, gofuse.EIO)
	for _, c := range []struct {
		op, res string
		want    float64
	}{{"lookup", "ok", 3}, {"lookup", "ENOENT", 1}, {"write", "EIO", 1}, {"write", "ok", 0}} {
		var got dto.Metric
		if err := m.calls.WithLabelValues(c.op, c.res).Write(&got); err != nil {
			t.Fatal(err)
		}
		if got.GetCounter().GetValue() != c.want {
			t.Errorf("ecfs_mount_fuse_requests_total{op=%q,result=%q} = %v, want %v", c.op, c.res, got.GetCounter().GetValue(), c.want)
		}
	}
	for op, want := range map[string]uint64{"lookup": 4, "write": 1} {
		var got dto.Metric
		if err := m.latency.WithLabelValues(op).(interface{ Write(*dto.Metric) error }).Write(&got); err != nil {
			t.Fatal(err)
		}
		if n := got.GetHistogram().GetSampleCount(); n != want {
			t.Errorf("ecfs_mount_fuse_request_seconds{op=%q} counted %d requests, want %d", op, n, want)
		}
	}
}
