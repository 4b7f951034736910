package store

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/ecfs/ecfs/codec"
	"github.com/prometheus/client_golang/prometheus"
)

// Wire headers of the shard API.
const (
	hdrScheme     = "X-Ecfs-Scheme"      // "K+M" or "K+M/SIZE"
	hdrObjectLen  = "X-Ecfs-Object-Len"  // length of the whole object
	hdrShardLen   = "X-Ecfs-Shard-Len"   // length of the shard data
	hdrChecksums  = "X-Ecfs-Checksums"   // base64 of little-endian crc32c per chunk
	hdrFirstChunk = "X-Ecfs-First-Chunk" // index of the first chunk X-Ecfs-Checksums covers
	hdrCode       = "X-Ecfs-Code"        // error class, also as a trailer
	hdrMessage    = "X-Ecfs-Message"     // error text, also as a trailer
	hdrStoreID    = "X-Ecfs-Store-Id"
)

// Defaults of Config.
const (
	DefaultMaxShardSize  = 64 << 20
	DefaultReserve       = 16 << 20
	DefaultMaxConcurrent = 64
	DefaultListLimit     = 1000
	MaxListLimit         = 10000
)

// Config configures a shard server.
type Config struct {
	// DataDir holds the store id; required.
	DataDir string
	// Disks are the directories shards live in; default DataDir/disk.
	Disks []string
	// Secret is the cluster secret every request must carry; required.
	Secret string
	// MaxShardSize caps the data of one shard; default DefaultMaxShardSize.
	MaxShardSize int64
	// Reserve is kept free on every disk; default DefaultReserve. A write that
	// would cut into it fails with ResourceExhausted.
	Reserve int64
	// MaxConcurrent bounds the requests doing disk I/O at once; default
	// DefaultMaxConcurrent.
	MaxConcurrent int
	// ScrubInterval is the pause between background scrub passes (see
	// Server.Scrub); default DefaultScrubInterval, negative: no scrub.
	ScrubInterval time.Duration
	// ScrubRate caps the scrub's reading, in bytes per second; default
	// DefaultScrubRate.
	ScrubRate int64
	// Logger; default slog.Default().
	Logger *slog.Logger
	// Registerer takes the server's metrics; nil registers nothing.
	Registerer prometheus.Registerer
	// TLS, if set, makes HTTPServer serve TLS with it: the store's
	// certificate, and the cluster's CA as ClientCAs with
	// ClientAuth = tls.RequireAndVerifyClientCert. Serve it with
	// ServeTLS(ln, "", "").
	TLS *tls.Config
}

