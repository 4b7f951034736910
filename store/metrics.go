package store

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	requests      *prometheus.CounterVec
	latency       *prometheus.HistogramVec
	bytesWritten  prometheus.Counter
	bytesRead     prometheus.Counter
	authFailures  prometheus.Counter
	tlsFailures   prometheus.Counter
	corruptChunks prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, d *disks) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecfs_store_requests_total", Help: "Shard API requests by operation and result code.",
		}, []string{"op", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ecfs_store_request_seconds", Help: "Shard API request latency.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"op"}),
		bytesWritten: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecfs_store_written_bytes_total", Help: "Shard data bytes stored.",
		}),
		bytesRead: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecfs_store_read_bytes_total", Help: "Shard data bytes served.",
		}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecfs_store_auth_failures_total", Help: "Requests rejected for a missing or wrong cluster secret.",
		}),
		tlsFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecfs_store_tls_failures_total", Help: "Connections refused at the TLS handshake (plaintext, no certificate, another CA).",
		}),
		corruptChunks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ecfs_store_corrupt_chunks_total", Help: "Shard chunks (or headers) found corrupt on read or verify.",
		}),
	}
	if reg == nil {
		return m
	}
	free := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "ecfs_store_free_bytes", Help: "Free bytes on all disks.",
	}, func() float64 {
		var n int64
		for _, u := range d.usage() {
			n += u.Free
		}
		return float64(n)
	})
	reg.MustRegister(m.requests, m.latency, m.bytesWritten, m.bytesRead, m.authFailures, m.tlsFailures, m.corruptChunks, free)
	return m
}
