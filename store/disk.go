package store

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ecfs/ecfs/codec"
	"golang.org/x/sys/unix"
)

// Layout of a disk directory:
//
//	DISK/ecfs-disk          the id of the store that owns the disk
//	DISK/shards/ab/cd/KEY   shard files, fanned out by a hash of the object id
//	DISK/tmp/               shards being written; emptied at start
const (
	diskMarker = "ecfs-disk"
	shardsDir  = "shards"
	tmpDir     = "tmp"
)

// disks is the set of directories a store keeps shards in.
type disks struct {
	paths    []string
	maxShard int64
	reserve  int64 // bytes kept free on every disk

	mu      sync.Mutex
	fanouts map[string]bool // fan-out dirs known to exist
}

// openDisks prepares each disk directory for the store storeID: creates the
// layout, refuses a disk that belongs to another store, and removes the temp
// files a crash left behind.
func openDisks(paths []string, storeID string, maxShard, reserve int64) (*disks, error) {
	if len(paths) == 0 {
		return nil, errors.New("no disk directory")
	}
	seen := map[string]bool{}
	for i, p := range paths {
		abs, err := filepath.Abs(p)
		if err != nil {
			return nil, fmt.Errorf("disk %s: %w", p, err)
		}
		if seen[abs] {
			return nil, fmt.Errorf("disk %s given twice", p)
		}
		seen[abs] = true
		paths[i] = abs
		for _, d := range []string{abs, filepath.Join(abs, shardsDir), filepath.Join(abs, tmpDir)} {
			if err := os.MkdirAll(d, 0o750); err != nil {
				return nil, fmt.Errorf("disk %s: %w", p, err)
			}
		}
		if err := claimDisk(abs, storeID); err != nil {
			return nil, err
		}
		if err := cleanTmp(filepath.Join(abs, tmpDir)); err != nil {
			return nil, fmt.Errorf("disk %s: %w", p, err)
		}
	}
	return &disks{paths: paths, maxShard: maxShard, reserve: reserve, fanouts: map[string]bool{}}, nil
}

func claimDisk(dir, storeID string) error {
	marker := filepath.Join(dir, diskMarker)
	b, err := os.ReadFile(marker)
	switch {
	case err == nil:
		if got := strings.TrimSpace(string(b)); got != storeID {
			return fmt.Errorf("disk %s belongs to store %s, not to this store %s", dir, got, storeID)
		}
		return nil
	case errors.Is(err, fs.ErrNotExist):
		return writeFileSync(marker, []byte(storeID+"\n"))
	default:
		return fmt.Errorf("disk %s: %w", dir, err)
	}
}

func cleanTmp(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// writeFileSync writes a small file atomically and durably.
func writeFileSync(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o640)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		return err
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

func (d *disks) shardPath(disk string, k ShardKey) string {
	return filepath.Join(disk, k.RelPath())
}

// DiskUsage is the capacity of one disk directory.
type DiskUsage struct {
	Path string `json:"path"`
	// FS names the file system the disk is on: the machine's id and the
	// device number, the same for every store with a disk on it.
	FS    string `json:"fs,omitempty"`
	Total int64  `json:"total_bytes"`
	Free  int64  `json:"free_bytes"` // what shards may still use: the reserve is not counted; 0 when read-only
	// ReadOnly: the file system is mounted read-only (it takes no shards).
	ReadOnly bool   `json:"read_only,omitempty"`
	Error    string `json:"error,omitempty"`
}

func usage(path string) (DiskUsage, error) {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		return DiskUsage{Path: path, Error: err.Error()}, err
	}
	u := DiskUsage{Path: path, Total: int64(st.Blocks) * st.Bsize, Free: int64(st.Bavail) * st.Bsize}
	var fi syscall.Stat_t
	if err := syscall.Stat(path, &fi); err == nil {
		u.FS = fmt.Sprintf("%s:%x", machineID(), fi.Dev)
	}
	if st.Flags&stRdonly != 0 {
		u.ReadOnly, u.Free = true, 0
	}
	return u, nil
}