// Validate checks the configuration and fills in defaults.
func (c *Config) Validate() error {
	if c.DataDir == "" {
		return errors.New("store: a data directory is required")
	}
	if len(c.Secret) < 16 {
		return errors.New("store: the cluster secret must be at least 16 characters")
	}
	if len(c.Disks) == 0 {
		c.Disks = []string{filepath.Join(c.DataDir, "disk")}
	}
	if c.MaxShardSize == 0 {
		c.MaxShardSize = DefaultMaxShardSize
	}
	if c.MaxShardSize < codec.ChunkSize || c.MaxShardSize > maxStoredShard {
		return fmt.Errorf("store: max shard size %d outside %d..1 GiB", c.MaxShardSize, codec.ChunkSize)
	}
	if c.Reserve == 0 {
		c.Reserve = DefaultReserve
	}
	if c.Reserve < 0 {
		c.Reserve = 0
	}
	if c.MaxConcurrent <= 0 {
		c.MaxConcurrent = DefaultMaxConcurrent
	}
	if c.ScrubInterval == 0 {
		c.ScrubInterval = DefaultScrubInterval
	}
	if c.ScrubRate <= 0 {
		c.ScrubRate = DefaultScrubRate
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return nil
}

// Server serves shards over HTTP.
type Server struct {
	cfg   Config
	id    string
	disks *disks
	log   *slog.Logger
	m     *metrics
	sem   chan struct{}

	corrupt corruptSet
}

// NewServer opens (or initialises) the store in cfg.DataDir.
func NewServer(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	id, err := loadOrCreateID(filepath.Join(cfg.DataDir, "store-id"))
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	d, err := openDisks(append([]string(nil), cfg.Disks...), id, cfg.MaxShardSize, cfg.Reserve)
	if err != nil {
		return nil, fmt.Errorf("store: %w", err)
	}
	s := &Server{
		cfg:   cfg,
		id:    id,
		disks: d,
		log:   cfg.Logger.With("component", "store", "store_id", id),
		sem:   make(chan struct{}, cfg.MaxConcurrent),
	}
	s.m = newMetrics(cfg.Registerer, d)
	return s, nil
}

// ID is the store's persistent id (a UUID).
func (s *Server) ID() string { return s.id }

// Capacity reports total and free bytes of every disk.
func (s *Server) Capacity() Capacity {
	c := Capacity{StoreID: s.id, Disks: s.disks.usage()}
	for _, u := range c.Disks {
		c.Total += u.Total
		c.Free += u.Free
	}
	return c
}

// Capacity is the answer of GET /v1/capacity.
type Capacity struct {
	StoreID string      `json:"store_id"`
	Total   int64       `json:"total_bytes"`
	Free    int64       `json:"free_bytes"`
	Disks   []DiskUsage `json:"disks"`
}

func loadOrCreateID(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		id := strings.TrimSpace(string(b))
		if !validUUID(id) {
			return "", fmt.Errorf("%s holds %q, not a store id", path, id)
		}
		return id, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return "", err
	}
	var u [16]byte
	if _, err := rand.Read(u[:]); err != nil {
		return "", err
	}
	u[6] = u[6]&0x0f | 0x40
	u[8] = u[8]&0x3f | 0x80
	id := fmt.Sprintf("%x-%x-%x-%x-%x", u[0:4], u[4:6], u[6:8], u[8:10], u[10:16])
	return id, writeFileSync(path, []byte(id+"\n"))
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// Handler returns the shard API:
//
//	PUT    /v1/shards/{id}/{index}          store a shard (headers: scheme, object length, checksums)
//	GET    /v1/shards/{id}/{index}          read it, optionally a Range: bytes=a-b
//	HEAD   /v1/shards/{id}/{index}          stat
//	DELETE /v1/shards/{id}/{index}          delete
//	POST   /v1/shards/{id}/{index}/verify   check every chunk (JSON VerifyResult)
//	GET    /v1/shards?after=KEY&limit=N     list (JSON ListResult)
//	GET    /v1/capacity                     JSON Capacity
//	GET    /v1/corrupt                      JSON []CorruptShard: found corrupt, not yet rewritten
//
// Every request must carry "Authorization: Bearer SECRET".
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /v1/shards/{id}/{index}", s.wrap("put", s.handlePut))
	mux.HandleFunc("GET /v1/shards/{id}/{index}", s.wrap("get", s.handleGet))
	mux.HandleFunc("HEAD /v1/shards/{id}/{index}", s.wrap("stat", s.handleStat))
	mux.HandleFunc("DELETE /v1/shards/{id}/{index}", s.wrap("delete", s.handleDelete))
	mux.HandleFunc("POST /v1/shards/{id}/{index}/verify", s.wrap("verify", s.handleVerify))
	mux.HandleFunc("GET /v1/shards", s.wrap("list", s.handleList))
	mux.HandleFunc("GET /v1/capacity", s.wrap("capacity", s.handleCapacity))
	mux.HandleFunc("GET /v1/corrupt", s.wrap("corrupt", func(w http.ResponseWriter, r *http.Request) error {
		return writeJSON(w, s.corrupt.list())
	}))
	mux.HandleFunc("/", s.wrap("unknown", func(w http.ResponseWriter, r *http.Request) error {
		return fmt.Errorf("%w: no such call %s %s", ErrInvalidArgument, r.Method, r.URL.Path)
	}))
	return mux
}

// HTTPServer returns an http.Server for Handler with limits suited to it.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          log.New(&serverErrors{s: s, limit: newRateLimitedLog(s.log, 10*time.Second)}, "", 0),
		TLSConfig:         s.cfg.TLS,
	}
}

// serverErrors takes the HTTP server's own error lines: refused TLS
// handshakes are counted and logged at most every 10 s (a scanner or a
// plaintext client would fill the log), the rest logged as warnings.
type serverErrors struct {
	s     *Server
	limit *rateLimitedLog
}

