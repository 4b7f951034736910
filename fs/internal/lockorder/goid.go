//go:build lockcheck

package lockorder

import "runtime"

// goid returns the calling goroutine's id, read from the first line of its
// stack trace ("goroutine 42 [running]:"). The runtime has no cheaper
// public way (reading it from the runtime's g by assembly would depend on
// the layout of a private struct). runtime.Stack formats the whole stack
// even into a short buffer: a few microseconds, more on a deep stack
// (BenchmarkGoid), which the checked tests can afford. Lock, RLock,
// RUnlock, a successful TryLock and MayWait ask for it once; Unlock finds
// the holder in the mutex instead.
func goid() uint64 {
	var buf [32]byte
	n := runtime.Stack(buf[:], false)
	const prefix = "goroutine "
	if n <= len(prefix) || string(buf[:len(prefix)]) != prefix {
		panic("lockorder: unexpected stack trace header: " + string(buf[:n]))
	}
	var id uint64
	for _, c := range buf[len(prefix):n] {
		if c < '0' || c > '9' {
			return id
		}
		id = id*10 + uint64(c-'0')
	}
	panic("lockorder: unexpected stack trace header: " + string(buf[:n]))
}