// stRdonly is ST_RDONLY of statfs(2)'s f_flags.
const stRdonly = 0x1

func (d *disks) usage() []DiskUsage {
	out := make([]DiskUsage, len(d.paths))
	for i, p := range d.paths {
		out[i], _ = usage(p)
		out[i].Free = max(out[i].Free-d.reserve, 0)
	}
	return out
}

// pick returns the disk with the most free space that can take size bytes.
func (d *disks) pick(size int64) (string, error) {
	best, bestFree := "", int64(-1)
	for _, u := range d.usage() {
		if u.Error == "" && u.Free > bestFree {
			best, bestFree = u.Path, u.Free
		}
	}
	if best == "" {
		return "", fmt.Errorf("%w: no disk can be read", ErrResourceExhausted)
	}
	if bestFree < size {
		return "", fmt.Errorf("%w: %d bytes needed, largest free space is %d beyond the reserve of %d", ErrResourceExhausted, size, bestFree, d.reserve)
	}
	return best, nil
}

// find returns the path of the shard's file, looking on every disk.
func (d *disks) find(k ShardKey) (string, error) {
	for _, disk := range d.paths {
		p := d.shardPath(disk, k)
		if _, err := os.Lstat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("%w: %s", ErrNotFound, k)
}

// maxStoredShard bounds the shard length a header may give when a shard is
// read: the largest Config.MaxShardSize there can be. The configured limit
// applies to new shards only; shards stored under a larger one stay readable.
const maxStoredShard = 1 << 30

// open opens a shard and checks its header names the shard asked for.
func (d *disks) open(k ShardKey) (*os.File, *ShardHeader, error) {
	p, err := d.find(k)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.Open(p)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil, fmt.Errorf("%w: %s", ErrNotFound, k)
		}
		return nil, nil, err
	}
	// Ask for the header and the first readBatch chunks in one go: a cold
	// whole-shard read then waits for one disk read, not two.
	_ = unix.Fadvise(int(f.Fd()), 0, headerAlign+readBatch*codec.ChunkSize, unix.FADV_WILLNEED)
	h, err := ReadShardHeader(f, maxStoredShard)
	if err == nil && h.Key != k {
		err = fmt.Errorf("%w: file %s holds shard %s", ErrDataLoss, p, h.Key)
	}
	if err == nil {
		var st os.FileInfo
		if st, err = f.Stat(); err == nil && st.Size() != h.DataOffset()+h.ShardLen {
			err = fmt.Errorf("%w: %s is %d bytes, header says %d", ErrDataLoss, k, st.Size(), h.DataOffset()+h.ShardLen)
		}
	}
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("shard %s: %w", k, err)
	}
	return f, h, nil
}

func isNoSpace(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) || errors.Is(err, syscall.EROFS)
}

// put stores a shard whose header is h and whose data is read from body:
// it writes a temp file, verifies every chunk against h.Sums as it goes,
// fsyncs, renames into place and fsyncs the directory. On any error nothing
// is left behind. A shard already present is replaced.
func (d *disks) put(h *ShardHeader, body io.Reader) (err error) {
	if err := h.Validate(d.maxShard); err != nil {
		return err
	}
	head := h.Marshal()
	disk, err := d.pick(int64(len(head)) + h.ShardLen)
	if err != nil {
		return err
	}
	var rnd [8]byte
	_, _ = rand.Read(rnd[:])
	tmp := filepath.Join(disk, tmpDir, h.Key.String()+"."+hex.EncodeToString(rnd[:])+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o640)
	if err != nil {
		return classifyWrite(err)
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if _, err = f.Write(head); err != nil {
		return classifyWrite(err)
	}
	if err = copyVerified(f, body, h.ShardLen, h.Sums); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return classifyWrite(err)
	}
	if err = f.Close(); err != nil {
		return classifyWrite(err)
	}
	dst := d.shardPath(disk, h.Key)
	for try := 0; ; try++ {
		if err = d.ensureFanout(filepath.Dir(dst)); err == nil {
			err = os.Rename(tmp, dst)
		}
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) || try == 3 {
			return classifyWrite(err)
		}
		// A delete removed an emptied directory meanwhile: make it again.
		d.forgetFanout(filepath.Dir(dst))
		d.forgetFanout(filepath.Dir(filepath.Dir(dst)))
	}
	if err = syncDir(filepath.Dir(dst)); err != nil {
		return classifyWrite(err)
	}
	// A copy of the same shard on another disk is now stale.
	for _, other := range d.paths {
		if other != disk {
			os.Remove(d.shardPath(other, h.Key))
		}
	}
	return nil
}

