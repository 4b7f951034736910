package main

import (
	"context"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/cluster/metapb"
	"github.com/ecfs/ecfs/fs"
	"github.com/ecfs/ecfs/store"
	gofuse "github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// countedMeta counts a mount's calls to the metadata service by kind, for
// ecfs_mount_meta_requests_total: how often the mount had to ask (a tree it
// holds read leases of is served with none).
type countedMeta struct {
	fs.Meta
	calls *prometheus.CounterVec
}

func newCountedMeta(m fs.Meta) *countedMeta {
	return &countedMeta{Meta: m, calls: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ecfs_mount_meta_requests_total",
		Help: "Calls to the metadata service by kind: apply_<command>, read_<query> (read_revokes is the long poll for lease revocations), place, session_open, renew.",
	}, []string{"op"})}
}

// oneof is the name of the field set in m's oneof "op".
func oneof(m proto.Message) string {
	r := m.ProtoReflect()
	if o := r.Descriptor().Oneofs().ByName("op"); o != nil {
		if f := r.WhichOneof(o); f != nil {
			return string(f.Name())
		}
	}
	return "unknown"
}

func (m *countedMeta) Apply(ctx context.Context, cmd *metapb.Command) (*metapb.Result, error) {
	m.calls.WithLabelValues("apply_" + oneof(cmd)).Inc()
	return m.Meta.Apply(ctx, cmd)
}

func (m *countedMeta) Read(ctx context.Context, q *metapb.ReadReq) (*metapb.ReadResp, error) {
	m.calls.WithLabelValues("read_" + oneof(q)).Inc()
	return m.Meta.Read(ctx, q)
}

func (m *countedMeta) Place(ctx context.Context, n int) (*metapb.PlaceResp, error) {
	m.calls.WithLabelValues("place").Inc()
	return m.Meta.Place(ctx, n)
}

func (m *countedMeta) OpenSession(ctx context.Context, name string, ttl time.Duration) (uint64, time.Time, error) {
	m.calls.WithLabelValues("session_open").Inc()
	return m.Meta.OpenSession(ctx, name, ttl)
}

func (m *countedMeta) Renew(ctx context.Context, id uint64) (time.Time, error) {
	m.calls.WithLabelValues("renew").Inc()
	return m.Meta.Renew(ctx, id)
}

// fuseMetrics counts the kernel's requests by kind and times their answers,
// for ecfs_mount_fuse_requests_total and ecfs_mount_fuse_request_seconds.
type fuseMetrics struct {
	calls   *prometheus.CounterVec
	latency *prometheus.HistogramVec
	ops     sync.Map // op -> *fuseOp: the series of a successful request, resolved once
}

// fuseOp is the counter and histogram of one kind of request that succeeded
// (looking them up by label at every request cost 5% of the mount's CPU in
// rsync -a).
type fuseOp struct {
	ok      prometheus.Counter
	latency prometheus.Observer
}

func newFuseMetrics() *fuseMetrics {
	return &fuseMetrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ecfs_mount_fuse_requests_total",
			Help: "FUSE requests answered, by kind (lookup, getattr, create, read, write, …) and result (ok, or the errno's name: ENOENT, EIO, …).",
		}, []string{"op", "result"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ecfs_mount_fuse_request_seconds",
			Help:    "Time from a FUSE request's arrival at the mount's handler to its answer, by kind.",
			Buckets: prometheus.ExponentialBuckets(5e-6, 4, 12), // 5 µs … 21 s
		}, []string{"op"}),
	}
}

func (m *fuseMetrics) observe(op string, took time.Duration, st gofuse.Status) {
	o, ok := m.ops.Load(op)
	if !ok {
		o, _ = m.ops.LoadOrStore(op, &fuseOp{ok: m.calls.WithLabelValues(op, "ok"), latency: m.latency.WithLabelValues(op)})
	}
	fo := o.(*fuseOp)
	fo.latency.Observe(took.Seconds())
	if st == gofuse.OK {
		fo.ok.Inc()
		return
	}
	res := syscall.Errno(st).Error()
	if n := unix.ErrnoName(syscall.Errno(st)); n != "" {
		res = n
	}
	m.calls.WithLabelValues(op, res).Inc()
}

func (m *fuseMetrics) collectors() []prometheus.Collector {
	return []prometheus.Collector{m.calls, m.latency}
}

// mountState exports the mount's state (fs.Stats) at each scrape: write
// buffers, the journal's backlog, leases, open files, kept blocks, and the
// Go processors it runs on (procs.go).
type mountState struct {
	f                                                             *fs.FS
	buffer, bufferLimit, journal, leases, handles, fetched, procs *prometheus.Desc
}

func newMountState(f *fs.FS) *mountState {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc("ecfs_mount_"+name, help, labels, nil)
	}
	return &mountState{f: f,
		buffer:      d("buffer_bytes", "Write buffers held (data written and not yet stored)."),
		bufferLimit: d("buffer_limit_bytes", "The bound of the write buffers (--buffer-size): writers wait at it."),
		journal:     d("journal_backlog", "Changes written behind under directory leases that the metadata service has not applied yet."),
		leases:      d("leases", "Directories this mount leases, by kind (write: it changes them itself; read: it answers from its copy).", "kind"),
		handles:     d("open_files", "Files open through the mount."),
		fetched:     d("fetched_bytes", "Whole blocks read and kept for sequential reads and read-ahead (bounded at 64 MiB)."),
		procs:       d("procs", "Go processors the mount runs on now (GOMAXPROCS; --procs 0 follows the load)."),
	}
}

func (m *mountState) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{m.buffer, m.bufferLimit, m.journal, m.leases, m.handles, m.fetched, m.procs} {
		ch <- d
	}
}

func (m *mountState) Collect(ch chan<- prometheus.Metric) {
	st := m.f.Stats()
	g := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	g(m.buffer, float64(st.BufferBytes))
	g(m.bufferLimit, float64(st.BufferLimit))
	g(m.journal, float64(st.Journal))
	g(m.leases, float64(st.WriteLeases), "write")
	g(m.leases, float64(st.ReadLeases), "read")
	g(m.handles, float64(st.OpenHandles))
	g(m.fetched, float64(st.FetchedBytes))
	g(m.procs, float64(runtime.GOMAXPROCS(0)))
}

// storeCalls times the mount's calls to the stores and counts their
// errors by kind (store.ClientConfig.Observe).
type storeCalls struct {
	latency *prometheus.HistogramVec
	errors  *prometheus.CounterVec
}

func newStoreCalls(prefix string) *storeCalls {
	return &storeCalls{
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    prefix + "_store_request_seconds",
			Help:    "Time a store took to answer a call (to the answer's headers), by kind: put, get, head, delete, verify, list, capacity, corrupt.",
			Buckets: prometheus.ExponentialBuckets(1e-4, 4, 10), // 100 µs … 26 s
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: prefix + "_store_request_errors_total",
			Help: "Calls to stores that failed, by kind and code: Unavailable (not reached), NotFound, DataLoss, ResourceExhausted, …",
		}, []string{"op", "code"}),
	}
}

func (s *storeCalls) observe(op string, d time.Duration, code store.Code) {
	s.latency.WithLabelValues(op).Observe(d.Seconds())
	if code != "" {
		s.errors.WithLabelValues(op, string(code)).Inc()
	}
}

func (s *storeCalls) collectors() []prometheus.Collector {
	return []prometheus.Collector{s.latency, s.errors}
}