func (e *serverErrors) Write(p []byte) (int, error) {
	line := strings.TrimSpace(string(p))
	if strings.Contains(line, "TLS handshake error") {
		e.s.m.tlsFailures.Inc()
		e.limit.warn("refused a connection: TLS handshake failed", "detail", line)
		return len(p), nil
	}
	e.s.log.Warn(line)
	return len(p), nil
}

// errWritten marks an error already sent (as a trailer) by a handler.
var errWritten = errors.New("already answered")

func (s *Server) wrap(op string, h func(http.ResponseWriter, *http.Request) error) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		w.Header().Set(hdrStoreID, s.id)
		err := s.authenticate(r)
		if err == nil {
			err = h(w, r)
		}
		code := "OK"
		switch {
		case err == nil:
		case errors.Is(err, errWritten):
			// The answer had started: failStream put the error in the
			// trailer and logged it, or the client went away.
			code = string(codeOf(err))
		default:
			c := codeOf(err)
			code = string(c)
			writeError(w, c, err)
			switch c {
			case CodeUnauthenticated:
				s.m.authFailures.Inc()
				s.log.Warn("rejected request", "op", op, "remote", r.RemoteAddr, "err", err)
			case CodeInternal, CodeResourceExhausted, CodeDataLoss:
				s.log.Error("request failed", "op", op, "path", r.URL.Path, "remote", r.RemoteAddr, "err", err)
			default:
				s.log.Debug("request failed", "op", op, "path", r.URL.Path, "err", err)
			}
		}
		s.m.requests.WithLabelValues(op, code).Inc()
		s.m.latency.WithLabelValues(op).Observe(time.Since(start).Seconds())
	}
}

func (s *Server) authenticate(r *http.Request) error {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok {
		return fmt.Errorf("%w: no bearer token", ErrUnauthenticated)
	}
	if subtle.ConstantTimeCompare([]byte(tok), []byte(s.cfg.Secret)) != 1 {
		return fmt.Errorf("%w: wrong cluster secret", ErrUnauthenticated)
	}
	return nil
}

func writeError(w http.ResponseWriter, c Code, err error) {
	msg := strings.ReplaceAll(err.Error(), "\n", " ")
	w.Header().Set(hdrCode, string(c))
	w.Header().Set(hdrMessage, msg)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(c.status())
	_ = json.NewEncoder(w).Encode(map[string]string{"code": string(c), "message": msg})
}

func writeJSON(w http.ResponseWriter, v any) error {
	w.Header().Set("Content-Type", "application/json")
	return json.NewEncoder(w).Encode(v)
}

func (s *Server) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("%w: %v", ErrUnavailable, ctx.Err())
	}
}

func (s *Server) release() { <-s.sem }

func pathKey(r *http.Request) (ShardKey, error) {
	return parseKey(r.PathValue("id"), r.PathValue("index"))
}

// EncodeChecksums is the wire form of a list of chunk checksums.
func EncodeChecksums(sums []uint32) string {
	b := make([]byte, 0, 4*len(sums))
	for _, v := range sums {
		b = binary.LittleEndian.AppendUint32(b, v)
	}
	return base64.StdEncoding.EncodeToString(b)
}

// DecodeChecksums parses what EncodeChecksums writes.
func DecodeChecksums(s string) ([]uint32, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil || len(b)%4 != 0 {
		return nil, fmt.Errorf("%w: malformed checksum list", ErrInvalidArgument)
	}
	out := make([]uint32, len(b)/4)
	for i := range out {
		out[i] = binary.LittleEndian.Uint32(b[4*i:])
	}
	return out, nil
}