func classifyWrite(err error) error {
	if isNoSpace(err) {
		return fmt.Errorf("%w: %v", ErrResourceExhausted, err)
	}
	return err
}

// copyVerified copies exactly n bytes from r to w, checking each chunk
// against sums before writing it.
func copyVerified(w io.Writer, r io.Reader, n int64, sums []uint32) error {
	buf := getChunkBuf()
	defer putChunkBuf(buf)
	for c := 0; n > 0; c++ {
		size := min(int64(codec.ChunkSize), n)
		b := (*buf)[:size]
		if _, err := io.ReadFull(r, b); err != nil {
			return fmt.Errorf("%w: reading shard body: %v", ErrInvalidArgument, err)
		}
		if codec.Checksum(b) != sums[c] {
			return fmt.Errorf("%w: chunk %d does not match its checksum", ErrInvalidArgument, c)
		}
		if _, err := w.Write(b); err != nil {
			return classifyWrite(err)
		}
		n -= size
	}
	var one [1]byte
	if m, _ := r.Read(one[:]); m > 0 {
		return fmt.Errorf("%w: shard body longer than its length", ErrInvalidArgument)
	}
	return nil
}

var chunkPool = sync.Pool{New: func() any { b := make([]byte, codec.ChunkSize); return &b }}

func getChunkBuf() *[]byte  { return chunkPool.Get().(*[]byte) }
func putChunkBuf(b *[]byte) { chunkPool.Put(b) }

func (d *disks) ensureFanout(dir string) error {
	d.mu.Lock()
	known := d.fanouts[dir]
	d.mu.Unlock()
	if known {
		return nil
	}
	mid := filepath.Dir(dir)
	d.mu.Lock()
	midKnown := d.fanouts[mid] // exists, and its entry is durable
	d.mu.Unlock()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	// Make the new directory entries durable too: the leaf's in its
	// parent, and the parent's in the shards directory unless that is
	// known to be done.
	if err := syncDir(mid); err != nil {
		return err
	}
	if !midKnown {
		if err := syncDir(filepath.Dir(mid)); err != nil {
			return err
		}
	}
	d.mu.Lock()
	d.fanouts[dir] = true
	d.fanouts[mid] = true
	d.mu.Unlock()
	return nil
}

// remove deletes the shard from every disk.
func (d *disks) remove(k ShardKey) error {
	found := false
	for _, disk := range d.paths {
		p := d.shardPath(disk, k)
		err := os.Remove(p)
		switch {
		case err == nil:
			found = true
			if err := syncDir(filepath.Dir(p)); err != nil {
				return err
			}
			d.pruneFanout(filepath.Dir(p))
		case !errors.Is(err, fs.ErrNotExist):
			return err
		}
	}
	if !found {
		return fmt.Errorf("%w: %s", ErrNotFound, k)
	}
	return nil
}

// ShardInfo is one entry of a listing.
type ShardInfo struct {
	Key     string    `json:"key"`
	Size    int64     `json:"size"` // bytes on disk, header included
	ModTime time.Time `json:"mtime"`
}

