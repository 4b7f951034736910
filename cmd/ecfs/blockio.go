package main

import (
	"context"
	"fmt"

	"github.com/ecfs/ecfs/codec"
	"github.com/ecfs/ecfs/store"
)

// blockIO lets the meta leader's compactor read and write whole objects
// through the object layer.
type blockIO struct{ o *store.Objects }

func (b blockIO) ReadObject(ctx context.Context, scheme string, object uint64, length int64, placement []string, p []byte, off int64) error {
	sc, err := codec.ParseScheme(scheme)
	if err != nil {
		return err
	}
	n, _, err := b.o.ReadAt(ctx, store.Object{ID: store.ObjectID(object), Scheme: sc, Length: length, Placement: placement}, p, off)
	if err != nil {
		return err
	}
	if n != len(p) {
		return fmt.Errorf("object %016x: read %d of %d bytes at %d (length %d)", object, n, len(p), off, length)
	}
	return nil
}

func (b blockIO) WriteObject(ctx context.Context, scheme string, object uint64, data []byte, placement []string, quorum int) ([]bool, error) {
	sc, err := codec.ParseScheme(scheme)
	if err != nil {
		return nil, err
	}
	res, err := b.o.Write(ctx, store.Object{ID: store.ObjectID(object), Scheme: sc, Length: int64(len(data)), Placement: placement}, data, quorum)
	if err != nil {
		return nil, err
	}
	stored := make([]bool, len(placement))
	for _, r := range res {
		if r.Err == nil && r.Index >= 0 && r.Index < len(stored) {
			stored[r.Index] = true
		}
	}
	return stored, nil
}
