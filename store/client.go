package store

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/ecfs/ecfs/codec"
)

// Client calls the shard API of any number of stores over pooled
// keep-alive connections. It is safe for concurrent use.
type Client struct {
	secret  string
	observe func(op string, d time.Duration, code Code)
	scheme  string // "http://", or "https://" with TLS
	hc      *http.Client
	tr      *http.Transport
}

// ClientConfig configures a Client.
type ClientConfig struct {
	// Secret is the cluster secret; required.
	Secret string
	// MaxConnsPerStore bounds the connections to one store; default 32.
	MaxConnsPerStore int
	// DialTimeout bounds connecting to a store; default 3s.
	DialTimeout time.Duration
	// TLS, if set, makes every call HTTPS with it: the cluster's CA as
	// RootCAs and this host's certificate to show.
	TLS *tls.Config
	// Observe, if set, is told of every call: its kind (put, get, head,
	// delete, verify, list, capacity, corrupt), how long the store took to
	// answer (to the answer's headers), and the error's code ("" if none;
	// Unavailable when the store was not reached).
	Observe func(op string, d time.Duration, code Code)
}

// NewClient returns a client. Each call is bounded by its context only.
func NewClient(cfg ClientConfig) *Client {
	if cfg.MaxConnsPerStore <= 0 {
		cfg.MaxConnsPerStore = 32
	}
	if cfg.DialTimeout <= 0 {
		cfg.DialTimeout = 3 * time.Second
	}
	tr := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: cfg.DialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0,
		MaxIdleConnsPerHost: cfg.MaxConnsPerStore,
		MaxConnsPerHost:     cfg.MaxConnsPerStore,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		WriteBufferSize:     256 << 10,
		ReadBufferSize:      256 << 10,
		TLSClientConfig:     cfg.TLS,
	}
	scheme := "http://"
	if cfg.TLS != nil {
		scheme = "https://" // HTTP/1.1 still: a transport given a TLS config does not attempt HTTP/2
	}
	return &Client{secret: cfg.Secret, tr: tr, hc: &http.Client{Transport: tr}, scheme: scheme, observe: cfg.Observe}
}

// Close drops idle connections.
func (c *Client) Close() { c.tr.CloseIdleConnections() }

func (c *Client) shardURL(addr string, k ShardKey, suffix string) string {
	return fmt.Sprintf("%s%s/v1/shards/%s/%03d%s", c.scheme, addr, k.Object, k.Index, suffix)
}

func (c *Client) do(ctx context.Context, op, addr, method, u string, body io.Reader, hdr http.Header) (resp *http.Response, err error) {
	if c.observe != nil {
		start := time.Now()
		defer func() { c.observe(op, time.Since(start), callCode(err)) }()
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidArgument, err)
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	req.Header.Set("Authorization", "Bearer "+c.secret)
	if b, ok := body.(*bytes.Reader); ok {
		req.ContentLength = int64(b.Len())
	}
	resp, err = c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrUnavailable, addr, err)
	}
	if resp.StatusCode >= 300 {
		defer resp.Body.Close()
		return nil, remoteError(addr, resp)
	}
	return resp, nil
}

func remoteError(addr string, resp *http.Response) error {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	code := Code(resp.Header.Get(hdrCode))
	if code == "" {
		code = CodeInternal
	}
	msg := resp.Header.Get(hdrMessage)
	if msg == "" {
		msg = resp.Status
	}
	return &RemoteError{Addr: addr, Code: code, Message: msg}
}