// list returns up to limit shards whose keys sort after `after` in listing
// order (fan-out directory, then key), and the cursor for the next page ("" at
// the end).
func (d *disks) list(after string, limit int) ([]ShardInfo, string, error) {
	var startDir string
	if after != "" {
		k, err := ParseShardKey(after)
		if err != nil {
			return nil, "", err
		}
		startDir = k.fanout()
	}
	var out []ShardInfo
	l1s, err := d.union(shardsDir)
	if err != nil {
		return nil, "", err
	}
	for _, l1 := range l1s {
		if startDir != "" && l1 < startDir[:2] {
			continue
		}
		l2s, err := d.union(filepath.Join(shardsDir, l1))
		if err != nil {
			return nil, "", err
		}
		for _, l2 := range l2s {
			dir := l1 + "/" + l2
			if startDir != "" && dir < startDir {
				continue
			}
			names, err := d.union(filepath.Join(shardsDir, l1, l2))
			if err != nil {
				return nil, "", err
			}
			for _, name := range names {
				if dir == startDir && name <= after {
					continue
				}
				k, err := ParseShardKey(name)
				if err != nil || k.fanout() != dir {
					continue // not a shard file of ours
				}
				info := ShardInfo{Key: name}
				if p, err := d.find(k); err == nil {
					if st, err := os.Lstat(p); err == nil {
						info.Size, info.ModTime = st.Size(), st.ModTime().UTC()
					}
				}
				out = append(out, info)
				if len(out) == limit {
					return out, name, nil
				}
			}
		}
	}
	return out, "", nil
}

// union lists the names in rel on every disk, sorted, without duplicates.
func (d *disks) union(rel string) ([]string, error) {
	var names []string
	for _, disk := range d.paths {
		ents, err := os.ReadDir(filepath.Join(disk, rel))
		if err != nil {
			// Missing on this disk, or a stray file where a directory
			// could be: nothing of ours.
			if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
				continue
			}
			return nil, err
		}
		for _, e := range ents {
			names = append(names, e.Name())
		}
	}
	slices.Sort(names)
	return slices.Compact(names), nil
}

// VerifyResult is the outcome of checking a whole shard.
type VerifyResult struct {
	Key       string `json:"key"`
	OK        bool   `json:"ok"`
	BadChunks []int  `json:"bad_chunks,omitempty"`
	Error     string `json:"error,omitempty"`
}

// verify reads the whole shard and checks every chunk.
func (d *disks) verify(k ShardKey) (VerifyResult, error) {
	res := VerifyResult{Key: k.String()}
	f, h, err := d.open(k)
	if errors.Is(err, ErrDataLoss) {
		res.Error = err.Error()
		return res, nil
	}
	if err != nil {
		return res, err
	}
	defer f.Close()
	buf := getChunkBuf()
	defer putChunkBuf(buf)
	for c := range h.Sums {
		off := int64(c) * codec.ChunkSize
		b := (*buf)[:min(codec.ChunkSize, h.ShardLen-off)]
		if _, err := f.ReadAt(b, h.DataOffset()+off); err != nil || codec.Checksum(b) != h.Sums[c] {
			res.BadChunks = append(res.BadChunks, c)
		}
	}
	res.OK = len(res.BadChunks) == 0
	return res, nil
}

// forgetFanout drops dir from the known fan-out directories.
func (d *disks) forgetFanout(dir string) {
	d.mu.Lock()
	delete(d.fanouts, dir)
	d.mu.Unlock()
}

// pruneFanout removes the fan-out directory dir and its parent if they are
// empty, so that deleting data gives its space back (a directory keeps its
// blocks). A put racing with it finds its directory gone at the rename and
// makes it again.
func (d *disks) pruneFanout(dir string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if os.Remove(dir) != nil {
		return // not empty (or gone)
	}
	delete(d.fanouts, dir)
	mid := filepath.Dir(dir)
	if os.Remove(mid) == nil {
		delete(d.fanouts, mid)
	}
}

// machineID names this machine: /etc/machine-id, else the boot id, else
// the host name.
var machineID = sync.OnceValue(func() string {
	for _, p := range []string{"/etc/machine-id", "/proc/sys/kernel/random/boot_id"} {
		if b, err := os.ReadFile(p); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return string(bytes.TrimSpace(b))
		}
	}
	h, _ := os.Hostname()
	return h
})
