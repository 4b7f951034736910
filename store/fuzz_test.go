package store

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/ecfs/ecfs/codec"
)

var fuzzMethods = []string{
	http.MethodGet, http.MethodPut, http.MethodHead, http.MethodDelete,
	http.MethodPost, http.MethodPatch, http.MethodOptions, http.MethodConnect,
	"TRACE", "BREW",
}

// FuzzHandler sends the shard API requests built from fuzz input, always
// authenticated. The server must never panic, never answer 5xx (other than
// 507 for a full disk), never leave a temp file behind, and a shard it
// accepted must read back as it was sent.
func FuzzHandler(f *testing.F) {
	sc := codec.Scheme{K: 2, M: 1, BlockSize: 128 << 10}
	// Small bodies keep executions (and the minimisation of interesting
	// inputs) fast; the multi-chunk paths are in the unit tests.
	small := bytes.Repeat([]byte("ecfs shard data "), 125)[:1999]
	put := func(id string, idx int, olen int, body []byte) {
		f.Add(uint8(1), "/v1/shards/"+id+"/"+strconv.Itoa(idx), sc.String(), strconv.Itoa(olen),
			EncodeChecksums(codec.Checksums(body)), "", int8(0), body)
	}
	put("00000000000000aa", 1, 3998, small)
	put("00000000000000ab", 2, 3997, small)
	put("00000000000000ad", 0, 0, nil)
	put("ffffffffffffffff", 1, 3998, small[:1999])
	f.Add(uint8(1), "/v1/shards/00000000000000aa/001", "4+2", "7996", EncodeChecksums(codec.Checksums(small)), "", int8(0), small)
	f.Add(uint8(1), "/v1/shards/00000000000000aa/001", sc.String(), "3998", EncodeChecksums([]uint32{1}), "", int8(0), small)
	f.Add(uint8(1), "/v1/shards/00000000000000aa/001", sc.String(), "3998", EncodeChecksums(codec.Checksums(small)), "", int8(-128), small)
	f.Add(uint8(1), "/v1/shards/00000000000000aa/001", sc.String(), "3998", EncodeChecksums(codec.Checksums(small)), "", int8(-1), small)
	f.Add(uint8(1), "/v1/shards/00000000000000aa/001", sc.String(), "3996", EncodeChecksums(codec.Checksums(small[:1998])), "", int8(-1), small)
	f.Add(uint8(1), "/v1/shards/00000000000000aa/001", sc.String(), "3998", EncodeChecksums(codec.Checksums(small)), "", int8(1), small)
	f.Add(uint8(0), "/v1/shards/00000000000000aa/001", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(0), "/v1/shards/00000000000000aa/001", "", "", "", "bytes=10-1998", int8(0), []byte(nil))
	f.Add(uint8(0), "/v1/shards/00000000000000aa/001", "", "", "", "bytes=0-1999", int8(0), []byte(nil))
	f.Add(uint8(2), "/v1/shards/00000000000000aa/001", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(3), "/v1/shards/00000000000000aa/001", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(4), "/v1/shards/00000000000000aa/001/verify", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(0), "/v1/shards?limit=2&after=00000000000000aa-001", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(0), "/v1/shards", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(0), "/v1/capacity", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(0), "/v1/shards/../../etc/passwd", "", "", "", "", int8(0), []byte(nil))
	f.Add(uint8(7), "*", "", "", "", "", int8(0), []byte(nil))

	cfg := testConfig(f, withMaxShard(256<<10), withReserve(-1))
	srv, err := NewServer(cfg)
	if err != nil {
		f.Fatal(err)
	}
	h := srv.Handler()
	tmp := filepath.Join(cfg.DataDir, "disk", tmpDir)

	f.Fuzz(func(t *testing.T, m uint8, path, scheme, olen, sums, rng string, lenDelta int8, body []byte) {
		method := fuzzMethods[int(m)%len(fuzzMethods)]
		req := httptest.NewRequest(http.MethodGet, "/", bytes.NewReader(body))
		req.Method = method
		if u, err := url.ParseRequestURI(path); err == nil && u.Host == "" && u.Scheme == "" {
			req.URL = u
			req.RequestURI = path
		} else {
			req.URL = &url.URL{Path: path}
			req.RequestURI = req.URL.RequestURI()
		}
		// Content-Length: the body's length, off by lenDelta (the body is
		// short or long for it), or unknown for -128.
		req.ContentLength = max(int64(len(body))+int64(lenDelta), 0)
		if lenDelta == -128 {
			req.ContentLength = -1
		}
		req.Header.Set("Authorization", "Bearer "+testSecret)
		for k, v := range map[string]string{hdrScheme: scheme, hdrObjectLen: olen, hdrChecksums: sums, "Range": rng} {
			if v != "" {
				req.Header.Set(k, v)
			}
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 && w.Code != http.StatusInsufficientStorage {
			t.Fatalf("%s %q: status %d: %s %s", method, path, w.Code, w.Header().Get(hdrCode), w.Header().Get(hdrMessage))
		}
		// An error answered by the store's handlers (not by the mux, e.g.
		// to "*") carries its class.
		if w.Code >= 400 && w.Header().Get(hdrStoreID) != "" && w.Header().Get(hdrCode) == "" {
			t.Fatalf("%s %q: status %d without an error code", method, path, w.Code)
		}
		ents, err := os.ReadDir(tmp)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) != 0 {
			t.Fatalf("%s %q: %d temp files left", method, path, len(ents))
		}
		if method != http.MethodPut || w.Code != http.StatusCreated {
			return
		}
		// An accepted shard reads back as sent, with the headers sent.
		k, err := parseKey(req.PathValue("id"), req.PathValue("index"))
		if err != nil {
			t.Fatalf("PUT %q accepted, but its key does not parse: %v", path, err)
		}
		get := httptest.NewRequest(http.MethodGet, "/v1/shards/"+k.Object.String()+"/"+strings.TrimPrefix(k.String(), k.Object.String()+"-"), nil)
		get.Header.Set("Authorization", "Bearer "+testSecret)
		gw := httptest.NewRecorder()
		h.ServeHTTP(gw, get)
		if sent := body[:min(int64(len(body)), req.ContentLength)]; gw.Code != http.StatusOK || !bytes.Equal(gw.Body.Bytes(), sent) {
			t.Fatalf("PUT %q accepted %d bytes, GET answers %d with %d bytes", path, len(body), gw.Code, gw.Body.Len())
		}
		got, _ := strconv.ParseInt(gw.Header().Get(hdrObjectLen), 10, 64)
		want, _ := strconv.ParseInt(olen, 10, 64)
		if got != want || gw.Header().Get(hdrScheme) != mustParseScheme(t, scheme).String() {
			t.Fatalf("PUT %q with object length %q, scheme %q; GET says %q, %q", path, olen, scheme,
				gw.Header().Get(hdrObjectLen), gw.Header().Get(hdrScheme))
		}
	})
}

func mustParseScheme(t *testing.T, s string) codec.Scheme {
	t.Helper()
	sc, err := codec.ParseScheme(s)
	if err != nil {
		t.Fatalf("scheme %q accepted by PUT: %v", s, err)
	}
	return sc
}