func (s *Server) handlePut(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r)
	if err != nil {
		return err
	}
	sc, err := codec.ParseScheme(r.Header.Get(hdrScheme))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	olen, err := strconv.ParseInt(r.Header.Get(hdrObjectLen), 10, 64)
	if err != nil {
		return fmt.Errorf("%w: bad %s header", ErrInvalidArgument, hdrObjectLen)
	}
	if r.ContentLength < 0 {
		return fmt.Errorf("%w: a shard upload needs a Content-Length", ErrInvalidArgument)
	}
	if r.ContentLength > s.cfg.MaxShardSize {
		return fmt.Errorf("%w: shard of %d bytes, the limit is %d", errTooLarge, r.ContentLength, s.cfg.MaxShardSize)
	}
	sums, err := DecodeChecksums(r.Header.Get(hdrChecksums))
	if err != nil {
		return err
	}
	h := &ShardHeader{Key: k, Scheme: sc, ObjectLen: olen, ShardLen: r.ContentLength, Sums: sums}
	if err := h.Validate(s.cfg.MaxShardSize); err != nil {
		return err
	}
	if err := s.acquire(r.Context()); err != nil {
		return err
	}
	defer s.release()
	body := http.MaxBytesReader(w, r.Body, r.ContentLength)
	if err := s.disks.put(h, body); err != nil {
		return err
	}
	s.corrupt.remove(k)
	s.m.bytesWritten.Add(float64(h.ShardLen))
	w.WriteHeader(http.StatusCreated)
	return nil
}

// errTooLarge is an invalid argument answered with 413.
var errTooLarge = &tooLarge{}

type tooLarge struct{}

func (*tooLarge) Error() string { return "too large" }
func (*tooLarge) Unwrap() error { return ErrInvalidArgument }

func setShardHeaders(w http.ResponseWriter, h *ShardHeader) {
	w.Header().Set(hdrScheme, h.Scheme.String())
	w.Header().Set(hdrObjectLen, strconv.FormatInt(h.ObjectLen, 10))
	w.Header().Set(hdrShardLen, strconv.FormatInt(h.ShardLen, 10))
}

func (s *Server) handleStat(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r)
	if err != nil {
		return err
	}
	f, h, err := s.disks.open(k)
	if err != nil {
		return err
	}
	defer f.Close()
	setShardHeaders(w, h)
	w.Header().Set(hdrChecksums, EncodeChecksums(h.Sums))
	w.WriteHeader(http.StatusOK)
	return nil
}

// parseRange reads "bytes=a-b" (inclusive, one range) against a shard of
// length n and returns the half-open [off, end).
func parseRange(v string, n int64) (int64, int64, error) {
	if v == "" {
		return 0, n, nil
	}
	spec, ok := strings.CutPrefix(v, "bytes=")
	a, b, ok2 := strings.Cut(spec, "-")
	if !ok || !ok2 {
		return 0, 0, fmt.Errorf("%w: bad Range %q", ErrInvalidArgument, v)
	}
	off, err1 := strconv.ParseInt(a, 10, 64)
	last, err2 := strconv.ParseInt(b, 10, 64)
	if err1 != nil || err2 != nil || off < 0 || last < off || last >= n {
		return 0, 0, fmt.Errorf("%w: Range %q outside a shard of %d bytes", ErrInvalidArgument, v, n)
	}
	return off, last + 1, nil
}