// Put stores one shard: the data and the crc32c of each of its chunks, which
// the store verifies before keeping anything.
func (c *Client) Put(ctx context.Context, addr string, k ShardKey, s codec.Scheme, objectLen int64, data []byte, sums []uint32) error {
	hdr := http.Header{}
	hdr.Set(hdrScheme, s.String())
	hdr.Set(hdrObjectLen, strconv.FormatInt(objectLen, 10))
	hdr.Set(hdrChecksums, EncodeChecksums(sums))
	hdr.Set("Content-Type", "application/octet-stream")
	resp, err := c.do(ctx, "put", addr, http.MethodPut, c.shardURL(addr, k, ""), bytes.NewReader(data), hdr)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

// Range is shard data read from a store with the checksums of its chunks.
type Range struct {
	Data       []byte   // the bytes asked for
	FirstChunk int      // chunk index Sums[0] belongs to
	Sums       []uint32 // checksums of every chunk Data touches
	ObjectLen  int64
	ShardLen   int64
	Scheme     codec.Scheme
}

// Get reads bytes [off, off+n) of a shard (n < 0: to its end) into a new
// buffer. When the range is chunk-aligned (it starts on a chunk boundary and
// ends on one or at the shard's end) the bytes are verified against the
// checksums before Get returns; a mismatch wraps ErrDataLoss.
func (c *Client) Get(ctx context.Context, addr string, k ShardKey, off, n int64) (*Range, error) {
	return c.GetInto(ctx, addr, k, off, n, nil)
}

// GetInto is Get reading into dst when it holds exactly the bytes asked for
// (else into a new buffer). On an error dst may hold any bytes.
func (c *Client) GetInto(ctx context.Context, addr string, k ShardKey, off, n int64, dst []byte) (*Range, error) {
	hdr := http.Header{}
	if off != 0 || n >= 0 {
		if n == 0 {
			return nil, fmt.Errorf("%w: empty range", ErrInvalidArgument)
		}
		last := ""
		if n > 0 {
			last = strconv.FormatInt(off+n-1, 10)
		}
		if last == "" {
			return nil, fmt.Errorf("%w: open-ended range from %d", ErrInvalidArgument, off)
		}
		hdr.Set("Range", fmt.Sprintf("bytes=%d-%s", off, last))
	}
	resp, err := c.do(ctx, "get", addr, http.MethodGet, c.shardURL(addr, k, ""), nil, hdr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	r := &Range{}
	if r.Scheme, err = codec.ParseScheme(resp.Header.Get(hdrScheme)); err != nil {
		return nil, fmt.Errorf("%w: %s: bad scheme header: %v", ErrUnavailable, addr, err)
	}
	r.ObjectLen, err = strconv.ParseInt(resp.Header.Get(hdrObjectLen), 10, 64)
	if err == nil {
		r.ShardLen, err = strconv.ParseInt(resp.Header.Get(hdrShardLen), 10, 64)
	}
	if err == nil {
		r.FirstChunk, err = strconv.Atoi(resp.Header.Get(hdrFirstChunk))
	}
	if err == nil {
		r.Sums, err = DecodeChecksums(resp.Header.Get(hdrChecksums))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: malformed response headers: %v", ErrUnavailable, addr, err)
	}
	want := n
	if n < 0 {
		want = r.ShardLen - off
	}
	if want < 0 || want > r.ShardLen {
		return nil, fmt.Errorf("%w: %s: range beyond shard of %d bytes", ErrInvalidArgument, addr, r.ShardLen)
	}
	if int64(len(dst)) == want {
		r.Data = dst
	} else {
		r.Data = make([]byte, want)
	}
	got, err := io.ReadFull(resp.Body, r.Data)
	if err == nil {
		_, err = io.Copy(io.Discard, resp.Body) // reach EOF to get the trailers
	}
	if code := resp.Trailer.Get(hdrCode); code != "" {
		return nil, &RemoteError{Addr: addr, Code: Code(code), Message: resp.Trailer.Get(hdrMessage)}
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: body ended after %d of %d bytes: %v", ErrUnavailable, addr, got, want, err)
	}
	if off%codec.ChunkSize == 0 && ((off+want)%codec.ChunkSize == 0 || off+want == r.ShardLen) {
		if err := codec.VerifyRange(r.Data, r.FirstChunk, r.Sums); err != nil {
			return nil, fmt.Errorf("%w: %s: shard %s: %v", ErrDataLoss, addr, k, err)
		}
	}
	return r, nil
}

// ShardStat describes a stored shard.
type ShardStat struct {
	Scheme    codec.Scheme
	ObjectLen int64
	ShardLen  int64
	Sums      []uint32
}

// Stat reads a shard's header.
func (c *Client) Stat(ctx context.Context, addr string, k ShardKey) (*ShardStat, error) {
	resp, err := c.do(ctx, "head", addr, http.MethodHead, c.shardURL(addr, k, ""), nil, nil)
	if err != nil {
		return nil, err
	}
	resp.Body.Close()
	st := &ShardStat{}
	st.Scheme, err = codec.ParseScheme(resp.Header.Get(hdrScheme))
	if err == nil {
		st.ObjectLen, err = strconv.ParseInt(resp.Header.Get(hdrObjectLen), 10, 64)
	}
	if err == nil {
		st.ShardLen, err = strconv.ParseInt(resp.Header.Get(hdrShardLen), 10, 64)
	}
	if err == nil {
		st.Sums, err = DecodeChecksums(resp.Header.Get(hdrChecksums))
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s: malformed stat: %v", ErrUnavailable, addr, err)
	}
	return st, nil
}

// Delete removes a shard; a shard that is not there wraps ErrNotFound.
func (c *Client) Delete(ctx context.Context, addr string, k ShardKey) error {
	resp, err := c.do(ctx, "delete", addr, http.MethodDelete, c.shardURL(addr, k, ""), nil, nil)
	if err != nil {
		return err
	}
	return resp.Body.Close()
}

func (c *Client) getJSON(ctx context.Context, op, addr, method, u string, v any) error {
	resp, err := c.do(ctx, op, addr, method, u, nil, nil)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<20)).Decode(v); err != nil {
		return fmt.Errorf("%w: %s: malformed answer: %v", ErrUnavailable, addr, err)
	}
	return nil
}

// Verify asks the store to check every chunk of a shard.
func (c *Client) Verify(ctx context.Context, addr string, k ShardKey) (*VerifyResult, error) {
	var res VerifyResult
	return &res, c.getJSON(ctx, "verify", addr, http.MethodPost, c.shardURL(addr, k, "/verify"), &res)
}

// List returns one page of a store's shards after the cursor ("" = start).
func (c *Client) List(ctx context.Context, addr, after string, limit int) (*ListResult, error) {
	q := url.Values{}
	if after != "" {
		q.Set("after", after)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	var res ListResult
	u := c.scheme + addr + "/v1/shards"
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return &res, c.getJSON(ctx, "list", addr, http.MethodGet, u, &res)
}

// Capacity returns a store's id and disk space.
func (c *Client) Capacity(ctx context.Context, addr string) (*Capacity, error) {
	var res Capacity
	return &res, c.getJSON(ctx, "capacity", addr, http.MethodGet, c.scheme+addr+"/v1/capacity", &res)
}

// Corrupt lists the shards a store found corrupt and still holds.
func (c *Client) Corrupt(ctx context.Context, addr string) ([]CorruptShard, error) {
	var res []CorruptShard
	return res, c.getJSON(ctx, "corrupt", addr, http.MethodGet, c.scheme+addr+"/v1/corrupt", &res)
}

// callCode classifies a call's error for Observe: "" for none, the
// store's code for its answer, CodeUnavailable when it was not reached.
func callCode(err error) Code {
	var re *RemoteError
	switch {
	case err == nil:
		return ""
	case errors.As(err, &re):
		return re.Code
	case errors.Is(err, ErrUnavailable):
		return CodeUnavailable
	}
	return codeOf(err)
}