// handleGet streams a range of a shard. Every chunk the range touches is
// verified before any of its bytes are sent; the response carries the
// checksums of those chunks so the client verifies too. A corrupt first chunk
// is a DataLoss status; a corrupt later one ends the body early with a
// DataLoss trailer.
func (s *Server) handleGet(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r)
	if err != nil {
		return err
	}
	if err := s.acquire(r.Context()); err != nil {
		return err
	}
	defer s.release()
	f, h, err := s.disks.open(k)
	if err != nil {
		return s.noteCorrupt(k, err)
	}
	defer f.Close()
	off, end, err := parseRange(r.Header.Get("Range"), h.ShardLen)
	if err != nil {
		return err
	}
	setShardHeaders(w, h)
	first, last := int(off/codec.ChunkSize), codec.Chunks(end)
	w.Header().Set(hdrFirstChunk, strconv.Itoa(first))
	w.Header().Set(hdrChecksums, EncodeChecksums(h.Sums[first:last]))
	w.Header().Set("Trailer", hdrCode+", "+hdrMessage)
	buf := readBufPool.Get().(*[]byte)
	defer readBufPool.Put(buf)
	started := false
	// Read up to readBatch chunks with one pread, verify each, send the
	// verified bytes with one write.
	for c := first; c < last; c += readBatch {
		n := min(readBatch, last-c)
		cOff := int64(c) * codec.ChunkSize
		b := (*buf)[:min(int64(n)*codec.ChunkSize, h.ShardLen-cOff)]
		if _, err := f.ReadAt(b, h.DataOffset()+cOff); err != nil {
			err = fmt.Errorf("%w: shard %s chunks %d-%d: %v", ErrDataLoss, k, c, c+n-1, err)
			return s.failStream(w, k, !started, err)
		}
		for i := range n {
			chunk := b[i*codec.ChunkSize : min((i+1)*codec.ChunkSize, len(b))]
			if codec.Checksum(chunk) != h.Sums[c+i] {
				err := fmt.Errorf("%w: shard %s chunk %d fails its checksum", ErrDataLoss, k, c+i)
				if i > 0 && !started {
					// Send the good chunks before it; the trailer says the rest is lost.
					w.WriteHeader(http.StatusOK)
					started = true
				}
				if started {
					lo, hi := max(off-cOff, 0), min(end-cOff, int64(i)*codec.ChunkSize)
					if hi > lo {
						_, _ = w.Write(b[lo:hi])
					}
				}
				return s.failStream(w, k, !started, err)
			}
		}
		lo, hi := max(off-cOff, 0), min(end-cOff, int64(len(b)))
		if !started {
			w.WriteHeader(http.StatusOK)
			started = true
		}
		if _, err := w.Write(b[lo:hi]); err != nil {
			return errWritten // the client went away
		}
		s.m.bytesRead.Add(float64(hi - lo))
	}
	if !started { // empty shard
		w.WriteHeader(http.StatusOK)
	}
	return nil
}

// readBatch is how many chunks a read takes from disk at once.
const readBatch = 16

var readBufPool = sync.Pool{New: func() any { b := make([]byte, readBatch*codec.ChunkSize); return &b }}

func (s *Server) failStream(w http.ResponseWriter, k ShardKey, beforeHeader bool, err error) error {
	s.m.corruptChunks.Inc()
	s.corrupt.add(k)
	if beforeHeader {
		w.Header().Del("Trailer")
		return err
	}
	w.Header().Set(hdrCode, string(CodeDataLoss))
	w.Header().Set(hdrMessage, err.Error())
	s.log.Error("corrupt shard", "shard", k, "err", err)
	return fmt.Errorf("%w: %w", errWritten, err)
}

func (s *Server) noteCorrupt(k ShardKey, err error) error {
	if errors.Is(err, ErrDataLoss) {
		s.m.corruptChunks.Inc()
		s.corrupt.add(k)
	}
	return err
}

func (s *Server) handleDelete(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r)
	if err != nil {
		return err
	}
	if err := s.disks.remove(k); err != nil {
		return err
	}
	s.corrupt.remove(k)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) handleVerify(w http.ResponseWriter, r *http.Request) error {
	k, err := pathKey(r)
	if err != nil {
		return err
	}
	if err := s.acquire(r.Context()); err != nil {
		return err
	}
	defer s.release()
	res, err := s.disks.verify(k)
	if err != nil {
		return err
	}
	if !res.OK {
		s.corrupt.add(k)
		s.m.corruptChunks.Add(float64(max(len(res.BadChunks), 1)))
		s.log.Error("corrupt shard", "shard", k, "bad_chunks", res.BadChunks, "err", res.Error)
	}
	return writeJSON(w, res)
}

// ListResult is the answer of GET /v1/shards.
type ListResult struct {
	Shards []ShardInfo `json:"shards"`
	Next   string      `json:"next,omitempty"` // cursor for the next page; empty at the end
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	limit := DefaultListLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxListLimit {
			return fmt.Errorf("%w: limit %q outside 1..%d", ErrInvalidArgument, v, MaxListLimit)
		}
		limit = n
	}
	shards, next, err := s.disks.list(q.Get("after"), limit)
	if err != nil {
		return err
	}
	if shards == nil {
		shards = []ShardInfo{}
	}
	return writeJSON(w, ListResult{Shards: shards, Next: next})
}

func (s *Server) handleCapacity(w http.ResponseWriter, r *http.Request) error {
	return writeJSON(w, s.Capacity())
}

// DiskPaths lists the disk directories.
func (c Capacity) DiskPaths() []string {
	out := make([]string, len(c.Disks))
	for i, d := range c.Disks {
		out[i] = d.Path
	}
	return out
}
